"""The statistics of the reports: Wilson intervals, t intervals over splits, exact McNemar."""

import math

import numpy as np
import pytest
from scipy import stats

from sai_attack.report import (
    discordant,
    interval_text,
    mcnemar_exact,
    mean_interval,
    rate_interval,
    wilson_interval,
)

Z95 = 1.959963984540054  # the 0.975 quantile of the standard normal


def _wilson_by_hand(s, n, z=Z95):
    # The score interval written as the roots of (p - p̂)² = z² p (1 - p) / n, a different
    # route from the library's centre ± half-width form.
    p_hat = s / n
    a = 1 + z * z / n
    b = -(2 * p_hat + z * z / n)
    c = p_hat * p_hat
    root = math.sqrt(b * b - 4 * a * c)
    return (-b - root) / (2 * a), (-b + root) / (2 * a)


@pytest.mark.parametrize(
    ("s", "n", "expected"),
    [
        (0, 10, (0.0, 0.27753)),
        (10, 10, (0.72247, 1.0)),
        (5, 10, (0.23659, 0.76341)),
        (81, 100, (0.72221, 0.87485)),
    ],
)
def test_wilson_known_values(s, n, expected):
    low, high = wilson_interval(s, n)
    assert (low, high) == pytest.approx(expected, abs=1e-5)
    assert (low, high) == pytest.approx(_wilson_by_hand(s, n), abs=1e-12)


def test_wilson_edges_and_other_confidence():
    assert wilson_interval(0, 10)[0] == 0.0
    assert wilson_interval(10, 10)[1] == 1.0
    assert all(math.isnan(v) for v in wilson_interval(0, 0))
    for s, n in [(0, 1), (1, 3), (7, 19), (250, 1000), (999, 1000)]:
        low, high = wilson_interval(s, n)
        assert 0.0 <= low <= s / n <= high <= 1.0
        z99 = stats.norm.ppf(0.995)
        assert wilson_interval(s, n, 0.99) == pytest.approx(_wilson_by_hand(s, n, z99), abs=1e-12)


def test_wilson_against_statsmodels_when_installed():
    smp = pytest.importorskip("statsmodels.stats.proportion")
    for s, n in [(0, 10), (3, 10), (81, 100), (500, 1000)]:
        expected = smp.proportion_confint(s, n, alpha=0.05, method="wilson")
        assert wilson_interval(s, n) == pytest.approx(expected, abs=1e-10)


@pytest.mark.parametrize(
    ("args", "message"),
    [((11, 10), "successes must lie in 0..n"), ((-1, 10), "successes"), ((0, -1), "n must be")],
)
def test_wilson_names_the_bad_parameter(args, message):
    with pytest.raises(ValueError, match=message):
        wilson_interval(*args)
    with pytest.raises(ValueError, match="confidence"):
        wilson_interval(1, 2, confidence=1.0)


def test_mean_interval_is_the_t_interval():
    values = [0.91, 0.935, 0.92, 0.95, 0.9]
    k, mean, sd = len(values), np.mean(values), np.std(values, ddof=1)
    half = stats.t.ppf(0.975, k - 1) * sd / math.sqrt(k)
    assert mean_interval(values) == pytest.approx((mean - half, mean + half), abs=1e-12)
    low, high = stats.t.interval(0.95, k - 1, loc=mean, scale=stats.sem(values))
    assert mean_interval(values) == pytest.approx((low, high), abs=1e-12)
    assert mean_interval([0.9, 0.99, 1.0], bounds=(0.0, 1.0))[1] == 1.0
    assert mean_interval([0.9, 0.99, 1.0])[1] > 1.0
    assert all(math.isnan(v) for v in mean_interval([0.9]))  # one split: no spread
    assert all(math.isnan(v) for v in mean_interval([]))


def test_mcnemar_matches_scipy_binomtest():
    for b in range(0, 31):
        for c in range(0, 31):
            expected = 1.0 if b + c == 0 else stats.binomtest(min(b, c), b + c, 0.5).pvalue
            assert mcnemar_exact(b, c) == pytest.approx(expected, rel=1e-9, abs=1e-300), (b, c)
    for b, c in [(0, 100), (45, 55), (120, 80), (400, 460), (1000, 1000)]:
        assert mcnemar_exact(b, c) == pytest.approx(stats.binomtest(min(b, c), b + c).pvalue)
    assert mcnemar_exact(0, 0) == 1.0
    assert mcnemar_exact(7, 7) == 1.0
    with pytest.raises(ValueError, match="b must be >= 0"):
        mcnemar_exact(-1, 3)


def test_mcnemar_on_known_per_image_outcomes():
    # 20 images: both succeed on 8, both fail on 2, only the first on 9, only the second on 1.
    first = [True] * 8 + [False] * 2 + [True] * 9 + [False] * 1
    second = [True] * 8 + [False] * 2 + [False] * 9 + [True] * 1
    assert discordant(first, second) == (9, 1)
    p = mcnemar_exact(*discordant(first, second))
    assert p == pytest.approx(stats.binomtest(1, 10, 0.5).pvalue)
    assert p == pytest.approx(2 * (1 + 10) / 2**10)  # 2 · P(X <= 1), X ~ Bin(10, 1/2)
    assert p < 0.05  # 85% vs 45% on the same 20 images: a real difference
    # 67% vs 33% on three images (two discordant pairs one way, one the other): no evidence.
    assert mcnemar_exact(*discordant([True, False, True], [False, True, False])) == 1.0
    with pytest.raises(ValueError, match="pair item by item"):
        discordant([True], [True, False])


def test_rate_interval_text():
    assert rate_interval(0.81, *wilson_interval(81, 100)) == "81.0 [72.2, 87.5]"
    assert rate_interval(float("nan"), 0.1, 0.2) == "n/a"
    assert rate_interval(0.5, float("nan"), float("nan")) == "50.0 [n/a]"
    assert interval_text(0.9512, 0.9688, digits=2) == "[95.12, 96.88]"


def test_summary_verdict_is_the_paired_test_not_a_margin():
    from sai_attack.reproduce.tables import Measure, compare

    images = [f"{i:03d}.png" for i in range(100)]

    def measure(successes):
        outcomes = {name: i < successes for i, name in enumerate(images)}
        return Measure(successes / 100, *wilson_interval(successes, 100), outcomes)

    # 55% vs 50% on the same 100 images, 5 discordant images all one way: p = 2/2^5 = 0.0625.
    assert compare(measure(55), measure(50), True) == (
        "tie",
        "McNemar p = 0.062, 5 vs 0 discordant of 100 images",
    )
    verdict, test = compare(measure(60), measure(50), True)  # p = 2/2^10
    assert (verdict, test.split(",")[0]) == ("wins", "McNemar p = 0.002")
    assert compare(measure(50), measure(60), True)[0] == "loses"
    assert compare(measure(60), measure(50), False)[0] == "loses"  # lower is better
    # Only the images both runs count are paired.
    partial = Measure(0.6, 0.5, 0.7, {name: True for name in images[:3]})
    assert compare(partial, measure(2), True)[1].endswith("1 vs 0 discordant of 3 images")
    assert compare(Measure(float("nan")), measure(50), True) == ("n/a", "")


def test_detection_verdict_compares_split_intervals():
    from sai_attack.reproduce.tables import Measure, compare

    low = Measure.of_splits([0.80, 0.82, 0.81])
    high = Measure.of_splits([0.90, 0.91, 0.92])
    close = Measure.of_splits([0.81, 0.83, 0.80])
    assert low.value == pytest.approx(0.81)
    assert (low.low, low.high) == pytest.approx(mean_interval([0.80, 0.82, 0.81]))
    assert compare(low, high, False) == ("wins", "95% split intervals apart")  # lower wins
    assert compare(low, close, False) == ("tie", "95% split intervals overlap")
    assert compare(Measure.of_splits([0.8]), high, False) == ("n/a", "no interval (one split)")
    assert Measure.of_splits([]).cell() == "n/a"
    assert low.cell() == f"81.0 {interval_text(*mean_interval([0.80, 0.82, 0.81]))}"
