"""The hand-off console: server-rendered pages for revops and ops behind the admin token.

Every page module in PAGES adds its routes to the one blueprint; the blueprint's
before_request does the login and CSRF checks, so a page has no auth code of its own.
"""

from __future__ import annotations

from types import ModuleType

from flask import Blueprint, Flask

from bridge.console import auth, backtest, handoffs, insights, links, timeline

console = Blueprint(
    "console",
    __name__,
    url_prefix="/console",
    template_folder="templates",
    static_folder="static",
)

PAGES: tuple[ModuleType, ...] = (auth, handoffs, timeline, insights, backtest)

for _page in PAGES:
    _page.register(console)
links.register(console)


def init_app(app: Flask) -> None:
    """Session, CSRF and the blueprint, on an app whose config holds the container."""
    auth.init_app(app)
    app.register_blueprint(console)
