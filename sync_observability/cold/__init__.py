"""The cold tier: history past the online window as Parquet files on a local folder or object
storage (S3, GCS, Azure), verified before the database lets go of the rows.

- :mod:`.layout`: the file contract (paths, Arrow schemas, ``_manifest.json``);
- :mod:`.export`: ``sync-obs archive export``, moving old archive and operation-log rows out;
- :mod:`.query`: reading the cold files back (DuckDB).

Nothing here is imported with the package: pyarrow and fsspec load when a command uses them.
"""
