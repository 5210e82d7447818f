"""Texture of the attention foreground vs the background, and where the perturbation goes.

Dong et al. (CVPR 2020, Section 3.2) support hiding perturbations in the foreground by measuring
texture with the HILL cost (B. Li, M. Wang, J. Huang and X. Li, "A new cost function for spatial
image steganography", ICIP 2014) on 2000 ImageNet images: the mean HILL cost is 5269.94 in the
foreground and 18853.42 in the background (larger = smoother, i.e. less texture to hide in).

Definitions used here, per image of a run folder:

- HILL cost map: conseal's HILL (Rust backend) of the 8-bit luminance of the clean image
  (Pillow ``convert("L")``): ``rho = (|x * K_B| / 4 * L_3)^(-1) * L_15`` with the KB high-pass
  kernel and 3 x 3 / 15 x 15 averaging filters (symmetric borders). Flat areas have costs up to
  1/eps (about 8.4e6), so region means are dominated by flat patches; medians are reported too.
- Foreground: the attention map binarised at phi (``attention >= phi``, paper Eq. 2), with the
  attention stored in ``templates/<stem>.npz`` when the attack saved templates, else the CAM
  (Grad-CAM for models without a GAP + linear head) of the attacked class (the label, or the clean
  prediction without labels or with ``attack_prediction``) computed with the run's model. phi is
  the run's phi, or the default 4/12 when the run has none (phi = 0). ``foreground="mask"`` uses the
  superpixel-aligned mask the attack actually used (templates only).
- HILL fg / bg: the mean cost over the foreground / background pixels of the image. Run values
  are the mean (and median) of the per-image values over the images where the region is not
  empty.
- Perturbation: ``r = adv - clean`` in 0-255 units on the saved 8-bit images. ``energy_fg`` is the
  share of the run's total squared perturbation that lies in the foreground (summed over images);
  ``rms_fg`` / ``rms_bg`` are per-image RMS values of r over the region's pixels and channels
  (comparable to delta_eff), averaged over images.

Known limitations: the paper does not say which channel or which foreground definition it used;
this uses the luminance and the binarised attention. The measurement is on the run's images
(e.g. nips17-dev at 224 x 224), not on the paper's 2000 ImageNet images.
"""

from __future__ import annotations

import io
import logging
import math
import os
import zipfile
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from sai_attack import data, options
from sai_attack.attention import attention_map
from sai_attack.detection.hill import hill_cost, region_stats
from sai_attack.detection.runs import run_label
from sai_attack.models import ImageClassifier, load_model
from sai_attack.pipeline.loading import batches
from sai_attack.report import csv_text, markdown_table, number, percent
from sai_attack.runs import Run, RunItem, read_run

__all__ = [
    "FOREGROUND_SOURCES",
    "IMAGE_COLUMNS",
    "PAPER_HILL",
    "TEXTURE_COLUMNS",
    "TEXTURE_FILES",
    "TextureReport",
    "analyze_run",
    "hill_cost",
    "region_stats",
    "texture_markdown",
    "write_texture_outputs",
]

logger = logging.getLogger(__name__)

FOREGROUND_SOURCES = ("attention", "mask")
TEXTURE_COLUMNS = (
    "run", "method", "label", "delta", "images", "foreground", "fg_fraction", "hill_fg",
    "hill_bg", "hill_fg_median", "hill_bg_median", "energy_fg", "rms_fg", "rms_bg", "phi",
)  # fmt: skip
IMAGE_COLUMNS = (
    "run", "image", "source", "fg_fraction", "hill_fg", "hill_bg", "energy_fg", "rms_fg", "rms_bg",
)  # fmt: skip
PAPER_HILL = {"foreground": 5269.94, "background": 18853.42}
TEXTURE_FILES = ("texture.csv", "texture_images.csv", "texture.md")
"""What :func:`write_texture_outputs` writes into its folder."""


@dataclass
class TextureReport:
    """Texture statistics of one run (see the module docstring for the definitions)."""

    run: Run
    phi: float
    foreground: str
    images: list[dict] = field(default_factory=list)
    left_out: dict[str, str] = field(default_factory=dict)  # image stem -> reason

    def leave_out(self, item: RunItem, reason: str) -> None:
        """Leave ``item`` out of the statistics, logging why."""
        logger.warning("%s: %s left out: %s", self.run.name, item.image, reason)
        self.left_out.setdefault(item.stem, reason)

    def load(self, item: RunItem, path: Path) -> np.ndarray | None:
        """``item``'s clean or adversarial PNG; None (the item left out) when it cannot be read."""
        if item.stem in self.left_out:
            return None
        try:
            return data.load_image(path)
        except data.ImageLoadError as exc:
            self.leave_out(item, f"{path.parent.name}/{path.name}: {exc}")
            return None

    def _values(self, key: str) -> np.ndarray:
        v = np.array([r[key] for r in self.images], dtype=np.float64)
        return v[~np.isnan(v)]

    def mean(self, key: str) -> float:
        """Mean of a per-image value over the images where it is defined."""
        v = self._values(key)
        return float(v.mean()) if v.size else math.nan

    def median(self, key: str) -> float:
        """Median of a per-image value over the images where it is defined."""
        v = self._values(key)
        return float(np.median(v)) if v.size else math.nan

    @property
    def energy_fg(self) -> float:
        """Share of the run's total squared perturbation that lies in the foreground."""
        fg = sum(r["sq_fg"] for r in self.images)
        total = fg + sum(r["sq_bg"] for r in self.images)
        return fg / total if total > 0 else math.nan

    def row(self) -> dict:
        """The ``texture.csv`` row."""
        return {
            "run": self.run.name,
            "method": self.run.method,
            "label": run_label(self.run),
            "delta": "" if self.run.delta is None else f"{self.run.delta:g}",
            "images": len(self.images),
            "foreground": self.foreground,
            "fg_fraction": number(self.mean("fg_fraction")),
            "hill_fg": number(self.mean("hill_fg"), 2),
            "hill_bg": number(self.mean("hill_bg"), 2),
            "hill_fg_median": number(self.median("hill_fg"), 2),
            "hill_bg_median": number(self.median("hill_bg"), 2),
            "energy_fg": number(self.energy_fg),
            "rms_fg": number(self.mean("rms_fg")),
            "rms_bg": number(self.mean("rms_bg")),
            "phi": number(self.phi),
        }

    def image_rows(self) -> list[dict]:
        """The ``texture_images.csv`` rows."""
        rows = []
        for r in self.images:
            sq = r["sq_fg"] + r["sq_bg"]
            rows.append(
                {
                    "run": self.run.name,
                    "image": r["image"],
                    "source": r["source"],
                    "fg_fraction": number(r["fg_fraction"]),
                    "hill_fg": number(r["hill_fg"], 2),
                    "hill_bg": number(r["hill_bg"], 2),
                    "energy_fg": number(r["sq_fg"] / sq if sq > 0 else math.nan),
                    "rms_fg": number(r["rms_fg"]),
                    "rms_bg": number(r["rms_bg"]),
                }
            )
        return rows


def _template_array(path: Path, key: str) -> tuple[np.ndarray | None, str | None]:
    """Array ``key`` of a saved template (None when there is no template), or why it is unusable.

    A truncated or tampered ``.npz`` fails in many ways (zip, zlib, npy header), each a reason.
    """
    name = f"template {path.parent.name}/{path.name}"
    try:
        with np.load(io.BytesIO(path.read_bytes()), allow_pickle=False) as npz:
            array = npz[key] if key in npz.files else None
    except FileNotFoundError:
        return None, None
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, zlib.error) as exc:
        return None, f"{name} is unreadable ({type(exc).__name__}: {exc})"
    if array is not None and (array.ndim != 2 or array.dtype.kind not in "biuf"):
        return None, f"{name}: {key!r} is not a 2-D numeric array ({array.dtype} {array.shape})"
    return array, None


def _check_arguments(
    phi: float | None, foreground: str, batch_size: int, limit: int | None
) -> None:
    """Raise ValueError naming the parameter when an argument of :func:`analyze_run` is bad."""
    if foreground not in FOREGROUND_SOURCES:
        raise ValueError(
            f"foreground must be one of {', '.join(FOREGROUND_SOURCES)}, got {foreground!r}"
        )
    if phi is not None:
        options.check("phi", phi)
    options.check("batch_size", batch_size)
    options.check("limit", limit)


def _run_phi(run: Run) -> float:
    """The run's attention threshold phi, or the default phi when the run used none (phi = 0)."""
    phi = run.record.number("phi")
    return phi if phi is not None and phi > 0 else float(options.default("phi"))


def _template_masks(
    report: TextureReport, foreground: str
) -> tuple[dict[str, tuple[np.ndarray, str]], list[RunItem]]:
    """Foreground masks from the run's saved templates, and the items that have none.

    An unusable template is logged; its image is left out (``mask``) or its attention computed.
    """
    run, phi = report.run, report.phi
    masks: dict[str, tuple[np.ndarray, str]] = {}
    pending: list[RunItem] = []
    for item in run.items:
        # The array named like the foreground source: "attention" or "mask".
        array, problem = _template_array(run.template(item), foreground)
        if foreground == "mask":
            if problem is not None:
                report.leave_out(item, problem)
            elif array is None:
                raise ValueError(
                    f"foreground='mask' needs {run.template(item)} with a 'mask' array "
                    "(attack with save_templates=True)"
                )
            else:
                masks[item.stem] = (array.astype(bool), "template mask")
        elif array is not None:
            masks[item.stem] = (array.astype(np.float32) >= phi, "template attention")
        else:
            if problem is not None:
                logger.warning("%s: %s; computing the attention instead", run.name, problem)
            pending.append(item)
    return masks, pending


def _computed_masks(
    report: TextureReport,
    items: list[RunItem],
    model: ImageClassifier,
    device: str,
    batch_size: int,
) -> dict[str, tuple[np.ndarray, str]]:
    """Foreground masks of ``items`` from attention maps computed with ``model``."""
    run = report.run
    attack_prediction = bool(run.record.get("attack_prediction", False))
    method = str(run.record.get("attention") or options.default("attention"))
    dev = torch.device(device)
    model = model.to(dev).eval()
    masks: dict[str, tuple[np.ndarray, str]] = {}
    for chunk in batches(items, batch_size):
        decoded = {it.stem: report.load(it, it.clean) for it in chunk}
        # Images of one size per batch: a replaced PNG of another size gets its own.
        for shape in dict.fromkeys(a.shape for a in decoded.values() if a is not None):
            group = [it for it in chunk if getattr(decoded[it.stem], "shape", None) == shape]
            x = data.to_tensor([decoded[it.stem] for it in group]).to(dev)  # (B, 3, H, W)
            # The attacked class: the label, or the clean prediction (no labels,
            # attack_prediction).
            classes = [it.clean_pred if attack_prediction else it.reference for it in group]
            if any(c is None for c in classes):
                with torch.no_grad():
                    pred = model(x).argmax(dim=1).tolist()
                classes = [p if c is None else c for c, p in zip(classes, pred, strict=True)]
            att = attention_map(model, x, torch.tensor(classes, device=dev), method=method)
            for it, a in zip(group, att[:, 0].cpu().numpy(), strict=True):
                masks[it.stem] = (a >= report.phi, "computed attention")
    return masks


def analyze_run(
    run_dir: str | os.PathLike,
    *,
    model: ImageClassifier | None = None,
    phi: float | None = None,
    foreground: str = "attention",
    device: str = options.default("device"),
    batch_size: int = options.default("batch_size"),
    limit: int | None = None,
) -> TextureReport:
    """HILL texture and perturbation split between the attention foreground and the background.

    Args:
        run_dir: A run folder.
        model: The model for attention maps that the run did not save; default: the run's model
            (``load_model(run.model, run.weights)``), loaded only when needed.
        phi: Binarisation threshold; default the run's phi (the default phi, 4/12, when the run
            has none).
        foreground: ``attention`` (binarised attention map) or ``mask`` (the attack's saved mask).
        device: Where the model runs.
        batch_size: Images per model batch.
        limit: Use only the first N pairs.

    Returns:
        The :class:`TextureReport`.

    Raises:
        ValueError: An argument is out of range, or ``foreground="mask"`` for a run without
            saved masks.
    """
    _check_arguments(phi, foreground, batch_size, limit)
    run = read_run(run_dir, require_items=False)
    if limit is not None:
        run = run.subset({it.stem for it in run.items[:limit]})
    phi = _run_phi(run) if phi is None else float(phi)
    report = TextureReport(run=run, phi=phi, foreground=foreground)
    masks, pending = _template_masks(report, foreground)
    if pending:
        if model is None:
            logger.info("computing attention maps with %s for %d images", run.model, len(pending))
            model = load_model(run.model, run.weights)
        masks.update(_computed_masks(report, pending, model, device, batch_size))
    for item in run.items:
        if item.stem not in masks:
            continue  # left out above, with its reason
        mask, source = masks[item.stem]
        clean, adv = report.load(item, item.clean), report.load(item, item.adversarial)
        if clean is None or adv is None:
            continue
        try:
            stats = region_stats(clean, adv, mask)
        except ValueError as exc:  # a replaced PNG or a template of another size
            report.leave_out(item, str(exc))
            continue
        report.images.append({"image": item.stem, "source": source, **stats})
    return report


def texture_markdown(reports: Sequence[TextureReport]) -> str:
    """Table of the runs' texture statistics, with the definitions and the paper's values."""
    head = ["run", "attack", "δ", "images", "foreground %", "HILL fg", "HILL bg",
            "HILL fg (median)", "HILL bg (median)", "perturbation energy in fg %", "RMS fg",
            "RMS bg"]  # fmt: skip
    body = []
    for r in reports:
        row = r.row()
        body.append(
            [row["run"], row["label"], row["delta"], row["images"],
             percent(r.mean("fg_fraction")), row["hill_fg"], row["hill_bg"],
             row["hill_fg_median"], row["hill_bg_median"], percent(r.energy_fg),
             number(r.mean("rms_fg"), 3), number(r.mean("rms_bg"), 3)]
        )  # fmt: skip
    left_out = [f"{r.run.name}: {len(r.left_out)}" for r in reports if r.left_out]
    phis = sorted({f"{r.phi:.4g}" for r in reports})
    sources = sorted({img["source"] for r in reports for img in r.images})
    lines = [
        "# HILL texture: attention foreground vs background (Dong et al. 2020, Section 3.2)\n",
        *markdown_table(head, body),
        "",
        "HILL cost of the clean image's luminance (conseal), mean over the region's pixels, then "
        "mean (or median) over images; larger = smoother. Foreground: "
        f"{', '.join(sources) or 'none'}, binarised at phi = {', '.join(phis) or '-'}. "
        "Perturbation energy: share of the squared perturbation (0-255 units) inside the "
        "foreground; RMS per pixel and channel in each region, mean over images.",
        "",
        f"Paper (2000 ImageNet images): HILL foreground {PAPER_HILL['foreground']}, background "
        f"{PAPER_HILL['background']}.",
    ]
    if left_out:
        lines.append(f"\nImages left out (unreadable or mismatched files): {', '.join(left_out)}.")
    return "\n".join(lines) + "\n"


def write_texture_outputs(out: str | os.PathLike, reports: Sequence[TextureReport]) -> list[Path]:
    """Write ``texture.csv``, ``texture_images.csv`` and ``texture.md`` into ``out``.

    Returns:
        The paths written.
    """
    out = Path(out)
    paths = [out / name for name in TEXTURE_FILES]
    data.atomic_write_text(paths[0], csv_text(TEXTURE_COLUMNS, [r.row() for r in reports]))
    data.atomic_write_text(
        paths[1], csv_text(IMAGE_COLUMNS, [row for r in reports for row in r.image_rows()])
    )
    data.atomic_write_text(paths[2], texture_markdown(reports))
    return paths
