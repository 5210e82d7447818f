"""What every command shares at run time: devices, versions, per-image seeds, exit codes.

This module sits at the bottom of the package (it imports no other part of it), so that any
stage can resolve a device or derive a seed without importing the stages above it.
"""

from __future__ import annotations

import hashlib
import logging
import os
import platform
import sys
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, version

import numpy as np
import torch

logger = logging.getLogger(__name__)

try:
    __version__ = version("sai-attack")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0"

EXIT_OK = 0
"""Every input was processed."""
EXIT_FAILURE = 1
"""The run could not proceed (output folder locked or unwritable, ...)."""
EXIT_USAGE = 2
"""A bad option, parameter or input file: nothing was done."""
EXIT_SKIPPED = 3
"""The run finished, but some inputs were skipped (their reasons are in ``results.csv``)."""
EXIT_INTERRUPTED = 130
"""Interrupted (Ctrl-C); re-running the same command resumes."""
EXIT_TERMINATED = 143
"""Terminated (SIGTERM), handled like Ctrl-C; re-running the same command resumes."""

EXIT_CODES: dict[int, str] = {
    EXIT_OK: "all inputs processed",
    EXIT_FAILURE: "the run could not proceed",
    EXIT_USAGE: "usage error, nothing done",
    EXIT_SKIPPED: "some inputs skipped",
    EXIT_INTERRUPTED: "interrupted",
    EXIT_TERMINATED: "terminated (SIGTERM)",
}
"""Exit codes of the command line and their meaning (the one list of them)."""

DEVICE_HELP = "auto, cpu, cuda or cuda:N"


class RunError(RuntimeError):
    """A run cannot start or continue (locked, incompatible output folder, disk full, ...)."""


def resolve_device(device: str | torch.device) -> torch.device:
    """Turn ``auto``/``cpu``/``cuda``/``cuda:N`` into a device, checking that it exists.

    Raises:
        ValueError: ``device`` is not a device name, or names CUDA where there is none.
    """
    if isinstance(device, torch.device):
        device = str(device)
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"device {device!r} is not a device (use {DEVICE_HELP})") from None
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"device {device!r} is not supported (use {DEVICE_HELP})")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available")
    return dev


def image_seed(seed: int, name: str) -> int:
    """The per-image random seed: a hash of the run seed and the image name.

    It does not depend on the batch, the rank or the order, so outputs do not depend on how the
    work is split.
    """
    digest = hashlib.sha256(f"{seed}\x00{name}".encode("utf-8", "surrogateescape")).digest()
    return int.from_bytes(digest[:8], "big") & (2**63 - 1)


def file_sha256(path: str | os.PathLike) -> str:
    """The SHA-256 (hex) of a file's bytes, read in chunks (weights files are large)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def library_versions() -> dict[str, str]:
    """Versions of the libraries that shape the numbers."""
    import cv2
    import PIL
    import skimage

    return {
        "sai_attack": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "scikit-image": skimage.__version__,
        "opencv": cv2.__version__,
        "pillow": PIL.__version__,
    }


_PR_SET_PDEATHSIG = 1


def die_with_parent(_worker_id: int = 0) -> None:
    """Make this (worker) process receive SIGKILL when its parent dies (Linux; else nothing).

    Used as the ``worker_init_fn`` of every DataLoader and the initializer of worker pools, so
    that killing the main process (SIGKILL included) never leaves workers behind.
    """
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes
        import signal

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL))
    except (OSError, AttributeError):  # not glibc
        return
    if os.getppid() == 1:  # the parent died before prctl took effect
        os._exit(1)


def _load_malloc_trim() -> Callable[[int], int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes

        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc (e.g. musl)
        return None


_MALLOC_TRIM = _load_malloc_trim()


def trim_heap() -> None:
    """Give freed heap pages back to the OS between batches (glibc only).

    The attack's activation tensors come and go every iteration and glibc keeps freed heap pages
    resident (Lite0, batch 32, 500 images with FGM: peak RSS 2.79 GiB without this, 2.58 GiB
    with it). The peak still varies by a few hundred MB from run to run.
    """
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)


_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3  # glibc's mallopt parameters


def retain_heap() -> None:
    """Keep freed activation memory in this process's heap within a batch (glibc only).

    By default glibc maps every allocation above 128 KiB-32 MiB afresh and unmaps it when freed,
    so each of an attack's forward+backward passes page-faults its activations in again (Lite0,
    batch 16: about 150,000 faults, 8-12% of the pass's CPU time in the kernel). With heap
    allocations up to glibc's 32 MiB limit and no automatic trimming, the passes after a
    batch's first reuse the same pages (about 2,500 faults); :func:`trim_heap` still returns
    them between batches, and peak RSS stays the same (SAI-FGM, batch 32: 2.79 GiB either way).
    Process-wide, idempotent.
    """
    if _MALLOC_TRIM is None:
        return
    import ctypes

    mallopt = ctypes.CDLL("libc.so.6").mallopt
    mallopt(_M_MMAP_THRESHOLD, 32 * 2**20)
    mallopt(_M_TRIM_THRESHOLD, 2**31 - 1)
    mallopt(_M_TOP_PAD, 64 * 2**20)
