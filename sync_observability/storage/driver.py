"""The tracking hot path on PostgreSQL, executed on the DB-API cursor.

SQLAlchemy's per-statement execution machinery (execution context, result set, connection and
transaction objects) costs about 0.1 ms of CPU per statement and as much per transaction; on a
tracked sync's five statements and two commits that was most of the tracker's overhead against
hand-written SQL (``bench/bench_tracking.py``). Here the same prebuilt SQLAlchemy statements are
compiled once by SQLAlchemy for the engine's dialect, with their bind and result processors, and
sent on a pooled DB-API connection. Driver errors are raised as SQLAlchemy's own ``DBAPIError``
classes, and a dropped connection is invalidated in the pool, so retries and error translation
(``engine.run_with_retries``) work unchanged.
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractContextManager, nullcontext
from typing import Any, NamedTuple, TypeVar

import sqlalchemy as sa
from sqlalchemy import exc

T = TypeVar("T")


class _Compiled(NamedTuple):
    sql: str
    compiled: sa.Compiled
    binds: dict[str, Callable[[Any], Any]]
    columns: Sequence[sa.ColumnElement[Any]]


class DriverResult:
    """The rows a statement returned, with ``one()`` and ``one_or_none()`` like SQLAlchemy's."""

    def __init__(self, rows: list[Any]) -> None:
        self.rows = rows

    def one_or_none(self) -> Any:
        """The only row, or None; more than one is an error."""
        if len(self.rows) > 1:
            raise exc.MultipleResultsFound("Multiple rows were found when one or none was required")
        return self.rows[0] if self.rows else None

    def one(self) -> Any:
        """The only row; none or more than one is an error."""
        row = self.one_or_none()
        if row is None:
            raise exc.NoResultFound("No row was found when one was required")
        return row


class DriverConnection:
    """What a transaction function sees: ``execute(statement, params)`` on one DB-API cursor."""

    def __init__(
        self, executor: DriverExecutor, dbapi_connection: Any, session_sql: str | None = None
    ) -> None:
        self._executor = executor
        self._dbapi_connection = dbapi_connection
        self._session_sql = session_sql

    def execute(
        self, statement: sa.Executable, params: dict[str, Any] | list[dict[str, Any]] | None = None
    ) -> DriverResult:
        """Run a statement (a list of parameter sets runs it once per set)."""
        compiled = self._executor.compile(statement)
        many = isinstance(params, list)
        sets = [self._executor.bind(compiled, p) for p in (params if many else [params or {}])]
        cursor = self._dbapi_connection.cursor()
        session_sql, self._session_sql = self._session_sql, None
        # The transaction's settings ride along with its first statement: no extra round trip.
        sql = compiled.sql if session_sql is None else f"{session_sql}; {compiled.sql}"
        try:
            try:
                if len(sets) == 1:
                    cursor.execute(sql, sets[0])
                else:
                    if session_sql is not None:
                        cursor.execute(session_sql)
                    cursor.executemany(compiled.sql, sets)
            except self._executor.dbapi.Error as e:
                raise self._executor.wrap(e, compiled.sql, sets, self._dbapi_connection) from e
            if cursor.description is None:
                return DriverResult([])
            return DriverResult(self._executor.rows(compiled, cursor))
        finally:
            cursor.close()


class DriverExecutor:
    """Runs transaction functions on pooled DB-API connections of ``engine``.

    Statements listed in ``statements`` are compiled once, when first run; any other statement
    (the rare diagnostic queries of a refused start or finish) is compiled each time it runs.
    """

    def __init__(self, engine: sa.Engine, statements: Iterable[sa.Executable]) -> None:
        self.engine = engine
        self.dialect = engine.dialect
        self.dbapi = engine.dialect.loaded_dbapi
        self.prebuilt = frozenset(statements)
        # Filled on first use: a step that never finishes a sync never compiles the finish.
        self._cache: dict[sa.Executable, _Compiled] = {}
        self._shapes: dict[tuple[str, Any], tuple[type, list[Any]]] = {}

    def compile(self, statement: sa.Executable) -> _Compiled:
        """The statement compiled for the engine's dialect (kept for prebuilt statements)."""
        cached = self._cache.get(statement)
        if cached is None:
            cached = self._compile(statement)
            if statement in self.prebuilt:
                self._cache[statement] = cached
        return cached

    def _compile(self, statement: sa.Executable) -> _Compiled:
        compiled = statement.compile(dialect=self.dialect)
        binds = {}
        for key, bind in compiled.binds.items():
            processor = bind.type.dialect_impl(self.dialect).bind_processor(self.dialect)
            if processor is not None:
                binds[key] = processor
        columns = list(getattr(statement, "exported_columns", ()))
        return _Compiled(compiled.string, compiled, binds, columns)

    def bind(self, compiled: _Compiled, params: dict[str, Any]) -> dict[str, Any]:
        """The driver's parameters: SQLAlchemy's values, passed through the types' processors."""
        values = compiled.compiled.construct_params(params)
        try:
            for key, processor in compiled.binds.items():
                if key in values:
                    values[key] = processor(values[key])
        except Exception as e:
            # What SQLAlchemy raises for a value its type refuses (a naive datetime, say).
            raise exc.StatementError(str(e), compiled.sql, params, e) from e
        return values

    def rows(self, compiled: _Compiled, cursor: Any) -> list[Any]:
        """The fetched rows as named tuples, each value through its column type's processor."""
        description = tuple((d[0], d[1]) for d in cursor.description)
        shape = self._shapes.get((compiled.sql, description))
        if shape is None:
            shape = self._shapes[(compiled.sql, description)] = self._shape(compiled, description)
        row_type, processors = shape
        return [
            row_type(*(p(v) if p is not None else v for p, v in zip(processors, raw, strict=True)))
            for raw in cursor.fetchall()
        ]

    def _shape(
        self, compiled: _Compiled, description: tuple[tuple[str, Any], ...]
    ) -> tuple[type, list[Callable[[Any], Any] | None]]:
        columns = list(compiled.columns[: len(description)])
        columns += [None] * (len(description) - len(columns))
        processors = [
            column.type.dialect_impl(self.dialect).result_processor(self.dialect, type_code)
            if column is not None
            else None
            for column, (_, type_code) in zip(columns, description, strict=True)
        ]
        names = [name for name, _ in description]
        return collections.namedtuple("Row", names), processors  # type: ignore[misc]

    def wrap(
        self, error: Exception, sql: str, params: Any, dbapi_connection: Any
    ) -> exc.DBAPIError:
        """``error`` as SQLAlchemy raises it, the connection invalidated when it dropped."""
        disconnect = self.dialect.is_disconnect(error, dbapi_connection, None)
        if disconnect:
            dbapi_connection.invalidate(error)
        return exc.DBAPIError.instance(
            sql,
            params,
            error,
            self.dbapi.Error,
            connection_invalidated=disconnect,
            dialect=self.dialect,
        )

    def transaction(
        self,
        fn: Callable[[DriverConnection], T],
        *,
        session_sql: str | None = None,
        guard: Callable[[Any], AbstractContextManager[Any]] | None = None,
    ) -> T:
        """Run ``fn`` in one transaction on a pooled connection: commit, or roll back and raise.

        ``session_sql`` is sent with the first statement (the transaction's own settings);
        ``guard(dbapi_connection)`` is held around the whole transaction (a watchdog).
        """
        fairy = self.engine.raw_connection()
        with guard(fairy.dbapi_connection) if guard is not None else nullcontext():
            try:
                try:
                    result = fn(DriverConnection(self, fairy, session_sql))
                    try:
                        fairy.commit()
                    except self.dbapi.Error as e:
                        raise self.wrap(e, "COMMIT", None, fairy) from e
                except BaseException:
                    if fairy.is_valid:
                        try:
                            fairy.rollback()
                        except self.dbapi.Error as e:
                            fairy.invalidate(e)
                    raise
                return result
            finally:
                fairy.close()
