"""With REDIS_URL unset, every Fullkit process on one FULLKIT_HOME shares one Valkey,
and what was queued survives a restart of that server."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry
from rq import Queue

from bridge.queue import QUEUE_NAME
from bridge.valkey import EmbeddedValkey, _alive
from tests.conftest import ROOT

PROBE = "import sys; from pathlib import Path; from bridge.valkey import EmbeddedValkey; " \
    "print(EmbeddedValkey(Path(sys.argv[1])).url())"  # fmt: skip


def url_from_another_process(home: Path) -> str:
    done = subprocess.run(
        [sys.executable, "-c", PROBE, str(home)], capture_output=True, text=True, check=True
    )
    return done.stdout.strip()


def test_processes_started_together_share_one_server(tmp_path: Path) -> None:
    home = tmp_path / "home"
    try:
        with ThreadPoolExecutor(max_workers=3) as pool:
            urls = set(pool.map(url_from_another_process, [home] * 3))
        assert len(urls) == 1
        assert EmbeddedValkey(home).url() in urls
    finally:
        EmbeddedValkey(home).stop()


def test_queued_data_survives_a_server_restart(tmp_path: Path) -> None:
    valkey = EmbeddedValkey(tmp_path / "home")
    try:
        client = redis.Redis.from_url(valkey.url())
        client.rpush("rq:queue:fullkit", "job-1")
        valkey.stop()
        again = redis.Redis.from_url(valkey.url())
        assert again.lrange("rq:queue:fullkit", 0, -1) == [b"job-1"]
        assert again.config_get("appendfsync") == {"appendfsync": "everysec"}
    finally:
        valkey.stop()


def test_a_killed_server_comes_back_on_its_port_with_what_was_synced(tmp_path: Path) -> None:
    valkey = EmbeddedValkey(tmp_path / "home")
    try:
        url = valkey.url()
        client = redis.Redis.from_url(url)
        client.rpush("rq:queue:fullkit", "job-1")
        # What "durably queued" means: on disk (fsynced every second; WAITAOF waits for it).
        assert client.execute_command("WAITAOF", 1, 0, 5000)[0] == 1
        pid = json.loads(valkey.state_path.read_text())["pid"]
        os.kill(pid, signal.SIGKILL)  # power loss, OOM killer
        deadline = time.monotonic() + 10
        while _alive(pid):
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert valkey.url() == url  # same port: clients already connected find it again
        assert client.lrange("rq:queue:fullkit", 0, -1) == [b"job-1"]
    finally:
        valkey.stop()


def test_a_local_process_without_the_password_cannot_queue_a_job(tmp_path: Path) -> None:
    valkey = EmbeddedValkey(tmp_path / "home")
    try:
        url = valkey.url()
        port = json.loads(valkey.state_path.read_text())["port"]  # what any local user sees
        stranger = redis.Redis(host="127.0.0.1", port=port, retry=Retry(NoBackoff(), 0))
        with pytest.raises(redis.AuthenticationError):
            stranger.ping()
        with pytest.raises(redis.RedisError):
            Queue(QUEUE_NAME, connection=stranger).enqueue("os.system", "touch /tmp/owned")
        with redis.Redis.from_url(url) as fullkit:  # Fullkit's own processes get in
            assert Queue(QUEUE_NAME, connection=fullkit).count == 0
    finally:
        valkey.stop()


def test_fullkit_home_and_everything_in_it_are_private(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir(mode=0o755)  # made by hand, or by an older version
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REDIS", "DATABASE"))}
    env["FULLKIT_HOME"] = str(home)
    try:
        # As an operator's shell starts them: a umask that lets everyone read new files.
        for command in (["-m", "bridge", "db", "upgrade"], ["-c", PROBE, str(home)]):
            subprocess.run([sys.executable, *command], env=env, cwd=ROOT, check=True,
                           capture_output=True, umask=0o022)  # fmt: skip
        made = {path.relative_to(home).as_posix(): path.stat().st_mode for path in home.rglob("*")}
    finally:
        EmbeddedValkey(home).stop()
    assert {"ledger.sqlite3", "valkey.json", "valkey.password", "valkey/valkey.conf",
            "valkey/valkey.log"} <= set(made)  # fmt: skip
    assert any(name.startswith("valkey/appendonlydir/") for name in made)
    assert stat.S_IMODE(home.stat().st_mode) == 0o700
    assert {name: oct(stat.S_IMODE(mode)) for name, mode in made.items() if stat.S_ISDIR(mode)
            and stat.S_IMODE(mode) != 0o700} == {}  # fmt: skip
    assert {name: oct(stat.S_IMODE(mode)) for name, mode in made.items() if stat.S_ISREG(mode)
            and stat.S_IMODE(mode) & 0o077} == {}  # fmt: skip
