"""The folder of a delta sweep: one ordinary run folder per delta, ``sweep.csv`` and ``sweep.png``.

``sai-attack attack INPUT --out DIR --delta 1 2 4 8`` writes::

    DIR/delta-<d>/   a run folder per delta (``evaluate``, ``detect`` read each as any other)
    DIR/sweep.csv    one row per method and delta: rates, mean delta_eff, time, cache use
    DIR/sweep.png    success rate against delta and against mean delta_eff, a line per method

The folder name of a delta is its shortest exact decimal (``delta-1``, ``delta-0.5``), so two
deltas never share a folder.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass
from pathlib import Path

from sai_attack import data
from sai_attack.report import csv_text

SWEEP_COLUMNS = (
    "method", "delta", "norm", "budget", "run", "images", "ok", "correct", "successes",
    "success_rate", "successes_all", "success_rate_all", "mean_delta_eff", "seconds",
    "seconds_superpixels", "templates_computed", "templates_reused",
)  # fmt: skip
"""The columns of ``sweep.csv``; ``run`` is the run folder relative to the sweep folder,
``seconds_superpixels`` the time spent on templates (segmenting or reading the cache) by that
run, ``templates_computed``/``templates_reused`` what the template cache did (empty without
superpixels)."""


def delta_text(delta: float) -> str:
    """The shortest decimal that reads back as exactly ``delta`` (``1``, ``0.5``, ``1.25``)."""
    if not math.isfinite(delta):
        raise ValueError(f"delta must be a finite number, got {delta!r}")
    short = f"{delta:g}"
    return short if float(short) == delta else repr(float(delta))


@dataclass(frozen=True)
class SweepLayout:
    """The paths of a sweep folder."""

    folder: Path

    @property
    def csv(self) -> Path:
        """One row per method and delta."""
        return self.folder / "sweep.csv"

    @property
    def png(self) -> Path:
        """The success rates plotted."""
        return self.folder / "sweep.png"

    def run(self, delta: float) -> Path:
        """The run folder of ``delta``."""
        return self.folder / f"delta-{delta_text(delta)}"


def write_sweep(folder: Path, rows: list[dict], png: bytes) -> None:
    """Write ``sweep.csv`` (columns :data:`SWEEP_COLUMNS`) and ``sweep.png``, atomically."""
    layout = SweepLayout(Path(folder))
    data.atomic_write_text(layout.csv, csv_text(SWEEP_COLUMNS, rows))
    data.atomic_write_bytes(layout.png, png)


def read_sweep(folder: str | Path) -> list[dict[str, str]]:
    """The rows of a sweep folder's ``sweep.csv`` (``[]`` when it has none)."""
    path = SweepLayout(Path(folder)).csv
    if not path.is_file():
        return []
    return list(csv.DictReader(io.StringIO(path.read_text(encoding="utf-8"), newline="")))
