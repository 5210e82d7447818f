"""Figures: the paper's visual comparison (Fig. 1/7) of clean and adversarial images."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from matplotlib.figure import Figure

from sai_attack.report import new_figure


def imagenet_classes() -> list[str]:
    """The 1000 ImageNet class names (shipped with torchvision, no download)."""
    from torchvision.models import ResNet18_Weights

    return list(ResNet18_Weights.IMAGENET1K_V1.meta["categories"])


def amplify(perturbation: np.ndarray, scale: float | None = None) -> np.ndarray:
    """Map a signed perturbation (H, W, 3) to a visible uint8 image centred on grey.

    Args:
        perturbation: Signed differences in 0-255 units.
        scale: The magnitude mapped to full contrast; default the largest absolute value.
    """
    scale = float(np.abs(perturbation).max()) if scale is None else scale
    scale = max(scale, 1e-6)
    return np.clip(np.rint(127.5 + 127.5 * perturbation / scale), 0, 255).astype(np.uint8)


def superpixel_image(image: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """The paper's superpixel image x' (Fig. 3): every superpixel painted its mean colour."""
    from skimage.color import label2rgb

    painted = label2rgb(labels, image, kind="avg", bg_label=-1)
    return np.clip(np.rint(painted), 0, 255).astype(np.uint8)


def mask_overlay(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Dim the image where ``mask`` is 0, uint8."""
    m = mask.astype(np.float64)[..., None]
    return np.clip(np.rint(image * (0.25 + 0.75 * m)), 0, 255).astype(np.uint8)


@dataclass
class ComparisonRow:
    """One image of a comparison figure.

    Attributes:
        title: Row label (image name, class).
        clean: (H, W, 3) uint8 clean image.
        adversarial: Method name -> (H, W, 3) uint8 adversarial image.
        superpixels: (H, W) labels of the superpixel method, if any.
        mask: (H, W) binary attention mask, if any.
    """

    title: str
    clean: np.ndarray
    adversarial: dict[str, np.ndarray]
    superpixels: np.ndarray | None = None
    mask: np.ndarray | None = None


def comparison_figure(rows: Sequence[ComparisonRow], zoom: int = 64, dpi: int = 110) -> Figure:
    """The Fig. 1/7-style grid: clean | adversarials | amplified perturbations | templates.

    Every perturbation of a row is amplified with the same scale so they compare fairly, and a
    zoomed crop from the image centre shows the texture of each adversarial image. Render it
    with :func:`sai_attack.report.figure_png`.

    Raises:
        ValueError: ``rows`` is empty.
    """
    if not rows:
        raise ValueError("rows must hold at least one ComparisonRow")
    methods = list(rows[0].adversarial)
    columns = ["clean", *methods]
    columns += [f"{m} zoom" for m in methods]
    columns += [f"{m} noise (x)" for m in methods]
    has_sp = any(r.superpixels is not None for r in rows)
    has_mask = any(r.mask is not None for r in rows)
    columns += ["superpixels"] * has_sp + ["attention mask"] * has_mask
    fig = new_figure(1.9 * len(columns), 2.0 * len(rows), dpi=dpi)
    axes = fig.subplots(len(rows), len(columns), squeeze=False)
    for i, row in enumerate(rows):
        h, w = row.clean.shape[:2]
        top, left = (h - zoom) // 2, (w - zoom) // 2
        diffs = {m: a.astype(np.float64) - row.clean for m, a in row.adversarial.items()}
        scale = max(float(np.abs(d).max()) for d in diffs.values())
        panels = [row.clean, *row.adversarial.values()]
        panels += [a[top : top + zoom, left : left + zoom] for a in row.adversarial.values()]
        panels += [amplify(d, scale) for d in diffs.values()]
        if has_sp:
            panels.append(
                superpixel_image(row.clean, row.superpixels)
                if row.superpixels is not None
                else np.zeros_like(row.clean)
            )
        if has_mask:
            panels.append(mask_overlay(row.clean, row.mask) if row.mask is not None else row.clean)
        for j, (ax, panel) in enumerate(zip(axes[i], panels, strict=True)):
            ax.imshow(panel, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(columns[j], fontsize=8)
        axes[i][0].set_ylabel(row.title, fontsize=7)
    fig.tight_layout()
    return fig
