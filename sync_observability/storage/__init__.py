"""Storage: tables, the SyncStore that owns every query, and migrations."""
