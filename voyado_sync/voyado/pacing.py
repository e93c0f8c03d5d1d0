"""Pacing of requests to Voyado: one token bucket per API key, AIMD on 429.

Voyado's limits are per API key (keep below 50 requests/s; 429 above 200/s) and going over the
recommendation for more than a few seconds degrades its service. So every request of a run,
lookups and schema calls included, takes a token from the same bucket, and a 429 makes every
sender slow down, not just the one that saw it.
"""

from __future__ import annotations

import asyncio
import math
import random as _random
import time
from collections import deque
from collections.abc import Awaitable, Callable

__all__ = ["ABSURD_RETRY_AFTER", "MAX_RETRY_AFTER", "RateLimiter", "sane_retry_after"]

#: The longest ``Retry-After`` pause honoured, in seconds. Voyado suggests back-offs up to
#: 300 s; a longer pause stalls every sender of the run (and a SIGTERM'd run's exit) for little.
MAX_RETRY_AFTER = 300.0
#: A ``Retry-After`` beyond this (``99999``, a date years away) is taken for a mistake and
#: ignored: the pause is the usual exponential back-off, as when no ``Retry-After`` is given.
ABSURD_RETRY_AFTER = 3600.0

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]

# 429s that arrive within this many seconds of the start of a throttle episode (or while its
# pause lasts) answer requests that were already in flight: they confirm the episode but must
# not halve the rate again, or eight concurrent 429s would divide it by 256.
_EPISODE_WINDOW = 1.0
# Recovery after a 429: back to the last rate that held, once the pause is this long over...
_RETURN_AFTER = 1.0
# ... then, within this fraction of the refused rate, climb by a third of the usual step...
_NEAR = 0.9
_NEAR_STEP = 1 / 3
# ... and try the refused rate again only after this many recovery periods.
_RETRY_REFUSED = 3
# On a 429 the rate falls to this share of what the server let through in the second before
# the refused request left, when that is more than half the rate.
_ADMITTED = 0.95
# When at least this share of the requests of that second waited for their turn, what got
# through is the server's limit even when that is less than half the rate.
_BUSY = 0.5
# Grants and refusals remembered for that count: longer than any round trip plus a second.
_HISTORY = 5.0
# Voyado answers 429 above 200 requests in a second, whatever the key was told.
MAX_PER_SECOND = 200
# A 429 at the configured rate with no more than the rate in any span widens the span's
# margin by this much, up to the most.
_MARGIN_STEP = 0.01
_MAX_MARGIN = 0.05
# Those 200 are counted over a longer span than the rate's: the bench's busiest second at
# --rate 200 once held 201 on arrival (a 429 that cost 8% of the run) where 200 left in any
# 1.02 s, and over a real network arrivals bunch more than on loopback.
_MAX_SPAN = 1.05


def sane_retry_after(
    seconds: float | None, *, cap: float = MAX_RETRY_AFTER, absurd: float = ABSURD_RETRY_AFTER
) -> float | None:
    """A server's ``Retry-After`` (seconds) made safe to wait for.

    Negative values count as 0; values up to ``cap`` are kept; values above ``cap`` up to
    ``absurd`` (at least ``cap``) become ``cap``; values above ``absurd``, infinities and NaN
    become None ("unknown": use the normal back-off).
    """
    if seconds is None or not math.isfinite(seconds):
        return None
    if seconds > max(absurd, cap):
        return None
    return min(max(0.0, seconds), cap)


class RateLimiter:
    """Token bucket shared by every request of a run (one per API key).

    ``acquire()`` waits until a token is available; tokens accrue at ``current_rate`` per
    second up to ``burst``. The burst is small (default ``max(1, rate / 10)``) so requests are
    spread evenly (at 50/s about 20 ms apart) instead of leaving in clumps.

    A bucket alone lets ``rate + burst`` requests through in a second (220 at 200/s: a full
    bucket, then a second of refill), and its burst is what absorbs late wake-ups without
    losing throughput. So a second rule caps what the server counts: at most
    ``floor(current_rate)`` (and never more than 200) requests in any ``1 + margin`` seconds.
    The margin (default 20 ms) is for the way there: requests that left exactly one second
    apart may arrive a little less than one second apart, and a server whose limit equals
    the rate would refuse the later one (10 ms still met a 429 on the bench: a busy server
    reads a clump of requests late). It costs ``margin`` of the rate (2%); each 429 met at the
    configured rate with no more than it in any span widens it by 1% (up to 5%) instead of
    lowering the rate. Voyado's own 200
    are counted over 1.05 s: above 190/s the rate costs 5%, and 429s from Voyado's hard
    limit need a 50 ms bunching of arrivals.

    AIMD: on a 429 (``on_throttled``) the rate falls to 95% of what got through in the second
    before the refused request left: the server's limit, or this run's share of it when runs
    share the key. That count is the server's when most requests of that second waited for
    their turn (the client offered more than it was let send); otherwise the rate is halved
    (floor 1/s, or the configured rate if that is lower) unless the count is more. 429s that
    answer requests already in flight when the episode began refine the count (they know of
    more refusals), without halving again. All senders pause until ``Retry-After`` when
    given, or else for an exponential back-off with jitter that grows with consecutive
    throttle episodes. With a ``Retry-After`` every episode costs a whole pause of sending
    (against 20/s at ``--rate 50``, halving to 25/s cost a second episode a second later).
    ``Retry-After`` is capped at ``max_retry_after`` (300 s), and a value beyond
    ``ABSURD_RETRY_AFTER`` (an hour) is ignored (see ``sane_retry_after``). Then:

    - one second after the pause the rate returns to the highest rate that has held for a
      whole ``recover_after`` period since (a rate refused at or below it forgets it);
    - every ``recover_after`` seconds without a 429 it grows by ``recover_step``, by a third of
      that within 90% of the refused rate, and the refused rate itself is tried again only
      after three periods; once it holds, climbing is as usual, up to the configured rate.
      When the server's count was known, the refused rate is that count plus one: a rate that
      lets no more through than the server did is no probe.

    Halving alone, then climbing from half, spent most of the time well below a limit the run
    had just found (about 70/s against 100/s); this sits just under it and probes rarely.

    Waiters are served first come, first served. ``clock`` and ``sleep`` are injectable so that
    tests can run on a fake clock.
    """

    def __init__(
        self,
        rate: float,
        *,
        burst: float | None = None,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
        margin: float = 0.02,
        backoff_base: float = 1.0,
        backoff_max: float = 60.0,
        recover_after: float = 5.0,
        recover_step: float | None = None,
        random: Callable[[], float] = _random.random,
        max_retry_after: float = MAX_RETRY_AFTER,
    ) -> None:
        if rate <= 0:
            raise ValueError(f"rate must be positive, got {rate}")
        if burst is not None and burst < 1:
            raise ValueError(f"burst must be at least 1, got {burst}")
        if margin < 0:
            raise ValueError(f"margin must not be negative, got {margin}")
        self._rate = float(rate)
        self._span = 1.0 + margin
        self._max_span = max(self._span, _MAX_SPAN)
        # Grant times within the last 1.05 s (the longer span), oldest first.
        self._recent: deque[float] = deque()
        # Grant times, and send times of refused requests, of the last _HISTORY seconds.
        self._granted: deque[float] = deque()
        self._refusals: deque[float] = deque()
        # Grant times of the last _HISTORY seconds of requests that had to wait for their turn:
        # while requests queue, the pace is the limiter's, not the client's.
        self._queued: deque[float] = deque()
        self._burst = float(burst) if burst is not None else max(1.0, self._rate / 10)
        self._min_rate = min(1.0, self._rate)
        self._clock = clock
        self._sleep = sleep
        self._random = random
        self._backoff_base = backoff_base
        self._backoff_max = backoff_max
        self._recover_after = recover_after
        self._max_retry_after = max_retry_after
        self._recover_step = recover_step if recover_step is not None else max(1.0, rate / 10)

        self._current = self._rate
        now = clock()
        # Start with a single token: the first request goes at once, the rest are paced.
        self._tokens = 1.0
        self._updated = now
        self._paused_until = now
        self._episode_start: float | None = None
        self._episodes = 0  # consecutive throttle episodes, for the back-off exponent
        self._last_throttle: float | None = None
        self._recovered_at = now  # time of the last increase
        self._good: float | None = None  # highest rate that held a period since a 429
        self._good_before: float | None = None  # and what it was before its last promotion
        self._promoted_at: float | None = None
        self._refused: float | None = None  # the rate in force when the last episode began
        # Whether that episode's first 429 came while sending at the rate in force, so what
        # got through is the server's count (then ``_refused`` is that count plus one).
        self._measured = False
        self._lock = asyncio.Lock()

    @property
    def rate(self) -> float:
        """The configured rate, requests per second."""
        return self._rate

    @property
    def current_rate(self) -> float:
        """The rate in force now (lower than ``rate`` after a 429, until it recovers)."""
        self._advance(self._clock())
        return self._current

    @property
    def paused_until(self) -> float:
        """Clock time until which every sender is held back (in the past when not paused)."""
        return self._paused_until

    async def acquire(self) -> float:
        """Wait for the right to send one request; return the clock time it was given."""
        # The lock makes waiters queue in arrival order and keeps the bucket arithmetic
        # consistent; only one waiter sleeps at a time, which is exactly the pacing we want.
        waited = self._lock.locked()
        async with self._lock:
            while True:
                now = self._clock()
                if now < self._paused_until:
                    await self._sleep(self._paused_until - now)
                    continue
                self._advance(now)
                recent = self._recent
                while recent and recent[0] <= now - self._max_span:
                    recent.popleft()
                # Until enough grants of the last span have left it (oldest first): at most
                # the rate in any span, and at most Voyado's 200 in any longer one.
                full = 0.0
                for allowed, span in (
                    (min(MAX_PER_SECOND, max(1, math.floor(self._current + 1e-9))), self._span),
                    (MAX_PER_SECOND, self._max_span),
                ):
                    if len(recent) >= allowed:
                        full = max(full, recent[len(recent) - allowed] + span - now)
                # The tolerance keeps float rounding from turning a wait into endless
                # sleeps of a few attoseconds.
                if self._tokens >= 1.0 - 1e-9 and full <= 0.0:
                    self._tokens -= 1.0
                    recent.append(now)
                    for times, add in ((self._granted, True), (self._queued, waited)):
                        if add:
                            times.append(now)
                        while times and times[0] <= now - _HISTORY:
                            times.popleft()
                    return now
                waited = True
                await self._sleep(max(full, (1.0 - self._tokens) / self._current, 1e-6))

    def on_throttled(self, retry_after: float | None, sent_at: float | None = None) -> float:
        """Record a 429; return the pause, in seconds, that the caller's request now faces.

        ``retry_after`` is the server's ``Retry-After`` in seconds when it sent one (made
        safe by ``sane_retry_after``);
        ``sent_at`` is what ``acquire`` returned for the refused request.
        """
        retry_after = sane_retry_after(retry_after, cap=self._max_retry_after)
        now = self._clock()
        self._advance(now)
        self._last_throttle = now
        if sent_at is not None:
            self._refusals.append(sent_at)
            while self._refusals[0] <= now - _HISTORY:
                self._refusals.popleft()
        in_episode = self._episode_start is not None and (
            now < self._paused_until or now - self._episode_start < _EPISODE_WINDOW
        )
        if in_episode:
            pause = max(0.0, self._paused_until - now)
            if retry_after is not None and retry_after > pause:
                pause = retry_after
            start = self._episode_start
            if self._measured and sent_at is not None and start is not None and sent_at <= start:
                # A request already in flight when the episode began: what got through before
                # it is counted with the refusals known by now, nearer the server's own count.
                self._refine(self._admitted_before(sent_at))
        else:
            self._episodes += 1
            self._episode_start = now
            if (
                sent_at is not None
                and self._promoted_at is not None
                and sent_at < self._promoted_at
            ):
                # The refused request left before the last period ended: it did not hold.
                self._good = self._good_before
            if self._good is not None and self._current <= self._good:
                self._good = None  # a rate that held is refused now: no shortcut back to it
            # What got through in the second before this request left is about the server's
            # limit for this process (its share of it, when runs share the key): fall to
            # just below that instead of to half, if it is more; or if it is less, when this
            # process was sending at its rate all that second, so that the count is the
            # server's and not the lull of an idle client.
            until = now if sent_at is None else sent_at
            admitted = self._admitted_before(until)
            self._refused = self._current
            self._measured = sent_at is not None and admitted > 0 and self._was_busy(until)
            allowed = min(MAX_PER_SECOND, max(1, math.floor(self._current + 1e-9)))
            if self._measured and self._current >= self._rate and admitted + 1 >= allowed:
                # Refused at the configured rate although no span held more than it: the
                # arrivals bunched on the way (a busy server reads a clump late), or the
                # limit is the rate itself. A wider margin answers that; a lower rate for
                # the rest of the run (5%, then a climb back) would not.
                self._span = min(1.0 + _MAX_MARGIN, self._span + _MARGIN_STEP)
                self._max_span = max(self._span, _MAX_SPAN)
                self._refused = None
                self._measured = False
            elif self._measured:
                self._refine(admitted)
            else:
                target = min(self._current, _ADMITTED * admitted)
                self._current = max(self._min_rate, self._current / 2, target)
            if retry_after is not None:
                pause = max(0.0, retry_after)
            else:
                ceiling = min(self._backoff_max, self._backoff_base * 2 ** (self._episodes - 1))
                # Half fixed, half random: a real pause for everyone, senders of several
                # processes sharing a key do not wake in lockstep.
                pause = ceiling / 2 + self._random() * ceiling / 2
        until = now + pause
        if until > self._paused_until:
            self._paused_until = until
            # After the pause one request may go at once; the rest are paced at the new rate.
            self._tokens = min(self._tokens, 1.0)
            self._updated = until
        self._recovered_at = max(now, self._paused_until)
        return pause

    def _admitted_before(self, until: float) -> int:
        since = until - 1.0
        granted = sum(1 for t in self._granted if since < t <= until)
        refused = sum(1 for t in self._refusals if since < t <= until)
        return max(0, granted - refused)

    def _refine(self, admitted: int) -> None:
        # The server refused request number ``admitted + 1`` of a second: any rate that lets
        # that many through is a probe, and the rate falls to just below the count.
        if admitted <= 0:
            return
        self._current = max(self._min_rate, min(self._current, _ADMITTED * admitted))
        if self._refused is not None:
            self._refused = min(self._refused, admitted + 1.0)

    def _was_busy(self, until: float) -> bool:
        # Most requests of the second before ``until`` waited for their turn: the client
        # offered more than the rate, so what got through was the server's choice.
        since = until - 1.0
        granted = sum(1 for t in self._granted if since < t <= until)
        queued = sum(1 for t in self._queued if since < t <= until)
        return granted > 0 and queued >= _BUSY * granted

    def _capacity(self) -> float:
        return max(1.0, self._burst * self._current / self._rate)

    def _advance(self, now: float) -> None:
        # Refill at the rate that was in force, then apply any recovery that is due.
        if now > self._updated:
            self._tokens = min(
                self._capacity(), self._tokens + (now - self._updated) * self._current
            )
            self._updated = now
        if self._last_throttle is None:
            return
        quiet_since = max(self._last_throttle, self._paused_until)
        if self._episodes and now - quiet_since >= self._recover_after:
            # A quiet period ends the run of consecutive episodes: the next back-off is short.
            self._episodes = 0
            self._episode_start = None
        while self._current < self._rate:
            back = self._good is not None and self._current < self._good
            if back:
                wait, target = _RETURN_AFTER, self._good or 0.0
            else:
                wait, step = self._recover_after, self._recover_step
                refused = self._refused
                if refused is not None and self._current + step > _NEAR * refused:
                    step *= _NEAR_STEP
                target = self._current + step
                if refused is not None and target >= refused:
                    wait *= _RETRY_REFUSED
            if now - self._recovered_at < wait:
                break
            self._recovered_at += wait
            if not back:  # the rate in force held a whole period without a 429
                self._good_before, self._promoted_at = self._good, self._recovered_at
                self._good = max(self._good or 0.0, self._current)
                if self._refused is not None and self._current >= self._refused:
                    self._refused = None
            self._current = min(self._rate, target)

    def __repr__(self) -> str:
        return (
            f"RateLimiter(rate={self._rate:g}, current_rate={self._current:g}, "
            f"burst={self._burst:g})"
        )
