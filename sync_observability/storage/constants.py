"""Names, limits and defaults that code outside storage needs without loading SQLAlchemy.

A Dagster code location, and every step process of the multiprocess executor, imports the
tracker, the sensors and the definitions; SQLAlchemy loads only when a store is created
(``sync_observability_tests/test_import_cost.py``). The values marked "as in schema.py" repeat
that module's; a test checks that they are equal.
"""

from __future__ import annotations

DEFAULT_SCHEMA = "sync_observability"
"""The PostgreSQL schema holding the tables unless another is configured."""
DEFAULT_TIMEOUT = 30.0
"""The default time budget of one storage call (connect, lock waits, statements, retries)."""
DEFAULT_KEEP_LAST = 10
"""Retention keeps the last this many syncs of each resource in ``sync_history``."""
OPERATION_LOG_BATCH_ROWS = 1000
"""A sync's operational events are written in batches of this many rows."""

# The tables' value sets and limits (schema.py builds its CHECKs and columns from them).
SYNC_TYPES = ("full", "incremental")
MAX_NAME_LENGTH = 255
ALERT_SEVERITIES = ("critical", "warning")
MAX_RULE_LENGTH = 64
# Seed 003's categories, then seed 004's manual operation types (maintenance is in both).
OPERATION_CATEGORIES = (
    "data_quality_error",
    "dedup_conflict",
    "authority_conflict",
    "cast_error",
    "upsert_failure",
    "concurrency_issue",
    "backup",
    "maintenance",
    "migration",
    "data_import",
    "export",
)
