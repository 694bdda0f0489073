"""Cold ``sync_history`` rows (the Parquet files of ``sync-obs archive export``) as a DataFrame.

DuckDB and pyarrow are imported when :func:`cold_history` runs, not with the reports.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from typing import Any

import pandas as pd

from sync_observability.cold import layout, require_extra
from sync_observability.cold.query import ColdSource, read_history


def cold_history(
    url: str | None = None,
    *,
    resource: str | None = None,
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
    status: str | None = None,
    limit: int | None = None,
    decode_json: bool = True,
) -> pd.DataFrame:
    """Cold ``sync_history`` rows, newest first: the history ``archive export`` moved out.

    Only the files the cold root's manifest lists are read, and of those only the months that
    meet ``[since, until)``.

    Args:
        url: the cold root, a local folder or an fsspec URL such as ``s3://bucket/prefix``
            (default ``$SYNC_OBS_COLD_URL``).
        resource: only this resource.
        since: only syncs started at or after this (aware datetime).
        until: only syncs started before this (aware datetime).
        status: only syncs with this ``sync_status``.
        limit: at most this many rows (the newest).
        decode_json: decode ``errors``, ``cursor_before``, ``cursor_after`` and ``metadata``
            into Python objects, as the hot tables return them (else JSON text).

    Returns:
        The columns of ``sync_history_archive`` in its order (``archived_at`` last): timestamps
        ``datetime64[us, UTC]``, counts ``Int64`` (nullable), ``observed`` bool, text as
        ``object``. ``df.attrs["cold_files"]`` lists the files read (full locations, no
        credentials) and ``df.attrs["cold_url"]`` the root.

    Examples:
        .. code-block:: python

            from datetime import datetime, timezone

            from sync_observability.reports import cold_history

            df = cold_history(
                "s3://audit/sync-obs",
                resource="vantage/accounts",
                since=datetime(2024, 1, 1, tzinfo=timezone.utc),
            )
            print(df.attrs["cold_files"])
    """
    require_extra("cold_history")
    import pyarrow as pa

    source = ColdSource.open(url)
    table, files = read_history(
        source, resource=resource, status=status, since=since, until=until, limit=limit
    )
    df = table.to_pandas(types_mapper={pa.int64(): pd.Int64Dtype()}.get)
    if decode_json:
        for column in _json_columns(table.schema.names):
            # From Arrow, where a missing value is None (pandas may have made it NaN).
            decoded = [_decode(value) for value in table.column(column).to_pylist()]
            df[column] = pd.Series(decoded, index=df.index, dtype=object)
    df.attrs["cold_files"] = files
    df.attrs["cold_url"] = source.url
    return df


def _json_columns(names: Sequence[str]) -> list[str]:
    return [name for name in names if name in layout.JSON_COLUMNS]


def _decode(value: Any) -> Any:
    return None if value is None else json.loads(value)
