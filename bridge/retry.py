"""When to try a delivery again: exponential backoff with jitter, and the servers' own word.

``RetryPolicy`` is a small pure object: ``wait(attempt)`` is the table a test
can read; ``next_wait`` adds what the destination said (``Retry-After`` and the
vendors' rate-limit headers) and the give-up rule.
"""

from __future__ import annotations

import email.utils
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass

# Headers that say when to come back, in the order they are trusted.
# Dub: Retry-After / X-RateLimit-Reset (epoch ms in practice); Voucherify:
# X-Rate-Limit-Retry (epoch s); the ecommerce API: RateLimit-Reset (seconds).
RETRY_HEADERS = ("retry-after", "x-rate-limit-retry", "ratelimit-reset", "x-ratelimit-reset")


def parse_retry_after(value: str, now: float) -> float | None:
    """Seconds to wait from ``now``: delta seconds, epoch seconds, epoch ms, or an HTTP date."""
    text = value.strip()
    if not text or len(text) > 64:
        return None
    try:
        number = float(text)
    except ValueError:
        number = None
    if number is not None:
        if number != number or number in (float("inf"), float("-inf")):
            return None
        if number >= 1e12:  # epoch milliseconds
            return max(0.0, number / 1000 - now)
        if number >= 1e9:  # epoch seconds
            return max(0.0, number - now)
        return max(0.0, number)
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - now)


def server_wait(headers: Mapping[str, str], now: float) -> float | None:
    for name in RETRY_HEADERS:
        value = headers.get(name)
        if value is not None:
            wait = parse_retry_after(value, now)
            if wait is not None:
                return wait
    return None


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 25
    initial: float = 5.0
    max_interval: float = 6 * 3600.0
    max_age: float = 3 * 86400.0

    def wait(self, attempt: int, rand: Callable[[], float] = random.random) -> float:
        """Seconds before attempt ``attempt + 1``: ``initial * 2**(attempt-1)``, capped, with
        equal jitter (between half and all of it) so that a burst of failures spreads out."""
        # the exponent capped: 2.0 ** 1024 overflows, and 2 ** 62 is past any max_interval
        base = min(self.max_interval, self.initial * 2.0 ** min(max(0, attempt - 1), 62))
        return float(base / 2 + base / 2 * rand())

    def next_wait(
        self,
        attempt: int,
        age: float,
        server: float | None = None,
        rand: Callable[[], float] = random.random,
    ) -> float | None:
        """The wait before the next try, or None when the delivery should be given up."""
        if attempt >= self.max_attempts:
            return None
        wait = self.wait(attempt, rand)
        if age + wait > self.max_age:
            return None
        if server is not None:
            # honoured up to the end of the delivery's window: a wait past it (a huge or absurd
            # Retry-After) must not give up a delivery that still has time for another try
            wait = max(wait, min(server, self.max_age - age))
        return wait
