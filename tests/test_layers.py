"""The layers hold: the web process runs no worker-side code."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from bridge.settings import load_settings
from connectors.hubspot_settings import HubSpotSettings
from tests.conftest import secret

ROOT = Path(__file__).resolve().parent.parent

WORKER_SIDE = ("bridge.evaluator", "bridge.jobs", "bridge.handoff", "connectors")


def test_the_web_process_imports_no_evaluator_job_or_connector(settings: Any) -> None:
    script = f"""
import sys
from bridge.app import create_app
from bridge.settings import load_settings
create_app(load_settings(FULLKIT_HOME={str(settings.home)!r},
    REDIS_URL={secret(settings.redis_url)!r}, DATABASE_URL={secret(settings.database_url)!r},
    FULLKIT_RULES_DIR={str(settings.rules_dir)!r}))
print(sorted(m for m in sys.modules if m.startswith({WORKER_SIDE!r})))
"""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_a_connectors_own_malformed_setting_stops_the_worker_in_one_line(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REDIS", "DATABASE"))}
    env.update(FULLKIT_HOME=str(tmp_path), HUBSPOT_RATE_LIMIT="fast")
    done = subprocess.run(
        [sys.executable, "-m", "bridge", "worker", "--burst"],
        capture_output=True, text=True, cwd=ROOT, env=env, check=False, timeout=60,
    )  # fmt: skip
    assert done.returncode == 1
    assert done.stderr.strip() == (
        'fullkit: invalid setting HUBSPOT_RATE_LIMIT: must be requests per window, e.g. "100/10s",'
        ' or "off"'
    )


def test_a_connector_reads_its_section_and_the_core_never_shows_it() -> None:
    settings = load_settings(HUBSPOT_ACCESS_TOKEN="pat-na1-secret", HUBSPOT_API_BASE="http://x/")
    hubspot = settings.section(HubSpotSettings)
    assert hubspot.access_token is not None
    assert hubspot.access_token.get_secret_value() == "pat-na1-secret"
    assert hubspot.api_base == "http://x"
    assert "pat-na1-secret" not in repr(settings) + repr(hubspot) + str(settings.model_dump())
