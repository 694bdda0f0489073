"""Storage: the only layer that speaks SQL.

``schema`` (tables), ``database`` (runs every transaction), ``records`` (rows as plain records),
``store`` (a sync's start, finish, reap and reads), ``watermarks`` (manual watermark changes),
``watermark_rule`` (when a watermark move is refused), the alert, retention, operation and
partitioning stores, ``history_stats`` (the sensors' per-resource reads), ``reporting/`` (the
reports' roll-ups and queries), ``roles`` (PostgreSQL group roles, grants and row-level
security) and ``migrations/``.
"""
