"""Stage-by-stage progress of a reproduction, with an estimate of the time left."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence

logger = logging.getLogger(__name__)


class Progress:
    """Stage-by-stage progress with an estimate of the time left (by planned work units)."""

    def __init__(self, stages: Sequence[tuple[str, float]]) -> None:
        self.stages = list(stages)
        self.total = sum(u for _, u in stages) or 1.0
        self.done_units = 0.0
        self.measured_units = 0.0
        self.measured_seconds = 0.0
        self.started = time.perf_counter()
        self.index = 0

    def step(self, name: str, fn: Callable[[], object]) -> object:
        """Run one stage, log its time, the elapsed time and the estimate of the time left."""
        units = dict(self.stages).get(name, 1.0)
        self.index += 1
        t0 = time.perf_counter()
        result = fn()
        seconds = time.perf_counter() - t0
        self.done_units += units
        if seconds > 0.5:  # reused stages take no time and say nothing about the rate
            self.measured_units += units
            self.measured_seconds += seconds
        rate = self.measured_seconds / self.measured_units if self.measured_units else 0.0
        left = (self.total - self.done_units) * rate
        logger.info(
            "[%d/%d] %s: %.0f s (elapsed %.0f s, about %.0f s left)",
            self.index,
            len(self.stages),
            name,
            seconds,
            time.perf_counter() - self.started,
            left,
        )
        return result
