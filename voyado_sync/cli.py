"""The ``voyado-sync`` command: a thin click layer over the engine.

Exit codes: 0 everything selected was delivered (or nothing to do); 1 it ran, but some rows
were rejected or failed (or validate found problems); 2 it could not run.
Heavy imports (dbt, duckdb, httpx) happen inside the commands, so ``--help`` is instant.
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TextIO, TypeVar

import click

from voyado_sync import __version__, settings
from voyado_sync.exceptions import VoyadoSyncError, error_kind

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
    key = os.environ.get(settings.ENV_API_KEY, "").strip()
    return text.replace(key, "***") if len(key) >= 4 else text


def _fail(exc: BaseException, *, as_json: bool = False) -> NoReturn:
    """The one error handler of every command: a message on stderr (and the JSON error
    envelope on stdout with --json), exit code 2. An error that is not one of voyado-sync's
    own shows its traceback with VOYADO_SYNC_DEBUG=1."""
    expected = isinstance(exc, VoyadoSyncError)
    message = _redacted(str(exc) if expected else f"unexpected {type(exc).__name__}: {exc}")
    if as_json:
        envelope = {
            "exit_code": EXIT_CANNOT_RUN,
            "error": {"message": message, "kind": error_kind(exc)},
        }
        click.echo(json.dumps(envelope, indent=2))
    click.echo(f"Error: {message}", err=True)
    if not expected:
        if settings.debug():
            trace = "".join(traceback.format_exception(exc))
            click.echo(_redacted(trace), err=True, nl=False)
        else:
            click.echo(
                f"  (a bug in voyado-sync: set {settings.ENV_DEBUG}=1 to see the traceback, "
                "and please report it)",
                err=True,
            )
    raise SystemExit(EXIT_CANNOT_RUN)


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
def cli() -> None:
    """Send rows of dbt models to Voyado Engage as interactions: exactly once, at Voyado's pace.

    Declare a model's interactions under config.meta.voyado in its YAML, dbt build, then
    `voyado-sync run`. VOYADO_BASE_URL and VOYADO_API_KEY come from the environment.
    """


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
    ) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.tty = self.stream.isatty() if tty is None else tty
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
            self._line(f"{model}: {done:,}/{total:,} rows done in {_duration(elapsed)}{average}")
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
            click.echo(text, file=self.stream)

    def close(self) -> None:
        """End a bar left open (an interrupted run), so the summary starts on its own line."""
        if self._open_bar:
            click.echo("", file=self.stream)
            self._open_bar = False

    def _line(self, text: str) -> None:
        if self.tty:
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
    default=settings.DEFAULT_CONCURRENCY,
    show_default=True,
    help="Requests in flight.",
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
    concurrency: int,
    state_schema: str,
    retry_rejected: bool,
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
            )
            result = run_options(options, progress=progress)
    finally:
        if progress is not None:
            progress.close()
    if as_json:
        click.echo(json.dumps(result.as_dict(), indent=2, default=str))
    else:
        _print_summary(result)
    raise SystemExit(result.exit_code)


def _print_summary(result: Any) -> None:
    head = "Dry run: nothing was written or sent." if result.dry_run else f"Run {result.run_id}"
    click.echo(f"{head} ({result.warehouse})")
    for m in result.models:
        verb = "would send" if result.dry_run else "sent"
        line = (
            f"  {m.model} -> {m.schema_id}: {m.selected} rows, {m.already_sent} already sent, "
            f"{m.sent} {verb}, {m.rejected} rejected, {m.failed} failed"
        )
        if m.waiting:
            line += f", {m.waiting} waiting for their contact"
        if m.previously_rejected:
            line += f", {m.previously_rejected} rejected earlier (unchanged, skipped)"
        click.echo(line)
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
            click.echo(f"      {extra}")
        for reason, count in sorted(m.reasons.items(), key=lambda kv: -kv[1]):
            click.echo(f"      rejected ({count}): {reason}")
        for sample in m.samples:
            click.echo(
                f"      sample {sample['row_key']}: {json.dumps(sample['body'], default=str)}"
            )
        if m.error:
            click.echo(f"    ERROR: {m.error}")
    if result.fatal:
        click.echo(f"Stopped: {result.fatal}", err=True)
    if result.interrupted:
        click.echo(
            "Interrupted: requests in flight were finished and recorded; run again to carry on.",
            err=True,
        )
    if result.requests and not result.dry_run:
        total = result.requests.get("total", 0)
        click.echo(f"  requests to Voyado: {total}")
    if any(m.rejected or m.failed for m in result.models):
        click.echo("  See why: voyado-sync rejected")


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
        click.echo(json.dumps({"exit_code": report.exit_code, **report.as_dict()}, indent=2))
    else:
        for line in report.lines():
            click.echo(line)
    raise SystemExit(report.exit_code)


@cli.command()
@_project_options
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document on stdout.")
@click.option("--state-schema", default=settings.DEFAULT_STATE_SCHEMA, show_default=True)
def rejected(
    project_dir: Path,
    profiles_dir: Path | None,
    target: str | None,
    target_path: str | None,
    select: tuple[str, ...],
    exclude: tuple[str, ...],
    as_json: bool,
    state_schema: str,
) -> None:
    """List rejected, failed and waiting rows with their reasons (from the ledger)."""
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
            "status": r.status,
            "http_status": r.http_status,
            "error_code": r.error_code,
            "reason": r.reason,
            "run_id": r.run_id,
            "updated_at": r.updated_at,
        }
        for r in rows
    ]
    if as_json:
        click.echo(json.dumps({"exit_code": EXIT_OK, "error": None, "rows": items}, indent=2))
        return
    if not items:
        click.echo("No rejected or failed rows.")
        return
    for item in items:
        answer = " ".join(str(x) for x in (item["http_status"], item["error_code"]) if x)
        code = f" [{answer}]" if answer else ""
        click.echo(f"{item['model']} {item['row_key']}: {item['status']}{code}: {item['reason']}")


def main() -> None:
    cli(prog_name="voyado-sync")


if __name__ == "__main__":
    main()
