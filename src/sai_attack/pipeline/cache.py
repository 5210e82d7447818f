"""The template cache: superpixel templates, clean predictions and attention maps on disk.

What a run computes per image before attacking it depends only on the image's pixels and on
some of the settings, never on the attack's budget: the superpixel template (on the superpixel
settings), the clean logits (on the model) and the attention map (on the model, the attention
method and the attacked class). With ``cache_dir`` they are kept in ``CACHE/<kind>/<aa>/<key>.npz``
and reused by every run that needs them: the runs of a delta sweep, the runs of ``reproduce``,
a repeated or resumed run.

The key of an entry is the SHA-256 of the prepared pixels (after resizing, so the input file,
the image size and the resizing code are all in it) together with every setting that changes
the entry: for templates the superpixel parameters, a hash of the source of
:mod:`sai_attack.superpixels` and the versions of OpenCV, scikit-image and NumPy; for
predictions and attention maps a hash of the model's architecture, weights and buffers, its
name and input size, the device type and memory layout, the torch version and a hash of the
source of the wrapper and attention code. A change to any of them is a new key, never a stale
entry.

Entries are trusted for nothing. Each is an ``.npz`` of two plain arrays (``value`` and
``meta``, no pickles) read within a size limit; its header is parsed before any data is read,
``meta`` must name the very key looked up and hold the SHA-256 of ``value``, and ``value`` must
have the shape, type and range its kind requires (a template its image's shape and labels
``0..K-1`` without gaps; a map values in [0, 1]; logits finite). An entry
that fails anything is logged, counted as rejected, recomputed and rewritten. Entries are
written atomically (a temporary file and a rename), so concurrent runs sharing a cache folder
read either a whole entry or none, and two writers of one key write the same content.
"""

from __future__ import annotations

import hashlib
import importlib
import io
import json
import logging
import os
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sai_attack import data
from sai_attack import superpixels as sp

logger = logging.getLogger(__name__)

CACHE_FORMAT = 1
"""The entry format; part of every key, so a new format never reads old entries."""

MAX_ENTRY_BYTES = 256 << 20
"""The largest entry read (a (4096, 4096) float32 map is 64 MiB); larger files are rejected."""

TEMPLATES, PREDICTIONS, ATTENTION = "templates", "predictions", "attention"
"""The kinds of entries (and their subfolders of the cache)."""

HIT, MISS, REJECTED = "hit", "miss", "rejected"
"""What a lookup found: a valid entry, none, or one that failed validation (recomputed)."""

_MEMBERS = ("meta.npy", "value.npy")


class CacheEntryError(ValueError):
    """A cache entry is unusable (the message says why)."""


def digest_bytes(*parts: bytes | str) -> str:
    """The SHA-256 (hex) of ``parts``, each length-prefixed so that no two splits collide."""
    h = hashlib.sha256()
    for part in parts:
        raw = part.encode("utf-8", "surrogateescape") if isinstance(part, str) else part
        h.update(len(raw).to_bytes(8, "big") + raw)
    return h.hexdigest()


def image_digest(image: np.ndarray) -> str:
    """The content hash of a prepared (H, W, 3) uint8 image: shape, type and pixels."""
    arr = np.ascontiguousarray(image)
    return digest_bytes(f"{arr.dtype.str}{arr.shape}", arr.tobytes())


def _array_digest(value: np.ndarray) -> str:
    return digest_bytes(f"{value.dtype.str}{value.shape}", np.ascontiguousarray(value).tobytes())


def source_digest(*module_names: str) -> str:
    """A hash of the source files of modules: the code version of what they compute.

    Falls back to the package version for a module whose source cannot be read (a frozen or
    compiled install), so the key still changes with every release.
    """
    parts = []
    for name in module_names:
        module = importlib.import_module(name)
        try:
            parts.append(Path(module.__file__ or "").read_bytes())
        except OSError:
            from sai_attack import __version__

            parts.append(f"{name} {__version__}".encode())
    return digest_bytes(*parts)


def template_settings(config: sp.SuperpixelConfig) -> dict[str, Any]:
    """Everything besides the pixels that a template depends on."""
    import cv2
    import skimage

    return {
        "algorithm": config.algorithm,
        "size": config.size,
        "n_segments": config.n_segments,
        "compactness": config.compactness,
        "merge_beta": config.merge_beta,
        # The module of the algorithm too, should it live outside superpixels.py.
        "code": source_digest(
            "sai_attack.superpixels", sp.SUPERPIXEL_ALGORITHMS[config.algorithm].__module__
        ),
        "opencv": cv2.__version__,
        "scikit-image": skimage.__version__,
        "numpy": np.__version__,
    }


def _tensor_bytes(t: torch.Tensor) -> bytes:
    flat = t.detach().cpu().contiguous().reshape(-1)
    return flat.view(torch.uint8).numpy().tobytes() if flat.numel() else b""


def model_identity(model: torch.nn.Module, device: torch.device) -> dict[str, Any]:
    """Everything besides the pixels that a model's clean logits and attention maps depend on.

    The architecture (the module tree as ``repr`` shows it, with every layer's settings), the
    weights and buffers (names, types, shapes and bytes), the display name and input size, the
    device type and the memory layout of the weights, and the code that runs them.
    """
    state = model.state_dict()
    weights = digest_bytes(
        *(f"{k} {v.dtype} {tuple(v.shape)}" for k, v in state.items()),
        *(_tensor_bytes(v) for v in state.values()),
    )
    four_d = next((p for p in model.parameters() if p.ndim == 4), None)
    channels_last = bool(
        four_d is not None
        and four_d.is_contiguous(memory_format=torch.channels_last)
        and not four_d.is_contiguous()
    )
    return {
        "class": f"{type(model).__module__}.{type(model).__qualname__}",
        "architecture": digest_bytes(repr(model)),
        "weights": weights,
        "name": str(getattr(model, "name", "")),
        "input_size": getattr(model, "input_size", None),
        "device": device.type,
        "channels_last": channels_last,
        "memory_format": str(getattr(model, "memory_format", "")),
        "torch": torch.__version__,
        "code": source_digest("sai_attack.models.wrapper", "sai_attack.attention"),
    }


def _read_npy(raw: bytes, what: str) -> np.ndarray:
    """A plain (non-object) array from ``.npy`` bytes; the header is checked before the data."""
    from numpy.lib import format as npy

    buf = io.BytesIO(raw)
    try:
        version = npy.read_magic(buf)
        header = npy.read_array_header_1_0 if version == (1, 0) else npy.read_array_header_2_0
        shape, fortran, dtype = header(buf)
    except (ValueError, EOFError, SyntaxError, TypeError) as exc:
        raise CacheEntryError(f"{what}: not a valid .npy member ({exc})") from None
    if dtype.hasobject or fortran or dtype.kind not in "biuf":
        raise CacheEntryError(f"{what}: unsupported array type {dtype}")
    count = int(np.prod(shape, dtype=np.int64)) if shape else 1
    if len(raw) - buf.tell() != count * dtype.itemsize:
        raise CacheEntryError(f"{what}: {len(raw) - buf.tell()} data bytes for shape {shape}")
    return np.frombuffer(raw, dtype=dtype, count=count, offset=buf.tell()).reshape(shape).copy()


def encode_entry(key: str, value: np.ndarray) -> bytes:
    """The bytes of an entry: ``value`` and ``meta`` (JSON: format, key, value hash)."""
    value = np.ascontiguousarray(value)
    meta = {"format": CACHE_FORMAT, "key": key, "sha256": _array_digest(value)}
    buf = io.BytesIO()
    np.savez_compressed(
        buf, value=value, meta=np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    )
    return buf.getvalue()


def decode_entry(payload: bytes, key: str) -> np.ndarray:
    """The value of an entry, after checking its container, its key and its hash.

    Raises:
        CacheEntryError: Saying what is wrong.
    """
    try:
        with zipfile.ZipFile(io.BytesIO(payload)) as zf:
            if sorted(zf.namelist()) != list(_MEMBERS):
                raise CacheEntryError(f"members {sorted(zf.namelist())}, expected {_MEMBERS}")
            raw = {}
            for name in _MEMBERS:
                if zf.getinfo(name).file_size > MAX_ENTRY_BYTES:
                    raise CacheEntryError(f"{name} is larger than {MAX_ENTRY_BYTES} bytes")
                with zf.open(name) as f:
                    raw[name] = f.read(MAX_ENTRY_BYTES + 1)
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, NotImplementedError) as exc:
        raise CacheEntryError(f"not a readable .npz file ({exc})") from None
    meta_bytes = _read_npy(raw["meta.npy"], "meta")
    try:
        meta = json.loads(meta_bytes.astype(np.uint8).tobytes().decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise CacheEntryError(f"meta is not JSON ({exc})") from None
    if not isinstance(meta, dict) or meta.get("format") != CACHE_FORMAT:
        raise CacheEntryError("meta has another format")
    if meta.get("key") != key:
        raise CacheEntryError("the entry belongs to another key")
    value = _read_npy(raw["value.npy"], "value")
    if meta.get("sha256") != _array_digest(value):
        raise CacheEntryError("the value does not match its recorded SHA-256")
    return value


class EntryCache:
    """Entries on disk under ``root``, keyed by kind, image digest and settings.

    Args:
        root: The cache folder (created when first written).
    """

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)
        self._write_failed = False

    @staticmethod
    def key(kind: str, image: str, settings: dict[str, Any]) -> str:
        """The key of an entry: a hash of its kind, image digest and settings."""
        text = json.dumps(
            {"format": CACHE_FORMAT, "kind": kind, "image": image, "settings": settings},
            sort_keys=True,
            default=str,
        )
        return digest_bytes(text)

    def path(self, kind: str, key: str) -> Path:
        """Where an entry lies."""
        return self.root / kind / key[:2] / f"{key}.npz"

    def get(
        self, kind: str, key: str, check: Callable[[np.ndarray], np.ndarray]
    ) -> tuple[np.ndarray | None, str]:
        """Look an entry up; ``check`` validates the value (raises ``CacheEntryError``).

        Returns:
            ``(value, HIT)``, ``(None, MISS)`` or ``(None, REJECTED)`` (logged with the reason).
        """
        path = self.path(kind, key)
        try:
            with data.open_regular_file(path) as (f, size):
                payload = data.read_limited(f, size, MAX_ENTRY_BYTES)
        except data.FileReadError as exc:
            if not path.exists() and not path.is_symlink():
                return None, MISS
            logger.warning("cache: recomputing %s: %s", path, exc)
            return None, REJECTED
        try:
            return check(decode_entry(payload, key)), HIT
        except CacheEntryError as exc:
            logger.warning("cache: recomputing %s: %s", path, exc)
            return None, REJECTED

    def put(self, kind: str, key: str, value: np.ndarray) -> None:
        """Store an entry atomically; a failure to write is logged once, never raised."""
        try:
            data.atomic_write_bytes(self.path(kind, key), encode_entry(key, value))
        except OSError as exc:
            if not self._write_failed:
                logger.warning("cache: cannot write to %s (%s); going on without storing",
                               self.root, exc)  # fmt: skip
            self._write_failed = True


# -- validation of values -----------------------------------------------------------------------


def check_template(value: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """A cached template as int64, if it is one for an image of ``shape``: labels ``0..K-1``.

    Every label from 0 to the largest must occur (a gap would change K, and with it the random
    start of the attack); one ``bincount`` checks it, a tenth of the cost of relabelling.
    """
    if value.shape != shape or value.dtype.kind not in "iu":
        raise CacheEntryError(f"template of {value.dtype} {value.shape}, expected int {shape}")
    labels = value.astype(np.int64)
    if labels.size and (labels.min() != 0 or np.bincount(labels.ravel()).min() == 0):
        raise CacheEntryError("template labels are not 0..K-1 without gaps")
    return labels


def check_map(value: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """A cached attention map, if it is a finite (H, W) float map in [0, 1]."""
    if value.shape != shape or value.dtype.kind != "f":
        raise CacheEntryError(f"map of {value.dtype} {value.shape}, expected float {shape}")
    if not (np.isfinite(value).all() and value.min() >= 0 and value.max() <= 1):
        raise CacheEntryError("map values are not all finite and in [0, 1]")
    return value


def check_logits(value: np.ndarray) -> np.ndarray:
    """Cached logits, if they are a finite 1-D float vector."""
    if value.ndim != 1 or value.size == 0 or value.dtype.kind != "f":
        raise CacheEntryError(f"logits of {value.dtype} {value.shape}, expected float (K,)")
    if not np.isfinite(value).all():
        raise CacheEntryError("logits are not all finite")
    return value
