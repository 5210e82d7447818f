"""Steganalysis-based detection of adversarial images and the HILL texture analysis.

- :mod:`~sai_attack.detection.features`: SPAM / SRM features (sealwatch) per file, cached.
- :mod:`~sai_attack.detection.classifiers`: FLD ensemble and logistic-regression detectors,
  saved as JSON + npz (never pickle).
- :mod:`~sai_attack.detection.protocol`: paired splits, P_FA / P_MD / accuracy.
- :mod:`~sai_attack.detection.runs`: one detector per run folder, Table 2 reports.
- :mod:`~sai_attack.detection.texture`: HILL cost and perturbation energy in the attention
  foreground vs the background (paper Section 3.2).

References: J. Liu et al., "Detection based defense against adversarial examples from the
steganalysis point of view", CVPR 2019; X. Dong et al., "Robust Superpixel-Guided Attentional
Adversarial Attack", CVPR 2020, Section 4.2 and Table 2.
"""

from sai_attack.detection.classifiers import (
    CLASSIFIERS,
    Detector,
    FLDEnsemble,
    LogisticDetector,
    load_detector,
    make_detector,
    save_detector,
)
from sai_attack.detection.features import (
    COLOR_MODES,
    FEATURE_SETS,
    ExtractionStats,
    FeatureCache,
    FeatureExtractor,
    FeatureSettings,
    default_cache_dir,
    default_workers,
    extract_files,
    extract_image,
)
from sai_attack.detection.protocol import DetectionResult, evaluate_pairs, pair_split
from sai_attack.detection.runs import (
    DetectionOptions,
    RunDetection,
    RunFolderError,
    RunPairs,
    apply_detector,
    detect_runs,
    read_run,
    write_detection_outputs,
)

__all__ = [
    "CLASSIFIERS",
    "COLOR_MODES",
    "FEATURE_SETS",
    "DetectionOptions",
    "DetectionResult",
    "Detector",
    "ExtractionStats",
    "FLDEnsemble",
    "FeatureCache",
    "FeatureExtractor",
    "FeatureSettings",
    "LogisticDetector",
    "RunDetection",
    "RunFolderError",
    "RunPairs",
    "apply_detector",
    "default_cache_dir",
    "default_workers",
    "detect_runs",
    "evaluate_pairs",
    "extract_files",
    "extract_image",
    "load_detector",
    "make_detector",
    "pair_split",
    "read_run",
    "save_detector",
    "write_detection_outputs",
]
