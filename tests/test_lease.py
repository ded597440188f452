"""A batch's leases: taken and given back together, never over another worker's."""

from __future__ import annotations

from typing import Any

import redis

from bridge.lease import Leases
from tests.test_queue import CountingConnection


def test_a_batch_is_leased_and_released_in_a_few_round_trips(backend: Any) -> None:
    connection = redis.Redis.from_url(backend.redis_url, connection_class=CountingConnection)
    connection.flushdb()
    with Leases(redis.Redis.from_url(backend.redis_url)) as other_worker:
        assert other_worker.take(7)
        CountingConnection.sends = 0
        with Leases(connection) as leases:
            assert leases.take_many(list(range(100))) == [n for n in range(100) if n != 7]
            assert CountingConnection.sends == 1
        # The release: one pipeline, after checking (and once loading) its script.
        assert CountingConnection.sends <= 4
        assert connection.exists("fullkit:lock:attempt:7")  # still the other worker's
    with Leases(connection) as after:
        assert after.take_many(list(range(100))) == list(range(100))
