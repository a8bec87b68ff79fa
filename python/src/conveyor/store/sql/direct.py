"""The hot statements, run straight on psycopg's cursor.

A worker runs two statements per job on PostgreSQL (its claim, which writes the plain jobs it
claims as well, and the outcome's write), and a single publish one (the insert with its
wake-up).
SQLAlchemy spends about 45 µs of Python on each around psycopg's own work: finding the
compiled form, processing parameters and building a result. These statements are built once,
take plain values and return plain rows, so that work is done once here, at compile time; the
statement text is the one SQLAlchemy renders. Anything else goes through SQLAlchemy, as do
these statements on other drivers. Errors come out as SQLAlchemy's exceptions, and a lost
connection is invalidated, exactly as when SQLAlchemy runs the statement.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Boolean, Connection
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql.expression import Executable


@dataclass(frozen=True)
class Compiled:
    sql: str
    keys: tuple[str, ...]  # result columns, in order
    # Values the statement carries itself (a literal SQLAlchemy made a parameter of).
    defaults: Mapping[str, Any] = field(default_factory=dict)


class DirectStatements:
    """Runs long-lived statements on the driver's cursor when it can, else via SQLAlchemy."""

    def __init__(self, connection_dialect: Any, enabled: bool = True) -> None:
        self.dialect = connection_dialect
        self.enabled = enabled and connection_dialect.driver == "psycopg"
        # Keyed by identity: the statements are built once and live as long as the store.
        self._compiled: dict[int, tuple[Executable, Compiled | None]] = {}

    def compiled(self, statement: Executable) -> Compiled | None:
        """The statement's text, or None when it needs SQLAlchemy at execution time
        (expanding IN lists, literal values, or parameter or result conversions)."""
        if not self.enabled:
            return None
        found = self._compiled.get(id(statement))
        if found is None or found[0] is not statement:
            found = (statement, self._compile(statement))
            self._compiled[id(statement)] = found
        return found[1]

    def _compile(self, statement: Executable) -> Compiled | None:
        # Public API only (SQLCompiler's documented attributes, TypeEngine.dialect_impl and its
        # processors, the statement's exported_columns), so a SQLAlchemy upgrade within the
        # bounds of pyproject.toml cannot change what this decides silently.
        compiled: Any = statement.compile(dialect=self.dialect)  # type: ignore[attr-defined]
        if (
            compiled.literal_execute_params
            or compiled.post_compile_params
            or compiled.positional
            or any(
                self._bind_processor(bind.type)
                and not self._plain_array(bind.type)
                and not isinstance(bind.type, Boolean)
                for bind in compiled.binds.values()
            )
        ):
            return None
        columns = list(getattr(statement, "exported_columns", ()))
        if any(self._result_processor(column.type) for column in columns):
            return None
        keys = tuple(str(column.key) for column in columns)
        if len(set(keys)) != len(keys):
            return None  # SQLAlchemy would disambiguate the names; let it
        defaults = {
            compiled.bind_names[bind]: bind.effective_value
            for bind in compiled.binds.values()
            if not bind.required and bind.effective_value is not None
        }
        return Compiled(compiled.string, keys, defaults)

    # A Boolean's bind processor only refuses values that are not bools (psycopg adapts a
    # bool as it is): the rows Conveyor builds hold bools, so its statements run directly.

    def _bind_processor(self, type_: Any) -> Any:
        return type_.dialect_impl(self.dialect).bind_processor(self.dialect)

    def _result_processor(self, type_: Any) -> Any:
        return type_.dialect_impl(self.dialect).result_processor(self.dialect, None)

    def _plain_array(self, type_: Any) -> bool:
        """An array of values that need no conversion: psycopg adapts a list as it is."""
        item = getattr(type_, "item_type", None)
        return item is not None and self._bind_processor(item) is None

    def rows(
        self, connection: Connection, statement: Executable, parameters: Mapping[str, Any]
    ) -> Sequence[Mapping[Any, Any]]:
        """The rows of a query, as mappings, in the connection's transaction."""
        compiled = self.compiled(statement)
        if compiled is None:
            return list(connection.execute(statement, parameters).mappings())
        return self.execute(connection, compiled, parameters)[1]

    def rowcount(
        self,
        connection: Connection,
        statement: Executable,
        parameters: Mapping[str, Any] | Sequence[Mapping[str, Any]],
    ) -> int:
        """Rows a write changed; a sequence of parameter sets runs it once per set."""
        compiled = self.compiled(statement)
        if compiled is None:
            return int(connection.execute(statement, parameters).rowcount)
        if isinstance(parameters, Mapping):
            return self.execute(connection, compiled, parameters)[0]
        return self.execute_many(connection, compiled, parameters)

    def execute(
        self, connection: Connection, compiled: Compiled, parameters: Mapping[str, Any]
    ) -> tuple[int, list[dict[str, Any]]]:
        """(rowcount, rows as dicts) of one execution in the connection's transaction."""
        raw: Any = connection.connection.dbapi_connection
        if compiled.defaults:
            parameters = {**compiled.defaults, **parameters}
        try:
            with raw.cursor() as cursor:
                cursor.execute(compiled.sql, parameters)
                if not compiled.keys:
                    return cursor.rowcount, []
                keys = compiled.keys
                return cursor.rowcount, [dict(zip(keys, row, strict=True)) for row in cursor]
        except Exception as error:
            raise self._wrapped(connection, compiled, parameters, error, raw) from error

    def execute_many(
        self, connection: Connection, compiled: Compiled, parameters: Sequence[Mapping[str, Any]]
    ) -> int:
        """Rows changed by one statement run once per parameter set (psycopg pipelines it)."""
        raw: Any = connection.connection.dbapi_connection
        if compiled.defaults:
            parameters = [{**compiled.defaults, **each} for each in parameters]
        try:
            with raw.cursor() as cursor:
                cursor.executemany(compiled.sql, parameters)
                return int(cursor.rowcount)
        except Exception as error:
            raise self._wrapped(connection, compiled, parameters, error, raw) from error

    def _wrapped(
        self,
        connection: Connection,
        compiled: Compiled,
        parameters: Any,
        error: Exception,
        raw: Any,
    ) -> BaseException:
        dbapi = self.dialect.loaded_dbapi
        if not isinstance(error, dbapi.Error):
            return error
        disconnected = bool(self.dialect.is_disconnect(error, raw, None))
        if disconnected:
            connection.invalidate(error)
        wrapped: BaseException = DBAPIError.instance(
            compiled.sql,
            parameters,
            error,
            dbapi.Error,
            connection_invalidated=disconnected,
            dialect=self.dialect,
        )
        return wrapped
