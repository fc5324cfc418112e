"""Per-hook rate limiting: a token bucket per hook in each web process."""

from __future__ import annotations

import threading
import time


class RateLimiter:
    """`rate` requests per second on average per key, bursts of up to `burst`; rate 0: off."""

    def __init__(self, rate: float, burst: float) -> None:
        self.rate = rate
        self.burst = max(burst, 1.0)
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, at)
        self._lock = threading.Lock()

    def take(self, key: str, now: float | None = None) -> float:
        """0 when the request may go ahead (a token is taken); else the seconds until one
        token is back (what Retry-After says)."""
        if self.rate <= 0:
            return 0.0
        moment = time.monotonic() if now is None else now
        with self._lock:
            tokens, at = self._buckets.get(key, (self.burst, moment))
            tokens = min(self.burst, tokens + (moment - at) * self.rate)
            if tokens >= 1.0:
                self._buckets[key] = (tokens - 1.0, moment)
                return 0.0
            self._buckets[key] = (tokens, moment)
            return (1.0 - tokens) / self.rate
