"""The cold tier: history past the online window as Parquet files on a local folder or object
storage (S3, GCS, Azure), verified before the database lets go of the rows.

- :mod:`.layout`: the file contract (paths, Arrow schemas, ``_manifest.json``);
- :mod:`.export`: ``sync-obs archive export``, moving old archive and operation-log rows out;
- :mod:`.query`: reading the cold files back (DuckDB).

Nothing here is imported with the package: pyarrow and fsspec load when a command uses them.
"""

from __future__ import annotations

from collections.abc import Sequence

COLD_EXTRA_INSTALL = "pip install 'sync_observability[cold]'"
"""How to install the cold tier's libraries (pyarrow, duckdb, universal_pathlib, s3fs)."""

EXPORT_MODULES: tuple[str, ...] = ("pyarrow", "pyarrow.parquet", "fsspec", "upath")
QUERY_MODULES: tuple[str, ...] = ("pyarrow", "duckdb", "fsspec", "upath")


def require_extra(what: str, modules: Sequence[str] = QUERY_MODULES) -> None:
    """Import ``modules``; :class:`ConfigurationError` naming the cold extra when one is missing.

    ``what`` names the caller in the message (``sync-obs archive export``).
    """
    import importlib

    from sync_observability.errors import ConfigurationError

    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError as error:
            raise ConfigurationError(
                f"{what} needs the cold extra ({error}): {COLD_EXTRA_INSTALL}"
            ) from error
