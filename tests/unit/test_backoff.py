"""The retry wait of contract §2: fixed d, exponential d·2^(n-1), jitter in [w·(1-j), w]."""

from __future__ import annotations

import random

import pytest

from workers.backoff import delay_ms


def test_no_backoff_retries_at_once():
    assert delay_ms(None, 1) == 0
    assert delay_ms({}, 3) == 0


@pytest.mark.parametrize("attempt", [1, 2, 5])
def test_fixed(attempt):
    assert delay_ms({"type": "fixed", "delay_ms": 250}, attempt) == 250


def test_exponential_doubles_per_attempt():
    policy = {"type": "exponential", "delay_ms": 100}
    assert [delay_ms(policy, n) for n in (1, 2, 3, 4)] == [100, 200, 400, 800]


def test_jitter_stays_within_its_window():
    policy = {"type": "exponential", "delay_ms": 1000, "jitter": 0.5}
    rng = random.Random(7)
    waits = [delay_ms(policy, 2, rng) for _ in range(500)]
    assert all(1000 <= w <= 2000 for w in waits)
    assert max(waits) - min(waits) > 500  # it really spreads


def test_full_jitter_may_reach_zero_and_no_jitter_is_exact():
    assert all(
        0 <= delay_ms({"type": "fixed", "delay_ms": 10, "jitter": 1}, 1) <= 10 for _ in range(50)
    )
    assert delay_ms({"type": "fixed", "delay_ms": 10, "jitter": 0}, 1) == 10
