"""How much of the paper's Section 4 a ``sai-attack reproduce`` run measures."""

from __future__ import annotations

from dataclasses import dataclass, replace


@dataclass(frozen=True)
class Preset:
    """The sizes of every experiment.

    Attributes:
        name: Preset name.
        images: Images for Tables 1-4 and Figures 2 and 4-6 (the first N of the data folder).
        ablation_images: Images for the ablations (the first N, a subset of the above).
        table1_delta: delta of Table 1 (paper: 16).
        robustness_deltas: deltas of the defense experiments (Fig. 4, Table 3, Fig. 6a).
        detection_deltas: deltas of Table 2.
        detection_betas: merge thresholds beta of Table 2.
        resize: Resize sweep spec (Fig. 4).
        jpeg: JPEG quality sweep spec (Fig. 5a).
        dnn_jpeg: DNN-oriented JPEG quality sweep spec (Fig. 5b).
        pooling: Pooling kernel sizes (Table 3).
        bitdepths: Bit depths (Fig. 6b).
        superpixel_sizes: Superpixel sizes S of the ablation (Fig. 8a).
        phis: Binarisation thresholds of the ablation, in twelfths (Fig. 8b).
        grad_modes: Superpixel gradient modes of the ablation (Sec. 4.4).
        algorithms: Superpixel algorithms of Table 4.
        matched_momentum: Also run MI-FGM under the matched protocol.
        detection_splits: Train/test splits per detector.
        detection_classifier: ``fld`` (the paper's FLD ensemble) or ``logreg``.
    """

    name: str
    images: int
    ablation_images: int
    table1_delta: float = 16.0
    robustness_deltas: tuple[float, ...] = (4.0, 8.0, 16.0)
    detection_deltas: tuple[float, ...] = (2.0, 4.0, 6.0, 8.0)
    detection_betas: tuple[float, ...] = (0.0, 2.0, 4.0)
    resize: str = "resize:1.0..3.0:0.1"
    jpeg: str = "jpeg:5..95:10"
    dnn_jpeg: str = "dnn-jpeg:5..95:10"
    pooling: tuple[int, ...] = (3, 5, 7)
    bitdepths: tuple[int, ...] = (2, 3, 4)
    superpixel_sizes: tuple[int, ...] = (2, 3, 4, 5, 6, 7, 8)
    phis: tuple[int, ...] = tuple(range(12))
    grad_modes: tuple[str, ...] = ("noise", "mean", "max")
    algorithms: tuple[str, ...] = ("slic", "lsc", "seeds")
    matched_momentum: bool = True
    detection_splits: int = 5
    detection_classifier: str = "fld"


PRESETS: dict[str, Preset] = {
    "full": Preset(name="full", images=100_000, ablation_images=100_000),
    "quick": Preset(
        name="quick",
        images=100,
        ablation_images=32,
        robustness_deltas=(4.0,),
        detection_deltas=(2.0,),
        resize="resize:1.0..3.0:0.25",
        jpeg="jpeg:15..95:20",
        dnn_jpeg="dnn-jpeg:15..95:20",
        superpixel_sizes=(3, 5, 8),
        phis=(0, 4, 8),
        matched_momentum=False,
        detection_splits=3,
    ),
    "tiny": Preset(
        name="tiny",
        images=6,
        ablation_images=4,
        robustness_deltas=(4.0, 16.0),
        detection_deltas=(2.0,),
        detection_betas=(0.0, 4.0),
        resize="resize:1.0..3.0:1.0",
        jpeg="jpeg:55..95:40",
        dnn_jpeg="dnn-jpeg:55",
        pooling=(3,),
        bitdepths=(3,),
        superpixel_sizes=(5, 8),
        phis=(0, 4),
        grad_modes=("noise", "mean"),
        algorithms=("slic", "seeds"),
        matched_momentum=False,
        detection_splits=2,
        detection_classifier="logreg",  # the FLD ensemble's search is slow on tiny sets
    ),
}
"""``quick``: about 100 images and fewer sweep points (under 30 minutes on a 2-core CPU);
``full``: every image and every point of the paper; ``tiny``: a smoke test of the whole pipeline
(a few images, one point per sweep)."""


def with_images(preset: Preset, images: int | None) -> Preset:
    """The preset with another image count (ablations keep their share)."""
    if images is None:
        return preset
    if images < 1:
        raise ValueError(f"images must be >= 1, got {images}")
    share = min(1.0, preset.ablation_images / preset.images)
    return replace(preset, images=images, ablation_images=max(1, round(images * share)))
