"""Loading and converting images: every image enters through load_image or decode_image.

Only the formats of :data:`IMAGE_FORMATS` are decoded (PNG, JPEG, BMP, TIFF, WebP,
PPM/PGM/PBM, GIF), and the format is decided by the file's first bytes, never by its name: no
Pillow plugin that runs an external program (Ghostscript for EPS/PDF) or that is rarely used is
ever reached. A file is judged by its header before it is read, and file size and pixel count are
bounded (:data:`MAX_FILE_BYTES`, :data:`MAX_PIXELS`), so a huge or hostile file costs neither
memory nor time. What is accepted is turned (grayscale, palette, RGBA, CMYK, 16-bit,
EXIF-rotated, animated) into an 8-bit RGB array; anything else raises :class:`ImageLoadError`
with a one-line reason.
"""

from __future__ import annotations

import io
import logging
import os
import re
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

from sai_attack.data.files import FileReadError, open_regular_file, read_limited, size_text

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (
    ".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm",
    ".pnm",
)  # fmt: skip
"""The file names that folder discovery takes for images (decoding goes by content)."""

MAX_FILE_BYTES = 256 * 1024 * 1024
"""The largest image file read (256 MiB): larger files are refused before being read."""

MAX_PIXELS = 100_000_000
"""The most pixels (width x height, first frame) decoded: a 10000 x 10000 image. Checked from the
header before any pixel is decoded; Pillow's own decompression-bomb check (a warning above
89.5 M pixels, an error above 179 M) is superseded below this limit."""

IMAGE_FORMATS = ("PNG", "JPEG", "BMP", "TIFF", "WEBP", "PPM", "GIF")
"""The Pillow formats decoded (PPM covers PPM, PGM and PBM; GIF and TIFF give their first
frame). Every other plugin is unused, in particular EPS and PDF, which run Ghostscript."""

HEADER_BYTES = 32
"""How many leading bytes decide the format (:func:`image_format`)."""

_ALLOWED_TEXT = "PNG, JPEG, BMP, TIFF, WebP, PPM/PGM/PBM, GIF"

# (offset, signature, Pillow format) of the decoded formats.
_SIGNATURES: tuple[tuple[int, bytes, str], ...] = (
    (0, b"\x89PNG\r\n\x1a\n", "PNG"),
    (0, b"\xff\xd8\xff", "JPEG"),
    (0, b"GIF87a", "GIF"),
    (0, b"GIF89a", "GIF"),
    (0, b"BM", "BMP"),
    (0, b"II*\x00", "TIFF"),
    (0, b"MM\x00*", "TIFF"),
    (0, b"II+\x00", "TIFF"),  # BigTIFF
    (0, b"MM\x00+", "TIFF"),
    (8, b"WEBP", "WEBP"),  # after b"RIFF" and a length, checked below
    *((0, b"P%d" % k, "PPM") for k in range(1, 7)),
)

# Formats recognised only to name them in the refusal (a clearer reason than "not an image").
_REFUSED: tuple[tuple[int, bytes, str], ...] = (
    (0, b"%!PS", "EPS"),
    (0, b"\xc5\xd0\xd3\xc6", "EPS"),  # DOS EPS binary header
    (0, b"%PDF", "PDF"),
    (0, b"8BPS", "PSD"),
    (0, b"\x00\x00\x01\x00", "ICO"),
    (0, b"\x00\x00\x00\x0cjP  ", "JPEG 2000"),
    (0, b"\xffO\xffQ", "JPEG 2000"),
    (4, b"ftypavif", "AVIF"),
    (4, b"ftypheic", "HEIF"),
    (4, b"ftypmif1", "HEIF"),
    (0, b"icns", "ICNS"),
    (0, b"\x01\xda", "SGI"),
    (0, b"qoif", "QOI"),
    (0, b"DDS ", "DDS"),
    (0, b"/* XPM */", "XPM"),
    (0, b"#define", "XBM"),
    (0, b"SIMPLE  =", "FITS"),
    (0, b"\xd7\xcd\xc6\x9a", "WMF"),
    (0, b"P7", "PAM"),
    (0, b"Pf", "PFM"),
    (0, b"PF", "PFM"),
)


class ImageLoadError(ValueError):
    """An input file could not be turned into an RGB image; the message is a one-line reason."""


# --------------------------------------------------------------------------------------------
# Deciding the format and reading the file
# --------------------------------------------------------------------------------------------


def _match(head: bytes, table: tuple[tuple[int, bytes, str], ...]) -> str | None:
    for offset, signature, fmt in table:
        if head[offset : offset + len(signature)] == signature:
            if fmt == "WEBP" and head[:4] != b"RIFF":
                continue
            return fmt
    return None


def image_format(head: bytes) -> str:
    """The Pillow format to decode a file with, decided by its first bytes alone.

    Args:
        head: The first bytes of the file (:data:`HEADER_BYTES` suffice).

    Returns:
        One of :data:`IMAGE_FORMATS`.

    Raises:
        ImageLoadError: ``empty file (0 bytes)``; ``unsupported image format 'EPS' (allowed:
            ...)`` for a known format outside the allow-list; ``not a recognised image
            format`` otherwise.
    """
    if not head:
        raise ImageLoadError("empty file (0 bytes)")
    fmt = _match(head, _SIGNATURES)
    if fmt is not None:
        return fmt
    refused = _match(head, _REFUSED)
    if refused is not None:
        raise ImageLoadError(f"unsupported image format {refused!r} (allowed: {_ALLOWED_TEXT})")
    raise ImageLoadError("not a recognised image format")


def read_image_file(path: str | os.PathLike) -> bytes:
    """Read an image file's bytes after checking its kind, header and size.

    Only a regular file is opened; its first :data:`HEADER_BYTES` decide whether it is an image
    of an allowed format at all (:func:`image_format`) before the rest is read, and files over
    :data:`MAX_FILE_BYTES` are refused unread. Use it wherever image bytes are needed (to hash
    them, say) instead of reading the file directly.

    Args:
        path: The file (symlinks are followed).

    Returns:
        The whole file content.

    Raises:
        ImageLoadError: ``is a directory``, ``not a regular file`` (FIFOs, devices),
            ``cannot read file: ...``, ``file too large: ...``, or the reasons of
            :func:`image_format`.
    """
    try:
        with open_regular_file(path) as (f, size):
            try:
                head = f.read(HEADER_BYTES)
            except OSError as exc:
                raise ImageLoadError(f"cannot read file: {exc.strerror or exc}") from None
            image_format(head)
            return read_limited(f, size, MAX_FILE_BYTES, already=head)
    except FileReadError as exc:
        raise ImageLoadError(str(exc)) from None


# --------------------------------------------------------------------------------------------
# Decoding and converting images
# --------------------------------------------------------------------------------------------


def _to_rgb_array(im: Image.Image) -> np.ndarray:
    """Convert any Pillow mode to an (H, W, 3) uint8 array."""
    mode = im.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        a = np.asarray(im, dtype=np.float64)
        peak = 65535.0 if a.max(initial=0) > 255 or mode.startswith("I;16") else 255.0
        gray = np.clip(np.rint(a * (255.0 / peak)), 0, 255).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=2)
    if mode == "F":
        a = np.asarray(im, dtype=np.float64)
        scale = 255.0 if a.max(initial=0) <= 1.0 else 1.0
        gray = np.clip(np.rint(a * scale), 0, 255).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=2)
    has_alpha = mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
        mode == "P" and "transparency" in im.info
    )
    if has_alpha:
        # Transparent pixels have no defined colour; composite on white, the usual convention.
        rgba = im.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return np.asarray(Image.alpha_composite(background, rgba).convert("RGB"), dtype=np.uint8)
    return np.array(im.convert("RGB"), dtype=np.uint8)


def _decode(data: bytes, fmt: str) -> np.ndarray:
    """Open ``data`` with the one plugin of ``fmt``, check its size, decode the first frame."""
    with Image.open(io.BytesIO(data), formats=[fmt]) as im:
        # The JPEG plugin may answer MPO (multi-picture JPEG); nothing outside the list passes.
        if im.format not in IMAGE_FORMATS and not (fmt == "JPEG" and im.format == "MPO"):
            raise ImageLoadError(f"unsupported image format {im.format!r}")
        width, height = im.size
        if width * height > MAX_PIXELS:
            raise ImageLoadError(
                f"image too large: {width} x {height} pixels (limit {MAX_PIXELS:,} pixels)"
            )
        im.seek(0)
        im.load()
        return _to_rgb_array(ImageOps.exif_transpose(im))


def decode_image(data: bytes, name: str = "<bytes>") -> np.ndarray:
    """Decode image bytes to an (H, W, 3) uint8 RGB array.

    The format is decided by the first bytes (:func:`image_format`), and only that format's
    Pillow plugin is tried: a PNG named ``.eps`` is decoded as PNG, an EPS named ``.png`` is
    refused, and no plugin outside :data:`IMAGE_FORMATS` ever runs.

    Args:
        data: The encoded file content.
        name: Used in error messages only.

    Returns:
        The image as an (H, W, 3) uint8 array. Grayscale, palette, RGBA (composited on white),
        CMYK and 16-bit images are converted; EXIF orientation is applied; for animated and
        multi-page files the first frame is used.

    Raises:
        ImageLoadError: When the data is empty, of a format outside the allow-list, not an
            image, truncated, over :data:`MAX_FILE_BYTES`, or over :data:`MAX_PIXELS`.
    """
    fmt = image_format(data[:HEADER_BYTES])
    if len(data) > MAX_FILE_BYTES:
        raise ImageLoadError(
            f"file too large: {size_text(len(data))} (limit {size_text(MAX_FILE_BYTES)})"
        )
    try:
        with warnings.catch_warnings():
            # MAX_PIXELS is the limit; Pillow's hard error (twice its warning level) stays.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            arr = _decode(data, fmt)
    except ImageLoadError:
        raise
    except Image.DecompressionBombError as exc:
        # Pillow's own hard limit fired while opening; its message holds the pixel count.
        found = re.search(r"\((\d+) pixels\)", str(exc))
        size = f"{int(found.group(1)):,} pixels" if found else _one_line(exc)
        raise ImageLoadError(f"image too large: {size} (limit {MAX_PIXELS:,} pixels)") from None
    except Image.UnidentifiedImageError:
        raise ImageLoadError("not a recognised image format") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageLoadError(f"cannot decode image: {_one_line(exc)}") from None
    if arr.ndim != 3 or arr.shape[2] != 3 or arr.shape[0] < 1 or arr.shape[1] < 1:
        raise ImageLoadError(f"unexpected decoded shape {arr.shape} for {name}")
    return arr


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def load_image(path: str | os.PathLike) -> np.ndarray:
    """Read an image file as an (H, W, 3) uint8 RGB array.

    Args:
        path: The file to read.

    Returns:
        The converted image (see :func:`decode_image`).

    Raises:
        ImageLoadError: When the file cannot be read (see :func:`read_image_file`) or decoded.
    """
    return decode_image(read_image_file(path), name=Path(path).name)


def resize_center_crop(image: np.ndarray, size: int) -> np.ndarray:
    """Resize so the shorter side equals ``size`` (antialiased bilinear), then centre-crop.

    Args:
        image: (H, W, 3) uint8 array.
        size: Output side length in pixels.

    Returns:
        A (size, size, 3) uint8 array. Unchanged (a copy) when already that size.
    """
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image must have shape (H, W, 3), got {image.shape}")
    if size < 1:
        raise ValueError(f"size must be >= 1, got {size}")
    h, w = image.shape[:2]
    if (h, w) == (size, size):
        return image.copy()
    # Resample only the central square: the same as resizing the shorter side and cropping,
    # without ever building a huge intermediate image for extreme aspect ratios.
    side = min(h, w)
    top, left = (h - side) / 2, (w - side) / 2
    box = (left, top, left + side, top + side)
    resized = Image.fromarray(image).resize((size, size), Image.Resampling.BILINEAR, box=box)
    return np.array(resized, dtype=np.uint8)


def to_tensor(images: np.ndarray | Sequence[np.ndarray]) -> torch.Tensor:
    """Convert uint8 (H, W, 3) arrays to a float (B, 3, H, W) tensor in [0, 1]."""
    arr = np.stack(list(images)) if not isinstance(images, np.ndarray) else images
    if arr.ndim == 3:
        arr = arr[None]
    if arr.ndim != 4 or arr.shape[-1] != 3:
        raise ValueError(f"expected (B, H, W, 3) uint8 images, got shape {arr.shape}")
    return (
        torch.from_numpy(np.ascontiguousarray(arr))
        .permute(0, 3, 1, 2)
        .float()
        .div(255.0)
        .contiguous()
    )


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """Quantise (B, 3, H, W) tensors in [0, 1] to (B, H, W, 3) uint8, rounding to nearest."""
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"expected (B, 3, H, W) images, got shape {tuple(images.shape)}")
    q = torch.round(images.detach().float().clamp(0, 1) * 255.0).to(torch.uint8)
    return q.permute(0, 2, 3, 1).cpu().numpy()
