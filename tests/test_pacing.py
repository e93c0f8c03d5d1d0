"""What the rate limiter does after a 429, on a simulated clock (behaviour, not timing).

A Voyado that allows fewer requests per second than ``--rate`` answers 429, often with
``Retry-After``, and every sender then waits that long: each throttle episode costs a whole
pause of sending. So the rate after a 429 should be the server's limit found in one step, and
the rates above it should be tried rarely.
"""

from __future__ import annotations

import asyncio
import math
import random

import httpx
import pytest

from tests.test_window import SimClock, _mixed_traffic, _sim_client, most_in_any_second
from voyado_sync.voyado import RateLimiter


def _queued_grants(clock: SimClock, limiter: RateLimiter, count: int) -> list[float]:
    """``count`` requests that all want to leave at once (a run with rows to send)."""

    async def scenario() -> list[float]:
        return list(await asyncio.gather(*(limiter.acquire() for _ in range(count))))

    return sorted(clock.run(scenario()))


def test_a_429_after_a_second_of_queued_requests_lowers_the_rate_to_what_got_through() -> None:
    # 20/s allowed, --rate 50: halving gave 25/s, refused again a second later (a second
    # pause of Retry-After), before the rate came down to what the server lets through.
    clock = SimClock()
    limiter = RateLimiter(50, clock=clock.monotonic, sleep=clock.sleep)
    grants = _queued_grants(clock, limiter, 21)
    clock.now += 0.1  # the answer to the 21st: the server let 20 through in that second
    assert limiter.on_throttled(1.0, sent_at=grants[-1]) == 1.0
    assert limiter.current_rate == pytest.approx(0.95 * 20)


def test_a_429_to_an_idle_client_still_halves_the_rate() -> None:
    # Requests that left one by one, never waiting for a turn: the client, not the server,
    # set how many went through, so that count says nothing of the server's limit.
    clock = SimClock()
    limiter = RateLimiter(50, clock=clock.monotonic, sleep=clock.sleep)

    async def scenario() -> list[float]:
        sent = []
        for _ in range(21):
            sent.append(await limiter.acquire())
            await clock.sleep(0.04)
        return sent

    grants = clock.run(scenario())
    limiter.on_throttled(1.0, sent_at=grants[-1])
    assert limiter.current_rate == 25


def test_answers_to_requests_already_in_flight_refine_the_count_without_halving_again() -> None:
    # The server allowed 19: the 20th and 21st were refused, and the 21st's answer came
    # first, when the client still counted the 20th as let through.
    clock = SimClock()
    limiter = RateLimiter(50, clock=clock.monotonic, sleep=clock.sleep)
    grants = _queued_grants(clock, limiter, 21)
    clock.now += 0.1
    limiter.on_throttled(1.0, sent_at=grants[20])
    assert limiter.current_rate == pytest.approx(0.95 * 20)
    clock.now += 0.02
    limiter.on_throttled(1.0, sent_at=grants[19])
    assert limiter.current_rate == pytest.approx(0.95 * 19), "one episode, a better count"
    # A 429 for a request sent after the episode began is not an echo: no new count.
    clock.now += 0.02
    limiter.on_throttled(1.0, sent_at=clock.now - 0.01)
    assert limiter.current_rate == pytest.approx(0.95 * 19)


def test_after_a_measured_429_only_rates_above_the_count_are_probes() -> None:
    # The server let 20 through and refused the 21st: 20.7/s (20 in any second) is safe to
    # climb to in one period, 22.3/s (22 in a second) is a probe and waits three.
    clock = SimClock()
    limiter = RateLimiter(50, clock=clock.monotonic, sleep=clock.sleep)
    grants = _queued_grants(clock, limiter, 21)
    clock.now += 0.1
    limiter.on_throttled(1.0, sent_at=grants[-1])
    resumed = clock.now + 1.0
    clock.now = resumed + 5.0
    assert limiter.current_rate == pytest.approx(19 + 5 / 3)
    clock.now = resumed + 19.9
    assert limiter.current_rate == pytest.approx(19 + 5 / 3)
    clock.now = resumed + 20.0
    assert limiter.current_rate == pytest.approx(19 + 10 / 3)


def test_requests_waiting_out_a_pause_leave_at_the_new_rate_not_in_a_clump() -> None:
    clock = SimClock()
    limiter = RateLimiter(50, clock=clock.monotonic, sleep=clock.sleep)

    async def scenario() -> tuple[float, float, list[float]]:
        grants = await asyncio.gather(*(limiter.acquire() for _ in range(21)))
        await clock.sleep(0.1)
        limiter.on_throttled(1.0, sent_at=max(grants))
        rate = limiter.current_rate
        # 60 more were waiting for their turn, or arrive during the pause.
        after = await asyncio.gather(*(limiter.acquire() for _ in range(60)))
        return limiter.paused_until, rate, sorted(after)

    until, rate, after = clock.run(scenario())
    assert after[0] >= until, "nobody leaves during the pause"
    assert most_in_any_second(after) <= math.floor(rate), "at most the new rate in any second"
    assert len([t for t in after if t < until + 2.0]) >= 0.95 * rate * 2


def test_a_limit_below_the_rate_with_retry_after_is_used_almost_fully() -> None:
    # The bench's miss: an emulator allowing 20/s with Retry-After: 1, --rate 50, 100 ms:
    # 86.2-86.9% of the limit (86.6% here) before; each episode stops sending for a second.
    clock = SimClock()
    draws = random.Random(11)

    def latency(_: httpx.Request) -> float:
        return 0.1 * draws.uniform(0.5, 1.5)

    client, arrivals, _, refused = _sim_client(
        clock, rate=50.0, latency=latency, limit=20.0, retry_after="1"
    )
    clock.run(_mixed_traffic(client, 600))
    sustained = (len(arrivals) - 1) / (arrivals[-1] - arrivals[0])
    assert sustained >= 0.9 * 20, f"{sustained:.2f}/s of 20/s"
    assert len(refused) < 0.02 * (len(arrivals) + len(refused))
    assert len(arrivals) == 600, "every request got through in the end"


def test_a_429_at_the_configured_rate_widens_the_margin_instead_of_lowering_the_rate() -> None:
    # An emulator limited to the rate itself, on a busy machine: it read a clump of
    # requests late, saw 151 in a second where 150 left in any 1.02 s, and the rate fell
    # to 95% for the rest of the run (88.6% of --rate 150 over 20 s).
    clock = SimClock()
    limiter = RateLimiter(150, clock=clock.monotonic, sleep=clock.sleep)

    async def scenario() -> list[float]:
        grants = sorted(await asyncio.gather(*(limiter.acquire() for _ in range(300))))
        await clock.sleep(0.05)
        limiter.on_throttled(1.0, sent_at=grants[-1])
        return sorted(await asyncio.gather(*(limiter.acquire() for _ in range(450))))

    after = clock.run(scenario())
    assert limiter.current_rate == 150, "the rate held: the server let all of it through"
    assert most_in_any_second(after, span=1.03 - 1e-9) <= 150, "but 1% more margin"
    assert (len(after) - 1) / (after[-1] - after[0]) >= 150 / 1.03 * 0.99


def test_voyados_200_are_counted_over_a_longer_span() -> None:
    # At --rate 200 the bench's busiest second once held 201 on arrival (Voyado answers 429
    # above 200) where 200 left in any 1.02 s.
    clock = SimClock()
    limiter = RateLimiter(200, clock=clock.monotonic, sleep=clock.sleep)

    async def scenario() -> list[float]:
        return sorted(await asyncio.gather(*(limiter.acquire() for _ in range(800))))

    stamps = clock.run(scenario())
    assert most_in_any_second(stamps, span=1.05 - 1e-9) <= 200
    assert (len(stamps) - 1) / (stamps[-1] - stamps[0]) >= 200 / 1.05 * 0.99
