"""The HubSpot developer-platform project in hubspot-app/: HubSpot's file formats, one scope
list that the README shows, and the webhook target URL an operator fills in."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from bridge.cli import cli
from bridge.receivers.hubspot import DEAL_TYPE_ID
from connectors.hubspot_app import (
    APP_FILE,
    PROJECT_DIR,
    WEBHOOKS_FILE,
    AppConfigError,
    load_app,
    required_scopes,
)
from tests.conftest import ROOT

UID = re.compile(r"[A-Za-z0-9_.-]{1,64}")  # HubSpot's app configuration reference


def _read(relative: Path | str) -> dict[str, Any]:
    document: dict[str, Any] = json.loads((PROJECT_DIR / relative).read_text())
    return document


@pytest.fixture
def project(tmp_path: Path) -> Path:
    copy = tmp_path / "hubspot-app"
    shutil.copytree(PROJECT_DIR, copy)
    return copy


def test_project_config_points_at_the_app_folder() -> None:
    project = _read("hsproject.json")
    assert set(project) == {"name", "srcDir", "platformVersion"}
    assert re.fullmatch(r"\d{4}\.\d{1,2}", project["platformVersion"])
    assert (PROJECT_DIR / project["srcDir"] / "app" / "app-hsmeta.json").is_file()


def test_app_is_privately_distributed_with_a_static_token() -> None:
    app = _read(APP_FILE)
    assert app["type"] == "app" and UID.fullmatch(app["uid"])
    config = app["config"]
    assert config["distribution"] == "private"
    assert 0 < len(config["name"]) <= 200 and 0 < len(config["description"]) <= 8192
    auth = config["auth"]
    assert auth["type"] == "static"
    # Static auth can only define required scopes (HubSpot's scopes guide).
    assert auth["optionalScopes"] == [] and auth["conditionallyRequiredScopes"] == []
    scopes = auth["requiredScopes"]
    assert len(set(scopes)) == len(scopes)
    assert {"crm.objects.contacts.read", "crm.objects.contacts.write"} <= set(scopes)  # tasks


def test_webhook_subscription_sends_what_the_receiver_handles() -> None:
    hooks = _read(WEBHOOKS_FILE)
    assert hooks["type"] == "webhooks" and UID.fullmatch(hooks["uid"])
    assert hooks["uid"] != _read(APP_FILE)["uid"]
    assert hooks["config"]["subscriptions"] == {
        "crmObjects": [
            {
                "subscriptionType": "object.propertyChange",
                "objectType": "deal",
                "propertyName": "dealstage",
                "active": True,
            }
        ]
    }
    # Such events arrive as object.propertyChange with the deal's type id, which the
    # receiver's fixture of that shape carries.
    fixture = json.loads(
        (ROOT / "tests/fixtures/hubspot/deal_stage__object_property_change.json").read_text()
    )
    assert fixture[0]["objectTypeId"] == DEAL_TYPE_ID
    settings = hooks["config"]["settings"]
    assert settings["targetUrl"].endswith("/webhooks/hubspot")
    assert load_app().target_url_is_placeholder  # filled in at set-up, not in the repository


def test_readme_lists_exactly_the_app_configs_scopes() -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Connecting a real HubSpot portal", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    listed = [re.findall(r"`([^`]+)`", row.split("|")[1])[0] for row in rows]
    assert listed == list(required_scopes())


def test_app_command_fills_in_the_target_url(project: Path) -> None:
    result = CliRunner().invoke(
        cli, ["hubspot", "app", "--project", str(project), "--url", "https://fullkit.acme.io/"]
    )
    assert result.exit_code == 0, result.output
    assert "webhook target: https://fullkit.acme.io/webhooks/hubspot" in result.output
    written = json.loads((project / WEBHOOKS_FILE).read_text())
    assert written["config"]["settings"]["targetUrl"] == "https://fullkit.acme.io/webhooks/hubspot"
    assert written["config"]["subscriptions"] == _read(WEBHOOKS_FILE)["config"]["subscriptions"]
    assert load_app(project).required_scopes == required_scopes()


def test_app_command_keeps_a_path_prefix_and_a_full_receiver_url(project: Path) -> None:
    for url in ("https://acme.io/fullkit", "https://acme.io/fullkit/webhooks/hubspot"):
        CliRunner().invoke(cli, ["hubspot", "app", "--project", str(project), "--url", url])
        assert load_app(project).target_url == "https://acme.io/fullkit/webhooks/hubspot"


def test_app_command_refuses_a_plain_http_url(project: Path) -> None:
    before = (project / WEBHOOKS_FILE).read_text()
    result = CliRunner().invoke(
        cli, ["hubspot", "app", "--project", str(project), "--url", "http://acme.io"]
    )
    assert result.exit_code == 2
    assert (project / WEBHOOKS_FILE).read_text() == before


def test_app_command_says_the_target_is_still_a_placeholder(project: Path) -> None:
    result = CliRunner().invoke(cli, ["hubspot", "app", "--project", str(project)])
    assert result.exit_code == 1
    assert "still a placeholder" in result.output


def test_a_broken_project_is_named(project: Path) -> None:
    (project / APP_FILE).write_text("{")
    with pytest.raises(AppConfigError, match="app-hsmeta.json: not valid JSON"):
        load_app(project)
    result = CliRunner().invoke(cli, ["hubspot", "app", "--project", str(project)])
    assert result.exit_code == 1
    assert "app-hsmeta.json" in result.output


def test_a_project_whose_sources_live_elsewhere_is_named(project: Path) -> None:
    (project / "hsproject.json").write_text('{"name": "fullkit", "srcDir": "source"}')
    with pytest.raises(AppConfigError, match="hsproject.json: expected srcDir src"):
        load_app(project)
