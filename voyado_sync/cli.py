"""The ``voyado-sync`` command: a thin click layer over the engine.

Exit codes: 0 everything selected was delivered (or nothing to do); 1 it ran, but some rows
were rejected or failed (or validate found problems); 2 it could not run.
Heavy imports (dbt, duckdb, httpx) happen inside the commands, so ``--help`` is instant.
"""

from __future__ import annotations

import functools
import json
import logging
import sys
import time
import traceback
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TextIO, TypeVar

import click

from voyado_sync import __version__, settings
from voyado_sync.exceptions import ConfigError, ConfigProblem, VoyadoSyncError, error_kind

if TYPE_CHECKING:
    from voyado_sync.settings import RunOptions

F = TypeVar("F", bound=Callable[..., Any])
EXIT_OK, EXIT_PROBLEMS, EXIT_CANNOT_RUN = 0, 1, 2


def _project_options(func: F) -> F:
    options = [
        click.option(
            "--project-dir",
            type=click.Path(file_okay=False, path_type=Path),
            default=Path("."),
            show_default=True,
            envvar="DBT_PROJECT_DIR",
            help="The dbt project (where dbt_project.yml is).",
        ),
        click.option(
            "--profiles-dir",
            type=click.Path(file_okay=False, path_type=Path),
            default=None,
            envvar="DBT_PROFILES_DIR",
            help="Where profiles.yml is (dbt's default: current directory, then ~/.dbt).",
        ),
        click.option(
            "--target", "-t", default=None, help="The dbt target (default: the profile's)."
        ),
        click.option(
            "--target-path",
            default=None,
            envvar="DBT_TARGET_PATH",
            help="dbt's target path, where manifest.json is (default: target).",
        ),
        click.option(
            "--select",
            "-s",
            "select",
            multiple=True,
            help="dbt's node selection: names, tag:, path:, fqn:, config.KEY:VALUE, +/@ graph "
            "operators; a space means or, a comma means and (default: every model with "
            "meta.voyado).",
        ),
        click.option(
            "--exclude",
            "exclude",
            multiple=True,
            help="Models to leave out, in the same grammar as --select.",
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _options(
    *,
    project_dir: Path,
    profiles_dir: Path | None,
    target: str | None,
    target_path: str | None,
    select: tuple[str, ...],
    exclude: tuple[str, ...] = (),
    **more: Any,
) -> RunOptions:
    from voyado_sync.settings import RunOptions

    # One selector for every command: each -s may hold several space-separated criteria.
    return RunOptions(
        project_dir=project_dir,
        profiles_dir=profiles_dir,
        target=target,
        target_path=target_path,
        select=select,
        exclude=exclude,
        **more,
    )


def _redacted(text: str) -> str:
    """``text`` with the API key, the webhook URL and proxy credentials masked in every
    encoding a server may have echoed them in (raw, JSON-escaped, URL-encoded, base64...)."""
    from voyado_sync.voyado.redact import proxy_secrets

    secrets = (*settings.secrets(), *proxy_secrets())
    return _redactor(secrets)(text) if secrets and text else text


@functools.lru_cache(maxsize=4)
def _redactor(secrets: tuple[str, ...]) -> Callable[[str], str]:
    from voyado_sync.voyado.redact import Redactor

    return Redactor(secrets)


class _LogFormat:
    """``--log-format``: stderr as text lines, or one JSON object per line (set per invocation
    by the group, so tests that invoke the CLI repeatedly in one process start clean)."""

    json = False


class _JsonLogHandler(logging.Handler):
    """voyado-sync's own Python log records (the ``voyado_sync`` logger) as JSON lines."""

    def emit(self, record: logging.LogRecord) -> None:
        log(record.getMessage(), level=record.levelname.lower(), logger=record.name)


_JSON_HANDLER = _JsonLogHandler()


def _set_log_format(name: str) -> None:
    _LogFormat.json = name == "json"
    logger = logging.getLogger("voyado_sync")
    if _LogFormat.json:
        if _JSON_HANDLER not in logger.handlers:
            logger.addHandler(_JSON_HANDLER)
        logger.propagate = False
    elif _JSON_HANDLER in logger.handlers:
        logger.removeHandler(_JSON_HANDLER)
        logger.propagate = True


def log(message: str, *, level: str = "info", json_line: bool | None = None, **fields: Any) -> None:
    """One message on stderr: as is, or with ``--log-format json`` one JSON object
    ``{"time", "level", "message", ...fields}`` per line, for orchestrators' log collectors.
    Every progress line and message of the CLI goes through here (stdout stays the summary's
    or --json's). The API key is masked either way."""
    if _LogFormat.json if json_line is None else json_line:
        record: dict[str, Any] = {
            "time": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": level,
            "message": _redacted(message).strip(),
            **fields,
        }
        click.echo(json.dumps(record, default=str, ensure_ascii=False), err=True)
    else:
        click.echo(_redacted(message), err=True)


def _problem_dict(problem: ConfigProblem) -> dict[str, Any]:
    return {"model": problem.model, "key": problem.key, "message": problem.message}


def _fail(exc: BaseException, *, as_json: bool = False) -> NoReturn:
    """The one error handler of every command: a message on stderr (and the JSON error
    envelope on stdout with --json), exit code 2. An error that is not one of voyado-sync's
    own shows its traceback with VOYADO_SYNC_DEBUG=1. A ConfigError's envelope also lists
    its problems as ``{model, key, message}``, the shape of ``validate --json``."""
    expected = isinstance(exc, VoyadoSyncError)
    message = _redacted(str(exc) if expected else f"unexpected {type(exc).__name__}: {exc}")
    error: dict[str, Any] = {"message": message, "kind": error_kind(exc)}
    if isinstance(exc, ConfigError):
        error["problems"] = [_problem_dict(p) for p in exc.problems]
    if as_json:
        _echo_json({"exit_code": EXIT_CANNOT_RUN, "error": error})
    log(f"Error: {message}", level="error", kind=error["kind"])
    if not expected:
        if settings.debug():
            trace = "".join(traceback.format_exception(exc))
            log(trace, level="error", kind="traceback")
        else:
            log(
                f"  (a bug in voyado-sync: set {settings.ENV_DEBUG}=1 to see the traceback, "
                "and please report it)",
                level="error",
            )
    raise SystemExit(EXIT_CANNOT_RUN)


def _echo_json(document: dict[str, Any]) -> None:
    """One JSON document on stdout: every command's --json, non-ASCII as is."""
    click.echo(_redacted(json.dumps(document, indent=2, default=str, ensure_ascii=False)))


def _envelope(document: dict[str, Any], *, exit_code: int) -> None:
    """A command's --json document in the shared envelope: ``exit_code`` always, ``error``
    (``{message, kind}``, or null) always, then the command's own fields."""
    rest = {k: v for k, v in document.items() if k not in ("exit_code", "error")}
    _echo_json({"exit_code": exit_code, "error": document.get("error"), **rest})


@contextmanager
def handled(*, as_json: bool = False) -> Iterator[None]:
    """Every command's body runs inside this: errors go to :func:`_fail`."""
    try:
        yield
    except (SystemExit, click.exceptions.Exit, click.ClickException, KeyboardInterrupt):
        raise
    except Exception as exc:
        _fail(exc, as_json=as_json)


class _LazyGroup(click.Group):
    """Commands whose modules are heavy (the emulator) are imported only when run."""

    lazy: dict[str, tuple[str, str, str]] = {
        "emulator": (
            "voyado_sync.emulator.command",
            "emulator_command",
            "Run a local Voyado Engage emulator (for demos and tests).",
        ),
        "schemas": (
            "voyado_sync.cli_schemas",
            "schemas",
            "List, diff, push and delete interaction schemas.",
        ),
    }

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted([*super().list_commands(ctx), *self.lazy])

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.lazy and cmd_name not in self.commands:
            module, attr, _ = self.lazy[cmd_name]
            command: click.Command = getattr(__import__(module, fromlist=[attr]), attr)
            self.add_command(command, cmd_name)
        return super().get_command(ctx, cmd_name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, self.lazy[name][2]) for name in self.lazy]
        rows += [
            (name, cmd.get_short_help_str(limit=formatter.width - 20))
            for name, cmd in self.commands.items()
            if name not in self.lazy and not cmd.hidden
        ]
        with formatter.section("Commands"):
            formatter.write_dl(sorted(rows))


@click.group(
    cls=_LazyGroup,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.version_option(__version__, prog_name="voyado-sync")
@click.option(
    "--log-format",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="Messages and progress on stderr as text, or one JSON object per line.",
)
def cli(log_format: str) -> None:
    """Send rows of dbt models to Voyado Engage as interactions: exactly once, at Voyado's pace.

    Declare a model's interactions under config.meta.voyado in its YAML, dbt build, then
    `voyado-sync run`. VOYADO_BASE_URL and VOYADO_API_KEY come from the environment.
    """
    _set_log_format(log_format)


class _Progress:
    """Progress of each model's sending, on stderr (stdout stays the summary's or --json's).

    On a terminal, one bar per model redrawn in place: rows done, rate, time left. Otherwise
    (logs, CI) a plain line at most every ``interval`` seconds. Either way a final line per
    model says how long it took. The rate is measured over the last ``window`` seconds, so the
    time left follows throttling and recovery instead of the run's average. ``clock``,
    ``stream`` and ``tty`` are injectable for tests.
    """

    def __init__(
        self,
        *,
        stream: TextIO | None = None,
        tty: bool | None = None,
        clock: Callable[[], float] = time.monotonic,
        interval: float = 10.0,
        window: float = 30.0,
        width: int = 24,
        json_lines: bool | None = None,
    ) -> None:
        self.stream = stream if stream is not None else sys.stderr
        #: --log-format json: each line a JSON object (through :func:`log`), never a bar.
        self.json = _LogFormat.json if json_lines is None else json_lines
        self.tty = False if self.json else (self.stream.isatty() if tty is None else tty)
        self.clock = clock
        self.interval = interval
        self.window = window
        self.width = width
        self._started: dict[str, float] = {}
        self._samples: dict[str, deque[tuple[float, int]]] = {}
        self._finished: set[str] = set()
        self._last_line: dict[str, float] = {}
        self._open_bar = False

    def __call__(self, model: str, done: int, total: int) -> None:
        if total <= 0 or model in self._finished:
            return  # nothing to send is not progress; the summary says so
        now = self.clock()
        start = self._started.setdefault(model, now)
        samples = self._samples.setdefault(model, deque())
        samples.append((now, done))
        # Keep one sample at or before the window's start, so the rate spans the whole window.
        while len(samples) > 2 and samples[1][0] <= now - self.window:
            samples.popleft()
        if done >= total:
            self._finished.add(model)
            elapsed = now - start
            average = f", {done / elapsed:.1f}/s" if elapsed > 0 else ""
            self._line(
                f"{model}: {done:,}/{total:,} rows done in {_duration(elapsed)}{average}",
                model=model,
                done=done,
                total=total,
                seconds=round(elapsed, 3),
            )
            return
        first_t, first_done = samples[0]
        rate = (done - first_done) / (now - first_t) if now > first_t else None
        # No rate yet (first report), or nothing done within the window (throttled): no guess.
        left = _duration((total - done) / rate) if rate else "--"
        speed = f"{rate:.1f}/s" if rate is not None else "--/s"
        text = f"{model}: {done:,}/{total:,} rows ({done / total:.0%}), {speed}, {left} left"
        if self.tty:
            filled = int(self.width * done / total)
            bar = "#" * filled + "." * (self.width - filled)
            click.echo(f"\r[{bar}] {text}\033[K", file=self.stream, nl=False, color=True)
            self._open_bar = True
        elif now - self._last_line.get(model, float("-inf")) >= self.interval:
            self._last_line[model] = now
            self._line(
                text,
                model=model,
                done=done,
                total=total,
                rate=round(rate, 3) if rate is not None else None,
            )

    def close(self) -> None:
        """End a bar left open (an interrupted run), so the summary starts on its own line."""
        if self._open_bar:
            click.echo("", file=self.stream)
            self._open_bar = False

    def _line(self, text: str, **fields: Any) -> None:
        if self.json:
            log(text, json_line=True, event="progress", **fields)
        elif self.tty:
            click.echo(f"\r{text}\033[K", file=self.stream, color=True)
            self._open_bar = False
        else:
            click.echo(text, file=self.stream)


def _duration(seconds: float) -> str:
    """1h02m, 4m05s, 12s: precise enough to plan by, short enough for a progress line."""
    whole = round(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"


@cli.command()
@_project_options
@click.option(
    "--dry-run", is_flag=True, help="Show what would be sent; write nothing, send nothing."
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document on stdout instead.")
@click.option("--base-url", default=None, help="Voyado's base URL (overrides VOYADO_BASE_URL).")
@click.option(
    "--rate",
    type=float,
    default=settings.DEFAULT_RATE,
    show_default=True,
    help="Requests per second for this API key, all models together (Voyado: keep below 50).",
)
@click.option(
    "--concurrency",
    type=int,
    default=None,
    help="Upper bound on requests in flight; default adapts to latency.",
)
@click.option(
    "--state-schema",
    default=settings.DEFAULT_STATE_SCHEMA,
    show_default=True,
    help="Warehouse schema of the ledger.",
)
@click.option(
    "--retry-rejected", is_flag=True, help="Try rejected rows again even if they did not change."
)
@click.option(
    "--ignore-dbt-status",
    is_flag=True,
    help="Sync models even when dbt's last build (target/run_results.json) failed them, skipped "
    "them or failed one of their tests of severity error.",
)
@click.option(
    "--first-run",
    "first_run",
    default=None,
    metavar="backfill|baseline|since:DATE",
    help="What the first sync of each selected model sends (over meta.voyado.first_run): "
    "every row, none (recorded as already there), or rows created on or after DATE.",
)
@click.option(
    "--allow-mass-send",
    multiple=True,
    metavar="MODEL",
    help="Let MODEL send more than half of its rows although it was synced before (repeatable).",
)
@click.option(
    "--allow-mass-delete",
    multiple=True,
    metavar="MODEL",
    help="Let mirror model MODEL delete more than half of its interactions (repeatable).",
)
def run(
    project_dir: Path,
    profiles_dir: Path | None,
    target: str | None,
    target_path: str | None,
    select: tuple[str, ...],
    exclude: tuple[str, ...],
    dry_run: bool,
    as_json: bool,
    base_url: str | None,
    rate: float,
    concurrency: int | None,
    state_schema: str,
    retry_rejected: bool,
    ignore_dbt_status: bool,
    first_run: str | None,
    allow_mass_send: tuple[str, ...],
    allow_mass_delete: tuple[str, ...],
) -> None:
    """Send the rows not yet delivered of every selected model."""
    from voyado_sync.api import run_options

    progress = None if as_json else _Progress()
    try:
        with handled(as_json=as_json):
            options = _options(
                project_dir=project_dir,
                profiles_dir=profiles_dir,
                target=target,
                target_path=target_path,
                select=select,
                exclude=exclude,
                dry_run=dry_run,
                state_schema=state_schema,
                base_url=base_url,
                rate=rate,
                concurrency=concurrency,
                retry_rejected=retry_rejected,
                ignore_dbt_status=ignore_dbt_status,
                first_run=_first_run_option(first_run),
                allow_mass_send=allow_mass_send,
                allow_mass_delete=allow_mass_delete,
            )
            # A model whose meta key is a typo of voyado is not synced: the result says so
            # (problems, exit 2) instead of skipping it in silence.
            result = run_options(options, progress=progress)
    finally:
        if progress is not None:
            progress.close()
    if as_json:
        _echo_json(result.as_dict())
    else:
        _print_summary(result)
        for problem in result.problems:
            where = ", ".join(f"{k} {problem[k]}" for k in ("model", "key") if problem[k])
            log(f"problem: {where}: {problem['message']}", level="error")
    raise SystemExit(result.exit_code)


def _first_run_option(text: str | None) -> Any:
    from voyado_sync.exceptions import ConfigError, ConfigProblem
    from voyado_sync.spec import parse_first_run

    if text is None:
        return None
    try:
        return parse_first_run(text)
    except ValueError as exc:
        raise ConfigError([ConfigProblem(f"--first-run {exc}", key="--first-run")]) from None


_GUARD_WORDS = {
    "first_run": "the first-run guard",
    "mass_send": "the mass-send guard",
    "mass_delete": "the mass-delete guard",
}


def _say(line: str) -> None:
    """One line of a summary on stdout, secrets masked (errors quote what servers said)."""
    click.echo(_redacted(line))


def _print_summary(result: Any) -> None:
    head = "Dry run: nothing was written or sent." if result.dry_run else f"Run {result.run_id}"
    _say(f"{head} ({result.warehouse})")
    for m in result.models:
        verb = "would send" if result.dry_run else "sent"
        line = (
            f"  {m.model} -> {m.schema_id}: {m.selected} rows, {m.already_sent} already sent, "
            f"{m.sent} {verb}, {m.rejected} rejected, {m.failed} failed"
        )
        if m.waiting:
            line += f", {m.waiting} waiting for their contact"
        if m.not_sent:
            line += f", {m.not_sent} not sent (the run stopped first; sent on the next run)"
        if m.previously_rejected:
            line += f", {m.previously_rejected} rejected earlier (unchanged, skipped)"
        if m.unverified:
            line += (
                f", {m.unverified} unverified (outcome unknown: left in flight, never resent "
                "blindly; looked up again by the next run)"
            )
        would = "would be " if result.dry_run else ""
        if m.baselined:
            line += f", {m.baselined} {would}baselined (recorded as already there, not sent)"
        if m.deleted:
            line += f", {m.deleted} {would}deleted (left the model)"
        if m.replaced:
            line += f", {m.replaced} {would}replaced (changed: old interaction deleted, sent again)"
        _say(line)
        extras = []
        if m.schema_created:
            extras.append(f"created interaction schema {m.schema_id}")
        if m.reconciled:
            extras.append(f"{m.reconciled} found in Voyado after an unknown outcome (not resent)")
        if m.lookups or m.lookups_cached:
            would = " a run would make" if result.dry_run else ""
            extras.append(f"contact lookups{would}: {m.lookups} new, {m.lookups_cached} cached")
        if m.normalised:
            changes = sorted(m.normalised.items(), key=lambda kv: (-kv[1], kv[0]))
            extras.append(
                "contact identifiers normalised: " + ", ".join(f"{n} {c}" for c, n in changes)
            )
        if m.invalidated:
            extras.append(
                f"contact ids invalidated: {m.invalidated} (merged or deleted in Voyado; "
                "looked up again)"
            )
        for extra in extras:
            _say(f"      {extra}")
        for group in m.reasons.ordered():
            _say(f"      {group.line()}")
        for sample in m.samples:
            body = json.dumps(sample["body"], default=str, ensure_ascii=False)
            _say(f"      sample {sample['row_key']}: {body}")
        for kind, keys in m.would.items():
            _say(f"      would be {kind}: {', '.join(keys)}")
        if m.stopped_by_guard:
            head = "A REAL RUN WOULD STOP" if result.dry_run else "STOPPED"
            _say(f"    {head} by {_GUARD_WORDS[m.stopped_by_guard]}: {m.error}")
        elif m.error:
            _say(f"    ERROR: {m.error}")
        if m.skipped_by_dbt:
            _say(f"    NOT SYNCED: {m.skipped_by_dbt}")
    if result.fatal:
        log(f"Stopped: {result.fatal}", level="error", kind=result.fatal_kind)
    for warning in result.warnings:
        log(f"Note: {warning}", level="warning")
    if result.interrupted:
        log(
            "Interrupted: requests in flight were finished and recorded; run again to carry on.",
            level="warning",
        )
    if result.requests and not result.dry_run:
        total = result.requests.get("total", 0)
        _say(f"  requests to Voyado: {total}")
    if any(m.rejected or m.failed or m.unverified for m in result.models):
        _say("  See why: voyado-sync rejected")


@cli.command()
@_project_options
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document on stdout.")
def validate(
    project_dir: Path,
    profiles_dir: Path | None,
    target: str | None,
    target_path: str | None,
    select: tuple[str, ...],
    exclude: tuple[str, ...],
    as_json: bool,
) -> None:
    """Check every meta.voyado block against Voyado's rules and the built models. Offline."""
    from voyado_sync.validate import validate_project

    with handled(as_json=as_json):
        report = validate_project(
            _options(
                project_dir=project_dir,
                profiles_dir=profiles_dir,
                target=target,
                target_path=target_path,
                select=select,
                exclude=exclude,
            )
        )
    if as_json:
        _echo_json(report.as_dict())
    else:
        for line in report.lines():
            click.echo(line)
    raise SystemExit(report.exit_code)


@cli.command()
@_project_options
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document on stdout.")
@click.option("--state-schema", default=settings.DEFAULT_STATE_SCHEMA, show_default=True)
@click.option(
    "--all",
    "show_all",
    is_flag=True,
    help="List every row with its own reason instead of one line per cause.",
)
def rejected(
    project_dir: Path,
    profiles_dir: Path | None,
    target: str | None,
    target_path: str | None,
    select: tuple[str, ...],
    exclude: tuple[str, ...],
    as_json: bool,
    state_schema: str,
    show_all: bool,
) -> None:
    """Rejected, failed and waiting rows from the ledger, grouped by cause.

    One line per cause with its count and example keys; --all lists every row with its own
    reason."""
    from voyado_sync.project import load_manifest_of, open_warehouse, select_nodes
    from voyado_sync.reasons import Causes
    from voyado_sync.state import Ledger, Status

    with handled(as_json=as_json):
        options = _options(
            project_dir=project_dir,
            profiles_dir=profiles_dir,
            target=target,
            target_path=target_path,
            select=select,
            exclude=exclude,
            state_schema=state_schema,
        )
        # The same selection as every other command (tag:, several names, ...).
        models = (
            [n.name for n in select_nodes(load_manifest_of(options), options)]
            if options.select or options.exclude
            else []
        )
        warehouse = open_warehouse(options)
        try:
            ledger = Ledger(warehouse, schema=state_schema)
            rows = ledger.problems(models) if ledger.exists() else []
        finally:
            warehouse.close()
    items = [
        {
            "model": r.model,
            "schema_id": r.schema_id,
            "row_key": r.row_key_display,
            # A row in flight whose outcome is unknown is reported as what it is to the user.
            "status": "unverified" if r.status == Status.IN_FLIGHT else r.status,
            "ledger_status": r.status,
            "http_status": r.http_status,
            "error_code": r.error_code,
            "reason": r.reason,
            "run_id": r.run_id,
            "updated_at": r.updated_at,
        }
        for r in rows
    ]
    by_model: dict[str, Causes] = {}
    for item in items:
        causes = by_model.setdefault(str(item["model"]), Causes())
        causes.add(_with_answer(item), str(item["row_key"]), status=str(item["status"]))
    if as_json:
        groups = [
            {"model": model, **group.as_dict()}
            for model, causes in by_model.items()
            for group in causes.ordered()
        ]
        _echo_json({"exit_code": EXIT_OK, "error": None, "groups": groups, "rows": items})
        return
    if not items:
        click.echo("No rejected or failed rows.")
        return
    if show_all:
        for item in items:
            click.echo(f"{item['model']} {item['row_key']}: {item['status']}: {_with_answer(item)}")
        return
    for model, causes in by_model.items():
        count = sum(c.count for c in causes.ordered())
        click.echo(f"{model}: {count} row key(s), {len(causes)} cause(s)")
        for group in causes.ordered():
            click.echo(f"  {group.line()}")
    click.echo("Every row with its own reason: voyado-sync rejected --all")


def _with_answer(item: dict[str, Any]) -> str:
    """The reason, prefixed by Voyado's HTTP status and error code when it did not say them."""
    reason = str(item["reason"] or "")
    answer = " ".join(str(x) for x in (item["http_status"], item["error_code"]) if x)
    if answer and answer not in reason:
        return f"[{answer}] {reason}"
    return reason


@cli.command()
@_project_options
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document on stdout.")
@click.option("--state-schema", default=settings.DEFAULT_STATE_SCHEMA, show_default=True)
@click.option(
    "--limit",
    type=click.IntRange(min=1),
    default=20,
    show_default=True,
    help="How many of the latest runs to show.",
)
def runs(
    project_dir: Path,
    profiles_dir: Path | None,
    target: str | None,
    target_path: str | None,
    select: tuple[str, ...],
    exclude: tuple[str, ...],
    as_json: bool,
    state_schema: str,
    limit: int,
) -> None:
    """The run history from the ledger, newest first.

    Start, duration, status, totals and rows per model of each run."""
    from voyado_sync.project import load_manifest_of, open_warehouse, select_nodes
    from voyado_sync.state import Ledger

    with handled(as_json=as_json):
        options = _options(
            project_dir=project_dir,
            profiles_dir=profiles_dir,
            target=target,
            target_path=target_path,
            select=select,
            exclude=exclude,
            state_schema=state_schema,
        )
        wanted = (
            {n.name for n in select_nodes(load_manifest_of(options), options)}
            if options.select or options.exclude
            else None
        )
        warehouse = open_warehouse(options)
        try:
            ledger = Ledger(warehouse, schema=state_schema)
            exists = ledger.exists()
            # Selecting models filters afterwards, so ask for more when a selection is given.
            records = ledger.recent_runs(limit if wanted is None else limit * 10) if exists else []
            where = warehouse.description
        finally:
            warehouse.close()
    entries = [_run_entry(r, wanted) for r in records]
    entries = [e for e in entries if wanted is None or e["models"]][:limit]
    if as_json:
        _envelope({"runs": entries}, exit_code=EXIT_OK)
        return
    if not entries:
        if not exists:
            click.echo(f"No runs yet: no ledger in schema {state_schema} of the {where}.")
        else:
            click.echo("No runs of the selected models.")
        return
    for e in entries:
        took = _duration(e["duration_seconds"]) if e["duration_seconds"] is not None else "--"
        t = e["totals"]
        click.echo(
            f"{e['run_id']}  {e['started_at']}  {took:>6}  {e['status']}: {t['selected']} rows, "
            f"{t['sent']} sent, {t['rejected']} rejected, {t['failed']} failed"
        )
        for m in e["models"]:
            counts = ", ".join(f"{n} {status}" for status, n in m["rows"].items()) or "no rows"
            click.echo(f"    {m['model']}: {counts}")
        if e["message"]:
            click.echo(f"    {e['message']}")


def _run_entry(record: Any, wanted: set[str] | None) -> dict[str, Any]:
    names = list(dict.fromkeys([*record.models, *record.by_model]))
    models = [
        {"model": name, "rows": dict(sorted(record.by_model.get(name, {}).items()))}
        for name in names
        if wanted is None or name in wanted
    ]
    return {
        "run_id": record.run_id,
        "started_at": record.started_at,
        "finished_at": record.finished_at,
        "duration_seconds": record.seconds,
        "status": record.status,
        "message": record.message or None,
        "version": record.version,
        "host": record.host,
        "pid": record.pid,
        "totals": record.totals,
        "models": models,
    }


@cli.command()
@_project_options
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document on stdout.")
@click.option("--base-url", default=None, help="Voyado's base URL (overrides VOYADO_BASE_URL).")
@click.option("--state-schema", default=settings.DEFAULT_STATE_SCHEMA, show_default=True)
def debug(
    project_dir: Path,
    profiles_dir: Path | None,
    target: str | None,
    target_path: str | None,
    select: tuple[str, ...],
    exclude: tuple[str, ...],
    as_json: bool,
    base_url: str | None,
    state_schema: str,
) -> None:
    """Check everything a run needs, one line per check, in seconds.

    The dbt project, profile and target, warehouse, manifest, run_results.json, ledger,
    Voyado's URL and the key (exit 0 all usable, 2 something is not)."""
    from voyado_sync.debug import run_debug

    with handled(as_json=as_json):
        report = run_debug(
            _options(
                project_dir=project_dir,
                profiles_dir=profiles_dir,
                target=target,
                target_path=target_path,
                select=select,
                exclude=exclude,
                base_url=base_url,
                state_schema=state_schema,
            )
        )
    if as_json:
        _echo_json(report.as_dict())
    else:
        for check in report.checks:
            click.echo(check.line())
        failed = sum(c.status == "fail" for c in report.checks)
        verdict = f"{failed} check(s) failed" if failed else "All checks passed"
        click.echo(f"{verdict} ({report.seconds:.1f} s)")
    raise SystemExit(report.exit_code)


def main() -> None:
    cli(prog_name="voyado-sync")


if __name__ == "__main__":
    main()
