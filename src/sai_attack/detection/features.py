"""Steganalysis features of image files, extracted in parallel and cached per file.

The vectors themselves (SPAM / SRM from ``sealwatch``, per channel or of the luminance) and
:class:`FeatureSettings` are defined in :mod:`~sai_attack.detection.feature_sets`; they are
importable from here too.

Cache: the vector of each image file is stored at
``CACHE/features/<settings key>/<aa>/<sha256>.npy``, where ``sha256`` is the hash of the file's
bytes and the settings key names the feature set, the colour handling, the implementation version
and the sealwatch version. ``CACHE`` is, in this order of precedence, the ``cache_dir`` argument
(CLI ``--cache-dir``), the ``SAI_ATTACK_CACHE`` environment variable, ``$XDG_CACHE_HOME/sai-attack``
or ``~/.cache/sai-attack``. Because the key is the file content, the identical ``clean/`` images of
many runs are computed once. Files are written atomically and read with ``allow_pickle=False``; a
damaged entry is recomputed.
"""

from __future__ import annotations

import hashlib
import io
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
from sai_attack.detection.feature_sets import (
    COLOR_MODES,
    FEATURE_DIMS,
    FEATURE_DTYPES,
    FEATURE_SETS,
    MIN_SIZE,
    FeatureSettings,
    extract_image,
    luminance,
    spam_features,
    srm_features,
)

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
    "FeatureSettings",
    "default_cache_dir",
    "default_workers",
    "extract_files",
    "extract_image",
    "luminance",
    "spam_features",
    "srm_features",
]

logger = logging.getLogger(__name__)

CACHE_ENV = "SAI_ATTACK_CACHE"
# Fewer cache misses than this are computed in the calling process: starting spawned workers
# (each imports the package, torch included: seconds) costs more than computing several hundred
# SPAM vectors (about 8 ms per 224 x 224 RGB image), but far less than one SRM vector (~25 s).
_MIN_PARALLEL = {"spam": 1000, "srm": 2}
_BLOCK = 512


# --------------------------------------------------------------------------------------------
# The cache
# --------------------------------------------------------------------------------------------


def default_workers() -> int:
    """Worker processes for features and detector training by default: the CPUs, at most 4."""
    return min(4, os.cpu_count() or 1)


def default_cache_dir() -> Path:
    """The cache folder: ``$SAI_ATTACK_CACHE``, ``$XDG_CACHE_HOME/sai-attack`` or ``~/.cache/...``.

    Returns:
        The first of ``$SAI_ATTACK_CACHE``, ``$XDG_CACHE_HOME/sai-attack`` and
        ``~/.cache/sai-attack``.
    """
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "sai-attack"


class FeatureCache:
    """Feature vectors on disk, keyed by file content hash and feature settings.

    Args:
        root: The cache folder (vectors go to ``root/features/...``); ``None`` disables caching.
    """

    def __init__(self, root: str | os.PathLike | None) -> None:
        self.root = None if root is None else Path(root)

    @property
    def enabled(self) -> bool:
        """Whether vectors are stored."""
        return self.root is not None

    def path(self, digest: str, settings: FeatureSettings) -> Path:
        """Where the vector of a file with content hash ``digest`` is stored."""
        if self.root is None:
            raise ValueError("the feature cache is disabled")
        return self.root / "features" / settings.key() / digest[:2] / f"{digest}.npy"

    def get(self, digest: str, settings: FeatureSettings) -> np.ndarray | None:
        """The cached vector, or ``None`` when absent or unusable."""
        if self.root is None:
            return None
        path = self.path(digest, settings)
        try:
            payload = path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            logger.warning("cannot read cached features %s: %s", path, exc)
            return None
        try:
            vector = np.load(io.BytesIO(payload), allow_pickle=False)
        except (ValueError, OSError, EOFError) as exc:
            logger.warning("ignoring damaged cached features %s: %s", path, exc)
            return None
        if vector.shape != (settings.dim,) or vector.dtype != settings.dtype:
            logger.warning("ignoring cached features %s with shape %s", path, vector.shape)
            return None
        return vector

    def put(self, digest: str, settings: FeatureSettings, vector: np.ndarray) -> None:
        """Store a vector atomically (a failure to write is logged, not raised)."""
        if self.root is None:
            return
        buf = io.BytesIO()
        np.save(buf, np.ascontiguousarray(vector), allow_pickle=False)
        try:
            data.atomic_write_bytes(self.path(digest, settings), buf.getvalue())
        except OSError as exc:
            logger.warning("cannot write feature cache %s: %s", self.root, exc)


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
        seconds: Wall-clock time.
        compute_seconds: Time spent computing features, summed over workers.
    """

    images: int = 0
    computed: int = 0
    cached: int = 0
    seconds: float = 0.0
    compute_seconds: float = 0.0

    def add(self, other: ExtractionStats) -> None:
        """Accumulate another call's numbers."""
        self.images += other.images
        self.computed += other.computed
        self.cached += other.cached
        self.seconds += other.seconds
        self.compute_seconds += other.compute_seconds

    @property
    def images_per_s(self) -> float:
        """Computed images per second of summed compute time (one worker's throughput)."""
        return self.computed / self.compute_seconds if self.compute_seconds > 0 else float("nan")

    def describe(self) -> dict:
        """JSON-ready description."""
        return {
            "images": self.images,
            "computed": self.computed,
            "cached": self.cached,
            "seconds": round(self.seconds, 3),
            "compute_seconds": round(self.compute_seconds, 3),
            "images_per_s_per_worker": None
            if np.isnan(self.images_per_s)
            else round(self.images_per_s, 3),
        }


def _read(path: str) -> tuple[bytes, str]:
    """A file's bytes and their SHA-256."""
    try:
        payload = Path(path).read_bytes()
    except OSError as exc:
        raise data.ImageLoadError(f"{path}: cannot read file: {exc.strerror or exc}") from None
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
            misses than make a pool worth starting (1000 for SPAM, 2 for SRM). Files are read
            and hashed, and the cache is consulted, in this process.
        cache: Where vectors are looked up and stored; ``None`` computes everything.

    Attributes:
        stats: Totals over every :meth:`extract` call.
    """

    def __init__(
        self, settings: FeatureSettings, workers: int = 0, cache: FeatureCache | None = None
    ) -> None:
        if not isinstance(workers, int) or workers < 0:
            raise ValueError(f"--workers must be an integer >= 0, got {workers}")
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
            vector = cache.get(digest, self.settings)
            if vector is not None:
                out[i] = vector
                stats.cached += 1
            else:
                misses.append((i, (payload, p, digest, self.settings, self.cache_root)))
        if self.workers > 1 and len(misses) >= _MIN_PARALLEL[self.settings.features]:
            if self._pool is None:
                ctx = multiprocessing.get_context("spawn")
                self._pool = ProcessPoolExecutor(max_workers=self.workers, mp_context=ctx)
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
