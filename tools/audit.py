"""`make audit`: every release pinned in requirements-lock.txt against PyPI's vulnerability
data (the advisories PyPI shows on each release page, from the OSV database).

    python tools/audit.py [requirements-lock.txt] [--strict]

For each pin it asks PyPI's JSON API for that release (`/pypi/<name>/<version>/json`, what
pip-audit's `--vulnerability-service pypi` asks). Some networks (this project's CI among
them) let only the project endpoint (`/pypi/<name>/json`) through; that one describes the
latest release, so it answers for a pin that is the latest, and a pin behind it stays
unaudited: listed, and a failure with --strict. `make lock` moves every pin to its latest
release. pip-audit itself reports each such package as "not found" and exits 0, which is
why this script exists.

Exit status: 0 nothing known, 1 a vulnerable release (each named with the advisory and the
releases that fix it) or, with --strict, a pin that could not be audited; 2 PyPI could not
be reached (one line: the audit did not happen).
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

PYPI = "https://pypi.org/pypi"
TIMEOUT = 20
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)")


@dataclass
class Finding:
    name: str
    version: str
    advisories: list[dict[str, Any]] = field(default_factory=list)
    audited: bool = True
    latest: str | None = None


class Unreachable(Exception):
    """PyPI did not answer: no audit happened."""


def pins(lock: Path) -> list[tuple[str, str]]:
    """Every name==version in the lock (all platforms' lines: a universal lock)."""
    found = {match.groups() for line in lock.read_text().splitlines() if (match := PIN.match(line))}
    return sorted(found)


def _get(session: requests.Session, url: str) -> dict[str, Any] | None:
    try:
        answer = session.get(url, timeout=TIMEOUT)
    except requests.RequestException as exc:
        raise Unreachable(f"cannot reach PyPI's vulnerability data ({url}): {exc}") from None
    if answer.status_code == 404:
        return None
    if answer.status_code != 200:
        raise Unreachable(f"PyPI answered {answer.status_code} for {url}")
    data: dict[str, Any] = answer.json()
    return data


def audit_one(session: requests.Session, name: str, version: str) -> Finding:
    release = _get(session, f"{PYPI}/{name}/{version}/json")
    if release is None:
        project = _get(session, f"{PYPI}/{name}/json")
        latest = project["info"]["version"] if project else None
        if project is None or latest != version:
            return Finding(name, version, audited=False, latest=latest)
        release = project
    current = [v for v in release.get("vulnerabilities", []) if not v.get("withdrawn")]
    return Finding(name, version, current)


def audit(lock: Path) -> list[Finding]:
    with requests.Session() as session, ThreadPoolExecutor(8) as pool:
        return list(pool.map(lambda pin: audit_one(session, *pin), pins(lock)))


def report(findings: Iterable[Finding], strict: bool) -> int:
    findings = list(findings)
    vulnerable = [f for f in findings if f.advisories]
    unaudited = [f for f in findings if not f.audited]
    for finding in vulnerable:
        for advisory in finding.advisories:
            aliases = ", ".join(advisory.get("aliases") or [])
            fixed = ", ".join(advisory.get("fixed_in") or []) or "no fixed release yet"
            print(
                f"{finding.name}=={finding.version}: {advisory.get('id')}"
                + (f" ({aliases})" if aliases else "")
                + f", fixed in {fixed}: {advisory.get('link', '')}"
            )
    for finding in unaudited:
        behind = f"the latest is {finding.latest}" if finding.latest else "unknown to PyPI"
        print(
            f"{finding.name}=={finding.version}: not audited ({behind}, and PyPI's data for "
            "this release is not reachable from here); `make lock` moves it to the latest"
        )
    print(
        f"audited {len(findings) - len(unaudited)} of {len(findings)} locked releases against "
        f"PyPI's vulnerability data: {len(vulnerable)} vulnerable"
    )
    return 1 if vulnerable or (strict and unaudited) else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tools/audit.py")
    parser.add_argument("lock", nargs="?", type=Path, default=Path("requirements-lock.txt"))
    parser.add_argument("--strict", action="store_true", help="fail on any unaudited pin")
    args = parser.parse_args(argv)
    try:
        findings = audit(args.lock)
    except Unreachable as exc:
        print(f"audit: {exc}; the locked set was NOT audited", file=sys.stderr)
        return 2
    return report(findings, args.strict)


if __name__ == "__main__":
    sys.exit(main())
