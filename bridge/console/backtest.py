"""`/console/backtest`: a rules folder on the server's disk compared with the stored
decisions, as `fullkit kit backtest` compares them.

The web process imports no evaluator (an import contract), so the comparison runs in a
child process: `python -m bridge kit backtest --format json`, with a time limit, a bounded
list and one comparison at a time. It reads the ledger this app reads and writes nothing.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any
from urllib.parse import quote

from flask import Blueprint, current_app, render_template, request, url_for
from flask.typing import ResponseReturnValue

from bridge.container import Container
from bridge.metrics import MULTIPROC_DIR_ENV
from bridge.settings import Settings

TIMEOUT_SECONDS = 120.0
LISTED = 500  # changes listed on the page; every change is counted in the summary
MAX_ANSWER_BYTES = 8 * 1024 * 1024  # LISTED changes take well under this
MAX_ERROR_BYTES = 64 * 1024
MAX_PATH = 1024
DEFAULT_SINCE = "30d"
_SINCE = re.compile(r"^\d{1,6}(\.\d{1,3})?[smhd]?$")
# One comparison at a time per web process: each is a process judging every recent deal.
_running = threading.BoundedSemaphore(1)


def register(bp: Blueprint) -> None:
    bp.add_url_rule("/backtest", "backtest", page, methods=["GET", "POST"])


@dataclass(frozen=True)
class Form:
    rules: str
    since: str


@dataclass
class Outcome:
    """What the page shows: a comparison, or why there is none (with its status)."""

    status: int = 200
    errors: list[str] = field(default_factory=list)
    result: dict[str, Any] | None = None


def _settings() -> Settings:
    state: Container = current_app.config["FULLKIT"]
    return state.settings


def page() -> ResponseReturnValue:
    settings = _settings()
    if request.method == "GET":
        return _render(Form(str(settings.rules_dir.absolute()), DEFAULT_SINCE), Outcome())
    form = Form(
        rules=request.form.get("rules", "").strip(),
        since=request.form.get("since", "").strip() or DEFAULT_SINCE,
    )
    problem = _since_problem(form.since)
    folder, folder_problem = rules_folder(form.rules)
    if problem or folder is None:
        errors = [text for text in (folder_problem, problem) if text]
        return _render(form, Outcome(400, errors))
    if not _running.acquire(blocking=False):
        busy = "Another comparison is running: try again when it is done."
        return _render(form, Outcome(429, [busy]))
    try:
        outcome = compare(settings, folder, form.since)
    finally:
        _running.release()
    return _render(Form(str(folder), form.since), outcome)


def _render(form: Form, outcome: Outcome) -> ResponseReturnValue:
    timeline = url_for(".backtest").removesuffix("/backtest") + "/handoffs"
    return (
        render_template(
            "console/backtest.html",
            form=form,
            errors=outcome.errors,
            result=outcome.result,
            timeline=timeline,
        ),
        outcome.status,
    )


def _since_problem(since: str) -> str | None:
    if _SINCE.match(since):
        return None
    return "Judged within: a number with s, m, h or d, e.g. 30d or 12h."


def rules_folder(text: str) -> tuple[Path | None, str | None]:
    """The folder the form names, or why it cannot be a rules folder."""
    if not text:
        return None, "Give the path of a rules folder on the server."
    if len(text) > MAX_PATH or "\x00" in text:
        return None, "That is not a path on the server."
    folder = Path(text).absolute()
    try:
        if not folder.is_dir():
            missing = "is not a folder" if folder.exists() else "does not exist"
            return None, f"{folder} {missing} on the server."
        lacking = [name for name in ("kits", "mappings") if not (folder / name).is_dir()]
    except OSError as exc:
        return None, f"Cannot read {folder}: {exc.strerror}."
    if lacking:
        return None, f"{folder} is not a rules folder: it has no {' or '.join(lacking)}/ in it."
    return folder, None


def compare(settings: Settings, folder: Path, since: str) -> Outcome:
    """Run `fullkit kit backtest` in a child process and read its JSON answer."""
    command = [
        sys.executable, "-m", "bridge", "kit", "backtest", "--format", "json",
        "--rules", str(folder), "--since", since, "--limit", str(LISTED),
    ]  # fmt: skip
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        try:
            done = subprocess.run(
                command,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                env=child_env(settings),
                timeout=TIMEOUT_SECONDS,
                check=False,
            )
        except subprocess.TimeoutExpired:
            return Outcome(504, [_too_long()])
        except OSError as exc:
            return Outcome(503, [f"Could not start the comparison: {exc.strerror}."])
        answer, complaint = _head(out, MAX_ANSWER_BYTES), _head(err, MAX_ERROR_BYTES)
    return _read(done.returncode, answer, complaint)


def _too_long() -> str:
    return (
        f"The comparison took longer than {TIMEOUT_SECONDS:g} s and was stopped: "
        "run `fullkit kit backtest` on the server, or compare a shorter period."
    )


def child_env(settings: Settings) -> dict[str, str]:
    """The environment of the comparison: this app's ledger, whatever the shell said.
    Secrets go through the environment, never the command line (visible to `ps`)."""
    env = dict(os.environ)
    # The web processes' metric files: a child writing its own there would be scraped.
    env.pop(MULTIPROC_DIR_ENV, None)
    env["FULLKIT_HOME"] = str(settings.home.absolute())
    env.pop("DATABASE_URL", None)
    if settings.database_url is not None:
        env["DATABASE_URL"] = settings.database_url.get_secret_value()
    return env


def _head(stream: IO[bytes], limit: int) -> bytes | None:
    """What the child wrote, or None when it wrote more than `limit` bytes."""
    stream.seek(0)
    data = stream.read(limit + 1)
    return None if len(data) > limit else data


def _read(code: int, answer: bytes | None, complaint: bytes | None) -> Outcome:
    lines = _lines(complaint)
    if code == 0:
        return _answer(answer)
    if code == 1 and lines and lines[0].startswith("invalid rules folder"):
        return Outcome(422, lines)  # the folder's problems, each file:line: path: problem
    if code == 2:
        return Outcome(400, lines or ["The comparison refused its arguments."])
    if code in (1, 2) and lines:
        return Outcome(503, lines)
    return Outcome(500, [f"The comparison stopped unexpectedly (exit status {code})."])


def _lines(complaint: bytes | None) -> list[str]:
    if complaint is None:
        return ["The comparison said more than can be shown: run `fullkit kit backtest`."]
    text = complaint.decode("utf-8", errors="replace")
    return [line.removeprefix("fullkit: ") for line in text.splitlines() if line.strip()][:200]


def _answer(answer: bytes | None) -> Outcome:
    if answer is None:
        return Outcome(502, ["The comparison is too large to show: run `fullkit kit backtest`."])
    unreadable = Outcome(502, ["The comparison gave an answer this page cannot read."])
    try:
        result = json.loads(answer)
        if not isinstance(result, dict) or not _ANSWER_KEYS <= result.keys():
            return unreadable
        result["changes"] = [_row(change) for change in result["changes"]]
    except (ValueError, KeyError, TypeError, AttributeError):
        return unreadable
    return Outcome(result=result)


_ANSWER_KEYS = {"summary", "rules", "since", "changes", "truncated", "rejudged", "flips"}


def _row(change: dict[str, Any]) -> dict[str, Any]:
    before, after = change["before"], change["after"]
    kit_after = (after["kit"] or "(none)") if after is not None else None
    return {
        "deal": f"{change['crm']}:{change['deal_id']}",
        "path": f"{quote(change['crm'], safe='')}/{quote(change['deal_id'], safe='')}",
        "attempt": int(change["attempt"]),
        "judged_on": str(change["judged_on"]),
        "change": str(change["change"]),
        "before": str(before["outcome"]),
        "after": str(after["outcome"]) if after is not None else "?",
        "kit_before": before["kit"] or "(none)",
        "kit_after": kit_after,
        "why": [str(line) for line in change["why"]],
    }
