"""``sync-obs alerts``: open and recent alerts as a table and as JSON."""

from __future__ import annotations

import datetime as dt
import json

from click.testing import CliRunner

from sync_observability.alerts.lifecycle import record_findings
from sync_observability.alerts.rules import (
    AlertPolicy,
    check_consecutive_failures,
    check_stale_watermarks,
)
from sync_observability.cli.alerts import alerts
from sync_observability.storage.alert_store import AlertStore
from sync_observability_tests.alerts.dagster_helpers import fail, past_sync, succeed, utcnow
from sync_observability_tests.conftest import Backend


def _invoke(backend: Backend, *args: str) -> str:
    result = CliRunner().invoke(
        alerts,
        ["--database-url", backend.url, "--schema", backend.schema, *args],
        env={"COLUMNS": "200"},  # wide enough that rich never elides a cell
    )
    assert result.exit_code == 0, result.output
    return result.output


def test_lists_open_and_resolved_alerts(backend: Backend) -> None:
    tracker = backend.tracker()
    store = tracker.store
    alert_store = AlertStore(store)
    assert "No matching alerts" in _invoke(backend)

    fail(tracker, "orders", times=3)
    fail(tracker, "invoices", times=3)
    past_sync(store, "ledger", started_at=utcnow() - dt.timedelta(hours=30))
    policy, now = AlertPolicy(), utcnow()
    states = store.list_states()
    record_findings(
        alert_store,
        "consecutive_failures",
        check_consecutive_failures(states, policy, now),
        now=now,
    )
    record_findings(
        alert_store, "stale_watermark", check_stale_watermarks(states, policy, now), now=now
    )
    succeed(tracker, "invoices")
    now = utcnow()
    record_findings(
        alert_store,
        "consecutive_failures",
        check_consecutive_failures(store.list_states(), policy, now),
        now=now,
    )

    rows = json.loads(_invoke(backend, "--json"))
    assert sorted((r["fingerprint"], r["status"]) for r in rows) == [
        ("consecutive_failures:invoices", "resolved"),
        ("consecutive_failures:orders", "open"),
        ("stale_watermark:ledger", "open"),
    ]
    open_rows = json.loads(_invoke(backend, "--status", "open", "--json"))
    assert {r["resource"] for r in open_rows} == {"orders", "ledger"}
    assert len(json.loads(_invoke(backend, "--json", "--limit", "1"))) == 1
    # Resolved before the window: only the open ones remain.
    future = (utcnow() + dt.timedelta(hours=1)).isoformat()
    assert {r["status"] for r in json.loads(_invoke(backend, "--json", "--since", future))} == {
        "open"
    }

    table = _invoke(backend)
    for text in ("consecutive_failures", "orders", "ledger", "resolved", "critical"):
        assert text in table
    store.dispose()


def test_a_bad_since_is_a_usage_error(backend: Backend) -> None:
    result = CliRunner().invoke(alerts, ["--database-url", backend.url, "--since", "yesterday"])
    assert result.exit_code == 2
    assert "neither an ISO 8601 datetime" in result.output
