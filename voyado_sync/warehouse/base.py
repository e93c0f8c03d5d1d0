"""The small surface the engine needs from a warehouse."""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager
from typing import Any, Protocol

from sqlglot import exp

from voyado_sync.spec import Relation


class Warehouse(Protocol):
    """A connection to the warehouse of a dbt target.

    Every method runs on the thread that opened the connection (dbt's connections are per
    thread); errors come out as WarehouseError with the statement's purpose in the message.
    """

    dialect: str
    """The sqlglot dialect of this warehouse (duckdb, postgres, snowflake, ...)."""
    description: str
    """Human-readable: which database or file was opened."""
    database: str | None
    """The target's database (catalog), where the ledger schema lives."""

    def query(self, sql: str) -> list[tuple[Any, ...]]:
        """Run a SELECT and return every row (callers page with LIMIT)."""
        ...

    def execute(self, sql: str) -> None:
        """Run one statement that returns nothing, committed when it returns."""
        ...

    def execute_many(self, statements: Sequence[str]) -> None:
        """Run statements in one transaction: all of them or none."""
        ...

    array_params: bool
    """Whether ``execute_params`` is available: the driver binds Python lists to SQL arrays
    (DuckDB, psycopg2), so a batch of rows is one statement with one parameter per column."""

    def execute_params(self, statements: Sequence[tuple[str, Sequence[Any]]]) -> None:
        """Run parameterised statements (the dialect's placeholders) in one transaction."""
        ...

    def keys_join(self) -> AbstractContextManager[None]:
        """A block of statements that join keys alone and keep nothing afterwards, which may
        use more memory than the warehouse's connection is otherwise given (DuckDB's cap)."""
        ...

    def columns(self, relation: Relation) -> dict[str, str] | None:
        """Column name -> type of a relation, in order; None when the relation does not exist."""
        ...

    def columns_of(self, relation: exp.Table) -> dict[str, str] | None:
        """The same for a relation as sqlglot names it (quoting kept as the warehouse sees it)."""
        ...

    def close(self) -> None: ...
