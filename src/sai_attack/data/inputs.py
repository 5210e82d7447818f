"""The inputs of a run: the labels CSV, the image files of a folder, and their names.

Names enter here once: every image name read from a labels CSV is checked by
:func:`name_problem` (it must be a plain file name, so it resolves inside its folder), and every
output name is made by :func:`unique_stems` (valid on every common filesystem, unique even on
case-insensitive ones, at most :data:`MAX_STEM_BYTES` bytes).
"""

from __future__ import annotations

import csv
import hashlib
import io
import logging
import os
import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path, PurePath

from sai_attack.data.files import FileReadError, open_regular_file, read_limited
from sai_attack.data.images import IMAGE_EXTENSIONS

logger = logging.getLogger(__name__)

LABELS_FILENAME = "labels.csv"
NUM_CLASSES = 1000

MAX_LABELS_BYTES = 64 * 1024 * 1024
"""The largest labels CSV read (64 MiB, about two million rows)."""

MAX_STEM_BYTES = 150
"""The longest output stem, in UTF-8 bytes. With a ``-N`` clash suffix, an extension and the
temporary-file prefix it stays far below the 255-byte name limit of ext4, XFS, btrfs, APFS and
NTFS (255 UTF-16 units)."""

# Names that Windows reserves for devices, whatever the extension ("CON.png" is the console).
_WINDOWS_RESERVED = frozenset(
    ["CON", "PRN", "AUX", "NUL", "CONIN$", "CONOUT$"]
    + [f"{dev}{k}" for dev in ("COM", "LPT") for k in (*"123456789", "\u00b9", "\u00b2", "\u00b3")]
)


class LabelsError(ValueError):
    """A labels CSV cannot be used at all (unreadable, malformed, or missing columns)."""


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


def _read_text(path: Path) -> str:
    try:
        with open_regular_file(path) as (f, size):
            payload = read_limited(f, size, MAX_LABELS_BYTES)
    except FileReadError as exc:
        reason = str(exc).removeprefix("cannot read file: ")
        raise LabelsError(f"cannot read labels file {str(path)!r}: {reason}") from None
    return payload.decode("utf-8-sig", errors="replace")


def _csv_rows(path: Path, text: str) -> Iterable[tuple[int, list[str]]]:
    """The records of a CSV text with the line each starts on; malformed CSV is a LabelsError.

    The reader is strict: a quote left open would otherwise swallow every following line into
    one field without a word (at the end of the file or at the csv module's field-size limit).
    """
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    start = 1
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise LabelsError(
                f"labels file {str(path)!r}: {_csv_problem(text, start, exc)}"
            ) from None
        yield start, row
        start = reader.line_num + 1


def _csv_problem(text: str, start: int, exc: csv.Error) -> str:
    """A one-line account of a csv module error in the record starting on line ``start``."""
    lines = io.StringIO(text, newline="").readlines()
    first = lines[start - 1] if start <= len(lines) else ""
    # A field that opens with a quote on this line and has no closing one there ran on to the
    # end of the file or to the field-size limit.
    opened = re.search(r'(^|,)"', first) is not None and first.count('"') % 2 == 1
    if "end of data" in str(exc) or (opened and "field limit" in str(exc)):
        return (
            f"line {start}: a quote opened on this line is never closed "
            "(it would swallow every following row)"
        )
    if "field limit" in str(exc):
        return f"line {start}: a field is longer than {csv.field_size_limit():,} characters"
    return f"line {start}: malformed CSV ({exc})"


def read_labels(path: str | os.PathLike, num_classes: int = NUM_CLASSES) -> LabelTable:
    r"""Read a labels CSV.

    The file may have a UTF-8 BOM and CRLF line ends. Rows with a bad label, or whose image
    name is not a plain file name (:func:`name_problem`: no ``/``, ``\``, NUL, ``..`` or
    absolute path, so that it resolves inside the images' folder), are kept out of ``labels``
    and reported in ``problems``; identical duplicate rows are ignored, conflicting duplicates
    make the image a problem.

    Args:
        path: The CSV file (a regular file of at most :data:`MAX_LABELS_BYTES`).
        num_classes: Labels must lie in ``0..num_classes-1``.

    Returns:
        The parsed :class:`LabelTable`.

    Raises:
        LabelsError: When the file cannot be read, is too large, is malformed CSV (a quote
            never closed, a field over the csv module's size limit: the message names the
            line), or lacks the ``image`` or ``label`` column.
    """
    path = Path(path)
    rows = iter(_csv_rows(path, _read_text(path)))
    header = next(rows, (1, []))[1]
    columns = [c.strip() for c in header]
    missing = [c for c in ("image", "label") if c not in columns]
    if missing:
        raise LabelsError(
            f"labels file {str(path)!r} lacks column(s) {', '.join(missing)}; "
            f"found columns: {', '.join(columns) or '(none)'}"
        )
    table = LabelTable()
    seen: dict[str, tuple[str, str]] = {}
    for lineno, values in rows:
        if not values:
            continue  # a blank line, as csv.DictReader skips them
        row = dict(zip(columns, values, strict=False))  # as DictReader
        name = (row.get("image") or "").strip()
        if not name:
            table.warnings.append(f"line {lineno}: empty image name, row ignored")
            continue
        _add_row(table, seen, name, row, lineno, num_classes)
    return table


def _add_row(
    table: LabelTable,
    seen: dict[str, tuple[str, str]],
    name: str,
    row: dict[str, str],
    lineno: int,
    num_classes: int,
) -> None:
    """Enter one labels row into ``table`` (or its problem)."""
    problem = name_problem(name)
    if problem is not None:
        table.problems[name] = f"image name in labels file is not a plain file name: {problem}"
        return
    key = ((row.get("label") or "").strip(), (row.get("target") or "").strip())
    if name in seen:
        if seen[name] != key:
            table.problems[name] = f"conflicting duplicate rows in labels file (line {lineno})"
            table.labels.pop(name, None)
            table.targets.pop(name, None)
        else:
            table.warnings.append(f"line {lineno}: duplicate row for {name!r} ignored")
        return
    seen[name] = key
    try:
        table.labels[name] = _parse_class(row.get("label"), "label", num_classes)
    except ValueError as exc:
        table.problems[name] = f"bad label in labels file: {exc}"
        return
    if key[1]:
        try:
            table.targets[name] = _parse_class(row.get("target"), "target", num_classes)
        except ValueError as exc:
            table.problems[name] = f"bad target in labels file: {exc}"
            table.labels.pop(name, None)


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


def _entries(folder: Path) -> list[Path]:
    try:
        return list(folder.iterdir())
    except OSError as exc:
        raise ValueError(
            f"cannot list input folder {str(folder)!r}: {exc.strerror or exc}"
        ) from None


def discover_inputs(
    input_path: str | os.PathLike,
    labels_path: str | os.PathLike | None = None,
    num_classes: int = NUM_CLASSES,
) -> InputSet:
    """Find the images that an input argument designates.

    Args:
        input_path: An image file (of any name: the format is decided by its content when it
            is read), or a folder of images (searched non-recursively for the names in
            :data:`IMAGE_EXTENSIONS`, and its ``images/`` subfolder when it has a
            ``labels.csv`` naming files there).
        labels_path: A labels CSV; defaults to ``labels.csv`` next to the images when present.
        num_classes: Range check for labels.

    Returns:
        The :class:`InputSet`. Names listed in the labels file but missing on disk, and names
        that :func:`read_labels` refused (``problems``), are kept, so that they are reported
        instead of silently dropped; none of them is ever opened outside ``root``.

    Raises:
        FileNotFoundError: When ``input_path`` does not exist.
        ValueError: When the folder cannot be listed (permissions, say).
        LabelsError: When the labels file is unusable.
    """
    path = Path(input_path)
    if not path.exists():
        raise FileNotFoundError(f"input {str(path)!r} does not exist")
    if not path.is_dir():
        # One file, whatever its kind: reading it says why a FIFO or device cannot be used.
        root, names = path.parent, [path.name]
        default_labels = None
    else:
        root = path
        if (path / "images").is_dir() and not any(
            _is_image_name(p.name) for p in _entries(path) if p.is_file()
        ):
            root = path / "images"
        names = sorted(
            p.name for p in _entries(root) if _is_image_name(p.name) and not p.name.startswith(".")
        )
        default_labels = path / LABELS_FILENAME
    chosen = Path(labels_path) if labels_path is not None else default_labels
    table = None
    if chosen is not None and (labels_path is not None or chosen.is_file()):
        table = read_labels(chosen, num_classes=num_classes)  # names checked there
        if path.is_dir():
            names = sorted(set(names) | set(table.labels) | set(table.problems))
    return InputSet(root=root, names=names, labels=table, labels_path=chosen if table else None)


def printable_name(name: str) -> str:
    """A file name as text that can be written anywhere (CSV, JSON, HTML after escaping).

    File names that are not valid UTF-8 reach Python with surrogate escapes; those bytes are
    shown as backslash escapes instead of making every UTF-8 writer fail.
    """
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def name_problem(name: str) -> str | None:
    r"""Why ``name`` is not a plain file name that can be opened under a root, or ``None``.

    A plain name has no directory part on any system (no ``/`` or ``\``), no NUL byte, is not
    ``.`` or ``..``, and is not absolute (a drive, on Windows): joined to a folder, it always
    names something directly inside it.
    """
    if not name:
        return "it is empty"
    if "\x00" in name:
        return "it contains a NUL byte"
    if "/" in name or "\\" in name:
        return "it contains a path separator"
    if name in (".", ".."):
        return f"it is {name!r}"
    pure = PurePath(name)
    if pure.is_absolute() or pure.anchor or pure.drive:
        return "it is an absolute path"
    return None


def is_plain_name(name: str) -> bool:
    """Whether ``name`` is a plain file name, safe to open under a root (:func:`name_problem`)."""
    return name_problem(name) is None


def _cut_utf8(text: str, limit: int) -> str:
    """The longest prefix of ``text`` that is at most ``limit`` UTF-8 bytes (whole characters)."""
    return text.encode("utf-8")[:limit].decode("utf-8", errors="ignore")


def safe_stem(name: str) -> str:
    """Turn an input file name into an output file stem that is valid on every filesystem.

    The extension is dropped; characters other than letters, digits and ``-_.+=@,`` (after NFC
    normalisation) become ``_``, so no separator, control or Windows-forbidden character
    (``<>:"|?*``) remains; leading dots are removed (no hidden files); a Windows device name
    (``CON``, ``NUL``, ``COM1``, ...) gets a ``_``. A stem over :data:`MAX_STEM_BYTES` UTF-8
    bytes is cut at a character boundary and ends with ``-`` and 8 hex digits of the full
    name's SHA-256, so names that differ only after the cut keep distinct stems, the same ones
    in every run. Short ASCII names keep their stem unchanged.
    """
    stem = Path(name).stem if "." in name else name
    stem = unicodedata.normalize("NFC", stem)
    cleaned = "".join(
        c if (c.isalnum() or c in "-_.+=@,") and ord(c) < 0x3000 else "_" for c in stem
    )
    cleaned = cleaned.lstrip(".") or "image"
    device, dot, rest = cleaned.partition(".")
    if device.upper() in _WINDOWS_RESERVED:
        cleaned = f"{device}_{dot}{rest}"
    if len(cleaned.encode("utf-8")) > MAX_STEM_BYTES:
        digest = hashlib.sha256(name.encode("utf-8", "surrogateescape")).hexdigest()[:8]
        cleaned = f"{_cut_utf8(cleaned, MAX_STEM_BYTES - 9)}-{digest}"
    return cleaned


def _fold(stem: str) -> str:
    """The key under which case-insensitive filesystems (NTFS, APFS, FAT) see ``stem``."""
    return unicodedata.normalize("NFKC", stem).casefold()


def unique_stems(names: Iterable[str]) -> dict[str, str]:
    """Map input names to output stems that are unique, also on case-insensitive filesystems.

    Each stem is :func:`safe_stem`; a stem already taken (compared case-insensitively) gets
    ``-2``, ``-3``, ... in the order of ``names``. The result depends only on ``names``.
    """
    result: dict[str, str] = {}
    used: set[str] = set()
    for name in names:
        base = safe_stem(name)
        stem, k = base, 2
        while _fold(stem) in used:
            stem, k = f"{base}-{k}", k + 1
        used.add(_fold(stem))
        result[name] = stem
    return result
