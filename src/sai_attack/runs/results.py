"""``results.csv``: one row per input image, written in appends that cannot tear a row."""

from __future__ import annotations

import csv
import io
import math
import os
from pathlib import Path

from sai_attack import data

RESULT_COLUMNS = (
    "image", "output", "label", "target", "clean_pred", "adv_pred", "success", "l2",
    "delta_eff", "linf", "psnr", "superpixels", "mask_fraction", "status",
)  # fmt: skip
"""The columns, in order."""

STATUS_OK = "ok"
"""The status of an attacked image; any other status is ``skipped: <reason>``."""


def format_cell(value: float | None, digits: int = 4) -> str:
    """A number as ``results.csv`` writes it: fixed digits, ``inf``, or empty for NaN/None."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float) and math.isinf(value):
        return "inf"
    return f"{value:.{digits}f}"


def read_results(path: Path) -> list[dict[str, str]]:
    """Read ``results.csv`` rows (complete lines only; a torn last line is dropped)."""
    if not path.is_file():
        return []
    text = path.read_text(encoding="utf-8", errors="replace")
    if text and not text.endswith("\n"):
        text = text[: text.rfind("\n") + 1]
    rows = list(csv.DictReader(io.StringIO(text, newline="")))
    return [r for r in rows if r.get("status") is not None and r.get("image")]


def _format_row(row: dict) -> str:
    buf = io.StringIO()
    csv.DictWriter(buf, fieldnames=RESULT_COLUMNS, lineterminator="\n").writerow(row)
    return buf.getvalue()


def append_rows(path: Path, rows: list[dict]) -> None:
    """Append complete rows in one ``write`` call (a kill cannot tear a row)."""
    if not rows:
        return
    header = "" if path.is_file() and path.stat().st_size > 0 else ",".join(RESULT_COLUMNS) + "\n"
    payload = (header + "".join(_format_row(r) for r in rows)).encode("utf-8")
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, payload)
        os.fsync(fd)
    finally:
        os.close(fd)


def write_results(path: Path, rows: list[dict]) -> None:
    """Rewrite a whole results CSV atomically."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=RESULT_COLUMNS, lineterminator="\n", extrasaction="ignore")
    w.writeheader()
    w.writerows(rows)
    data.atomic_write_text(path, buf.getvalue())
