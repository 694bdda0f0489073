"""pyproject.toml's pins: dagster-webserver (the ``ui`` extra, for ``dagster dev``) follows dagster.

A bare ``pip install dagster-webserver`` upgrades dagster past the pin; the extra pins the
webserver to the same version, and the test command (``.[dev]``) installs it.
"""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement

tomllib = pytest.importorskip("tomllib")  # Python 3.11+

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def _project() -> dict:
    with PYPROJECT.open("rb") as f:
        return tomllib.load(f)["project"]


def _pin(requirements: list[str], name: str) -> str:
    """The exact version ``name`` is pinned to (``name==X``) among ``requirements``."""
    (found,) = [Requirement(r) for r in requirements if Requirement(r).name == name]
    (spec,) = found.specifier
    assert spec.operator == "==", found
    return spec.version


def test_the_webserver_is_pinned_to_the_dagster_pin() -> None:
    project = _project()
    dagster = _pin(project["dependencies"], "dagster")
    assert _pin(project["optional-dependencies"]["ui"], "dagster-webserver") == dagster


def test_the_test_command_installs_the_ui_extra_at_the_pinned_version() -> None:
    project = _project()
    dev = [Requirement(r) for r in project["optional-dependencies"]["dev"]]
    assert any(r.name == "sync_observability" and "ui" in r.extras for r in dev)
    dagster = _pin(project["dependencies"], "dagster")
    assert importlib.metadata.version("dagster") == dagster
    assert importlib.metadata.version("dagster-webserver") == dagster
