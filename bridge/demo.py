"""`fullkit demo`: the whole hand-off story on the embedded defaults and the sandbox.

Real parts only: a `fullkit serve` and a `fullkit worker` process, the embedded Valkey,
SQLite, the loopback HubSpot sandbox sending real signed webhooks, the loopback
Salesforce org sending real outbound messages, and loopback Jira, Asana and webhook
receivers taking the hand-offs the demo's kits route to them (bridge/demo_ops.py).
"""

from __future__ import annotations

import fcntl
import os
import re
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import requests

from bridge import db, ledger
from bridge import demo_salesforce as salesforce
from bridge.demo_ops import MADE, OpsTools, start_ops_tools
from bridge.home import private_home
from bridge.settings import Settings, load_settings
from bridge.valkey import EmbeddedValkey, free_port
from sandbox import HubSpotSandbox, WriteSource, start_sandbox
from sandbox.salesforce import SalesforceSandbox

# A hand-off that HubSpot's rate limit keeps answering 429 backs off for up to a minute after
# a few retries; no deal settling for twice that long means something is stuck, not busy.
SETTLE_SECONDS = 120.0
# HubSpot's burst limit for a Professional or Enterprise portal, the kind that runs a
# ticket hand-off to ops (Free and Starter get 100). The sandbox enforces it: past it,
# Fullkit waits out HubSpot's 429s as it would in production.
PORTAL_RATE_LIMIT = (190, 10.0)
# Starting serve and a worker's processes takes seconds on a quiet machine; a loaded one
# (CI running two suites) needs more, and a dead process is reported at once anyway.
START_SECONDS = 90.0
# What `hubspot setup` says of each property group and property ("deals: property ...").
PROPERTY_LINE = re.compile(r"^\w+: property (group )?\w+ ")


@dataclass
class Scenario:
    label: str
    expect: str  # accepted | returned | resubmitted
    deal: dict[str, str]
    company: dict[str, str] | None = None
    contacts: list[dict[str, str]] = field(default_factory=list)
    line_items: list[dict[str, str]] = field(default_factory=list)
    fix: dict[str, str] | None = None  # for the resubmitted deal: what sales adds
    # Files sales attached to the deal: (name, extension, "notes" or "emails").
    files: list[tuple[str, str, str]] = field(default_factory=list)
    deal_id: str = ""
    moved_at: float = 0.0


def sample_contacts(*roles: str | None) -> list[dict[str, str]]:
    people = []
    for n, role in enumerate(roles):
        person = {
            "email": f"person{n}@customer.example",
            "firstname": f"Pat{n}",
            "lastname": "Customer",
        }
        if role:
            person["contact_role"] = role
        people.append(person)
    return people


LINE = [{"name": "Platform licence", "quantity": "10", "price": "1200"}]
ORDER_FORM = ("Signed order form", "pdf", "notes")
# A big account as real portals hold them: more contacts than a deal read embeds (100), so
# the rest come from association pages, and only the last one has a role.
BIG_CONTACTS, BIG_LINE_ITEMS = 150, 120


def big_account(kickoff: str) -> Scenario:
    contacts = sample_contacts(*[None] * (BIG_CONTACTS - 1), "billing")
    items = [{"name": f"Site licence {n + 1}", "quantity": "1", "price": "400"}
             for n in range(BIG_LINE_ITEMS)]  # fmt: skip
    name = f"Massive Dynamic — {BIG_CONTACTS} contacts, {BIG_LINE_ITEMS} line items"
    return Scenario(
        f"big account: {BIG_CONTACTS} contacts (only the last has a role), "
        f"{BIG_LINE_ITEMS} line items",
        "accepted",
        {"dealname": name, "pipeline": "default", "dealstage": "contractsent",
         "amount": "48000", "plan_tier": "enterprise", "sso_provider": "Azure AD",
         "kickoff_date": kickoff},
        {"name": "Massive Dynamic", "domain": "massive.example"},
        contacts, items, files=[("Order Form (signed)", "pdf", "emails")],
    )  # fmt: skip


def scenarios(kickoff: str) -> list[Scenario]:
    def deal(name: str, **extra: str) -> dict[str, str]:
        base = {"dealname": name, "pipeline": "default", "dealstage": "contractsent",
                "amount": "12000", "plan_tier": "pro", "kickoff_date": kickoff}  # fmt: skip
        base.update(extra)
        return {k: v for k, v in base.items() if v != ""}

    def company(name: str, domain: str = "") -> dict[str, str]:
        values = {"name": name, "domain": domain or f"{name.lower().split()[0]}.example"}
        return {k: v for k, v in values.items() if v != "-"}

    return [
        Scenario("complete pro deal", "accepted", deal("Acme Corp — Pro"),
                 company("Acme Corp"), sample_contacts("billing", "champion"), LINE),
        Scenario("complete enterprise deal with SSO and signed order form", "accepted",
                 deal("Globex — Enterprise", plan_tier="enterprise", sso_provider="Okta"),
                 company("Globex"), sample_contacts("billing", "technical"), LINE,
                 files=[ORDER_FORM]),
        Scenario("starter deal (SSO not required)", "accepted",
                 deal("Initech — Starter", plan_tier="starter", amount="900"),
                 company("Initech"), sample_contacts("billing"), LINE),
        Scenario("billing contact after role-less contacts", "accepted",
                 deal("Umbrella — Pro"), company("Umbrella"),
                 sample_contacts(None, None, "billing"), LINE),
        Scenario("amount missing", "returned", deal("Hooli — Pro", amount=""),
                 company("Hooli"), sample_contacts("billing"), LINE),
        Scenario("no billing contact", "returned", deal("Stark — Pro"), company("Stark"),
                 sample_contacts("champion", "technical"), LINE),
        Scenario("enterprise without SSO provider", "returned",
                 deal("Wayne — Enterprise", plan_tier="enterprise"), company("Wayne"),
                 sample_contacts("billing"), LINE, files=[ORDER_FORM]),
        Scenario("enterprise without the signed order form", "returned",
                 deal("Oscorp — Enterprise", plan_tier="enterprise", sso_provider="Okta"),
                 company("Oscorp"), sample_contacts("billing"), LINE,
                 files=[("Pricing proposal", "pdf", "emails")]),
        Scenario("several items missing", "returned", deal("Tyrell — Pro", amount="0",
                 kickoff_date=""), company("Tyrell", "-"), sample_contacts(None)),
        Scenario("company domain missing", "returned", deal("Cyberdyne — Pro"),
                 company("Cyberdyne", "-"), sample_contacts("billing"), LINE),
        Scenario("fixed, then resubmitted", "resubmitted", deal("Soylent — Pro",
                 kickoff_date=""), company("Soylent"), sample_contacts("billing"), LINE,
                 fix={"kickoff_date": kickoff}),
        big_account(kickoff),
    ]  # fmt: skip


class DemoError(Exception):
    """The demo cannot run or stopped early; the message says why, in the operator's words."""


class Stopped(Exception):
    """SIGTERM: unwind like Ctrl-C, so everything the demo started is stopped."""


@dataclass
class Stack:
    settings: Settings
    env: dict[str, str]
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    url: str = ""

    def stop(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.terminate()
        for process in self.processes.values():
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def check_alive(self) -> None:
        """Raise DemoError with a process's own last words as soon as one has exited."""
        for name, process in self.processes.items():
            code = process.poll()
            if code is not None:
                said = _tail(self.settings.home / "logs" / f"{name}.log")
                raise DemoError(f"`fullkit {name}` exited with status {code}:\n{said}")


def demo_home() -> Path:
    """The demo's own state, inside FULLKIT_HOME so that it never mixes with real state."""
    return (Path(os.environ.get("FULLKIT_HOME") or ".fullkit") / "demo").resolve()


@contextmanager
def demo_lock(home: Path) -> Iterator[None]:
    """One demo per home: a second one would delete the running one's state under it.

    The lock sits beside the home, which each demo empties first, and the kernel drops
    it with its process, so a demo that was killed leaves nothing to clean up by hand.
    """
    private_home(home.parent)
    with open(home.parent / "demo.lock", "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            pid = handle.read().strip() or "?"
            raise DemoError(
                f"another demo (pid {pid}) is running on {home}: "
                f"stop it first (Ctrl-C in its terminal, or kill {pid})"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        yield


def run_demo(*, keep: bool = False, deal_count: int | None = None) -> int:
    """Hand off deal_count deals (default: each scenario once), cycling the scenarios."""
    started = time.monotonic()
    home = demo_home()
    with demo_lock(home):
        previous = signal.signal(signal.SIGTERM, _raise_stopped)
        try:
            return _run(home, keep, deal_count, started)
        except (KeyboardInterrupt, Stopped):
            print("\nStopped: serve, worker, the embedded Valkey and the sandbox are down.")
            return 130
        finally:
            signal.signal(signal.SIGTERM, previous)


def _raise_stopped(_signum: int, _frame: object) -> None:
    raise Stopped


def _run(home: Path, keep: bool, deal_count: int | None, started: float) -> int:
    EmbeddedValkey(home).stop() if home.exists() else None
    shutil.rmtree(home, ignore_errors=True)
    box = HubSpotSandbox(app_id=4_242_424, rate_limit=PORTAL_RATE_LIMIT)
    box.seed_default_portal()
    running = start_sandbox(sandbox=box)
    org = salesforce.start_org()
    tools = start_ops_tools()
    stack: Stack | None = None
    try:
        rules = tools.write_rules(load_settings().rules_dir, home / "rules")
        overrides = {**salesforce.org_env(org), **tools.env(), "FULLKIT_RULES_DIR": str(rules)}
        stack = start_stack(home, running.url, box, env_overrides=overrides)
        requests_, seconds = PORTAL_RATE_LIMIT
        print(f"Sandbox HubSpot at {running.url} (a Professional portal: {requests_} requests "
              f"per {seconds:.0f} s); sandbox Salesforce org at {org.url}; "
              f"Fullkit at {stack.url}", flush=True)  # fmt: skip
        salesforce.connect(org.sandbox, stack.url)
        box.subscribe(f"{stack.url}/webhooks/hubspot", stack.env["HUBSPOT_CLIENT_SECRET"],
                      app_id=box.app_id, signature_version="v3", generic=True)  # fmt: skip
        plays, opportunities = _play(box, org.sandbox, stack, deal_count)
        code = _report(box, org.sandbox, tools, stack, plays, opportunities,
                       time.monotonic() - started)  # fmt: skip
        if keep:
            _keep_running(stack, box, running.url, plays)
        else:
            print(console_hint(home), flush=True)
        return code
    finally:
        # A second signal must not cut the clean-up short and leave processes behind.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        try:
            if stack is not None:
                stack.stop()
            running.stop()
            org.stop()
            tools.stop()
            EmbeddedValkey(home).stop()
        finally:
            signal.signal(signal.SIGINT, signal.default_int_handler)


def stack_env(home: Path, box: HubSpotSandbox, sandbox_url: str, port: int) -> dict[str, str]:
    """The environment of a demo stack's serve and worker, talking to `box` at sandbox_url."""
    env = {
        **os.environ,
        "FULLKIT_HOME": str(home),
        "HUBSPOT_ACCESS_TOKEN": box.access_token,
        "HUBSPOT_API_BASE": sandbox_url,
        "HUBSPOT_APP_BASE": sandbox_url,
        "HUBSPOT_CLIENT_SECRET": secrets.token_hex(16),
        "HUBSPOT_APP_ID": str(box.app_id),
        # The budget Fullkit keeps is the portal's own limit, as an operator would set it.
        "HUBSPOT_RATE_LIMIT": f"{PORTAL_RATE_LIMIT[0]}/{PORTAL_RATE_LIMIT[1]:g}s",
        "FULLKIT_ADMIN_TOKEN": secrets.token_hex(16),
        "PORT": str(port),
    }
    for name in ("REDIS_URL", "DATABASE_URL"):
        env.pop(name, None)  # the demo runs on the embedded defaults
    return env


def start_stack(
    home: Path,
    sandbox_url: str,
    box: HubSpotSandbox,
    verbose: bool = True,
    env_overrides: dict[str, str] | None = None,
) -> Stack:
    port = free_port()
    env = stack_env(home, box, sandbox_url, port)
    env.update(env_overrides or {})  # e.g. the benchmark's portal limit and batch size
    settings = load_settings(**{k: v for k, v in env.items() if k.isupper()})
    for line in hubspot_setup(settings):
        if verbose:
            print(f"  hubspot setup: {line}", flush=True)
    stack = Stack(settings, env, url=f"http://127.0.0.1:{port}")
    cli = [sys.executable, "-m", "bridge"]
    logs = home / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    for name, args in (("serve", ["serve", "--port", str(port)]), ("worker", ["worker"])):
        with open(logs / f"{name}.log", "wb") as log:  # the child keeps its own copy
            stack.processes[name] = subprocess.Popen(
                cli + args, env=env, stdout=log, stderr=subprocess.STDOUT
            )
    try:
        wait_for(_ready(stack), START_SECONDS, "serve and worker to start", stack.check_alive)
    except BaseException:
        stack.stop()  # the caller never gets the stack, so nothing else would stop them
        raise
    return stack


def hubspot_setup(settings: Settings) -> list[str]:
    """`fullkit hubspot setup` on the sandbox portal, told in a few lines instead of one a
    property: what it created, then each check (token scopes; per kit, its ticket pipeline
    and stage and its ops owners)."""
    import connectors
    from bridge.rules import load_rules
    from connectors.hubspot_checks import setup_portal

    result = setup_portal(settings, load_rules(settings.rules_dir, connectors.load_all()).kits)
    if not result.ok:
        raise DemoError("hubspot setup found problems:\n" + "\n".join(
            f"  {problem}" for problem in result.problems))  # fmt: skip
    made = [line for line in result.lines if PROPERTY_LINE.match(line)]
    created = sum(1 for line in made if line.endswith(" created"))
    checks: dict[str, list[str]] = {}
    for line in result.lines:
        if line not in made:
            subject, _, said = line.partition(": ")
            checks.setdefault(subject, []).append(said)
    return [
        f"fullkit property groups and properties: {created} created, "
        f"{len(made) - created} already present",
        *(f"{subject}: {'; '.join(said)}" for subject, said in checks.items()),
    ]


def _ready(stack: Stack) -> Callable[[], bool]:
    worker_log = stack.settings.home / "logs" / "worker.log"
    return lambda: _healthy(stack.url) and b"worker ready" in worker_log.read_bytes()


def _tail(log: Path, lines: int = 5) -> str:
    try:
        said = [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        said = []
    return "\n".join(f"  {line}" for line in said[-lines:]) or "  (nothing logged)"


def _play(
    box: HubSpotSandbox, org: SalesforceSandbox, stack: Stack, deal_count: int | None
) -> tuple[list[Scenario], list[salesforce.Opportunity]]:
    kickoff = time.strftime("%Y-%m-%d", time.gmtime(time.time() + 21 * 86400))
    opportunities = salesforce.seed(org, kickoff)
    base = scenarios(kickoff)
    plays = [_nth(base, n) for n in range(deal_count or len(base))]
    for n, play in enumerate(plays):
        slug = play.deal["dealname"].split()[0].lower()
        contacts = [{**c, "email": f"{c['email'].split('@')[0]}.{n}@{slug}.example"}
                    for c in play.contacts]  # fmt: skip
        play.deal_id = box.create_deal(play.deal, company=play.company, contacts=contacts,
                                       line_items=play.line_items,
                                       owner_email="sales-sam@example.com")  # fmt: skip
        for name, extension, via in play.files:
            box.attach_file(play.deal_id, name, extension, via=via)
    print(f"Moving {len(plays)} deals to the hand-off stage (closedwon)…", flush=True)
    for play in plays:
        play.moved_at = time.time()
        box.move_deal(play.deal_id, "closedwon")
    print(f"Closing {len(opportunities)} Salesforce opportunities "
          f"({salesforce.HANDOFF_STAGE})…", flush=True)  # fmt: skip
    salesforce.hand_off(org, opportunities)
    sessions = db.session_factory(db.make_engine(stack.settings))
    wait_settled(Settling(sessions, [p.deal_id for p in plays], 1), "every deal to settle",
                 stack.check_alive)  # fmt: skip
    wait_settled(Settling(sessions, [o.deal_id for o in opportunities], 1, crm="salesforce"),
                 "every opportunity to settle", stack.check_alive)  # fmt: skip
    resubmitted = [p for p in plays if p.fix]
    for play in resubmitted:
        print(f"Sales fixes deal {play.deal_id} ({play.deal['dealname']}) and resubmits it…")
        box.update("deals", play.deal_id, dict(play.fix or {}), source=WriteSource.user(None))
        play.moved_at = time.time()
        box.move_deal(play.deal_id, "closedwon")
    wait_settled(Settling(sessions, [p.deal_id for p in resubmitted], 2),
                 "the resubmitted deals to settle", stack.check_alive)  # fmt: skip
    return plays, opportunities


def _nth(base: list[Scenario], n: int) -> Scenario:
    """The n-th deal: its own copy of a scenario (a shared one would carry one deal id)."""
    play = base[n % len(base)]
    rounds = n // len(base)
    name = play.deal["dealname"] + (f" #{rounds + 1}" if rounds else "")
    return replace(play, deal={**play.deal, "dealname": name})


@dataclass
class Settling:
    """Which of the deals have settled: their attempt number `attempts` is over."""

    sessions: Any
    deal_ids: list[str]
    attempts: int
    crm: str = "hubspot"
    done: set[str] = field(default_factory=set)

    def count(self) -> int:
        with self.sessions() as session:
            for deal_id in self.deal_ids:
                if deal_id in self.done:
                    continue  # settled stays settled: no need to ask the ledger again
                latest = ledger.latest_attempt(session, self.crm, deal_id)
                if latest and latest.number >= self.attempts:
                    if latest.state not in ledger.IN_PROGRESS:
                        self.done.add(deal_id)
        return len(self.done)


def wait_settled(settling: Settling, what: str, alive: Callable[[], None]) -> None:
    """Wait until every deal has settled, giving up only when none settles for a while:
    many deals take minutes within HubSpot's rate limit, and that is no hang."""
    total, settled, since = len(settling.deal_ids), -1, time.monotonic()
    while (count := settling.count()) < total:
        alive()
        if count > settled:
            settled, since = count, time.monotonic()
        elif time.monotonic() - since > SETTLE_SECONDS:
            raise DemoError(
                f"no deal settled for {SETTLE_SECONDS:.0f}s while waiting for {what} "
                f"({count} of {total} settled)"
            )
        time.sleep(0.1)


def _report(
    box: HubSpotSandbox,
    org: SalesforceSandbox,
    tools: OpsTools,
    stack: Stack,
    plays: list[Scenario],
    opportunities: list[salesforce.Opportunity],
    wall: float,
) -> int:
    sessions = db.session_factory(db.make_engine(stack.settings))
    rows: list[tuple[str, ...]] = []
    seconds: list[float] = []
    failures: list[str] = []
    told = [("hubspot", p.deal_id, p.deal["dealname"], p.expect, p.label, p.moved_at)
            for p in plays]  # fmt: skip
    told += [("salesforce", o.deal_id, o.name, o.expect, o.label, o.moved_at)
             for o in opportunities]  # fmt: skip
    for crm, deal_id, name, expect, label, moved_at in told:
        with sessions() as session:
            history = ledger.deal_history(session, crm, deal_id)
            latest = ledger.latest_attempt(session, crm, deal_id)
            assert history is not None and latest is not None
            took = latest.transitions[-1].at.timestamp() - moved_at
            detail = _detail(latest)
        seconds.append(took)
        outcome = _outcome(history)
        expected = {"accepted": "accepted", "returned": "returned",
                    "resubmitted": "returned → accepted"}[expect]  # fmt: skip
        if outcome != expected:
            failures.append(f"{crm} deal {deal_id} ({label}): {outcome}, expected {expected}")
        # The CRM column comes last: a deal's id, name and outcome keep their places.
        rows.append((deal_id, name, outcome, detail, history["owner"], f"{took:.1f}s",
                     CRM_NAMES[crm]))  # fmt: skip
    header = ("deal", "name", "outcome", "missing items / ops ticket", "owner", "took", "CRM")
    _table(header, rows)
    cases, sf_tasks = salesforce.tally(org, opportunities)
    sf_rows = rows[len(plays) :]
    rows = rows[: len(plays)]
    accepted = sum(1 for r in rows if r[2].endswith("accepted"))
    sf_accepted = sum(1 for r in sf_rows if r[2].endswith("accepted"))
    made = {"HubSpot tickets": len(box.tickets()), **tools.made()}
    print(
        f"\n{len(plays)} deals: {accepted} accepted into "
        f"{' + '.join(_counted(count, what) for what, count in made.items())}, "
        f"{len(plays) - accepted} returned to sales; "
        f"{sum(len(box.tasks_for_deal(p.deal_id)) for p in plays)} tasks in HubSpot; "
        f"median {statistics.median(seconds):.1f}s, slowest {max(seconds):.1f}s per hand-off; "
        f"{box.request_count} HubSpot API calls; demo wall time {wall:.1f}s."
    )
    print(
        f"{len(opportunities)} Salesforce opportunities: {sf_accepted} accepted into Cases, "
        f"{len(opportunities) - sf_accepted} returned to sales; {cases} Cases, {sf_tasks} "
        f"Tasks in Salesforce; {org.request_count()} Salesforce API calls."
    )
    for failure in failures:
        print(f"UNEXPECTED: {failure}", file=sys.stderr)
    return 1 if failures else 0


CRM_NAMES = {"hubspot": "HubSpot", "salesforce": "Salesforce"}


def _counted(count: int, things: str) -> str:
    return f"{count} {things if count != 1 else things.removesuffix('s')}"


def _outcome(history: dict[str, Any]) -> str:
    states = [a["state"] for a in history["attempts"]]
    names = {"ops_created": "accepted", "returned": "returned"}
    return " → ".join(names.get(s, s) for s in states)


def _detail(latest: Any) -> str:
    if latest.state == "ops_created":
        made = MADE.get(latest.ops_target or "", "ticket")
        return f"{made} {latest.ops_ref} → {latest.ops_owner}, kickoff {latest.expected_kickoff}"
    if latest.findings:
        count = len(latest.findings)
        return f"{count} missing: " + "; ".join(f["message"] for f in latest.findings)
    return latest.error or ""


def _table(header: tuple[str, ...], rows: Sequence[tuple[Any, ...]]) -> None:
    widths = [max(len(str(v)) for v in column) for column in zip(header, *rows, strict=False)]
    widths[3] = min(widths[3], 70)
    line = "  ".join(f"{{:<{w}}}" for w in widths)
    print()
    print(line.format(*header))
    print(line.format(*("-" * w for w in widths)))
    for row in rows:
        detail = row[3] if len(row[3]) <= 70 else row[3][:67] + "..."
        print(line.format(*row[:3], detail, *row[4:]))


def _keep_running(stack: Stack, box: HubSpotSandbox, sandbox_url: str,
                  plays: list[Scenario]) -> None:  # fmt: skip
    print(banner(stack, box, sandbox_url, plays), flush=True)
    while True:
        stack.check_alive()
        time.sleep(0.5)


def banner(stack: Stack, box: HubSpotSandbox, sandbox_url: str, plays: list[Scenario]) -> str:
    returned = next((p for p in plays if p.expect == "returned"), plays[0])
    home = stack.settings.home
    pids = ", ".join(f"{name} pid {p.pid}" for name, p in stack.processes.items())
    valkey = EmbeddedValkey(home).running()
    token = stack.env["FULLKIT_ADMIN_TOKEN"]
    cli = _cli_name()
    return f"""
Still running; Ctrl-C (or kill {os.getpid()}) stops all of it:
  Fullkit          {stack.url}  (/healthz, /metrics, /webhooks/hubspot)
  HubSpot sandbox  {sandbox_url}
  Processes        {pids}, embedded Valkey pid {valkey.pid if valkey else "?"}
  Logs             {home / "logs"}

Point the CLI at this demo (in another terminal):
  export FULLKIT_HOME={home}
  {cli} status hubspot:{returned.deal_id}
  {cli} valkey status

Open the console in a browser and sign in with this demo's admin token:
  {stack.url}/console/
  token: {token}

Ask the hand-off API (the admin token is this demo's own):
  curl -H 'Authorization: Bearer {token}' {stack.url}/api/handoffs/hubspot/{returned.deal_id}

Send your own signed webhook, as HubSpot would (v3 signature; the client secret is the
sandbox app's, made up for this demo). Deal {returned.deal_id} was returned, so moving it
to closedwon again starts attempt 2:
{webhook_snippet(stack, box, returned.deal_id)}"""


def console_hint(home: Path) -> str:
    """How to browse the hand-offs of a demo that has stopped: its ledger stays in `home`."""
    return f"""
See these hand-offs in the console: `{_cli_name()} demo --keep` leaves the demo running and
prints the console's address and token; or serve the ledger this run left behind:
  export FULLKIT_HOME={home} FULLKIT_ADMIN_TOKEN=$(openssl rand -hex 16)
  echo "token: $FULLKIT_ADMIN_TOKEN"; {_cli_name()} serve
then open http://127.0.0.1:8000/console/ and sign in with that token."""


def _cli_name() -> str:
    """How to call `fullkit` from another terminal: `make demo` does not put it on PATH."""
    launched = Path(sys.argv[0])
    if launched.name != "fullkit":
        return f"{sys.executable} -m bridge"
    on_path = shutil.which("fullkit")
    if on_path and Path(on_path).resolve() == launched.resolve():
        return "fullkit"
    return str(launched.resolve())


def webhook_snippet(stack: Stack, box: HubSpotSandbox, deal_id: str) -> str:
    """Shell lines that sign and send one dealstage change with curl and openssl."""
    event = (
        '[{"eventId":\'$TS\',"subscriptionType":"deal.propertyChange",'
        '"objectId":\'$DEAL\',"propertyName":"dealstage","propertyValue":"closedwon",'
        f'"changeSource":"CRM_UI","occurredAt":\'$TS\',"portalId":{box.portal_id},'
        f'"appId":{box.app_id},"attemptNumber":0,"subscriptionId":1}}]'
    )
    return "\n".join(
        [
            f"  SECRET={stack.env['HUBSPOT_CLIENT_SECRET']} DEAL={deal_id}",
            f"  URL={stack.url}/webhooks/hubspot TS=$(date +%s000)",
            f"  BODY='{event}'",
            "  SIG=$(printf '%s' \"POST$URL$BODY$TS\" "
            '| openssl dgst -sha256 -hmac "$SECRET" -binary | base64)',
            "  curl -sS -i \"$URL\" -H 'Content-Type: application/json' "
            '-H "X-HubSpot-Request-Timestamp: $TS" -H "X-HubSpot-Signature-v3: $SIG" '
            '--data "$BODY"',
        ]
    )


def _healthy(url: str) -> bool:
    try:
        return requests.get(f"{url}/healthz", timeout=2).status_code == 200
    except requests.RequestException:
        return False


def wait_for(
    check: Callable[[], bool],
    timeout: float,
    what: str,
    alive: Callable[[], None] = lambda: None,
) -> None:
    """Poll check; alive raises at once when a process it depends on has died."""
    deadline = time.monotonic() + timeout
    while not check():
        alive()
        if time.monotonic() > deadline:
            raise DemoError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.1)
