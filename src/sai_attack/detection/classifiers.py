"""Binary detectors (clean vs adversarial) on feature vectors, and their safe serialisation.

- ``fld``: the ensemble of Fisher linear discriminants on random feature subspaces with bootstrap
  training sets (Kodovsky, Fridrich and Holub, "Ensemble Classifiers for Steganalysis of Digital
  Media", IEEE TIFS 2012), trained by sealwatch's ``FldEnsembleTrainer`` with automatic choice of
  the number of base learners L and the subspace dimension d_sub (out-of-bag error search). This
  is the classifier Liu et al. (CVPR 2019) and Dong et al. (CVPR 2020, Table 2) use.
- ``logreg``: L2-regularised logistic regression (C = 1) on standardised features, from
  scikit-learn; a simple baseline for comparison.

Both keep their fitted parameters as plain numpy arrays, so a detector is saved as a JSON file of
metadata plus an ``.npz`` of numeric arrays read with ``allow_pickle=False``; nothing is ever
unpickled. The FLD ensemble is stored as its subspace indices (L, d_sub), projection vectors
(L, d_sub) and thresholds (L,), and predicts exactly like sealwatch's ``EnsembleClassifier``
(majority vote of the base learners' signs; ties broken by sealwatch's fixed-seed coin,
``RandomState(6020)``), which the tests check.

Deviation from a plain sealwatch call: feature dimensions that are constant over the whole training
set are removed before training (sealwatch's FLD drops them from every base learner anyway, but
spends most of its time finding them), so the random subspaces and the automatic d_sub are drawn
over the informative dimensions only. sealwatch's solver runs with one BLAS thread (much faster on
a loaded machine).

Known limitations: the FLD ensemble's bootstrap needs equally many clean and adversarial training
samples (pairs); with few training pairs and many dimensions the base learners are regularised only
by sealwatch's tiny ridge term (1e-10), as in the reference implementation.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
from pathlib import Path
from typing import ClassVar

import numpy as np

from sai_attack import data
from sai_attack.detection.features import FeatureSettings

logger = logging.getLogger(__name__)

MODEL_FORMAT = "sai-attack-detector"
MODEL_FORMAT_VERSION = 1
_TIE_SEED = 6020  # sealwatch's EnsembleClassifier breaks ties with RandomState(6020)


def _check_training_arrays(clean: np.ndarray, adversarial: np.ndarray) -> None:
    for name, x in (("clean", clean), ("adversarial", adversarial)):
        if x.ndim != 2:
            raise ValueError(f"{name} features must be (N, D), got shape {x.shape}")
        if x.shape[0] < 2:
            raise ValueError(f"need at least 2 {name} training samples, got {x.shape[0]}")
        if not np.all(np.isfinite(x)):
            raise ValueError(f"{name} features contain NaN or infinite values")
    if clean.shape[1] != adversarial.shape[1]:
        raise ValueError(
            f"clean and adversarial features differ in dimension: "
            f"{clean.shape[1]} vs {adversarial.shape[1]}"
        )


class Detector:
    """A fitted binary detector; label 1 = adversarial, 0 = clean.

    Subclasses implement :meth:`fit`, :meth:`decision_function` and the array round trip.
    """

    name: ClassVar[str] = ""

    def __init__(self) -> None:
        self.dim: int | None = None

    def fit(self, clean: np.ndarray, adversarial: np.ndarray, seed: int = 0) -> Detector:
        """Train on clean (N, D) and adversarial (M, D) features; returns self."""
        raise NotImplementedError

    def decision_function(self, features: np.ndarray) -> np.ndarray:
        """(N,) scores, > 0 for adversarial."""
        raise NotImplementedError

    def predict(self, features: np.ndarray) -> np.ndarray:
        """(N,) int labels: 1 adversarial, 0 clean."""
        return (self.decision_function(features) > 0).astype(np.int64)

    def params(self) -> dict:
        """JSON-ready scalar parameters."""
        return {}

    def arrays(self) -> dict[str, np.ndarray]:
        """The fitted numeric arrays."""
        raise NotImplementedError

    @classmethod
    def from_arrays(cls, params: dict, arrays: dict[str, np.ndarray], dim: int) -> Detector:
        """Rebuild a fitted detector from :meth:`params` and :meth:`arrays`."""
        raise NotImplementedError

    def _check_features(self, features: np.ndarray) -> np.ndarray:
        if self.dim is None:
            raise ValueError(f"the {self.name} detector is not fitted")
        features = np.asarray(features)
        if features.ndim != 2 or features.shape[1] != self.dim:
            raise ValueError(
                f"features must be (N, {self.dim}) for this detector, got shape {features.shape}"
            )
        return features.astype(np.float64, copy=False)


class FLDEnsemble(Detector):
    """Kodovsky's FLD ensemble, trained by sealwatch, predicting from stored arrays.

    Args:
        L: Number of base learners, or ``automatic`` (the OOB-error stopping rule; default).
        d_sub: Subspace dimension, or ``automatic`` (the OOB-error search; default).

    Attributes:
        subspaces: (L, d_sub) int64 feature indices of each base learner.
        weights: (L, d_sub) float64 projection vectors.
        biases: (L,) float64 thresholds.
        training: sealwatch's search record (d_sub, OOB error, L per tried d_sub).
    """

    name = "fld"

    def __init__(self, L: int | str = "automatic", d_sub: int | str = "automatic") -> None:  # noqa: N803
        super().__init__()
        for label, value in (("L", L), ("d_sub", d_sub)):
            if value != "automatic" and not (isinstance(value, int) and value >= 1):
                raise ValueError(f"{label} must be 'automatic' or an integer >= 1, got {value!r}")
        self.L, self.d_sub_setting = L, d_sub
        self.subspaces: np.ndarray | None = None
        self.weights: np.ndarray | None = None
        self.biases: np.ndarray | None = None
        self.training: list[dict] = []
        self.oob_error: float | None = None

    def fit(self, clean: np.ndarray, adversarial: np.ndarray, seed: int = 0) -> FLDEnsemble:
        """Train the ensemble (automatic L and d_sub unless fixed in the constructor).

        Args:
            clean: (N, D) clean features.
            adversarial: (N, D) adversarial features (the same N: the bootstrap draws pairs).
            seed: Seed of sealwatch's random subspaces and bootstrap samples (< 2^32).

        Returns:
            self.
        """
        from sealwatch.ensemble_classifier import FldEnsembleTrainer
        from threadpoolctl import threadpool_limits

        _check_training_arrays(clean, adversarial)
        if clean.shape[0] != adversarial.shape[0]:
            raise ValueError(
                "the FLD ensemble needs as many clean as adversarial training samples, got "
                f"{clean.shape[0]} and {adversarial.shape[0]}"
            )
        dim = clean.shape[1]
        # Features constant over the whole training set carry no information; sealwatch's FLD
        # would drop them from every base learner anyway, one np.unique call per column and
        # learner, which dominates the training time for sparse SPAM/SRM vectors of small images.
        first = clean[0]
        constant = np.all(clean == first, axis=0) & np.all(adversarial == first, axis=0)
        kept = np.flatnonzero(~constant)
        if kept.size == 0:
            raise ValueError("every feature is constant over the training set; nothing to learn")
        trainer = FldEnsembleTrainer(
            np.ascontiguousarray(clean[:, kept], dtype=np.float64),
            np.ascontiguousarray(adversarial[:, kept], dtype=np.float64),
            seed=int(seed) % 2**32,
            L=self.L,
            d_sub=self.d_sub_setting
            if self.d_sub_setting == "automatic"
            else min(self.d_sub_setting, kept.size),
            verbose=0,
        )
        # One BLAS thread: the many small solves are 5-10x slower with threads fighting for cores.
        with threadpool_limits(limits=1):
            ensemble, records = trainer.train()
        self.load_sealwatch(ensemble, dim, kept)
        self._sealwatch = (ensemble, kept)  # for tests of agreement; never saved
        self.training = [
            {
                "d_sub": int(r["d_sub"]),
                "oob_error": float(r["oob_error"]),
                "L": int(r["num_base_learners"]),
            }
            for r in records
        ]
        best = [r for r in self.training if r["d_sub"] == self.d_sub]
        self.oob_error = min(r["oob_error"] for r in best) if best else None
        return self

    def load_sealwatch(self, ensemble, dim: int, columns: np.ndarray | None = None) -> FLDEnsemble:
        """Copy the parameters of a trained sealwatch ``EnsembleClassifier``; returns self.

        Args:
            ensemble: The sealwatch ensemble.
            dim: The dimension of the feature vectors this detector will see.
            columns: The feature indices the ensemble was trained on (default all ``dim``).
        """
        learners = ensemble.base_learners
        if not learners:
            raise ValueError("the sealwatch ensemble has no base learners")
        columns = np.arange(dim) if columns is None else np.asarray(columns, dtype=np.int64)
        subspaces, weights, biases = [], [], []
        for bl in learners:
            sub = np.arange(len(columns)) if bl.subspace is None else np.asarray(bl.subspace)
            subspaces.append(columns[sub].astype(np.int64))
            weights.append(np.asarray(bl.learner.w, dtype=np.float64).ravel())
            biases.append(float(bl.learner.b))
        self.subspaces = np.stack(subspaces)
        self.weights = np.stack(weights)
        self.biases = np.asarray(biases, dtype=np.float64)
        self.dim = int(dim)
        self._validate()
        return self

    @property
    def num_learners(self) -> int:
        """L, the number of base learners."""
        return 0 if self.biases is None else int(self.biases.shape[0])

    @property
    def d_sub(self) -> int:
        """The subspace dimension."""
        return 0 if self.subspaces is None else int(self.subspaces.shape[1])

    def votes(self, features: np.ndarray) -> np.ndarray:
        """(N,) int sum of the base learners' signs (+1 adversarial, -1 clean, 0 on the plane)."""
        x = self._check_features(features)
        votes = np.zeros(x.shape[0], dtype=np.int64)
        for sub, w, b in zip(self.subspaces, self.weights, self.biases, strict=True):
            votes += np.sign(x[:, sub] @ w - b).astype(np.int64)
        return votes

    def decision_function(self, features: np.ndarray) -> np.ndarray:
        """(N,) majority-vote confidence in [-1, 1], ties nudged to +-0.5 / L as sealwatch does."""
        votes = self.votes(features).astype(np.float64)
        ties = votes == 0
        # sealwatch: y[tie] = sign(RandomState(6020).rand(num_ties) - 0.5), fresh per call
        coin = np.random.RandomState(_TIE_SEED).rand(int(ties.sum()))
        votes[ties] = np.sign(coin - 0.5) * 0.5
        return votes / self.num_learners

    def params(self) -> dict:
        """L, d_sub and the training record."""
        return {
            "L": self.num_learners,
            "d_sub": self.d_sub,
            "oob_error": self.oob_error,
            "training": self.training,
        }

    def arrays(self) -> dict[str, np.ndarray]:
        """``subspaces``, ``weights``, ``biases``."""
        if self.subspaces is None:
            raise ValueError("the fld detector is not fitted")
        return {"subspaces": self.subspaces, "weights": self.weights, "biases": self.biases}

    @classmethod
    def from_arrays(cls, params: dict, arrays: dict[str, np.ndarray], dim: int) -> FLDEnsemble:
        """Rebuild from stored arrays (validated)."""
        det = cls()
        det.subspaces = np.asarray(arrays["subspaces"], dtype=np.int64)
        det.weights = np.asarray(arrays["weights"], dtype=np.float64)
        det.biases = np.asarray(arrays["biases"], dtype=np.float64)
        det.dim = int(dim)
        det.training = list(params.get("training", []))
        det.oob_error = params.get("oob_error")
        det._validate()
        return det

    def _validate(self) -> None:
        s, w, b = self.subspaces, self.weights, self.biases
        if s.ndim != 2 or w.shape != s.shape or b.shape != (s.shape[0],) or s.shape[0] < 1:
            raise ValueError(
                f"inconsistent FLD ensemble arrays: subspaces {s.shape}, weights {w.shape}, "
                f"biases {b.shape}"
            )
        if s.size and (s.min() < 0 or s.max() >= self.dim):
            raise ValueError(f"FLD subspace indices outside 0..{self.dim - 1}")
        if not (np.all(np.isfinite(w)) and np.all(np.isfinite(b))):
            raise ValueError("FLD ensemble weights contain NaN or infinite values")


class LogisticDetector(Detector):
    """Logistic regression on standardised features (scikit-learn), stored as arrays.

    Attributes:
        mean: (D,) feature means of the training set.
        scale: (D,) feature standard deviations (1 where constant).
        coef: (D,) weights on the standardised features.
        intercept: The bias.
    """

    name = "logreg"

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

        _check_training_arrays(clean, adversarial)
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

    def arrays(self) -> dict[str, np.ndarray]:
        """``mean``, ``scale``, ``coef``."""
        if self.coef is None:
            raise ValueError("the logreg detector is not fitted")
        return {"mean": self.mean, "scale": self.scale, "coef": self.coef}

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
        return det


CLASSIFIERS: dict[str, type[Detector]] = {"fld": FLDEnsemble, "logreg": LogisticDetector}
"""Detector classes by CLI name."""


def make_detector(name: str, **options) -> Detector:
    """A new, unfitted detector by CLI name; ``options`` go to its constructor."""
    if name not in CLASSIFIERS:
        raise ValueError(f"--classifier must be one of {', '.join(CLASSIFIERS)}, got {name!r}")
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


def load_detector(path: str | os.PathLike) -> tuple[Detector, FeatureSettings, dict]:
    """Load a detector written by :func:`save_detector` (no pickle is ever read).

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
    except (UnicodeDecodeError, ValueError) as exc:
        raise ValueError(f"{str(json_path)!r} is not a saved detector (bad JSON: {exc})") from None
    if not isinstance(record, dict) or record.get("format") != MODEL_FORMAT:
        raise ValueError(
            f"{str(json_path)!r} is not a saved detector (format is not {MODEL_FORMAT})"
        )
    if record.get("format_version") != MODEL_FORMAT_VERSION:
        raise ValueError(
            f"{str(json_path)!r} has detector format version {record.get('format_version')!r}; "
            f"this version reads {MODEL_FORMAT_VERSION}"
        )
    name = record.get("classifier")
    if name not in CLASSIFIERS:
        raise ValueError(f"{str(json_path)!r}: unknown classifier {name!r}")
    feats = record.get("features") or {}
    settings = FeatureSettings(str(feats.get("features")), str(feats.get("color")))
    dim = record.get("dim")
    if dim != settings.dim:
        raise ValueError(
            f"{str(json_path)!r}: dimension {dim!r} does not match {settings.features}/"
            f"{settings.color} features ({settings.dim})"
        )
    meta = record.get("arrays") or {}
    npz_name = str(meta.get("file", ""))
    if Path(npz_name).name != npz_name or not npz_name.endswith(".npz"):
        raise ValueError(f"{str(json_path)!r}: bad arrays file name {npz_name!r}")
    npz_path = json_path.with_name(npz_name)
    if not npz_path.is_file():
        raise FileNotFoundError(f"detector arrays {str(npz_path)!r} do not exist")
    payload = npz_path.read_bytes()
    if hashlib.sha256(payload).hexdigest() != meta.get("sha256"):
        raise ValueError(f"{str(npz_path)!r} does not match {str(json_path)!r} (sha256 differs)")
    try:
        with np.load(io.BytesIO(payload), allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except (ValueError, OSError, EOFError) as exc:
        raise ValueError(f"{str(npz_path)!r} is not a valid npz file: {exc}") from None
    for key, arr in arrays.items():
        if arr.dtype.kind not in "iuf":
            raise ValueError(f"{str(npz_path)!r}: array {key!r} has non-numeric dtype {arr.dtype}")
    missing = set(meta.get("names", [])) ^ set(arrays)
    if missing:
        raise ValueError(f"{str(npz_path)!r}: arrays differ from the record: {sorted(missing)}")
    try:
        detector = CLASSIFIERS[name].from_arrays(record.get("params") or {}, arrays, int(dim))
    except KeyError as exc:
        raise ValueError(f"{str(npz_path)!r} lacks array or parameter {exc}") from None
    return detector, settings, dict(record.get("info") or {})
