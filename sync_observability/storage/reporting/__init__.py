"""Report storage: the hourly roll-ups the reports read, and the reports' read-only queries.

Nothing here is imported by the tracker's hot path except :mod:`.backfills`, the one statement a
sync started in the past runs; keep this ``__init__`` free of imports so that stays cheap.
"""
