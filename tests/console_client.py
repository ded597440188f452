"""A console test client over a seeded ledger, already signed in (the sign-in itself is
tests/test_console.py's)."""

from __future__ import annotations

import time

from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy.orm import sessionmaker

from bridge.rules import load_rules
from bridge.settings import Settings


class LedgerOnly:
    """What the console reads of a process's state: the ledger, the settings, the rules."""

    def __init__(self, sessions: sessionmaker, settings: Settings) -> None:
        self.sessions, self.settings = sessions, settings
        self.rules = load_rules(settings.rules_dir, None)


def signed_in_console(sessions: sessionmaker, settings: Settings) -> FlaskClient:
    from bridge import console

    app = Flask("fullkit")
    app.config["FULLKIT"] = LedgerOnly(sessions, settings)
    console.init_app(app)
    client = app.test_client()
    with client.session_transaction() as session:
        session["signed_in"] = True
        session["signed_in_at"] = int(time.time())
    return client
