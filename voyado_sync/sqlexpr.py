"""The few sqlglot builders every SQL module shares: quoted identifiers and string literals.

Every identifier voyado-sync writes is quoted, so it means the same on every warehouse.
"""

from __future__ import annotations

from sqlglot import exp


def ident(name: str) -> exp.Identifier:
    return exp.to_identifier(name, quoted=True)


def col(name: str, table: str | None = None) -> exp.Column:
    return exp.Column(this=ident(name), table=ident(table) if table else None)


def table(name: str, schema: str | None = None, database: str | None = None) -> exp.Table:
    return exp.Table(
        this=ident(name),
        db=ident(schema) if schema else None,
        catalog=ident(database) if database else None,
    )


def lit(value: str) -> exp.Literal:
    return exp.Literal.string(value)


def literal(value: object) -> exp.Expression:
    """A Python value as a SQL literal (None, bool, int; anything else as text)."""
    if value is None:
        return exp.null()
    if isinstance(value, bool):
        return exp.true() if value else exp.false()
    if isinstance(value, int):
        return exp.Literal.number(value)
    return exp.Literal.string(str(value))
