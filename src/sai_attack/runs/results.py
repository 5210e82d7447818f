"""``results.csv``: one row per input image, written in appends that cannot tear a row."""

from __future__ import annotations

import contextlib
import csv
import errno
import io
import math
import os
from pathlib import Path

from sai_attack import data

RESULT_COLUMNS = (
    "image", "output", "label", "target", "clean_pred", "adv_pred", "success", "l2",
    "delta_eff", "linf", "psnr", "superpixels", "mask_fraction", "status", "sha256", "ssim",
    "ciede2000", "ciede2000_p95", "min_delta", "fallback",
)  # fmt: skip
"""The columns, in order. ``sha256`` is the input file's hash: a resumed run reuses a row only
for the same input content (folders written before it existed have no such column). ``ssim``,
``ciede2000`` and ``ciede2000_p95`` are the perceptual metrics of :mod:`sai_attack.metrics` on the
saved PNG pair; ``min_delta`` is the smallest successful delta a ``min_delta`` search found (empty
in other runs, and where even the largest delta failed); ``fallback`` is 1 where the saved image is
the fallback attack's (``fallback_loss``), 0 where it is the attack's, empty in runs without a
fallback. New columns go last, so older readers keep their positions."""

_FORMULA_START = ("=", "+", "-", "@", "\t", "\r", "'")
"""Cell starts that make a spreadsheet evaluate a cell (OWASP CSV injection), and the quote
that escapes them; a cell starting with any of them is written with one more leading quote."""

STATUS_OK = "ok"
"""The status of an attacked image; any other status is ``skipped: <reason>``."""


def format_cell(value: float | None, digits: int = 4) -> str:
    """A number as ``results.csv`` writes it: fixed digits, ``inf``, or empty for NaN/None."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float) and math.isinf(value):
        return "inf"
    return f"{value:.{digits}f}"


def escape_cell(value: object) -> object:
    """A cell as written: text a spreadsheet would evaluate gets a leading quote."""
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return value


def unescape_cell(text: str) -> str:
    """The value of a written cell (inverse of :func:`escape_cell`)."""
    return text[1:] if text.startswith("'") else text


def read_results(path: Path) -> list[dict[str, str]]:
    """Read ``results.csv`` rows (complete lines only; a torn last line is dropped)."""
    if not path.is_file():
        return []
    text = path.read_text(encoding="utf-8", errors="replace")
    if text and not text.endswith("\n"):
        text = text[: text.rfind("\n") + 1]
    rows = csv.DictReader(io.StringIO(text, newline=""))
    unescaped = [{k: unescape_cell(v) if isinstance(v, str) else v for k, v in r.items()}
                 for r in rows]  # fmt: skip
    return [r for r in unescaped if r.get("status") is not None and r.get("image")]


def is_torn(path: Path) -> bool:
    """Whether the file ends in an incomplete line (a write cut short)."""
    if not path.is_file() or path.stat().st_size == 0:
        return False
    with open(path, "rb") as f:
        f.seek(-1, os.SEEK_END)
        return f.read(1) != b"\n"


def _format_rows(rows: list[dict], header: bool) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=RESULT_COLUMNS, lineterminator="\n", extrasaction="ignore")
    if header:
        w.writeheader()
    w.writerows({k: escape_cell(v) for k, v in r.items()} for r in rows)
    return buf.getvalue()


def _has_current_header(path: Path) -> bool:
    with open(path, encoding="utf-8", errors="replace", newline="") as f:
        return next(csv.reader([f.readline()]), []) == list(RESULT_COLUMNS)


def append_rows(path: Path, rows: list[dict]) -> None:
    """Append complete rows, or nothing: a failed or short write is undone and raised.

    Raises:
        OSError: The rows could not be written whole (the file is as it was before).
    """
    if not rows:
        return
    fresh = not path.is_file() or path.stat().st_size == 0
    if not fresh and not _has_current_header(path):
        # A folder written before the last columns were added: rewrite it with every column
        # first, else the new cells of appended rows would sit under no header name.
        write_results(path, read_results(path))
    payload = _format_rows(rows, header=fresh).encode("utf-8")
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    start = os.fstat(fd).st_size
    try:
        written = 0
        while written < len(payload):  # os.write may write less than asked (disk full)
            n = os.write(fd, payload[written:])
            if n == 0:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
            written += n
        os.fsync(fd)
    except OSError:
        with contextlib.suppress(OSError):
            os.ftruncate(fd, start)  # never leave half a row behind
        raise
    finally:
        os.close(fd)


def write_results(path: Path, rows: list[dict]) -> None:
    """Rewrite a whole results CSV atomically."""
    data.atomic_write_text(path, _format_rows(rows, header=True))
