"""Shared helpers for what the library reports: numbers, tables and plots.

Every number written into a CSV, Markdown table or report goes through :func:`number` or
:func:`percent` (a rate with its interval through :func:`rate_interval`); every Markdown table
through :func:`markdown_table`, every CSV through :func:`csv_text`; every plot is a
:class:`matplotlib.figure.Figure` made by :func:`new_figure` and rendered by :func:`figure_png`.
The uncertainty of a reported number comes from :func:`wilson_interval` (a rate of successes),
:func:`mean_interval` (a mean over repetitions, e.g. detection splits) and :func:`mcnemar_exact`
(two methods on the same images). No helper touches matplotlib's global state (no
``matplotlib.use``, no ``pyplot``), so the library never changes the backend of a program
that imports it.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Mapping, Sequence
from statistics import NormalDist
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure


def _unknown(value: float | None) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def number(value: float | None, digits: int = 4, unknown: str = "") -> str:
    """A number with fixed digits; ``unknown`` for None/NaN, ``inf`` for infinities."""
    if _unknown(value):
        return unknown
    if isinstance(value, float) and math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return f"{value:.{digits}f}"


def percent(rate: float | None, digits: int = 1, unknown: str = "") -> str:
    """A rate in [0, 1] as a percentage without the sign (``0.5`` -> ``50.0``)."""
    return unknown if _unknown(rate) else f"{100 * rate:.{digits}f}"


def none_if_nan(value: float | None, digits: int | None = None) -> float | None:
    """None for None/NaN (JSON has no NaN), else the value, rounded to ``digits`` if given."""
    if _unknown(value):
        return None
    return value if digits is None else round(value, digits)


def _check_confidence(confidence: float) -> float:
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must lie strictly between 0 and 1, got {confidence!r}")
    return float(confidence)


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """The Wilson score interval of the rate ``successes / n``.

    With ``z`` the ``(1 + confidence) / 2`` quantile of the standard normal and ``p = s / n``:
    ``(p + z²/2n ± z·sqrt(p(1-p)/n + z²/4n²)) / (1 + z²/n)``. Unlike ``p ± z·sqrt(p(1-p)/n)`` it
    stays inside [0, 1] and keeps its coverage at 0/n and n/n (Wilson 1927; Brown, Cai and
    DasGupta 2001 recommend it for small n).

    Args:
        successes: Number of successes, 0..n.
        n: Number of trials (0: the interval is unknown).
        confidence: Coverage, in (0, 1).

    Returns:
        ``(low, high)`` in [0, 1]; ``(nan, nan)`` when ``n`` is 0.

    Raises:
        ValueError: ``n`` is negative, ``successes`` outside 0..n, or a bad ``confidence``.
    """
    z = NormalDist().inv_cdf(0.5 + _check_confidence(confidence) / 2)
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n!r}")
    if not 0 <= successes <= n:
        raise ValueError(f"successes must lie in 0..n = 0..{n}, got {successes!r}")
    if n == 0:
        return math.nan, math.nan
    p = successes / n
    scale = 1.0 + z * z / n
    center = (p + z * z / (2 * n)) / scale
    half = z * math.sqrt(p * (1.0 - p) / n + z * z / (4 * n * n)) / scale
    # At 0/n and n/n the bound is exactly 0 or 1; rounding would leave a few 1e-17 off.
    low = 0.0 if successes == 0 else max(0.0, center - half)
    high = 1.0 if successes == n else min(1.0, center + half)
    return low, high


def mean_interval(
    values: Sequence[float],
    confidence: float = 0.95,
    bounds: tuple[float, float] = (-math.inf, math.inf),
) -> tuple[float, float]:
    """The t interval of the mean of ``values``: ``mean ± t_{(1+c)/2, k-1} · sd / sqrt(k)``.

    ``sd`` is the sample standard deviation (ddof = 1) of the ``k`` values, for example the
    detection accuracies of ``k`` train/test splits. The splits share images, so the interval
    describes the split-to-split spread of this data set, not a new sample of images.

    Args:
        values: The repeated measurements.
        confidence: Coverage, in (0, 1).
        bounds: The range the mean cannot leave (``(0, 1)`` for an accuracy); the interval is
            clipped to it.

    Returns:
        ``(low, high)``; ``(nan, nan)`` for fewer than two values (no spread to measure).

    Raises:
        ValueError: A bad ``confidence``.
    """
    confidence = _check_confidence(confidence)
    k = len(values)
    if k < 2 or any(_unknown(v) for v in values):
        return math.nan, math.nan
    from scipy.stats import t  # imported here: scipy.stats takes a while to import

    mean = math.fsum(values) / k
    sd = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (k - 1))
    half = float(t.ppf(0.5 + confidence / 2, k - 1)) * sd / math.sqrt(k)
    return max(bounds[0], mean - half), min(bounds[1], mean + half)


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar test of two methods on the same items.

    ``b`` and ``c`` count the discordant pairs (:func:`discordant`): items where only the first
    method, or only the second, succeeds. Under the null hypothesis (equal success
    probabilities) each discordant pair goes either way with probability 1/2, so
    ``p = min(1, 2 · P(X <= min(b, c)))`` with ``X ~ Binomial(b + c, 1/2)``, computed exactly
    with integers. Concordant pairs carry no information about the difference.

    Returns:
        The p-value in (0, 1]; 1 when there is no discordant pair.

    Raises:
        ValueError: ``b`` or ``c`` is negative.
    """
    for name, value in (("b", b), ("c", c)):
        if value < 0:
            raise ValueError(f"{name} must be >= 0, got {value!r}")
    n = b + c
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(b, c) + 1))
    return min(1.0, 2 * tail / 2**n)  # int / int: exact until the final rounding


def discordant(first: Sequence[bool], second: Sequence[bool]) -> tuple[int, int]:
    """``(b, c)`` of :func:`mcnemar_exact`: items only ``first``, only ``second`` succeeds on.

    Raises:
        ValueError: The outcome lists differ in length (they must pair item by item).
    """
    if len(first) != len(second):
        raise ValueError(
            f"first and second must pair item by item, got {len(first)} and {len(second)} items"
        )
    b = sum(bool(x) and not y for x, y in zip(first, second, strict=True))
    c = sum(bool(y) and not x for x, y in zip(first, second, strict=True))
    return b, c


def interval_text(low: float | None, high: float | None, digits: int = 1) -> str:
    """An interval of rates in percent, ``[72.2, 87.5]``; ``[n/a]`` when unknown."""
    if _unknown(low) or _unknown(high):
        return "[n/a]"
    return f"[{percent(low, digits)}, {percent(high, digits)}]"


def rate_interval(
    rate: float | None, low: float | None, high: float | None, digits: int = 1
) -> str:
    """A rate in percent with its interval, ``81.0 [72.2, 87.5]``; ``n/a`` for an unknown rate."""
    if _unknown(rate):
        return "n/a"
    return f"{percent(rate, digits)} {interval_text(low, high, digits)}"


def markdown_table(header: Sequence[object], rows: Sequence[Sequence[object]]) -> list[str]:
    """A Markdown table as lines; ``|`` and line breaks in cells are escaped."""

    def cell(value: object) -> str:
        return str(value).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(cell(c) for c in header) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows]
    return lines


def csv_text(columns: Sequence[str], rows: Sequence[Mapping[str, Any] | Sequence[Any]]) -> str:
    """CSV text with a header; rows are mappings (missing keys empty) or sequences."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        if isinstance(row, Mapping):
            writer.writerow(["" if row.get(k) is None else row.get(k) for k in columns])
        else:
            writer.writerow(row)
    return buf.getvalue()


def new_figure(width: float = 6.0, height: float = 4.0, dpi: int = 100) -> Figure:
    """A figure detached from pyplot (safe in threads and in programs with their own backend)."""
    figure = Figure(figsize=(width, height), dpi=dpi)
    FigureCanvasAgg(figure)
    return figure


def figure_png(figure: Figure) -> bytes:
    """Render a figure of :func:`new_figure` to PNG bytes."""
    buf = io.BytesIO()
    figure.savefig(buf, format="png")
    return buf.getvalue()
