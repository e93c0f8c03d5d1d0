"""Starting and stopping the emulator: in the foreground (the CLI) or in a background thread."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import threading
from collections.abc import Callable
from types import TracebackType
from typing import Any

from voyado_sync.emulator.app import EmulatorApp
from voyado_sync.emulator.config import Contact, EmulatorConfig
from voyado_sync.emulator.persistence import load_state, write_state
from voyado_sync.emulator.server import HttpServer
from voyado_sync.emulator.state import Emulator

AUTOSAVE_SECONDS = 3.0


def _url(host: str, port: int) -> str:
    # A wildcard address is not something a client can connect to; loopback is.
    connect_host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)
    if ":" in connect_host:
        connect_host = f"[{connect_host}]"
    return f"http://{connect_host}:{port}"


class RunningEmulator:
    """An emulator serving on the current event loop."""

    def __init__(self, emulator: Emulator, server: HttpServer) -> None:
        self.emulator = emulator
        self.server = server
        self.url = _url(emulator.config.host, server.port)
        self._autosave: asyncio.Task[None] | None = None
        if emulator.config.state_file is not None:
            self._autosave = asyncio.get_running_loop().create_task(self._autosave_loop())

    @classmethod
    async def start(cls, config: EmulatorConfig) -> RunningEmulator:
        """Build the state (restoring ``config.state_file`` if present) and start listening."""
        emulator = Emulator(config)
        if config.state_file is not None:
            load_state(emulator, config.state_file)
        app = EmulatorApp(emulator)
        server = HttpServer(app, host=config.host, port=config.port)
        await server.start()
        running = cls(emulator, server)
        # Only known once bound (port 0); used for hrefs when a client sends no Host header.
        app.default_host = running.url.removeprefix("http://")
        return running

    async def _autosave_loop(self) -> None:
        path = self.emulator.config.state_file
        assert path is not None
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(AUTOSAVE_SECONDS)
            if self.emulator.dirty:
                # Snapshot under the lock here; the slow part (JSON and disk) off the loop.
                data = self.emulator.snapshot()
                await loop.run_in_executor(None, write_state, data, path)

    async def stop(self) -> None:
        """Stop serving, then save the state file (if any) one last time."""
        if self._autosave is not None:
            self._autosave.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._autosave
        await self.server.close()
        path = self.emulator.config.state_file
        if path is not None:
            write_state(self.emulator.snapshot(), path)


async def serve_until_signalled(
    config: EmulatorConfig, *, on_ready: Callable[[RunningEmulator], None]
) -> Emulator:
    """Serve in the foreground until SIGINT or SIGTERM; return the state for a summary."""
    running = await RunningEmulator.start(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        # Windows' loop has no signal handlers; Ctrl-C still ends asyncio.run there.
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    on_ready(running)
    try:
        await stop.wait()
    finally:
        await running.stop()
    return running.emulator


class EmulatorHandle:
    """An emulator serving from a daemon thread with its own event loop.

    The read helpers go straight to the thread-safe :class:`Emulator`, so they work while the
    server is busy. Use as a context manager or call :meth:`stop`.
    """

    def __init__(self, config: EmulatorConfig) -> None:
        self._config = config
        self._ready = threading.Event()
        self._failure: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_event: asyncio.Event | None = None
        self._running: RunningEmulator | None = None
        self._thread = threading.Thread(target=self._run, name="voyado-emulator", daemon=True)

    def _start(self, timeout: float) -> None:
        self._thread.start()
        if not self._ready.wait(timeout):
            raise RuntimeError(f"the emulator did not start within {timeout:.0f} s")
        if self._failure is not None:
            raise self._failure

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as e:  # reported to the starting thread, not lost in this one
            self._failure = e
            self._ready.set()

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop_event = asyncio.Event()
        self._running = await RunningEmulator.start(self._config)
        self._ready.set()
        try:
            await self._stop_event.wait()
        finally:
            await self._running.stop()

    @property
    def _started(self) -> RunningEmulator:
        if self._running is None:
            raise RuntimeError("the emulator is not running")
        return self._running

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:50123``."""
        return self._started.url

    @property
    def emulator(self) -> Emulator:
        """The emulator's state object."""
        return self._started.emulator

    def api_headers(self) -> dict[str, str]:
        """The three headers Engage requires, with the emulator's current API key."""
        return {
            "apikey": self.emulator.config.api_key,
            "User-Agent": "voyado-sync-tests/1.0",
            "Content-Type": "application/json",
        }

    def stats(self) -> dict[str, Any]:
        """Same as ``GET /_emulator/stats``."""
        return self.emulator.stats()

    def interactions(self) -> list[dict[str, Any]]:
        """Same as ``GET /_emulator/interactions``."""
        return self.emulator.interactions()

    def ignored(self) -> list[dict[str, Any]]:
        """Same as ``GET /_emulator/ignored``."""
        return self.emulator.ignored()

    def configure(self, **changes: Any) -> None:
        """Same as ``POST /_emulator/config``; raises ValueError for a bad setting."""
        self.emulator.configure(**changes)

    def add_contacts(self, contacts: list[Contact]) -> None:
        """Same as ``POST /_emulator/contacts``."""
        self.emulator.add_contacts(contacts)

    def remove_contacts(self, contact_ids: list[str]) -> int:
        """Same as ``DELETE /_emulator/contacts/{id}`` for each id: a merged or deleted contact."""
        return self.emulator.remove_contacts(contact_ids)

    def reset(self) -> None:
        """Same as ``POST /_emulator/reset``: contacts and settings stay."""
        self.emulator.reset()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop serving (saving the state file, if any) and wait for the thread to end."""
        loop, stop_event = self._loop, self._stop_event
        if loop is not None and stop_event is not None and self._thread.is_alive():
            with contextlib.suppress(RuntimeError):  # the loop closed in the meantime
                loop.call_soon_threadsafe(stop_event.set)
            self._thread.join(timeout)
            # E.g. the final state-file save failed: say so rather than lose the demo's data.
            failure, self._failure = self._failure, None
            if failure is not None:
                raise failure

    def __enter__(self) -> EmulatorHandle:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def run_emulator_in_thread(config: EmulatorConfig | None = None) -> EmulatorHandle:
    """Start an emulator in a daemon thread and return once it accepts connections.

    Raises what starting raised (e.g. OSError for a port in use, ValueError for a bad state
    file) in the calling thread.
    """
    handle = EmulatorHandle(config or EmulatorConfig())
    handle._start(timeout=30.0)
    return handle
