"""The Flask app factory: receivers, health, metrics, the hand-off API and the console."""

from __future__ import annotations

import redis
from flask import Blueprint, Flask, Response, current_app, jsonify, request
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text

from bridge import admin_auth, console, db, headers, intake, ledger, ledger_figures, receivers
from bridge.container import Container
from bridge.deal_ids import InvalidDealId, canonical_deal_id
from bridge.home import private_home
from bridge.logging import configure_logging
from bridge.metrics import LedgerCollector, SharedCollector, SharedFigures, scrape_registry
from bridge.proxies import ForwardedFromTrustedProxies
from bridge.queue import RECEIVER_CLIENT, QueueUnavailable
from bridge.settings import Settings, load_settings
from kernel import api_calls, rate_budget


def create_app(settings: Settings | None = None) -> Flask:
    settings = settings or load_settings()
    configure_logging()
    private_home(settings.home)  # also when gunicorn serves the app without `fullkit serve`
    # No registry: the web process runs no connector, so kits' ops targets go unchecked.
    state = Container.build(settings, client=RECEIVER_CLIENT)
    state.handoff_stages = receivers.watched_stages(state.rules)
    _prepare_ledger(state)
    app = Flask("fullkit")
    app.wsgi_app = ForwardedFromTrustedProxies(  # type: ignore[method-assign]
        app.wsgi_app, settings.trusted_proxies
    )
    app.config["FULLKIT"] = state
    app.config["MAX_CONTENT_LENGTH"] = None  # receivers enforce their own 1 MiB limit
    for blueprint in receivers.blueprints():
        app.register_blueprint(blueprint)
    app.register_blueprint(ops)
    app.register_blueprint(api)
    console.init_app(app)
    https = bool(settings.public_url and settings.public_url.startswith("https://"))
    app.after_request(lambda answer: headers.secure(answer, https))
    app.config["METRICS"] = scrape_registry(
        LedgerCollector(
            ledger_figures.CachedFigures(state.sessions),
            lambda: intake.duplicates(state.redis),
        ),
        SharedCollector(lambda: _shared_figures(state)),
    )
    return app


def _shared_figures(state: Container) -> SharedFigures:
    connection = state.redis
    return SharedFigures(
        calls=api_calls.counts(connection),
        budgets=rate_budget.budgets_left(connection),
        observed=rate_budget.observed(connection),
    )


def _prepare_ledger(state: Container) -> None:
    """Bring the SQLite default up to date; a down server must not stop `serve`."""
    try:
        db.prepare(state.engine, state.settings)
    except db.SchemaOutdated:
        raise
    except Exception:
        pass  # /healthz reports it until the database is back


ops = Blueprint("ops", __name__)


def _state() -> Container:
    app_state: Container = current_app.config["FULLKIT"]
    return app_state


@ops.get("/healthz")
def healthz() -> tuple[Response, int]:
    state = _state()
    checks = {"queue": "ok", "ledger": "ok"}
    try:
        state.ping_queue()
    except (redis.RedisError, QueueUnavailable):
        checks["queue"] = "unreachable"
    try:
        with state.engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    except Exception:
        checks["ledger"] = "unreachable"
    healthy = all(value == "ok" for value in checks.values())
    return jsonify({"status": "ok" if healthy else "unavailable", **checks}), (
        200 if healthy else 503
    )


@ops.get("/metrics")
def metrics() -> Response:
    registry = current_app.config["METRICS"]
    return Response(generate_latest(registry), mimetype=CONTENT_TYPE_LATEST)


api = Blueprint("api", __name__, url_prefix="/api")


def _authorized() -> Response | None:
    state = _state()
    try:
        admin_auth.authorize(
            request.headers.get("Authorization", ""),
            state.settings.api_token,
            # The peer, or the client a trusted proxy names (bridge/proxies.py).
            request.remote_addr or "unknown",
            admin_auth.Throttle(lambda: state.redis),
        )
    except admin_auth.Refused as refused:
        answer = _error(refused.status, refused.message)
        if refused.retry_after is not None:
            answer.headers["Retry-After"] = str(refused.retry_after)
        return answer
    return None


def _error(status: int, message: str) -> Response:
    answer = jsonify({"error": message})
    answer.status_code = status
    return answer


@api.get("/handoffs/<crm>/<deal_id>")
def handoffs(crm: str, deal_id: str) -> Response:
    refused = _authorized()
    if refused is not None:
        return refused
    try:
        deal_id = canonical_deal_id(crm, deal_id)
    except InvalidDealId as exc:
        # Never a recorded deal: answered as one unknown, with what an id looks like.
        return _error(404, str(exc))
    try:
        with _state().sessions() as session:
            history = ledger.deal_history(session, crm, deal_id)
    except Exception:
        return _error(503, "ledger unavailable")
    if history is None:
        return _error(404, f"no hand-off recorded for {crm}:{deal_id}")
    return jsonify(history)
