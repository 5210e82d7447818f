"""The on-disk cache of feature vectors: one validated ``.npy`` file per image file content.

The vector of each image file is stored at
``CACHE/features/<settings key>/<aa>/<sha256>.npy``, where ``sha256`` is the hash of the file's
bytes and the settings key names the feature set, the colour handling, the implementation version
and the sealwatch version. ``CACHE`` is, in this order of precedence, the ``cache_dir`` argument
(CLI ``--cache-dir``), the ``SAI_ATTACK_CACHE`` environment variable, ``$XDG_CACHE_HOME/sai-attack``
or ``~/.cache/sai-attack``. Because the key is the file content, the identical ``clean/`` images of
many runs are computed once. Files are written atomically and never unpickled.

Every cache entry is validated when read (:meth:`FeatureCache.get`): it must be a plain ``.npy``
file whose header gives exactly the settings' shape ``(dim,)`` and dtype, whose data has exactly
that many bytes, and whose values are all finite. An entry that fails any of these, or cannot be
read at all, is logged (a warning naming the file and the reason), counted in
:attr:`~sai_attack.detection.features.ExtractionStats.rejected`, recomputed and rewritten. The
header is checked before the data is read, so a damaged header claiming a huge shape allocates
nothing. A freshly computed vector that is not finite is never stored.
"""

from __future__ import annotations

import io
import logging
import os
from pathlib import Path

import numpy as np

from sai_attack import data
from sai_attack.detection.feature_sets import FeatureSettings

logger = logging.getLogger(__name__)

CACHE_ENV = "SAI_ATTACK_CACHE"


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


def decode_vector(payload: bytes, settings: FeatureSettings) -> np.ndarray:
    """A feature vector from the bytes of a cached ``.npy`` file, validated.

    The header is parsed and checked (format, shape ``(settings.dim,)``, dtype) before any data
    is read, so a damaged header cannot make it allocate; nothing is unpickled.

    Raises:
        ValueError: Saying what is wrong: not an ``.npy`` file, a bad header, another shape or
            dtype, too few or too many data bytes, or values that are not finite.
    """
    from numpy.lib import format as npy

    buf = io.BytesIO(payload)
    try:
        version = npy.read_magic(buf)
        if version not in ((1, 0), (2, 0), (3, 0)):
            raise ValueError(f"unknown .npy version {version}")
        read_header = npy.read_array_header_1_0 if version == (1, 0) else npy.read_array_header_2_0
        shape, _, dtype = read_header(buf)  # C or Fortran order: the same for 1-D
    except (ValueError, EOFError, SyntaxError, TypeError) as exc:
        raise ValueError(f"not a valid .npy file ({exc})") from None
    if shape != (settings.dim,) or dtype != settings.dtype:
        raise ValueError(
            f"shape {shape} and dtype {dtype}, expected ({settings.dim},) {settings.dtype}"
        )
    start, expected = buf.tell(), settings.dim * settings.dtype.itemsize
    if len(payload) - start != expected:
        raise ValueError(f"{len(payload) - start} data bytes, expected {expected}")
    vector = np.frombuffer(payload, dtype=settings.dtype, count=settings.dim, offset=start).copy()
    if not np.all(np.isfinite(vector)):
        bad = int(np.count_nonzero(~np.isfinite(vector)))
        raise ValueError(f"{bad} of {settings.dim} values are NaN or infinite")
    return vector


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
        """The cached vector, or ``None`` when absent or unusable (see :meth:`lookup`)."""
        return self.lookup(digest, settings)[0]

    def lookup(self, digest: str, settings: FeatureSettings) -> tuple[np.ndarray | None, bool]:
        """The cached vector, and whether an entry was there but rejected.

        Returns:
            ``(vector, rejected)``: ``(vector, False)`` for a valid entry, ``(None, False)`` when
            there is none (or caching is off), ``(None, True)`` for an entry that cannot be read
            or fails validation (logged as a warning naming the file and the reason).
        """
        if self.root is None:
            return None, False
        path = self.path(digest, settings)
        try:
            payload = path.read_bytes()
        except FileNotFoundError:
            return None, False
        except OSError as exc:
            logger.warning("recomputing cached features %s: cannot read it: %s", path, exc)
            return None, True
        try:
            return decode_vector(payload, settings), False
        except ValueError as exc:
            logger.warning("recomputing cached features %s: %s", path, exc)
            return None, True

    def put(self, digest: str, settings: FeatureSettings, vector: np.ndarray) -> None:
        """Store a vector atomically (a failure to write is logged, not raised).

        A vector that is not finite is not stored (logged): it would only be rejected when read.
        """
        if self.root is None:
            return
        if not np.all(np.isfinite(vector)):
            logger.warning("not caching the features of sha256 %s: NaN or infinite values", digest)
            return
        buf = io.BytesIO()
        np.save(buf, np.ascontiguousarray(vector), allow_pickle=False)
        try:
            data.atomic_write_bytes(self.path(digest, settings), buf.getvalue())
        except OSError as exc:
            logger.warning("cannot write feature cache %s: %s", self.root, exc)
