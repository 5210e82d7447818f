"""The smallest successful delta of each image, by bisection (``--min-delta LO HI``).

Every image is attacked at ``high``; one that resists it has no minimal delta (``min_delta``
empty, its saved image the one made at ``high``). The others are attacked at ``low``; one that
falls there has ``min_delta = low``. The rest are bisected for ``steps`` steps between the last
failing and the last successful delta, so each ends within ``(high - low) / 2**steps`` above a
failing delta. Success is measured as in every run: on the saved 8-bit image. The saved image of
an image is the one made at its ``min_delta``. Success need not be monotone in delta, so this is
the smallest successful delta that bisection finds, not a guarantee that every smaller delta
fails.

Images move through the bisection in lockstep, and every one starts from the same bracket, so
the deltas tried at a step come from a small grid: images at the same delta are attacked
together, as one batch.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from sai_attack import options
from sai_attack.attacks import AttackResult
from sai_attack.options import Option

MIN_DELTA_STEPS = Option(
    "min_delta_steps", int, 6, "bisection steps of --min-delta after trying LO and HI; each "
    "image ends within (HI - LO) / 2^steps above a delta that failed", low=1, high=40,
)  # fmt: skip
"""The number of bisection steps (a command's own option, checked as the table's are)."""

MIN_DELTA = dataclasses.replace(
    options.OPTIONS["delta"],
    name="min_delta",
    default=None,
    nullable=True,
    help="find each image's smallest successful delta in [LO, HI] by bisection, measured on "
    "the saved 8-bit image; writes min_delta per image to results.csv and the median to "
    "summary.json, and saves each image at its min_delta",
)
"""The bounds of the search, each checked as a delta (a command's own option)."""


@dataclass
class Attempt:
    """The attack of some images at one delta, measured on the saved 8-bit images.

    Attributes:
        result: What the attack produced (adversarial images before quantising, template,
            attention map, mask).
        adv_u8: (B, H, W, 3) the 8-bit images the PNGs would hold.
        adv_pred: The model's prediction on each of them.
        finite: Whether the attack's output and that prediction are finite.
        success: Whether each image is fooled (a finite output that meets the goal).
        fallback: Whether each image's result is the fallback attack's (None: the run has no
            fallback attack).
    """

    result: AttackResult
    adv_u8: np.ndarray
    adv_pred: list[int]
    finite: list[bool]
    success: list[bool]
    fallback: list[bool] | None = None


def _row(t: torch.Tensor | None, j: int) -> torch.Tensor | None:
    return None if t is None else t[j]


def _stack(tensors: list[torch.Tensor | None]) -> torch.Tensor | None:
    return None if tensors[0] is None else torch.stack(tensors)  # type: ignore[arg-type]


def combine(chosen: list[tuple[Attempt, int]]) -> Attempt:
    """One attempt made of row ``j`` of each ``(attempt, j)``, in order."""
    marked = chosen[0][0].fallback is not None
    fields = ("adv", "perturbation", "superpixels", "attention", "mask")
    rows = {f: _stack([_row(getattr(a.result, f), j) for a, j in chosen]) for f in fields}
    result = AttackResult(eps=chosen[0][0].result.eps, **rows)  # type: ignore[arg-type]
    return Attempt(
        result=result,
        adv_u8=np.stack([a.adv_u8[j] for a, j in chosen]),
        adv_pred=[a.adv_pred[j] for a, j in chosen],
        finite=[a.finite[j] for a, j in chosen],
        success=[a.success[j] for a, j in chosen],
        fallback=[a.fallback[j] for a, j in chosen] if marked else None,  # type: ignore[index]
    )


@dataclass(frozen=True)
class MinDelta:
    """Search each image's smallest successful delta in ``[low, high]``.

    Args:
        low: The smallest delta tried (> 0, as delta).
        high: The largest delta tried, above ``low``.
        steps: Bisection steps after ``low`` and ``high``.
    """

    low: float
    high: float
    steps: int = MIN_DELTA_STEPS.default

    def __post_init__(self) -> None:
        for bound in ("low", "high"):
            if getattr(self, bound) is None:
                raise ValueError(f"min_delta {bound} must be set, got None")
            object.__setattr__(self, bound, MIN_DELTA.check(getattr(self, bound)))
        object.__setattr__(self, "steps", MIN_DELTA_STEPS.check(self.steps))
        if not self.low < self.high:
            raise ValueError(
                f"min_delta low must be below high, got low {self.low:g} and high {self.high:g}"
            )

    @property
    def resolution(self) -> float:
        """How far above a failing delta a found ``min_delta`` may lie, at most."""
        return (self.high - self.low) / 2**self.steps

    def record(self) -> dict[str, Any]:
        """The search's settings, as ``run.json`` records them."""
        return {"low": self.low, "high": self.high, "steps": self.steps}

    def run(
        self, n: int, attempt: Callable[[float, list[int]], Attempt]
    ) -> tuple[Attempt, list[float], list[float | None]]:
        """Search the ``n`` images of a batch.

        Args:
            n: The number of images.
            attempt: Attacks the images at the given indices at a delta.

        Returns:
            The attempt of each image's saved image, the delta it was made at, and each
            image's ``min_delta`` (None when even ``high`` failed).
        """
        top = attempt(self.high, list(range(n)))
        best: dict[int, tuple[Attempt, int, float]] = {i: (top, i, self.high) for i in range(n)}
        found = {i: top.success[i] for i in range(n)}
        bracket: dict[int, list[float]] = {}
        fooled = [i for i in range(n) if found[i]]
        if fooled:
            bottom = attempt(self.low, fooled)
            for j, i in enumerate(fooled):
                if bottom.success[j]:
                    best[i] = (bottom, j, self.low)
                else:
                    bracket[i] = [self.low, self.high]
        for _ in range(self.steps):
            groups: dict[float, list[int]] = {}
            for i, (lo, hi) in bracket.items():
                groups.setdefault((lo + hi) / 2, []).append(i)
            for mid in sorted(groups):
                members = groups[mid]
                tried = attempt(mid, members)
                for j, i in enumerate(members):
                    if tried.success[j]:
                        bracket[i][1] = mid
                        best[i] = (tried, j, mid)
                    else:
                        bracket[i][0] = mid
        combined = combine([(best[i][0], best[i][1]) for i in range(n)])
        deltas = [best[i][2] for i in range(n)]
        return combined, deltas, [deltas[i] if found[i] else None for i in range(n)]
