"""Connection settings from the environment (and --base-url); never the API key from a flag."""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from pydantic import SecretStr

from voyado_sync.exceptions import ConfigError, ConfigProblem

ENV_BASE_URL = "VOYADO_BASE_URL"
ENV_API_KEY = "VOYADO_API_KEY"
DEFAULT_RATE = 40.0
MAX_RATE = 200.0
# --concurrency when not given: none, the requests in flight follow the round trip (up to
# voyado.window.DEFAULT_CAP).
DEFAULT_CONCURRENCY: int | None = None


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
