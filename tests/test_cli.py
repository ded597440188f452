"""`fullkit` as an operator meets it: exit 0/1/2 and one clear line, never a traceback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from bridge.cli import cli
from tests.conftest import FIXTURES, ROOT


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


@pytest.mark.parametrize(("name", "code"), [("complete.json", 0), ("incomplete.json", 1)])
def test_kit_check_says_whether_ops_must_accept(name: str, code: int) -> None:
    env = {"FULLKIT_RULES_DIR": str(ROOT / "kit_rules")}
    result = CliRunner().invoke(cli, ["kit", "check", "--deal", str(FIXTURES / "deals" / name)],
                                env=env)  # fmt: skip
    assert result.exit_code == code
    if code:
        assert "Set the requested kickoff date" in result.output
    else:
        assert "ops must accept" in result.output


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
    assert done.stderr.strip() == (
        "fullkit: invalid setting PORT: Input should be a valid integer, "
        "unable to parse string as an integer"
    )


@pytest.mark.parametrize(
    "args",
    [["status", "not-a-deal"], ["kit", "check"], ["no-such-command"], ["serve", "--port", "0"]],
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
    assert "revision 0001" in done.stdout
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
