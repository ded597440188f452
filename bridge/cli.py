"""The `fullkit` command. Exit 0 success, 1 a problem found, 2 a usage error; one line each."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any, NoReturn

import click

from bridge.deal_ids import CRMS
from bridge.home import PRIVATE_UMASK, private_home
from bridge.settings import Settings, SettingsError, load_settings
from kernel.settings import Section


class Problem(click.ClickException):
    """The command ran and found a problem: exit 1 with one clear line."""

    exit_code = 1

    def show(self, file: Any = None) -> None:
        click.echo(f"fullkit: {self.format_message()}", err=True)


def _settings() -> Settings:
    try:
        return load_settings()
    except SettingsError as exc:
        raise Problem(str(exc)) from None


def _sections(settings: Settings) -> list[type[Section]]:
    """Every receiver's and connector's own settings, read now: a malformed value stops
    the process at start rather than failing its first hand-off."""
    import connectors
    from bridge import receivers

    classes = [*receivers.settings_classes(), *connectors.settings_classes()]
    for cls in classes:
        try:
            settings.section(cls)
        except SettingsError as exc:
            raise Problem(str(exc)) from None
    return classes


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """Fullkit: the sales-to-ops hand-off bridge that enforces the full-kit rule."""


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on.")
@click.option("--port", type=click.IntRange(1, 65535), help="Port (default: $PORT or 8000).")
@click.option(
    "--workers",
    type=click.IntRange(1, 64),
    help="Gunicorn processes (default: $WEB_CONCURRENCY or one per core).",
)
def serve(host: str, port: int | None, workers: int | None) -> None:
    """Serve the webhook receivers, /healthz, /metrics and the API (gunicorn)."""
    from bridge.server import CannotServe, serve_forever

    settings = _settings()
    sections = _sections(settings)
    notes = _disabled_kits(settings, _check_rules(settings))
    _check_schema(settings)
    private_home(settings.home)  # before gunicorn makes the metrics folder in it
    try:
        serve_forever(settings, host, port or settings.port, workers, sections, notes)
    except CannotServe as exc:
        raise Problem(str(exc)) from None


def _check_schema(settings: Settings) -> None:
    """A configured database with an old schema stops the process; a down one does not."""
    from bridge import db

    if settings.uses_default_database:
        return
    engine = db.make_engine(settings)
    try:
        current = db.current_revision(engine)
    except Exception:
        return  # unreachable now: serve starts anyway, logs it, and /healthz says so
    finally:
        engine.dispose()
    if current != db.head_revision():
        raise Problem("the ledger schema is not up to date: run `fullkit db upgrade`")


@cli.command()
@click.option("--burst", is_flag=True, help="Work until the queue is empty, then exit.")
def worker(burst: bool) -> None:
    """Run an RQ worker for hand-off jobs (with the retry scheduler and the resumer)."""
    from bridge.backends import Unreachable
    from bridge.db import SchemaOutdated
    from bridge.worker import run_worker

    settings = _settings()
    _sections(settings)
    _check_rules(settings)
    try:
        run_worker(settings, burst=burst)
    except (SchemaOutdated, Unreachable) as exc:
        raise Problem(str(exc)) from None


@cli.command()
@click.option("--keep", is_flag=True, help="Leave everything running and print the URLs.")
@click.option(
    "--deals",
    type=click.IntRange(5, 100),
    help="How many deals to hand off, cycling the scenarios  [default: each scenario once]",
)
def demo(keep: bool, deals: int | None) -> None:
    """Run the whole hand-off story against the loopback sandbox."""
    from bridge.demo import DemoError, run_demo

    try:
        code = run_demo(keep=keep, deal_count=deals)
    except DemoError as exc:
        raise Problem(f"demo: {exc}") from None
    sys.exit(code)


def _duration(ctx: click.Context, param: click.Parameter, value: str) -> Any:
    from bridge.sweep import parse_duration

    try:
        return parse_duration(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


@cli.group()
def kit() -> None:
    """Validate kits and check deals against them."""


def _check_rules(settings: Settings, rules_dir: Path | None = None) -> Any:
    """The rules folder (FULLKIT_RULES_DIR unless given), or every problem in it."""
    import connectors
    from bridge.rules import RulesError, load_rules

    where = rules_dir or settings.rules_dir
    try:
        return load_rules(where, connectors.load_all())
    except RulesError as exc:
        raise Problem(f"invalid rules folder {where}:\n{exc}") from None


@kit.command("validate")
def kit_validate() -> None:
    """Validate the whole rules folder; every problem as file:line: path: problem."""
    settings = _settings()
    rules = _check_rules(settings)
    click.echo(
        f"{settings.rules_dir}: valid — {len(rules.kits)} kit(s), {len(rules.mappings)} mapping(s)"
    )
    for line in _disabled_kits(settings, rules):
        click.echo(f"note: {line}", err=True)


def _disabled_kits(settings: Settings, rules: Any) -> list[str]:
    """Kits this environment could judge but not hand off: their ops target is unset.
    A note, not a failure: the folder is valid, and CI validates it without secrets."""
    import connectors

    targets = connectors.load_all().targets
    notes = []
    for kit in rules.kits:
        try:
            why = targets[kit.ops.target](settings).disabled(kit.ops.options)
        except SettingsError as exc:
            why = str(exc)
        if why:
            notes.append(f"kit {kit.id}: ops target {kit.ops.target} is disabled here: {why}")
    return notes


@kit.command("check")
@click.argument("deal_ref", required=False, metavar="[CRM:DEAL_ID]")
@click.option(
    "--deal",
    "deal_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="A deal file: the canonical packet as JSON (see --example).",
)
@click.option("--example", is_flag=True, help="Print an example deal file and what it holds.")
def kit_check(deal_ref: str | None, deal_file: Path | None, example: bool) -> None:
    """Check one deal against the kits without changing anything; exit 1 when incomplete.

    The deal is a file (--deal FILE.json) or read live from the CRM (e.g. hubspot:1234,
    with HUBSPOT_ACCESS_TOKEN set). The output names the deal and the kit, and lists the
    requirements that are missing, that passed, and that do not apply to this deal.
    """
    import datetime as dt

    from bridge import kitcheck

    if sum((deal_ref is not None, deal_file is not None, example)) != 1:
        raise click.UsageError("give one of: --deal FILE.json, CRM:DEAL_ID, or --example")
    settings = _settings()
    rules = _check_rules(settings)
    if example:
        click.echo(json.dumps(kitcheck.example_deal(rules), indent=2))
        for note in kitcheck.example_notes(rules):
            click.echo(f"# {note}", err=True)
        return
    if deal_file is not None:
        packet = _deal_from_file(rules, deal_file)
    else:
        crm, deal_id = _handoff_ref(deal_ref or "")
        try:
            packet = kitcheck.fetch_live(settings, rules, crm, deal_id)
        except kitcheck.DealUnavailable as exc:
            raise Problem(str(exc)) from None
    check = kitcheck.check_deal(rules, packet, dt.datetime.now(dt.UTC).date())
    if check is None:
        raise Problem(kitcheck.no_kit_reason(rules, packet))
    for line in kitcheck.report(check):
        click.echo(line)
    if not check.complete:
        sys.exit(1)


def _deal_from_file(rules: Any, deal_file: Path) -> Any:
    from bridge.rules import packet_from_json

    try:
        return packet_from_json(json.loads(deal_file.read_text()), rules)
    except OSError as exc:
        raise Problem(f"cannot read {deal_file}: {exc.strerror}") from None
    except ValueError as exc:
        raise Problem(f"{deal_file}: {exc}") from None


@kit.command("backtest")
@click.option(
    "--since",
    default="30d",
    show_default=True,
    metavar="D",
    callback=_duration,
    help="Deals judged in the last D: seconds, or a number with s, m, h or d.",
)
@click.option(
    "--rules",
    "rules_dir",
    metavar="DIR",
    type=click.Path(path_type=Path),
    help="The changed rules folder  [default: FULLKIT_RULES_DIR]",
)
@click.option(
    "--format",
    "output",
    type=click.Choice(["table", "json"]),
    default="table",
    show_default=True,
)
@click.option("--limit", type=click.IntRange(min=0), help="List at most N changes (all count).")
def kit_backtest(since: Any, rules_dir: Path | None, output: str, limit: int | None) -> None:
    """Judge each deal's latest stored packet again with a rules folder; writes nothing.

    Prints how many deals would flip (accepted → returned, returned → accepted, to or from
    no kit), change kit or findings, and a table of them with the reasons. Without --rules
    it compares the current rules with what was decided (after editing them in place).
    Exit 0 whether or not any deal would flip; 1 for an invalid rules folder.
    """
    from bridge import backtest
    from bridge.sweep import describe

    settings = _settings()
    rules = _check_rules(settings, rules_dir)
    report = _backtest(settings, rules, since)
    changes = backtest.ordered(report)
    listed = changes if limit is None else changes[:limit]
    if output == "json":
        answer = {
            "rules": str((rules_dir or settings.rules_dir).resolve()),
            "since": describe(since),
            "summary": backtest.summary(report),
            "rejudged": report.rejudged,
            "unchanged": report.unchanged,
            "flips": report.flips,
            "counts": dict(sorted(report.counts.items())),
            "changes": [change.as_json() for change in listed],
            "truncated": len(listed) < len(changes),
        }
        click.echo(json.dumps(answer, ensure_ascii=False, indent=1))
        return
    click.echo(backtest.summary(report))
    if listed:
        click.echo("")
        for line in backtest.table(listed):
            click.echo(line)
        click.echo("\n(+ now missing, - no longer missing)")
    if len(listed) < len(changes):
        click.echo(f"... and {len(changes) - len(listed)} more (raise --limit to list them)")


def _backtest(settings: Settings, rules: Any, since: Any) -> Any:
    """The backtest over the ledger, read-only: a ledger not yet made is not created."""
    import datetime as dt

    from sqlalchemy import make_url
    from sqlalchemy.exc import DBAPIError

    from bridge import backtest, db

    if settings.uses_default_database:
        sqlite_file = make_url(settings.sqlalchemy_url).database
        if not sqlite_file or not Path(sqlite_file).exists():
            return backtest.Report()  # nothing was ever judged here
    engine = db.make_engine(settings)
    try:
        if db.current_revision(engine) != db.head_revision():
            raise Problem("the ledger schema is not up to date: run `fullkit db upgrade`")
        with engine.connect() as connection:
            return backtest.run(connection, rules, dt.datetime.now(dt.UTC) - since)
    except DBAPIError as exc:
        raise Problem(str(_ledger_unreachable(settings, exc))) from None
    finally:
        engine.dispose()


@cli.command()
@click.argument("handoff", metavar="CRM:DEAL_ID")
def status(handoff: str) -> None:
    """Show who owns a deal and its hand-off history."""
    from bridge import db, ledger

    crm, deal_id = _handoff_ref(handoff)
    settings = _settings()
    engine = db.make_engine(settings)
    _prepare_ledger(settings, engine)
    try:
        with db.session_factory(engine)() as session:
            history = ledger.deal_history(session, crm, deal_id)
    except Exception as exc:
        raise Problem(str(_ledger_unreachable(settings, exc))) from None
    if history is None:
        raise Problem(f"no hand-off recorded for {crm}:{deal_id}")
    click.echo(f"{crm}:{deal_id} — owner {history['owner']} since {history['owner_since']}")
    for attempt in history["attempts"]:
        # An attempt that failed before a kit was chosen has none: say so, not "None".
        kit_id = attempt["kit"] or "-"
        click.echo(f"  attempt {attempt['attempt']} ({kit_id}): {attempt['state']}")
        seller = attempt.get("sales_owner")
        if seller:
            click.echo(f"    sales owner: {_seller(seller)}")
        for finding in attempt["findings"]:
            click.echo(f"    missing: {finding['message']}")
        if attempt["ops_link"]:
            click.echo(f"    ops: {attempt['ops_owner']} {attempt['ops_link']}")
        if attempt["error"] and attempt["state"] == "failed":
            click.echo(f"    error: {attempt['error']}")
        elif attempt["error"]:
            # In progress: the error says what the attempt is waiting for, not why it failed.
            click.echo(f"    {attempt['error']}")


def _seller(owner: dict[str, str | None]) -> str:
    """The sales owner as the CRM names them, on one line: CRM text may carry a newline
    or a terminal escape."""
    from bridge.report_text import one_line

    name, email = owner.get("name"), owner.get("email")
    said = f"{name} <{email}>" if name and email else name or email or owner.get("id") or "?"
    return one_line(said, 200)


def _since(ctx: click.Context, param: click.Parameter, value: str | None) -> Any:
    import datetime as dt

    from bridge.report import BadFilter, parse_since

    if value is None:
        return None
    try:
        return parse_since(value, dt.datetime.now(dt.UTC))
    except BadFilter as exc:
        raise click.BadParameter(str(exc)) from None


@cli.command()
@click.option(
    "--since",
    metavar="D",
    callback=_since,
    help="Journeys that started in the last D (48h, 30d, 12w) or since a date (2026-11-01).",
)
@click.option("--by", type=click.Choice(["kit", "owner", "week"]), help="One row per group.")
@click.option("--crm", type=click.Choice(CRMS), help="Only this CRM.")
@click.option("--kit", "kit_id", metavar="KIT", help="Only journeys of this kit.")
@click.option(
    "--format",
    "output",
    type=click.Choice(["table", "json", "csv"]),
    default="table",
    show_default=True,
)
def report(since: Any, by: str | None, crm: str | None, kit_id: str | None, output: str) -> None:
    """First-pass yield, top missing items, returns per deal and time to acceptance.

    Figures are over hand-off journeys (a deal's attempts until ops accepted it); the
    README defines each one.
    """
    import datetime as dt

    from bridge import db
    from bridge import report as figures
    from bridge.report_text import csv_text, table

    now = dt.datetime.now(dt.UTC)
    filters = figures.Filters(since=since, crm=crm, kit=kit_id)
    settings = _settings()
    engine = db.make_engine(settings)
    _prepare_ledger(settings, engine)
    try:
        with db.session_factory(engine)() as session:
            result = figures.build_report(session, filters, by, now)
            kits = figures.known_kits(session) if kit_id and not result.overall.journeys else []
    except Exception as exc:
        raise Problem(str(_ledger_unreachable(settings, exc))) from None
    finally:
        engine.dispose()
    if kit_id and not result.overall.journeys and kit_id not in kits:
        known = ", ".join(kits) or "none yet"
        raise Problem(f"no hand-off was ever judged against kit {kit_id!r} (kits seen: {known})")
    if output == "json":
        click.echo(json.dumps(figures.report_json(result), indent=2, ensure_ascii=False))
    elif output == "csv":
        click.echo(csv_text(result), nl=False)
    else:
        for line in table(result):
            click.echo(line)


@cli.command()
@click.argument("handoffs", nargs=-1, metavar="[CRM:DEAL_ID]...")
def replay(handoffs: tuple[str, ...]) -> None:
    """Re-queue failed hand-offs (all, or the given deals) and failed intake jobs."""
    import connectors
    from bridge import backends, jobs
    from bridge.runtime import Runtime

    deals = [_handoff_ref(ref) for ref in handoffs]
    settings = _settings()
    # The rules just checked are the runtime's: the folder is read once.
    rt = Runtime(settings=settings, rules=_check_rules(settings), registry=connectors.load_all())
    _prepare_ledger(settings, rt.engine)
    try:
        # Before the ledger is touched: an attempt moved back to work needs its job queued.
        backends.ping_queue(settings, lambda: rt.redis)
    except backends.Unreachable as exc:
        raise Problem(str(exc)) from None
    try:
        attempts = jobs.replay_failed(rt, deals or None)
        intake = 0 if deals else jobs.requeue_failed_jobs(rt)
    except Exception as exc:
        raise Problem(f"replay failed: {type(exc).__name__}: {_first_line(exc)}") from None
    finally:
        _leave_queue(settings, rt.redis)
    for handoff_id in attempts:
        click.echo(f"queued {handoff_id}")
    click.echo(f"replayed {len(attempts)} failed hand-off(s) and {intake} failed intake job(s)")
    replayed = {handoff_id.rpartition(":")[0] for handoff_id in attempts}
    missing = [f"{crm}:{deal_id}" for crm, deal_id in deals if f"{crm}:{deal_id}" not in replayed]
    if missing:
        raise Problem(f"no failed hand-off for {', '.join(missing)}")


def _leave_queue(settings: Settings, connection: Any) -> None:
    """Close this command's connection; an embedded server nobody else uses stops."""
    from bridge.valkey import EmbeddedValkey

    connection.close()
    if not settings.redis_url:
        EmbeddedValkey(settings.home).stop_if_unused()


def _prepare_ledger(settings: Settings, engine: Any) -> None:
    """Check the ledger's schema (the SQLite default is brought up to date)."""
    from bridge import db

    try:
        db.prepare(engine, settings)
    except db.SchemaOutdated as exc:
        raise Problem(str(exc)) from None
    except Exception as exc:
        raise Problem(str(_ledger_unreachable(settings, exc))) from None


def _ledger_unreachable(settings: Settings, exc: Exception) -> Exception:
    from bridge.backends import ledger_unreachable

    return ledger_unreachable(settings, exc)


@cli.command()
@click.option(
    "--older-than",
    default="15m",
    show_default=True,
    metavar="D",
    callback=_duration,
    help="Deals in a hand-off stage longer than D: seconds, or a number with s, m, h.",
)
@click.option(
    "--within",
    default="7d",
    show_default=True,
    metavar="D",
    callback=_duration,
    help="Only deals that entered the stage in the last D (won deals stay there).",
)
def sweep(older_than: Any, within: Any) -> None:
    """Queue deals that sat in a hand-off stage with no attempt (their webhook was lost)."""
    from bridge.sweep import SweepFailed, run_sweep

    if within < older_than:
        raise click.BadParameter(
            "must be at least --older-than: no deal can have entered within it",
            param_hint="--within",
        )
    settings = _settings()
    _check_rules(settings)
    try:
        for line in run_sweep(settings, older_than, within):
            click.echo(line)
    except SweepFailed as exc:
        raise Problem(str(exc)) from None


def _handoff_ref(ref: str) -> tuple[str, str]:
    """(crm, canonical deal id): Salesforce's 15- and 18-character ids name one deal."""
    from bridge.deal_ids import CRMS, InvalidDealId, canonical_deal_id

    crm, _, deal_id = ref.partition(":")
    if crm not in CRMS or not deal_id:
        raise click.UsageError(f"expected CRM:DEAL_ID, e.g. hubspot:1234 (got {ref!r})")
    try:
        return crm, canonical_deal_id(crm, deal_id)
    except InvalidDealId as exc:
        raise click.UsageError(f"{exc} (in {ref!r})") from None


@cli.group(name="db")
def db_group() -> None:
    """Ledger schema."""


@db_group.command("upgrade")
def db_upgrade() -> None:
    """Bring the ledger schema up to date (Alembic)."""
    from bridge import backends, db

    settings = _settings()
    engine = db.make_engine(settings)
    where = backends.ledger_name(settings)
    try:
        before = db.current_revision(engine)
    except Exception as exc:
        raise Problem(str(backends.ledger_unreachable(settings, exc))) from None
    try:
        db.upgrade(engine)
    except Exception as exc:
        reason = backends.reason(exc, settings)
        raise Problem(f"upgrade of {where} failed: {type(exc).__name__}: {reason}") from None
    finally:
        engine.dispose()
    after = db.head_revision()
    if before == after:
        click.echo(f"{where} is already at revision {after}")
    else:
        click.echo(f"upgraded {where} to revision {after} (was {before or 'empty'})")


@cli.group()
def valkey() -> None:
    """The embedded Valkey that serve and worker share when REDIS_URL is unset."""


def _embedded(settings: Settings) -> Any:
    from bridge.backends import masked
    from bridge.valkey import EmbeddedValkey

    if settings.redis_url:
        raise Problem(
            f"REDIS_URL is set ({masked(settings.redis_url)}): "
            "the embedded Valkey is not used, and that server is not Fullkit's to manage"
        )
    return EmbeddedValkey(settings.home)


@valkey.command("status")
def valkey_status() -> None:
    """Say whether the embedded Valkey of FULLKIT_HOME runs, and for how many clients."""
    settings = _settings()
    server = _embedded(settings).running()
    home = settings.home.resolve()
    if server is None:
        click.echo(f"embedded Valkey of {home}: not running")
        return
    click.echo(
        f"embedded Valkey of {home}: running, pid {server.pid}, "
        f"redis://127.0.0.1:{server.port}/0, {server.clients} client connection(s)"
    )


@valkey.command("stop")
@click.option("--force", is_flag=True, help="Stop it even while other processes use it.")
def valkey_stop(force: bool) -> None:
    """Stop the embedded Valkey of FULLKIT_HOME (its append-only file is synced first)."""
    settings = _settings()
    embedded = _embedded(settings)
    server = embedded.running()
    home = settings.home.resolve()
    if server is None:
        embedded.stop()  # clears a stale record of a server that no longer answers
        click.echo(f"embedded Valkey of {home}: not running")
        return
    if server.clients and not force:
        # A running serve or worker would only start it again on its next request.
        raise Problem(
            f"embedded Valkey of {home} still serves {server.clients} client connection(s) "
            "(a serve or worker on this FULLKIT_HOME?): stop them first, or use --force"
        )
    embedded.stop()
    click.echo(f"embedded Valkey of {home}: stopped (pid {server.pid})")


@cli.group()
def hubspot() -> None:
    """HubSpot portal set-up."""


@hubspot.command("setup")
def hubspot_setup() -> None:
    """Create the fullkit_* properties (idempotent); check scopes, ticket stages and owners."""
    from connectors.hubspot_checks import setup_portal
    from kernel.errors import ConnectorError

    settings = _settings()
    rules = _check_rules(settings)
    try:
        result = setup_portal(settings, rules.kits)
    except ConnectorError as exc:
        raise Problem(f"HubSpot setup failed: {exc}") from None
    for line in result.lines:
        click.echo(line)
    for problem in result.problems:
        click.echo(f"problem: {problem}", err=True)
    if result.problems:
        raise Problem(f"HubSpot setup found {len(result.problems)} problem(s)")


@hubspot.command("app")
@click.option(
    "--url",
    metavar="https://HOST",
    help="Public URL of this Fullkit; writes HOST/webhooks/hubspot as the webhook target.",
)
@click.option(
    "--project",
    type=click.Path(file_okay=False, path_type=Path),
    help="The HubSpot project folder (default: hubspot-app/ next to Fullkit's code).",
)
def hubspot_app(url: str | None, project: Path | None) -> None:
    """Show the HubSpot project (scopes, webhook target); --url fills in the target."""
    from connectors.hubspot_app import AppConfigError, load_app, set_target_url

    try:
        if url is not None:
            try:
                set_target_url(url, project)
            except ValueError as exc:
                raise click.BadParameter(str(exc), param_hint="--url") from None
        app = load_app(project)
    except AppConfigError as exc:
        raise Problem(str(exc)) from None
    click.echo(f"project: {app.project_dir}")
    click.echo(f"app: {app.name} (static token, private distribution)")
    click.echo(f"scopes: {' '.join(app.required_scopes)}")
    click.echo(f"webhook target: {app.target_url}")
    if app.target_url_is_placeholder:
        raise Problem(
            "the webhook target is still a placeholder: fullkit hubspot app --url https://HOST"
        )
    click.echo(f"next: cd {app.project_dir} && hs project upload")


@cli.group()
def salesforce() -> None:
    """Salesforce org checks."""


@salesforce.command("check")
def salesforce_check() -> None:
    """Check every field Fullkit reads and writes, its type and access, and the ops owners."""
    from connectors.salesforce_checks import check_org
    from kernel.errors import ConnectorError

    settings = _settings()
    rules = _check_rules(settings)
    try:
        result = check_org(settings, rules.kits, rules.mappings.get("salesforce"))
    except ConnectorError as exc:
        raise Problem(f"Salesforce check failed: {_first_line(exc)}") from None
    for line in result.lines:
        click.echo(line)
    for problem in result.problems:
        click.echo(f"problem: {problem}", err=True)
    if result.problems:
        raise Problem(f"Salesforce check found {len(result.problems)} problem(s)")
    click.echo("Salesforce org: ready for Fullkit")


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [""])[0][:300]


def main() -> NoReturn:
    # Whatever a command creates (ledger, append-only file, logs, state and metrics files,
    # in its children too) is its user's alone; see bridge/home.py.
    os.umask(PRIVATE_UMASK)
    try:
        result = cli.main(prog_name="fullkit", standalone_mode=False)
    except click.exceptions.NoArgsIsHelpError as exc:
        # A bare `fullkit` (or `fullkit kit`) asks what there is: the help, not an error.
        click.echo(exc.ctx.get_help() if exc.ctx else exc.format_message())
        sys.exit(exc.exit_code)
    except click.UsageError as exc:
        hint = f" (see `{exc.ctx.command_path} --help`)" if exc.ctx else ""
        click.echo(f"fullkit: {exc.format_message()}{hint}", err=True)
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except SettingsError as exc:  # a connector's or receiver's own settings, read late
        click.echo(f"fullkit: {exc}", err=True)
        sys.exit(1)
    except (click.Abort, KeyboardInterrupt):
        sys.exit(130)
    except SystemExit:
        raise
    except Exception as exc:  # the promise: one clear line, never a traceback
        click.echo(f"fullkit: {type(exc).__name__}: {_first_line(exc)}", err=True)
        sys.exit(1)
    sys.exit(result if isinstance(result, int) else 0)
