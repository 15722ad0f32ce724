"""The wait before a retry: fixed `d`, exponential `d·2^(n-1)`, jitter picking in `[w·(1-j), w]`."""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Any


def delay_ms(
    backoff: Mapping[str, Any] | None, attempt: int, rng: random.Random | None = None
) -> int:
    """Milliseconds to wait before attempt `attempt + 1`, after attempt `attempt` failed.

    No backoff means an immediate retry, as in BullMQ when a job has attempts but no backoff.
    """
    if not backoff:
        return 0
    base = max(0, int(backoff.get("delay_ms") or 0))
    exponential = backoff.get("type") == "exponential"
    wait = base * 2 ** max(0, attempt - 1) if exponential else base
    jitter = min(1.0, max(0.0, float(backoff.get("jitter") or 0.0)))
    if jitter and wait:
        wait = (rng or random).uniform(wait * (1 - jitter), wait)
    return int(round(wait))
