"""`fullkit` as an operator meets it: exit 0/1/2 and one clear line, never a traceback."""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import redis
import sqlalchemy as sa
from click.testing import CliRunner

from bridge import db, intake, ledger
from bridge.cli import cli
from bridge.models import Attempt
from bridge.settings import Settings
from bridge.valkey import EmbeddedValkey
from sandbox import RunningSandbox
from tests.conftest import FIXTURES, ROOT, secret
from tests.e2e import ORDER_FORM


def run(args: list[str], env: dict[str, str] | None = None) -> Any:
    return CliRunner().invoke(cli, args, env=env, catch_exceptions=False)


def fullkit(args: list[str], **env: str) -> subprocess.CompletedProcess[str]:
    """The real console entry point, in a process of its own."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("HUBSPOT", "REDIS"))}
    full_env.update(env)
    return subprocess.run(
        [sys.executable, "-m", "bridge", *args],
        capture_output=True, text=True, env=full_env, cwd=ROOT, timeout=60,
    )  # fmt: skip


def test_kit_validate_accepts_the_shipped_rules() -> None:
    result = run(["kit", "validate"], env={"FULLKIT_RULES_DIR": str(ROOT / "kit_rules")})
    assert result.exit_code == 0
    assert "valid" in result.output


def test_kit_validate_lists_every_problem_and_exits_1() -> None:
    done = fullkit(["kit", "validate"], FULLKIT_RULES_DIR=str(FIXTURES / "rules/many_problems"))
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    problems = [line for line in done.stderr.splitlines() if ".yaml:" in line]
    assert len(problems) >= 5
    assert all(line.split(":")[1].isdigit() for line in problems)  # file:line: path: problem


RULES = {"FULLKIT_RULES_DIR": str(ROOT / "kit_rules")}


@pytest.mark.parametrize(("name", "code"), [("complete.json", 0), ("incomplete.json", 1)])
def test_kit_check_says_whether_ops_must_accept(name: str, code: int) -> None:
    result = run(["kit", "check", "--deal", str(FIXTURES / "deals" / name)], env=RULES)
    assert result.exit_code == code
    if code:
        assert "Set the requested kickoff date" in result.output
    else:
        assert "ops must accept" in result.output


def test_kit_check_names_the_deal_and_lists_passed_and_not_applicable(tmp_path: Path) -> None:
    deal = json.loads((FIXTURES / "deals" / "complete.json").read_text())
    deal["deal"].update(plan="pro", sso_provider="", kickoff_date="")  # SSO: enterprise only
    (tmp_path / "deal.json").write_text(json.dumps(deal))

    result = run(["kit", "check", "--deal", str(tmp_path / "deal.json")], env=RULES)

    assert result.exit_code == 1
    assert result.output.splitlines() == [
        'deal 1001 "Acme Corp - Enterprise" (hubspot): kit new-customer "New customer onboarding"',
        "missing (1):",
        "  - kickoff-date: Set the requested kickoff date",
        "passed (4):",
        "  - amount: deal.amount > 0",
        '  - billing-contact: contacts.exists(c, c.role == "billing" && has(c.email))',
        "  - line-items: size(line_items) > 0",
        "  - company-domain: company.domain is set",
        "not applicable (2):",
        '  - sso-provider: only when deal.plan == "enterprise"',
        '  - signed-order-form: only when deal.plan == "enterprise"',
        "kit new-customer: 1 missing — ops cannot accept",
    ]


def test_kit_check_of_a_deal_no_kit_applies_to_says_what_the_kits_need(tmp_path: Path) -> None:
    deal = json.loads((FIXTURES / "deals" / "complete.json").read_text())
    deal["deal"]["pipeline"] = "renewals"
    (tmp_path / "deal.json").write_text(json.dumps(deal))

    done = fullkit(["kit", "check", "--deal", str(tmp_path / "deal.json")], **RULES)

    assert done.returncode == 1
    assert done.stderr == (
        'fullkit: no kit applies to deal 1001 "Acme Corp - Enterprise" (hubspot): '
        'new-customer only when deal.pipeline == "default"\n'
    )


def test_kit_check_example_is_a_deal_file_that_kit_check_reads(tmp_path: Path) -> None:
    example = fullkit(["kit", "check", "--example"], **RULES)
    assert example.returncode == 0, example.stderr
    (tmp_path / "deal.json").write_text(example.stdout)

    checked = fullkit(["kit", "check", "--deal", str(tmp_path / "deal.json")], **RULES)

    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "kit new-customer: complete — ops must accept" in checked.stdout
    assert "kickoff_date (date)" in example.stderr  # the notes name each field and its type


def test_kit_check_example_follows_the_rules_own_mapping(tmp_path: Path) -> None:
    rules = tmp_path / "rules"
    shutil.copytree(ROOT / "kit_rules", rules)
    mapping = rules / "mappings" / "hubspot.yaml"
    text = mapping.read_text().replace(
        "  industry: industry\n", "  seats: {property: seats, type: number}\n"
    )
    mapping.write_text(text)
    env = {"FULLKIT_RULES_DIR": str(rules)}

    example = json.loads(fullkit(["kit", "check", "--example"], **env).stdout)
    (tmp_path / "deal.json").write_text(json.dumps(example))

    assert example["company"]["seats"] == 1 and "industry" not in example["company"]
    assert fullkit(["kit", "check", "--deal", str(tmp_path / "deal.json")], **env).returncode == 0


def test_kit_check_reads_a_live_hubspot_deal_and_writes_nothing(
    running: RunningSandbox, tmp_path: Path
) -> None:
    box = running.sandbox
    deal_id = box.create_deal(
        {"dealname": "Initech", "pipeline": "default", "dealstage": "closedwon",
         "amount": "9000", "plan_tier": "pro", "kickoff_date": "2027-01-15"},
        company={"name": "Initech", "domain": "initech.example"},
        contacts=[{"email": "bill@initech.example", "contact_role": "billing"}],
        owner_email="sales-sam@example.com",
    )  # fmt: skip
    box.reset_calls()

    result = run(["kit", "check", f"hubspot:{deal_id}"], env=live_env(running, tmp_path))

    assert result.exit_code == 1
    lines = result.output.splitlines()
    assert lines[0] == (
        f'deal {deal_id} "Initech" (hubspot, stage closedwon): kit new-customer '
        '"New customer onboarding"'
    )
    assert "  - line-items: Add the purchased products as line items" in lines
    assert '  - sso-provider: only when deal.plan == "enterprise"' in lines
    assert lines[-1] == "kit new-customer: 1 missing — ops cannot accept"
    writes = [c for c in box.calls() if c.method != "GET" and not c.path.endswith("/batch/read")]
    assert writes == []


@pytest.mark.parametrize(
    ("token", "deal", "message"),
    [
        (None, "hubspot:1", "fullkit: cannot read hubspot:1: HubSpot connector disabled: "
         "HUBSPOT_ACCESS_TOKEN is not set"),
        ("sandbox-token", "hubspot:424242", "fullkit: hubspot:424242: the CRM has no such deal"),
        ("wrong-token", "hubspot:1", "fullkit: cannot read hubspot:1: HubSpot read deal: "
         "the access token was refused (HTTP 401)"),
        ("sandbox-token", "salesforce:006000000000001",
         "fullkit: cannot read salesforce:006000000000001AAA: Salesforce connector disabled: "
         "SALESFORCE_INSTANCE_URL is not set"),
    ],
)  # fmt: skip
def test_kit_check_of_a_live_deal_it_cannot_read_is_one_line_exit_1(
    running: RunningSandbox, tmp_path: Path, token: str | None, deal: str, message: str
) -> None:
    env = live_env(running, tmp_path)
    if token is None:
        del env["HUBSPOT_ACCESS_TOKEN"]
    else:
        env["HUBSPOT_ACCESS_TOKEN"] = token

    done = fullkit(["kit", "check", deal], **env)

    assert done.returncode == 1
    assert done.stderr.count("\n") == 1 and done.stderr.startswith(message), done.stderr
    assert "wrong-token" not in done.stderr


def live_env(running: RunningSandbox, tmp_path: Path) -> dict[str, str]:
    return {**RULES, "FULLKIT_HOME": str(tmp_path / "home"), "HUBSPOT_API_BASE": running.url,
            "HUBSPOT_ACCESS_TOKEN": running.access_token}  # fmt: skip


def test_kit_check_of_a_live_deal_reads_its_attachments_when_a_kit_uses_them(
    running: RunningSandbox, tmp_path: Path
) -> None:
    rules = tmp_path / "rules"
    shutil.copytree(ROOT / "kit_rules", rules)
    kit = rules / "kits" / "10-new-customer.yaml"
    kit.write_text(kit.read_text() + ORDER_FORM)
    box = running.sandbox
    deal_id = box.create_deal(
        {"dealname": "Signed Co", "pipeline": "default", "dealstage": "closedwon",
         "amount": "9000", "plan_tier": "pro", "kickoff_date": "2027-01-15"},
        company={"name": "Signed Co", "domain": "signed.example"},
        contacts=[{"email": "bill@signed.example", "contact_role": "billing"}],
        line_items=[{"name": "Seat", "quantity": "3"}],
        owner_email="sales-sam@example.com",
    )  # fmt: skip
    box.attach_file(deal_id, "Signed order form - Signed Co", "pdf")
    env = {**live_env(running, tmp_path), "FULLKIT_RULES_DIR": str(rules)}

    result = run(["kit", "check", f"hubspot:{deal_id}"], env=env)

    assert result.exit_code == 0, result.output
    assert "  - order-form: " in result.output.split("passed")[1]


def test_kit_check_refuses_a_malformed_deal_file(tmp_path: Path) -> None:
    bad = tmp_path / "deal.json"
    bad.write_text("{not json")
    done = fullkit(["kit", "check", "--deal", str(bad)])
    assert done.returncode == 1
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    bad.write_text(json.dumps({"deal": "nope"}))
    assert fullkit(["kit", "check", "--deal", str(bad)]).returncode == 1
    assert fullkit(["kit", "check", "--deal", str(tmp_path / "absent.json")]).returncode == 2


def test_malformed_setting_is_one_line_exit_1(tmp_path: Path) -> None:
    done = fullkit(["status", "hubspot:1"], PORT="eighty", FULLKIT_HOME=str(tmp_path))
    assert done.returncode == 1
    assert done.stderr == "fullkit: invalid setting PORT: must be a whole number (got 'eighty')\n"


@pytest.mark.parametrize(
    ("name", "value", "problem"),
    [
        ("PORT", "0", "must be at least 1"),
        ("FULLKIT_RETRY_WINDOW_SECONDS", "soon", "must be a number"),
        ("DATABASE_URL", "postgresql://", "names no server or database"),
        ("DATABASE_URL", "sqlite://", "names no file"),
        ("DATABASE_URL", "mysql://u:pw@db/x", "must be a postgresql:// or sqlite:// URL"),
    ],
)
def test_settings_errors_name_the_setting_in_plain_words(
    tmp_path: Path, name: str, value: str, problem: str
) -> None:
    done = fullkit(["status", "hubspot:1"], FULLKIT_HOME=str(tmp_path), **{name: value})
    assert done.returncode == 1
    assert done.stderr.startswith(f"fullkit: invalid setting {name}: {problem}")
    assert done.stderr.count("\n") == 1
    for jargon in ("pydantic", "validation error", "Input should", "errors.pydantic.dev", "pw"):
        assert jargon not in done.stderr


UNREACHABLE_REDIS = "redis://:hunter2@127.0.0.1:1/0"
UNREACHABLE_DB = "postgresql://fk:hunter2@127.0.0.1:1/ledger"


@pytest.mark.parametrize(
    ("args", "env", "named"),
    [
        (["worker", "--burst"], {"REDIS_URL": UNREACHABLE_REDIS}, "REDIS_URL"),
        (["replay", "hubspot:1"], {"REDIS_URL": UNREACHABLE_REDIS}, "REDIS_URL"),
        (["worker", "--burst"], {"DATABASE_URL": UNREACHABLE_DB}, "DATABASE_URL"),
        (["db", "upgrade"], {"DATABASE_URL": UNREACHABLE_DB}, "DATABASE_URL"),
        (["status", "hubspot:1"], {"DATABASE_URL": UNREACHABLE_DB}, "DATABASE_URL"),
        (["replay"], {"DATABASE_URL": UNREACHABLE_DB}, "DATABASE_URL"),
    ],
)
def test_an_unreachable_server_is_named_by_its_setting_password_hidden(
    tmp_path: Path, args: list[str], env: dict[str, str], named: str
) -> None:
    done = fullkit(args, FULLKIT_HOME=str(tmp_path), **env)
    assert done.returncode == 1
    assert done.stderr.count("\n") == 1, done.stderr
    masked = env[named].replace("hunter2", "***")
    assert done.stderr.startswith("fullkit: cannot reach the ")
    assert f"{named} {masked}: Connection refused" in done.stderr
    assert "hunter2" not in done.stderr + done.stdout


@pytest.mark.parametrize(
    "args",
    [
        ["status", "not-a-deal"],
        ["kit", "check"],
        ["kit", "check", "--example", "hubspot:1"],
        ["kit", "check", "1234"],
        ["no-such-command"],
        ["serve", "--port", "0"],
    ],
)
def test_usage_errors_are_one_line_exit_2(args: list[str]) -> None:
    done = fullkit(args)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("fullkit: ")


def test_status_of_unknown_deal_is_exit_1(tmp_path: Path) -> None:
    done = fullkit(["status", "hubspot:424242"], FULLKIT_HOME=str(tmp_path))
    assert done.returncode == 1
    assert done.stderr.strip() == "fullkit: no hand-off recorded for hubspot:424242"


def test_db_upgrade_then_status(backend: Any, tmp_path: Path) -> None:
    env = {k: str(v) for k, v in backend.env(tmp_path / "home").items()}
    done = fullkit(["db", "upgrade"], **env)
    assert done.returncode == 0, done.stderr
    if backend.database_url:
        where = "DATABASE_URL " + sa.make_url(backend.database_url).render_as_string()
    else:
        where = f"the SQLite ledger {tmp_path / 'home' / 'ledger.sqlite3'}"
    head = db.head_revision()
    upgraded = done.stdout.startswith(f"upgraded {where} to revision {head} (was ")
    # The shared PostgreSQL test database was brought up to date by an earlier test.
    assert upgraded or (
        backend.database_url and done.stdout == f"{where} is already at revision {head}\n"
    )
    again = fullkit(["db", "upgrade"], **env)
    assert again.stdout == f"{where} is already at revision {head}\n"
    status = fullkit(["status", "hubspot:77"], **env)  # the upgraded ledger answers
    assert status.returncode == 1
    assert status.stderr.strip() == "fullkit: no hand-off recorded for hubspot:77"


def test_configured_database_with_old_schema_refuses_to_start(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'empty.sqlite3'}"
    done = fullkit(["worker", "--burst"], DATABASE_URL=url, FULLKIT_HOME=str(tmp_path))
    assert done.returncode == 1
    assert "run `fullkit db upgrade`" in done.stderr
    assert "Traceback" not in done.stderr


def test_hubspot_setup_without_token_says_so(tmp_path: Path) -> None:
    done = fullkit(["hubspot", "setup"], FULLKIT_HOME=str(tmp_path))
    assert done.returncode == 1
    assert "HUBSPOT_ACCESS_TOKEN" in done.stderr and "Traceback" not in done.stderr


def test_help_lists_the_commands() -> None:
    result = run(["--help"])
    for command in ("serve", "worker", "demo", "kit", "status", "db", "hubspot"):
        assert command in result.output


def test_bare_fullkit_prints_the_usage_without_an_error_prefix() -> None:
    done = fullkit([])
    assert done.returncode == 2
    assert done.stdout.startswith("Usage: fullkit [OPTIONS] COMMAND [ARGS]...")
    assert "Error" not in done.stdout + done.stderr and "fullkit:" not in done.stderr


def _failed_before_a_kit(settings: Settings, deal_id: str) -> None:
    """A hand-off that failed while fetching the deal, before any kit was chosen."""
    engine = db.make_engine(settings)
    db.prepare(engine, settings)
    sessions = db.session_factory(engine)
    moment = dt.datetime(2026, 11, 27, 9, 0, tzinfo=dt.UTC)
    change = intake.observed_change("hubspot", deal_id, "closedwon", moment, "test")
    started = ledger.record_stage_change(sessions, change)
    with sessions() as session:
        attempt = session.get(Attempt, started.attempt_id)
        ledger.move(attempt, "failed")
        attempt.error = "HubSpot answered 401: the access token was refused"
        session.commit()
    engine.dispose()


def test_status_of_an_attempt_without_a_kit_shows_a_dash(settings: Settings) -> None:
    _failed_before_a_kit(settings, "31")
    env = {"FULLKIT_HOME": str(settings.home), "REDIS_URL": str(secret(settings.redis_url))}
    if settings.database_url:
        env["DATABASE_URL"] = settings.database_url.get_secret_value()
    done = fullkit(["status", "hubspot:31"], **env)
    assert done.returncode == 0, done.stderr
    assert "  attempt 1 (-): failed\n" in done.stdout
    assert "None" not in done.stdout


def test_replay_of_a_deal_without_a_failed_hand_off_says_so(settings: Settings) -> None:
    _failed_before_a_kit(settings, "32")
    env = {"FULLKIT_HOME": str(settings.home), "REDIS_URL": str(secret(settings.redis_url)),
           "FULLKIT_RULES_DIR": str(ROOT / "kit_rules")}  # fmt: skip
    if settings.database_url:
        env["DATABASE_URL"] = settings.database_url.get_secret_value()
    nothing = fullkit(["replay", "hubspot:33"], **env)
    assert nothing.returncode == 1
    assert nothing.stderr == "fullkit: no failed hand-off for hubspot:33\n"
    done = fullkit(["replay", "hubspot:32"], **env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("queued hubspot:32:1\n")


def test_valkey_status_and_stop(tmp_path: Path) -> None:
    server = EmbeddedValkey(tmp_path)
    url = server.url()
    try:
        status = fullkit(["valkey", "status"], FULLKIT_HOME=str(tmp_path))
        assert status.returncode == 0
        assert f"running, pid {json.loads(server.state_path.read_text())['pid']}" in status.stdout
        client = redis.Redis.from_url(url)
        client.ping()  # a worker or serve still connected to it
        refused = fullkit(["valkey", "stop"], FULLKIT_HOME=str(tmp_path))
        assert refused.returncode == 1
        assert "still serves 1 client connection(s)" in refused.stderr
        client.close()
        stopped = fullkit(["valkey", "stop"], FULLKIT_HOME=str(tmp_path))
        assert stopped.returncode == 0, stopped.stderr
        assert "stopped" in stopped.stdout
        with pytest.raises(redis.ConnectionError):
            redis.Redis.from_url(url, socket_connect_timeout=1).ping()
        after = fullkit(["valkey", "status"], FULLKIT_HOME=str(tmp_path))
        assert after.stdout.endswith(": not running\n")
    finally:
        server.stop()


def test_valkey_commands_leave_a_configured_redis_alone(tmp_path: Path) -> None:
    done = fullkit(["valkey", "stop"], FULLKIT_HOME=str(tmp_path), REDIS_URL=UNREACHABLE_REDIS)
    assert done.returncode == 1
    assert done.stderr.startswith("fullkit: REDIS_URL is set (redis://:***@127.0.0.1:1/0)")


def test_serve_on_a_port_in_use_is_one_line(tmp_path: Path) -> None:
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        done = fullkit(["serve", "--port", str(port)], FULLKIT_HOME=str(tmp_path),
                       REDIS_URL=UNREACHABLE_REDIS)  # fmt: skip
    assert done.returncode == 1
    assert done.stderr.endswith(
        f"fullkit: port {port} on 127.0.0.1 is in use: stop what listens there "
        "or choose another with --port or PORT\n"
    )
    assert "Traceback" not in done.stderr and "Retrying" not in done.stderr


def test_replay_on_the_embedded_default_leaves_no_server_running(tmp_path: Path) -> None:
    done = fullkit(["replay"], FULLKIT_HOME=str(tmp_path))
    assert done.returncode == 0, done.stderr
    assert done.stdout == "replayed 0 failed hand-off(s) and 0 failed intake job(s)\n"
    assert EmbeddedValkey(tmp_path).running() is None
