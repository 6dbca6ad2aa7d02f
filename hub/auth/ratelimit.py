"""Per-client token buckets: a client may burst, then is held to a steady rate. Kept per API
process (a limit of N per process behind a load balancer of K processes allows about N×K)."""
from __future__ import annotations

import math
import time
from collections.abc import Callable

# Buckets of clients idle this long are full again, so they are forgotten to bound memory.
_FORGET_AFTER_S = 300.0
_SWEEP_AT = 50_000


class RateLimiter:
    def __init__(self, rate_per_s: float, burst: int, clock: Callable[[], float] = time.monotonic) -> None:
        self._rate = rate_per_s
        self._burst = float(max(burst, 1))
        self._clock = clock
        # key → [tokens left, time of last refill]
        self._buckets: dict[str, list[float]] = {}

    @property
    def enabled(self) -> bool:
        return self._rate > 0

    def take(self, key: str) -> float:
        """0 when the request may go ahead, else the seconds to wait before retrying."""
        now = self._clock()
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= _SWEEP_AT:
                self._sweep(now)
            bucket = self._buckets[key] = [self._burst, now]
        tokens = min(self._burst, bucket[0] + (now - bucket[1]) * self._rate)
        bucket[1] = now
        if tokens >= 1.0:
            bucket[0] = tokens - 1.0
            return 0.0
        bucket[0] = tokens
        return (1.0 - tokens) / self._rate

    def _sweep(self, now: float) -> None:
        self._buckets = {k: b for k, b in self._buckets.items() if now - b[1] < _FORGET_AFTER_S}


def retry_after(wait_s: float) -> str:
    """A Retry-After value in whole seconds, never 0 (a client told 0 would retry at once)."""
    return str(max(1, math.ceil(wait_s)))
