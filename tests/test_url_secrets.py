"""DATABASE_URL and REDIS_URL carry passwords: like every secret, they never appear in a
log line, a CLI line, an HTTP answer or the settings' own repr, whatever the driver says.

Generated passwords often hold `/` or `#`: SQLAlchemy takes them as written, redis-py
needs them percent-encoded, and either way the password stays hidden.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from bridge.settings import load_settings
from bridge.valkey import free_port
from tests.conftest import FIXTURES, ROOT
from tests.hubspot_signing import v3_headers
from tests.test_app import _wait_for
from tests.test_cli import fullkit

SECRET = "S3cret"  # the start of the password, as written and percent-encoded
DB_RAW = f"postgresql://fullkit:{SECRET}/pw#1@127.0.0.1:1/ledger"
DB_ENCODED = f"postgresql://fullkit:{SECRET}%2Fpw%231@127.0.0.1:1/ledger"
REDIS_ENCODED = f"redis://:{SECRET}%2Fpw%231@127.0.0.1:1/0"
REDIS_RAW = f"redis://:{SECRET}/pw#1@127.0.0.1:1/0"  # redis-py cannot read it


@pytest.mark.parametrize(
    ("args", "env", "said"),
    [
        (["status", "hubspot:1"], {"DATABASE_URL": DB_RAW},
         "cannot reach the ledger at DATABASE_URL postgresql://fullkit:***@127.0.0.1:1/ledger"),
        (["db", "upgrade"], {"DATABASE_URL": DB_ENCODED}, "postgresql://fullkit:***@127.0.0.1:1"),
        (["worker", "--burst"], {"DATABASE_URL": DB_RAW}, "DATABASE_URL postgresql://fullkit:***@"),
        (["replay"], {"REDIS_URL": REDIS_ENCODED}, "REDIS_URL redis://:***@127.0.0.1:1/0"),
        (["replay"], {"REDIS_URL": REDIS_RAW}, "invalid setting REDIS_URL: is not a URL"),
        (["serve"], {"REDIS_URL": REDIS_RAW}, "invalid setting REDIS_URL"),
        (["worker", "--burst"], {"DATABASE_URL": "postgresql://u:S3cret@h:x/db"},
         "invalid setting DATABASE_URL: is not a URL"),
    ],
)  # fmt: skip
def test_the_cli_names_the_server_but_never_its_password(
    tmp_path: Path, args: list[str], env: dict[str, str], said: str
) -> None:
    done = fullkit(args, FULLKIT_HOME=str(tmp_path), **env)
    assert done.returncode == 1
    assert said in done.stderr
    assert done.stderr.count("\n") == 1, done.stderr  # one line, no traceback
    assert SECRET not in done.stdout + done.stderr


def test_serve_logs_and_answers_hold_no_password_while_both_servers_are_down(
    tmp_path: Path,
) -> None:
    port = free_port()
    env = {**os.environ, "FULLKIT_HOME": str(tmp_path), "HUBSPOT_CLIENT_SECRET": "s",
           "DATABASE_URL": DB_RAW, "REDIS_URL": REDIS_ENCODED}  # fmt: skip
    log = tmp_path / "serve.log"
    with open(log, "wb") as out:
        child = subprocess.Popen(
            [sys.executable, "-m", "bridge", "serve", "--port", str(port)],
            env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_for(lambda: f"listening on {base}" in log.read_text())
        health = requests.get(f"{base}/healthz", timeout=5)
        body = (FIXTURES / "hubspot" / "deal_stage__closedwon.json").read_text()
        signed = v3_headers("s", f"{base}/webhooks/hubspot", body)
        hook = requests.post(f"{base}/webhooks/hubspot", data=body, headers=signed, timeout=5)
        metrics = requests.get(f"{base}/metrics", timeout=5)
        api = requests.get(f"{base}/api/handoffs/hubspot/1", timeout=5)
        assert (health.status_code, hook.status_code) == (503, 503)
        for answer in (health, hook, metrics, api):
            assert SECRET not in answer.text and SECRET not in str(answer.headers)
        said = log.read_text()
        assert "DATABASE_URL postgresql://fullkit:***@127.0.0.1:1/ledger" in said
        assert "REDIS_URL redis://:***@127.0.0.1:1/0" in said
        assert SECRET not in said
    finally:
        child.terminate()
        child.wait(timeout=15)


def test_library_log_lines_and_tracebacks_have_url_passwords_hidden() -> None:
    """A driver or library that logs the URL it was given (or raises with it) leaks nothing."""
    script = f"""
import logging, structlog
from bridge.logging import configure_logging
configure_logging()
structlog.get_logger("fullkit.x").warning("connecting", url={DB_RAW!r})
logging.getLogger("rq.worker").warning("connecting to %s", {REDIS_ENCODED!r})
try:
    raise ConnectionError("cannot connect to " + {DB_RAW!r})
except ConnectionError:
    logging.getLogger("sqlalchemy.pool").exception("pool failed")
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          cwd=ROOT, timeout=60, check=True)  # fmt: skip
    assert done.stderr.count("***@127.0.0.1:1") == 3, done.stderr
    assert SECRET not in done.stderr


def test_the_settings_show_no_password() -> None:
    settings = load_settings(DATABASE_URL=DB_RAW, REDIS_URL=REDIS_ENCODED)
    for shown in (repr(settings), str(settings), settings.model_dump_json()):
        assert SECRET not in shown
    assert settings.sqlalchemy_url == DB_RAW.replace("postgresql:", "postgresql+psycopg:")


# redis-py documents `unix:///path.sock?db=0&password=...` for sockets (and takes any URL's
# `?password=`); libpq and SQLAlchemy take `?password=` too.
REDIS_QUERY = f"unix:///tmp/fullkit-none/redis.sock?db=0&password={SECRET}%2Fpw"
DB_QUERY = f"postgresql://fullkit@127.0.0.1:1/ledger?password={SECRET}&sslmode=prefer"


@pytest.mark.parametrize(
    ("args", "env", "said"),
    [
        (["replay"], {"REDIS_URL": REDIS_QUERY}, "password=***"),
        (["status", "hubspot:1"], {"DATABASE_URL": DB_QUERY}, "password=***"),
    ],
)
def test_a_password_in_the_url_query_is_hidden_too(
    tmp_path: Path, args: list[str], env: dict[str, str], said: str
) -> None:
    done = fullkit(args, FULLKIT_HOME=str(tmp_path), **env)
    assert done.returncode == 1
    assert said in done.stderr
    assert SECRET not in done.stdout + done.stderr


def test_log_lines_hide_a_password_in_a_url_query() -> None:
    from kernel.settings import hide_url_passwords

    line = f"connecting to {REDIS_QUERY} and {DB_QUERY}"
    assert SECRET not in hide_url_passwords(line)
    assert "sslmode=prefer" in hide_url_passwords(line)
