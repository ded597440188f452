"""With REDIS_URL unset, every Fullkit process on one FULLKIT_HOME shares one Valkey,
and what was queued survives a restart of that server."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import redis

from bridge.valkey import EmbeddedValkey, _alive

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
