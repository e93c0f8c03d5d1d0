"""Each warehouse's SQL quirks, in one object per warehouse (as dbt-adapters has one adapter class
per warehouse), so that no other module branches on the adapter type.

What differs, and where it is handled:

- how the catalog stores a name: unquoted names fold to upper case on Snowflake and to lower case
  on PostgreSQL; quoted names are exact on both; DuckDB, Redshift, BigQuery's column names and
  Spark ignore case (:meth:`SqlDialect.stored`);
- where the columns of a relation are listed: ``information_schema.columns`` of the relation's
  database, ``project.dataset.INFORMATION_SCHEMA.COLUMNS`` on BigQuery (no unqualified form
  exists), ``DESCRIBE TABLE`` on Spark and Databricks (no information_schema outside Unity
  Catalog) (:meth:`SqlDialect.columns_sql`, :meth:`SqlDialect.columns_from`);
- which tables a schema holds (the same three forms);
- the statement that sets the session's time zone to UTC (:attr:`SqlDialect.utc_session`);
- whether ``DELETE`` exists: plain Spark tables (Parquet, Hive) have no DELETE, UPDATE or MERGE.
  The ledger never needs them (it is an append-only journal); where they exist it also removes
  superseded entries (:attr:`SqlDialect.deletes`).

No dialect relies on an enforced key or a multi-statement transaction: the ledger's correctness
comes from single INSERT statements, which every warehouse applies whole or not at all.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlglot import exp


def _ident(name: str) -> exp.Identifier:
    return exp.to_identifier(name, quoted=True)


@dataclass(frozen=True)
class SqlDialect:
    """A warehouse as the SQL voyado-sync sends sees it (sqlglot dialect ``name``)."""

    name: str
    #: How the catalog stores an unquoted name: "upper", "lower", or None (case is ignored).
    fold: str | None = None
    #: Whether quoted names keep their case in the catalog (False: the catalog ignores case).
    exact_quoted: bool = False
    #: Whether DELETE exists on the ledger's tables.
    deletes: bool = True
    #: Whether information_schema lives in each database (Snowflake) rather than once per
    #: connection (DuckDB's is in its system catalog; PostgreSQL's is the current database's).
    information_schema_per_database: bool = False
    #: The statement that makes the session's time zone UTC (None: it always is), so that a
    #: session-local timestamp renders the same whatever the machine's TZ (Spark's TIMESTAMP
    #: is one). A constant: nothing of the user's is part of it.
    utc_session: str | None = None

    def sql(self, expression: exp.Expr) -> str:
        return expression.sql(dialect=self.name)

    def stored(self, identifier: exp.Identifier) -> str:
        """The name as the catalog stores it (how information_schema spells it)."""
        name = str(identifier.this)
        if identifier.quoted and self.exact_quoted:
            return name
        if self.fold == "upper":
            return name.upper()
        if self.fold == "lower":
            return name.lower()
        return name

    def _name_matches(self, column: str, identifier: exp.Identifier) -> exp.Expr:
        if self.fold is None or (identifier.quoted and not self.exact_quoted):
            # The catalog ignores case: compare folded on both sides.
            return exp.func("lower", exp.column(column)).eq(
                exp.Literal.string(str(identifier.this).lower())
            )
        return exp.column(column).eq(exp.Literal.string(self.stored(identifier)))

    # -- the catalog -----------------------------------------------------------------------

    def _information_schema(self, catalog: exp.Identifier | None, view: str) -> exp.Table:
        return exp.Table(
            this=exp.to_identifier(view),
            db=exp.to_identifier("information_schema"),
            catalog=catalog.copy() if catalog is not None else None,
        )

    def columns_sql(self, relation: exp.Table) -> str:
        """A query whose rows are (column name, type) of ``relation``, in order."""
        catalog = relation.args.get("catalog")
        conditions = [
            self._name_matches("table_schema", relation.args["db"]),
            self._name_matches("table_name", relation.this),
        ]
        if catalog is not None:
            conditions.append(self._name_matches("table_catalog", catalog))
        where = catalog if self.information_schema_per_database else None
        return self.sql(
            exp.select("column_name", "data_type")
            .from_(self._information_schema(where, "columns"))
            .where(exp.and_(*conditions))
            .order_by("ordinal_position")
        )

    def columns_from(self, rows: Sequence[tuple[Any, ...]]) -> dict[str, str] | None:
        if not rows:
            return None
        return {str(r[0]): str(r[1]) for r in rows}

    def missing_is_error(self) -> bool:
        """Whether asking for the columns of a missing relation raises instead of being empty."""
        return False

    def tables_sql(self, schema: str) -> str:
        """A query whose first column is the name of each table in ledger schema ``schema``."""
        return self.sql(
            exp.select("table_name")
            .from_(self._information_schema(None, "tables"))
            .where(self._name_matches("table_schema", _ident(schema)))
        )

    def tables_from(self, rows: Sequence[tuple[Any, ...]]) -> set[str]:
        return {str(r[0]).lower() for r in rows}


@dataclass(frozen=True)
class BigQueryDialect(SqlDialect):
    """BigQuery: INFORMATION_SCHEMA exists only qualified by a dataset (and project)."""

    def _dataset_view(self, project: exp.Identifier | None, dataset: str, view: str) -> exp.Table:
        return exp.Table(
            this=exp.to_identifier(f"INFORMATION_SCHEMA.{view}", quoted=True),
            db=_ident(dataset),
            catalog=project.copy() if project is not None else None,
        )

    def columns_sql(self, relation: exp.Table) -> str:
        dataset = relation.args["db"]
        view = self._dataset_view(relation.args.get("catalog"), str(dataset.this), "COLUMNS")
        return self.sql(
            exp.select("column_name", "data_type")
            .from_(view)
            .where(exp.column("table_name").eq(exp.Literal.string(str(relation.this.this))))
            .order_by("ordinal_position")
        )

    def missing_is_error(self) -> bool:
        return True  # a dataset that does not exist has no INFORMATION_SCHEMA either

    def tables_sql(self, schema: str) -> str:
        return self.sql(exp.select("table_name").from_(self._dataset_view(None, schema, "TABLES")))


@dataclass(frozen=True)
class SparkDialect(SqlDialect):
    """Spark and Databricks: DESCRIBE TABLE and SHOW TABLES, no information_schema."""

    def columns_sql(self, relation: exp.Table) -> str:
        return exp.Describe(this=relation.copy(), kind="TABLE").sql(dialect=self.name)

    def columns_from(self, rows: Sequence[tuple[Any, ...]]) -> dict[str, str] | None:
        columns: dict[str, str] = {}
        for row in rows:
            name = str(row[0] or "").strip()
            if not name or name.startswith("#"):
                break  # partitioning and detailed table information follow
            columns[name] = str(row[1])
        return columns or None

    def missing_is_error(self) -> bool:
        return True

    def tables_sql(self, schema: str) -> str:
        return f"SHOW TABLES IN {_ident(schema).sql(dialect=self.name)}"

    def tables_from(self, rows: Sequence[tuple[Any, ...]]) -> set[str]:
        # (namespace, tableName, isTemporary)
        return {str(r[1]).lower() for r in rows if len(r) > 1}


DIALECTS: dict[str, SqlDialect] = {
    "duckdb": SqlDialect("duckdb", utc_session="SET TimeZone = 'UTC'"),
    "postgres": SqlDialect(
        "postgres", fold="lower", exact_quoted=True, utc_session="SET TIME ZONE 'UTC'"
    ),
    "redshift": SqlDialect("redshift", fold="lower", utc_session="SET timezone TO 'UTC'"),
    "snowflake": SqlDialect(
        "snowflake",
        fold="upper",
        exact_quoted=True,
        information_schema_per_database=True,
        utc_session="ALTER SESSION SET TIMEZONE = 'UTC'",
    ),
    "bigquery": BigQueryDialect("bigquery"),
    "spark": SparkDialect("spark", deletes=False, utc_session="SET TIME ZONE 'UTC'"),
    # Delta tables (the default on Databricks) have DELETE.
    "databricks": SparkDialect("databricks", utc_session="SET TIME ZONE 'UTC'"),
    "trino": SqlDialect("trino", fold="lower", utc_session="SET TIME ZONE 'UTC'"),
}


def dialect_of(name: str) -> SqlDialect:
    """The quirks of sqlglot dialect ``name`` (a plain information_schema warehouse if unknown)."""
    return DIALECTS.get(name) or SqlDialect(name)


def relation_table(rendered: str | None, parts: Sequence[str | None], dialect: str) -> exp.Table:
    """A model's relation as the warehouse sees it.

    ``rendered`` is the manifest's ``relation_name``: dbt's own rendering under the adapter's
    quoting policy (``ANALYTICS.VOYADO_REPAIRS`` on Snowflake by default, quoted on PostgreSQL),
    parsed with its quoting kept. Without it (an old manifest), the parts are quoted as written.
    """
    if rendered:
        return exp.to_table(rendered, dialect=dialect)
    database, schema, identifier = parts
    return exp.Table(
        this=_ident(str(identifier)),
        db=_ident(str(schema)) if schema else None,
        catalog=_ident(str(database)) if database else None,
    )
