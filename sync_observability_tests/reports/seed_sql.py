"""The SQL of seeds 000 and 001, extracted from the documents themselves at test time.

The seeds are read from ``$SYNC_OBS_SEEDS_DIR`` when it is set, else from ``shared/seeds``
beside the repository (``../shared/seeds``), where CI checks them out. Each ```` ```sql ````
block is split into statements; a statement runs *unchanged* except for the table names
(``utilities.sync_log`` -> ``sync_history``, ``vantage_sync_state`` -> ``sync_state``).
Statements that are not queries are skipped, each with its reason (see :func:`skip_reason`).
"""

from __future__ import annotations

import dataclasses
import os
import re
from pathlib import Path

SEEDS_ENV = "SYNC_OBS_SEEDS_DIR"
# Where CI checks the seed documents out: beside the repository, whatever the working directory.
CI_SEEDS_DIR = Path(__file__).resolve().parents[3] / "shared" / "seeds"
SEEDS = ("000", "001")
TABLE_NAMES = {
    r"\butilities\.sync_log\b": "sync_history",
    r"\bvantage_sync_state\b": "sync_state",
}
HELPER_FUNCTIONS = ("start_vantage_sync", "complete_vantage_sync", "fail_vantage_sync")
_BLOCK = re.compile(r"^[ \t]*```sql[ \t]*\n(.*?)^[ \t]*```", re.S | re.M)
_HEADING = re.compile(r"^#{2,6} +(.+?)\s*$", re.M)


@dataclasses.dataclass(frozen=True)
class SeedStatement:
    """One statement of a seed's SQL: where it is, its text as written, and as it runs here."""

    seed: str  # "000" or "001"
    heading: str  # the markdown heading above its block
    original: str
    sql: str  # table names substituted, nothing else changed

    @property
    def name(self) -> str:
        return f"{self.seed}: {self.heading}"


def seeds_dir() -> Path:
    """The folder the seed documents are read from: ``$SYNC_OBS_SEEDS_DIR``, else CI's."""
    configured = os.environ.get(SEEDS_ENV)
    return Path(configured).resolve() if configured else CI_SEEDS_DIR


def missing_seeds(folder: Path) -> str | None:
    """Why ``folder`` cannot serve the seed-SQL tests; None when it holds seeds 000 and 001."""
    missing = [f"{seed}_*.txt" for seed in SEEDS if not any(folder.glob(f"{seed}_*.txt"))]
    if not missing:
        return None
    where = f"${SEEDS_ENV}" if os.environ.get(SEEDS_ENV) else "beside the repository, as in CI"
    return (
        f"seed documents {' and '.join(missing)} not found in {folder} ({where}); "
        f"set {SEEDS_ENV} to the folder holding them"
    )


def statements(folder: Path, seed: str) -> list[SeedStatement]:
    """Every statement of every ```sql block of seed ``seed`` (``"000"``), in document order."""
    (path,) = folder.glob(f"{seed}_*.txt")
    text = path.read_text(encoding="utf-8")
    headings = [(m.start(), m.group(1)) for m in _HEADING.finditer(text)]
    found = []
    for block in _BLOCK.finditer(text):
        heading = next((h for pos, h in reversed(headings) if pos < block.start()), "")
        for statement in split_statements(block.group(1)):
            sql = statement
            for pattern, table in TABLE_NAMES.items():
                sql = re.sub(pattern, table, sql)
            found.append(SeedStatement(seed, heading, statement, sql))
    return found


def split_statements(sql: str) -> list[str]:
    """Split on ``;`` outside quotes and ``--`` comments; drop empty pieces."""
    pieces, current, i = [], [], 0
    quote: str | None = None
    while i < len(sql):
        ch = sql[i]
        if quote:
            current.append(ch)
            if ch == quote:
                quote = None
        elif ch in ("'", '"'):
            quote = ch
            current.append(ch)
        elif sql.startswith("--", i):
            end = sql.find("\n", i)
            end = len(sql) if end == -1 else end
            current.append(sql[i:end])
            i = end
            continue
        elif ch == ";":
            pieces.append("".join(current))
            current = []
        else:
            current.append(ch)
        i += 1
    pieces.append("".join(current))
    return [p.strip() for p in pieces if strip_comments(p)]


def strip_comments(sql: str) -> str:
    return re.sub(r"--[^\n]*", "", sql).strip()


def skip_reason(statement: SeedStatement) -> str | None:
    """Why a statement is not run as a query, or None when it is one."""
    body = strip_comments(statement.sql)
    verb = body.split(None, 1)[0].upper()
    if verb == "CREATE":
        return "DDL: the seed's recommended index; migration 0001 creates its equivalent"
    if verb in ("INSERT", "DELETE", "UPDATE"):
        return (
            "a write, not a query: archiving belongs to retention (issue 4), invalid inserts "
            "demonstrate the CHECK constraints (test_constraints.py covers them)"
        )
    if any(f"{fn}(" in body for fn in HELPER_FUNCTIONS):
        return (
            "calls seed 001's helper functions, which SyncStore.start_sync/finish_sync replace "
            "(test_seed001_sequence.py runs that sequence through the tracker)"
        )
    if verb not in ("SELECT", "WITH"):
        return f"not a query ({verb})"
    return None
