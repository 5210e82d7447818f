"""Where each file of a run folder lies.

A run folder holds::

    images/<stem>.png     adversarial images, 8-bit RGB, rounded to nearest
    clean/<stem>.png      the preprocessed clean inputs (resized and centre-cropped)
    templates/<stem>.npz  superpixel labels, mask and attention map (with save_templates)
    results.csv           one row per input image, skipped inputs included (status column)
    summary.json          parameters, protocol, counts, success rate, timing, versions
    run.json              the parameters, written first; a re-run must match them to resume
    .parts/               per-rank rows of a distributed run, merged at its end
    .lock                 the PID of the process writing the folder
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

IMAGES, CLEAN, TEMPLATES, PARTS = "images", "clean", "templates", ".parts"


def inside(folder: Path, relative: str | os.PathLike) -> Path | None:
    """``folder / relative`` when that path stays inside ``folder`` (symlinks resolved), else None.

    This is the one check applied to every path read from a run record or a CSV: absolute paths,
    ``..`` components and links that lead out of the folder are refused.
    """
    relative = Path(relative)
    if relative.is_absolute() or ".." in relative.parts or not relative.parts:
        return None
    path = folder / relative
    try:
        root = folder.resolve()
        target = path.resolve()
    except (OSError, RuntimeError):  # a symlink loop
        return None
    return path if target == root or root in target.parents else None


@dataclass(frozen=True)
class RunLayout:
    """The paths of one run folder."""

    folder: Path

    @property
    def results(self) -> Path:
        """``results.csv``."""
        return self.folder / "results.csv"

    @property
    def summary(self) -> Path:
        """``summary.json``."""
        return self.folder / "summary.json"

    @property
    def record(self) -> Path:
        """``run.json``."""
        return self.folder / "run.json"

    @property
    def lock(self) -> Path:
        """The lock file."""
        return self.folder / ".lock"

    def part(self, rank: int) -> Path:
        """The rows of rank ``rank`` of a distributed run."""
        return self.folder / PARTS / f"results.rank{rank}.csv"

    def parts(self) -> list[Path]:
        """The per-rank row files present now."""
        return sorted((self.folder / PARTS).glob("results.rank*.csv"))

    @staticmethod
    def output_name(stem: str) -> str:
        """The ``output`` column of ``results.csv``: the adversarial image, relative."""
        return f"{IMAGES}/{stem}.png"

    def adversarial(self, stem: str) -> Path:
        """The adversarial PNG of ``stem``."""
        return self.folder / IMAGES / f"{stem}.png"

    def clean(self, stem: str) -> Path:
        """The clean PNG of ``stem``."""
        return self.folder / CLEAN / f"{stem}.png"

    def template(self, stem: str) -> Path:
        """The saved template of ``stem``."""
        return self.folder / TEMPLATES / f"{stem}.npz"

    def subfolders(self, templates: bool) -> list[Path]:
        """The folders a run writes into."""
        names = [IMAGES, CLEAN] + ([TEMPLATES] if templates else [])
        return [self.folder / n for n in names]

    def temporary_files(self) -> list[Path]:
        """Temporary files a killed writer may have left behind."""
        found: list[Path] = []
        for sub in ("", IMAGES, CLEAN, TEMPLATES, PARTS):
            if (self.folder / sub).is_dir():
                found += (self.folder / sub).glob(".*.tmp")
        return found
