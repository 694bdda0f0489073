"""sync_schema_changes_sensor: real DDL on a tracked PostgreSQL database of the test's own,
real Dagster sensor ticks, alerts delivered to a real webhook on 127.0.0.1."""

import datetime as dt
from collections.abc import Iterator

import dagster as dg
import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from sync_observability import (
    SyncTracker,
    make_schema_changes_sensor,
    sync_observability_definitions,
)
from sync_observability.alerts.resources import SyncAlerting
from sync_observability.cli import main
from sync_observability.errors import InvalidInputError
from sync_observability_tests.alerts.dagster_helpers import webhook_receiver
from sync_observability_tests.conftest import own_database


@pytest.fixture
def tracked_url(postgres_database_url: str) -> Iterator[str]:
    with own_database(postgres_database_url, "sync_obs_schema_changes") as url:
        result = CliRunner().invoke(main, ["ddl", "enable", "--database-url", url])
        assert result.exit_code == 0, result.output
        yield url


def ddl(engine: sa.Engine, *statements: str) -> None:
    with engine.begin() as conn:
        for statement in statements:
            conn.exec_driver_sql(statement)


class Ticker:
    """Evaluates a sensor as the daemon does, carrying its cursor from tick to tick."""

    def __init__(self, sensor: dg.SensorDefinition, instance: dg.DagsterInstance, **resources):
        self.sensor = sensor
        self.instance = instance
        self.resources = resources
        self.cursor: str | None = None

    def __call__(self) -> str:
        with dg.build_sensor_context(
            instance=self.instance, cursor=self.cursor, resources=self.resources
        ) as context:
            result = self.sensor(context)
            self.cursor = context.cursor
        assert isinstance(result, dg.SkipReason), result
        return result.skip_message or ""


@pytest.mark.postgres
def test_drop_and_alter_on_watched_tables_alert_once_each_naming_object_statement_and_user(
    tracked_url: str, instance: dg.DagsterInstance
) -> None:
    user = sa.create_engine(
        tracked_url, poolclass=sa.pool.NullPool, connect_args={"application_name": "etl"}
    )
    tracker = SyncTracker(database_url=tracked_url)
    sensor = make_schema_changes_sensor(schemas=["analytics"])
    assert sensor.name == "sync_schema_changes_sensor"
    try:
        with webhook_receiver() as hook:
            tick = Ticker(
                sensor,
                instance,
                sync_tracker=tracker,
                sync_alerting=SyncAlerting(webhook_url=hook.url),
            )
            ddl(user, "CREATE SCHEMA analytics", "CREATE TABLE analytics.orders (id int)")
            assert "0 new schema change(s)" in tick()  # the first tick starts the cursor
            assert tick.cursor is not None
            ddl(user, "CREATE TABLE analytics.customers (id int)")  # CREATE: not alerted
            ddl(user, "ALTER TABLE analytics.orders ADD COLUMN total numeric")
            ddl(user, "CREATE TABLE public.scratch (id int)", "DROP TABLE public.scratch")
            ddl(user, "DROP TABLE analytics.customers")
            message = tick()
            assert "2 new schema change(s) in analytics" in message
            assert "analytics.orders (ALTER TABLE), analytics.customers (DROP TABLE)" in message
            assert "2 notification(s) sent" in message
            # Alerts opened in one tick go out in no set order.
            drop, alter = sorted(hook.accepted, key=lambda body: body["resource"])
            assert (alter["event"], alter["rule"], alter["resource"]) == (
                "opened",
                "schema_change",
                "analytics.orders",
            )
            assert alter["severity"] == "warning"
            assert alter["message"] == (
                "ALTER TABLE on table analytics.orders by postgres from 127.0.0.1: "
                "ALTER TABLE analytics.orders ADD COLUMN total numeric"
            )
            assert alter["details"]["statement"] == (
                "ALTER TABLE analytics.orders ADD COLUMN total numeric"
            )
            assert alter["details"]["db_session_user"] == "postgres"
            assert alter["details"]["application_name"] == "etl"
            assert (drop["resource"], drop["severity"]) == ("analytics.customers", "critical")
            assert "DROP TABLE analytics.customers" in drop["text"]
            assert drop["fingerprint"] == f"schema_change:{drop['details']['event_id']}"
            # Nothing new: no notification, the alerts stay open (no reminders).
            assert "0 new schema change(s)" in tick()
            assert len(hook.accepted) == 2
            # A second ALTER of the same table is a second alert.
            ddl(user, "ALTER TABLE analytics.orders RENAME COLUMN total TO amount")
            tick()
            assert [b["resource"] for b in hook.accepted[2:]] == ["analytics.orders.amount"]
            assert "RENAME COLUMN total TO amount" in hook.accepted[2]["message"]
    finally:
        tracker.store.dispose()
        user.dispose()


@pytest.mark.postgres
def test_a_transaction_committing_after_a_later_one_is_alerted_when_it_commits(
    tracked_url: str, instance: dg.DagsterInstance
) -> None:
    user = sa.create_engine(tracked_url, poolclass=sa.pool.NullPool)
    tracker = SyncTracker(database_url=tracked_url)
    try:
        with webhook_receiver() as hook:
            tick = Ticker(
                make_schema_changes_sensor(schemas=["public"]),
                instance,
                sync_tracker=tracker,
                sync_alerting=SyncAlerting(webhook_url=hook.url),
            )
            ddl(user, "CREATE TABLE public.early (i int)", "CREATE TABLE public.later (i int)")
            tick()
            with user.connect() as slow:
                slow.exec_driver_sql("ALTER TABLE public.early ADD COLUMN j int")  # open
                ddl(user, "DROP TABLE public.later")  # began after, commits first
                tick()
                assert [b["resource"] for b in hook.accepted] == ["public.later"]
                slow.commit()
            tick()
            tick()  # read again while below the horizon or not: alerted once
            assert [b["resource"] for b in hook.accepted] == ["public.later", "public.early"]
    finally:
        tracker.store.dispose()
        user.dispose()


@pytest.mark.postgres
def test_an_alert_resolves_once_its_window_has_passed(
    tracked_url: str, instance: dg.DagsterInstance
) -> None:
    user = sa.create_engine(tracked_url, poolclass=sa.pool.NullPool)
    tracker = SyncTracker(database_url=tracked_url)
    try:
        with webhook_receiver() as hook:
            tick = Ticker(
                # Past its window by the next tick, whatever the clock reads.
                make_schema_changes_sensor(
                    schemas=["public"], open_for=dt.timedelta(microseconds=1)
                ),
                instance,
                sync_tracker=tracker,
                sync_alerting=SyncAlerting(webhook_url=hook.url),
            )
            tick()
            ddl(user, "CREATE TABLE public.t (i int)", "DROP TABLE public.t")
            assert "1 new schema change(s) in public: public.t (DROP TABLE); 0 resolved" in tick()
            assert "0 new schema change(s) in public; 1 resolved" in tick()
            assert [b["event"] for b in hook.accepted] == ["opened", "resolved"]
            assert hook.accepted[1]["message"].startswith(
                "resolved: the DROP TABLE of 'public.t' is past its alert window"
            )
    finally:
        tracker.store.dispose()
        user.dispose()


def test_watch_schemas_adds_the_sensor_to_the_definitions() -> None:
    names = {s.name for s in sync_observability_definitions(watch_schemas=["analytics"]).sensors}
    assert "sync_schema_changes_sensor" in names
    assert "sync_schema_changes_sensor" not in {
        s.name for s in sync_observability_definitions().sensors
    }


@pytest.mark.parametrize("schemas", ["analytics", [], [None]])
def test_schemas_must_be_a_list_of_names(schemas: object) -> None:
    with pytest.raises(InvalidInputError, match="schemas"):
        make_schema_changes_sensor(schemas=schemas)  # type: ignore[arg-type]


def test_open_for_must_be_positive() -> None:
    with pytest.raises(InvalidInputError, match="open_for"):
        make_schema_changes_sensor(schemas=["a"], open_for=dt.timedelta(0))
