"""AlertStore: every query on ``sync_alerts``.

The decisions (what a finding means, what is due, what a message says) live in
:mod:`sync_observability.alerts.lifecycle`; this module only reads and writes rows, on SQLite and
PostgreSQL, through :class:`~sync_observability.storage.store.SyncStore`'s transactions (so
transient errors are retried). Two guarantees come from the database itself:

- at most one open alert per fingerprint: a partial unique index, and inserts that go
  ``ON CONFLICT (fingerprint) WHERE status = 'open' DO NOTHING``;
- a notification is sent by one tick only: a tick *claims* it with a guarded
  ``UPDATE ... WHERE <still due> AND <not claimed> RETURNING``, and marks it delivered with an
  ``UPDATE`` guarded by its claim token.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import uuid
from collections.abc import Callable, Collection, Sequence
from typing import Any

import sqlalchemy as sa

from sync_observability.storage.records import FINDING_COLUMNS, Alert, AlertDraft, Claim
from sync_observability.storage.schema import UTCDateTime, sync_alerts
from sync_observability.storage.store import SyncStore

_CHUNK = 500  # ids per IN (...) list: well under SQLite's bound-parameter limit


@dataclasses.dataclass(frozen=True, kw_only=True)
class AppliedFindings:
    """What :meth:`AlertStore.apply_findings` changed."""

    opened: list[Alert]
    refreshed: list[Alert]
    resolved: list[Alert]


_FIELDS = tuple(f.name for f in dataclasses.fields(Alert))
_COLUMNS = tuple(sync_alerts.c[name] for name in _FIELDS)
_CLAIM_COLUMNS = (*_COLUMNS, sync_alerts.c.delivery_kind, sync_alerts.c.delivered_sinks)


_OPEN = sa.text("status = 'open'")


def _alert(row: Any) -> Alert:
    return Alert(**{name: row[name] for name in _FIELDS})


def _chunks(items: Sequence[Any]) -> list[Sequence[Any]]:
    return [items[i : i + _CHUNK] for i in range(0, len(items), _CHUNK)]


def _due(
    now: dt.datetime,
    reminder_cutoff: dt.datetime | None,
    rules: Collection[str] | None = None,
) -> sa.ColumnElement[bool]:
    """A notification (of one of ``rules``, when given) is due and no tick holds a claim on it
    (one held until before ``now`` has expired).

    Due: the "opened" notification never got out, or the alert resolved and the resolution was
    not announced, or (with reminders) the last notification is as old as ``reminder_cutoff``.
    Resolved alerts never get reminders; the resolution test keeps them out of that arm.
    """
    t = sync_alerts.c
    arms = [t.last_notified_at.is_(None), t.status == "resolved"]
    if reminder_cutoff is not None:
        arms.append(t.last_notified_at <= reminder_cutoff)
    conditions = [
        t.resolution_notified_at.is_(None),
        sa.or_(*arms),
        sa.or_(t.claim_token.is_(None), t.claimed_until < now),
    ]
    if rules is not None:
        conditions.append(t.rule.in_(sorted(rules)))
    return sa.and_(*conditions)


class AlertStore:
    """Every query on ``sync_alerts``, sharing a :class:`SyncStore`'s engine and retries.

    Args:
        store: the store whose database holds ``sync_alerts`` (migrated to revision 0002+).

    Examples:
        .. code-block:: python

            alerts = AlertStore(SyncStore.from_url("sqlite:///sync.db"))
            for alert in alerts.list_alerts(status="open"):
                print(alert.fingerprint, alert.message)
    """

    def __init__(self, store: SyncStore) -> None:
        self.store = store

    @property
    def engine(self) -> sa.Engine:
        """The engine of the underlying :class:`SyncStore`."""
        return self.store.engine

    # -- reads -----------------------------------------------------------------------------

    def list_alerts(
        self,
        *,
        status: str | None = None,
        rule: str | None = None,
        resource: str | None = None,
        since: dt.datetime | None = None,
        limit: int | None = 100,
    ) -> list[Alert]:
        """Alerts, newest opened first.

        Args:
            status: ``open`` or ``resolved``; None for both.
            rule: only this rule's alerts.
            resource: only this resource's alerts.
            since: only alerts active at or after this time (still open, or resolved since).
            limit: at most this many; None for all.
        """
        t = sync_alerts.c
        query = sa.select(*_COLUMNS).order_by(t.opened_at.desc(), t.alert_id.desc())
        if status is not None:
            query = query.where(t.status == status)
        if rule is not None:
            query = query.where(t.rule == rule)
        if resource is not None:
            query = query.where(t.resource == resource)
        if since is not None:
            query = query.where(sa.or_(t.status == "open", t.resolved_at >= since))
        if limit is not None:
            query = query.limit(limit)
        return self.store.db.read(
            lambda conn: [_alert(row) for row in conn.execute(query).mappings()], "list alerts"
        )

    # -- one rule's findings -----------------------------------------------------------------

    def apply_findings(
        self,
        rule: str,
        drafts: Sequence[AlertDraft],
        *,
        now: dt.datetime,
        checked: Collection[str] | None,
        resolution_message: Callable[[Alert, dt.datetime], str],
    ) -> AppliedFindings:
        """Open, refresh and resolve ``rule``'s alerts from its findings, in one transaction.

        Each draft opens an alert unless its fingerprint is open already, in which case the open
        alert is refreshed (``last_seen_at`` and the finding's columns). Open alerts of ``rule``
        without a draft are resolved, only among ``checked`` resources when given, each with
        the text ``resolution_message(alert, now)``. ``drafts`` must have distinct fingerprints.
        """

        def tx(conn: sa.Connection) -> AppliedFindings:
            t = sync_alerts.c
            # FOR UPDATE (PostgreSQL; SQLite's BEGIN IMMEDIATE already serializes writers): a
            # tick of the same rule running at the same time waits instead of interleaving.
            rows = conn.execute(
                sa.select(*_COLUMNS)
                .where(t.status == "open", t.rule == rule)
                .order_by(t.alert_id)
                .with_for_update()
            ).mappings()
            open_by_fingerprint = {row["fingerprint"]: _alert(row) for row in rows}
            new = [d for d in drafts if d.fingerprint not in open_by_fingerprint]
            opened = _insert_new(conn, self.store.db.insert, new, now)
            inserted = {a.fingerprint for a in opened}
            # Opened by a racing tick between our read and our insert: refresh that one.
            raced = [d for d in new if d.fingerprint not in inserted]
            existing = [
                (open_by_fingerprint[d.fingerprint], d)
                for d in drafts
                if d.fingerprint in open_by_fingerprint
            ]
            refreshed = _refresh(conn, existing, now) + _refresh_raced(conn, raced, now)
            seen = {d.fingerprint for d in drafts}
            gone = [
                a
                for fingerprint, a in open_by_fingerprint.items()
                if fingerprint not in seen and (checked is None or a.resource in checked)
            ]
            resolved = _resolve(conn, gone, now, resolution_message)
            return AppliedFindings(opened=opened, refreshed=refreshed, resolved=resolved)

        return self.store.db.write(tx, f"record {rule} findings")

    # -- delivery ----------------------------------------------------------------------------

    def claim_due(
        self,
        *,
        now: dt.datetime,
        until: dt.datetime,
        reminder_cutoff: dt.datetime | None,
        limit: int,
        rules: Collection[str] | None = None,
    ) -> list[Claim]:
        """Claim up to ``limit`` due notifications for one sender, until ``until``.

        One guarded ``UPDATE ... WHERE <due and unclaimed> RETURNING``: a notification another
        tick claimed (or already delivered) is not returned, so racing ticks never both send
        it. Notifications whose last attempt failed come after the others, so one that a sink
        keeps refusing cannot hold the rest back. Returns the claims in sending order.

        Args:
            now: the tick's time; claims held until before it count as released.
            until: when this claim expires: the wall-clock time of the claim plus the longest
                time the sender may need (another tick may take the notifications after it).
            reminder_cutoff: open alerts last notified at or before this owe a reminder;
                None: no reminders.
            limit: at most this many notifications.
            rules: only notifications of these rules' alerts; None: every rule.
        """
        t = sync_alerts.c
        token = str(uuid.uuid4())
        candidates = (
            sa.select(t.alert_id)
            .where(_due(now, reminder_cutoff, rules))
            .order_by(t.last_delivery_error.is_not(None), t.opened_at, t.alert_id)
            .limit(limit)
        )
        if self.store.dialect == "postgresql":
            # Racing ticks take different rows instead of waiting on each other's.
            candidates = candidates.with_for_update(skip_locked=True)
        statement = (
            sa.update(sync_alerts)
            .where(t.alert_id.in_(candidates.scalar_subquery()), _due(now, reminder_cutoff, rules))
            .values(claim_token=token, claimed_until=until)
            .returning(*_CLAIM_COLUMNS)
        )

        def tx(conn: sa.Connection) -> list[Claim]:
            claims = [
                Claim(
                    alert=_alert(row),
                    token=token,
                    delivery_kind=row["delivery_kind"],
                    delivered_sinks=tuple(row["delivered_sinks"] or ()),
                )
                for row in conn.execute(statement).mappings()
            ]
            claims.sort(
                key=lambda c: (
                    c.alert.last_delivery_error is not None,
                    c.alert.opened_at,
                    c.alert.alert_id,
                )
            )
            return claims

        return self.store.db.write(tx, "claim due notifications")

    def mark_delivered(
        self, token: str, delivered: Sequence[tuple[str, str]], *, now: dt.datetime
    ) -> set[str]:
        """Record notifications that every sink accepted, and release their claims.

        Args:
            token: the claim token of :meth:`claim_due`.
            delivered: ``(alert_id, kind)`` pairs.
            now: the delivery time (``last_notified_at``, ``resolution_notified_at``).

        Returns:
            The alert ids marked. An id missing from it had its claim expire and taken over
            by another tick meanwhile: nothing was changed for it.
        """
        t = sync_alerts.c
        values: dict[str, Any] = {
            "last_notified_at": now,
            "notify_count": t.notify_count + 1,
            "claim_token": None,
            "claimed_until": None,
            "delivery_kind": None,
            "delivered_sinks": [],
            "last_delivery_error": None,
        }
        resolved = [i for i, kind in delivered if kind == "resolved"]
        others = [i for i, kind in delivered if kind != "resolved"]

        def tx(conn: sa.Connection) -> set[str]:
            if conn.dialect.name == "postgresql":
                # One commit per sent notification: do not wait for the WAL flush. A database
                # crash may then lose the last marks (those notifications are sent again: at
                # least once still holds); a crash of the tick loses nothing committed.
                conn.execute(sa.text("SET LOCAL synchronous_commit TO OFF"))
            marked: set[str] = set()
            for ids, extra in ((others, {}), (resolved, {"resolution_notified_at": now})):
                for chunk in _chunks(ids):
                    marked.update(
                        conn.execute(
                            sa.update(sync_alerts)
                            .where(t.alert_id.in_(chunk), t.claim_token == token)
                            .values(values | extra)
                            .returning(t.alert_id)
                        ).scalars()
                    )
            return marked

        return self.store.db.write(tx, "mark notifications delivered")

    def release_failed(
        self,
        token: str,
        failed: Sequence[tuple[str, str | None, Sequence[str], str | None]],
        *,
        now: dt.datetime,
    ) -> None:
        """Keep notifications due after a failed send, for the next tick.

        Args:
            token: the claim token of :meth:`claim_due`.
            failed: ``(alert_id, kind, sinks that accepted it, error)`` per notification; a
                later attempt at the same kind skips those sinks.
            now: the tick's time. The claim is held until exactly ``now``, so this tick does
                not try again, and any later tick may.
        """
        t = sync_alerts.c
        groups: dict[tuple[str | None, tuple[str, ...], str | None], list[str]] = {}
        for alert_id, kind, sinks, error in failed:
            groups.setdefault((kind, tuple(sinks), error), []).append(alert_id)

        def tx(conn: sa.Connection) -> None:
            for (kind, sinks, error), ids in groups.items():
                for chunk in _chunks(ids):
                    conn.execute(
                        sa.update(sync_alerts)
                        .where(t.alert_id.in_(chunk), t.claim_token == token)
                        .values(
                            claimed_until=now,
                            delivery_kind=kind,
                            delivered_sinks=list(sinks),
                            last_delivery_error=error,
                        )
                    )

        self.store.db.write(tx, "release failed notifications")

    def release(self, token: str, alert_ids: Sequence[str]) -> None:
        """Give claimed notifications back unsent: due again at once, for any tick.

        What an earlier attempt recorded (the kind, the sinks that accepted it, its error) is
        kept, so the next attempt still skips those sinks.

        Args:
            token: the claim token of :meth:`claim_due`.
            alert_ids: the alerts whose notifications were not sent.
        """
        t = sync_alerts.c

        def tx(conn: sa.Connection) -> None:
            for chunk in _chunks(alert_ids):
                conn.execute(
                    sa.update(sync_alerts)
                    .where(t.alert_id.in_(chunk), t.claim_token == token)
                    .values(claim_token=None, claimed_until=None)
                )

        self.store.db.write(tx, "release unsent notifications")


def _insert_new(
    conn: sa.Connection,
    insert: Callable[..., Any],
    drafts: Sequence[AlertDraft],
    now: dt.datetime,
) -> list[Alert]:
    """Insert one open alert per draft; a fingerprint open already is skipped by the database."""
    if not drafts:
        return []
    t = sync_alerts.c
    rows = [
        {
            "alert_id": str(uuid.uuid4()),
            "rule": d.rule,
            "resource": d.resource,
            "fingerprint": d.fingerprint,
            "status": "open",
            "opened_at": now,
            "last_seen_at": now,
            "notify_count": 0,
            "delivered_sinks": [],
            **d.values(),
        }
        for d in drafts
    ]
    statement = (
        insert(sync_alerts)
        # The partial index's predicate as literal SQL: a bound value cannot be used in a
        # conflict target of a multi-row insert.
        .on_conflict_do_nothing(index_elements=[t.fingerprint], index_where=_OPEN)
        .returning(*_COLUMNS)
    )
    return [_alert(row) for row in conn.execute(statement, rows).mappings()]


# Refreshing many alerts whose finding changed (a stale resource's age changes every tick) in
# one statement per chunk: the new values travel as one JSON array, joined to the table.
_REFRESH_SET = (
    "last_seen_at = :now, severity = {severity}, message = {message}, details = {details}, "
    "since = {since}, sync_id = {sync_id}, dagster_run_id = {dagster_run_id}, "
    "last_error = {last_error}"
)
_PG_REFRESH = (
    "UPDATE sync_alerts AS a SET "
    + _REFRESH_SET.format(**{name: f"v.{name}" for name in FINDING_COLUMNS})
    + " FROM jsonb_to_recordset(CAST(:rows AS jsonb)) AS v(alert_id varchar, severity varchar, "
    "message text, details jsonb, since timestamptz, sync_id varchar, dagster_run_id varchar, "
    "last_error text) WHERE a.alert_id = v.alert_id AND a.status = 'open'"
)
_SQLITE_REFRESH = (
    "UPDATE sync_alerts SET "
    + _REFRESH_SET.format(
        **{name: f"json_extract(v.value, '$.{name}')" for name in FINDING_COLUMNS}
    )
    # The unary + keeps SQLite's planner off the status index, which would make json_each the
    # inner loop (quadratic); the join then walks the JSON and looks each id up by key.
    + " FROM json_each(:rows) AS v WHERE sync_alerts.alert_id = json_extract(v.value, "
    "'$.alert_id') AND +sync_alerts.status = 'open'"
)
_REFRESH_CHUNK = 1000


def _refresh(
    conn: sa.Connection, pairs: Sequence[tuple[Alert, AlertDraft]], now: dt.datetime
) -> list[Alert]:
    """Refresh open alerts: ``last_seen_at`` always, the finding's columns where they changed."""
    t = sync_alerts.c
    changed = []
    unchanged = []
    for alert, draft in pairs:
        values = draft.values()
        if any(getattr(alert, name) != value for name, value in values.items()):
            changed.append({"alert_id": alert.alert_id, **values})
        else:
            unchanged.append(alert.alert_id)
    if changed:
        dialect = conn.dialect
        statement = sa.text(
            _PG_REFRESH if dialect.name == "postgresql" else _SQLITE_REFRESH
        ).bindparams(sa.bindparam("now", type_=UTCDateTime()))
        # Timestamps as each dialect stores them (SQLite: UTCDateTime's fixed text format).
        to_db = UTCDateTime().bind_processor(dialect) or (lambda value: value)
        for row in changed:
            row["since"] = to_db(row["since"])
        for i in range(0, len(changed), _REFRESH_CHUNK):
            rows = json.dumps(changed[i : i + _REFRESH_CHUNK], default=_isoformat)
            conn.execute(statement, {"now": now, "rows": rows})
    for chunk in _chunks(unchanged):
        conn.execute(
            sa.update(sync_alerts)
            .where(t.alert_id.in_(chunk), t.status == "open")
            .values(last_seen_at=now)
        )
    return [
        dataclasses.replace(alert, last_seen_at=now, **draft.values()) for alert, draft in pairs
    ]


def _isoformat(value: Any) -> str:
    if isinstance(value, dt.datetime):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON-serializable")


def _refresh_raced(
    conn: sa.Connection, drafts: Sequence[AlertDraft], now: dt.datetime
) -> list[Alert]:
    """Refresh alerts another tick opened after this transaction read the open ones."""
    t = sync_alerts.c
    refreshed = []
    for draft in drafts:
        row = (
            conn.execute(
                sa.update(sync_alerts)
                .where(t.fingerprint == draft.fingerprint, t.status == "open")
                .values(last_seen_at=now, **draft.values())
                .returning(*_COLUMNS)
            )
            .mappings()
            .one_or_none()
        )
        if row is not None:
            refreshed.append(_alert(row))
    return refreshed


def _resolve(
    conn: sa.Connection,
    alerts: Sequence[Alert],
    now: dt.datetime,
    resolution_message: Callable[[Alert, dt.datetime], str],
) -> list[Alert]:
    """Resolve open alerts whose condition cleared, each with its resolution message."""
    if not alerts:
        return []
    t = sync_alerts.c
    messages = {a.alert_id: resolution_message(a, now) for a in alerts}
    conn.execute(
        sa.update(sync_alerts)
        .where(t.alert_id == sa.bindparam("b_alert_id"), t.status == "open")
        .values(
            status="resolved",
            resolved_at=now,
            resolution_message=sa.bindparam("b_message"),
        ),
        [{"b_alert_id": i, "b_message": m} for i, m in messages.items()],
    )
    return [
        dataclasses.replace(
            a, status="resolved", resolved_at=now, resolution_message=messages[a.alert_id]
        )
        for a in alerts
    ]


__all__: Sequence[str] = ("Alert", "AlertDraft", "AlertStore", "AppliedFindings", "Claim")
