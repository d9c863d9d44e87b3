"""webhooks/backoff.py: the retry schedule (exponential, capped, jittered) and the retry window."""

from __future__ import annotations

import random

import pytest

from tunewire_server.webhooks.backoff import Backoff


def test_delays_double_from_the_base_up_to_the_cap_without_jitter():
    backoff = Backoff(base_s=5, max_s=60, window_s=86400, jitter=0)
    assert [backoff.delay(n) for n in range(1, 7)] == [5, 10, 20, 40, 60, 60]
    assert backoff.delay(10_000) == 60  # no overflow far out


def test_jitter_keeps_each_delay_between_half_and_all_of_its_ceiling():
    backoff = Backoff(base_s=5, max_s=60, window_s=86400)
    rng = random.Random(7)
    for n in range(1, 8):
        ceiling = min(60, 5 * 2 ** (n - 1))
        delays = [backoff.delay(n, rng) for _ in range(200)]
        assert all(ceiling / 2 <= d <= ceiling for d in delays)
        assert len(set(delays)) > 1  # spread out, not one value


def test_no_retry_is_scheduled_past_the_window():
    backoff = Backoff(base_s=10, max_s=10, window_s=100, jitter=0)
    assert backoff.next_retry(1, created_at=1000, now=1050) == 10
    assert backoff.next_retry(5, created_at=1000, now=1090) == 10  # starts at 1100: the window's end
    assert backoff.next_retry(6, created_at=1000, now=1091) is None


def test_retry_numbers_start_at_one():
    with pytest.raises(ValueError):
        Backoff(1, 2, 3).delay(0)
