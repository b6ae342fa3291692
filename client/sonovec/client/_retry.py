"""Backoff for overloaded (429 / RESOURCE_EXHAUSTED) and unavailable (503 / UNAVAILABLE) servers."""

from __future__ import annotations

import random


def backoff_delay(attempt: int, retry_after: float | None, base: float = 0.25, cap: float = 30.0) -> float:
    """Seconds to wait before retry ``attempt`` (0-based). When the server says Retry-After, that,
    never sooner, spread over up to half as long again so that clients told the same Retry-After do
    not come back at once. Otherwise exponential from ``base`` with jitter, at most ``cap``."""
    if retry_after is not None and retry_after > 0:
        return min(retry_after, cap) * random.uniform(1.0, 1.5)
    return min(cap, base * 2**attempt) * random.uniform(0.5, 1.0)
