"""The layers hold: the web process runs no worker-side code."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent

WORKER_SIDE = ("bridge.evaluator", "bridge.jobs", "bridge.handoff", "connectors")


def test_the_web_process_imports_no_evaluator_job_or_connector(settings: Any) -> None:
    script = f"""
import sys
from bridge.app import create_app
from bridge.settings import load_settings
create_app(load_settings(FULLKIT_HOME={str(settings.home)!r}, REDIS_URL={settings.redis_url!r},
    DATABASE_URL={settings.database_url!r}, FULLKIT_RULES_DIR={str(settings.rules_dir)!r}))
print(sorted(m for m in sys.modules if m.startswith({WORKER_SIDE!r})))
"""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
