"""Images in, images out: loading, conversion, labels, and atomic writes.

Every image that enters the library goes through :func:`load_image`, which turns whatever Pillow
can decode (grayscale, palette, RGBA, CMYK, 16-bit, EXIF-rotated, animated) into an 8-bit RGB
array, or raises :class:`ImageLoadError` with a one-line reason. Every file the library writes goes
through :func:`atomic_write_bytes`, so an interrupted run never leaves a truncated file behind.
"""

from __future__ import annotations

import csv
import io
import logging
import os
import tempfile
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (
    ".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pnm",
)  # fmt: skip
LABELS_FILENAME = "labels.csv"
NUM_CLASSES = 1000


class ImageLoadError(ValueError):
    """An input file could not be turned into an RGB image; the message is a one-line reason."""


class LabelsError(ValueError):
    """A labels CSV cannot be used at all (missing file or missing columns)."""


# --------------------------------------------------------------------------------------------
# Loading and converting images
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


def decode_image(data: bytes, name: str = "<bytes>") -> np.ndarray:
    """Decode image bytes to an (H, W, 3) uint8 RGB array.

    Args:
        data: The encoded file content.
        name: Used in error messages only.

    Returns:
        The image as an (H, W, 3) uint8 array. Grayscale, palette, RGBA (composited on white),
        CMYK and 16-bit images are converted; EXIF orientation is applied; for animated and
        multi-page files the first frame is used.

    Raises:
        ImageLoadError: When the data is empty, not an image, truncated, or too large.
    """
    if len(data) == 0:
        raise ImageLoadError("empty file (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as im:
                im.seek(0)
                im.load()
                im = ImageOps.exif_transpose(im)
                arr = _to_rgb_array(im)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageLoadError(f"image too large (decompression-bomb limit): {exc}") from None
    except Image.UnidentifiedImageError:
        raise ImageLoadError("not a recognised image format") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageLoadError(f"cannot decode image: {exc}") from None
    if arr.ndim != 3 or arr.shape[2] != 3 or arr.shape[0] < 1 or arr.shape[1] < 1:
        raise ImageLoadError(f"unexpected decoded shape {arr.shape} for {name}")
    return arr


def load_image(path: str | os.PathLike) -> np.ndarray:
    """Read an image file as an (H, W, 3) uint8 RGB array.

    Args:
        path: The file to read.

    Returns:
        The converted image (see :func:`decode_image`).

    Raises:
        ImageLoadError: When the file cannot be read or decoded.
    """
    path = Path(path)
    try:
        # Only regular files: a FIFO or device named *.png would block or never end.
        if path.exists() and not path.is_dir() and not path.is_file():
            raise ImageLoadError("not a regular file")
        data = path.read_bytes()
    except IsADirectoryError:
        raise ImageLoadError("is a directory") from None
    except PermissionError:
        raise ImageLoadError("permission denied") from None
    except OSError as exc:
        raise ImageLoadError(f"cannot read file: {exc.strerror or exc}") from None
    return decode_image(data, name=path.name)


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


def quantize(images: torch.Tensor) -> torch.Tensor:
    """Round (B, 3, H, W) images in [0, 1] to the nearest 8-bit level, staying in [0, 1]."""
    return torch.round(images.clamp(0, 1) * 255.0) / 255.0


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


# --------------------------------------------------------------------------------------------
# Labels and input discovery
# --------------------------------------------------------------------------------------------


@dataclass
class LabelTable:
    """Labels read from a CSV with columns ``image,label`` and optional ``target``.

    Attributes:
        labels: Image file name -> ground-truth class index.
        targets: Image file name -> target class index (targeted attacks), where given.
        problems: Image file name -> one-line reason why its row could not be used.
        warnings: Problems that concern the file as a whole (duplicate rows and the like).
    """

    labels: dict[str, int] = field(default_factory=dict)
    targets: dict[str, int] = field(default_factory=dict)
    problems: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


def _parse_class(value: str | None, column: str, num_classes: int) -> int:
    text = (value or "").strip()
    try:
        k = int(text)
    except ValueError:
        raise ValueError(f"{column} {text!r} is not an integer") from None
    if not 0 <= k < num_classes:
        raise ValueError(f"{column} {k} is outside 0..{num_classes - 1}")
    return k


def read_labels(path: str | os.PathLike, num_classes: int = NUM_CLASSES) -> LabelTable:
    """Read a labels CSV.

    The file may have a UTF-8 BOM and CRLF line ends. Rows with a bad label are kept out of
    ``labels`` and reported in ``problems``; identical duplicate rows are ignored, conflicting
    duplicates make the image a problem.

    Args:
        path: The CSV file.
        num_classes: Labels must lie in ``0..num_classes-1``.

    Returns:
        The parsed :class:`LabelTable`.

    Raises:
        LabelsError: When the file cannot be read or lacks the ``image`` or ``label`` column.
    """
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8-sig", errors="replace")
    except OSError as exc:
        raise LabelsError(f"cannot read labels file {str(path)!r}: {exc.strerror or exc}") from None
    reader = csv.DictReader(io.StringIO(text, newline=""))
    columns = [c.strip() for c in (reader.fieldnames or [])]
    missing = [c for c in ("image", "label") if c not in columns]
    if missing:
        raise LabelsError(
            f"labels file {str(path)!r} lacks column(s) {', '.join(missing)}; "
            f"found columns: {', '.join(columns) or '(none)'}"
        )
    reader.fieldnames = columns
    table = LabelTable()
    seen: dict[str, tuple[str, str]] = {}
    for lineno, row in enumerate(reader, start=2):
        name = (row.get("image") or "").strip()
        if not name:
            table.warnings.append(f"line {lineno}: empty image name, row ignored")
            continue
        key = ((row.get("label") or "").strip(), (row.get("target") or "").strip())
        if name in seen:
            if seen[name] != key:
                table.problems[name] = f"conflicting duplicate rows in labels file (line {lineno})"
                table.labels.pop(name, None)
                table.targets.pop(name, None)
            else:
                table.warnings.append(f"line {lineno}: duplicate row for {name!r} ignored")
            continue
        seen[name] = key
        try:
            table.labels[name] = _parse_class(row.get("label"), "label", num_classes)
        except ValueError as exc:
            table.problems[name] = f"bad label in labels file: {exc}"
            continue
        if key[1]:
            try:
                table.targets[name] = _parse_class(row.get("target"), "target", num_classes)
            except ValueError as exc:
                table.problems[name] = f"bad target in labels file: {exc}"
                table.labels.pop(name, None)
    return table


@dataclass
class InputSet:
    """The images an input path designates, and their labels when a labels CSV was found.

    Attributes:
        root: The folder that image names are relative to.
        names: Image paths relative to ``root`` (POSIX style), sorted.
        labels: The label table, or ``None`` when the clean prediction serves as the label.
        labels_path: Where the labels came from.
    """

    root: Path
    names: list[str]
    labels: LabelTable | None = None
    labels_path: Path | None = None


def _is_image_name(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS)


def discover_inputs(
    input_path: str | os.PathLike,
    labels_path: str | os.PathLike | None = None,
    num_classes: int = NUM_CLASSES,
) -> InputSet:
    """Find the images that an input argument designates.

    Args:
        input_path: An image file, or a folder of images (searched non-recursively, and its
            ``images/`` subfolder when it has a ``labels.csv`` naming files there).
        labels_path: A labels CSV; defaults to ``labels.csv`` next to the images when present.
        num_classes: Range check for labels.

    Returns:
        The :class:`InputSet`. Names listed in the labels file but missing on disk are kept, so
        that they are reported instead of silently dropped.

    Raises:
        FileNotFoundError: When ``input_path`` does not exist.
        LabelsError: When the labels file is unusable.
    """
    path = Path(input_path)
    if not path.exists():
        raise FileNotFoundError(f"input {str(path)!r} does not exist")
    if path.is_file():
        root, names = path.parent, [path.name]
        default_labels = None
    else:
        root = path
        if (path / "images").is_dir() and not any(
            _is_image_name(p.name) for p in path.iterdir() if p.is_file()
        ):
            root = path / "images"
        names = sorted(
            p.name for p in root.iterdir() if _is_image_name(p.name) and not p.name.startswith(".")
        )
        default_labels = path / LABELS_FILENAME
    chosen = Path(labels_path) if labels_path is not None else default_labels
    table = None
    if chosen is not None and (labels_path is not None or chosen.is_file()):
        table = read_labels(chosen, num_classes=num_classes)
        for name in list(table.labels):
            if not is_plain_name(name):
                table.problems[name] = "image name in labels file is not a plain file name"
                table.labels.pop(name)
                table.targets.pop(name, None)
        if path.is_dir():
            names = sorted(set(names) | set(table.labels) | set(table.problems))
    return InputSet(root=root, names=names, labels=table, labels_path=chosen if table else None)


def printable_name(name: str) -> str:
    """A file name as text that can be written anywhere (CSV, JSON, HTML after escaping).

    File names that are not valid UTF-8 reach Python with surrogate escapes; those bytes are
    shown as backslash escapes instead of making every UTF-8 writer fail.
    """
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def is_plain_name(name: str) -> bool:
    """Whether ``name`` is a plain file name (no directory parts), safe to open under a root."""
    return bool(name) and "/" not in name and "\\" not in name and name not in (".", "..")


def safe_stem(name: str) -> str:
    """Turn an input file name into a safe output file stem (no separators or control chars)."""
    stem = Path(name).stem if "." in name else name
    cleaned = "".join(
        c if (c.isalnum() or c in "-_.+=@,") and ord(c) < 0x3000 else "_" for c in stem
    )
    cleaned = cleaned.lstrip(".") or "image"
    return cleaned[:150]


def unique_stems(names: Iterable[str]) -> dict[str, str]:
    """Map input names to output stems that are unique (suffixing ``-2``, ``-3`` on clashes)."""
    result: dict[str, str] = {}
    used: set[str] = set()
    for name in names:
        base = safe_stem(name)
        stem, k = base, 2
        while stem.lower() in used:
            stem, k = f"{base}-{k}", k + 1
        used.add(stem.lower())
        result[name] = stem
    return result
