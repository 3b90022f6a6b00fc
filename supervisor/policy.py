"""Restart policy: exponential backoff with a cap, and crash-loop detection.

* The n-th consecutive failure waits ``min(backoff_max_s, backoff_initial_s * 2**(n-1))``.
* A completed chunk resets the count (and forgets past failures).
* More than ``crash_loop_max`` failures within ``crash_loop_window_s`` with no chunk completed
  in between is a crash loop: give up (FATAL) with the reason.

Pure logic, clock passed in: unit-testable without processes.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass


@dataclass(frozen=True)
class Decision:
    delay_s: float
    fatal_reason: str | None = None


class RestartPolicy:
    def __init__(
        self,
        backoff_initial_s: float,
        backoff_max_s: float,
        crash_loop_max: int,
        crash_loop_window_s: float,
    ):
        self.initial = float(backoff_initial_s)
        self.cap = float(backoff_max_s)
        self.crash_loop_max = int(crash_loop_max)
        self.window = float(crash_loop_window_s)
        self.consecutive = 0  # failures since the last completed chunk
        self._recent: deque[float] = deque()  # failure times (monotonic) within the window

    @classmethod
    def from_config(cls, sc) -> "RestartPolicy":
        return cls(sc.backoff_initial_s, sc.backoff_max_s, sc.crash_loop_max, sc.crash_loop_window_s)

    def delay(self, n: int) -> float:
        """Backoff before the restart that follows the n-th consecutive failure (n >= 1)."""
        n = max(1, min(int(n), 64))
        return min(self.cap, self.initial * 2.0 ** (n - 1))

    def success(self) -> None:
        self.consecutive = 0
        self._recent.clear()

    def failure(self, now: float) -> Decision:
        self.consecutive += 1
        self._recent.append(now)
        while self._recent and now - self._recent[0] > self.window:
            self._recent.popleft()
        n = len(self._recent)
        if n > self.crash_loop_max:
            return Decision(
                0.0,
                f"crash loop: {n} failures within {self.window:g} s with no chunk completed"
                f" ([supervisor] crash_loop_max = {self.crash_loop_max})",
            )
        return Decision(self.delay(self.consecutive))
