"""The DDL reports (ddl-history, ddl-impact, user-activity) over a known set of ``ddl_events``
rows, on both engines; on PostgreSQL also through the hourly roll-up, with a transaction that
commits after a refresh."""

import datetime as dt
import json
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from sync_observability import SyncStore
from sync_observability.cli import main
from sync_observability.reports import REPORTS
from sync_observability.reports.ddl import assessed_hours, ddl_history, ddl_impact, user_activity
from sync_observability.storage.reporting.ddl import refresh_ddl_rollup
from sync_observability.storage.schema import ddl_events
from sync_observability_tests.conftest import Backend

UTC = dt.timezone.utc
NOW = dt.datetime(2026, 3, 20, 14, 30, tzinfo=UTC)  # assessed: 00:00-14:00 of the 20th
DAY = dt.timedelta(days=1)
MIDNIGHT = dt.datetime(2026, 3, 20, tzinfo=UTC)


def event(at: dt.datetime, user: str, tag: str = "ALTER TABLE", **fields: Any) -> dict[str, Any]:
    identity = fields.pop("object_identity", "analytics.orders")
    return {
        "event_time": at,
        "command_tag": tag,
        "object_type": fields.pop("object_type", "table"),
        "object_identity": identity,
        "schema_name": fields.pop("schema_name")
        if "schema_name" in fields
        else identity.partition(".")[0],
        "statement": fields.pop("statement", f"{tag} {identity}"),
        "db_session_user": user,
        "client_address": fields.pop("client_address", "10.0.0.1"),
        "application_name": "psql",
        **fields,
    }


def insert(store: SyncStore, rows: list[dict[str, Any]]) -> None:
    """Rows as the triggers write them; on PostgreSQL with the inserting transaction's id."""
    xid = (
        sa.literal_column("pg_current_xact_id()::text::bigint")
        if store.dialect == "postgresql"
        else 0
    )

    def tx(conn: sa.Connection) -> None:
        for row in rows:
            conn.execute(sa.insert(ddl_events).values(**row, transaction_id=xid))

    store.db.write(tx, "insert test DDL events")


def known_events() -> list[dict[str, Any]]:
    rows = []
    # alice, same hours (before 14:00) of earlier days: 2, 4, 2, 4 -> mean 3, sd 1.15; today 6.
    for days_back, count in ((1, 2), (2, 4), (3, 2), (4, 4)):
        rows += [event(MIDNIGHT - days_back * DAY + dt.timedelta(hours=9), "alice")] * count
    # After 14:00 on an earlier day: in her totals, not in the same-hours baseline.
    rows += [event(MIDNIGHT - DAY + dt.timedelta(hours=20), "alice", "CREATE TABLE")] * 10
    rows += [event(MIDNIGHT + dt.timedelta(hours=h), "alice") for h in (1, 2, 3, 4, 5, 13)]
    # The hour under way (14:xx): counted in her totals, not in today's same hours.
    rows.append(event(MIDNIGHT + dt.timedelta(hours=14, minutes=10), "alice", "DROP TABLE"))
    # bob: 5, 5, 6 on earlier days, 5 today, from two addresses: NORMAL.
    for days_back, count in ((1, 5), (2, 5), (3, 6)):
        rows += [
            event(
                MIDNIGHT - days_back * DAY + dt.timedelta(hours=8),
                "bob",
                "GRANT",
                object_type="table",
                object_identity=None,
                schema_name=None,
            )
        ] * count
    rows += [
        event(
            MIDNIGHT + dt.timedelta(hours=8),
            "bob",
            "REVOKE",
            client_address=None,
            object_identity=None,
            schema_name=None,
        )
    ] * 5
    # carol: today only, no baseline.
    rows.append(
        event(
            MIDNIGHT + dt.timedelta(hours=10),
            "carol",
            "DROP TABLE",
            object_identity="staging.tmp_load",
        )
    )
    # dave: 10, 12, 10, 12 before, nothing today: ANOMALY_LOW.
    for days_back, count in ((1, 10), (2, 12), (3, 10), (4, 12)):
        rows += [
            event(
                MIDNIGHT - days_back * DAY + dt.timedelta(hours=11),
                "dave",
                "CREATE INDEX",
                object_type="index",
                object_identity="analytics.ix_o",
            )
        ] * count
    # Outside the 5-day window: ignored.
    rows += [event(MIDNIGHT - 6 * DAY, "alice")] * 50
    return rows


@pytest.fixture
def reports_store(backend: Backend) -> Iterator[SyncStore]:
    store = backend.store()
    insert(store, known_events())
    yield store
    store.dispose()


def by_user(frame: Any) -> dict[str, dict[str, Any]]:
    return {row["db_session_user"]: row for row in frame.to_dict(orient="records")}


def test_the_assessed_day_is_today_in_whole_hours_or_yesterday_in_the_first_hour() -> None:
    assert assessed_hours(NOW) == (MIDNIGHT, 14)
    assert assessed_hours(MIDNIGHT + dt.timedelta(minutes=20)) == (MIDNIGHT - DAY, 24)
    assert assessed_hours(MIDNIGHT + dt.timedelta(hours=1)) == (MIDNIGHT, 1)


def test_user_activity_compares_the_same_hours_of_earlier_days(reports_store: SyncStore) -> None:
    frame = user_activity(reports_store, days=5, now=NOW)
    assert list(frame["db_session_user"]) == ["alice", "bob", "carol", "dave"]
    users = by_user(frame)
    alice = users["alice"]
    assert alice["ddl_operations"] == 2 + 4 + 2 + 4 + 10 + 6 + 1
    assert (alice["creates"], alice["alters"], alice["drops"], alice["grants"]) == (10, 18, 1, 0)
    assert alice["day_operations"] == 6 and alice["hours"] == 14
    assert alice["day"] == dt.date(2026, 3, 20)
    assert (alice["avg_operations"], alice["stddev_operations"]) == (3.0, 1.15)
    assert alice["baseline_days"] == 4
    assert alice["activity_assessment"] == "ANOMALY_HIGH"  # 6 > 3 + 2 x 1.15
    assert alice["last_activity"] == MIDNIGHT + dt.timedelta(hours=14, minutes=10)
    bob = users["bob"]
    assert (bob["day_operations"], bob["avg_operations"], bob["baseline_days"]) == (5, 5.33, 3)
    assert bob["activity_assessment"] == "NORMAL"
    assert bob["grants"] == 21 and bob["client_addresses"] == 2  # 10.0.0.1 and a local socket
    carol = users["carol"]
    assert (carol["day_operations"], carol["baseline_days"]) == (1, 0)
    assert carol["activity_assessment"] == "NO_DATA" and carol["avg_operations"] is None
    dave = users["dave"]
    assert (dave["day_operations"], dave["avg_operations"]) == (0, 11.0)
    assert dave["activity_assessment"] == "ANOMALY_LOW"


def test_ddl_history_lists_the_newest_first_within_the_window(reports_store: SyncStore) -> None:
    frame = ddl_history(reports_store, days=1, now=NOW, limit=3)
    rows = frame.to_dict(orient="records")
    assert [(r["db_session_user"], r["command_tag"]) for r in rows] == [
        ("alice", "DROP TABLE"),
        ("alice", "ALTER TABLE"),  # 13:00
        ("carol", "DROP TABLE"),  # 10:00
    ]
    assert rows[0]["statement"] == "DROP TABLE analytics.orders"
    assert rows[0]["event_time"] == MIDNIGHT + dt.timedelta(hours=14, minutes=10)
    assert len(ddl_history(reports_store, days=1, now=NOW)) == 6 + 1 + 5 + 1 + 10


def test_ddl_impact_ranks_the_objects_changed_most(reports_store: SyncStore) -> None:
    frame = ddl_impact(reports_store, days=5, now=NOW)
    rows = {(r["schema_name"], r["object_identity"]): r for r in frame.to_dict(orient="records")}
    assert list(frame["object_identity"])[:2] == ["analytics.ix_o", "analytics.orders"]
    orders = rows[("analytics", "analytics.orders")]
    assert (orders["changes"], orders["creates"], orders["alters"], orders["drops"]) == (
        29,
        10,
        18,
        1,
    )
    assert orders["users"] == 1
    assert (orders["last_command"], orders["last_by"]) == ("DROP TABLE", "alice")
    grants = rows[(None, None)]
    assert (grants["changes"], grants["grants"], grants["users"]) == (21, 21, 1)
    assert rows[("staging", "staging.tmp_load")]["drops"] == 1
    assert len(ddl_impact(reports_store, days=5, now=NOW, limit=1)) == 1


def test_the_reports_are_registered_and_print_json(
    backend: Backend, reports_store: SyncStore
) -> None:
    assert {"ddl-history", "ddl-impact", "user-activity"} <= set(REPORTS)
    args = [
        "report",
        "user-activity",
        "--days",
        "5",
        "--as-of",
        NOW.isoformat(),
        "--json",
        "--database-url",
        backend.url,
        "--schema",
        backend.schema,
    ]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert rows[0]["db_session_user"] == "alice"
    assert rows[0]["activity_assessment"] == "ANOMALY_HIGH"
    assert rows[0]["day"] == "2026-03-20"


@pytest.mark.postgres
@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
def test_the_roll_up_gives_the_same_report_and_misses_no_late_commit(
    backend: Backend, reports_store: SyncStore
) -> None:
    raw = backend.store(rollups="off")
    try:
        expected = user_activity(raw, days=5, now=NOW)
        assert user_activity(reports_store, days=5, now=NOW).equals(expected)  # refreshes
        _check_roll_up(backend)
        # As of 14:05: the roll-up's 14:00 hour holds the 14:10 DROP, which is after that.
        early = NOW - dt.timedelta(minutes=25)
        as_of = user_activity(reports_store, days=5, now=early)
        assert as_of.equals(user_activity(raw, days=5, now=early))
        assert by_user(as_of)["alice"]["ddl_operations"] == 28
        # A DDL transaction still open during a refresh, committed after it.
        engine = backend.engine()
        with engine.connect() as late:
            late.execute(
                sa.insert(ddl_events).values(
                    **event(MIDNIGHT + dt.timedelta(hours=3), "alice"),
                    transaction_id=sa.literal_column("pg_current_xact_id()::text::bigint"),
                )
            )
            refresh_ddl_rollup(reports_store)
            late.commit()
        engine.dispose()
        again = by_user(user_activity(reports_store, days=5, now=NOW))
        assert again["alice"]["day_operations"] == 7
        assert by_user(user_activity(raw, days=5, now=NOW))["alice"]["day_operations"] == 7
        _check_roll_up(backend)
        read_only = backend.store(rollups="read")
        try:
            assert user_activity(read_only, days=5, now=NOW).equals(
                user_activity(raw, days=5, now=NOW)
            )
        finally:
            read_only.dispose()
    finally:
        raw.dispose()


def _check_roll_up(backend: Backend) -> None:
    """Every event is in the roll-up or above its horizon, never both. (How far the horizon got
    depends on the transactions running anywhere on the server, hence no count of either.)"""
    engine = backend.engine()
    try:
        with engine.connect() as conn:
            rolled, above, total = conn.exec_driver_sql(
                "SELECT (SELECT coalesce(sum(events), 0) FROM ddl_events_hourly), "
                "(SELECT count(*) FROM ddl_events WHERE transaction_id >= "
                " (SELECT rolled_below FROM ddl_rollup_state)), "
                "(SELECT count(*) FROM ddl_events)"
            ).one()
    finally:
        engine.dispose()
    assert rolled + above == total


def test_ddl_history_fits_a_terminal_with_the_columns_that_say_who_did_what(
    backend: Backend, reports_store: SyncStore
) -> None:
    args = ["report", "ddl-history", "--days", "30", "--as-of", NOW.isoformat()]
    args += ["--database-url", backend.url, "--schema", backend.schema]
    result = CliRunner(env={"COLUMNS": "120"}).invoke(main, args)
    assert result.exit_code == 0, result.output
    header = next(line for line in result.output.splitlines() if "event time" in line)
    assert "statement" in header and "client address" not in header
    assert "DROP TABLE analytics.orders" in result.output  # the statement, on one line
    assert "--json or --csv for every column" in " ".join(result.output.split())
    full = CliRunner().invoke(main, [*args, "--json"])
    assert {"client_address", "application_name", "event_id"} <= set(json.loads(full.stdout)[0])
