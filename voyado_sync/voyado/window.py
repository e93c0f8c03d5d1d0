"""How many requests may be in flight: enough to keep the rate budget busy at any latency.

A rate of ``r`` requests per second over a round trip of ``L`` seconds needs about ``r * L``
requests in flight (Little's law); a fixed 8 caps the rate at ``8 / L``, 32/s at 250 ms. So the
window follows the observed round trip: the mean of the recent latencies, times the rate in
force (which halves on a 429, so the window shrinks with it), plus headroom for the spread.
``--concurrency`` only bounds it.

The headroom: with requests leaving at random, the count in flight is Poisson around ``r * L``
whatever the spread of ``L`` (M/G/infinity), so three standard deviations, ``3 * sqrt(r * L)``,
cover 99.9% of moments; a slow tail shows up in the mean. Requests still in flight that are
older than the mean are counted as samples of their age so far: they are at least that slow,
and without them the window would wait for the first answers to learn that latency went up
(at start, the first answers come only after one whole round trip).

The rate limiter, not the window, sets the pace: a window larger than needed costs idle
connections, not requests.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable
from types import TracebackType

__all__ = ["ConcurrencyWindow", "Slot"]

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]

#: The bound when ``--concurrency`` is not given: 128 in flight carry 200/s (Voyado's most) up
#: to a 640 ms mean round trip, and 150/s with 5% of answers taking 2 s at 500 ms.
DEFAULT_CAP = 128
# Before any answer the window is this large, then follows the round trip.
_FLOOR = 4
# Standard deviations of headroom, plus a constant for the rounding and the last request.
_SPREAD = 3.0
_EXTRA = 2.0
# A blocked head waiter looks again this often: in-flight requests age, which can grow the
# limit without any answer arriving.
_TICK = 0.01
# A limit computed this recently is reused while it admits (it moves slowly).
_FRESH = 0.05


class ConcurrencyWindow:
    """A gate that admits at most ``limit()`` requests at once, ``limit()`` following latency.

    ``rate`` returns the requests per second in force (``RateLimiter.current_rate``); ``cap``
    is the hard upper bound; ``samples`` recent round trips are averaged. The synchronous
    methods (``limit``, ``begin``/``end`` through ``Slot``) make it testable on a fake clock.

    Use: ``async with window.slot() as slot: ...; slot.sent(t); ...; slot.answered()``.
    """

    def __init__(
        self,
        *,
        rate: Callable[[], float],
        cap: int = DEFAULT_CAP,
        samples: int = 128,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        if cap < 1:
            raise ValueError(f"cap must be at least 1, got {cap}")
        if samples < 1:
            raise ValueError(f"samples must be at least 1, got {samples}")
        self._rate = rate
        self._cap = cap
        self._clock = clock
        self._sleep = sleep
        self._latencies: deque[float] = deque(maxlen=samples)
        self._sum = 0.0
        self._in_flight = 0
        # Send time of each in-flight request that has been sent, by slot.
        self._sent: dict[Slot, float] = {}
        self._queue: deque[list[asyncio.Future[None]]] = deque()
        self._limit = min(cap, _FLOOR)
        self._limit_at = -math.inf
        self._peak = 0

    @property
    def cap(self) -> int:
        """The most requests ever in flight at once."""
        return self._cap

    @property
    def in_flight(self) -> int:
        """Requests holding a slot now (sent, or waiting for a token)."""
        return self._in_flight

    @property
    def peak(self) -> int:
        """The most requests that held a slot at once so far."""
        return self._peak

    def mean_latency(self) -> float | None:
        """The mean of the recent round trips, or None before the first answer."""
        return self._sum / len(self._latencies) if self._latencies else None

    def limit(self, now: float | None = None) -> int:
        """How many requests may be in flight now."""
        now = self._clock() if now is None else now
        count = len(self._latencies)
        total = self._sum
        mean = total / count if count else 0.0
        for sent in self._sent.values():
            age = now - sent
            if age > mean:
                total += age
                count += 1
        if count:
            mean = total / count
        expected = max(0.0, self._rate()) * mean
        want = math.ceil(expected + _SPREAD * math.sqrt(expected) + _EXTRA)
        self._limit = max(min(self._cap, _FLOOR), min(self._cap, want))
        self._limit_at = now
        return self._limit

    def slot(self) -> Slot:
        """A slot to hold while one request is sent and answered (an async context manager)."""
        return Slot(self)

    def try_slot(self) -> Slot | None:
        """A slot taken now if one is free without waiting, else None; ``release()`` it."""
        if self._queue or not self._fits():
            return None
        self._take()
        return Slot(self)

    # -- for Slot ------------------------------------------------------------------------------

    def _fits(self) -> bool:
        now = self._clock()
        if self._in_flight < self._limit and now - self._limit_at < _FRESH:
            return True
        return self._in_flight < self.limit(now)

    async def _enter(self) -> None:
        if not self._queue and self._fits():
            self._take()
            return
        loop = asyncio.get_running_loop()
        entry = [loop.create_future()]
        self._queue.append(entry)
        try:
            while not (self._queue[0] is entry and self._fits()):
                future = entry[0]
                if self._queue[0] is entry:
                    timer = asyncio.ensure_future(self._sleep(_TICK))
                    try:
                        await asyncio.wait((future, timer), return_when=asyncio.FIRST_COMPLETED)
                    finally:
                        timer.cancel()
                else:
                    await future
                if future.done():
                    entry[0] = loop.create_future()
        except BaseException:
            head = self._queue[0] is entry
            self._queue.remove(entry)
            if head:
                self._wake()
            raise
        self._queue.popleft()
        self._take()
        self._wake()  # the next one may fit too

    def _take(self) -> None:
        self._in_flight += 1
        self._peak = max(self._peak, self._in_flight)

    def _exit(self, slot: Slot) -> None:
        self._in_flight -= 1
        self._sent.pop(slot, None)
        self._wake()

    def _record(self, slot: Slot, latency: float) -> None:
        if len(self._latencies) == self._latencies.maxlen:
            self._sum -= self._latencies[0]
        self._latencies.append(latency)
        self._sum += latency
        self._sent.pop(slot, None)

    def _wake(self) -> None:
        if self._queue:
            future = self._queue[0][0]
            if not future.done():
                future.set_result(None)

    def __repr__(self) -> str:
        return (
            f"ConcurrencyWindow(limit={self._limit}, cap={self._cap}, in_flight={self._in_flight})"
        )


class Slot:
    """One request's place in a ``ConcurrencyWindow``.

    ``sent(at)`` when the request leaves (the rate limiter's grant), ``answered()`` when its
    answer is in: the round trip between the two is a latency sample. A request that ends
    without an answer (a network error) leaves no sample.
    """

    __slots__ = ("_at", "_window")

    def __init__(self, window: ConcurrencyWindow) -> None:
        self._window = window
        self._at: float | None = None

    def sent(self, at: float) -> None:
        self._at = at
        self._window._sent[self] = at

    def answered(self, at: float | None = None) -> None:
        if self._at is not None:
            window = self._window
            now = window._clock() if at is None else at
            window._record(self, max(0.0, now - self._at))
            self._at = None

    def release(self) -> None:
        """Give the slot back (``async with`` does it; for slots from ``try_slot``)."""
        self._window._exit(self)

    async def __aenter__(self) -> Slot:
        await self._window._enter()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()
