"""One container per process: the web side's holds no connector, the worker side's
builds each connector once and shares one rate budget among them."""

from __future__ import annotations

from typing import Any

import pytest

from bridge.app import create_app
from bridge.runtime import Runtime


def test_the_web_process_container_runs_no_connector(settings: Any) -> None:
    web = create_app(settings).config["FULLKIT"]
    assert web.handoff_stages["hubspot"]
    with pytest.raises(RuntimeError, match="built without connectors"):
        web.crm("hubspot")


def test_the_worker_builds_each_connector_once_on_one_rate_budget(settings: Any) -> None:
    rt = Runtime.build(settings)
    crm = rt.crm("hubspot")
    assert rt.crm("hubspot") is crm
    assert crm.rate_budgets is rt.rate_budgets
    assert rt.queue.connection is rt.redis
