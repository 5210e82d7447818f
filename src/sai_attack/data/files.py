"""Reading and writing files safely.

* Reading: :func:`open_regular_file` and :func:`read_limited` open only regular files (never a
  FIFO or device that would block or never end) and never read more than a stated limit, so a
  huge or endless input costs no memory; failures are :class:`FileReadError` with a one-line
  reason.
* Writing: :func:`atomic_write_bytes` and friends go through a temporary file and a rename, so an
  interrupted run never leaves a truncated file behind.
"""

from __future__ import annotations

import io
import logging
import os
import stat
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image

logger = logging.getLogger(__name__)


class FileReadError(ValueError):
    """A file could not be read; the message is a one-line reason (no path)."""


# --------------------------------------------------------------------------------------------
# Reading files within limits
# --------------------------------------------------------------------------------------------

# O_NONBLOCK: opening a FIFO that replaced the file after the stat below must not block;
# O_NOCTTY: a terminal device must never become our controlling terminal.
_READ_FLAGS = (
    os.O_RDONLY
    | getattr(os, "O_NONBLOCK", 0)
    | getattr(os, "O_NOCTTY", 0)
    | getattr(os, "O_CLOEXEC", 0)
    | getattr(os, "O_BINARY", 0)
)


def size_text(n: int) -> str:
    """A byte count for messages: ``512 bytes``, ``1.5 KiB``, ``256 MiB``, ``3 GiB``."""
    if n < 1024:
        return f"{n} bytes"
    value, unit = n / 1024, "KiB"
    for bigger in ("MiB", "GiB", "TiB"):
        if value < 1024:
            break
        value, unit = value / 1024, bigger
    return f"{value:.0f} {unit}" if value == int(value) else f"{value:.1f} {unit}"


def _check_kind(mode: int) -> None:
    if stat.S_ISDIR(mode):
        raise FileReadError("is a directory")
    if not stat.S_ISREG(mode):
        raise FileReadError("not a regular file")


def _reason(exc: OSError) -> str:
    if isinstance(exc, IsADirectoryError):
        return "is a directory"
    if isinstance(exc, PermissionError):
        return "cannot read file: permission denied"
    return f"cannot read file: {exc.strerror or exc}"


@contextmanager
def open_regular_file(path: str | os.PathLike) -> Iterator[tuple[BinaryIO, int]]:
    """Open a regular file for reading, refusing anything else before reading a byte.

    Devices and FIFOs are refused by a ``stat`` before they are opened (opening some devices
    has effects of its own); the opened descriptor is checked again, so a file swapped in
    between cannot slip through.

    Args:
        path: The file (symlinks are followed).

    Yields:
        The open binary file and its size in bytes at opening time.

    Raises:
        FileReadError: ``is a directory``, ``not a regular file`` or ``cannot read file: ...``.
    """
    try:
        _check_kind(os.stat(path).st_mode)
        fd = os.open(path, _READ_FLAGS)
    except OSError as exc:
        raise FileReadError(_reason(exc)) from None
    try:
        st = os.fstat(fd)
        _check_kind(st.st_mode)
        f = os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise
    with f:
        yield f, st.st_size


def read_limited(f: BinaryIO, size: int, limit: int, already: bytes = b"") -> bytes:
    """Read the rest of ``f`` after ``already``, refusing files over ``limit`` bytes in all.

    Args:
        f: A file from :func:`open_regular_file`.
        size: Its size as :func:`open_regular_file` gave it; over ``limit``, nothing is read.
        limit: The most bytes accepted. At most ``size + 1`` bytes are ever read (the one more
            byte detects a file that grows while it is read), so memory stays bounded.
        already: What the caller has read from ``f`` so far (a header, say).

    Returns:
        ``already`` followed by the rest of the file.

    Raises:
        FileReadError: ``file too large: ...`` or ``cannot read file: ...`` (also when the
            file grew while it was read).
    """
    if size > limit:
        raise FileReadError(f"file too large: {size_text(size)} (limit {size_text(limit)})")
    try:
        # Asking for the expected size (+1 to see growth) rather than the limit: a large read
        # request would allocate a buffer of that size even for a small file.
        payload = already + f.read(max(1, size + 1 - len(already)))
    except OSError as exc:
        raise FileReadError(_reason(exc)) from None
    if len(payload) > size:
        raise FileReadError("cannot read file: it grew while it was read")
    return payload


# --------------------------------------------------------------------------------------------
# Writing files atomically
# --------------------------------------------------------------------------------------------


def _file_mode() -> int:
    umask = os.umask(0o022)
    os.umask(umask)
    return 0o666 & ~umask


# mkstemp creates files readable by their owner only; outputs get the usual permissions.
_FILE_MODE = _file_mode()


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and a rename.

    After a crash at any moment, ``path`` either holds its previous content or all of ``data``.
    The file gets the permissions of an ordinary new file (0666 less the umask).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name[:40]}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            if hasattr(os, "fchmod"):
                os.fchmod(f.fileno(), _FILE_MODE)
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with _suppress_oserror():
            os.unlink(tmp)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write UTF-8 text atomically (see :func:`atomic_write_bytes`)."""
    atomic_write_bytes(path, text.encode("utf-8"))


class _suppress_oserror:  # noqa: N801 - used like contextlib.suppress
    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type, exc, tb) -> bool:
        return exc_type is not None and issubclass(exc_type, OSError)


def encode_png(image: np.ndarray) -> bytes:
    """Encode an (H, W, 3) uint8 array as PNG bytes (deterministic, lossless)."""
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) uint8 array, got {image.dtype} {image.shape}")
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG", compress_level=6)
    return buf.getvalue()


def save_png(path: str | os.PathLike, image: np.ndarray) -> None:
    """Save an (H, W, 3) uint8 array as a PNG file, atomically."""
    atomic_write_bytes(path, encode_png(image))
