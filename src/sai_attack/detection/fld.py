"""Kodovsky's FLD ensemble detector, trained by sealwatch, predicting from stored arrays.

The ensemble of Fisher linear discriminants on random feature subspaces with bootstrap training
sets (Kodovsky, Fridrich and Holub, "Ensemble Classifiers for Steganalysis of Digital Media", IEEE
TIFS 2012), trained by sealwatch's ``FldEnsembleTrainer`` with automatic choice of the number of
base learners L and the subspace dimension d_sub (out-of-bag error search). This is the
classifier Liu et al. (CVPR 2019) and Dong et al. (CVPR 2020, Table 2) use.

It is stored as its subspace indices (L, d_sub), projection vectors (L, d_sub) and thresholds
(L,), and predicts exactly like sealwatch's ``EnsembleClassifier`` (majority vote of the base
learners' signs; ties broken by sealwatch's fixed-seed coin, ``RandomState(6020)``), which the
tests check.

Deviation from a plain sealwatch call: feature dimensions that are constant over the whole training
set are removed before training (sealwatch's FLD drops them from every base learner anyway, but
spends most of its time finding them), so the random subspaces and the automatic d_sub are drawn
over the informative dimensions only. sealwatch's solver runs with one BLAS thread (much faster on
a loaded machine).

Known limitations: the bootstrap needs equally many clean and adversarial training samples
(pairs); with few training pairs and many dimensions the base learners are regularised only by
sealwatch's tiny ridge term (1e-10), as in the reference implementation.
"""

from __future__ import annotations

import numpy as np

from sai_attack.detection.detector import Detector, check_training_arrays

_TIE_SEED = 6020  # sealwatch's EnsembleClassifier breaks ties with RandomState(6020)


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
    array_names = ("subspaces", "weights", "biases")

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

        check_training_arrays(clean, adversarial)
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
