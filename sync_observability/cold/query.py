"""Reading the cold tier back: DuckDB over the files the manifest lists, and no other file.

A :class:`ColdSource` is a cold root and its manifest. :func:`connect` opens an in-memory DuckDB
connection with one view per cold table, ``sync_history_cold`` and ``operation_log_cold``, over
exactly the manifest's files (a table without files is an empty view with the right columns), so
a temporary name or a file a killed export left unverified is never read. Local files are read
by DuckDB itself; any other root (``s3://``, ``gs://``, ``az://``) through its fsspec filesystem
registered on the connection, so S3 goes through s3fs with the usual environment's credentials
and endpoint, and DuckDB needs no extension download.

:func:`run_query` is ``sync-obs archive query``; :func:`read_history` serves
:func:`sync_observability.reports.cold_history` and ``sync-obs history --include-cold``. Each
says which files it read. DuckDB and pyarrow are imported by the functions that use them.

Examples:
    .. code-block:: python

        from sync_observability.cold.query import run_query

        result = run_query("s3://audit/sync-obs", "SELECT count(*) FROM sync_history_cold")
        print(result.rows, result.files)
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import os
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from sync_observability.cold import layout

# One definition, the export's (the retention job reads it too).
from sync_observability.cold.export import COLD_URL_ENV
from sync_observability.errors import (
    ConfigurationError,
    InvalidInputError,
    StorageError,
    SyncObservabilityError,
)
from sync_observability.validation import check_aware

if TYPE_CHECKING:
    import duckdb
    import pyarrow as pa
    from upath import UPath

VIEWS: dict[str, str] = {
    layout.HISTORY_TABLE: "sync_history_cold",
    layout.OPERATION_LOG_TABLE: "operation_log_cold",
}
"""Cold table -> the DuckDB view over its files."""


def cold_url(url: str | None) -> str:
    """``url``, else ``$SYNC_OBS_COLD_URL``; :class:`ConfigurationError` when neither is set."""
    chosen = url if url is not None and str(url).strip() else os.environ.get(COLD_URL_ENV, "")
    if not chosen.strip():
        raise ConfigurationError(
            f"no cold archive URL: give one (a local path or s3://bucket/prefix) or set "
            f"{COLD_URL_ENV}"
        )
    return chosen


@dataclasses.dataclass(frozen=True)
class ColdSource:
    """A cold root and the files its manifest lists (the only files that are cold data)."""

    root: UPath
    entries: tuple[layout.ManifestEntry, ...]
    has_manifest: bool

    @classmethod
    def open(cls, url: str | None = None) -> ColdSource:
        """Open the cold root at ``url`` (default ``$SYNC_OBS_COLD_URL``) and read its manifest.

        A local root must be an existing folder (:class:`StorageError` naming it otherwise: a
        mistyped path is not an empty archive); an existing folder without a manifest is a cold
        archive with no data yet.
        """
        root = layout.open_root(cold_url(url))
        if layout.is_local(root):
            shown = layout.display_url(str(root))
            if not root.exists():
                raise StorageError(f"cold archive {shown} does not exist (no such folder)")
            if not root.is_dir():
                raise StorageError(f"cold archive {shown} is not a folder")
        try:
            has_manifest = (root / layout.MANIFEST_NAME).exists()
            entries = tuple(layout.read_manifest(root)) if has_manifest else ()
        except SyncObservabilityError:
            raise
        except Exception as error:  # whatever the filesystem raises: OSError, botocore's, ...
            # The first request to the root: no credentials, no bucket, no network end here.
            raise StorageError(
                f"cannot read the cold manifest under {layout.display_url(str(root))}: "
                f"{type(error).__name__}: {error}"
            ) from error
        return cls(root=root, entries=entries, has_manifest=has_manifest)

    @property
    def url(self) -> str:
        """The root's URL, safe to print (no userinfo or query)."""
        return layout.display_url(str(self.root))

    @property
    def local(self) -> bool:
        """Whether the root is a local folder (read by DuckDB directly)."""
        return layout.is_local(self.root)

    def files(
        self,
        table: str,
        *,
        since: dt.datetime | None = None,
        until: dt.datetime | None = None,
    ) -> list[layout.ManifestEntry]:
        """The manifest's files of ``table`` whose UTC month meets ``[since, until)``, in
        manifest order."""
        layout.check_table(table)
        return [
            entry
            for entry in self.entries
            if entry.table == table and _month_meets(entry.year, entry.month, since, until)
        ]

    def location(self, entry: layout.ManifestEntry) -> str:
        """Where DuckDB reads ``entry``: a local path, or the full URL of a remote object."""
        path = self.root / entry.path
        return path.path if self.local else str(path)

    def shown(self, entry: layout.ManifestEntry) -> str:
        """``entry``'s full location, safe to print."""
        return layout.display_url(str(self.root / entry.path))


def _month_meets(
    year: int, month: int, since: dt.datetime | None, until: dt.datetime | None
) -> bool:
    start = dt.datetime(year, month, 1, tzinfo=dt.timezone.utc)
    end = dt.datetime(year + month // 12, month % 12 + 1, 1, tzinfo=dt.timezone.utc)
    return (since is None or end > since) and (until is None or start < until)


@contextmanager
def connect(
    source: ColdSource,
    files: dict[str, Sequence[layout.ManifestEntry]] | None = None,
) -> Iterator[duckdb.DuckDBPyConnection]:
    """An in-memory DuckDB connection with the cold views, closed afterwards.

    Args:
        source: the cold root.
        files: the files each table's view covers (default: all of the table's manifest files).
    """
    import duckdb

    # No extension is ever downloaded (the network may be closed); S3 goes through fsspec.
    conn = duckdb.connect(":memory:", config={"autoinstall_known_extensions": False})
    try:
        conn.execute("SET TimeZone = 'UTC'")
        chosen_files = {
            table: source.files(table) if files is None else list(files.get(table, ()))
            for table in VIEWS
        }
        if not source.local:
            _list_ahead(source, [table for table, chosen in chosen_files.items() if chosen])
            conn.register_filesystem(source.root.fs)
        for table, view in VIEWS.items():
            chosen = chosen_files[table]
            try:
                _create_view(conn, source, table, view, chosen)
            except duckdb.Error as error:  # a listed file is gone or unreadable
                # The view's own SQL (LINE 1: ...) says nothing the file name does not.
                message = _one_line(str(error).split("\nLINE ")[0])
                raise StorageError(
                    f"cannot read the cold files under {source.url}: {message}"
                ) from error
        yield conn
    finally:
        conn.close()


def _list_ahead(source: ColdSource, tables: Sequence[str]) -> None:
    """List each table's folder once, so that the filesystem answers DuckDB's size and date
    questions about every file from its listing cache: on S3 one LIST per 1,000 files instead of
    about 14 HEAD requests per file (24 files: 57 requests instead of 391)."""
    fs = source.root.fs
    for table in tables:
        prefix = (source.root / f"table={table}").path
        # Never an older listing: a rerun of an export replaces a file under the same name.
        fs.invalidate_cache(prefix)
        # Only a speed-up: without the right to list, DuckDB asks about each file itself.
        with contextlib.suppress(Exception):
            fs.find(prefix)


def _create_view(
    conn: duckdb.DuckDBPyConnection,
    source: ColdSource,
    table: str,
    view: str,
    entries: Sequence[layout.ManifestEntry],
) -> None:
    import pyarrow as pa

    schema = layout.arrow_schema(table)
    columns = ", ".join(_quote(name) for name in schema.names)
    if not entries:
        # from_batches, not schema.empty_table(): that one imports pandas (0.4 s of a CLI run).
        conn.from_arrow(pa.Table.from_batches([], schema=schema)).create_view(view)
        return
    # A view in SQL text, not a relation's: DuckDB's get_table_names cannot re-read the latter.
    # Hive keys live in the path only; union_by_name reads a file written before a column was
    # added (NULL there) instead of refusing it.
    paths = ", ".join(_literal(source.location(entry)) for entry in entries)
    conn.execute(
        f"CREATE VIEW {view} AS SELECT {columns} FROM read_parquet([{paths}], "
        "hive_partitioning = false, union_by_name = true)"
    )


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


@dataclasses.dataclass(frozen=True)
class QueryResult:
    """What :func:`run_query` returns: the result's columns and rows, and the files read."""

    columns: list[str]
    rows: list[tuple[Any, ...]]
    url: str
    """The cold root, safe to print."""
    files: list[str]
    """The files of the views the query reads (full locations, safe to print)."""
    has_manifest: bool


def run_query(url: str | None, sql: str) -> QueryResult:
    """Run ``sql`` in DuckDB over the cold views of the root at ``url``.

    Args:
        url: the cold root (default ``$SYNC_OBS_COLD_URL``).
        sql: any DuckDB SQL; the views are ``sync_history_cold`` and ``operation_log_cold``.

    Raises:
        InvalidInputError: the SQL does not parse, names an unknown table or column, or fails
            on a value (DuckDB's message, on one line).
        StorageError: a cold file could not be read.
    """
    import duckdb

    if not isinstance(sql, str) or not sql.strip():
        raise InvalidInputError(
            "sql", sql, "give a SQL query, e.g. SELECT * FROM sync_history_cold"
        )
    source = ColdSource.open(url)
    with connect(source) as conn:
        try:
            cursor = conn.execute(sql)
            columns = [d[0] for d in cursor.description] if cursor.description else []
            rows = cursor.fetchall() if cursor.description else []
        except duckdb.Error as error:
            raise _translate(error, sql, source) from error
    referenced = _views_named(sql)
    used = [
        source.shown(entry)
        for table, view in VIEWS.items()
        if view in referenced
        for entry in source.files(table)
    ]
    return QueryResult(columns, rows, source.url, used, source.has_manifest)


def _views_named(sql: str) -> set[str]:
    """The cold views ``sql`` reads, by DuckDB's parser (comments and strings do not count)."""
    import duckdb

    # A bare connection: with the views in it, get_table_names binds them and fails on their
    # file lists. It refuses several statements and some joins it cannot bind without the
    # tables; then a view named anywhere in the text counts as read.
    try:
        with duckdb.connect(":memory:") as bare:
            names = {name.lower() for name in bare.get_table_names(sql)}
    except duckdb.Error:
        names = {word.lower() for word in re.findall(r"\w+", sql)}
    return names & set(VIEWS.values())


def read_history(
    source: ColdSource,
    *,
    resource: str | None = None,
    status: str | None = None,
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
    limit: int | None = None,
) -> tuple[pa.Table, list[str]]:
    """Cold ``sync_history`` rows, newest first (start time, then sync id), as an Arrow table
    with the contract's schema, and the files read (only months meeting ``[since, until)``).

    JSON columns are left as text here; the callers decode them.
    """
    import duckdb

    since = None if since is None else check_aware("since", since)
    until = None if until is None else check_aware("until", until)
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise InvalidInputError("limit", limit, "must be a whole number from 1, or None")
    table = layout.HISTORY_TABLE
    entries = source.files(table, since=since, until=until)
    where, params = [], []
    for column, op, value in (
        ("resource", "=", resource),
        ("sync_status", "=", status),
        ("sync_start_time", ">=", since),
        ("sync_start_time", "<", until),
    ):
        if value is not None:
            where.append(f"{column} {op} ?")
            params.append(value)
    sql = f"SELECT * FROM {VIEWS[table]}"
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += " ORDER BY sync_start_time DESC, sync_id DESC"
    if limit is not None:
        sql += f" LIMIT {limit}"
    with connect(source, {table: entries}) as conn:
        try:
            result = conn.sql(sql, params=params).to_arrow_table()
        except duckdb.Error as error:
            raise _translate(error, sql, source) from error
    # DuckDB hands timestamps back in the connection's zone; the contract's type is exact UTC.
    return result.cast(layout.arrow_schema(table)), [source.shown(e) for e in entries]


def _translate(error: Exception, sql: str, source: ColdSource) -> Exception:
    """DuckDB's error as the package's, on one line: a file that cannot be read is storage,
    anything else is the SQL's."""
    import duckdb

    message = _one_line(str(error))
    if isinstance(error, duckdb.IOException | duckdb.HTTPException):
        return StorageError(f"cannot read the cold files under {source.url}: {message}")
    return InvalidInputError("sql", sql, message)


def _one_line(message: str) -> str:
    # DuckDB draws a caret under the position on its own line: keep the words, drop the art.
    return " ".join(re.sub(r"^\s*\^+\s*$", "", message, flags=re.MULTILINE).split())


__all__: Sequence[str] = (
    "VIEWS",
    "ColdSource",
    "QueryResult",
    "cold_url",
    "connect",
    "read_history",
    "run_query",
)
