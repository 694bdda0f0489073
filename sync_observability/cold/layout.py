"""The cold tier's file layout, shared by the writer (:mod:`.export`) and the reader
(:mod:`.query`).

A cold root is a local path or any fsspec URL (``s3://bucket/prefix``, ``gs://...``,
``az://...``), opened as a :class:`upath.UPath`; S3 goes through s3fs with credentials and the
endpoint from the usual environment (``AWS_ACCESS_KEY_ID``, ``AWS_ENDPOINT_URL``, ...). Under it:

- ``table={table}/year={YYYY}/month={MM}/{name}.parquet``: Parquet (zstd), ``table`` one of
  :data:`TABLES`; the month is the UTC month of ``sync_start_time`` / ``event_time``. Columns
  are exactly the database table's, in its order (:func:`arrow_schema`); the partition keys live
  in the path only.
- ``_manifest.json``: ``{"format": 1, "files": [...]}``, one entry per verified file
  (:class:`ManifestEntry`). **Only files listed there are cold data**; anything else under the
  root (a temporary name, a file a killed run left unverified) is ignored by readers.

JSON columns (``errors``, ``cursor_before``, ``cursor_after``, ``metadata``, ``details``) are
UTF-8 strings holding the JSON text: any engine reads them (DuckDB through ``json_extract``), and
a free-form document needs no Arrow struct schema that would differ from file to file.

Examples:
    .. code-block:: python

        from sync_observability.cold import layout

        root = layout.open_root("s3://audit/sync-obs")
        for entry in layout.read_manifest(root):
            print(entry.path, entry.rows)
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import uuid
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from sync_observability.errors import ConfigurationError, InvalidInputError, StorageError

if TYPE_CHECKING:
    import pyarrow as pa
    from upath import UPath

HISTORY_TABLE = "sync_history"
OPERATION_LOG_TABLE = "operation_log"
TABLES: tuple[str, ...] = (HISTORY_TABLE, OPERATION_LOG_TABLE)
"""The cold tables; ``sync_history`` holds the rows of ``sync_history_archive``."""

SOURCE_TABLES: dict[str, str] = {
    HISTORY_TABLE: "sync_history_archive",
    OPERATION_LOG_TABLE: "operation_log",
}
"""The database table each cold table's rows come from."""

TIME_COLUMNS: dict[str, str] = {HISTORY_TABLE: "sync_start_time", OPERATION_LOG_TABLE: "event_time"}
"""The column whose UTC month places a row."""

ID_COLUMNS: dict[str, str] = {HISTORY_TABLE: "sync_id", OPERATION_LOG_TABLE: "event_id"}
"""The column that identifies a row (``first_id``/``last_id`` in the manifest)."""

JSON_COLUMNS = frozenset({"errors", "cursor_before", "cursor_after", "metadata", "details"})
"""Columns stored as UTF-8 strings holding JSON text."""

MANIFEST_NAME = "_manifest.json"
MANIFEST_FORMAT = 1

# Schemes fsspec knows that make sense as a cold root; "file" and a bare path are local.
_SCHEMES = frozenset({"", "file", "s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "memory"})


def display_url(url: str) -> str:
    """``url`` without userinfo, query or fragment, safe to print or log."""
    parts = urlsplit(str(url))
    if not parts.scheme or len(parts.scheme) == 1:  # a path (or a Windows drive letter)
        return str(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def open_root(url: str | UPath) -> UPath:
    """The cold root at ``url`` (a local path or an fsspec URL), as a :class:`upath.UPath`.

    Raises:
        InvalidInputError: the URL is empty or its scheme is not a filesystem the cold tier
            supports (a path, ``file``, ``s3``, ``gs``, ``az``, ``abfs``, ``memory``).
    """
    from upath import UPath

    if isinstance(url, UPath):
        return url
    text = str(url).strip() if url is not None else ""
    if not text:
        raise InvalidInputError("url", url, "give a local path or a URL such as s3://bucket/prefix")
    scheme = urlsplit(text).scheme.lower()
    if len(scheme) == 1:  # C:\...
        scheme = ""
    if scheme not in _SCHEMES:
        raise InvalidInputError(
            "url",
            display_url(text),
            f"unsupported scheme {scheme!r}; use a local path or one of "
            "s3://, gs://, az://, abfs://, file://",
        )
    if scheme in ("", "file"):
        path = UPath(text).expanduser() if scheme == "" else UPath(text)
        return path if scheme == "file" else UPath(path.absolute())
    try:
        return UPath(text)
    except ImportError as error:  # s3fs, gcsfs, adlfs: the filesystem's library is missing
        raise _missing_library(display_url(text), error) from error


def _missing_library(shown: str, error: ImportError) -> ConfigurationError:
    from sync_observability.cold import COLD_EXTRA_INSTALL

    return ConfigurationError(
        f"the cold archive {shown} needs its filesystem's library ({error}): {COLD_EXTRA_INSTALL}"
    )


_LOCAL_PROTOCOLS = ("", "file", "local")


def is_local(root: UPath) -> bool:
    """Whether ``root`` is a folder on this machine."""
    return root.protocol in _LOCAL_PROTOCOLS


def check_root(root: UPath, *, create: bool) -> None:
    """Fail early, with one :class:`StorageError` naming the root, when ``root`` cannot take
    cold files.

    Locally the root must be a folder that exists or can be created, and be writable: with
    ``create`` it is created and a probe file written and removed; without (a dry run), its
    nearest existing ancestor must be a writable folder. On an object store the filesystem is
    opened and the root looked up (no credentials, no bucket or no network end here).
    """
    import os
    from pathlib import Path

    shown = display_url(str(root))
    try:
        if not is_local(root):
            root.exists()
            return
        path = Path(root.path)
        if path.exists() and not path.is_dir():
            raise StorageError(f"cold archive {shown} is not a folder")
        if create:
            path.mkdir(parents=True, exist_ok=True)
            probe = path / f".write-probe-{uuid.uuid4().hex}.tmp"
            probe.write_bytes(b"")
            probe.unlink()
            return
        ancestor = path
        while not ancestor.exists() and ancestor != ancestor.parent:
            ancestor = ancestor.parent
        if not ancestor.is_dir():
            raise StorageError(f"cold archive {shown}: {ancestor} is not a folder")
        if not os.access(ancestor, os.W_OK | os.X_OK):
            raise StorageError(f"cold archive {shown}: {ancestor} is not writable")
    except StorageError:
        raise
    except ImportError as error:
        raise _missing_library(shown, error) from error
    except Exception as error:  # OSError, or what an fsspec filesystem raises instead
        raise filesystem_error(root, error) from error


def filesystem_error(root: UPath | str, error: BaseException) -> StorageError:
    """One line naming the cold root (display form) and what the filesystem said."""
    reason = getattr(error, "strerror", None) if isinstance(error, OSError) else None
    detail = f"{reason}: {error.filename}" if reason and getattr(error, "filename", None) else None
    text = " ".join((detail or str(error) or type(error).__name__).split())
    return StorageError(f"cannot use cold archive {display_url(str(root))}: {text}")


def relative_path(table: str, year: int, month: int, name: str) -> str:
    """``table={table}/year={YYYY}/month={MM}/{name}.parquet`` (relative to the root)."""
    check_table(table)
    if not 1 <= month <= 12:
        raise InvalidInputError("month", month, "must be 1..12")
    return f"table={table}/year={year:04d}/month={month:02d}/{name}.parquet"


def file_path(root: UPath, table: str, year: int, month: int, name: str) -> UPath:
    """The path of one cold file under ``root``."""
    return root / relative_path(table, year, month, name)


def month_dir(root: UPath, table: str, year: int, month: int) -> UPath:
    """The folder of one table's month under ``root``."""
    check_table(table)
    return root / f"table={table}" / f"year={year:04d}" / f"month={month:02d}"


def check_table(table: str) -> str:
    """``table`` if it is one of :data:`TABLES`, else :class:`InvalidInputError`."""
    if table not in TABLES:
        raise InvalidInputError("table", table, f"must be one of {list(TABLES)}")
    return table


def arrow_schema(table: str) -> pa.Schema:
    """The Arrow schema of a cold table: the database table's columns, names and order.

    Timestamps ``timestamp[us, tz=UTC]``, integers int64, ``observed`` bool, JSON columns and
    text as strings.
    """
    import pyarrow as pa
    import sqlalchemy as sa

    from sync_observability.storage import schema

    source = schema.metadata.tables[SOURCE_TABLES[check_table(table)]]
    fields = []
    for column in source.columns:
        if column.name in JSON_COLUMNS:
            kind = pa.string()
        elif isinstance(column.type, schema.UTCDateTime):
            kind = pa.timestamp("us", tz="UTC")
        elif isinstance(column.type, sa.Boolean):
            kind = pa.bool_()
        elif column.type._type_affinity is sa.Integer:  # Integer, BigInteger, the variants
            kind = pa.int64()
        else:
            kind = pa.string()
        fields.append(pa.field(column.name, kind, nullable=column.nullable))
    return pa.schema(fields)


def column_names(table: str) -> list[str]:
    """The cold table's column names, in order."""
    return arrow_schema(table).names


@dataclasses.dataclass(frozen=True, kw_only=True)
class ManifestEntry:
    """One verified cold file.

    ``first_id``/``last_id`` are the ids of the file's first and last rows in export order
    (time, then id): ``sync_id`` strings for ``sync_history``, ``event_id`` ints for
    ``operation_log``.
    """

    path: str
    table: str
    year: int
    month: int
    rows: int
    first_id: str | int | None
    last_id: str | int | None
    sha256: str
    written_at: str

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> ManifestEntry:
        """An entry from its JSON object; :class:`StorageError` when a field is missing."""
        try:
            return cls(
                path=str(raw["path"]),
                table=str(raw["table"]),
                year=int(raw["year"]),
                month=int(raw["month"]),
                rows=int(raw["rows"]),
                first_id=raw.get("first_id"),
                last_id=raw.get("last_id"),
                sha256=str(raw["sha256"]),
                written_at=str(raw["written_at"]),
            )
        except (KeyError, TypeError, ValueError) as error:
            raise StorageError(f"bad cold manifest entry {raw!r}: {error}") from error

    def to_dict(self) -> dict[str, Any]:
        """The entry's JSON object."""
        return dataclasses.asdict(self)


def read_manifest(root: UPath) -> list[ManifestEntry]:
    """The manifest's entries (empty when the root has no manifest yet)."""
    path = root / MANIFEST_NAME
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    try:
        document = json.loads(text)
    except json.JSONDecodeError as error:
        raise StorageError(
            f"cold manifest {display_url(str(path))} is not JSON: {error}"
        ) from error
    if not isinstance(document, dict) or document.get("format") != MANIFEST_FORMAT:
        raise StorageError(
            f"cold manifest {display_url(str(path))}: unknown format "
            f"{document.get('format') if isinstance(document, dict) else document!r}"
        )
    return [ManifestEntry.from_dict(raw) for raw in document.get("files", [])]


def write_manifest(root: UPath, entries: Sequence[ManifestEntry]) -> None:
    """Replace the manifest with ``entries``: written under a temporary name, then moved into
    place (a rename locally; on S3 one PUT of the whole object, which is atomic)."""
    document = {"format": MANIFEST_FORMAT, "files": [entry.to_dict() for entry in entries]}
    body = json.dumps(document, indent=1, sort_keys=False).encode()
    replace_bytes(root / MANIFEST_NAME, body)


def replace_bytes(target: UPath, body: bytes) -> None:
    """Write ``body`` to ``target`` through a temporary sibling moved into place."""
    temporary = target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp")
    temporary.parent.mkdir(parents=True, exist_ok=True)
    temporary.write_bytes(body)
    move_into_place(temporary, target)


def move_into_place(temporary: UPath, target: UPath) -> None:
    """Move ``temporary`` onto ``target``, replacing it.

    Locally an atomic ``os.replace``. On object stores a move is a server-side copy and a
    delete; the copy is one completed PUT/COPY, so readers see either the old object or the new
    one, never a part.
    """
    if temporary.protocol in ("", "file", "local"):
        import os

        os.replace(temporary.path, target.path)
        return
    fs = temporary.fs
    fs.mv(temporary.path, target.path)


def utc_iso(moment: dt.datetime) -> str:
    """An aware instant as ISO 8601 in UTC (``written_at``)."""
    return moment.astimezone(dt.timezone.utc).isoformat()


__all__: Sequence[str] = (
    "HISTORY_TABLE",
    "ID_COLUMNS",
    "JSON_COLUMNS",
    "MANIFEST_NAME",
    "OPERATION_LOG_TABLE",
    "SOURCE_TABLES",
    "TABLES",
    "TIME_COLUMNS",
    "ManifestEntry",
    "arrow_schema",
    "check_root",
    "check_table",
    "column_names",
    "display_url",
    "file_path",
    "filesystem_error",
    "is_local",
    "month_dir",
    "move_into_place",
    "open_root",
    "read_manifest",
    "relative_path",
    "replace_bytes",
    "utc_iso",
    "write_manifest",
)
