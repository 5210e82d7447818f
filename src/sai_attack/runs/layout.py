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
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from sai_attack.runtime import RunError

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


def _overlap(path: Path, root: Path) -> bool:
    """Whether ``path`` is ``root``, lies inside it or contains it (both resolved)."""
    return path == root or root in path.parents or path in root.parents


def check_output_folder(
    out: str | os.PathLike,
    inputs: Sequence[str | os.PathLike],
    what: str = "input folder",
    writes: Sequence[str] | None = None,
) -> None:
    """Refuse an output folder whose files could overwrite or mix with an input folder.

    Every input folder is read as a whole tree (a run folder's ``images/``, ``clean/``, ...), so
    an output folder that is an input folder or lies inside one is refused, and so is one that
    contains an input folder, unless ``writes`` (every path written, relative to ``out``) shows
    that no written path is, contains or lies inside it. Paths are compared with symlinks
    resolved; inputs that do not exist are left to their reader to report.

    Args:
        out: The output folder.
        inputs: The folders read.
        what: What the inputs are, for the message (``run folder``, ``data folder``).
        writes: The paths written under ``out``; None: anything under it.

    Raises:
        RunError: The output folder overlaps an input folder.
    """
    target = Path(out).resolve()
    for folder in inputs:
        if not Path(folder).exists():
            continue
        root = Path(folder).resolve()
        if target == root or root in target.parents:
            relation = "is" if target == root else "lies inside"
        elif target in root.parents and (
            writes is None or any(_overlap((target / w).resolve(), root) for w in writes)
        ):
            relation = "contains"
        else:
            continue
        raise RunError(
            f"output folder {str(out)!r} {relation} the {what} {str(folder)!r}, so its files "
            f"could overwrite or mix with the inputs; choose a folder outside it"
        )


class _File:
    """A file of the run folder, as an attribute of :class:`RunLayout`."""

    def __init__(self, name: str, doc: str) -> None:
        self.name, self.__doc__ = name, doc

    def __get__(self, layout: RunLayout | None, owner: type) -> Path:
        if layout is None:
            return self  # type: ignore[return-value]
        return layout.folder / self.name


@dataclass(frozen=True)
class RunLayout:
    """The paths of one run folder."""

    folder: Path

    results = _File("results.csv", "One row per input image.")
    summary = _File("summary.json", "What the finished run did.")
    record = _File("run.json", "The run's parameters, written first.")
    lock = _File(".lock", "The writer's lock file.")

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
