"""`fullkit demo`: the whole hand-off story on the embedded defaults and the sandbox.

Real parts only: a `fullkit serve` and a `fullkit worker` process, the embedded Valkey,
SQLite, and the loopback HubSpot sandbox sending real signed webhooks.
"""

from __future__ import annotations

import os
import secrets
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

from bridge import db, ledger
from bridge.settings import Settings, load_settings
from bridge.valkey import EmbeddedValkey, free_port
from sandbox import HubSpotSandbox, WriteSource, start_sandbox

DEMO_HOME = Path(".fullkit") / "demo"
SETTLE_SECONDS = 60.0


@dataclass
class Scenario:
    label: str
    expect: str  # accepted | returned | resubmitted
    deal: dict[str, str]
    company: dict[str, str] | None = None
    contacts: list[dict[str, str]] = field(default_factory=list)
    line_items: list[dict[str, str]] = field(default_factory=list)
    fix: dict[str, str] | None = None  # for the resubmitted deal: what sales adds
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
        Scenario("complete enterprise deal with SSO", "accepted",
                 deal("Globex — Enterprise", plan_tier="enterprise", sso_provider="Okta"),
                 company("Globex"), sample_contacts("billing", "technical"), LINE),
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
                 sample_contacts("billing"), LINE),
        Scenario("several items missing", "returned", deal("Tyrell — Pro", amount="0",
                 kickoff_date=""), company("Tyrell", "-"), sample_contacts(None)),
        Scenario("company domain missing", "returned", deal("Cyberdyne — Pro"),
                 company("Cyberdyne", "-"), sample_contacts("billing"), LINE),
        Scenario("fixed, then resubmitted", "resubmitted", deal("Soylent — Pro",
                 kickoff_date=""), company("Soylent"), sample_contacts("billing"), LINE,
                 fix={"kickoff_date": kickoff}),
    ]  # fmt: skip


@dataclass
class Stack:
    settings: Settings
    env: dict[str, str]
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    url: str = ""

    def stop(self) -> None:
        for process in self.processes:
            process.terminate()
        for process in self.processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()


def run_demo(*, keep: bool = False, deal_count: int = 10) -> int:
    started = time.monotonic()
    home = DEMO_HOME.resolve()
    EmbeddedValkey(home).stop() if home.exists() else None
    shutil.rmtree(home, ignore_errors=True)
    box = HubSpotSandbox(app_id=4_242_424)
    box.seed_default_portal()
    running = start_sandbox(sandbox=box)
    stack = start_stack(home, running.url, box)
    try:
        print(f"Sandbox HubSpot at {running.url}; Fullkit at {stack.url}", flush=True)
        box.subscribe(f"{stack.url}/webhooks/hubspot", stack.env["HUBSPOT_CLIENT_SECRET"],
                      app_id=box.app_id, signature_version="v3", generic=True)  # fmt: skip
        plays = _play(box, stack, deal_count)
        code = _report(box, stack, plays, time.monotonic() - started)
        if keep:
            _keep_running(stack, running.url)
        return code
    finally:
        stack.stop()
        running.stop()
        EmbeddedValkey(home).stop()


def start_stack(home: Path, sandbox_url: str, box: HubSpotSandbox, verbose: bool = True) -> Stack:
    port = free_port()
    env = {
        **os.environ,
        "FULLKIT_HOME": str(home),
        "HUBSPOT_ACCESS_TOKEN": box.access_token,
        "HUBSPOT_API_BASE": sandbox_url,
        "HUBSPOT_APP_BASE": sandbox_url,
        "HUBSPOT_CLIENT_SECRET": secrets.token_hex(16),
        "HUBSPOT_APP_ID": str(box.app_id),
        "FULLKIT_ADMIN_TOKEN": secrets.token_hex(16),
        "PORT": str(port),
    }
    for name in ("REDIS_URL", "DATABASE_URL"):
        env.pop(name, None)  # the demo runs on the embedded defaults
    settings = load_settings(**{k: v for k, v in env.items() if k.isupper()})
    from connectors.hubspot_setup import setup_properties

    for line in setup_properties(settings):
        if verbose:
            print(f"  hubspot setup: {line}", flush=True)
    stack = Stack(settings, env, url=f"http://127.0.0.1:{port}")
    cli = [sys.executable, "-m", "bridge"]
    logs = home / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    for name, args in (("serve", ["serve", "--port", str(port)]), ("worker", ["worker"])):
        log = open(logs / f"{name}.log", "wb")  # noqa: SIM115 — lives as long as the process
        stack.processes.append(
            subprocess.Popen(cli + args, env=env, stdout=log, stderr=subprocess.STDOUT)
        )
    wait_for(lambda: _healthy(stack.url), 30, "the web app to answer /healthz")
    wait_for(lambda: b"worker ready" in (logs / "worker.log").read_bytes(), 30, "the worker")
    return stack


def _play(box: HubSpotSandbox, stack: Stack, deal_count: int) -> list[Scenario]:
    kickoff = time.strftime("%Y-%m-%d", time.gmtime(time.time() + 21 * 86400))
    base = scenarios(kickoff)
    plays = [base[n % len(base)] for n in range(deal_count)]
    for n, play in enumerate(plays):
        slug = play.deal["dealname"].split()[0].lower()
        contacts = [{**c, "email": f"{c['email'].split('@')[0]}.{n}@{slug}.example"}
                    for c in play.contacts]  # fmt: skip
        play.deal_id = box.create_deal(play.deal, company=play.company, contacts=contacts,
                                       line_items=play.line_items,
                                       owner_email="sales-sam@example.com")  # fmt: skip
    print(f"Moving {len(plays)} deals to the hand-off stage (closedwon)…", flush=True)
    for play in plays:
        play.moved_at = time.time()
        box.move_deal(play.deal_id, "closedwon")
    sessions = db.session_factory(db.make_engine(stack.settings))
    ids = [p.deal_id for p in plays]
    wait_for(lambda: _settled(sessions, ids, 1), SETTLE_SECONDS, "every deal to settle")
    resubmitted = [p for p in plays if p.fix]
    for play in resubmitted:
        print(f"Sales fixes deal {play.deal_id} ({play.deal['dealname']}) and resubmits it…")
        box.update("deals", play.deal_id, dict(play.fix or {}), source=WriteSource.user(None))
        play.moved_at = time.time()
        box.move_deal(play.deal_id, "closedwon")
    wait_for(lambda: _settled(sessions, [p.deal_id for p in resubmitted], 2), SETTLE_SECONDS,
          "the resubmitted deals to settle")  # fmt: skip
    return plays


def _settled(sessions: Any, deal_ids: list[str], attempts: int) -> bool:
    with sessions() as session:
        for deal_id in deal_ids:
            latest = ledger.latest_attempt(session, "hubspot", deal_id)
            if latest is None or latest.number < attempts or latest.state in ledger.IN_PROGRESS:
                return False
    return True


def _report(box: HubSpotSandbox, stack: Stack, plays: list[Scenario], wall: float) -> int:
    sessions = db.session_factory(db.make_engine(stack.settings))
    rows, seconds, failures = [], [], []
    for play in plays:
        with sessions() as session:
            history = ledger.deal_history(session, "hubspot", play.deal_id)
            latest = ledger.latest_attempt(session, "hubspot", play.deal_id)
            assert history is not None and latest is not None
            took = latest.transitions[-1].at.timestamp() - play.moved_at
            detail = _detail(latest)
        seconds.append(took)
        outcome = _outcome(history)
        expected = {"accepted": "accepted", "returned": "returned",
                    "resubmitted": "returned → accepted"}[play.expect]  # fmt: skip
        if outcome != expected:
            failures.append(f"deal {play.deal_id} ({play.label}): {outcome}, expected {expected}")
        rows.append((play.deal_id, play.deal["dealname"], outcome, detail,
                     history["owner"], f"{took:.1f}s"))  # fmt: skip
    _table(("deal", "name", "outcome", "missing items / ops ticket", "owner", "took"), rows)
    accepted = sum(1 for r in rows if r[2].endswith("accepted"))
    print(
        f"\n{len(plays)} deals: {accepted} accepted into tickets, {len(plays) - accepted} "
        f"returned to sales; {len(box.tickets())} tickets, "
        f"{sum(len(box.tasks_for_deal(p.deal_id)) for p in plays)} tasks in HubSpot; "
        f"median {statistics.median(seconds):.1f}s, slowest {max(seconds):.1f}s per hand-off; "
        f"{box.request_count} HubSpot API calls; demo wall time {wall:.1f}s."
    )
    for failure in failures:
        print(f"UNEXPECTED: {failure}", file=sys.stderr)
    return 1 if failures else 0


def _outcome(history: dict[str, Any]) -> str:
    states = [a["state"] for a in history["attempts"]]
    names = {"ops_created": "accepted", "returned": "returned"}
    return " → ".join(names.get(s, s) for s in states)


def _detail(latest: Any) -> str:
    if latest.state == "ops_created":
        return f"ticket {latest.ops_ref} → {latest.ops_owner}, kickoff {latest.expected_kickoff}"
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


def _keep_running(stack: Stack, sandbox_url: str) -> None:
    token = stack.env["FULLKIT_ADMIN_TOKEN"]
    print(
        f"\nStill running (Ctrl-C to stop):\n"
        f"  Fullkit        {stack.url}  (/healthz, /metrics, /webhooks/hubspot)\n"
        f"  HubSpot sandbox {sandbox_url}\n"
        f"  History API    curl -H 'Authorization: Bearer {token}' "
        f"{stack.url}/api/handoffs/hubspot/<deal id>\n"
        f"  Home           {stack.settings.home}"
    )
    try:
        while all(p.poll() is None for p in stack.processes):
            time.sleep(1)
    except KeyboardInterrupt:
        pass


def _healthy(url: str) -> bool:
    try:
        return requests.get(f"{url}/healthz", timeout=2).status_code == 200
    except requests.RequestException:
        return False


def wait_for(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise SystemExit(f"fullkit demo: timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.1)
