"""SQL for "rows not yet delivered", built with sqlglot for the warehouse's dialect. Pure.

The diff runs in the warehouse in three steps, so that already-sent keys never reach Python and
a no-op run costs one narrow anti-join:

1. ``keys``: the key (a hash of the unique key columns) of every model row that is not ``sent``
   in the ledger. Only keys go through this join, so its hash table holds one narrow column per
   sent row; carrying the model's columns through the same join made DuckDB build on the wide
   side and spill (3x slower under 128MB). Usually empty or tiny.
2. ``candidates``: the model rows with those keys and their previous ledger entry. With no keys
   the warehouse skips the scan. When no row is sent yet (a first run) the keys filter is left
   out: it would remove nothing and cost a semi-join of every key.
3. ``pending``: among the candidates, one row per key with its duplicate count, minus keys that
   were rejected before with unchanged content, numbered for paging.

Keys are ``md5`` of the unique key columns' canonical text (:func:`canonical_text`: the
value, whatever its type's width or the session's time zone), with ``\\`` and ``|`` escaped and NULL
spelled ``\\N``, joined by ``|``: (1, NULL) and (NULL, 1) differ, and so do ("a|b", "c") and
("a", "b|c"). The content hash covers every mapped column the same way.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence

from sqlglot import exp

from voyado_sync.spec import InteractionModel
from voyado_sync.sqlexpr import col, ident, lit, table  # noqa: F401 - table: used by bench
from voyado_sync.state import (
    DELIVERY_COLUMNS,
    DELIVERY_IDENTITY,
    DONE,
    RETRYABLE,
    Status,
    environment_scope,
    latest_entries,
)
from voyado_sync.warehouse.dialects import relation_table

ROW_KEY = "__vs_row_key"
CONTENT_HASH = "__vs_content_hash"
PREV_STATUS = "__vs_prev_status"
PREV_HASH = "__vs_prev_hash"
PREV_FIRST_SEEN = "__vs_prev_first_seen"
DUP_COUNT = "__vs_dup_count"
GROUP_HASH = "__vs_group_hash"
SEQ = "__vs_seq"
NULL_TOKEN = "\\N"

# The ledger's statuses, for the tests and SQL that read them.
IN_FLIGHT = Status.IN_FLIGHT
SENT = Status.SENT
REJECTED = Status.REJECTED
FAILED = Status.FAILED
CONTACT_NOT_FOUND = Status.CONTACT_NOT_FOUND
BASELINED = Status.BASELINED
#: The column of ``mirror_deletes_select`` that says why: VANISHED or REPLACED.
DELETE_KIND = "__vs_delete_kind"
VANISHED = "vanished"
REPLACED = "replaced"


def _escaped(value: exp.Expr) -> exp.Expr:
    # Backslash and the separator are escaped, so ("a|b", "c") and ("a", "b|c") differ and no
    # text can spell the NULL token (every backslash in an escaped value is followed by \ or |).
    doubled = exp.func("replace", value, lit("\\"), lit("\\\\"))
    return exp.func("replace", doubled, lit("|"), lit("\\|"))


_INTEGER = re.compile(
    r"^(u?tinyint|u?smallint|u?integer|u?int|u?bigint|u?hugeint|int\d*|long|short|byte|serial"
    r"|bigserial|smallserial|integer\(.*\))$"
)
_FLOAT = re.compile(r"^(float\d*|double( precision)?|real|binary_(float|double))$")
_DECIMAL = re.compile(r"^(decimal|numeric|number|bignumeric|dec)\b")
_TEMPORAL = re.compile(r"^(date|datetime|timestamp)")
_ZONED = re.compile(r"(with time zone|timestamptz|timestamp_tz|timestamp_ltz)")
#: Scale floats are compared at: beyond it, two float keys are the same key.
FLOAT_KEY_SCALE = 9


def _trim_zeros(text: exp.Expr) -> exp.Expr:
    """``1.5000`` -> ``1.5``, ``5.000`` -> ``5``; text without a point is left as it is."""
    zeros = exp.Trim(this=text.copy(), expression=lit("0"), position="TRAILING")
    trimmed = exp.Trim(this=zeros, expression=lit("."), position="TRAILING")
    has_point = exp.StrPosition(this=text.copy(), substr=lit(".")) > exp.Literal.number(0)
    return exp.Case(ifs=[exp.If(this=has_point, true=trimmed)], default=text.copy())


def canonical_text(value: exp.Expr, data_type: str | None) -> exp.Expr:
    """The text of a column value that a change of its type or of the session's time zone
    does not change: the value, not its spelling.

    Integers and strings are cast to text as they always were. Decimals and floats are
    written without trailing zeros (``5``, ``5.0``, ``5.00`` are one value; floats at
    :data:`FLOAT_KEY_SCALE` decimals). Dates and timestamps become the UTC instant as a
    timestamp, and a midnight one is written as its date (a ``DATE`` widened to ``TIMESTAMP``
    keeps its text). Zoned timestamps are converted to UTC first; the session also runs in
    UTC (warehouse/adapter.py) for the engines whose timestamps are session-local (Spark).
    """
    as_text = exp.DataType.build("varchar")
    t = " ".join((data_type or "").strip().lower().split())
    if not t or _INTEGER.match(t):
        return exp.cast(value, as_text)
    if _FLOAT.match(t):
        exact = exp.cast(value, exp.DataType.build(f"decimal(38, {FLOAT_KEY_SCALE})"))
        return _trim_zeros(exp.cast(exact, as_text))
    if _DECIMAL.match(t):
        return _trim_zeros(exp.cast(value, as_text))
    if _TEMPORAL.match(t):
        utc = exp.AtTimeZone(this=value, zone=lit("UTC")) if _ZONED.search(t) else value
        stamp = exp.cast(utc, exp.DataType.build("timestamp"))
        day = exp.cast(stamp.copy(), exp.DataType.build("date"))
        midnight = exp.cast(day.copy(), exp.DataType.build("timestamp")).eq(stamp.copy())
        return exp.Case(
            ifs=[exp.If(this=midnight, true=exp.cast(day.copy(), as_text))],
            default=exp.cast(stamp.copy(), as_text),
        )
    return exp.cast(value, as_text)


def hash_of(
    columns: Sequence[str],
    table_alias: str | None = None,
    types: Sequence[str | None] | None = None,
) -> exp.Expression:
    """md5 over the canonical text of each column (``types``: each column's warehouse type,
    see :func:`canonical_text`), NULL-safe, order-sensitive and unambiguous."""
    parts: list[exp.Expression] = []
    for i, name in enumerate(columns):
        if i:
            parts.append(lit("|"))
        data_type = types[i] if types is not None else None
        parts.append(
            exp.Coalesce(
                this=_escaped(canonical_text(col(name, table_alias), data_type)),
                expressions=[lit(NULL_TOKEN)],
            )
        )
    text = parts[0]
    for part in parts[1:]:
        text = exp.DPipe(this=text, expression=part, safe=True)
    return exp.MD5(this=text)


def type_of(model: InteractionModel, column: str) -> str | None:
    """The warehouse type of one of the model's columns (case-insensitively), if known."""
    types = model.column_types
    if column in types:
        return types[column]
    folded = {name.lower(): t for name, t in types.items()}
    return folded.get(column.lower())


def row_key(model: InteractionModel, table_alias: str | None = None) -> exp.Expression:
    """The row key of each model row: see the module docstring."""
    keys = model.unique_key
    return hash_of(keys, table_alias, [type_of(model, c) for c in keys])


def content_columns(model: InteractionModel) -> list[str]:
    """Columns whose change makes a rejected row worth trying again."""
    cols = [model.contact_column]
    if model.created_date_column:
        cols.append(model.created_date_column)
    cols.extend(p.column for p in sorted(model.properties, key=lambda p: p.name))
    return cols


STAGING_PREFIX = "vs_stage_"
#: PostgreSQL's limit; the other warehouses allow longer names.
_MAX_NAME = 63


def staged_name(model: InteractionModel | str, step: str, run_id: str | None = None) -> str:
    """The staging table of one step of one run: ``vs_stage_<run>_<model>_<step>``.

    No leading underscore (Hadoop hides such paths, so Spark could not read the table back),
    lower case (Spark's catalog folds case), and the run's own id, so that a run that took
    over from a silent one never reads or drops the other's tables.
    """
    run = "".join(ch for ch in (run_id or "").lower() if ch.isalnum())[-8:]
    base = (model if isinstance(model, str) else model.model).lower()
    name = f"{STAGING_PREFIX}{run + '_' if run else ''}{base}_{step}"
    if len(name) > _MAX_NAME:
        digest = hashlib.md5(base.encode()).hexdigest()[:8]
        keep = _MAX_NAME - len(name) + len(base) - len(digest) - 1
        name = f"{STAGING_PREFIX}{run + '_' if run else ''}{base[:keep]}_{digest}_{step}"
    return name


_LEDGER_COLUMNS = (
    "model",
    "schema_id",
    "row_key",
    "status",
    "content_hash",
    "first_seen_at",
    "environment",
)


def empty_ledger(columns: Sequence[str] = _LEDGER_COLUMNS) -> exp.Subquery:
    """Stands in for a ledger that does not exist yet (dry runs write nothing, not even DDL).

    ``LIMIT 0`` rather than ``WHERE FALSE``: BigQuery refuses a WHERE without a FROM.
    """
    return (
        exp.select(
            *(
                exp.alias_(exp.cast(exp.null(), exp.DataType.build("text")), c, quoted=True)
                for c in columns
            )
        )
        .limit(0)
        .subquery(ident("l"))
    )


def _latest(
    ledger: exp.Table | exp.Subquery,
    model: InteractionModel,
    environment: str | None,
    keys: exp.Expr | None = None,
    *,
    columns: Sequence[str] = _LEDGER_COLUMNS,
) -> exp.Expr:
    """The ledger's current entry of each key of this model's schema (alias l).

    The ledger is a journal (state.py): a key's latest entry is its state. Only the entries of
    this schema_id about this Voyado environment, and with ``keys`` only those keys, are ranked.
    A row's identity is (environment, schema_id, key), not the model's name: see state.py.
    """
    if isinstance(ledger, exp.Subquery):
        if tuple(columns) == _LEDGER_COLUMNS:
            return ledger.copy()  # the empty stand-in
        return empty_ledger(columns)
    where: exp.Expr = exp.and_(
        col("schema_id").eq(lit(model.schema_id)), environment_scope(environment)
    )
    if keys is not None:
        where = exp.and_(where, col("row_key").isin(query=keys))
    return latest_entries(ledger, columns, DELIVERY_IDENTITY, where=where).subquery(ident("l"))


def _done(alias: str | None = "l") -> exp.Expr:
    """The ledger row's status is final while the row is unchanged (sent or baselined)."""
    return col("status", alias).isin(*(lit(s.value) for s in DONE))


def _ledger_entry(model: InteractionModel, environment: str | None) -> exp.Expr:
    """The ledger rows (alias l) of this model's schema, about this Voyado environment."""
    return exp.and_(
        col("schema_id", "l").eq(lit(model.schema_id)), environment_scope(environment, "l")
    )


def _aliased(ledger: exp.Table | exp.Subquery) -> exp.Expr:
    # A copy: the same ledger expression may appear in two statements' trees.
    return ledger.as_(ident("l")) if isinstance(ledger, exp.Table) else ledger.copy()


def unsent_keys_select(
    *,
    model: InteractionModel,
    source: exp.Table,
    ledger: exp.Table | exp.Subquery,
    environment: str | None = None,
) -> exp.Select:
    """Step 1: the key of every model row not yet ``sent``; one row per model row.

    In an append model ``sent`` and ``baselined`` are final (no transition leaves them), so a
    key is done when any journal entry says so: this narrow anti-join needs no ranking of the
    journal. A mirror model's rows leave ``sent`` (deleted, replaced), so there a key is done
    when its latest entry is sent or baselined with the content the row has now.
    """
    if model.mirror:
        return _changed_keys_select(
            model=model, source=source, ledger=ledger, environment=environment
        )
    keyed = exp.select(exp.alias_(row_key(model), ROW_KEY, quoted=True)).from_(source)
    sent = (
        exp.select(exp.Literal.number(1))
        .from_(_aliased(ledger))
        .where(
            exp.and_(
                _ledger_entry(model, environment),
                _done(),
                col("row_key", "l").eq(col(ROW_KEY, "m")),
            )
        )
    )
    return (
        exp.select(col(ROW_KEY, "m"))
        .from_(keyed.subquery(ident("m")))
        .where(exp.Not(this=exp.Exists(this=sent)))
    )


def _content_hash(model: InteractionModel, alias: str | None = None) -> exp.Expression:
    """The content hash of the model's own columns (the candidates' CONTENT_HASH)."""
    columns = content_columns(model)
    return hash_of(columns, alias, [type_of(model, c) for c in columns])


def _keyed_content(model: InteractionModel, source: exp.Table) -> exp.Select:
    """Each model row's key and content hash (the same hashes the candidates carry)."""
    return exp.select(
        exp.alias_(row_key(model), ROW_KEY, quoted=True),
        exp.alias_(_content_hash(model), CONTENT_HASH, quoted=True),
    ).from_(source)


def _changed_keys_select(
    *,
    model: InteractionModel,
    source: exp.Table,
    ledger: exp.Table | exp.Subquery,
    environment: str | None,
) -> exp.Select:
    """Step 1 of a mirror model: the keys whose latest entry is not sent or baselined with
    the row's current content (new, changed, deleted, failed, ...)."""
    done = (
        exp.select(col("row_key"), col("content_hash"))
        .from_(_latest(ledger, model, environment))
        .where(_done(None))
    )
    on = exp.and_(
        col("row_key", "d").eq(col(ROW_KEY, "m")),
        col("content_hash", "d").eq(col(CONTENT_HASH, "m")),
    )
    return (
        exp.select(col(ROW_KEY, "m"))
        .from_(_keyed_content(model, source).subquery(ident("m")))
        .join(done.subquery(ident("d")), on=on, join_type="left")
        .where(col("row_key", "d").is_(exp.null()))
    )


def mirror_deletes_select(
    *,
    model: InteractionModel,
    source: exp.Table,
    ledger: exp.Table | exp.Subquery,
    environment: str | None = None,
) -> exp.Select:
    """A mirror model's interactions to delete: the latest entry (every delivery column) of
    each key that is sent or baselined and whose key has left the model (``vanished``), or
    that is sent and whose row's content changed (``replaced``: deleted, then sent again).

    A key shared by several rows counts as changed: none of them can be sent until it is
    unique, and the old interaction no longer stands for the model's rows.
    """
    rows = _keyed_content(model, source).subquery(ident("r"))
    by_key = (
        exp.select(
            col(ROW_KEY),
            exp.alias_(exp.Min(this=col(CONTENT_HASH)), CONTENT_HASH, quoted=True),
            exp.alias_(exp.Count(this=exp.Star()), DUP_COUNT, quoted=True),
        )
        .from_(rows)
        .group_by(col(ROW_KEY))
    )
    vanished = col(ROW_KEY, "m").is_(exp.null())
    changed = exp.and_(
        col("status", "l").eq(lit(SENT)),
        exp.or_(
            col("content_hash", "l").neq(col(CONTENT_HASH, "m")),
            exp.GT(this=col(DUP_COUNT, "m"), expression=exp.Literal.number(1)),
        ),
    )
    kind = exp.Case(ifs=[exp.If(this=vanished.copy(), true=lit(VANISHED))], default=lit(REPLACED))
    return (
        exp.select(
            *(col(c, "l") for c in DELIVERY_COLUMNS), exp.alias_(kind, DELETE_KIND, quoted=True)
        )
        .from_(_latest(ledger, model, environment, columns=DELIVERY_COLUMNS))
        .join(
            by_key.subquery(ident("m")),
            on=col(ROW_KEY, "m").eq(col("row_key", "l")),
            join_type="left",
        )
        .where(exp.and_(_done(), exp.or_(vanished, changed)))
        .order_by(col("row_key", "l"))
    )


def mirror_live_sql(
    *, model: InteractionModel, ledger: exp.Table, dialect: str, environment: str | None = None
) -> str:
    """How many of a mirror model's rows Voyado holds (latest entry sent): the base of the
    mass-delete guard."""
    return (
        exp.select(exp.Count(this=exp.Star()))
        .from_(_latest(ledger, model, environment))
        .where(col("status", "l").eq(lit(SENT)))
        .sql(dialect=dialect)
    )


def candidates_select(
    *,
    model: InteractionModel,
    source: exp.Table,
    ledger: exp.Table | exp.Subquery,
    keys: exp.Table | exp.Subquery | None = None,
    environment: str | None = None,
) -> exp.Select:
    """Step 2: model rows whose key is not yet ``sent``, with their previous ledger entry.

    With ``keys`` (step 1's result) only the rows with those keys are read past the scan, so
    the wide columns never meet the ledger's sent rows; the content hash is computed for
    candidates alone. The sent filter is applied again, so a key that was sent in between is
    never a candidate.
    """
    used = model.columns_used
    inner = exp.select(
        exp.alias_(row_key(model), ROW_KEY, quoted=True),
        *(exp.alias_(col(name), f"c{i}", quoted=True) for i, name in enumerate(used)),
    ).from_(source)
    on = col("row_key", "l").eq(col(ROW_KEY, "m"))
    content = [f"c{used.index(name)}" for name in content_columns(model)]
    unsent: exp.Expr = exp.or_(col("row_key", "l").is_(exp.null()), _done().not_())
    if model.mirror:
        # Every row of a key step 1 found (new, changed, deleted...), so that duplicates of a
        # changed key are all seen; without keys, every key was found.
        unsent = exp.true()
    wanted = exp.select(col(ROW_KEY)).from_(keys) if keys is not None else None
    if wanted is not None:
        unsent = exp.and_(col(ROW_KEY, "m").isin(query=wanted.copy()), unsent)
    return (
        exp.select(
            col(ROW_KEY, "m"),
            exp.alias_(
                hash_of(content, "m", [type_of(model, c) for c in content_columns(model)]),
                CONTENT_HASH,
                quoted=True,
            ),
            *(col(f"c{i}", "m") for i in range(len(used))),
            exp.alias_(col("status", "l"), PREV_STATUS, quoted=True),
            exp.alias_(col("content_hash", "l"), PREV_HASH, quoted=True),
            exp.alias_(col("first_seen_at", "l"), PREV_FIRST_SEEN, quoted=True),
        )
        .from_(inner.subquery(ident("m")))
        .join(_latest(ledger, model, environment, wanted), on=on, join_type="left")
        .where(unsent)
    )


def create_sql(staging: exp.Table, select: exp.Select, dialect: str) -> list[str]:
    """Replace ``staging`` with the result of ``select``."""
    return [
        exp.Drop(tables=[staging], kind="TABLE", exists=True).sql(dialect=dialect),
        exp.Create(this=staging, kind="TABLE", expression=select).sql(dialect=dialect),
    ]


def pending_select(
    *, model: InteractionModel, candidates: exp.Table | exp.Subquery, retry_rejected: bool
) -> exp.Select:
    """Step 2: one row per key, duplicate count and group hash, unchanged rejections removed."""
    n_used = len(model.columns_used)
    by_key = exp.Window(this=exp.Count(this=exp.Star()), partition_by=[col(ROW_KEY)])
    hash_bounds = [
        exp.Window(this=fn(this=col(CONTENT_HASH)), partition_by=[col(ROW_KEY)])
        for fn in (exp.Min, exp.Max)
    ]
    group_hash = exp.Case(
        ifs=[exp.If(this=by_key.copy().eq(exp.Literal.number(1)), true=col(CONTENT_HASH))],
        default=exp.MD5(
            this=exp.DPipe(
                this=exp.DPipe(
                    this=exp.DPipe(
                        this=lit("dup|"),
                        expression=exp.cast(by_key.copy(), exp.DataType.build("varchar")),
                        safe=True,
                    ),
                    expression=hash_bounds[0],
                    safe=True,
                ),
                expression=hash_bounds[1],
                safe=True,
            )
        ),
    )
    rn = exp.Window(
        this=exp.RowNumber(),
        partition_by=[col(ROW_KEY)],
        order=exp.Order(expressions=[exp.Ordered(this=col(CONTENT_HASH))]),
    )
    grouped = exp.select(
        col(ROW_KEY),
        *(col(f"c{i}") for i in range(n_used)),
        col(PREV_STATUS),
        col(PREV_HASH),
        col(PREV_FIRST_SEEN),
        exp.alias_(by_key, DUP_COUNT, quoted=True),
        exp.alias_(group_hash, GROUP_HASH, quoted=True),
        exp.alias_(rn, "__vs_rn", quoted=True),
    ).from_(candidates)
    retry_condition: exp.Expr = exp.or_(
        col(PREV_STATUS).is_(exp.null()),
        col(PREV_STATUS).isin(*(lit(s.value) for s in RETRYABLE)),
        exp.and_(
            col(PREV_STATUS).eq(lit(REJECTED)),
            exp.true() if retry_rejected else col(PREV_HASH).neq(col(GROUP_HASH)),
        ),
    )
    if model.mirror:
        # A sent or baselined row is a candidate only when its content changed: replaced.
        retry_condition = exp.or_(
            retry_condition, col(PREV_STATUS).isin(*(lit(s.value) for s in DONE))
        )
    numbered = exp.Window(
        this=exp.RowNumber(), order=exp.Order(expressions=[exp.Ordered(this=col(ROW_KEY))])
    )
    filtered = (
        exp.select(exp.Star())
        .from_(grouped.subquery(ident("g")))
        .where(exp.and_(col("__vs_rn").eq(exp.Literal.number(1)), retry_condition))
    )
    # Number after filtering, so that pages are dense.
    return exp.select(exp.Star(), exp.alias_(numbered, SEQ, quoted=True)).from_(
        filtered.subquery(ident("f"))
    )


STAGING_STEPS = ("keys", "candidates", "pending")


def source_table(model: InteractionModel, dialect: str = "duckdb") -> exp.Table:
    """The model's relation as the warehouse knows it (the manifest's ``relation_name``)."""
    rel = model.relation
    return relation_table(rel.rendered, (rel.database, rel.schema, rel.identifier), dialect)


def preview_selects(
    *,
    model: InteractionModel,
    ledger: exp.Table | exp.Subquery,
    retry_rejected: bool,
    dialect: str = "duckdb",
    environment: str | None = None,
) -> tuple[exp.Subquery, exp.Subquery]:
    """The same steps as subqueries for a dry run, which creates nothing:
    (candidates, pending)."""
    source = source_table(model, dialect)
    keys = unsent_keys_select(
        model=model, source=source, ledger=ledger, environment=environment
    ).subquery(ident("k"))
    candidates = candidates_select(
        model=model, source=source, ledger=ledger, keys=keys, environment=environment
    )
    pending = pending_select(
        model=model, candidates=candidates.subquery(ident("c")), retry_rejected=retry_rejected
    )
    return candidates.subquery(ident("c")), pending.subquery(ident("p"))


def page_sql(
    *,
    model: InteractionModel,
    pending: exp.Table | exp.Subquery,
    after: int,
    size: int,
    dialect: str,
) -> str:
    """One page of pending rows by sequence number (keyset paging, no OFFSET)."""
    n_used = len(model.columns_used)
    return (
        exp.select(
            col(SEQ),
            col(ROW_KEY),
            col(GROUP_HASH),
            col(DUP_COUNT),
            col(PREV_STATUS),
            col(PREV_FIRST_SEEN),
            *(col(f"c{i}") for i in range(n_used)),
        )
        .from_(pending)
        .where(
            exp.and_(
                exp.GT(this=col(SEQ), expression=exp.Literal.number(after)),
                exp.LTE(this=col(SEQ), expression=exp.Literal.number(after + size)),
            )
        )
        .order_by(col(SEQ))
        .sql(dialect=dialect)
    )


def count_sql(
    source: exp.Table | exp.Subquery, dialect: str, extra: Sequence[exp.Expression] = ()
) -> str:
    return exp.select(exp.Count(this=exp.Star()), *extra).from_(source).sql(dialect=dialect)


def pending_rows_sql(pending: exp.Table | exp.Subquery, dialect: str) -> str:
    """Number of pending keys, the model rows behind them (duplicates count each row), and
    the keys never sent (no ledger entry, or baselined: the mass-send guard's count)."""
    # Baselined rows were never sent either: a mirror model's baselined rows that all changed
    # are as many first sends.
    fresh = exp.or_(col(PREV_STATUS).is_(exp.null()), col(PREV_STATUS).eq(lit(Status.BASELINED)))
    new = exp.Case(
        ifs=[exp.If(this=fresh, true=exp.Literal.number(1))],
        default=exp.Literal.number(0),
    )
    return (
        exp.select(
            exp.Count(this=exp.Star()),
            exp.Coalesce(this=exp.Sum(this=col(DUP_COUNT)), expressions=[exp.Literal.number(0)]),
            exp.Coalesce(this=exp.Sum(this=new), expressions=[exp.Literal.number(0)]),
        )
        .from_(pending)
        .sql(dialect=dialect)
    )


def drop_sql(staging: exp.Table, dialect: str) -> str:
    return exp.Drop(tables=[staging], kind="TABLE", exists=True).sql(dialect=dialect)
