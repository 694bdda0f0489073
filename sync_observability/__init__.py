"""sync_observability: sync state, history, alerts and retention for Dagster, in real tables."""
