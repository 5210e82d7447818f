"""The one reader of run folders, for ``evaluate``, ``detect``, ``texture``, ``reproduce``.

:func:`read_run` validates a folder once, the same way for every reader: the folder and its
``results.csv`` must exist; a row is used when its status is ``ok``, its ``output`` path stays
inside the folder, its adversarial and clean PNGs exist and it names a class (label or clean
prediction, and a target for targeted runs). Rows that fail are counted and named in a warning,
never silently used; a row repeated for the same image is counted once.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from sai_attack import data
from sai_attack.runs.layout import CLEAN, IMAGES, RunLayout, inside
from sai_attack.runs.record import RunRecord, read_record
from sai_attack.runs.results import STATUS_OK, read_results

logger = logging.getLogger(__name__)


class RunFolderError(ValueError):
    """A folder is not a usable run folder (the message says why)."""


def _int_or_none(text: str | None) -> int | None:
    try:
        return int((text or "").strip()) if (text or "").strip() else None
    except ValueError:
        return None


def _float_or_none(text: str | None) -> float | None:
    try:
        value = float((text or "").strip())
    except ValueError:
        return None
    return value if math.isfinite(value) else None


@dataclass(frozen=True)
class RunItem:
    """One attacked image of a run folder.

    Attributes:
        image: The input's name (``results.csv``'s ``image`` column).
        stem: The file stem of its PNGs.
        adversarial: The saved adversarial PNG.
        clean: The saved clean PNG.
        label: The ground-truth class, None when the run had no labels.
        clean_pred: The attacked model's clean prediction.
        target: The target class of targeted runs.
        delta_eff: ``||r||_2 / sqrt(N)`` of the saved image, in 0-255 units.
        adv_pred: The attacked model's prediction on the saved adversarial image.
        superpixels: The number of superpixels of the template (superpixel methods).
        mask_fraction: The share of pixels the perturbation may change.
        ssim: SSIM of the saved pair (:func:`sai_attack.metrics.ssim`), None in older folders.
        ciede2000: Mean CIEDE2000 colour difference of the saved pair, None in older folders.
        ciede2000_p95: Its 95th percentile over the pixels, None in older folders.
        min_delta: The smallest successful delta of a ``min_delta`` search, None when none was
            found or the run made no search.
    """

    image: str
    stem: str
    adversarial: Path
    clean: Path
    label: int | None
    clean_pred: int | None
    target: int | None
    delta_eff: float | None
    adv_pred: int | None = None
    superpixels: int | None = None
    mask_fraction: float | None = None
    ssim: float | None = None
    ciede2000: float | None = None
    ciede2000_p95: float | None = None
    min_delta: float | None = None

    @property
    def reference(self) -> int:
        """The class an attack moves away from: the label, else the clean prediction."""
        return self.label if self.label is not None else self.clean_pred  # type: ignore[return-value]

    @property
    def label_from_prediction(self) -> bool:
        """Whether :attr:`reference` is the clean prediction (a run without labels)."""
        return self.label is None


@dataclass
class Run:
    """A validated run folder.

    Attributes:
        path: The folder.
        name: Display name (the folder name unless given), unique among runs read together.
        record: What ``summary.json`` / ``run.json`` say.
        items: The usable images, in ``results.csv`` order.
        skipped: Rows whose status is not ``ok``.
        missing: Images left out, with the reason, as ``"name: reason"``.
        duplicates: Rows left out because an earlier row is for the same image.
        statuses: The status of every input (``ok`` or ``skipped: <reason>``), in row order.
    """

    path: Path
    name: str
    record: RunRecord = field(default_factory=RunRecord)
    items: list[RunItem] = field(default_factory=list)
    skipped: int = 0
    missing: list[str] = field(default_factory=list)
    duplicates: int = 0
    statuses: dict[str, str] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.items)

    @property
    def layout(self) -> RunLayout:
        """The folder's file layout."""
        return RunLayout(self.path)

    @property
    def method(self) -> str:
        """The attack method (CLI name), ``""`` when unknown."""
        return self.record.method

    @property
    def model(self) -> str:
        """The attacked model's name."""
        return self.record.model

    @property
    def weights(self) -> str | None:
        """The attacked model's weights file, if any."""
        return self.record.get("weights")

    @property
    def delta(self) -> float | None:
        """The perturbation scale delta."""
        return self.record.number("delta")

    @property
    def targeted(self) -> bool:
        """Whether the run is targeted."""
        return bool(self.record.get("targeted", False))

    @property
    def mean_delta_eff(self) -> float:
        """Mean delta_eff over the items (NaN when unknown)."""
        values = [it.delta_eff for it in self.items if it.delta_eff is not None]
        return float(np.mean(values)) if values else float("nan")

    @property
    def label_source(self) -> str:
        """``labels``, ``clean prediction`` or ``mixed``: where the reference classes came from."""
        from_pred = sum(it.label_from_prediction for it in self.items)
        if from_pred == 0:
            return "labels"
        return "clean prediction" if from_pred == len(self.items) else "mixed"

    def template(self, item: RunItem) -> Path:
        """Where ``item``'s saved template would be (``save_templates``)."""
        return self.layout.template(item.stem)

    def subset(self, stems: set[str]) -> Run:
        """The run restricted to the items whose stem is in ``stems`` (same order)."""
        return replace(self, items=[it for it in self.items if it.stem in stems])


def _item(folder: Path, row: dict[str, str], targeted: bool) -> RunItem | str:
    """The item of an ``ok`` row, or the reason it cannot be used."""
    output = (row.get("output") or "").strip() or f"{IMAGES}/{data.safe_stem(row['image'])}.png"
    adversarial = inside(folder, output)
    if adversarial is None or Path(output).parent != Path(IMAGES):
        return f"output path {output!r} is not inside {IMAGES}/"
    stem = adversarial.stem
    clean = folder / CLEAN / adversarial.name
    if not adversarial.is_file() or not clean.is_file():
        return "its images/ or clean/ file is missing"
    label, clean_pred = _int_or_none(row.get("label")), _int_or_none(row.get("clean_pred"))
    if label is None and clean_pred is None:
        return "no label and no clean prediction"
    target = _int_or_none(row.get("target"))
    if targeted and target is None:
        return "no target class in a targeted run"
    return RunItem(
        image=row["image"],
        stem=stem,
        adversarial=adversarial,
        clean=clean,
        label=label,
        clean_pred=clean_pred,
        target=target,
        delta_eff=_float_or_none(row.get("delta_eff")),
        adv_pred=_int_or_none(row.get("adv_pred")),
        superpixels=_int_or_none(row.get("superpixels")),
        mask_fraction=_float_or_none(row.get("mask_fraction")),
        ssim=_float_or_none(row.get("ssim")),
        ciede2000=_float_or_none(row.get("ciede2000")),
        ciede2000_p95=_float_or_none(row.get("ciede2000_p95")),
        min_delta=_float_or_none(row.get("min_delta")),
    )


def read_run(
    path: str | os.PathLike, name: str | None = None, *, require_items: bool = True
) -> Run:
    """Read and validate a run folder.

    Args:
        path: A folder written by ``sai-attack attack`` (any version).
        name: Display name (default: the folder name).
        require_items: Raise when no row is usable.

    Returns:
        The :class:`Run`.

    Raises:
        RunFolderError: The folder or its ``results.csv`` does not exist, or (with
            ``require_items``) no row is usable.
    """
    folder = Path(path)
    if not folder.is_dir():
        raise RunFolderError(f"run folder {str(folder)!r} does not exist")
    layout = RunLayout(folder)
    if not layout.results.is_file():
        raise RunFolderError(
            f"{str(folder)!r} is not a run folder: results.csv is missing "
            "(run 'sai-attack attack ... --out DIR' first)"
        )
    run = Run(path=folder, name=name or folder.resolve().name, record=read_record(folder))
    seen: set[str] = set()
    for row in read_results(layout.results):
        if row["image"] in seen:
            run.duplicates += 1
            continue
        seen.add(row["image"])
        run.statuses[row["image"]] = row["status"]
        if row.get("status") != STATUS_OK:
            run.skipped += 1
            continue
        item = _item(folder, row, run.targeted)
        if isinstance(item, str):
            run.missing.append(f"{row['image']}: {item}")
        else:
            run.items.append(item)
    if run.duplicates:
        logger.warning("%s: %d repeated row(s) of the same image counted once", run.name,
                       run.duplicates)  # fmt: skip
    if run.missing:
        shown = "; ".join(run.missing[:5]) + ("; ..." if len(run.missing) > 5 else "")
        logger.warning("%s: %d image(s) left out: %s", run.name, len(run.missing), shown)
    if require_items and not run.items:
        raise RunFolderError(f"run folder {str(folder)!r} has no usable attacked image")
    return run


def unique_names(paths: Sequence[Path]) -> list[str]:
    """Display names for run folders: the folder name, with ``-2``, ``-3`` for repeats."""
    names: list[str] = []
    for p in paths:
        base = p.resolve().name or "run"
        name, k = base, 2
        while name in names:
            name, k = f"{base}-{k}", k + 1
        names.append(name)
    return names


def read_runs(paths: Sequence[str | os.PathLike], *, require_items: bool = True) -> list[Run]:
    """Read several run folders, giving them unique display names."""
    folders = [Path(p) for p in paths]
    if not folders:
        raise RunFolderError("no run folder given")
    names = unique_names(folders)
    return [
        read_run(p, n, require_items=require_items) for p, n in zip(folders, names, strict=True)
    ]
