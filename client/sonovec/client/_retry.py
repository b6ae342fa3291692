"""Backoff for overloaded (429 / RESOURCE_EXHAUSTED) and unavailable (503 / UNAVAILABLE) servers."""

from __future__ import annotations

import random


def backoff_delay(attempt: int, retry_after: float | None, base: float = 0.25, cap: float = 30.0) -> float:
    """Seconds to wait before retry ``attempt`` (0-based): exponential with jitter, never sooner
    than the server's Retry-After, and spread up to half of it again so that clients told the
    same Retry-After do not come back all at once."""
    delay = min(cap, base * 2**attempt) * random.uniform(0.5, 1.0)
    if retry_after is not None and retry_after > 0:
        delay = max(delay, retry_after * random.uniform(1.0, 1.5))
    return delay
