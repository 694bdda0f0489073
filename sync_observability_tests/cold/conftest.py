"""Fixtures of the cold tier's tests: a real S3 API on loopback (moto's server mode) and rows to
export.

``s3_root`` is an ``s3://`` URL in a fresh bucket of a :class:`moto.server.ThreadedMotoServer`
on 127.0.0.1, with the endpoint and fake credentials in the environment
(``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``, ...): the package talks to it through s3fs exactly
as to AWS.
"""

from __future__ import annotations

import datetime as dt
import socket
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa

from sync_observability.storage.schema import operation_log, sync_history_archive

UTC = dt.timezone.utc
S3_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing-secret",
    "AWS_SESSION_TOKEN": "testing-session",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REGION": "us-east-1",
}


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """The URL of a moto S3 server on 127.0.0.1, for the whole session."""
    from moto.server import ThreadedMotoServer

    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


@pytest.fixture
def s3_env(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The environment pointing AWS clients at the moto server (set in this process too)."""
    env = {**S3_ENV, "AWS_ENDPOINT_URL": moto_endpoint}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return env


@pytest.fixture
def s3_root(s3_env: dict[str, str]) -> str:
    """``s3://<fresh bucket>/cold``, the bucket created on the moto server."""
    import boto3
    import fsspec

    bucket = f"cold-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=s3_env["AWS_ENDPOINT_URL"]).create_bucket(Bucket=bucket)
    # s3fs caches filesystems and their listings per process: start from what the server holds.
    fsspec.filesystem("s3").invalidate_cache()
    return f"s3://{bucket}/cold"


# -- rows -----------------------------------------------------------------------------------


def archive_rows(count: int, *, start: dt.datetime, step: dt.timedelta) -> list[dict[str, Any]]:
    """``count`` archive rows from ``start`` every ``step``, with NULLs, nested JSON, non-ASCII
    text and odd microseconds among their values."""
    rows = []
    for i in range(count):
        began = start + i * step + dt.timedelta(microseconds=i % 997)
        failed = i % 3 == 0
        rows.append(
            {
                "sync_id": f"{uuid.UUID(int=i + 1)}",
                "resource": f"res-{i % 4}",
                "source_system": "postgres" if i % 2 else None,
                "target_system": "snowflake",
                "sync_type": "incremental" if i % 2 else "full",
                "sync_start_time": began,
                "sync_end_time": None if i % 5 == 0 else began + dt.timedelta(seconds=i % 61),
                "sync_status": "failed" if failed else "success",
                "records_processed": i * 1_000_003,
                "records_created": i,
                "records_updated": 2**40 + i,
                "records_failed": 1 if failed else 0,
                "error_message": f"boom ü {i}" if failed else None,
                "errors": [{"code": "E1", "n": i, "nested": {"ok": False}}] if failed else [],
                "watermark_before": began - dt.timedelta(hours=1) if i % 2 else None,
                "watermark_after": began if i % 2 else None,
                "cursor_before": {"page": i, "token": "ä€"} if i % 4 == 1 else None,
                "cursor_after": [i, "x", None, 1.5] if i % 4 == 1 else None,
                "duration_ms": None if i % 5 == 0 else i * 7,
                "dagster_run_id": f"run-{i}",
                "asset_key": "a/b" if i % 2 else None,
                "partition_key": "2024-01-01" if i % 3 == 1 else None,
                "retry_number": i % 3,
                "metadata": {"i": i, "tags": ["a", "b"], "unicode": "日本"},
                "observed": i % 7 == 0,
                "archived_at": began + dt.timedelta(days=91),
            }
        )
    return rows


def operation_rows(count: int, *, start: dt.datetime, step: dt.timedelta) -> list[dict[str, Any]]:
    """``count`` operation-log events from ``start`` every ``step``."""
    return [
        {
            "category": "dedup_conflict",
            "resource": f"res-{i % 4}",
            "sync_id": f"{uuid.UUID(int=i + 1)}",
            "entity_key": f"AAPL|{i}" if i % 2 else None,
            "event_time": start + i * step,
            "message": f"event ß {i}",
            "details": {"i": i, "list": [1, 2, {"x": None}]},
            "log_time": start + i * step + dt.timedelta(seconds=1),
        }
        for i in range(count)
    ]


def insert(engine: sa.Engine, archive: list[dict[str, Any]], events: list[dict[str, Any]]) -> None:
    """Insert archive rows and events directly, as retention and tracking would have left them."""
    with engine.begin() as conn:
        if archive:
            conn.execute(sa.insert(sync_history_archive), archive)
        if events:
            conn.execute(sa.insert(operation_log), events)


def table_rows(engine: sa.Engine, table: sa.Table) -> dict[Any, dict[str, Any]]:
    """Every row of ``table`` by id, values as the package reads them (JSON parsed, aware)."""
    key = table.primary_key.columns.values()[0]
    with engine.connect() as conn:
        return {row[key.name]: dict(row) for row in conn.execute(sa.select(table)).mappings()}
