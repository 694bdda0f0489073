"""What a Dagster step process pays to import the package: no storage, reports or migrations.

Every process that loads a code location using the package imports it (the code server, each
run worker and, with the multiprocess executor, every step). SQLAlchemy and psycopg2 load when a
store is created (resource setup, a sensor tick, the CLI, a report); pandas, matplotlib and
Alembic only where they are used: a report, the health report asset's body, a migration.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from sync_observability.storage import constants, schema

HEAVY = (
    "pandas",
    "matplotlib",
    "alembic",
    "numpy",
    "sqlalchemy",
    "psycopg2",
    "prometheus_client",
    "pyarrow",
    "duckdb",
    "s3fs",
)


def _modules_after(code: str) -> list[str]:
    """Every module in ``sys.modules`` of a fresh interpreter after running ``code``."""
    probe = f"import sys\n{code}\nprint(__import__('json').dumps(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=120
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def _loaded_after(code: str) -> list[str]:
    return sorted({m.split(".")[0] for m in _modules_after(code)} & set(HEAVY))


@pytest.mark.parametrize(
    "code",
    [
        "import sync_observability",
        "from sync_observability import SyncTracker, sync_observability_definitions",
        "import sync_observability.examples.definitions",
        # The definitions a user builds, with every sensor, the job and the report asset.
        "import sync_observability as so; so.sync_observability_definitions()",
        # What a code server does with them: resolve every job, check and resource.
        "import dagster as dg, sync_observability.examples.definitions as m\n"
        "dg.Definitions.validate_loadable(m.defs)",
        # A tracker configured in code, as a step process builds it before setting it up.
        "from sync_observability import SyncTracker\n"
        "SyncTracker(database_url='postgresql://u@127.0.0.1:1/x', schema_name='s')",
    ],
)
def test_loading_the_package_and_its_definitions_imports_no_heavy_module(code: str) -> None:
    assert _loaded_after(code) == []


def test_a_report_still_loads_what_it_needs() -> None:
    # The probe is not blind: running the reports' import pulls pandas in.
    assert "pandas" in _loaded_after("import sync_observability.reports")


def test_a_store_loads_sqlalchemy_and_the_postgresql_driver() -> None:
    # Nor for storage: opening a store (SQLite) loads SQLAlchemy, a PostgreSQL engine the
    # driver (made without connecting).
    assert "sqlalchemy" in _loaded_after(
        "from sync_observability import SyncTracker\nSyncTracker(database_url='sqlite://').store"
    )
    engine = (
        "from sync_observability.storage.engine import create_engine\n"
        "create_engine('postgresql://u@127.0.0.1:1/x')"
    )
    assert "psycopg2" in _loaded_after(engine)


# What a step process that only tracks does not need: the Dagster objects of the definitions.
DEFINITIONS_ONLY = (
    "sync_observability.alerts.sensors",
    "sync_observability.alerts.sinks",
    "sync_observability.checks",
    "sync_observability.definitions",
    "sync_observability.observer",
    "sync_observability.report_asset",
    "sync_observability.retention",
)


def _package_modules_after(code: str) -> set[str]:
    return {m for m in _modules_after(code) if m.startswith("sync_obs")}


def test_the_tracker_alone_loads_none_of_the_definitions_modules() -> None:
    loaded = _package_modules_after("from sync_observability import SyncTracker")
    assert "sync_observability.tracking" in loaded
    assert loaded.isdisjoint(DEFINITIONS_ONLY), sorted(loaded & set(DEFINITIONS_ONLY))


def test_every_public_name_loads_on_first_use() -> None:
    # The lazy __init__ names every export, and each resolves to the object its module defines.
    import sync_observability as so

    assert set(so.__all__) <= set(dir(so))
    for name in so.__all__:
        value = getattr(so, name)
        assert value is getattr(sys.modules[so._EXPORTS[name]], name)
    with pytest.raises(AttributeError, match="no_such_name"):
        so.no_such_name  # noqa: B018
    assert set(DEFINITIONS_ONLY) <= _package_modules_after(
        "import sync_observability as so; so.sync_observability_definitions()"
    )


@pytest.mark.parametrize(
    "name",
    [
        "SYNC_TYPES",
        "MAX_NAME_LENGTH",
        "ALERT_SEVERITIES",
        "MAX_RULE_LENGTH",
        "OPERATION_CATEGORIES",
    ],
)
def test_the_light_constants_are_the_schemas(name: str) -> None:
    # Defined once in constants.py (validation needs no SQLAlchemy); the tables use them.
    assert getattr(constants, name) == getattr(schema, name)


@pytest.mark.parametrize(
    "module", ["sync_observability.cli.archive", "sync_observability.cli.cold_query"]
)
def test_the_archive_commands_load_no_dagster(module: str) -> None:
    # `sync-obs archive` and its export and query run retention's steps, not its Dagster job.
    loaded = _modules_after(f"import {module}")
    assert "sync_observability.retention.steps" in loaded or module.endswith("cold_query")
    assert "dagster" not in {m.split(".")[0] for m in loaded}


def test_the_retention_job_still_loads_from_its_package() -> None:
    from sync_observability import retention

    assert retention.sync_retention_job.name == "sync_retention_job"
    with pytest.raises(AttributeError, match="no_such_job"):
        retention.no_such_job  # noqa: B018
