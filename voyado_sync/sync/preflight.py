"""Preflight: can Voyado's host be reached at all? Checked once before a run sends anything,
so that a wrong URL or a dead network ends the run in seconds with one message, instead of
each model spending its whole retry budget (8 attempts with back-off) one after another.

A TCP connection is opened and closed: no request, no rate budget, no key on the wire. When a
proxy applies to the URL the check is left to the first request (the proxy decides).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import urllib.request
from urllib.parse import urlsplit

#: How long one connection attempt may take, and how many are made before giving up.
CONNECT_TIMEOUT = 5.0
ATTEMPTS = 3
PAUSE = 1.0


async def unreachable(base_url: str) -> str | None:
    """Why Voyado cannot be reached at ``base_url``; None when a connection opened."""
    parts = urlsplit(base_url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    proxies = urllib.request.getproxies_environment()
    if (proxies.get(parts.scheme) or proxies.get("all")) and not urllib.request.proxy_bypass(host):
        return None
    why = ""
    for attempt in range(ATTEMPTS):
        if attempt:
            await asyncio.sleep(PAUSE)
        try:
            _, writer = await asyncio.wait_for(
                asyncio.open_connection(host, port), timeout=CONNECT_TIMEOUT
            )
        except socket.gaierror as exc:
            why = f"the host name {host!r} does not resolve ({exc.strerror or exc})"
        except ConnectionRefusedError:
            why = f"{host}:{port} refused the connection"
        except TimeoutError:
            why = f"{host}:{port} did not accept a connection within {CONNECT_TIMEOUT:g} s"
        except OSError as exc:
            why = f"{host}:{port} cannot be reached ({exc.strerror or exc})"
        else:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
            return None
    return (
        f"cannot reach Voyado at {base_url}: {why} ({ATTEMPTS} attempts); check "
        "VOYADO_BASE_URL (or --base-url) and the network. Nothing was sent."
    )
