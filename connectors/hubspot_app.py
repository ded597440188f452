"""The HubSpot developer-platform project in `hubspot-app/`: where Fullkit's scopes live.

HubSpot grants an installed app exactly the `requiredScopes` of its `app-hsmeta.json`, so
that file is the one list: `fullkit hubspot setup` checks the token against it, the
sandbox grants its token exactly these scopes, and the README shows the same list (a test
holds the three together). The webhook subscription's target URL is the one value an
operator fills in, with `fullkit hubspot app --url`, before `hs project upload`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from kernel.errors import AuthError

# Next to the code in a checkout; in the working directory when Fullkit was installed as
# a package and runs from the repository (as on a Procfile platform).
_BESIDE_CODE = Path(__file__).resolve().parent.parent / "hubspot-app"
PROJECT_DIR = _BESIDE_CODE if _BESIDE_CODE.is_dir() else Path.cwd() / "hubspot-app"
PROJECT_FILE = Path("hsproject.json")
APP_FILE = Path("src/app/app-hsmeta.json")  # under the project's srcDir, which is src
WEBHOOKS_FILE = Path("src/app/webhooks/webhooks-hsmeta.json")
RECEIVER_PATH = "/webhooks/hubspot"
PLACEHOLDER_HOST = "fullkit.example.com"  # shipped in the webhooks file until set-up


class AppConfigError(AuthError):
    """The project files are missing or not what HubSpot (or Fullkit) expects."""


@dataclass(frozen=True)
class AppConfig:
    project_dir: Path
    name: str
    required_scopes: tuple[str, ...]
    target_url: str

    @property
    def target_url_is_placeholder(self) -> bool:
        return urlsplit(self.target_url).hostname == PLACEHOLDER_HOST


def load_app(project_dir: Path | None = None) -> AppConfig:
    """Read and check the project; AppConfigError names the file and what is wrong."""
    root = project_dir or PROJECT_DIR
    project = _read(root / PROJECT_FILE)
    if project.get("srcDir") != APP_FILE.parts[0] or not project.get("platformVersion"):
        raise AppConfigError(f"{root / PROJECT_FILE}: expected srcDir src and a platformVersion")
    app = _read(root / APP_FILE)
    config = _object(app, "config", root / APP_FILE)
    auth = _object(config, "auth", root / APP_FILE)
    if app.get("type") != "app" or config.get("distribution") != "private":
        raise AppConfigError(f"{root / APP_FILE}: expected type app with private distribution")
    if auth.get("type") != "static":
        raise AppConfigError(f"{root / APP_FILE}: expected auth type static")
    scopes = auth.get("requiredScopes")
    if not isinstance(scopes, list) or not scopes or not all(isinstance(s, str) for s in scopes):
        raise AppConfigError(f"{root / APP_FILE}: auth.requiredScopes must list scope names")
    return AppConfig(
        project_dir=root,
        name=str(config.get("name") or ""),
        required_scopes=tuple(scopes),
        target_url=_target_url(_read(root / WEBHOOKS_FILE), root / WEBHOOKS_FILE),
    )


def required_scopes(project_dir: Path | None = None) -> tuple[str, ...]:
    return load_app(project_dir).required_scopes


def target_url_for(base_url: str) -> str:
    """`https://host[/prefix]` -> the receiver's URL; a full receiver URL stays as it is."""
    parts = urlsplit(base_url.strip())
    if parts.scheme != "https" or not parts.hostname:
        raise ValueError(f"expected an https:// URL of your Fullkit host, got {base_url!r}")
    if parts.query or parts.fragment:
        raise ValueError("the URL must not carry a query or fragment")
    path = parts.path.rstrip("/")
    if not path.endswith(RECEIVER_PATH):
        path += RECEIVER_PATH
    return f"https://{parts.netloc}{path}"


def set_target_url(base_url: str, project_dir: Path | None = None) -> str:
    """Write the receiver URL into the webhooks file; returns the URL written."""
    url = target_url_for(base_url)
    path = (project_dir or PROJECT_DIR) / WEBHOOKS_FILE
    document = _read(path)
    _target_url(document, path)  # refuse to rewrite a file we do not understand
    document["config"]["settings"]["targetUrl"] = url
    path.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    return url


def _target_url(document: dict[str, Any], path: Path) -> str:
    config = _object(document, "config", path)
    settings = _object(config, "settings", path)
    subscriptions = _object(config, "subscriptions", path)
    if document.get("type") != "webhooks":
        raise AppConfigError(f"{path}: expected type webhooks")
    stage_changes = [
        item
        for item in subscriptions.get("crmObjects") or []
        if isinstance(item, dict)
        and item.get("subscriptionType") == "object.propertyChange"
        and item.get("objectType") == "deal"
        and item.get("propertyName") == "dealstage"
    ]
    if not stage_changes:
        raise AppConfigError(f"{path}: no subscription to deal dealstage changes")
    url = settings.get("targetUrl")
    if not isinstance(url, str) or not url:
        raise AppConfigError(f"{path}: settings.targetUrl is missing")
    return url


def _read(path: Path) -> dict[str, Any]:
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise AppConfigError(
            f"{path}: not found (the HubSpot project ships in hubspot-app/)"
        ) from None
    except ValueError as exc:
        raise AppConfigError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(document, dict):
        raise AppConfigError(f"{path}: expected a JSON object")
    return document


def _object(parent: dict[str, Any], key: str, path: Path) -> dict[str, Any]:
    value = parent.get(key)
    if not isinstance(value, dict):
        raise AppConfigError(f"{path}: {key} must be an object")
    return value
