"""Steganalysis features of image files, extracted in parallel and cached per file.

The vectors themselves (SPAM, SRM, SRMQ1 and CRM from ``sealwatch``: the registry
:data:`FEATURE_SETS`) and :class:`FeatureSettings` are defined in
:mod:`~sai_attack.detection.feature_sets`; they are importable from here too.

Cache: vectors are looked up and stored by :class:`FeatureCache` (in
:mod:`~sai_attack.detection.feature_cache`, importable from here too), keyed by the SHA-256 of
the file's bytes and the feature settings, validated when read and recomputed when unusable.
"""

from __future__ import annotations

import hashlib
import logging
import multiprocessing
import os
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sai_attack import data
from sai_attack.detection.feature_cache import (
    CACHE_ENV,
    FeatureCache,
    decode_vector,
    default_cache_dir,
)
from sai_attack.detection.feature_sets import (
    COLOR_MODES,
    FEATURE_DIMS,
    FEATURE_DTYPES,
    FEATURE_SETS,
    MIN_SIZE,
    FeatureSet,
    FeatureSettings,
    crm_features,
    extract_image,
    luminance,
    spam_features,
    srm_features,
    srmq1_features,
)
from sai_attack.runtime import die_with_parent

__all__ = [
    "CACHE_ENV",
    "COLOR_MODES",
    "FEATURE_DIMS",
    "FEATURE_DTYPES",
    "FEATURE_SETS",
    "MIN_SIZE",
    "ExtractionStats",
    "FeatureCache",
    "FeatureExtractor",
    "FeatureSet",
    "FeatureSettings",
    "crm_features",
    "decode_vector",
    "default_cache_dir",
    "default_workers",
    "extract_files",
    "extract_image",
    "luminance",
    "spam_features",
    "srm_features",
    "srmq1_features",
]

logger = logging.getLogger(__name__)

# Fewer cache misses than this are computed in the calling process (FeatureSet.min_parallel:
# starting spawned workers costs seconds). A dict so that tests and benchmarks can force a pool.
_MIN_PARALLEL = {name: fs.min_parallel for name, fs in FEATURE_SETS.items()}
_BLOCK = 512


def default_workers() -> int:
    """Worker processes for features and detector training by default: the CPUs, at most 4."""
    return min(4, os.cpu_count() or 1)


# --------------------------------------------------------------------------------------------
# Extraction from files, in parallel
# --------------------------------------------------------------------------------------------


@dataclass
class ExtractionStats:
    """What :func:`extract_files` did.

    Attributes:
        images: Files processed.
        computed: Vectors computed (cache misses).
        cached: Vectors read from the cache.
        rejected: Cache entries that were there but unusable (unreadable, another shape or
            dtype, NaN or infinite values), hence recomputed; counted in ``computed`` too.
        seconds: Wall-clock time.
        compute_seconds: Time spent computing features, summed over workers.
    """

    images: int = 0
    computed: int = 0
    cached: int = 0
    rejected: int = 0
    seconds: float = 0.0
    compute_seconds: float = 0.0

    def add(self, other: ExtractionStats) -> None:
        """Accumulate another call's numbers."""
        self.images += other.images
        self.computed += other.computed
        self.cached += other.cached
        self.rejected += other.rejected
        self.seconds += other.seconds
        self.compute_seconds += other.compute_seconds

    @property
    def images_per_s(self) -> float:
        """Computed images per second of summed compute time (one worker's throughput)."""
        return self.computed / self.compute_seconds if self.compute_seconds > 0 else float("nan")

    def describe(self) -> dict:
        """JSON-ready description."""
        counts = {
            name: getattr(self, name) for name in ("images", "computed", "cached", "rejected")
        }
        rate = None if np.isnan(self.images_per_s) else round(self.images_per_s, 3)
        return {
            **counts,
            "seconds": round(self.seconds, 3),
            "compute_seconds": round(self.compute_seconds, 3),
            "images_per_s_per_worker": rate,
        }


def _read(path: str) -> tuple[bytes, str]:
    """A file's bytes and their SHA-256."""
    try:
        payload = data.read_image_file(path)  # kind, header and size checked before reading
    except data.ImageLoadError as exc:
        raise data.ImageLoadError(f"{path}: {exc}") from None
    return payload, hashlib.sha256(payload).hexdigest()


def _compute(
    payload: bytes, path: str, digest: str, settings: FeatureSettings, cache_root: str | None
) -> tuple[np.ndarray, float]:
    """Decode, extract and cache one file's vector; returns (vector, seconds)."""
    t0 = time.perf_counter()
    try:
        image = data.decode_image(payload, name=Path(path).name)
    except data.ImageLoadError as exc:
        raise data.ImageLoadError(f"{path}: {exc}") from None
    vector = extract_image(image, settings)
    seconds = time.perf_counter() - t0
    FeatureCache(cache_root).put(digest, settings, vector)
    return vector, seconds


def _worker_task(
    args: tuple[bytes, str, str, FeatureSettings, str | None],
) -> tuple[np.ndarray, float]:
    return _compute(*args)


class FeatureExtractor:
    """Extracts the features of image files, keeping one pool of worker processes.

    Use it as a context manager so that the pool is shut down::

        with FeatureExtractor(settings, workers=2, cache=FeatureCache(root)) as fx:
            clean, _ = fx.extract(clean_paths)
            adv, _ = fx.extract(adv_paths)

    Args:
        settings: Which features.
        workers: Worker processes (spawned, so nothing is inherited from the caller; each imports
            the package once); 0 or 1 computes in this process, as do calls with fewer cache
            misses than make a pool worth starting (``FeatureSet.min_parallel``: 1000 for SPAM,
            2 for SRM). Files are read and hashed, and the cache is consulted, in this process.
        cache: Where vectors are looked up and stored; ``None`` computes everything.

    Attributes:
        stats: Totals over every :meth:`extract` call.
    """

    def __init__(
        self, settings: FeatureSettings, workers: int = 0, cache: FeatureCache | None = None
    ) -> None:
        if not isinstance(workers, int) or workers < 0:
            raise ValueError(f"workers must be an integer >= 0, got {workers}")
        self.settings, self.workers = settings, workers
        self.cache_root = None if cache is None or cache.root is None else str(cache.root)
        self.stats = ExtractionStats()
        self._pool: ProcessPoolExecutor | None = None

    def __enter__(self) -> FeatureExtractor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Shut the worker pool down."""
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
            self._pool = None

    def extract(self, paths: Sequence[str | os.PathLike]) -> tuple[np.ndarray, ExtractionStats]:
        """Feature vectors of image files.

        Args:
            paths: The image files (any format :func:`sai_attack.data.decode_image` reads).

        Returns:
            ``(features, stats)``: features is (len(paths), dim) in ``settings.dtype``, in the
            order of ``paths``; stats describe this call.

        Raises:
            sai_attack.data.ImageLoadError: When a file cannot be read or decoded.
            ValueError: When an image is smaller than 8 x 8.
        """
        out = np.empty((len(paths), self.settings.dim), dtype=self.settings.dtype)
        stats = ExtractionStats(images=len(paths))
        t0 = time.perf_counter()
        names = [str(p) for p in paths]
        for start in range(0, len(names), _BLOCK):
            # Blocks bound the memory of file contents held for the workers.
            self._extract_block(names[start : start + _BLOCK], out[start : start + _BLOCK], stats)
        stats.seconds = time.perf_counter() - t0
        self.stats.add(stats)
        logger.debug(
            "features %s: %d images, %d computed, %d cached, %.1f s",
            self.settings.key(),
            stats.images,
            stats.computed,
            stats.cached,
            stats.seconds,
        )
        return out, stats

    def _extract_block(self, paths: list[str], out: np.ndarray, stats: ExtractionStats) -> None:
        cache = FeatureCache(self.cache_root)
        misses: list[tuple[int, tuple[bytes, str, str, FeatureSettings, str | None]]] = []
        for i, p in enumerate(paths):
            # Hashing and cache look-ups are cheap and stay here; only misses go to workers.
            payload, digest = _read(p)
            vector, rejected = cache.lookup(digest, self.settings)
            stats.rejected += rejected
            if vector is not None:
                out[i] = vector
                stats.cached += 1
            else:
                misses.append((i, (payload, p, digest, self.settings, self.cache_root)))
        if self.workers > 1 and len(misses) >= _MIN_PARALLEL[self.settings.features]:
            if self._pool is None:
                ctx = multiprocessing.get_context("spawn")
                self._pool = ProcessPoolExecutor(
                    max_workers=self.workers, mp_context=ctx, initializer=die_with_parent
                )
            chunk = max(1, min(16, len(misses) // (4 * self.workers)))
            computed = self._pool.map(_worker_task, [t for _, t in misses], chunksize=chunk)
        else:
            computed = (_compute(*t) for _, t in misses)
        for (i, _), (vector, seconds) in zip(misses, computed, strict=True):
            out[i] = vector
            stats.computed += 1
            stats.compute_seconds += seconds


def extract_files(
    paths: Sequence[str | os.PathLike],
    settings: FeatureSettings,
    *,
    workers: int = 0,
    cache: FeatureCache | None = None,
) -> tuple[np.ndarray, ExtractionStats]:
    """Feature vectors of image files (one :class:`FeatureExtractor` call).

    Args:
        paths: The image files.
        settings: Which features.
        workers: Worker processes; 0 or 1 computes in this process.
        cache: Where vectors are looked up and stored; ``None`` computes everything.

    Returns:
        ``(features, stats)``, features (len(paths), settings.dim) in the order of ``paths``.
    """
    with FeatureExtractor(settings, workers, cache) as fx:
        return fx.extract(paths)
