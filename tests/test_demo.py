"""`fullkit demo` as a newcomer runs it: every deal once, totals that add up, nothing left
running after it stops, one demo per FULLKIT_HOME, and a broken start reported at once."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

from bridge import demo
from bridge.valkey import EmbeddedValkey, _alive
from connectors.hubspot_app import required_scopes
from tests.conftest import ROOT


def demo_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REDIS", "DATABASE"))}
    env["FULLKIT_HOME"] = str(home)
    return env


def _wait_for(check: object, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


@dataclass
class DemoRun:
    home: Path
    count: int
    stdout: str

    @property
    def rows(self) -> list[list[str]]:
        """The table's rows, one list of column values per deal."""
        lines = self.stdout.splitlines()
        return [re.split(r" {2,}", line.strip()) for line in lines if re.match(r"\d+  ", line)]


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> DemoRun:
    """One demo for the tests that read its output, with two more deals than scenarios so
    that the first two come round again."""
    home = tmp_path_factory.mktemp("demo-run")
    count = len(demo.scenarios("2027-01-15")) + 2
    done = subprocess.run(
        [sys.executable, "-m", "bridge", "demo", "--deals", str(count)],
        env=demo_env(home), cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    return DemoRun(home, count, done.stdout)


def test_each_deal_is_reported_once_and_the_totals_add_up(demo_run: DemoRun) -> None:
    count, stdout = demo_run.count, demo_run.stdout
    deal_ids = [row[0] for row in demo_run.rows]
    assert len(deal_ids) == count and len(set(deal_ids)) == count
    summary = re.search(
        rf"{count} deals: (\d+) accepted into (\d+) HubSpot tickets? \+ (\d+) Jira issues? \+ "
        r"(\d+) Asana projects? \+ (\d+) webhook documents?, (\d+) returned to sales; "
        r"(\d+) tasks",
        stdout,
    )
    assert summary, stdout
    accepted, tickets, issues, projects, documents, returned, tasks = map(int, summary.groups())
    assert accepted + returned == count
    # Each kit's deals went to its own ops tool, exactly once each.
    made = {"ticket": tickets, "Jira issue": issues, "Asana project": projects,
            "webhook document": documents}  # fmt: skip
    assert all(made.values()), made
    assert sum(made.values()) == accepted
    assert accepted == sum(1 for row in demo_run.rows if row[2].endswith("accepted"))
    for what, count_made in made.items():
        rows = [row for row in demo_run.rows[:count] if row[3].startswith(f"{what} ")]
        assert len(rows) == count_made, (what, demo_run.rows)
    # Every return leaves a task; a deal returned and then accepted left one too.
    assert tasks == returned + stdout.count("returned → accepted")
    assert EmbeddedValkey(demo_run.home / "demo").running() is None


def test_enterprise_order_forms_a_big_account_and_what_setup_checked(demo_run: DemoRun) -> None:
    outcomes = {row[1]: row[2:4] for row in demo_run.rows}
    assert outcomes["Globex — Enterprise"][0] == "accepted"  # its note carries the order form
    assert outcomes["Globex — Enterprise #2"][0] == "accepted"
    assert outcomes["Oscorp — Enterprise"] == [
        "returned",
        "1 missing: Attach the signed order form to the deal (a note or email)",
    ]
    # The billing contact is the 150th, beyond the 100 a deal read embeds.
    assert outcomes["Massive Dynamic — 150 contacts, 120 line items"][0] == "accepted"
    setup = [line for line in demo_run.stdout.splitlines() if "hubspot setup: " in line]
    assert len(setup) == 3, setup
    assert f"token scopes: all {len(required_scopes())} required scopes granted" in setup[1]
    assert "kit new-customer: ticket pipeline '0'" in setup[2]
    assert "stage '1' (New) found; ops owners are HubSpot owners" in setup[2]


def test_sigterm_stops_a_kept_demo_and_a_second_demo_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "demo.out"
    with open(out, "wb") as sink:
        first = subprocess.Popen(
            [sys.executable, "-m", "bridge", "demo", "--deals", "5", "--keep"],
            env=demo_env(tmp_path), cwd=ROOT, stdout=sink, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        _wait_for(lambda: "Still running" in out.read_text() or first.poll() is not None)
        banner = out.read_text()
        home = tmp_path / "demo"
        assert f"export FULLKIT_HOME={home}" in banner
        assert "X-HubSpot-Signature-v3" in banner and "sandbox app's" in banner
        pids = [int(p) for p in re.findall(r"pid (\d+)", banner.split("Processes", 1)[1])[:3]]
        url = re.search(r"Fullkit +(http://\S+)", banner).group(1)  # type: ignore[union-attr]

        second = subprocess.run(
            [sys.executable, "-m", "bridge", "demo", "--deals", "5"],
            env=demo_env(tmp_path), cwd=ROOT, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert second.returncode == 1
        assert second.stderr == (
            f"fullkit: demo: another demo (pid {first.pid}) is running on {home}: "
            f"stop it first (Ctrl-C in its terminal, or kill {first.pid})\n"
        )
        assert requests.get(f"{url}/healthz", timeout=5).status_code == 200  # left intact
        assert_console_lists_the_demo(banner)

        first.send_signal(signal.SIGTERM)
        assert first.wait(timeout=60) != 0
    finally:
        if first.poll() is None:
            first.kill()
    assert [pid for pid in pids if _alive(pid)] == []  # serve, worker, embedded Valkey
    assert EmbeddedValkey(home).running() is None
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{url}/healthz", timeout=5)


def assert_console_lists_the_demo(banner: str) -> None:
    """The banner's console URL and token sign in, and the list shows the demo's deals."""
    console = re.search(r"^  (http://\S+/console/)$", banner, re.M).group(1)  # type: ignore[union-attr]
    token = re.search(r"^  token: (\S+)$", banner, re.M).group(1)  # type: ignore[union-attr]
    browser = requests.Session()
    form = browser.get(console, timeout=5)
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', form.text).group(1)  # type: ignore[union-attr]
    listed = browser.post(form.url, data={"token": token, "csrf_token": csrf}, timeout=5)
    assert listed.url == console
    deal = re.search(r"status hubspot:(\d+)", banner).group(1)  # type: ignore[union-attr]
    assert f'href="/console/handoffs/hubspot/{deal}"' in listed.text


def test_a_serve_that_cannot_start_is_reported_at_once_with_its_own_words(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FULLKIT_HOME", str(tmp_path))
    monkeypatch.chdir(ROOT)
    started: list[subprocess.Popen[bytes]] = []

    class Recorded(subprocess.Popen[bytes]):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            started.append(self)

    monkeypatch.setattr(subprocess, "Popen", Recorded)
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        monkeypatch.setattr(demo, "free_port", lambda: port)
        with pytest.raises(demo.DemoError) as failure:
            demo.run_demo(deal_count=5)
    assert str(failure.value).startswith(
        f"`fullkit serve` exited with status 1:\n  fullkit: port {port} on 127.0.0.1 is in use"
    )
    assert started and all(process.poll() is not None for process in started)
    assert EmbeddedValkey(tmp_path / "demo").running() is None
