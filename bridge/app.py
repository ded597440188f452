"""The Flask app factory: receivers, health, metrics and the hand-off API."""

from __future__ import annotations

import hmac
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import redis
from flask import Blueprint, Flask, Response, current_app, jsonify, request
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from rq.queue import EnqueueData
from sqlalchemy import Engine, text
from sqlalchemy.orm import sessionmaker

from bridge import db, ledger, receivers
from bridge.deal_ids import InvalidDealId, canonical_deal_id
from bridge.logging import configure_logging
from bridge.metrics import LedgerCollector, RateLimitCollector, scrape_registry
from bridge.queue import HandoffQueue, QueueUnavailable, connect
from bridge.rules import Rules, load_rules
from bridge.settings import Settings, load_settings
from kernel import rate_budget

RECEIVER_QUEUE_TIMEOUT = 1.5


@dataclass
class WebApp:
    """What the web process holds: settings, rules' hand-off stages, lazy queue and ledger."""

    settings: Settings
    rules: Rules
    handoff_stages: dict[str, frozenset[str]]  # per CRM: the stages its receivers watch
    _engine: Engine | None = None
    _redis: redis.Redis | None = None
    _extra: dict[str, Any] = field(default_factory=dict)

    def queue(self) -> HandoffQueue:
        # One client (and its connection pool) per process: a connection per request
        # would cost the receivers a TCP handshake and more on every webhook.
        if self._redis is None:
            self._redis = connect(self.settings, timeout=RECEIVER_QUEUE_TIMEOUT)
        return HandoffQueue(self._redis)

    def enqueue_unique_many(self, calls: Sequence[EnqueueData]) -> list[bool]:
        try:
            return self.queue().enqueue_unique_many(calls)
        except QueueUnavailable as exc:
            # A server that does not answer in time gets no second wait: 503 within 2 s.
            if self.settings.redis_url or exc.timed_out:
                raise
        # The embedded server may have been restarted on another port: look once more.
        # Safe to repeat, since every job is unique by its key.
        self._redis = None
        return self.queue().enqueue_unique_many(calls)

    def ping_queue(self) -> None:
        try:
            self.queue().connection.ping()
        except (redis.RedisError, QueueUnavailable):
            if self.settings.redis_url:
                raise
            self._redis = None
            self.queue().connection.ping()

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            self._engine = db.make_engine(self.settings)
        return self._engine

    def sessions(self) -> sessionmaker:
        return db.session_factory(self.engine)

    def count_by_state(self) -> dict[str, int]:
        with self.sessions()() as session:
            return ledger.count_by_state(session)


def create_app(settings: Settings | None = None) -> Flask:
    settings = settings or load_settings()
    configure_logging()
    rules = load_rules(settings.rules_dir)
    state = WebApp(
        settings=settings,
        rules=rules,
        handoff_stages=receivers.watched_stages(rules),
    )
    _prepare_ledger(state)
    app = Flask("fullkit")
    app.config["FULLKIT"] = state
    app.config["MAX_CONTENT_LENGTH"] = None  # receivers enforce their own 1 MiB limit
    for blueprint in receivers.blueprints():
        app.register_blueprint(blueprint)
    app.register_blueprint(ops)
    app.register_blueprint(api)
    app.config["METRICS"] = scrape_registry(
        LedgerCollector(state.count_by_state),
        RateLimitCollector(lambda: rate_budget.observed(state.queue().connection)),
    )
    return app


def _prepare_ledger(state: WebApp) -> None:
    """Bring the SQLite default up to date; a down server must not stop `serve`."""
    try:
        db.prepare(state.engine, state.settings)
    except db.SchemaOutdated:
        raise
    except Exception:
        pass  # /healthz reports it until the database is back


ops = Blueprint("ops", __name__)


def _state() -> WebApp:
    app_state: WebApp = current_app.config["FULLKIT"]
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
    token = _state().settings.admin_token
    given = request.headers.get("Authorization", "")
    if not given.startswith("Bearer "):
        return _error(401, "bearer token required")
    if token is None or not hmac.compare_digest(
        given[len("Bearer ") :].encode(), token.get_secret_value().encode()
    ):
        return _error(403, "wrong token")
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
        with _state().sessions()() as session:
            history = ledger.deal_history(session, crm, deal_id)
    except Exception:
        return _error(503, "ledger unavailable")
    if history is None:
        return _error(404, f"no hand-off recorded for {crm}:{deal_id}")
    return jsonify(history)
