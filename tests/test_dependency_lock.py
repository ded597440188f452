"""The locked dependency set (issue 15, item 10): what `make` installs is pinned with hashes,
covers every extra the tests and linters use, is noticed when stale, and is audited."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import responses

from tests.conftest import ROOT
from tools import audit, lockfile

LOCK = ROOT / "requirements-lock.txt"


def _name(requirement: str) -> str:
    return re.split(r"[\[<>=!~;\s]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def test_the_committed_lock_matches_pyproject() -> None:
    assert lockfile.check() is None


def test_every_dependency_and_extra_is_pinned_with_hashes() -> None:
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = {_name(r) for r in project["dependencies"]}
    wanted |= {_name(r) for extra in project["optional-dependencies"].values() for r in extra}
    wanted -= {"fullkit"}  # the dev extra names the test extra through the project itself
    pinned = {name.lower() for name, _version in audit.pins(LOCK)}
    assert wanted | set(lockfile.BUILD_TOOLS) <= pinned
    text = LOCK.read_text()
    blocks = re.split(r"\n(?=[a-z0-9])", text.split("\n", 4)[4])
    assert all("--hash=sha256:" in block for block in blocks if "==" in block)


def test_a_dependency_added_without_relocking_is_reported(tmp_path: Path) -> None:
    pyproject = tmp_path / "pyproject.toml"
    original = (ROOT / "pyproject.toml").read_text()
    pyproject.write_text(original.replace('"pyyaml>=6",', '"pyyaml>=6",\n    "tomli-w",'))
    problem = lockfile.check(LOCK, pyproject)
    assert problem is not None and "make lock" in problem
    # Settings outside the dependency lists do not make it stale.
    pyproject.write_text(original.replace("line-length = 100", "line-length = 99"))
    assert lockfile.check(LOCK, pyproject) is None


def _lock(tmp_path: Path, *pins: str) -> Path:
    lock = tmp_path / "requirements-lock.txt"
    lock.write_text("".join(f"{pin} \\\n    --hash=sha256:{'0' * 64}\n" for pin in pins))
    return lock


ADVISORY = {"id": "PYSEC-2024-1", "aliases": ["CVE-2024-1"], "fixed_in": ["2.0.1"],
            "link": "https://osv.dev/vulnerability/PYSEC-2024-1", "withdrawn": None}  # fmt: skip


@responses.activate
def test_a_vulnerable_pin_fails_the_audit_naming_the_fix(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    responses.get(f"{audit.PYPI}/shaky/2.0.0/json", json={"vulnerabilities": [ADVISORY]})
    responses.get(f"{audit.PYPI}/solid/1.0.0/json", json={"vulnerabilities": []})
    assert audit.main([str(_lock(tmp_path, "shaky==2.0.0", "solid==1.0.0"))]) == 1
    assert "shaky==2.0.0: PYSEC-2024-1 (CVE-2024-1), fixed in 2.0.1" in capsys.readouterr().out


@responses.activate
def test_where_only_the_project_endpoint_answers_the_latest_release_is_audited(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in ("latest", "behind"):
        responses.get(f"{audit.PYPI}/{name}/1.0.0/json", status=404)
    responses.get(f"{audit.PYPI}/latest/json",
                  json={"info": {"version": "1.0.0"}, "vulnerabilities": [ADVISORY]})  # fmt: skip
    responses.get(f"{audit.PYPI}/behind/json", json={"info": {"version": "1.1.0"}})
    lock = _lock(tmp_path, "latest==1.0.0", "behind==1.0.0")
    assert audit.main([str(lock)]) == 1
    out = capsys.readouterr().out
    assert "latest==1.0.0: PYSEC-2024-1" in out
    assert "behind==1.0.0: not audited (the latest is 1.1.0" in out
    assert "audited 1 of 2" in out


@responses.activate
def test_an_unaudited_pin_fails_only_a_strict_audit(tmp_path: Path) -> None:
    responses.get(f"{audit.PYPI}/behind/1.0.0/json", status=404)
    responses.get(f"{audit.PYPI}/behind/json", json={"info": {"version": "1.1.0"}})
    lock = _lock(tmp_path, "behind==1.0.0")
    assert audit.main([str(lock)]) == 0
    assert audit.main([str(lock), "--strict"]) == 1


@responses.activate
def test_an_unreachable_pypi_is_one_line_and_no_pass(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import requests

    responses.get(f"{audit.PYPI}/solid/1.0.0/json", body=requests.ConnectionError("refused"))
    assert audit.main([str(_lock(tmp_path, "solid==1.0.0"))]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "NOT audited" in err[0]
