"""How much of the paper's Section 4 a ``sai-attack reproduce`` run measures."""

from __future__ import annotations

from dataclasses import dataclass, replace


@dataclass(frozen=True)
class Preset:
    """The sizes of every experiment.

    Attributes:
        name: Preset name.
        summary: One line for ``--help``: what it measures and how long it takes.
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
        beyond_images: Images of the "Beyond the paper" section (the first N).
        beyond_deltas: deltas of its success-against-detection (Pareto) plot.
        control_delta: delta of its control (templates) and EoT tables.
        control_templates: Templates of the control table: ``pixels``, a superpixel algorithm,
            or a control space (``dct``, ``gaussian``).
        texture_weights: Texture weights W of stego-aware SAI-FGM in the Pareto plot.
        eot_defenses: One EoT attack against each of these defenses.
        eot_mixed: One more EoT attack against this mixture of defenses.
        eot_samples: Defense draws K per EoT step.
        transfer_delta: delta of the transfer table with boosters.
        input_diversity: DI probability of the boosted transfer rows.
        translation_invariance: TI kernel size of the boosted transfer rows.
    """

    name: str
    summary: str
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
    beyond_images: int = 100_000
    beyond_deltas: tuple[float, ...] = (2.0, 4.0)
    control_delta: float = 4.0
    control_templates: tuple[str, ...] = ("pixels", "slic", "grid", "dct", "gaussian")
    texture_weights: tuple[float, ...] = (0.25, 0.5, 1.0, 2.0)
    eot_defenses: tuple[str, ...] = ("resize:3", "jpeg:55", "avgpool:5", "tvm", "bitdepth:3")
    eot_mixed: str = "resize:1..3 jpeg:30..90 avgpool:3,5"
    eot_samples: int = 4
    transfer_delta: float = 16.0
    input_diversity: float = 0.5
    translation_invariance: int = 7


_STANDARD = Preset(
    name="standard",
    summary="the first 100 images (ablations and beyond the paper on 32), fewer sweep points; "
    "about 40-60 min on a 2-core CPU",
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
    beyond_images=32,
    texture_weights=(0.5, 2.0),
    eot_defenses=("resize:3", "jpeg:55", "avgpool:5"),
    eot_samples=1,
)

PRESETS: dict[str, Preset] = {
    "quick": replace(
        _STANDARD,
        name="quick",
        summary="every table and figure on the first 32 images (ablations and beyond the paper "
        "on 16), one delta per experiment, logistic-regression detectors; under 15 min on a "
        "2-core CPU",
        images=32,
        ablation_images=16,
        beyond_images=16,
        # delta 4 everywhere below Table 1, so detection, defenses, the control table and the
        # Pareto plot read the same runs
        detection_deltas=(4.0,),
        beyond_deltas=(4.0,),
        # the FLD ensemble's d_sub search does not converge on 10-20 training pairs and costs
        # ~18 s per detector there; the paper's classifier stays in standard and full
        detection_classifier="logreg",
        resize="resize:1.0..3.0:0.5",
        jpeg="jpeg:15..95:40",
        dnn_jpeg="dnn-jpeg:15..95:40",
        pooling=(3, 5),
        bitdepths=(3,),
        superpixel_sizes=(3, 8),
        phis=(0, 8),
        texture_weights=(1.0,),
        eot_defenses=("jpeg:55",),
    ),
    "standard": _STANDARD,
    "full": Preset(
        name="full",
        summary="every image and every point of the paper; many hours on a CPU",
        images=100_000,
        ablation_images=100_000,
    ),
    "tiny": Preset(
        name="tiny",
        summary="a smoke test of the whole pipeline: a few images, one point per sweep",
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
        beyond_images=4,
        beyond_deltas=(4.0,),
        texture_weights=(1.0,),
        eot_defenses=("bitdepth:3",),
        eot_mixed="resize:1..2 avgpool:3",
        eot_samples=1,
    ),
}
"""The presets by name (the first is the command's default); ``summary`` says what each holds.
``standard`` is the preset of docs/results.md and docs/beyond.md (it was called ``quick`` before
2026-12-07)."""


def with_images(preset: Preset, images: int | None) -> Preset:
    """The preset with another image count (ablations keep their share)."""
    if images is None:
        return preset
    if images < 1:
        raise ValueError(f"images must be >= 1, got {images}")
    share = min(1.0, preset.ablation_images / preset.images)
    return replace(
        preset,
        images=images,
        ablation_images=max(1, round(images * share)),
        beyond_images=min(preset.beyond_images, images),
    )
