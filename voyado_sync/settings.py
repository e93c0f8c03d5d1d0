"""Every setting of voyado-sync, each resolved here once, with one default.

Command-line options arrive as :class:`RunOptions`; environment variables are read only by the
functions of this module (their names are the ``ENV_*`` constants), never elsewhere. Secrets
come only from the environment: the API key is never an option.
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar
from urllib.parse import urlsplit

from voyado_sync.exceptions import ConfigError, ConfigProblem

if TYPE_CHECKING:  # both are imported when used: this module is read by --help
    from pydantic import SecretStr

    from voyado_sync.spec import FirstRun
    from voyado_sync.voyado.client import RetryPolicy

ENV_BASE_URL = "VOYADO_BASE_URL"
ENV_API_KEY = "VOYADO_API_KEY"
ENV_MAX_ATTEMPTS = "VOYADO_SYNC_MAX_ATTEMPTS"
ENV_BACKOFF_BASE = "VOYADO_SYNC_BACKOFF_BASE"
ENV_BACKOFF_MAX = "VOYADO_SYNC_BACKOFF_MAX"
ENV_DUCKDB_MEMORY_LIMIT = "VOYADO_SYNC_DUCKDB_MEMORY_LIMIT"
ENV_OPEN_WITH_DBT = "VOYADO_SYNC_OPEN_WITH_DBT"
ENV_DEBUG = "VOYADO_SYNC_DEBUG"
ENV_PROFILES_DIR = "DBT_PROFILES_DIR"
ENV_LISTING_LAG = "VOYADO_SYNC_LISTING_LAG"
#: A Slack-compatible incoming webhook for alerts. Its URL carries a token, so like the API key
#: it comes only from the environment and is never printed.
ENV_NOTIFY_URL = "VOYADO_SYNC_NOTIFY_URL"
#: Days a cached contact id is trusted before it is looked up again (0: every run).
ENV_CONTACT_CACHE_DAYS = "VOYADO_SYNC_CONTACT_CACHE_DAYS"
DEFAULT_CONTACT_CACHE_DAYS = 7.0

DEFAULT_STATE_SCHEMA = "voyado_sync"
DEFAULT_RATE = 40.0
MAX_RATE = 200.0
#: None: requests in flight follow the round trip (voyado/window.py), up to 128.
DEFAULT_CONCURRENCY: int | None = None
DEFAULT_TIMEOUT = 30.0
#: Commands a person waits on (``schemas ...``) give up sooner than a scheduled run.
INTERACTIVE_CONCURRENCY = 4
#: Seconds Voyado may take to list an interaction it stored. A row whose outcome is unknown is
#: concluded absent (and resent) only when a listing this long after the unknown outcome does
#: not show it. Voyado does not document the lag; 3 s was observed by others.
DEFAULT_LISTING_LAG = 10.0
#: Seconds requests in flight get to finish after SIGTERM/Ctrl-C before they are abandoned
#: (left in flight, reconciled by the next run), so that a stop is bounded.
STOP_GRACE = 15.0
#: (max attempts, back-off base, back-off max) of a scheduled run and of an interactive command.
RUN_RETRY = (8, 1.0, 60.0)
INTERACTIVE_RETRY = (4, 1.0, 10.0)


@dataclass(frozen=True)
class RunOptions:
    """Everything a command can be told: the dbt project, the ledger and Voyado's pace."""

    project_dir: Path = Path(".")
    profiles_dir: Path | None = None
    target: str | None = None
    target_path: str | None = None
    select: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    dry_run: bool = False
    state_schema: str = DEFAULT_STATE_SCHEMA
    base_url: str | None = None
    rate: float = DEFAULT_RATE
    #: An upper bound on requests in flight; None adapts to latency.
    concurrency: int | None = DEFAULT_CONCURRENCY
    retry_rejected: bool = False
    #: Sync models even when dbt's last build failed them or their tests (run_results.json).
    ignore_dbt_status: bool = False
    page_size: int | None = None
    #: ``--first-run``: the first-sync policy for the selected models, over their YAML's.
    first_run: FirstRun | None = None
    #: Models the mass-send guard lets through (``--allow-mass-send``).
    allow_mass_send: tuple[str, ...] = ()
    #: Mirror models the mass-delete guard lets through (``--allow-mass-delete``).
    allow_mass_delete: tuple[str, ...] = ()
    #: None: the run's defaults, overridden by VOYADO_SYNC_MAX_ATTEMPTS and friends.
    retry: RetryPolicy | None = None
    timeout: float = DEFAULT_TIMEOUT
    #: None: VOYADO_SYNC_LISTING_LAG, or DEFAULT_LISTING_LAG.
    listing_lag: float | None = None
    stop_grace: float = STOP_GRACE

    def lag(self) -> float:
        if self.listing_lag is not None:
            return self.listing_lag
        return _env_number(ENV_LISTING_LAG, DEFAULT_LISTING_LAG, float)

    def retry_policy(self, *, interactive: bool = False) -> RetryPolicy:
        return self.retry if self.retry is not None else retry_from_env(interactive=interactive)


N = TypeVar("N", int, float)


def _env_number(name: str, default: N, kind: type[N]) -> N:
    raw = os.environ.get(name)
    if raw is None or not raw.strip():
        return default
    try:
        return kind(raw)
    except ValueError:
        raise ConfigError([f"{name}={raw!r} is not a number"]) from None


def contact_cache_days() -> float:
    """VOYADO_SYNC_CONTACT_CACHE_DAYS, or DEFAULT_CONTACT_CACHE_DAYS."""
    days = _env_number(ENV_CONTACT_CACHE_DAYS, DEFAULT_CONTACT_CACHE_DAYS, float)
    if days < 0:
        raise ConfigError([f"{ENV_CONTACT_CACHE_DAYS} must be 0 or more days, got {days}"])
    return days


def retry_from_env(*, interactive: bool = False) -> RetryPolicy:
    """The retry policy: VOYADO_SYNC_MAX_ATTEMPTS / _BACKOFF_BASE / _BACKOFF_MAX over the
    defaults of a scheduled run (or of an interactive command)."""
    from voyado_sync.voyado.client import RetryPolicy

    attempts, base, most = INTERACTIVE_RETRY if interactive else RUN_RETRY
    try:
        return RetryPolicy(
            max_attempts=_env_number(ENV_MAX_ATTEMPTS, attempts, int),
            backoff_base=_env_number(ENV_BACKOFF_BASE, base, float),
            backoff_max=_env_number(ENV_BACKOFF_MAX, most, float),
        )
    except ValueError as exc:
        raise ConfigError([f"retry settings from the environment: {exc}"]) from None


def debug() -> bool:
    """VOYADO_SYNC_DEBUG=1: show the traceback of an unexpected error."""
    return _flag(ENV_DEBUG)


def open_with_dbt() -> bool:
    """VOYADO_SYNC_OPEN_WITH_DBT=1: open DuckDB through dbt-duckdb instead of directly."""
    return _flag(ENV_OPEN_WITH_DBT)


def duckdb_memory_limit() -> str | None:
    """VOYADO_SYNC_DUCKDB_MEMORY_LIMIT, or None when unset (voyado-sync's default applies)."""
    return os.environ.get(ENV_DUCKDB_MEMORY_LIMIT, "").strip() or None


def default_profiles_dir(project_dir: Path) -> Path:
    """Where dbt looks for profiles.yml: $DBT_PROFILES_DIR, the current directory, ~/.dbt."""
    env = os.environ.get(ENV_PROFILES_DIR)
    if env:
        return Path(env)
    if (Path.cwd() / "profiles.yml").exists():
        return Path.cwd()
    if (project_dir / "profiles.yml").exists():
        return project_dir
    return Path.home() / ".dbt"


def _flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() not in ("", "0", "false", "no")


def is_loopback(host: str) -> bool:
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class VoyadoConnection:
    """Where Voyado is and the key to it. ``repr`` never shows the key."""

    base_url: str
    api_key: SecretStr = field(repr=False)


def connection_from_env(base_url: str | None = None) -> VoyadoConnection:
    """Read VOYADO_BASE_URL (or --base-url) and VOYADO_API_KEY; report every problem at once."""
    from pydantic import SecretStr

    problems: list[ConfigProblem] = []
    url = (base_url or os.environ.get(ENV_BASE_URL, "")).strip().rstrip("/")
    key = os.environ.get(ENV_API_KEY, "").strip()
    if not url:
        problems.append(
            ConfigProblem(
                f"no Voyado URL: set {ENV_BASE_URL} (for example https://acme.staging.voyado.com) "
                "or pass --base-url"
            )
        )
    else:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            problems.append(ConfigProblem(f"{ENV_BASE_URL} {url!r} is not an http(s) URL"))
        elif parts.scheme != "https" and not is_loopback(parts.hostname):
            problems.append(
                ConfigProblem(
                    f"{ENV_BASE_URL} {url!r} must use https: Voyado requires TLS (plain http is "
                    "allowed only for loopback hosts such as the local emulator)"
                )
            )
        if parts.path.rstrip("/").endswith("/api/v3"):
            url = url[: -len("/api/v3")]
    if not key:
        problems.append(
            ConfigProblem(
                f"no API key: set {ENV_API_KEY} in the environment (never on the command line)"
            )
        )
    if problems:
        raise ConfigError(problems)
    return VoyadoConnection(base_url=url, api_key=SecretStr(key))


def check_rate(rate: float, concurrency: int | None) -> None:
    problems = []
    if not 0 < rate <= MAX_RATE:
        problems.append(
            f"--rate {rate:g} is out of range: Voyado answers 429 above {MAX_RATE:g} requests/s "
            "per API key and asks for less than 50 in normal operation"
        )
    if concurrency is not None and not 1 <= concurrency <= 256:
        problems.append(f"--concurrency {concurrency} must be between 1 and 256")
    if problems:
        raise ConfigError(problems)


def notify_url() -> str | None:
    """VOYADO_SYNC_NOTIFY_URL, or None when unset: where alerts go (see voyado_sync.notify)."""
    return os.environ.get(ENV_NOTIFY_URL, "").strip() or None


def raw_connection(base_url: str | None = None) -> tuple[str, str]:
    """(VOYADO_BASE_URL or --base-url, VOYADO_API_KEY) as set, unchecked (for ``debug``)."""
    url = (base_url or os.environ.get(ENV_BASE_URL, "")).strip()
    return url, os.environ.get(ENV_API_KEY, "").strip()


def secrets() -> list[str]:
    """Values that must never reach a message, a log or an artifact: the API key and the
    alert webhook's URL (set ones only; very short values are not worth masking)."""
    values = (os.environ.get(ENV_API_KEY, "").strip(), notify_url() or "")
    return [v for v in values if len(v) >= 4]
