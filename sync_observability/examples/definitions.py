"""The example Definitions that ``workspace.yaml`` loads: ``dagster dev -w workspace.yaml``.

Each asset records its syncs through the ``sync_tracker`` resource; unconfigured, the tracker
writes to ``SYNC_OBS_DATABASE_URL``, else the Dagster instance's PostgreSQL, else a SQLite file
under ``$DAGSTER_HOME`` (or ``./.sync_observability/``).
"""

import dagster as dg

from sync_observability.definitions import sync_observability_definitions
from sync_observability.examples.vantage import (
    vantage_assets,
    vantage_sync_job,
    vantage_sync_schedule,
)
from sync_observability.tracking import SyncTracker

# One object: Definitions.merge refuses two different resources under the same key.
sync_tracker = SyncTracker()

# The alert sensors (running by default; they alert to the Dagster log unless SyncAlerting gets a
# webhook_url or slack_webhook_url) and a sync_health check on every example asset.
defs = dg.Definitions.merge(
    dg.Definitions(
        assets=vantage_assets,
        jobs=[vantage_sync_job],
        schedules=[vantage_sync_schedule],
        resources={"sync_tracker": sync_tracker},
    ),
    sync_observability_definitions(tracker=sync_tracker, assets_to_check=vantage_assets),
)
