"""The retry schedule of a webhook delivery: exponential backoff with jitter, within a bounded window."""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True)
class Backoff:
    """Retry n (1 for the first) waits base_s * 2**(n-1), capped at max_s, scaled by a random factor in
    [1 - jitter, 1] (so replicas and endpoints retrying together spread out); no retry starts after
    `window_s` from the event."""

    base_s: float
    max_s: float
    window_s: float
    jitter: float = 0.5

    def delay(self, retry: int, rng: random.Random | None = None) -> float:
        """Seconds to wait before retry number `retry` (1, 2, ...)."""
        if retry < 1:
            raise ValueError("retry numbers start at 1")
        exponent = min(retry - 1, 64)  # 2**64 * base is past any cap: no overflow for a long window
        ceiling = min(self.max_s, self.base_s * 2.0 ** exponent)
        factor = 1.0 - self.jitter * (rng or random).random()
        return ceiling * factor

    def next_retry(self, attempts: int, created_at: float, now: float, rng: random.Random | None = None
                   ) -> float | None:
        """After `attempts` failed attempts of a delivery enqueued at `created_at`: the seconds to wait for
        the next one, or None when it would start past the window (give up)."""
        wait = self.delay(attempts, rng)
        if now + wait > created_at + self.window_s:
            return None
        return wait
