"""The warehouse of a dbt target, opened through dbt's own adapter.

Profiles, targets, ``env_var()`` in profiles.yml and every adapter dbt supports come for free,
and voyado-sync reads exactly the database dbt wrote. dbt is imported lazily (it costs seconds).

DuckDB and Postgres are driven through the adapter's DB-API handle (no agate conversion);
other adapters go through ``adapter.execute``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any, TypeVar

from sqlglot import exp

from voyado_sync import settings
from voyado_sync.exceptions import ConfigError, WarehouseError
from voyado_sync.spec import Relation
from voyado_sync.warehouse.dialects import dialect_of, relation_table

# dbt adapter type -> sqlglot dialect
DIALECTS = {
    "duckdb": "duckdb",
    "postgres": "postgres",
    "redshift": "redshift",
    "snowflake": "snowflake",
    "bigquery": "bigquery",
    "databricks": "databricks",
    "spark": "spark",
    "trino": "trino",
}
_DBAPI_ADAPTERS = {"duckdb", "postgres", "redshift"}
_LOCK_PID = re.compile(r"PID (\d+)")
_log = logging.getLogger("voyado_sync")
_T = TypeVar("_T")


def _first_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text[:500] or type(exc).__name__


MEMORY_LIMIT_ENV = settings.ENV_DUCKDB_MEMORY_LIMIT
DEFAULT_DUCKDB_MEMORY_LIMIT = "128MB"
# What a join of keys alone may use under the default (see DbtWarehouse.keys_join): its hash
# table holds one narrow column per sent row and is freed when the statement ends.
KEYS_JOIN_MEMORY_LIMIT = "512MB"


def _set_sql(key: str, value: object) -> str:
    item = exp.EQ(
        this=exp.to_identifier(key, quoted=True), expression=exp.Literal.string(str(value))
    )
    return exp.Set(expressions=[exp.SetItem(this=item)]).sql("duckdb")


# The keys of a dbt-duckdb output voyado-sync opens itself; any other (attach, extensions,
# plugins, MotherDuck, ...) and dbt-duckdb opens the database.
_DIRECT_DUCKDB_KEYS = frozenset(
    {"type", "path", "threads", "schema", "database", "settings", "config_options"}
)


def direct_duckdb_output(
    project_dir: Path, profiles_dir: Path, *, target: str | None, profile: str | None
) -> tuple[str, dict[str, Any]] | None:
    """(target name, rendered output) of a plain DuckDB file target; None: let dbt open it.

    Reads profiles.yml as dbt does for the simple case: the project's profile, the given or
    default target, ``env_var()`` rendered. Whatever this does not understand (other Jinja,
    other keys, other adapters, a file it cannot read) falls back to dbt, which reports errors
    in its own words. ``VOYADO_SYNC_OPEN_WITH_DBT=1`` forces dbt.
    """
    if settings.open_with_dbt():
        return None
    try:
        import yaml  # type: ignore[import-untyped]  # installed with dbt-core

        project = yaml.safe_load((project_dir / "dbt_project.yml").read_text())
        profiles = yaml.safe_load((profiles_dir / "profiles.yml").read_text())
        name = profile or project.get("profile")
        entry = profiles.get(_render(name))
        target_name = _render(target or entry.get("target") or "default")
        output = _render(entry["outputs"][target_name])
    except Exception:
        return None
    if not isinstance(output, dict) or output.get("type") != "duckdb":
        return None
    if set(output) - _DIRECT_DUCKDB_KEYS or not isinstance(output.get("path"), str):
        return None
    path = output["path"]
    if path == ":memory:" or path.startswith("md:") or "://" in path:
        return None
    database = output.get("database")
    if database is not None and database != _duckdb_database(path):
        return None  # dbt-duckdb refuses this with its own message
    for key in ("settings", "config_options"):
        if not isinstance(output.get(key) or {}, dict):
            return None
    return str(target_name), output


def _render(value: Any) -> Any:
    """A profiles.yml value rendered with ``env_var()``; any other name or filter raises."""
    if isinstance(value, dict):
        return {k: _render(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_render(v) for v in value]
    if not isinstance(value, str) or ("{{" not in value and "{%" not in value):
        return value
    import jinja2

    def env_var(name: str, default: str | None = None) -> str:
        if name in os.environ:
            return os.environ[name]
        if default is None:
            raise KeyError(name)
        return default

    environment = jinja2.Environment(undefined=jinja2.StrictUndefined, autoescape=False)
    return environment.from_string(value).render(env_var=env_var)


def _duckdb_database(path: str) -> str:
    # dbt-duckdb's rule: the catalog is named after the file, "my.db.duckdb" -> "my".
    return os.path.basename(path).lstrip(".").split(".")[0]


class _ShortDuckDB:
    """A DuckDB file opened only for the statements voyado-sync runs, then closed.

    DuckDB lets one process at a time write a file, so a connection held for a whole run
    (minutes, hours at Voyado's pace) makes every ``dbt build`` on the file fail. Here
    ``cursor()`` opens the file when a statement needs it (waiting, with a message, while
    another process such as dbt holds it) and :meth:`release` closes it after each call of
    the Warehouse protocol. BEGIN, the statements and COMMIT of one call share one connection.
    """

    WAIT_SECONDS = 600.0

    def __init__(self, path: str, config: dict[str, Any], on_open: Callable[[Any], None]) -> None:
        self._path, self._config, self._on_open = path, config, on_open
        self._connection: Any = None

    def cursor(self) -> Any:
        if self._connection is None:
            self._connection = self._connect()
            try:
                self._on_open(self._connection)
            except Exception:
                self.release()
                raise
        return self._connection

    def _connect(self) -> Any:
        import duckdb

        deadline = time.monotonic() + self.WAIT_SECONDS
        told = False
        while True:
            try:
                return duckdb.connect(self._path, config=self._config)
            except duckdb.IOException as exc:
                text = str(exc).lower()
                if "lock" not in text or time.monotonic() > deadline:
                    raise
                if not told:
                    pid = _LOCK_PID.search(str(exc))
                    _log.warning(
                        "the DuckDB file %s is in use by another process%s (a dbt build?): "
                        "waiting for it, then carrying on",
                        self._path,
                        f" (PID {pid.group(1)})" if pid else "",
                    )
                    told = True
                time.sleep(0.2)

    def release(self) -> None:
        if self._connection is not None:
            connection, self._connection = self._connection, None
            with contextlib.suppress(Exception):
                connection.close()

    def close(self) -> None:
        self.release()


def _args(statement: tuple[str, Sequence[Any]]) -> tuple[Any, ...]:
    # No parameters: execute(sql) alone, so a literal % means itself to psycopg2.
    sql, params = statement
    return (sql, list(params)) if params else (sql,)


def _silence_dbt_logging() -> None:
    # dbt logs adapter registration and queries to stdout; voyado-sync's stdout is its own
    # (summaries, --json), so drop dbt's loggers.
    from dbt_common.events.event_manager_client import cleanup_event_logger

    cleanup_event_logger()


class DbtWarehouse:
    """A live connection to the warehouse of one dbt project + profile + target."""

    def __init__(
        self,
        *,
        project_dir: Path,
        profiles_dir: Path | None = None,
        target: str | None = None,
        profile: str | None = None,
    ) -> None:
        self.project_dir = project_dir.resolve()
        self.profiles_dir = (
            profiles_dir or settings.default_profiles_dir(self.project_dir)
        ).resolve()
        self._adapter: Any = None
        # DuckDB's memory limit in force (None: DuckDB's default or not DuckDB), and the
        # higher limits still to try when voyado-sync chose it.
        self.memory_limit: str | None = None
        self._memory_steps: list[str] = []
        try:
            output = direct_duckdb_output(
                self.project_dir, self.profiles_dir, target=target, profile=profile
            )
            if output is not None:
                self._open_duckdb(*output)
            else:
                self._open(target=target, profile=profile)
        except (ConfigError, WarehouseError):
            raise
        except Exception as exc:
            raise WarehouseError(
                f"cannot open the warehouse of dbt project {self.project_dir} "
                f"(profiles.yml in {self.profiles_dir}): {_first_line(exc)}"
            ) from exc

    def _open(self, *, target: str | None, profile: str | None) -> None:
        from argparse import Namespace

        from dbt.adapters.factory import get_adapter, register_adapter, reset_adapters
        from dbt.config.runtime import RuntimeConfig, load_profile, load_project
        from dbt.flags import get_flags, set_from_args
        from dbt.mp_context import get_mp_context
        from dbt_common.context import set_invocation_context

        _silence_dbt_logging()
        # env_var() in profiles.yml reads the invocation context, which dbt's CLI sets up.
        set_invocation_context(dict(os.environ))
        if not (self.project_dir / "dbt_project.yml").exists():
            raise ConfigError([f"no dbt_project.yml in {self.project_dir}: pass --project-dir"])
        if not (self.profiles_dir / "profiles.yml").exists():
            raise ConfigError(
                [f"no profiles.yml in {self.profiles_dir}: pass --profiles-dir or DBT_PROFILES_DIR"]
            )
        args = Namespace(
            project_dir=str(self.project_dir),
            profiles_dir=str(self.profiles_dir),
            target=target,
            profile=profile,
            threads=None,
            vars={},
            send_anonymous_usage_stats=False,
        )
        set_from_args(args, {})
        try:
            dbt_profile = load_profile(str(self.project_dir), {}, profile, target, None)
            project = load_project(str(self.project_dir), False, dbt_profile, {})
        except Exception as exc:
            raise ConfigError(
                [f"dbt could not load the profile or project: {_first_line(exc)}"]
            ) from exc
        config = RuntimeConfig.from_parts(project, dbt_profile, get_flags())
        self.adapter_type: str = str(config.credentials.type)
        self.dialect = DIALECTS.get(self.adapter_type, self.adapter_type)
        self.target_name: str = str(config.target_name)
        self.database: str | None = getattr(config.credentials, "database", None) or None
        self.target_schema: str = str(getattr(config.credentials, "schema", "") or "")
        self.description = self._describe(config.credentials)
        self.array_params = self.adapter_type in ("duckdb", "postgres")
        if self.adapter_type == "duckdb":
            self._check_duckdb_file(config.credentials)
        # dbt keeps the first adapter registered per type for the life of the process; a second
        # run in the same process (tests, orchestrators) must not reuse the first one's target.
        reset_adapters()
        register_adapter(config, get_mp_context())
        self._adapter = get_adapter(config)
        self._conn_ctx = self._adapter.connection_named("voyado-sync")
        self._conn_ctx.__enter__()
        try:
            self._handle = self._adapter.connections.get_thread_connection().handle
        except Exception as exc:
            self._conn_ctx.__exit__(None, None, None)
            raise self._translate(exc, "connect") from exc
        self._utc_session()
        if self.adapter_type == "duckdb":
            creds = config.credentials
            self._limit_duckdb_memory(
                {
                    **(getattr(creds, "config_options", None) or {}),
                    **(getattr(creds, "settings", None) or {}),
                }
            )

    def _open_duckdb(self, target_name: str, output: dict[str, Any]) -> None:
        """Open a plain DuckDB target the way dbt-duckdb does, without importing dbt.

        Importing dbt costs seconds and about 100 MB; for a DuckDB file the adapter adds
        nothing voyado-sync needs. Anything beyond a path and settings goes through dbt.
        """

        creds = SimpleNamespace(**output)
        self.adapter_type = "duckdb"
        self.dialect = "duckdb"
        self.target_name = target_name
        self.database = _duckdb_database(str(output["path"]))
        self.target_schema = str(output.get("schema") or "main")
        self.description = self._describe(creds)
        self.array_params = True
        self._check_duckdb_file(creds)
        settings = {str(k): str(v) for k, v in (output.get("settings") or {}).items()}
        config: dict[str, Any] = dict(output.get("config_options") or {})

        def on_open(connection: Any) -> None:
            try:
                for key, value in settings.items():
                    connection.execute(_set_sql(key, value))
            except Exception as exc:
                raise WarehouseError(
                    f"{self.description}: a DuckDB setting in profiles.yml was refused: "
                    f"{_first_line(exc)}"
                ) from exc
            if self.memory_limit is not None and "memory_limit" not in settings:
                connection.execute(_set_sql("memory_limit", self.memory_limit))
            utc = dialect_of("duckdb").utc_session
            if utc and "TimeZone" not in settings:
                connection.execute(utc)

        self._handle = _ShortDuckDB(self._duckdb_path(creds), config, on_open)
        try:
            self._handle.cursor()
        except WarehouseError:
            raise
        except Exception as exc:
            raise self._translate(exc, "connect") from exc
        self._limit_duckdb_memory({**config, **settings})
        self._release()

    def _utc_session(self) -> None:
        """Run the session in UTC, so that no rendering of a timestamp depends on the
        machine's time zone (row keys, content hashes, values read back)."""
        statement = dialect_of(self.dialect).utc_session
        if statement is None:
            return
        try:
            self.execute(statement)
        except WarehouseError as exc:
            _log.debug("the session time zone could not be set to UTC: %s", exc)

    def _limit_duckdb_memory(self, profile: dict[str, Any]) -> None:
        """Cap DuckDB's buffer pool unless the profile does: its default is 80% of RAM, which
        staging a large diff fills and keeps for the whole run."""
        if "memory_limit" in profile or "max_memory" in profile:
            self.memory_limit = str(profile.get("memory_limit") or profile.get("max_memory"))
            return
        chosen = settings.duckdb_memory_limit()
        limit = chosen or DEFAULT_DUCKDB_MEMORY_LIMIT
        if limit.lower() == "off":
            return
        try:
            self._handle.cursor().execute(_set_sql("memory_limit", limit))
        except Exception as exc:
            self.close()
            raise ConfigError(
                [f"{MEMORY_LIMIT_ENV}={limit!r} is not a DuckDB memory size: {_first_line(exc)}"]
            ) from exc
        self.memory_limit = limit
        if not chosen:
            # The default is a guess that fits most models; a wider one gets more memory
            # rather than a failed run. A limit the user chose is never raised.
            self._memory_steps = ["512MB", "2GB", "off"]

    def _more_memory(self, exc: BaseException) -> bool:
        """After DuckDB ran out of voyado-sync's default limit: raise it and say so."""
        text = str(exc).lower()
        if not self._memory_steps or not ("out of memory" in text or "failed to pin block" in text):
            return False
        limit = self._memory_steps.pop(0)
        cursor = self._handle.cursor()
        if limit == "off":
            cursor.execute("RESET memory_limit")  # back to DuckDB's own default
        else:
            cursor.execute(_set_sql("memory_limit", limit))
        _log.warning(
            "DuckDB needed more than %s for this model's diff; retrying with %s. Set "
            "memory_limit under settings in profiles.yml or %s to choose the limit.",
            self.memory_limit,
            "no limit" if limit == "off" else limit,
            MEMORY_LIMIT_ENV,
        )
        self.memory_limit = None if limit == "off" else limit
        return True

    @contextlib.contextmanager
    def keys_join(self) -> Iterator[None]:
        """Let the statements in this block (a join of keys alone) use more memory.

        The default cap is sized for staging wide rows, whose pages DuckDB keeps for the whole
        run. The diff's key anti-join keeps nothing: its hash table of sent keys is freed when
        the statement ends, and spilling it under 128MB doubled a 5M-row no-op. Only
        voyado-sync's own default is raised; a limit the user chose is kept as is.
        """
        if self.memory_limit != DEFAULT_DUCKDB_MEMORY_LIMIT or not self._memory_steps:
            yield
            return
        steps = self._memory_steps
        try:
            self._handle.cursor().execute(_set_sql("memory_limit", KEYS_JOIN_MEMORY_LIMIT))
        except Exception as exc:  # not worth failing a run over: stay at the cap
            _log.warning("could not raise DuckDB's memory_limit for the diff: %s", _first_line(exc))
            raised = False
        else:
            raised = True
        finally:
            self._release()
        if not raised:
            yield
            return
        self.memory_limit = KEYS_JOIN_MEMORY_LIMIT
        if KEYS_JOIN_MEMORY_LIMIT in steps:  # an out-of-memory error goes to the next step
            self._memory_steps = steps[steps.index(KEYS_JOIN_MEMORY_LIMIT) + 1 :]
        try:
            yield
        finally:
            try:
                self._handle.cursor().execute(_set_sql("memory_limit", DEFAULT_DUCKDB_MEMORY_LIMIT))
            except Exception as exc:  # DuckDB could not evict enough: keep the higher limit
                _log.warning(
                    "DuckDB's memory_limit stays at %s for this run (could not return to %s): %s",
                    self.memory_limit or "its default",
                    DEFAULT_DUCKDB_MEMORY_LIMIT,
                    _first_line(exc),
                )
            else:
                self.memory_limit = DEFAULT_DUCKDB_MEMORY_LIMIT
                self._memory_steps = steps
            finally:
                self._release()

    def _describe(self, creds: Any) -> str:
        if self.adapter_type == "duckdb":
            return f"DuckDB file {self._duckdb_path(creds)} (target {self.target_name})"
        host = getattr(creds, "host", None) or getattr(creds, "account", None) or ""
        where = f" on {host}" if host else ""
        return f"{self.adapter_type} database {self.database}{where} (target {self.target_name})"

    @staticmethod
    def _duckdb_path(creds: Any) -> str:
        path = str(getattr(creds, "path", ":memory:"))
        if path == ":memory:" or path.startswith("md:") or "://" in path:
            return path
        return str((Path.cwd() / path).resolve())

    def _check_duckdb_file(self, creds: Any) -> None:
        raw = str(getattr(creds, "path", ":memory:"))
        resolved = self._duckdb_path(creds)
        if raw == ":memory:":
            raise ConfigError(
                [
                    "the dbt target uses an in-memory DuckDB: there is nothing to sync from and no "
                    "place for the ledger; set a file path in profiles.yml"
                ]
            )
        if raw.startswith("md:") or "://" in raw or Path(resolved).exists():
            return
        hint = ""
        in_project = self.project_dir / raw
        if not Path(raw).is_absolute() and in_project.exists():
            hint = (
                f" A file exists at {in_project}: a relative path in profiles.yml resolves "
                "against the current directory, as in dbt; run voyado-sync from the directory "
                "you ran dbt from."
            )
        raise WarehouseError(
            f"the DuckDB file {resolved} does not exist: run dbt build first.{hint}"
        )

    def _translate(self, exc: BaseException, purpose: str) -> WarehouseError:
        text = _first_line(exc)
        # Only DuckDB's file-lock conflict: "failed to pin block" (out of memory) also says lock.
        if self.adapter_type == "duckdb" and (
            "could not set lock on file" in text.lower() or "conflicting lock" in text.lower()
        ):
            pid = _LOCK_PID.search(text)
            holder = f" (PID {pid.group(1)})" if pid else ""
            return WarehouseError(
                f"the {self.description} is locked by another process{holder}: a dbt build or "
                "another voyado-sync run is using it. DuckDB allows one writer at a time; rerun "
                "when it has finished."
            )
        hint = ""
        if self.adapter_type == "duckdb" and (
            "out of memory" in text.lower() or "failed to pin block" in text.lower()
        ):
            hint = (
                f" DuckDB ran out of its memory limit ({self.memory_limit or 'its default'})."
                " Raise it with memory_limit under settings in profiles.yml or with "
                f"{MEMORY_LIMIT_ENV} (for example 1GB)."
            )
        return WarehouseError(f"{self.description}: {purpose} failed: {text}{hint}")

    # -- the Warehouse protocol ---------------------------------------------------------------

    def _with_memory(self, work: Callable[[], _T]) -> _T:
        """Run ``work``; when DuckDB ran out of voyado-sync's default limit, raise it and retry."""
        while True:
            try:
                return work()
            except WarehouseError as exc:
                if not self._more_memory(exc):
                    raise

    def _release(self) -> None:
        if isinstance(self._handle, _ShortDuckDB):
            self._handle.release()

    def query(self, sql: str) -> list[tuple[Any, ...]]:
        try:
            return self._timed(lambda: self._with_memory(lambda: self._query(sql)))
        finally:
            self._release()

    #: Seconds per statement, smoothed: how slow this warehouse answers (see stage.page).
    latency = 0.0

    def _timed(self, work: Callable[[], _T]) -> _T:
        started = time.monotonic()
        try:
            return work()
        finally:
            took = time.monotonic() - started
            self.latency = took if not self.latency else 0.7 * self.latency + 0.3 * took

    def _query(self, sql: str) -> list[tuple[Any, ...]]:
        try:
            if self.adapter_type in _DBAPI_ADAPTERS:
                cursor = self._handle.cursor()
                cursor.execute(sql)
                rows = [tuple(r) for r in cursor.fetchall()]
                self._end_read()
                return rows
            _, table = self._adapter.execute(sql, auto_begin=False, fetch=True)
            return [tuple(r) for r in table.rows]
        except Exception as exc:
            self._rollback()
            raise self._translate(exc, "query") from exc

    def execute(self, sql: str) -> None:
        self.execute_many([sql])

    def execute_many(self, statements: Sequence[str]) -> None:
        if not statements:
            return
        if self.adapter_type in _DBAPI_ADAPTERS:
            self.execute_params([(sql, ()) for sql in statements])
            return
        try:
            started = time.monotonic()
            for sql in statements:
                self._adapter.execute(sql, auto_begin=True, fetch=False)
            self._adapter.connections.commit_if_has_connection()
            took = (time.monotonic() - started) / len(statements)
            self.latency = took if not self.latency else 0.7 * self.latency + 0.3 * took
        except Exception as exc:
            self._rollback()
            raise self._translate(exc, "write") from exc

    def execute_params(self, statements: Sequence[tuple[str, Sequence[Any]]]) -> None:
        try:
            self._timed(lambda: self._with_memory(lambda: self._execute_params(statements)))
        finally:
            self._release()

    def _execute_params(self, statements: Sequence[tuple[str, Sequence[Any]]]) -> None:
        if not statements:
            return
        if self.adapter_type not in _DBAPI_ADAPTERS:
            raise NotImplementedError(f"parameterised statements on {self.adapter_type}")
        try:
            cursor = self._handle.cursor()
            if self.adapter_type == "duckdb":
                if len(statements) == 1:
                    cursor.execute(*_args(statements[0]))
                    return
                cursor.execute("BEGIN TRANSACTION")
                for statement in statements:
                    cursor.execute(*_args(statement))
                cursor.execute("COMMIT")
            else:
                for statement in statements:
                    cursor.execute(*_args(statement))
                self._handle.commit()
        except Exception as exc:
            self._rollback()
            raise self._translate(exc, "write") from exc

    def columns(self, relation: Relation) -> dict[str, str] | None:
        return self.columns_of(
            relation_table(
                relation.rendered,
                (relation.database, relation.schema, relation.identifier),
                self.dialect,
            )
        )

    def columns_of(self, relation: exp.Table) -> dict[str, str] | None:
        quirks = dialect_of(self.dialect)
        try:
            rows = self.query(quirks.columns_sql(relation))
        except WarehouseError:
            if quirks.missing_is_error():
                return None
            raise
        return quirks.columns_from(rows)

    def close(self) -> None:
        if self._adapter is None:
            with contextlib.suppress(Exception):  # must never mask the error that led here
                self._handle.close()
            return
        try:
            self._conn_ctx.__exit__(None, None, None)
            self._adapter.cleanup_connections()
            if self.adapter_type == "duckdb":
                # dbt-duckdb keeps one database instance per process; close it so the file
                # lock is released now and a later open in this process sees the right file.
                from dbt.adapters.duckdb.connections import DuckDBConnectionManager

                if DuckDBConnectionManager._ENV is not None:
                    DuckDBConnectionManager._ENV.close()
                DuckDBConnectionManager.close_all_connections()
        except Exception:  # closing must never mask the error that led here
            pass

    # -- helpers ------------------------------------------------------------------------------

    def _end_read(self) -> None:
        # psycopg2 opens a transaction even for a SELECT; end it so we never hold locks.
        if self.adapter_type != "duckdb" and not getattr(self._handle, "autocommit", True):
            self._handle.commit()

    def _rollback(self) -> None:
        try:
            if self.adapter_type == "duckdb":
                self._handle.cursor().execute("ROLLBACK")
            elif self.adapter_type in _DBAPI_ADAPTERS:
                self._handle.rollback()
        except Exception:  # nothing to roll back is fine
            pass
