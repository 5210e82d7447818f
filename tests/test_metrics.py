"""The per-image distortion metrics on known answers."""

from __future__ import annotations

import math

import numpy as np
import pytest
from skimage.color import deltaE_ciede2000, rgb2lab
from skimage.metrics import structural_similarity

from conftest import quadrants
from sai_attack.metrics import ciede2000, image_metrics, perceptual_metrics, ssim

C1 = (0.01 * 255) ** 2  # SSIM's stabiliser of the means (K1 = 0.01, L = 255)


def _flat(value: tuple[int, int, int], size: int = 24) -> np.ndarray:
    return np.broadcast_to(np.array(value, np.uint8), (size, size, 3)).copy()


def _noisy(image: np.ndarray, scale: float, seed: int = 0) -> np.ndarray:
    noise = np.random.default_rng(seed).normal(0, scale, image.shape)
    return np.clip(np.round(image + noise), 0, 255).astype(np.uint8)


def test_identical_images_have_ssim_one_and_no_colour_difference():
    image = quadrants(32)
    assert ssim(image, image) == pytest.approx(1.0, abs=1e-12)
    assert ciede2000(image, image) == (0.0, 0.0)
    m = image_metrics(image, image)
    assert m["l2"] == m["delta_eff"] == m["linf"] == 0.0
    assert math.isinf(m["psnr"])


def test_image_metrics_of_one_changed_value():
    clean = np.zeros((2, 2, 3), np.uint8)
    adv = clean.copy()
    adv[1, 0, 2] = 3
    m = image_metrics(clean, adv)
    assert m["l2"] == 3.0
    assert m["delta_eff"] == pytest.approx(3 / math.sqrt(12))
    assert m["linf"] == 3.0
    assert m["psnr"] == pytest.approx(10 * math.log10(255**2 * 12 / 9))


def test_ssim_of_flat_images_is_the_luminance_term():
    # Flat images have no variance: SSIM = (2 mu_x mu_y + C1) / (mu_x^2 + mu_y^2 + C1) per
    # channel, and the channels are averaged.
    clean, adv = _flat((100, 50, 200)), _flat((110, 50, 180))
    expected = np.mean([(2 * x * y + C1) / (x * x + y * y + C1)
                        for x, y in ((100, 110), (50, 50), (200, 180))])  # fmt: skip
    assert ssim(clean, adv) == pytest.approx(expected, abs=1e-9)


def test_ssim_uses_the_gaussian_window_of_wang_et_al():
    clean = quadrants(48)
    adv = _noisy(clean, 6.0)
    wang = structural_similarity(
        clean, adv, channel_axis=-1, data_range=255, gaussian_weights=True, sigma=1.5,
        use_sample_covariance=False,
    )  # fmt: skip
    default = structural_similarity(clean, adv, channel_axis=-1, data_range=255)
    assert ssim(clean, adv) == wang
    assert abs(wang - default) > 1e-4  # really another window than scikit-image's default
    assert ssim(clean, adv) < ssim(clean, _noisy(clean, 2.0)) < 1.0  # more noise, lower SSIM
    assert ssim(clean, adv) == ssim(adv, clean)  # symmetric


def test_ssim_of_images_smaller_than_the_window_is_nan():
    assert math.isnan(ssim(quadrants(10), quadrants(10)))


def test_ciede2000_of_black_and_white_is_100():
    # A pure lightness difference at mean lightness 50 has S_L = 1: Delta E00 = Delta L = 100.
    mean, p95 = ciede2000(_flat((0, 0, 0)), _flat((255, 255, 255)))
    assert mean == pytest.approx(100.0, abs=1e-3)
    assert p95 == pytest.approx(100.0, abs=1e-3)


def test_ciede2000_mean_and_95th_percentile_over_all_pixels():
    clean = _flat((0, 0, 0), size=20)
    adv = clean.copy()
    adv[:10] = 255  # half the pixels white
    mean, p95 = ciede2000(clean, adv)
    assert mean == pytest.approx(50.0, abs=1e-3)
    assert p95 == pytest.approx(100.0, abs=1e-3)
    adv = clean.copy()
    adv[0, :4] = 255  # 4 of 400 pixels (1%): the 95th percentile is 0
    assert ciede2000(clean, adv) == pytest.approx((100.0 * 4 / 400, 0.0), abs=1e-5)


def test_ciede2000_equals_scikit_image_on_the_whole_image():
    clean = quadrants(32)
    adv = _noisy(clean, 1.5, seed=4)
    adv[:8] = clean[:8]  # some unchanged pixels, which are not converted
    full = deltaE_ciede2000(rgb2lab(clean), rgb2lab(adv))
    mean, p95 = ciede2000(clean, adv)
    assert mean == pytest.approx(float(full.mean()), abs=1e-12)
    assert p95 == pytest.approx(float(np.percentile(full, 95)), abs=1e-12)


def test_perceptual_metrics_names_the_results_columns():
    clean = quadrants(32)
    adv = _noisy(clean, 2.0)
    m = perceptual_metrics(clean, adv)
    assert set(m) == {"ssim", "ciede2000", "ciede2000_p95"}
    assert m["ssim"] == ssim(clean, adv)
    assert (m["ciede2000"], m["ciede2000_p95"]) == ciede2000(clean, adv)
    assert 0 < m["ciede2000"] < m["ciede2000_p95"]
