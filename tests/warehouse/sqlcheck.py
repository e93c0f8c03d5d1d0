"""Checks of the SQL voyado-sync sends, per dialect, without the warehouse.

:class:`Recorder` is the Warehouse protocol for any dialect: it keeps every statement and answers
queries with empty results (aggregates with zeros), so the ledger and the diff can be driven
through every statement they can send. :func:`problems` holds statements to the rules every
warehouse needs; :class:`SnowflakeNames` replays them against a catalog kept the way Snowflake
stores names (unquoted folds to upper case, quoted is exact), which fakesnow does not do.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any

import sqlglot
from sqlglot import exp
from sqlglot.errors import OptimizeError, ParseError
from sqlglot.optimizer.normalize_identifiers import normalize_identifiers
from sqlglot.optimizer.qualify import qualify
from sqlglot.schema import MappingSchema


class Recorder:
    """The Warehouse protocol for dialect ``dialect``: records, answers with nothing."""

    description = "recorded"
    array_params = False

    def __init__(self, dialect: str, database: str | None = "analytics_db") -> None:
        self.dialect = dialect
        self.database = database
        self.statements: list[str] = []
        #: Canned rows for queries of a table: {table name: rows}.
        self.answers: dict[str, list[tuple[Any, ...]]] = {}

    def query(self, sql: str) -> list[tuple[Any, ...]]:
        self.statements.append(sql)
        for name, rows in self.answers.items():
            if name in sql:
                return rows
        try:
            parsed = sqlglot.parse_one(sql, read=self.dialect)
        except ParseError:
            return []
        if (
            isinstance(parsed, exp.Select)
            and parsed.expressions
            and all(e.find(exp.AggFunc) is not None for e in parsed.expressions)
        ):
            return [tuple(0 for _ in parsed.expressions)]
        return []

    def execute(self, sql: str) -> None:
        self.statements.append(sql)

    def execute_many(self, statements: Sequence[str]) -> None:
        self.statements.extend(statements)

    def execute_params(self, statements: Sequence[tuple[str, Sequence[Any]]]) -> None:
        raise NotImplementedError

    def keys_join(self) -> contextlib.AbstractContextManager[None]:
        return contextlib.nullcontext()

    def columns(self, relation: Any) -> dict[str, str] | None:
        return None

    def columns_of(self, relation: Any) -> dict[str, str] | None:
        return None

    def close(self) -> None:
        pass


def problems(sql: str, dialect: str) -> list[str]:
    """What in ``sql`` a warehouse of ``dialect`` would refuse or silently ignore."""
    found: list[str] = []
    try:
        parsed = sqlglot.parse_one(sql, read=dialect)
    except ParseError as exc:
        return [f"does not parse as {dialect}: {str(exc).splitlines()[0]}"]
    for select in parsed.find_all(exp.Select):
        if select.args.get("where") is not None and select.args.get("from_") is None:
            found.append("WHERE without FROM")
    for node in parsed.find_all(
        exp.PrimaryKeyColumnConstraint, exp.PrimaryKey, exp.UniqueColumnConstraint
    ):
        found.append(f"relies on a key constraint ({node.sql(dialect)})")
    if isinstance(parsed, exp.Create):
        for node in parsed.find_all(exp.Table):
            if node.name.startswith("_"):
                found.append(f"table name {node.name} starts with _ (hidden by Hadoop)")
    for table in parsed.find_all(exp.Table):
        names = [p.name.lower() for p in table.parts]
        if any(n.startswith("information_schema") for n in names):
            if dialect in ("spark", "databricks"):
                found.append("information_schema (Spark has none outside Unity Catalog)")
            if dialect == "bigquery" and not table.args.get("db"):
                found.append("information_schema not qualified by a dataset")
    if dialect == "spark" and isinstance(parsed, exp.Delete | exp.Update | exp.Merge):
        found.append(f"{type(parsed).__name__.upper()} (plain Spark tables have none)")
    return found


class SnowflakeNames:
    """A catalog that stores names as Snowflake does; :meth:`run` replays one statement and
    says which name it would not find."""

    def __init__(self, database: str) -> None:
        self.database = database.upper()
        self.tables: dict[tuple[str, str], list[str]] = {}
        self.schemas: set[str] = set()

    def add_table(self, schema: str, name: str, columns: Sequence[str]) -> None:
        """A table as dbt-snowflake creates it, names as stored."""
        self.schemas.add(schema)
        self.tables[(schema, name)] = list(columns)

    def _schema(self) -> MappingSchema:
        mapping: dict[str, Any] = {}
        for (schema, name), columns in self.tables.items():
            mapping.setdefault(self.database, {}).setdefault(schema, {})[name] = dict.fromkeys(
                columns, "VARCHAR"
            )
        return MappingSchema(mapping, dialect="snowflake", normalize=False)

    def _key(self, table: exp.Table) -> tuple[str, str]:
        return (table.db or "", table.name)

    def _check_tables(self, tree: exp.Expr) -> None:
        ctes = {c.alias for c in tree.find_all(exp.CTE)}
        for table in tree.find_all(exp.Table):
            if table.name in ctes or table.name.upper().startswith("INFORMATION_SCHEMA"):
                continue
            if table.db.upper() == "INFORMATION_SCHEMA":
                continue
            if table.catalog and table.catalog != self.database:
                raise OptimizeError(f"database {table.catalog} does not exist")
            if self._key(table) not in self.tables:
                raise OptimizeError(f"table {table.db}.{table.name} does not exist")

    def _resolve(self, select: exp.Expr) -> exp.Expr:
        self._check_tables(select)
        return qualify(
            select.copy(),
            dialect="snowflake",
            schema=self._schema(),
            catalog=self.database,
            validate_qualify_columns=True,
            identify=False,
            quote_identifiers=False,
        )

    def run(self, sql: str) -> str | None:
        """Replay ``sql``; None if Snowflake would resolve every name, else what it lacks."""
        try:
            tree = normalize_identifiers(sqlglot.parse_one(sql, read="snowflake"), "snowflake")
            if any(t.db.upper() == "INFORMATION_SCHEMA" for t in tree.find_all(exp.Table)):
                return None  # the catalog's own views: unquoted names, always there
            self._apply(tree)
        except (OptimizeError, ParseError, KeyError) as exc:
            return str(exc).splitlines()[0]
        return None

    def _apply(self, tree: exp.Expr) -> None:
        if isinstance(tree, exp.Create):
            target = tree.this
            if tree.kind == "SCHEMA":
                self.schemas.add(target.db or target.name)
                return
            if isinstance(target, exp.Schema):
                table = target.this
                columns = [c.name for c in target.expressions if isinstance(c, exp.ColumnDef)]
            else:
                table = target
                query = tree.expression
                resolved = self._resolve(query)
                columns = list(resolved.named_selects)  # type: ignore[attr-defined]
            if table.db not in self.schemas:
                raise OptimizeError(f"schema {table.db} does not exist")
            self.tables.setdefault(self._key(table), columns)
            return
        if isinstance(tree, exp.Drop):
            for table in tree.find_all(exp.Table):
                self.tables.pop(self._key(table), None)
            return
        if isinstance(tree, exp.Insert):
            table = tree.this.this if isinstance(tree.this, exp.Schema) else tree.this
            self._check_tables(table)
            stored = self.tables[self._key(table)]
            if isinstance(tree.this, exp.Schema):
                for column in tree.this.expressions:
                    if column.name not in stored:
                        raise OptimizeError(f"column {column.name} not in {table.name}")
            source = tree.expression
            if isinstance(source, exp.Select):
                self._resolve(source)
            return
        if isinstance(tree, exp.Delete | exp.Update):
            where = tree.args.get("where")
            select = exp.select(exp.Star()).from_(tree.this.copy())
            if where is not None:
                select = select.where(where.this.copy())
            self._resolve(select)
            return
        if isinstance(tree, exp.Alter):
            if tree.this is not None:  # ALTER SESSION names no table
                self._check_tables(tree.this)
            return
        if isinstance(tree, exp.Select | exp.Union):
            self._resolve(tree)
