"""What a Dagster step process pays to import the package: no reports, charts or migrations.

Every process that loads a code location using the package imports it (the code server, each
run worker and, with the multiprocess executor, every step). pandas, matplotlib and Alembic
load only where they are used: a report, the health report asset's body, a migration.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

HEAVY = ("pandas", "matplotlib", "alembic", "numpy")


def _loaded_after(code: str) -> list[str]:
    probe = f"import sys\n{code}\nprint(__import__('json').dumps(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=120
    ).stdout
    modules = json.loads(out.strip().splitlines()[-1])
    return sorted({m.split(".")[0] for m in modules} & set(HEAVY))


@pytest.mark.parametrize(
    "code",
    [
        "import sync_observability",
        "from sync_observability import SyncTracker, sync_observability_definitions",
        "import sync_observability.examples.definitions",
        # The definitions a user builds, with every sensor, the job and the report asset.
        "import sync_observability as so; so.sync_observability_definitions()",
    ],
)
def test_loading_the_package_and_its_definitions_imports_no_heavy_module(code: str) -> None:
    assert _loaded_after(code) == []


def test_a_report_still_loads_what_it_needs() -> None:
    # The probe is not blind: running the reports' import pulls pandas in.
    assert "pandas" in _loaded_after("import sync_observability.reports")
