"""Export old history to the cold tier: Parquet files, verified, then deleted from the database.

``sync-obs archive export --to URL`` and the cold step of ``sync_retention_job`` run
:func:`export_cold`. Rows of ``sync_history_archive`` that started before the cutoff (and rows of
``operation_log`` logged before it: the operation log has no online window of its own, so it
leaves with the history it describes) are walked oldest first by keyset, one batch at a time,
never all in memory. A batch holds rows of one UTC month only and becomes one file
``table=.../year=YYYY/month=MM/{name}.parquet`` whose name is made of the batch's first row (its
time and id): a rerun of the same batch gets the same name and replaces the file.

Each batch, in this order:

1. **fetch** the rows (a read-only transaction; on PostgreSQL ``COPY (SELECT ...) TO STDOUT`` as
   CSV parsed by Arrow, so a batch costs its bytes rather than a Python object per value);
2. **upload** the Parquet bytes. Locally to a temporary sibling ``.{name}.parquet.tmp``, fsynced
   and moved into place with ``os.replace``. On object stores straight to the final key: an
   object appears only when its single PUT or its multipart upload *completes*, so the key never
   holds part of a file, and a copy-then-delete "move" would double the traffic for nothing (an
   abandoned multipart upload is invisible and left to the bucket's
   ``AbortIncompleteMultipartUpload`` lifecycle rule);
3. **verify**: read the file back from storage, check its sha256, schema, row count and the set of
   ids against the batch;
4. **record** the file in ``_manifest.json`` (rows, id range, sha256), written to a temporary name
   and moved into place;
5. **delete** the batch's rows from the database, in one transaction.

Where a kill -9 at any instant leaves each row (``K`` is the batch being exported):

- during 1: nothing changed;
- during or after 2, during 3, during 4 before the manifest's move: ``K`` is in the database
  only; a file, a temporary name or a temporary manifest may be left behind, none of them listed
  in the manifest, so readers ignore them. The rerun picks the same batch (the oldest rows left)
  under the same name and replaces them (a rerun with another batch size writes another name;
  the unlisted leftover stays ignored);
- after 4, during 5 (before the commit): ``K`` is in the database *and* in a verified, listed file
  with the same values. The rerun starts by looking up the first and last id of every listed file
  in the database; for a file whose rows are still there it re-verifies the file (sha256, ids)
  and deletes the rows in one transaction: never written twice. A listed file that fails the
  re-verification is dropped from the manifest and its rows, still in the database, are exported
  again;
- after 5: ``K`` is in its listed file only.

So nothing is ever lost, and nothing is counted twice once a run has finished; between a kill in
step 5 and the next run, a reader that merges the database with the cold tier sees the batch in
both, with the same values and ids (dedupe by id).

The cold purge (``purge_cold_after_days``) drops whole months whose every instant is past the
window: first their entries from the manifest (moved into place), then the month's folder. A kill
between the two leaves unlisted files that readers ignore and the next purge removes.

Runs hold retention's lock (PostgreSQL), so an export never races a retention run or another
export. The crash tests stop the process at the named instants of :data:`CHECKPOINTS` through
the ``SYNC_OBS_COLD_KILL_AT`` environment variable (a no-op when unset).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import os
import re
import signal
import time
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from sync_observability.clock import utcnow
from sync_observability.cold import layout
from sync_observability.errors import InvalidInputError, StorageError
from sync_observability.validation import check_aware

if TYPE_CHECKING:
    import pyarrow as pa
    import sqlalchemy as sa
    from upath import UPath

    from sync_observability.storage.store import SyncStore

DEFAULT_OLDER_THAN_DAYS = 365
DEFAULT_COLD_BATCH_SIZE = 10_000
COLD_URL_ENV = "SYNC_OBS_COLD_URL"
"""The environment variable the retention job reads a cold URL from when its config has none."""

# Test hook: ``point`` or ``point:N`` makes the process SIGKILL itself at the N-th (default 1st)
# pass through that checkpoint, so crash tests hit an exact instant without racing a timer.
KILL_AT_ENV = "SYNC_OBS_COLD_KILL_AT"
CHECKPOINTS = ("fetched", "upload", "uploaded", "verified", "manifest", "deleted", "purge")

ColdProgress = Callable[[str, int, int], None]
"""Called as ``progress(step, rows_done, rows_planned)`` when a table starts and after each file."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class ColdPolicy:
    """What an export moves to the cold tier, and where.

    Args:
        url: the cold root, a local path or an fsspec URL (``s3://bucket/prefix``, ...).
        older_than_days: rows whose time is longer ago than this leave the database.
        purge_cold_after_days: delete whole months of cold files whose every instant is longer
            ago than this (None: keep cold files for ever); at least ``older_than_days``.
        batch_size: rows per file at most (one transaction each).
        dry_run: count what would move and be purged; change nothing.
    """

    url: str
    older_than_days: int = DEFAULT_OLDER_THAN_DAYS
    purge_cold_after_days: int | None = None
    batch_size: int = DEFAULT_COLD_BATCH_SIZE
    dry_run: bool = False

    def __post_init__(self) -> None:
        layout.open_root(self.url)  # the scheme, before anything runs
        _check_positive("older_than_days", self.older_than_days)
        _check_positive("batch_size", self.batch_size)
        if self.purge_cold_after_days is not None:
            _check_positive("purge_cold_after_days", self.purge_cold_after_days)
            if self.purge_cold_after_days < self.older_than_days:
                raise InvalidInputError(
                    "purge_cold_after_days",
                    self.purge_cold_after_days,
                    f"must be at least older_than_days ({self.older_than_days})",
                )


def _check_positive(field: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidInputError(field, value, "must be a positive int")


@dataclasses.dataclass(frozen=True, kw_only=True)
class ColdTableResult:
    """One table's export: ``rows`` older than ``before`` written to ``files`` files and
    deleted from ``source`` (in a dry run, what would be). ``recovered`` counts rows of files a
    killed run had listed but not yet deleted, deleted now."""

    table: str
    source: str
    before: dt.datetime
    rows: int
    files: int
    recovered: int = 0


@dataclasses.dataclass(frozen=True, kw_only=True)
class ColdExportResult:
    """What an export did (or, in a dry run, would do); ``skipped`` when another retention run
    held the lock."""

    url: str
    skipped: bool
    dry_run: bool
    now: dt.datetime
    tables: tuple[ColdTableResult, ...]
    purged_months: tuple[str, ...]
    purged_files: int
    purged_rows: int
    duration_ms: int

    @property
    def rows(self) -> int:
        """Rows exported, all tables."""
        return sum(table.rows for table in self.tables)

    @property
    def message(self) -> str:
        """One line saying what the export did."""
        if self.skipped:
            return "another retention run holds the lock"
        # A dry run plans no files (their count depends on how the rows fall in months).
        verb = "would export" if self.dry_run else "exported"
        parts = [
            f"{verb} {_count(t.rows, 'row')} of {t.source}"
            + ("" if self.dry_run else f" in {_count(t.files, 'file')}")
            + (
                f" (and finished {_count(t.recovered, 'row')} of a killed run)"
                if t.recovered
                else ""
            )
            for t in self.tables
        ]
        text = "; ".join(parts) + f" to {self.url}"
        if self.purged_months:
            verb = "would purge" if self.dry_run else "purged"
            months = _count(len(self.purged_months), "cold month")
            text += f"; {verb} {months} ({_count(self.purged_rows, 'row')}) from {self.url}"
        return text

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (timestamps in ISO 8601)."""
        return {
            "status": "skipped" if self.skipped else "finished",
            "url": self.url,
            "dry_run": self.dry_run,
            "message": self.message,
            "now": self.now.isoformat(),
            "duration_ms": self.duration_ms,
            "rows": self.rows,
            "tables": [
                dataclasses.asdict(t) | {"before": t.before.isoformat()} for t in self.tables
            ],
            "purged_months": list(self.purged_months),
            "purged_files": self.purged_files,
            "purged_rows": self.purged_rows,
        }


def _count(number: int, noun: str) -> str:
    """``1 row``, ``2 rows``, ``10,000 rows``."""
    return f"{number:,} {noun}{'' if number == 1 else 's'}"


def export_cold(
    store: SyncStore,
    policy: ColdPolicy,
    *,
    now: dt.datetime | None = None,
    progress: ColdProgress | None = None,
) -> ColdExportResult:
    """Move rows older than the policy's cutoff to Parquet files under ``policy.url``.

    Takes retention's run lock; returns at once with ``skipped=True`` when another run holds it.
    A run killed at any instant loses nothing; the next run finishes its work (see the module
    docstring).

    Examples:
        .. code-block:: python

            from sync_observability import SyncStore
            from sync_observability.cold.export import ColdPolicy, export_cold

            store = SyncStore.from_url("postgresql://...")
            result = export_cold(store, ColdPolicy(url="s3://audit/sync-obs"))
            print(result.message)
    """
    from sync_observability.storage.retention_store import RetentionStore

    now = check_aware("now", now or utcnow())
    with RetentionStore(store).exclusive_run() as acquired:
        if not acquired:
            return ColdExportResult(
                url=layout.display_url(policy.url),
                skipped=True,
                dry_run=policy.dry_run,
                now=now,
                tables=(),
                purged_months=(),
                purged_files=0,
                purged_rows=0,
                duration_ms=0,
            )
        return export_locked(store, policy, now=now, progress=progress)


def export_locked(
    store: SyncStore,
    policy: ColdPolicy,
    *,
    now: dt.datetime,
    progress: ColdProgress | None = None,
) -> ColdExportResult:
    """:func:`export_cold` for a caller that already holds retention's lock (the retention job).

    The root is checked first (:func:`layout.check_root`: created and written to, or in a dry
    run looked at), so a destination that cannot take files fails before anything is counted or
    moved; an ``OSError`` of the filesystem later is a :class:`StorageError` naming the root.
    """
    started = time.monotonic()
    root = layout.open_root(policy.url)
    layout.check_root(root, create=not policy.dry_run)
    try:
        return _export(store, policy, root, now=now, progress=progress, started=started)
    except OSError as error:
        raise layout.filesystem_error(root, error) from error


def _export(
    store: SyncStore,
    policy: ColdPolicy,
    root: UPath,
    *,
    now: dt.datetime,
    progress: ColdProgress | None,
    started: float,
) -> ColdExportResult:
    before = now - dt.timedelta(days=policy.older_than_days)
    results = []
    exporter = _Exporter(store, root, policy.batch_size)
    for table in layout.TABLES:
        if policy.dry_run:
            rows = exporter.count(table, before)
            results.append(_table_result(table, before, rows, files=0))
            continue
        recovered = exporter.recover(table)
        rows, files = exporter.export(table, before, progress)
        results.append(_table_result(table, before, rows, files, recovered))
    months: tuple[str, ...] = ()
    purged_files = purged_rows = 0
    if policy.purge_cold_after_days is not None:
        purge_before = now - dt.timedelta(days=policy.purge_cold_after_days)
        months, purged_files, purged_rows = purge_cold(root, purge_before, dry_run=policy.dry_run)
    return ColdExportResult(
        url=layout.display_url(policy.url),
        skipped=False,
        dry_run=policy.dry_run,
        now=now,
        tables=tuple(results),
        purged_months=months,
        purged_files=purged_files,
        purged_rows=purged_rows,
        duration_ms=round((time.monotonic() - started) * 1000),
    )


def _table_result(
    table: str, before: dt.datetime, rows: int, files: int, recovered: int = 0
) -> ColdTableResult:
    return ColdTableResult(
        table=table,
        source=layout.SOURCE_TABLES[table],
        before=before,
        rows=rows,
        files=files,
        recovered=recovered,
    )


# -- the cold purge ----------------------------------------------------------------------------


def purge_cold(
    root: UPath, before: dt.datetime, *, dry_run: bool = False
) -> tuple[tuple[str, ...], int, int]:
    """Delete every whole month of cold files that ended at or before ``before``.

    The manifest loses the months' entries first, then their folders go (listed or not, so the
    leftovers of killed runs go too). Returns the months (``table/YYYY-MM``), the files listed
    for them and their rows.
    """
    entries = layout.read_manifest(root)
    doomed: set[tuple[str, int, int]] = set()
    for table in layout.TABLES:
        for year, month in _months_on_disk(root, table):
            if _month_end(year, month) <= before:
                doomed.add((table, year, month))
    doomed |= {(e.table, e.year, e.month) for e in entries if _month_end(e.year, e.month) <= before}
    gone = [e for e in entries if (e.table, e.year, e.month) in doomed]
    months = tuple(sorted(f"{table}/{year:04d}-{month:02d}" for table, year, month in doomed))
    rows = sum(e.rows for e in gone)
    if dry_run or not doomed:
        return months, len(gone), rows
    if gone:
        layout.write_manifest(root, [e for e in entries if e not in gone])
    _checkpoint("purge")
    for table, year, month in sorted(doomed):
        folder = layout.month_dir(root, table, year, month)
        if folder.exists():
            folder.fs.rm(folder.path, recursive=True)
    return months, len(gone), rows


def _months_on_disk(root: UPath, table: str) -> Iterator[tuple[int, int]]:
    base = root / f"table={table}"
    if not base.exists():
        return
    for year_dir in base.iterdir():
        year = _key(year_dir.name, "year")
        if year is None or not year_dir.is_dir():
            continue
        for month_dir in year_dir.iterdir():
            month = _key(month_dir.name, "month")
            if month is not None and 1 <= month <= 12:
                yield year, month


def _key(name: str, key: str) -> int | None:
    match = re.fullmatch(rf"{key}=(\d+)", name)
    return int(match.group(1)) if match else None


def _month_start(year: int, month: int) -> dt.datetime:
    return dt.datetime(year, month, 1, tzinfo=dt.timezone.utc)


def _month_end(year: int, month: int) -> dt.datetime:
    """The first instant after the month (UTC)."""
    if month == 12:
        return dt.datetime(year + 1, 1, 1, tzinfo=dt.timezone.utc)
    return dt.datetime(year, month + 1, 1, tzinfo=dt.timezone.utc)


# -- the export --------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Batch:
    """One batch: rows of one UTC month, in keyset order, as an Arrow table of the cold schema."""

    table: str
    data: pa.Table
    year: int
    month: int
    first_id: Any
    last_id: Any
    first_time: dt.datetime
    last_time: dt.datetime

    @property
    def rows(self) -> int:
        return self.data.num_rows

    @property
    def after(self) -> tuple[dt.datetime, Any]:
        """The keyset position of its last row."""
        return self.last_time, self.last_id

    @property
    def ids(self) -> pa.ChunkedArray:
        """The ids, in order (an Arrow column: compared with the file's without Python objects)."""
        return self.data.column(layout.ID_COLUMNS[self.table])


class _Exporter:
    """The SQL and file steps of one export run, over one store and one cold root."""

    def __init__(self, store: SyncStore, root: UPath, batch_size: int) -> None:
        import sqlalchemy as sa

        from sync_observability.storage import schema

        self.store = store
        self.root = root
        self.batch_size = batch_size
        self.tables = {
            name: schema.metadata.tables[layout.SOURCE_TABLES[name]] for name in layout.TABLES
        }
        self._sa = sa

    # -- SQL ---------------------------------------------------------------------------------

    def _old(self, table: str, before: dt.datetime) -> list[sa.ColumnElement[bool]]:
        """Rows of ``table`` that leave: older than ``before``; in the archive, not a sync that
        owns its resource's watermark (retention's purge keeps those too)."""
        from sync_observability.storage.retention_store import _owns_watermark_archived

        t = self.tables[table]
        conditions = [t.c[layout.TIME_COLUMNS[table]] < before]
        if table == layout.HISTORY_TABLE:
            conditions.append(~_owns_watermark_archived(t))
        return conditions

    def count(self, table: str, before: dt.datetime) -> int:
        """How many rows of ``table`` an export would move now."""
        sa = self._sa
        t = self.tables[table]
        query = sa.select(sa.func.count()).select_from(t).where(*self._old(table, before))
        return self.store.db.read(lambda conn: conn.execute(query).scalar_one(), "count cold rows")

    def fetch(
        self, table: str, before: dt.datetime, after: tuple[Any, ...] | None
    ) -> _Batch | None:
        """The next batch after keyset position ``after``, cut where it leaves its first month.

        ``sync_history_archive`` walks ``(sync_start_time, sync_id)`` (its index); the operation
        log walks ``event_id`` (its primary key; it has no B-tree on time alone, and ids follow
        logging order) with the age as a filter.
        """
        sa = self._sa
        t = self.tables[table]
        time_col, id_col = t.c[layout.TIME_COLUMNS[table]], t.c[layout.ID_COLUMNS[table]]
        postgres = self.store.dialect == "postgresql"
        columns = _copy_columns(t) if postgres else _select_columns(t)
        query = sa.select(*columns).where(*self._old(table, before))
        if table == layout.HISTORY_TABLE:
            if after is not None:
                query = query.where(
                    time_col >= after[0], sa.tuple_(time_col, id_col) > sa.tuple_(*after)
                )
            # The next row's month bounds the batch, so that no batch reads rows past the
            # month's end only to drop them (one index probe).
            probe = query.with_only_columns(time_col).order_by(time_col, id_col).limit(1)
            following = self.store.db.read(
                lambda conn: conn.execute(probe).scalar(), "find the next cold month"
            )
            if following is None:
                return None
            following = following.astimezone(dt.timezone.utc)
            query = query.where(time_col < _month_end(following.year, following.month))
            query = query.order_by(time_col, id_col)
        else:
            if after is not None:
                query = query.where(id_col > after[1])
            query = query.order_by(id_col)
        query = query.limit(self.batch_size)
        read = _read_copy if postgres else _read_rows
        data = self.store.db.read(lambda conn: read(conn, query, table), "read cold batch")
        if data is None or data.num_rows == 0:
            return None
        return _one_month(table, data)

    def still_there(self, table: str, ids: Sequence[Any]) -> set[Any]:
        """Which of ``ids`` are rows of ``table`` in the database."""
        sa = self._sa
        t = self.tables[table]
        id_col = t.c[layout.ID_COLUMNS[table]]
        found: set[Any] = set()
        for match in self._in(table, ids):
            query = sa.select(id_col).where(match)
            found |= self.store.db.read(
                lambda conn, q=query: set(conn.execute(q).scalars()), "look up cold ids"
            )
        return found

    def _in(self, table: str, ids: Sequence[Any]) -> Iterator[sa.ColumnElement[bool]]:
        """``id IN ids`` as few conditions: one ``= ANY(array)`` on PostgreSQL (one bound
        value), chunks of literals under SQLite's bound-variable limit."""
        sa = self._sa
        id_col = self.tables[table].c[layout.ID_COLUMNS[table]]
        if self.store.dialect == "postgresql":
            from sqlalchemy.dialects import postgresql

            kind = sa.BigInteger() if table == layout.OPERATION_LOG_TABLE else sa.Text()
            yield id_col == sa.any_(sa.bindparam("ids", list(ids), postgresql.ARRAY(kind)))
            return
        for chunk in _chunks(list(ids), 5_000):
            yield id_col.in_(chunk)

    def delete(self, table: str, ids: Sequence[Any]) -> int:
        """Delete the rows of ``ids`` in one transaction; how many were deleted."""
        sa = self._sa
        t = self.tables[table]

        def tx(conn: sa.Connection) -> int:
            return sum(
                conn.execute(sa.delete(t).where(match)).rowcount for match in self._in(table, ids)
            )

        return self.store.db.write(tx, f"delete exported rows of {t.name}")

    def delete_batch(self, batch: _Batch) -> None:
        """Delete exactly the batch's (verified) ids, in one transaction.

        The ids come with their keyset range, which lets the database walk one index range
        and test each row's id against the set (hashed on PostgreSQL) instead of descending the
        primary key once per id. Should the count differ from the batch's (another process
        deleted some), the transaction rolls back and the run stops with the rows still in the
        database and in a listed file: the next run finishes them.
        """
        sa = self._sa
        table = batch.table
        t = self.tables[table]
        time_col, id_col = t.c[layout.TIME_COLUMNS[table]], t.c[layout.ID_COLUMNS[table]]
        if table == layout.HISTORY_TABLE:
            span = [time_col >= batch.first_time, time_col <= batch.last_time]
        else:
            span = [id_col >= batch.first_id, id_col <= batch.last_id]
        ids = batch.ids.to_pylist()

        def tx(conn: sa.Connection) -> None:
            deleted = sum(
                conn.execute(sa.delete(t).where(*span, match)).rowcount
                for match in self._in(table, ids)
            )
            if deleted != batch.rows:
                raise StorageError(
                    f"deleting the {batch.rows} exported rows of {t.name} from "
                    f"{batch.first_id!r} to {batch.last_id!r} found {deleted}; rolled back "
                    "(did another process delete some?)"
                )

        self.store.db.write(tx, f"delete exported rows of {t.name}")

    # -- files -------------------------------------------------------------------------------

    def export(
        self, table: str, before: dt.datetime, progress: ColdProgress | None
    ) -> tuple[int, int]:
        """Export every old row of ``table``, batch by batch; (rows, files)."""
        planned = self.count(table, before) if progress is not None else 0
        step = f"export {layout.SOURCE_TABLES[table]}"
        if progress is not None:
            progress(step, 0, planned)
        entries = layout.read_manifest(self.root)
        rows = files = 0
        after: tuple[Any, ...] | None = None
        while (batch := self.fetch(table, before, after)) is not None:
            _checkpoint("fetched")
            entry = self.write(batch)
            entries = [e for e in entries if e.path != entry.path] + [entry]
            layout.write_manifest(self.root, entries)
            _checkpoint("manifest")
            self.delete_batch(batch)
            _checkpoint("deleted")
            rows += batch.rows
            files += 1
            after = batch.after
            del batch
            _release_memory()
            if progress is not None:
                progress(step, rows, planned)
        return rows, files

    def write(self, batch: _Batch) -> layout.ManifestEntry:
        """Upload the batch as one Parquet file, read it back and verify it; its manifest entry."""
        body = _parquet_bytes(batch.data)
        first_id, last_id = batch.first_id, batch.last_id
        first_time = batch.first_time
        name = f"{first_time:%Y%m%dT%H%M%S%fZ}-{_safe(first_id)}"
        relative = layout.relative_path(batch.table, batch.year, batch.month, name)
        target = self.root / relative
        _upload(target, body)
        _checkpoint("uploaded")
        digest = hashlib.sha256(body).hexdigest()
        _verify(target, batch.table, digest, batch.ids)
        _checkpoint("verified")
        return layout.ManifestEntry(
            path=relative,
            table=batch.table,
            year=batch.year,
            month=batch.month,
            rows=batch.rows,
            first_id=first_id,
            last_id=last_id,
            sha256=digest,
            written_at=layout.utc_iso(utcnow()),
        )

    def recover(self, table: str) -> int:
        """Finish what a killed run left: listed files whose rows are still in the database.

        Such a file is re-verified (sha256, ids) and its rows deleted; one that fails is dropped
        from the manifest (its rows, still in the database, are exported again). Rows deleted.
        """
        entries = layout.read_manifest(self.root)
        mine = [e for e in entries if e.table == table]
        if not mine:
            return 0
        probes = {e.first_id for e in mine} | {e.last_id for e in mine}
        present = self.still_there(table, [p for p in probes if p is not None])
        pending = [e for e in mine if e.first_id in present or e.last_id in present]
        recovered = 0
        for entry in pending:
            try:
                ids = _verify(self.root / entry.path, table, entry.sha256, None, rows=entry.rows)
            except StorageError:
                entries = [e for e in entries if e.path != entry.path]
                layout.write_manifest(self.root, entries)
                continue
            recovered += self.delete(table, ids)
        return recovered


def _chunks(items: list[Any], size: int) -> Iterator[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _safe(key: Any) -> str:
    """A file-name-safe form of a row id: itself when plain, else a digest of it."""
    text = str(key)
    if re.fullmatch(r"[A-Za-z0-9_-]{1,64}", text):
        return text
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def _parquet_bytes(data: pa.Table) -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    sink = pa.BufferOutputStream()
    pq.write_table(data, sink, compression="zstd")
    return sink.getvalue().to_pybytes()


# -- reading a batch ---------------------------------------------------------------------------


def _select_columns(t: sa.Table) -> list[sa.ColumnElement[Any]]:
    """The columns as the package reads them, JSON as its text (SQLite)."""
    import sqlalchemy as sa

    return [
        sa.cast(c, sa.Text).label(c.name) if c.name in layout.JSON_COLUMNS else c for c in t.columns
    ]


def _copy_columns(t: sa.Table) -> list[sa.ColumnElement[Any]]:
    """The columns in a form ``COPY ... (FORMAT csv)`` writes exactly and Arrow's CSV reader
    parses without Python objects (PostgreSQL): JSON as its text (jsonb's canonical text),
    timestamps as integer microseconds since the epoch, exact whatever the session time zone."""
    import sqlalchemy as sa

    from sync_observability.storage.schema import UTCDateTime

    columns: list[sa.ColumnElement[Any]] = []
    for c in t.columns:
        if c.name in layout.JSON_COLUMNS:
            columns.append(sa.cast(c, sa.Text).label(c.name))
        elif isinstance(c.type, UTCDateTime):
            seconds = sa.cast(sa.extract("epoch", sa.func.date_trunc("second", c)), sa.BigInteger)
            micros = sa.cast(sa.extract("microseconds", c), sa.BigInteger) % 1_000_000
            columns.append((seconds * 1_000_000 + micros).label(c.name))
        else:
            columns.append(c)
    return columns


def _read_rows(conn: sa.Connection, query: sa.Select[Any], table: str) -> pa.Table | None:
    """The batch through the driver's rows (SQLite), as an Arrow table."""
    import pyarrow as pa

    rows = conn.execute(query).tuples().all()
    if not rows:
        return None
    schema = layout.arrow_schema(table)
    columns = zip(*rows, strict=True)
    return pa.Table.from_arrays(
        [pa.array(values, type=field.type) for values, field in zip(columns, schema, strict=True)],
        schema=schema,
    )


def _read_copy(conn: sa.Connection, query: sa.Select[Any], table: str) -> pa.Table | None:
    """The batch through ``COPY (query) TO STDOUT (FORMAT csv)`` parsed by Arrow (PostgreSQL):
    no Python object per value, so a batch costs its bytes, not its rows' objects."""
    import io

    import pyarrow as pa
    import pyarrow.compute as pc
    from pyarrow import csv

    # The owner subquery inflates the plan's cost estimate, and JIT-compiling it took 0.4 s of
    # a 0.5 s batch (EXPLAIN ANALYZE, 20,000 rows): off for this transaction.
    conn.exec_driver_sql("SET LOCAL jit = off")
    compiled = query.compile(dialect=conn.dialect)
    cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
    try:
        sql = cursor.mogrify(compiled.string, compiled.params).decode()
        buffer = io.BytesIO()
        # Every non-NULL value quoted, so an empty string ("") and NULL (nothing) differ.
        cursor.copy_expert(f"COPY ({sql}) TO STDOUT WITH (FORMAT csv, FORCE_QUOTE *)", buffer)
    finally:
        cursor.close()
    if buffer.tell() == 0:
        return None
    schema = layout.arrow_schema(table)
    stamps = {f.name for f in schema if pa.types.is_timestamp(f.type)}
    types = {f.name: pa.int64() if f.name in stamps else f.type for f in schema}
    data = csv.read_csv(
        pa.BufferReader(pa.py_buffer(buffer.getbuffer())),
        read_options=csv.ReadOptions(
            # One thread, small blocks: the batch is small, and every parser thread's
            # allocator arena would stay in the process's memory (peak RSS, bench_cold_export).
            column_names=schema.names,
            block_size=1 << 22,
            use_threads=False,
        ),
        parse_options=csv.ParseOptions(newlines_in_values=True),
        convert_options=csv.ConvertOptions(
            column_types=types,
            null_values=[""],
            strings_can_be_null=True,
            quoted_strings_can_be_null=False,
            true_values=["t"],
            false_values=["f"],
        ),
    )
    data = pa.Table.from_arrays(
        [
            pc.cast(data.column(f.name), f.type) if f.name in stamps else data.column(f.name)
            for f in schema
        ],
        schema=schema,
    )
    return data


def _one_month(table: str, data: pa.Table) -> _Batch:
    """The batch's rows up to the first that is not in the first row's UTC month."""
    import pyarrow as pa
    import pyarrow.compute as pc

    times = data.column(layout.TIME_COLUMNS[table])
    first = times[0].as_py().astimezone(dt.timezone.utc)
    start = pa.scalar(_month_start(first.year, first.month), times.type)
    end = pa.scalar(_month_end(first.year, first.month), times.type)
    outside = pc.or_(pc.less(times, start), pc.greater_equal(times, end))
    cut = pc.index(outside, True).as_py()
    if cut >= 0:
        data = data.slice(0, cut)
        times = times.slice(0, cut)
    return _Batch(
        table=table,
        data=data,
        year=first.year,
        month=first.month,
        first_id=data.column(layout.ID_COLUMNS[table])[0].as_py(),
        last_id=data.column(layout.ID_COLUMNS[table])[-1].as_py(),
        first_time=first,
        last_time=times[-1].as_py().astimezone(dt.timezone.utc),
    )


def _is_local(path: UPath) -> bool:
    return path.protocol in ("", "file", "local")


def _upload(target: UPath, body: bytes) -> None:
    """Put ``body`` at ``target`` so that the name never holds part of it (module docstring)."""
    half = len(body) // 2
    if _is_local(target):
        target.parent.mkdir(parents=True, exist_ok=True)
        temporary = target.with_name(f".{target.name}.tmp")
        with open(temporary.path, "wb") as out:
            out.write(body[:half])
            _checkpoint("upload")
            out.write(body[half:])
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary.path, target.path)
        return
    with target.fs.open(target.path, "wb") as out:
        out.write(body[:half])
        _checkpoint("upload")
        out.write(body[half:])


def _verify(
    target: UPath,
    table: str,
    sha256: str,
    ids: pa.ChunkedArray | None,
    *,
    rows: int | None = None,
) -> list[Any]:
    """Read ``target`` back and check its digest, schema and rows: the same ``ids`` in the same
    order, or (``ids`` None, a file listed earlier) ``rows`` distinct ids. The ids it holds.
    :class:`StorageError` on any difference."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    where = layout.display_url(str(target))
    try:
        body = target.read_bytes()
    except FileNotFoundError as error:
        raise StorageError(f"cold file {where} is missing") from error
    if hashlib.sha256(body).hexdigest() != sha256:
        raise StorageError(f"cold file {where}: sha256 differs from what was written")
    try:
        parquet = pq.ParquetFile(pa.BufferReader(body))
        if not parquet.schema_arrow.equals(layout.arrow_schema(table)):
            raise StorageError(f"cold file {where}: schema differs from {table}'s")
        found = parquet.read(columns=[layout.ID_COLUMNS[table]]).column(0)
    except pa.ArrowException as error:
        raise StorageError(f"cold file {where} does not read back: {error}") from error
    if ids is not None:
        if len(found) != len(ids) or not found.equals(ids):
            raise StorageError(
                f"cold file {where}: the {len(found)} ids read back differ from the "
                f"{len(ids)} written"
            )
        return []
    if len(found) != rows or pc.count_distinct(found).as_py() != rows:
        raise StorageError(f"cold file {where}: {len(found)} rows read back, {rows} listed")
    return found.to_pylist()


def _release_memory() -> None:
    """Hand the Arrow allocator's freed pages back between batches, which keeps the peak RSS
    flat over a long export (bench_cold_export)."""
    import pyarrow as pa

    pa.default_memory_pool().release_unused()


def _checkpoint(name: str) -> None:
    """The crash tests' hook (``SYNC_OBS_COLD_KILL_AT=name[:N]``); a no-op otherwise."""
    wanted = os.environ.get(KILL_AT_ENV)
    if not wanted:
        return
    point, _, nth = wanted.partition(":")
    if point != name:
        return
    _PASSES[name] = _PASSES.get(name, 0) + 1
    if _PASSES[name] >= int(nth or 1):
        os.kill(os.getpid(), signal.SIGKILL)


_PASSES: dict[str, int] = {}


__all__: Sequence[str] = (
    "COLD_URL_ENV",
    "DEFAULT_COLD_BATCH_SIZE",
    "DEFAULT_OLDER_THAN_DAYS",
    "ColdExportResult",
    "ColdPolicy",
    "ColdProgress",
    "ColdTableResult",
    "export_cold",
    "export_locked",
    "purge_cold",
)
