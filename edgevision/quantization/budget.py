"""The accuracy guards' budget: how many points an INT8 model may lose (`Guard`), and how long the guards of a run
may take together (`GuardClock`)."""
from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field

RANDOM_WEIGHTS = "off (random weights)"  # the guard's source when accuracy means nothing


@dataclass(frozen=True)
class Guard:
    """The accuracy budget a run holds its INT8 candidates to, and where it came from."""

    max_drop: float | None  # None: off
    source: str  # default | asked | off (asked) | off (random weights)

    @property
    def speed_only(self) -> bool:
        """Random weights: accuracy means nothing, speed alone decides."""
        return self.source == RANDOM_WEIGHTS


MIN_GUARD_SECONDS = 30.0  # the guards' time budget is never less than this (a small model's run is seconds)


class GuardOutOfTime(Exception):
    """The accuracy guards' time budget is spent; `step` is what would have come next."""

    def __init__(self, step: str):
        super().__init__(step)
        self.step = step


@dataclass
class GuardClock:
    """How long the accuracy guards of a run may take together: `limit` seconds (recipe guard_time), or by default
    as long as the run's own unguarded work so far (everything since it started but the guards), at least
    MIN_GUARD_SECONDS. With the evaluation and timing still to come, a guarded run then takes at most about twice
    the unguarded one."""

    limit: float | None = None
    started: float = field(default_factory=time.perf_counter)
    spent: float = 0.0  # by guards that finished
    _since: float | None = None  # when the guard running now started

    def used(self) -> float:
        return self.spent + (time.perf_counter() - self._since if self._since is not None else 0.0)

    def allowed(self) -> float:
        if self.limit is not None:
            return self.limit
        return max(MIN_GUARD_SECONDS, time.perf_counter() - self.started - self.used())

    @contextlib.contextmanager
    def running(self):
        """Count the time of one guard's steps (guards do not nest)."""
        self._since = time.perf_counter()
        try:
            yield
        finally:
            self.spent += time.perf_counter() - self._since
            self._since = None

    def check(self, step: str) -> None:
        """Before a step: raise GuardOutOfTime(step) when the budget is spent."""
        if self.used() >= self.allowed():
            raise GuardOutOfTime(step)

    def deadline(self) -> float:
        """The perf_counter time at which a long step (a ranking) must stop."""
        return time.perf_counter() + max(0.0, self.allowed() - self.used())

    def stopped_line(self, step: str) -> str:
        return (f"stopped at the guards' time budget ({self.allowed():.0f} s: as long as the run's unguarded work, "
                f"or --guard-time); next it would have tried: {step}")
