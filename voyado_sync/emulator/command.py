"""``voyado-sync emulator``: serve the Voyado Engage emulator in the foreground."""

from __future__ import annotations

import asyncio
from pathlib import Path

import click
from click.core import ParameterSource

from voyado_sync.emulator.config import DEFAULT_API_KEY, EmulatorConfig, load_contacts
from voyado_sync.emulator.runner import RunningEmulator, serve_until_signalled

API_KEY_ENV = "VOYADO_EMULATOR_API_KEY"


class _CannotStart(click.ClickException):
    # The project's exit code for "could not run" is 2, click's default for errors is 1.
    exit_code = 2


@click.command("emulator")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=8765,
    show_default=True,
    help="Port to listen on; 0 picks a free one.",
)
@click.option(
    "--api-key",
    envvar=API_KEY_ENV,
    default=DEFAULT_API_KEY,
    show_default=False,
    help=f"The key clients must send in the apikey header [env {API_KEY_ENV}; default "
    f'"{DEFAULT_API_KEY}"].',
)
@click.option(
    "--contacts",
    "contacts_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="CSV or JSON file of known contacts "
    "(contactId, email, mobilePhone, customKey, socialSecurityNumber).",
)
@click.option(
    "--rate-limit",
    type=float,
    default=200.0,
    show_default=True,
    help="Requests per second per API key before 429; 0 disables the limit.",
)
@click.option(
    "--retry-after",
    type=click.FloatRange(min=0.0),
    default=None,
    help="Send Retry-After with this many seconds on 429 (default: no header).",
)
@click.option(
    "--latency-ms",
    type=click.FloatRange(min=0.0),
    default=0.0,
    show_default=True,
    help="Latency added to every API answer (mean, with --latency-jitter).",
)
@click.option(
    "--latency-jitter",
    type=click.FloatRange(0.0, 1.0),
    default=0.0,
    show_default=True,
    help="Spread of the latency: 0.5 draws each between 50% and 150% of --latency-ms.",
)
@click.option(
    "--slow-rate",
    type=click.FloatRange(0.0, 1.0),
    default=0.0,
    show_default=True,
    help="Share of API answers that take --slow-ms longer (a slow tail).",
)
@click.option(
    "--slow-ms",
    type=click.FloatRange(min=0.0),
    default=0.0,
    show_default=True,
    help="Extra latency of the slow answers.",
)
@click.option(
    "--error-rate",
    type=click.FloatRange(0.0, 1.0),
    default=0.0,
    show_default=True,
    help="Share of API requests answered 502/503/504 without being processed.",
)
@click.option(
    "--ambiguous-rate",
    type=click.FloatRange(0.0, 1.0),
    default=0.0,
    show_default=True,
    help="Share of interaction POSTs (stored) and DELETEs (carried out) answered 503 or with a "
    "dropped connection.",
)
@click.option("--seed", type=int, default=None, help="Seed for reproducible fault injection.")
@click.option(
    "--state-file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="JSON file to restore state from at start and save it to while running and at stop.",
)
@click.pass_context
def emulator_command(
    ctx: click.Context,
    *,
    host: str,
    port: int,
    api_key: str,
    contacts_path: Path | None,
    rate_limit: float,
    retry_after: float | None,
    latency_ms: float,
    latency_jitter: float,
    slow_rate: float,
    slow_ms: float,
    error_rate: float,
    ambiguous_rate: float,
    seed: int | None,
    state_file: Path | None,
) -> None:
    """Run a local Voyado Engage emulator until Ctrl-C, then print what it saw.

    It implements the v3 interaction-schema, interaction and contact-lookup endpoints with
    Engage's rules, plus /_emulator/stats, /_emulator/interactions, /_emulator/ignored,
    /_emulator/contacts, /_emulator/config and /_emulator/reset for inspection and control.
    """
    try:
        contacts = load_contacts(contacts_path) if contacts_path is not None else []
    except (OSError, ValueError) as e:
        raise _CannotStart(f"cannot read contacts: {e}") from e
    config = EmulatorConfig(
        host=host,
        port=port,
        api_key=api_key,
        rate_limit=rate_limit,
        retry_after=retry_after,
        latency_ms=latency_ms,
        latency_jitter=latency_jitter,
        slow_rate=slow_rate,
        slow_ms=slow_ms,
        error_rate=error_rate,
        ambiguous_rate=ambiguous_rate,
        seed=seed,
        state_file=state_file,
        contacts=contacts,
    )
    source = ctx.get_parameter_source("api_key")
    origin = (
        {
            ParameterSource.COMMANDLINE: "from --api-key",
            ParameterSource.ENVIRONMENT: f"from {API_KEY_ENV}",
        }.get(source, "the default")
        if source is not None
        else "the default"
    )

    def ready(running: RunningEmulator) -> None:
        contacts_known = len(running.emulator.contacts())
        url_host = f"[{host}]" if ":" in host else host
        click.echo(
            f"Voyado emulator listening on http://{url_host}:{running.server.port} "
            f"({contacts_known} contacts)"
        )
        # A key from the command line or the environment is never printed: it may be a
        # real-looking secret. The default is no secret: say it, and what to export.
        if origin == "the default":
            click.echo(
                f"API key: {config.api_key} (the default): export "
                f"VOYADO_BASE_URL=http://{url_host}:{running.server.port} "
                f"VOYADO_API_KEY={config.api_key}; Ctrl-C to stop",
                err=True,
            )
        else:
            click.echo(
                f"API key: set ({origin}); export the same value as VOYADO_API_KEY and "
                f"VOYADO_BASE_URL=http://{url_host}:{running.server.port}; Ctrl-C to stop",
                err=True,
            )

    try:
        emulator = asyncio.run(serve_until_signalled(config, on_ready=ready))
    except (OSError, ValueError) as e:
        raise _CannotStart(f"cannot start the emulator: {e}") from e
    click.echo(emulator.summary())
