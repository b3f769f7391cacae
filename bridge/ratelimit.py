"""A per-destination request budget: at most ``per_minute`` sends in any 60-second window, and
none while a hold lasts (the destination answered 429)."""

from __future__ import annotations

from collections import deque

WINDOW = 60.0


class RateLimit:
    def __init__(self, per_minute: int | None) -> None:
        self.per_minute = per_minute
        self._sent: deque[float] = deque()
        self._held_until = 0.0  # no send before this (the destination said: too many requests)

    def _trim(self, now: float) -> None:
        while self._sent and self._sent[0] <= now - WINDOW:
            self._sent.popleft()

    def available(self, now: float) -> int:
        """How many sends may start now without exceeding the limit (0 while held, else a large
        number if there is no limit)."""
        if now < self._held_until:
            return 0
        if self.per_minute is None:
            return 1 << 30
        self._trim(now)
        return max(0, self.per_minute - len(self._sent))

    def take(self, now: float) -> None:
        if self.per_minute is not None:
            self._sent.append(now)

    def hold(self, until: float) -> None:
        """Nothing may start before ``until``."""
        self._held_until = max(self._held_until, until)

    def next_free(self, now: float) -> float:
        """When a send may next start (``now`` if one may start already)."""
        if self.available(now) > 0:
            return now
        if now < self._held_until:
            return self.next_free(self._held_until)
        return self._sent[0] + WINDOW
