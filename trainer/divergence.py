"""A guard against a stage-1 loss that diverges mid-run (a collapse), so a long unattended run recovers instead of
training on for hours from a broken state and overwriting its last good checkpoint with it.

Why: the asl MPNet teacher trained on this CPU at lr 5e-4 (stop 14) logged a loss of 0.07-0.09 for 1,580 steps, then
jumped to ~0.15 within 10 steps and stayed there; its checkpoints, written every 100 steps regardless, soon held
only the collapsed state, and 1.5 h of CPU training were lost. A 2-epoch bce teacher had collapsed the same way on
the H200 (stop 11).

The rule, on the losses the trainer logs (each the mean over ``log_every`` steps):

- **suspect**: a logged loss above ``factor`` x the run's best window mean. The trainer then holds back its
  checkpoint, so the one on disk stays from before a divergence starts (a normal log is at most ~1.25 x the best
  window mean in the runs measured; the collapse logged 1.9 x).
- **diverged**: the mean of the last ``window`` logged losses above ``factor`` x the best window mean (the best is
  the lowest such mean before), or a loss that is not a finite number. The trainer rolls back to its checkpoint with
  the learning rate halved, up to ``retries`` times, then fails naming the kept checkpoint.

Early losses only lower the best (training starts high), so the rule needs no warm-up. ``factor`` 0 turns it off.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from typing import Literal

__all__ = ["DivergenceGuard", "TrainingDiverged", "Verdict"]

Verdict = Literal["healthy", "suspect", "diverged"]


class TrainingDiverged(RuntimeError):
    """Stage 1's loss diverged and the guard's rollbacks are used up (or there was no checkpoint to return to)."""


@dataclass
class DivergenceGuard:
    """Watches logged losses (see the module docstring). ``observe(loss)`` -> ``healthy``, ``suspect`` or
    ``diverged``; ``last_window_mean`` and ``best`` say why."""

    factor: float = 1.5
    window: int = 10
    best: float = math.inf
    _recent: deque = field(default_factory=deque, repr=False)

    def __post_init__(self) -> None:
        if self.factor != 0 and self.factor <= 1:
            raise ValueError(f"divergence factor must be 0 (off) or above 1, got {self.factor}")
        if self.window < 1:
            raise ValueError(f"divergence window must be at least 1 logged loss, got {self.window}")
        self._recent = deque(maxlen=self.window)

    @classmethod
    def from_history(cls, factor: float, window: int, losses: list[float]) -> DivergenceGuard:
        """The guard as it stood after ``losses`` (a resumed run's history): the same verdicts as an uninterrupted
        run's from here on."""
        guard = cls(factor=factor, window=window)
        for loss in losses:
            guard.observe(loss)
        return guard

    @property
    def enabled(self) -> bool:
        return self.factor > 0

    @property
    def last_window_mean(self) -> float | None:
        return sum(self._recent) / len(self._recent) if len(self._recent) == self.window else None

    def observe(self, loss: float) -> Verdict:
        if not self.enabled:
            return "healthy"
        if not math.isfinite(loss):
            return "diverged"
        self._recent.append(loss)
        mean = self.last_window_mean
        limit = self.factor * self.best
        if mean is not None:
            if mean > limit:
                return "diverged"
            self.best = min(self.best, mean)
        return "suspect" if loss > self.factor * self.best else "healthy"
