"""Steganalysis-based detection of adversarial images and the HILL texture analysis.

- :mod:`~sai_attack.detection.feature_sets`: the registry :data:`FEATURE_SETS` (SPAM, SRM,
  SRMQ1, CRM from sealwatch), the vectors of one image, and :class:`FeatureSettings`.
- :mod:`~sai_attack.detection.features`: those vectors for image files, in worker processes,
  cached by file content (:mod:`~sai_attack.detection.feature_cache`, validated on reading).
- :mod:`~sai_attack.detection.detector`: the :class:`Detector` interface.
- :mod:`~sai_attack.detection.fld`: the FLD ensemble of Kodovsky et al. (2012).
- :mod:`~sai_attack.detection.classifiers`: the detectors by name (FLD ensemble, logistic
  regression), saved as JSON + npz (never pickle).
- :mod:`~sai_attack.detection.protocol`: paired splits, P_FA / P_MD / accuracy, ROC AUC and
  TPR@5%FPR (results in :mod:`~sai_attack.detection.results`).
- :mod:`~sai_attack.detection.runs`: one detector per run folder (read with
  :func:`sai_attack.runs.read_run`) and feature set; :mod:`~sai_attack.detection.cross`: the
  cross-attack matrix; :mod:`~sai_attack.detection.apply`: saved detectors applied to folders.
- :mod:`~sai_attack.detection.reports`: Table 2, per-run details, ``detection.csv`` / ``.md`` /
  ``.json``, ``roc.png``, ``cross_attack.csv`` / ``.png`` (plots:
  :mod:`~sai_attack.detection.figures`) and ``predictions.csv``.
- :mod:`~sai_attack.detection.texture`: HILL cost and perturbation energy in the attention
  foreground vs the background (paper Section 3.2).

References: J. Liu et al., "Detection based defense against adversarial examples from the
steganalysis point of view", CVPR 2019; X. Dong et al., "Robust Superpixel-Guided Attentional
Adversarial Attack", CVPR 2020, Section 4.2 and Table 2.
"""

from sai_attack.detection.apply import ApplyResult, apply_detector
from sai_attack.detection.classifiers import (
    CLASSIFIERS,
    Detector,
    FLDEnsemble,
    LogisticDetector,
    load_detector,
    make_detector,
    save_detector,
)
from sai_attack.detection.cross import CrossCell, cross_attack
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
from sai_attack.detection.reports import (
    apply_report,
    details_markdown,
    table2_markdown,
    write_apply_outputs,
    write_detection_outputs,
)
from sai_attack.detection.runs import (
    DetectionOptions,
    DetectionOutcome,
    RunDetection,
    detect_runs,
    run_detection,
    run_label,
)
from sai_attack.detection.texture import analyze_run

__all__ = [
    "CLASSIFIERS",
    "COLOR_MODES",
    "FEATURE_SETS",
    "ApplyResult",
    "CrossCell",
    "DetectionOptions",
    "DetectionOutcome",
    "DetectionResult",
    "Detector",
    "ExtractionStats",
    "FLDEnsemble",
    "FeatureCache",
    "FeatureExtractor",
    "FeatureSettings",
    "LogisticDetector",
    "RunDetection",
    "analyze_run",
    "apply_detector",
    "apply_report",
    "cross_attack",
    "default_cache_dir",
    "default_workers",
    "details_markdown",
    "detect_runs",
    "evaluate_pairs",
    "extract_files",
    "extract_image",
    "load_detector",
    "make_detector",
    "pair_split",
    "run_detection",
    "run_label",
    "save_detector",
    "table2_markdown",
    "write_apply_outputs",
    "write_detection_outputs",
]
