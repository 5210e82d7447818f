"""Binary detectors (clean vs adversarial) on feature vectors, and their safe serialisation.

- ``fld``: the ensemble of Fisher linear discriminants of Kodovsky et al. (IEEE TIFS 2012), trained
  by sealwatch (:class:`~sai_attack.detection.fld.FLDEnsemble`, in its own module); the
  classifier Liu et al. (CVPR 2019) and Dong et al. (CVPR 2020, Table 2) use.
- ``logreg``: L2-regularised logistic regression (C = 1) on standardised features, from
  scikit-learn; a simple baseline for comparison.

Both keep their fitted parameters as plain numpy arrays, so a detector is saved as a JSON file of
metadata plus an ``.npz`` of numeric arrays read with ``allow_pickle=False``; nothing is ever
unpickled. :class:`~sai_attack.detection.detector.Detector`, the interface, is importable from
here too.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import zipfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from sai_attack import data
from sai_attack.detection.detector import Detector, check_training_arrays
from sai_attack.detection.feature_sets import FeatureSettings
from sai_attack.detection.fld import FLDEnsemble

__all__ = [
    "CLASSIFIERS",
    "MODEL_FORMAT",
    "MODEL_FORMAT_VERSION",
    "Detector",
    "FLDEnsemble",
    "LogisticDetector",
    "load_detector",
    "make_detector",
    "save_detector",
]

logger = logging.getLogger(__name__)

MODEL_FORMAT = "sai-attack-detector"
MODEL_FORMAT_VERSION = 1


class LogisticDetector(Detector):
    """Logistic regression on standardised features (scikit-learn), stored as arrays.

    Attributes:
        mean: (D,) feature means of the training set.
        scale: (D,) feature standard deviations (1 where constant).
        coef: (D,) weights on the standardised features.
        intercept: The bias.
    """

    name = "logreg"
    array_names = ("mean", "scale", "coef")

    def __init__(self, c: float = 1.0, max_iter: int = 5000) -> None:
        super().__init__()
        if not c > 0:
            raise ValueError(f"C must be > 0, got {c}")
        self.c, self.max_iter = float(c), int(max_iter)
        self.mean: np.ndarray | None = None
        self.scale: np.ndarray | None = None
        self.coef: np.ndarray | None = None
        self.intercept: float = 0.0

    def fit(self, clean: np.ndarray, adversarial: np.ndarray, seed: int = 0) -> LogisticDetector:
        """Train (lbfgs, deterministic; ``seed`` is accepted for a common interface)."""
        from sklearn.linear_model import LogisticRegression
        from sklearn.preprocessing import StandardScaler

        check_training_arrays(clean, adversarial)
        x = np.concatenate([clean, adversarial]).astype(np.float64)
        y = np.concatenate([np.zeros(len(clean)), np.ones(len(adversarial))]).astype(np.int64)
        scaler = StandardScaler().fit(x)
        model = LogisticRegression(C=self.c, max_iter=self.max_iter, random_state=seed % 2**32)
        model.fit(scaler.transform(x), y)
        self.mean = scaler.mean_.astype(np.float64)
        self.scale = scaler.scale_.astype(np.float64)
        self.coef = model.coef_.ravel().astype(np.float64)
        self.intercept = float(model.intercept_[0])
        self.dim = x.shape[1]
        self._sklearn = (scaler, model)  # kept for tests of agreement; never saved
        return self

    def decision_function(self, features: np.ndarray) -> np.ndarray:
        """(N,) logit of the adversarial class."""
        x = self._check_features(features)
        return ((x - self.mean) / self.scale) @ self.coef + self.intercept

    def params(self) -> dict:
        """C, max_iter and the intercept."""
        return {"C": self.c, "max_iter": self.max_iter, "intercept": self.intercept}

    @classmethod
    def from_arrays(cls, params: dict, arrays: dict[str, np.ndarray], dim: int) -> LogisticDetector:
        """Rebuild from stored arrays (validated)."""
        det = cls(c=float(params.get("C", 1.0)), max_iter=int(params.get("max_iter", 5000)))
        det.mean = np.asarray(arrays["mean"], dtype=np.float64)
        det.scale = np.asarray(arrays["scale"], dtype=np.float64)
        det.coef = np.asarray(arrays["coef"], dtype=np.float64)
        det.intercept = float(params["intercept"])
        det.dim = int(dim)
        for name in ("mean", "scale", "coef"):
            a = getattr(det, name)
            if a.shape != (det.dim,) or not np.all(np.isfinite(a)):
                raise ValueError(f"logreg array {name!r} must be ({det.dim},) and finite")
        if np.any(det.scale <= 0):
            raise ValueError("logreg array 'scale' must be > 0")
        if not np.isfinite(det.intercept):
            raise ValueError(f"logreg intercept must be finite, got {det.intercept}")
        return det


CLASSIFIERS: dict[str, type[Detector]] = {"fld": FLDEnsemble, "logreg": LogisticDetector}
"""Detector classes by CLI name."""


def make_detector(name: str, **options) -> Detector:
    """A new, unfitted detector by CLI name; ``options`` go to its constructor."""
    if name not in CLASSIFIERS:
        raise ValueError(f"classifier must be one of {', '.join(CLASSIFIERS)}, got {name!r}")
    return CLASSIFIERS[name](**options)


# --------------------------------------------------------------------------------------------
# Saving and loading (JSON + npz, never pickle)
# --------------------------------------------------------------------------------------------


def save_detector(
    path: str | os.PathLike,
    detector: Detector,
    settings: FeatureSettings,
    info: dict | None = None,
) -> tuple[Path, Path]:
    """Save a fitted detector as ``PATH`` (JSON metadata) and ``PATH`` with suffix ``.npz``.

    Args:
        path: The JSON file to write (``.json`` is appended when it has another suffix).
        detector: The fitted detector.
        settings: The features it was trained on (stored, and re-used by :func:`load_detector`).
        info: Extra JSON-ready information (training run, pairs, protocol).

    Returns:
        ``(json_path, npz_path)``.
    """
    json_path = Path(path)
    if json_path.suffix != ".json":
        json_path = json_path.with_name(json_path.name + ".json")
    npz_path = json_path.with_suffix(".npz")
    arrays = {k: np.ascontiguousarray(v) for k, v in detector.arrays().items()}
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    payload = buf.getvalue()
    record = {
        "format": MODEL_FORMAT,
        "format_version": MODEL_FORMAT_VERSION,
        "classifier": detector.name,
        "features": settings.describe(),
        "dim": detector.dim,
        "params": detector.params(),
        "arrays": {
            "file": npz_path.name,
            "sha256": hashlib.sha256(payload).hexdigest(),
            "names": sorted(arrays),
        },
        "info": info or {},
    }
    data.atomic_write_bytes(npz_path, payload)
    data.atomic_write_text(json_path, json.dumps(record, indent=2, sort_keys=True) + "\n")
    return json_path, npz_path


def _field(record: dict, key: str, kind: type, where: Path) -> Any:
    """``record[key]`` when it is of ``kind`` (a bool is no integer here), else ValueError."""
    value = record.get(key)
    if isinstance(value, kind) and not isinstance(value, bool):
        return value
    raise ValueError(f"{str(where)!r} is not a valid saved detector: {key!r} is {value!r:.60}")


def _read_arrays(npz_path: Path, payload: bytes) -> dict[str, np.ndarray]:
    """The numeric arrays of a detector's ``.npz`` (read without pickle)."""
    try:
        with np.load(io.BytesIO(payload), allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except (ValueError, OSError, EOFError, KeyError, zipfile.BadZipFile, zlib.error) as exc:
        # A truncated or tampered zip fails in its directory, a member's CRC or its npy header.
        raise ValueError(
            f"{str(npz_path)!r} is not a valid npz file ({type(exc).__name__}: {exc})"
        ) from None
    for key, arr in arrays.items():
        if arr.dtype.kind not in "iuf":
            raise ValueError(f"{str(npz_path)!r}: array {key!r} has non-numeric dtype {arr.dtype}")
    return arrays


def load_detector(path: str | os.PathLike) -> tuple[Detector, FeatureSettings, dict]:
    """Load a detector written by :func:`save_detector` (no pickle is ever read).

    Every field is checked for its type, so a tampered file fails with a message, never with an
    exception from deep inside.

    Args:
        path: The JSON file (its ``.npz`` must sit next to it, as written).

    Returns:
        ``(detector, settings, info)``.

    Raises:
        FileNotFoundError: When the JSON or npz file is missing.
        ValueError: When either file is not a valid saved detector, or they do not match.
    """
    json_path = Path(path)
    if not json_path.is_file():
        raise FileNotFoundError(f"detector file {str(json_path)!r} does not exist")
    try:
        record = json.loads(json_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise ValueError(f"{str(json_path)!r} is not a saved detector (bad JSON: {exc})") from None
    if not isinstance(record, dict) or record.get("format") != MODEL_FORMAT:
        raise ValueError(
            f"{str(json_path)!r} is not a saved detector (format is not {MODEL_FORMAT})"
        )
    if record.get("format_version") != MODEL_FORMAT_VERSION:
        raise ValueError(
            f"{str(json_path)!r} has detector format version {record.get('format_version')!r:.60}; "
            f"this version reads {MODEL_FORMAT_VERSION}"
        )
    name = _field(record, "classifier", str, json_path)
    if name not in CLASSIFIERS:
        raise ValueError(f"{str(json_path)!r}: unknown classifier {name!r:.60}")
    feats = _field(record, "features", dict, json_path)
    features = _field(feats, "features", str, json_path)
    color = _field(feats, "color", str, json_path)
    try:
        settings = FeatureSettings(features, color)
    except ValueError as exc:
        raise ValueError(f"{str(json_path)!r}: {exc}") from None
    dim = _field(record, "dim", int, json_path)
    if dim != settings.dim:
        raise ValueError(
            f"{str(json_path)!r}: dimension {dim!r} does not match {settings.features}/"
            f"{settings.color} features ({settings.dim})"
        )
    meta = _field(record, "arrays", dict, json_path)
    npz_name = _field(meta, "file", str, json_path)
    names = _field(meta, "names", list, json_path)
    if Path(npz_name).name != npz_name or not npz_name.endswith(".npz"):
        raise ValueError(f"{str(json_path)!r}: bad arrays file name {npz_name!r:.60}")
    npz_path = json_path.with_name(npz_name)
    if not npz_path.is_file():
        raise FileNotFoundError(f"detector arrays {str(npz_path)!r} do not exist")
    payload = npz_path.read_bytes()
    if hashlib.sha256(payload).hexdigest() != meta.get("sha256"):
        raise ValueError(f"{str(npz_path)!r} does not match {str(json_path)!r} (sha256 differs)")
    arrays = _read_arrays(npz_path, payload)
    missing = {str(n) for n in names} ^ set(arrays)
    if missing:
        raise ValueError(f"{str(npz_path)!r}: arrays differ from the record: {sorted(missing)}")
    params = _field(record, "params", dict, json_path)
    info = record.get("info") or {}
    try:
        detector = CLASSIFIERS[name].from_arrays(params, arrays, dim)
    except KeyError as exc:
        array = exc.args[0] in CLASSIFIERS[name].array_names
        where, what = (npz_path, "array") if array else (json_path, "parameter")
        raise ValueError(f"{str(where)!r} lacks {what} {exc}") from None
    except (TypeError, ValueError) as exc:  # parameters of the wrong type, bad arrays
        raise ValueError(f"{str(json_path)!r} is not a valid saved detector: {exc}") from None
    return detector, settings, info if isinstance(info, dict) else {}
