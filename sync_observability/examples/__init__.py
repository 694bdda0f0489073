"""Example assets for the demo and ``dagster dev``: Vantage syncs that use the SyncTracker.

``workspace.yaml`` at the repository root loads :mod:`sync_observability.examples.definitions`;
``sync-obs demo`` materializes the same assets a few times on the embedded SQLite database.
"""
