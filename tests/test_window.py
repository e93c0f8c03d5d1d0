"""Requests in flight that follow the round trip, and a rate that is never exceeded.

The window and the limiter run on a simulated clock here (behaviour, not timing): a whole
client talks to an ``httpx.MockTransport`` whose answers wait on the same clock. One real-HTTP
test against the emulator with added latency closes the loop.
"""

from __future__ import annotations

import asyncio
import bisect
import heapq
import itertools
import random
import time
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import httpx
import pytest

from voyado_sync.emulator import EmulatorHandle
from voyado_sync.voyado import RateLimiter, RetryPolicy, VoyadoClient
from voyado_sync.voyado.transport import BEFORE_WRITE, Http11Transport
from voyado_sync.voyado.window import DEFAULT_CAP, ConcurrencyWindow

T = TypeVar("T")


class SimClock:
    """Fake time for many tasks: sleepers wake in time order; time moves only when every
    task is blocked."""

    def __init__(self) -> None:
        self.now = 0.0
        self._queue: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()

    def monotonic(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        future = asyncio.get_running_loop().create_future()
        heapq.heappush(self._queue, (self.now + max(0.0, seconds), next(self._seq), future))
        await future

    def run(self, main: Coroutine[Any, Any, T]) -> T:
        async def driven() -> T:
            task = asyncio.ensure_future(main)
            while not task.done():
                for _ in range(50):  # let every woken task run until it sleeps again
                    await asyncio.sleep(0)
                    if task.done():
                        break
                while self._queue and not task.done():
                    at, _, future = heapq.heappop(self._queue)
                    if not future.cancelled():
                        self.now = max(self.now, at)
                        future.set_result(None)
                        break
            return task.result()

        return asyncio.run(driven())


def most_in_any_second(stamps: list[float], span: float = 1.0) -> int:
    """The most stamps within any half-open interval (t - span, t]."""
    ordered = sorted(stamps)
    return max(
        (i + 1 - bisect.bisect_right(ordered, t - span) for i, t in enumerate(ordered)),
        default=0,
    )


# ------------------------------------------------------------------ the window on its own


def _feed(window: ConcurrencyWindow, clock: list[float], latency: float, count: int) -> None:
    for _ in range(count):
        slot = window.try_slot()
        assert slot is not None
        slot.sent(clock[0])
        slot.answered(clock[0] + latency)
        slot.release()
        clock[0] += 0.01


def test_the_window_grows_with_latency_and_shrinks_when_it_falls() -> None:
    clock = [0.0]
    window = ConcurrencyWindow(rate=lambda: 100.0, clock=lambda: clock[0])
    _feed(window, clock, 0.03, 200)
    near = window.limit()
    _feed(window, clock, 0.5, 200)
    far = window.limit()
    _feed(window, clock, 0.03, 200)
    back = window.limit()
    # 100/s over 30 ms needs 3 in flight; over 500 ms, 50: each with headroom for the spread.
    assert 3 < near <= 12
    assert 50 + 10 <= far <= 100
    assert back == near, "a falling latency shrinks the window again"


def test_the_window_follows_the_rate_in_force() -> None:
    clock = [0.0]
    rate = [150.0]
    window = ConcurrencyWindow(rate=lambda: rate[0], clock=lambda: clock[0])
    _feed(window, clock, 0.25, 200)
    full = window.limit()
    rate[0] = 75.0  # a 429 halved the limiter's rate
    assert window.limit() < full * 0.75


def test_unanswered_requests_grow_the_window_before_any_answer() -> None:
    # At start nothing is known; requests out longer than the mean are at least that slow.
    now = [0.0]
    window = ConcurrencyWindow(rate=lambda: 100.0, clock=lambda: now[0])
    assert window.limit() == 4
    slots = []
    while now[0] < 0.5:
        slot = window.try_slot()
        if slot is not None:
            slot.sent(now[0])
            slots.append(slot)
        now[0] += 0.01
    # No answer in half a second at 100/s: about 50 requests would be in flight by now.
    assert len(slots) >= 30
    assert window.mean_latency() is None


def test_the_cap_is_honoured() -> None:
    clock = [0.0]
    window = ConcurrencyWindow(rate=lambda: 200.0, cap=16, clock=lambda: clock[0])
    _feed(window, clock, 2.0, 50)
    assert window.limit() == 16
    held = [window.try_slot() for _ in range(40)]
    assert sum(s is not None for s in held) == 16
    with pytest.raises(ValueError, match="cap"):
        ConcurrencyWindow(rate=lambda: 1.0, cap=0)


# ------------------------------------------------------------ the rate limiter on its own


@pytest.mark.parametrize("rate", [200.0, 150.0, 37.0])
def test_a_full_bucket_never_lets_more_than_the_rate_through_in_one_second(rate: float) -> None:
    # The bucket's burst let 220 requests through in a second at 200/s: an idle moment
    # fills it, then a second of refill follows. Voyado answers 429 above 200.
    clock = SimClock()
    jitter = random.Random(3)

    async def late_sleep(seconds: float) -> None:
        await clock.sleep(seconds + jitter.uniform(0, 0.003))

    limiter = RateLimiter(rate, clock=clock.monotonic, sleep=late_sleep)
    stamps: list[float] = []

    async def sender() -> None:
        for burst in range(4):
            for _ in range(int(rate * 0.6)):
                stamps.append(await limiter.acquire())
            await clock.sleep(0.3 + 0.1 * burst)  # idle: the bucket fills

    async def scenario() -> None:
        await asyncio.gather(*(sender() for _ in range(16)))

    clock.run(scenario())
    assert most_in_any_second(stamps) <= rate
    busy = [s for s in stamps if s < stamps[0] + 2.0]
    assert len(busy) >= 0.95 * 2 * rate * 0.98, "throughput is not lost"


# ------------------------------------------------ the whole client on a simulated clock


def _sim_client(
    clock: SimClock,
    *,
    rate: float,
    latency: Callable[[httpx.Request], float],
    concurrency: int | None = None,
    limit: float | None = None,
    retry_after: str | None = None,
) -> tuple[VoyadoClient, list[float], list[int], list[int]]:
    """A client whose every answer waits ``latency(request)`` on ``clock``. Returns it with
    the arrival times of every request, the in-flight count at each arrival, and the 429s.
    ``limit`` makes the fake Voyado refuse beyond that many requests in a second (as the
    emulator does: refused requests do not count), with ``Retry-After: retry_after`` if given."""
    arrivals: list[float] = []
    in_flight: list[int] = [0]
    seen: list[int] = []
    refused: list[int] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        now = clock.now
        if limit is not None and most_in_any_second([*arrivals[-400:], now]) > limit:
            refused.append(1)
            await clock.sleep(latency(request))
            headers = {} if retry_after is None else {"Retry-After": retry_after}
            return httpx.Response(429, json={"errorCode": "TooManyRequests"}, headers=headers)
        arrivals.append(now)
        in_flight[0] += 1
        seen.append(in_flight[0])
        try:
            await clock.sleep(latency(request))
        finally:
            in_flight[0] -= 1
        if request.method == "POST":
            return httpx.Response(201, json={"id": f"i-{len(arrivals)}"})
        if request.url.path.endswith("/contacts/id"):
            return httpx.Response(200, json={"id": "c-1"})
        return httpx.Response(200, json=[])

    client = VoyadoClient(
        base_url="https://voyado.test",
        api_key="k",
        rate=rate,
        concurrency=concurrency,
        transport=httpx.MockTransport(handler),
        retry=RetryPolicy(backoff_base=0.01, backoff_max=0.1),
        clock=clock.monotonic,
        sleep=clock.sleep,
        random=random.Random(1).random,
    )
    return client, arrivals, seen, refused


async def _mixed_traffic(client: VoyadoClient, count: int) -> None:
    """POSTs with a lookup every tenth and a schema listing every fiftieth, as a run sends,
    gated by the caller as the engine does: to the client's ``max_in_flight``."""
    gate = asyncio.Semaphore(client.max_in_flight)

    async def one(n: int) -> None:
        async with gate:
            if n % 50 == 0:
                await client.list_schemas()
            elif n % 10 == 0:
                await client.lookup_contact("email", f"c{n}@example.com")
            else:
                body = {"contactId": "c-1", "schemaId": "s", "createdDate": f"2025-01-01T{n}"}
                await client.deliver_interaction(body)

    async with client:
        await asyncio.gather(*(one(n) for n in range(count)))


@pytest.mark.parametrize(
    ("rate", "mean", "slow"),
    [(50.0, 0.25, 0.0), (150.0, 0.03, 0.0), (150.0, 0.5, 0.0), (150.0, 0.25, 0.05)],
)
def test_the_budget_is_used_at_any_latency_and_never_exceeded(
    rate: float, mean: float, slow: float
) -> None:
    clock = SimClock()
    draws = random.Random(11)

    def latency(_: httpx.Request) -> float:
        seconds = mean * draws.uniform(0.5, 1.5)
        return seconds + (2.0 if draws.random() < slow else 0.0)

    client, arrivals, in_flight, _ = _sim_client(clock, rate=rate, latency=latency)
    clock.run(_mixed_traffic(client, int(rate * 12)))
    sustained = (len(arrivals) - 1) / (arrivals[-1] - arrivals[0])
    assert sustained >= 0.95 * rate, f"{sustained:.1f}/s of {rate:g}/s"
    assert most_in_any_second(arrivals) <= rate, "no one-second window above the rate"
    assert max(in_flight) <= DEFAULT_CAP
    if mean >= 0.25:
        assert max(in_flight) > 8 * 2, "more in flight than the old fixed 8"


def test_concurrency_is_an_upper_bound() -> None:
    clock = SimClock()
    client, arrivals, in_flight, _ = _sim_client(
        clock, rate=150.0, latency=lambda _: 0.5, concurrency=16
    )
    clock.run(_mixed_traffic(client, 300))
    assert client.max_in_flight == 16
    assert max(in_flight) == 16
    sustained = (len(arrivals) - 1) / (arrivals[-1] - arrivals[0])
    assert sustained <= 16 / 0.5 * 1.05, "16 in flight over 500 ms carry 32/s at most"


def test_the_window_shrinks_when_429s_arrive() -> None:
    clock = SimClock()
    client, arrivals, in_flight, refused = _sim_client(
        clock, rate=150.0, latency=lambda _: 0.25, limit=60.0
    )
    clock.run(_mixed_traffic(client, 1200))
    assert refused, "the fake Voyado refused some"
    late = [n for t, n in zip(arrivals, in_flight, strict=True) if t > arrivals[-1] - 5]
    # 150/s over 250 ms needs about 38 in flight; the 60/s found by the limiter, about 15.
    assert max(in_flight[:100]) > 30
    assert max(late) < 30
    assert most_in_any_second(arrivals) <= 150


# ------------------------------------------------------- real HTTP, against the emulator


def test_a_far_away_emulator_gets_more_than_8_requests_in_flight(
    fresh_emulator: EmulatorHandle,
) -> None:
    fresh_emulator.configure(latency_ms=400, latency_jitter=0.25)
    try:

        async def scenario() -> float:
            client = VoyadoClient(base_url=fresh_emulator.url, api_key="emulator-key", rate=100)
            gate = asyncio.Semaphore(client.max_in_flight)

            async def one() -> None:
                async with gate:
                    await client.list_schemas()

            async with client:
                started = time.monotonic()
                await asyncio.gather(*(one() for _ in range(150)))
                took = time.monotonic() - started
                peak = client.window.peak
            assert peak > 8, f"only {peak} in flight at 400 ms"
            return took

        took = asyncio.run(scenario())
    finally:
        fresh_emulator.configure(latency_ms=0, latency_jitter=0.0)
    stats = fresh_emulator.stats()
    assert stats["requests_by_status"] == {"200": 150}
    assert stats["peak_requests_in_any_second"] <= 100
    # 8 in flight over 400 ms would take 7.5 s for 150 requests; 100/s takes about 2 s.
    assert took < 5.0


def test_the_token_is_taken_once_the_connection_is_ready(fresh_emulator: EmulatorHandle) -> None:
    # A request granted its token and then delayed by opening a connection arrives bunched
    # with later ones: 164 in one second at --rate 150 while the window grew.
    order: list[str] = []

    async def scenario() -> list[int]:
        transport = Http11Transport(max_connections=2)
        connect = transport._connect

        async def connecting(*args: Any) -> Any:
            order.append("connect")
            return await connect(*args)

        async def token() -> None:
            order.append("token")

        async def refused() -> None:
            raise RuntimeError("no token")

        transport._connect = connecting  # type: ignore[method-assign]
        headers = {"apikey": "emulator-key", "User-Agent": "t", "Content-Type": "application/json"}
        async with httpx.AsyncClient(transport=transport, base_url=fresh_emulator.url) as http:
            ok = await http.get(
                "/api/v3/interactionschemas", headers=headers, extensions={BEFORE_WRITE: token}
            )
            with pytest.raises(RuntimeError):
                await http.get("/api/v3/interactionschemas", extensions={BEFORE_WRITE: refused})
            again = await http.get("/api/v3/interactionschemas", headers=headers)
        return [ok.status_code, again.status_code]

    assert asyncio.run(scenario()) == [200, 200]
    # One connection, opened before the token; a request refused its token sent nothing and
    # left the connection reusable.
    assert order == ["connect", "token"]
    assert fresh_emulator.stats()["total_requests"] == 2


def test_a_429_lowers_the_rate_to_what_the_server_let_through_not_to_half() -> None:
    # Halving 150/s against a 100/s limit fell to 75/s and took 10 s to climb back to 90.
    clock = SimClock()
    limiter = RateLimiter(150, clock=clock.monotonic, sleep=clock.sleep)

    async def scenario() -> float:
        sent = 0.0
        for _ in range(101):  # the server let 100 through in this second...
            sent = await limiter.acquire()
        return sent

    last = clock.run(scenario())
    limiter.on_throttled(1.0, sent_at=last)  # ... and refused the 101st
    assert limiter.current_rate == pytest.approx(95)
    # With nothing known about what got through, it halves as before.
    fresh = RateLimiter(150, clock=clock.monotonic, sleep=clock.sleep)
    fresh.on_throttled(1.0)
    assert fresh.current_rate == 75
