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
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from sai_attack import data, options
from sai_attack.attention import attention_map
from sai_attack.detection.features import luminance
from sai_attack.detection.runs import run_label
from sai_attack.models import ImageClassifier, load_model
from sai_attack.pipeline.loading import batches
from sai_attack.report import csv_text, markdown_table, number, percent
from sai_attack.runs import Run, RunItem, read_run

logger = logging.getLogger(__name__)

FOREGROUND_SOURCES = ("attention", "mask")
TEXTURE_COLUMNS = (
    "run", "method", "label", "delta", "images", "foreground", "fg_fraction", "hill_fg",
    "hill_bg", "hill_fg_median", "hill_bg_median", "energy_fg", "rms_fg", "rms_bg", "phi",
)  # fmt: skip
IMAGE_COLUMNS = (
    "run", "image", "source", "fg_fraction", "hill_fg", "hill_bg", "energy_fg", "rms_fg", "rms_bg",
)  # fmt: skip
_RUST_MIN_SIZE = 16
PAPER_HILL = {"foreground": 5269.94, "background": 18853.42}


def hill_cost(image: np.ndarray) -> np.ndarray:
    """HILL cost map of an image's luminance (conseal; Rust backend from 16 x 16 pixels up).

    Args:
        image: (H, W, 3) uint8 RGB, or (H, W) uint8 gray.

    Returns:
        (H, W) float32 costs; larger = smoother.
    """
    import conseal as cl

    gray = image if image.ndim == 2 else luminance(image)
    if gray.dtype != np.uint8:
        raise ValueError(f"expected a uint8 image, got {gray.dtype}")
    gray = np.ascontiguousarray(gray)
    if min(gray.shape) < _RUST_MIN_SIZE:
        # conseal's Rust HILL panics below 9 x 9 (its 15 x 15 filter's mirrored border).
        return np.asarray(cl.hill._costmap.compute_cost(gray), np.float32)
    with cl.tools.BACKEND_RUST:
        return np.asarray(cl.hill._costmap.compute_cost(gray), np.float32)


def region_stats(
    clean: np.ndarray, adversarial: np.ndarray, foreground: np.ndarray
) -> dict[str, float]:
    """HILL cost and perturbation statistics of one image, split by a foreground mask.

    Args:
        clean: (H, W, 3) uint8 clean image.
        adversarial: (H, W, 3) uint8 adversarial image.
        foreground: (H, W) bool mask.

    Returns:
        ``fg_fraction``, ``hill_fg``, ``hill_bg`` (NaN for an empty region), ``sq_fg``,
        ``sq_bg`` (summed squared perturbation), ``rms_fg``, ``rms_bg`` (0-255 units).
    """
    if clean.shape != adversarial.shape or clean.shape[:2] != foreground.shape:
        raise ValueError(
            f"shapes differ: clean {clean.shape}, adversarial {adversarial.shape}, "
            f"foreground {foreground.shape}"
        )
    fg = foreground.astype(bool)
    bg = ~fg
    cost = hill_cost(clean).astype(np.float64)
    diff = adversarial.astype(np.float64) - clean.astype(np.float64)
    energy = np.sum(diff * diff, axis=2)  # (H, W), summed over channels
    n_fg, n_bg = int(fg.sum()), int(bg.sum())
    sq_fg, sq_bg = float(energy[fg].sum()), float(energy[bg].sum())
    return {
        "fg_fraction": n_fg / fg.size,
        "hill_fg": float(cost[fg].mean()) if n_fg else math.nan,
        "hill_bg": float(cost[bg].mean()) if n_bg else math.nan,
        "sq_fg": sq_fg,
        "sq_bg": sq_bg,
        "rms_fg": math.sqrt(sq_fg / (3 * n_fg)) if n_fg else math.nan,
        "rms_bg": math.sqrt(sq_bg / (3 * n_bg)) if n_bg else math.nan,
    }


@dataclass
class TextureReport:
    """Texture statistics of one run (see the module docstring for the definitions)."""

    run: Run
    phi: float
    foreground: str
    images: list[dict] = field(default_factory=list)

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


def _load_template(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(io.BytesIO(path.read_bytes()), allow_pickle=False) as npz:
            return {k: npz[k] for k in npz.files}
    except FileNotFoundError:
        return {}
    except (OSError, ValueError, EOFError) as exc:
        logger.warning("ignoring unreadable template %s: %s", path, exc)
        return {}


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
    run: Run, phi: float, foreground: str
) -> tuple[dict[str, tuple[np.ndarray, str]], list[RunItem]]:
    """Foreground masks from the run's saved templates, and the items that have none."""
    masks: dict[str, tuple[np.ndarray, str]] = {}
    pending: list[RunItem] = []
    for item in run.items:
        template = _load_template(run.template(item))
        if foreground == "mask":
            if "mask" not in template:
                raise ValueError(
                    f"foreground='mask' needs {run.template(item)} with a 'mask' array "
                    "(attack with save_templates=True)"
                )
            masks[item.stem] = (template["mask"].astype(bool), "template mask")
        elif "attention" in template:
            attention = template["attention"].astype(np.float32)
            masks[item.stem] = (attention >= phi, "template attention")
        else:
            pending.append(item)
    return masks, pending


def _computed_masks(
    run: Run,
    items: list[RunItem],
    model: ImageClassifier,
    phi: float,
    device: str,
    batch_size: int,
) -> dict[str, tuple[np.ndarray, str]]:
    """Foreground masks of ``items`` from attention maps computed with ``model``."""
    attack_prediction = bool(run.record.get("attack_prediction", False))
    method = str(run.record.get("attention") or options.default("attention"))
    dev = torch.device(device)
    model = model.to(dev).eval()
    masks: dict[str, tuple[np.ndarray, str]] = {}
    for chunk in batches(items, batch_size):
        x = data.to_tensor([data.load_image(it.clean) for it in chunk]).to(dev)  # (B, 3, H, W)
        # The attacked class: the label, or the clean prediction (no labels, attack_prediction).
        classes = [it.clean_pred if attack_prediction else it.reference for it in chunk]
        if any(c is None for c in classes):
            with torch.no_grad():
                pred = model(x).argmax(dim=1).tolist()
            classes = [p if c is None else c for c, p in zip(classes, pred, strict=True)]
        att = attention_map(model, x, torch.tensor(classes, device=dev), method=method)
        for it, a in zip(chunk, att[:, 0].cpu().numpy(), strict=True):
            masks[it.stem] = (a >= phi, "computed attention")
    return masks


def analyze_run(
    run_dir: str | os.PathLike,
    *,
    model: ImageClassifier | None = None,
    phi: float | None = None,
    foreground: str = "attention",
    device: str = "cpu",
    batch_size: int = 16,
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
    masks, pending = _template_masks(run, phi, foreground)
    if pending:
        if model is None:
            logger.info("computing attention maps with %s for %d images", run.model, len(pending))
            model = load_model(run.model, run.weights)
        masks.update(_computed_masks(run, pending, model, phi, device, batch_size))
    for item in run.items:
        mask, source = masks[item.stem]
        clean, adv = data.load_image(item.clean), data.load_image(item.adversarial)
        report.images.append(
            {"image": item.stem, "source": source, **region_stats(clean, adv, mask)}
        )
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
    return "\n".join(lines) + "\n"


def write_texture_outputs(out: str | os.PathLike, reports: Sequence[TextureReport]) -> list[Path]:
    """Write ``texture.csv``, ``texture_images.csv`` and ``texture.md`` into ``out``.

    Returns:
        The paths written.
    """
    out = Path(out)
    paths = [out / "texture.csv", out / "texture_images.csv", out / "texture.md"]
    data.atomic_write_text(paths[0], csv_text(TEXTURE_COLUMNS, [r.row() for r in reports]))
    data.atomic_write_text(
        paths[1], csv_text(IMAGE_COLUMNS, [row for r in reports for row in r.image_rows()])
    )
    data.atomic_write_text(paths[2], texture_markdown(reports))
    return paths
