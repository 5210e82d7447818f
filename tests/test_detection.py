"""Steganalysis features, FLD / logreg detectors, the paired protocol, `sai-attack detect`."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import shutil
from dataclasses import asdict
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
import sealwatch as sw
from PIL import Image
from scipy.ndimage import zoom

from conftest import make_tiny_model
from sai_attack import data
from sai_attack.cli import main
from sai_attack.detection import (
    DetectionOptions,
    FeatureCache,
    FeatureExtractor,
    FeatureSettings,
    FLDEnsemble,
    LogisticDetector,
    cross_attack,
    detect_runs,
    evaluate_pairs,
    extract_files,
    extract_image,
    load_detector,
    pair_split,
    run_detection,
    run_label,
    save_detector,
)
from sai_attack.detection import classifiers as clf_module
from sai_attack.detection import features as feat_module
from sai_attack.detection.protocol import roc_metrics
from sai_attack.detection.runs import merge_beta, superpixel_algorithm
from sai_attack.pipeline import AttackConfig, AttackRun, RunOptions
from sai_attack.runs import Run, read_run
from sai_attack.runs.record import RunRecord

SAMPLE = Path(data.__file__).parents[1] / "samples" / "0ed355357757528d.png"

# SPAM-686 of the red channel of SAMPLE, from sealwatch's Python reference implementation
# (sealwatch 2025.9): entries 0, 1, 171, 342, 343, 500, 685, the sum and the L2 norm.
SPAM_RED_INDEX = [0, 1, 171, 342, 343, 500, 685]
SPAM_RED_VALUES = [
    0.05896061194974239, 0.00542630841543885, 0.00397722136852572, 0.05896061194974239,
    0.0595895726807889, 0.00092163531775018, 0.0595895726807889,
]  # fmt: skip
SPAM_RED_SUM, SPAM_RED_NORM = 1.9999999999999998, 0.21650110084684518
# SRM-34671 of the luminance of SAMPLE[:24, :24]: first five entries, sum and norm.
SRM_CROP_FIRST = [0.33732057, 0.09090909, 0.08133972, 0.055023924, 0.2799043]
SRM_CROP_SUM, SRM_CROP_NORM = 424.00000726029975, 7.323378464461536
# CRMQ1-5404 and SRMQ1-12753 (x 3 channels) of gradient_image(), computed once with sealwatch
# 2025.9 (first five entries, sum and L2 norm; the vectors are float32).
CRM_FIRST = [0.40333334, 0.27444443, 0.28333333, 0.22, 0.20666666]
CRM_SUM, CRM_NORM = 86.00000043606269, 3.1754629630674147
SRMQ1_FIRST = [0.27530864, 0.17901234, 0.18271604, 0.11234568, 0.1962963]
SRMQ1_SUM, SRMQ1_NORM = 467.9999996514525, 10.413191232857168
SRMQ1_GRAY_SUM = 156.00000009327778


# --------------------------------------------------------------------------------------------
# Synthetic images
# --------------------------------------------------------------------------------------------


def smooth_image(rng: np.random.Generator, size: int = 48) -> np.ndarray:
    """A smooth random colour image with mild sensor-like noise, (size, size, 3) uint8."""
    low = rng.uniform(50, 205, (size // 8, size // 8, 3))
    img = zoom(low, (8, 8, 1), order=1) + rng.normal(0, 2.0, (size, size, 3))
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def gradient_image(size: int = 32) -> np.ndarray:
    """Colour gradients with small integer noise, (size, size, 3) uint8 (integer arithmetic)."""
    i, j = np.mgrid[0:size, 0:size]
    base = np.stack([3 * i + 2 * j + 40, 2 * i + 5 * j + 10, 150 - i + j], axis=-1)
    noise = np.random.default_rng(2024).integers(-3, 4, base.shape)
    return np.clip(base + noise, 0, 255).astype(np.uint8)


def plus_minus_one(rng: np.random.Generator, image: np.ndarray) -> np.ndarray:
    """Strong i.i.d. +-1 noise on every pixel and channel."""
    noise = rng.choice(np.array([-1, 1]), size=image.shape)
    return np.clip(image.astype(int) + noise, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def synthetic_features():
    """Gray SPAM of 40 clean images, their +-1 noisy versions, and 40 other clean images."""
    rng = np.random.default_rng(1234)
    settings = FeatureSettings("spam", "gray")
    clean = [smooth_image(rng) for _ in range(40)]
    noisy = [plus_minus_one(rng, im) for im in clean]
    other = [smooth_image(rng) for _ in range(40)]

    def feats(images):
        return np.stack([extract_image(im, settings) for im in images])

    return feats(clean), feats(noisy), feats(other)


# --------------------------------------------------------------------------------------------
# Features
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"features": "lbp"}, "features must be one of spam, srm, srmq1, crm, got 'lbp'"),
        ({"color": "yuv"}, "color must be one of rgb, gray, got 'yuv'"),
        ({"features": "crm", "color": "gray"}, "color must be rgb for the crm features"),
    ],
)
def test_feature_settings_reject_bad_values(kwargs, message):
    with pytest.raises(ValueError, match=message):
        FeatureSettings(**kwargs)


def test_spam_shapes_and_dtypes():
    image = smooth_image(np.random.default_rng(0), 32)
    rgb = extract_image(image, FeatureSettings("spam", "rgb"))
    gray = extract_image(image, FeatureSettings("spam", "gray"))
    assert rgb.shape == (2058,)
    assert gray.shape == (686,)
    assert rgb.dtype == gray.dtype == np.float64
    # Each channel's SPAM has two sub-models that are each a probability distribution.
    np.testing.assert_allclose(rgb.reshape(3, 686).sum(axis=1), 2.0, rtol=1e-12)
    assert FeatureSettings("srm", "rgb").dim == 3 * 34671


def test_spam_agrees_with_sealwatch_and_stored_reference():
    image = data.load_image(SAMPLE)
    rgb = extract_image(image, FeatureSettings("spam", "rgb"))
    with sw.BACKEND_PYTHON:
        reference = np.concatenate(
            [sw.tools.flatten(sw.spam.extract(image[..., c])) for c in range(3)]
        )
    np.testing.assert_allclose(rgb, reference, rtol=1e-10, atol=1e-15)
    red = rgb[:686]
    np.testing.assert_allclose(red[SPAM_RED_INDEX], SPAM_RED_VALUES, rtol=1e-12)
    np.testing.assert_allclose(red.sum(), SPAM_RED_SUM, rtol=1e-12)
    np.testing.assert_allclose(np.linalg.norm(red), SPAM_RED_NORM, rtol=1e-12)
    # The channels are not interchangeable: G and B give other vectors.
    assert not np.allclose(rgb[:686], rgb[686:1372])


def test_gray_is_pillow_luminance_and_gray_images_repeat_channels():
    image = data.load_image(SAMPLE)[:64, :64]
    gray = extract_image(image, FeatureSettings("spam", "gray"))
    lum = np.asarray(Image.fromarray(image).convert("L"))
    np.testing.assert_array_equal(feat_module.luminance(image), lum)
    with sw.BACKEND_RUST:
        expected = sw.tools.flatten(sw.spam.extract(lum))
    np.testing.assert_allclose(gray, expected, rtol=0, atol=0)
    # A gray image stored as RGB: the rgb vector is the gray vector three times.
    tri = np.repeat(lum[..., None], 3, axis=2)
    np.testing.assert_array_equal(
        extract_image(tri, FeatureSettings("spam", "rgb")), np.tile(gray, 3)
    )


def test_srm_on_small_crop_agrees_with_sealwatch_and_reference():
    crop = data.load_image(SAMPLE)[:24, :24]
    vec = extract_image(crop, FeatureSettings("srm", "gray"))
    assert vec.shape == (34671,)
    assert vec.dtype == np.float32
    expected = sw.tools.flatten(sw.srm.extract(feat_module.luminance(crop)))
    np.testing.assert_array_equal(vec, expected)
    np.testing.assert_allclose(vec[:5], SRM_CROP_FIRST, rtol=1e-6)
    np.testing.assert_allclose(vec.sum(dtype=np.float64), SRM_CROP_SUM, rtol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(vec.astype(np.float64)), SRM_CROP_NORM, rtol=1e-6)


def test_srm_rgb_concatenates_channels():
    crop = data.load_image(SAMPLE)[:12, :12]
    vec = extract_image(crop, FeatureSettings("srm", "rgb"))
    assert vec.shape == (3 * 34671,)
    blue = sw.tools.flatten(sw.srm.extract(crop[..., 2]))
    np.testing.assert_array_equal(vec[2 * 34671 :], blue)


def test_feature_set_registry_documents_dimensions():
    dims = {name: FeatureSettings(name, "rgb").dim for name in feat_module.FEATURE_SETS}
    assert dims == {"spam": 2058, "srm": 104013, "srmq1": 38259, "crm": 5404}
    assert FeatureSettings("srmq1", "gray").dim == 12753
    assert FeatureSettings("crm").channels == 1  # one vector of the colour image
    assert FeatureSettings("crm").describe()["title"] == "CRMQ1-5404"


def test_crm_agrees_with_sealwatch_and_stored_reference():
    image = gradient_image()
    vec = extract_image(image, FeatureSettings("crm", "rgb"))
    assert vec.shape == (5404,)
    assert vec.dtype == np.float32
    np.testing.assert_array_equal(vec, sw.tools.flatten(sw.srm.crm.extract(image, Tc=3)))
    np.testing.assert_allclose(vec[:5], CRM_FIRST, rtol=1e-6)
    np.testing.assert_allclose(vec.sum(dtype=np.float64), CRM_SUM, rtol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(vec.astype(np.float64)), CRM_NORM, rtol=1e-6)
    # A colour model: swapping two channels changes the vector (per-channel models would not
    # change beyond a permutation of blocks).
    assert not np.array_equal(extract_image(image[..., ::-1].copy(), FeatureSettings("crm")), vec)


def test_srmq1_agrees_with_sealwatch_reference_and_srm():
    image = gradient_image()
    vec = extract_image(image, FeatureSettings("srmq1", "rgb"))
    assert vec.shape == (3 * 12753,)
    assert vec.dtype == np.float32
    green = sw.tools.flatten(sw.srm.srmq1.extract(image[..., 1]))
    np.testing.assert_array_equal(vec[12753 : 2 * 12753], green)
    np.testing.assert_allclose(vec[:5], SRMQ1_FIRST, rtol=1e-6)
    np.testing.assert_allclose(vec.sum(dtype=np.float64), SRMQ1_SUM, rtol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(vec.astype(np.float64)), SRMQ1_NORM, rtol=1e-6)
    gray = extract_image(image, FeatureSettings("srmq1", "gray"))
    np.testing.assert_allclose(gray.sum(dtype=np.float64), SRMQ1_GRAY_SUM, rtol=1e-6)
    # SRMQ1 is the q = 1 part of the SRM: the same sub-models with the same values.
    q1 = sw.srm.srmq1.extract(image[..., 0])
    full = sw.srm.extract(image[..., 0])
    for name, sub in q1.items():
        np.testing.assert_array_equal(sub, full[name])


@pytest.mark.parametrize("direction", ["hor", "ver", "diag", "mdiag", "square"])
@pytest.mark.parametrize("dtype", [np.int64, np.float32, np.float64])
def test_fast_cooccurrence_equals_sealwatch(direction, dtype):
    from sealwatch.srm.cooccurrence import cooccurrence4 as reference

    from sai_attack.detection.rich_models import cooccurrence4

    rng = np.random.default_rng(3)
    residual = rng.integers(-4, 5, size=(17, 21)).astype(dtype)  # values outside [-2, 2] too
    if dtype != np.int64:
        residual[0, :6] += 0.5  # non-integers: sealwatch never counts them
    for T in (1, 2):
        expected = reference(residual, direction, T)
        got = cooccurrence4(residual, direction, T)
        assert got.dtype == expected.dtype
        assert got.shape == (2 * T + 1,) * 4
        np.testing.assert_array_equal(got, expected)
    with pytest.raises(NotImplementedError, match="type spiral not implemented"):
        cooccurrence4(residual, "spiral", 2)


@pytest.mark.parametrize("dtype", [np.int64, np.float32])
def test_fast_colour_cooccurrence_equals_sealwatch(dtype):
    from sealwatch.srm import crm as crm_module
    from sealwatch.srm.cooccurrence import cooccurrence3_col as reference

    from sai_attack.detection import rich_models

    rng = np.random.default_rng(4)
    residual = rng.integers(-5, 6, size=(13, 11, 3)).astype(dtype)
    if dtype != np.int64:
        residual[2, :4, 1] -= 0.25
    for T in (2, 3):
        expected = reference(residual, "col", T)
        np.testing.assert_array_equal(rich_models.cooccurrence3_col(residual, "col", T), expected)
    # The CRM call substitutes its count only while it runs, also when it fails.
    with pytest.raises(IndexError):  # a 2-D "colour" image
        rich_models.crm(np.zeros((4, 4), np.float32))
    assert crm_module.Cooc3 is reference


def test_fast_rich_models_are_bit_identical_to_sealwatch_on_a_textured_image():
    rng = np.random.default_rng(5)
    smooth = zoom(rng.uniform(0, 255, (6, 6)), 8, order=1)[:40, :44]
    channel = np.clip(smooth + rng.normal(0, 6, smooth.shape), 0, 255).astype(np.uint8)
    vec = extract_image(np.dstack([channel] * 3), FeatureSettings("srmq1", "rgb"))
    np.testing.assert_array_equal(vec[:12753], sw.tools.flatten(sw.srm.srmq1.extract(channel)))
    full = feat_module.srm_features(channel)
    np.testing.assert_array_equal(full, sw.tools.flatten(sw.srm.extract(channel)))
    rgb = np.dstack([channel, channel[::-1], channel[:, ::-1]])
    colour = feat_module.crm_features(rgb)
    np.testing.assert_array_equal(colour, sw.tools.flatten(sw.srm.crm.extract(rgb, q=1, Tc=3)))


def test_tiny_or_malformed_images_are_rejected():
    with pytest.raises(
        ValueError, match="image is 7x9 pixels; steganalysis features need at least"
    ):
        extract_image(np.zeros((9, 7, 3), np.uint8), FeatureSettings())
    with pytest.raises(ValueError, match="expected an"):
        extract_image(np.zeros((16, 16), np.uint8), FeatureSettings())


def _write_images(folder: Path, n: int, seed: int = 0, size: int = 32) -> list[Path]:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        path = folder / f"im{i:02d}.png"
        data.save_png(path, smooth_image(rng, size))
        paths.append(path)
    return paths


def test_cache_hits_do_not_recompute(tmp_path, monkeypatch):
    paths = _write_images(tmp_path / "imgs", 4)
    calls = []
    real = feat_module.extract_image

    def counting(image, settings):
        calls.append(settings)
        return real(image, settings)

    monkeypatch.setattr(feat_module, "extract_image", counting)
    cache = FeatureCache(tmp_path / "cache")
    settings = FeatureSettings("spam", "rgb")
    first, s1 = extract_files(paths, settings, cache=cache)
    assert (len(calls), s1.computed, s1.cached) == (4, 4, 0)
    second, s2 = extract_files(paths, settings, cache=cache)
    assert (len(calls), s2.computed, s2.cached) == (4, 0, 4)
    np.testing.assert_array_equal(first, second)
    # Keyed by content: a copy under another name is a hit.
    copy = tmp_path / "copy.png"
    shutil.copy(paths[0], copy)
    third, s3 = extract_files([copy], settings, cache=cache)
    assert (len(calls), s3.cached) == (4, 1)
    np.testing.assert_array_equal(third[0], first[0])
    # Keyed by settings: gray is computed anew.
    extract_files(paths[:1], FeatureSettings("spam", "gray"), cache=cache)
    assert len(calls) == 5
    # Stored where documented, as plain .npy files.
    digest = hashlib.sha256(paths[1].read_bytes()).hexdigest()
    stored = cache.path(digest, settings)
    assert stored == tmp_path / "cache" / "features" / settings.key() / digest[:2] / f"{digest}.npy"
    np.testing.assert_array_equal(np.load(stored, allow_pickle=False), first[1])
    # A damaged entry is recomputed (and rewritten).
    stored.write_bytes(b"garbage")
    again, s4 = extract_files(paths[1:2], settings, cache=cache)
    assert (s4.computed, len(calls)) == (1, 6)
    np.testing.assert_array_equal(again[0], first[1])
    # No cache: always computed.
    extract_files(paths[:2], settings, cache=None)
    assert len(calls) == 8


def _npy(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=True)
    return buf.getvalue()


def _huge_header() -> bytes:
    """A valid .npy header claiming 10^12 float64 values, and no data."""
    buf = io.BytesIO()
    header = {"descr": "<f8", "fortran_order": False, "shape": (10**12,)}
    np.lib.format.write_array_header_1_0(buf, header)
    return np.lib.format.magic(1, 0) + buf.getvalue()


def _zip() -> bytes:
    buf = io.BytesIO()
    np.savez(buf, a=np.zeros(686))
    return buf.getvalue()


POISONS = {
    "nan": lambda v: _npy(np.where(np.arange(v.size) == 3, np.nan, v)),
    "inf": lambda v: _npy(np.full_like(v, np.inf)),
    "all nan": lambda v: _npy(np.full_like(v, np.nan)),
    "short vector": lambda v: _npy(v[:-1]),
    "2-d": lambda v: _npy(v.reshape(2, -1)),
    "float32": lambda v: _npy(v.astype(np.float32)),
    "big-endian": lambda v: _npy(v.astype(">f8")),
    "object array": lambda v: _npy(np.array([{"x": 1}], dtype=object)),
    "truncated": lambda v: _npy(v)[:-8],
    "extra bytes": lambda v: _npy(v) + b"\0" * 8,
    "huge header": lambda v: _huge_header(),
    "npz": lambda v: _zip(),
    "empty": lambda v: b"",
    "garbage": lambda v: b"\x93NUMPY garbage",
}


@pytest.mark.parametrize("poison", sorted(POISONS))
def test_poisoned_cache_entry_is_logged_and_recomputed(tmp_path, poison, caplog):
    paths = _write_images(tmp_path / "imgs", 2, size=16)
    settings = FeatureSettings("spam", "gray")
    cache = FeatureCache(tmp_path / "cache")
    good, _ = extract_files(paths, settings, cache=cache)
    digest = hashlib.sha256(paths[0].read_bytes()).hexdigest()
    entry = cache.path(digest, settings)
    entry.write_bytes(POISONS[poison](good[0]))
    with caplog.at_level("WARNING", logger="sai_attack.detection"):
        again, stats = extract_files(paths, settings, cache=cache)
    np.testing.assert_array_equal(again, good)
    assert (stats.rejected, stats.computed, stats.cached) == (1, 1, 1)
    assert f"recomputing cached features {entry}" in caplog.text
    # Rewritten: the next call reads it back.
    _, stats = extract_files(paths, settings, cache=cache)
    assert (stats.rejected, stats.cached) == (0, 2)
    np.testing.assert_array_equal(np.load(entry, allow_pickle=False), good[0])


def test_unreadable_cache_entry_is_recomputed(tmp_path, caplog):
    paths = _write_images(tmp_path / "imgs", 1, size=16)
    settings = FeatureSettings("spam", "gray")
    cache = FeatureCache(tmp_path / "cache")
    digest = hashlib.sha256(paths[0].read_bytes()).hexdigest()
    cache.path(digest, settings).mkdir(parents=True)  # a folder where the file should be
    with caplog.at_level("WARNING", logger="sai_attack.detection"):
        vec, stats = extract_files(paths, settings, cache=cache)
    assert (stats.rejected, stats.computed) == (1, 1)
    assert "cannot read it" in caplog.text
    np.testing.assert_array_equal(vec[0], extract_files(paths, settings)[0][0])


def test_non_finite_vectors_are_never_cached(tmp_path):
    cache = FeatureCache(tmp_path / "cache")
    settings = FeatureSettings("spam", "gray")
    cache.put("ab" * 32, settings, np.full(686, np.nan))
    assert not cache.path("ab" * 32, settings).exists()
    assert cache.lookup("ab" * 32, settings) == (None, False)


def test_detect_recovers_from_a_nan_poisoned_cache(tiny_runs, tmp_path):
    run = read_run(tiny_runs["ifgm-d8"])
    options = DetectionOptions(classifier="logreg", splits=2, cache_dir=tmp_path / "cache")
    (first,), _ = detect_runs([run], options)
    settings = options.settings
    for item in run.items:  # every clean vector of the run becomes NaN
        digest = hashlib.sha256(item.clean.read_bytes()).hexdigest()
        cache_file = options.cache().path(digest, settings)
        cache_file.write_bytes(_npy(np.full(settings.dim, np.nan)))
    (again,), _ = detect_runs([run], options)
    assert again.extraction.rejected == len(run)
    assert again.result.accuracy == first.result.accuracy
    assert again.result.auc == first.result.auc


def test_cache_writes_go_through_atomic_write(tmp_path, monkeypatch):
    paths = _write_images(tmp_path / "imgs", 2)
    written = []
    real = data.atomic_write_bytes

    def recording(path, payload):
        written.append(Path(path))
        real(path, payload)

    monkeypatch.setattr(feat_module.data, "atomic_write_bytes", recording)
    extract_files(paths, FeatureSettings(), cache=FeatureCache(tmp_path / "c"))
    assert len(written) == 2
    assert all(p.suffix == ".npy" and p.is_file() for p in written)


def test_default_cache_dir_follows_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("SAI_ATTACK_CACHE", str(tmp_path / "explicit"))
    assert feat_module.default_cache_dir() == tmp_path / "explicit"
    monkeypatch.delenv("SAI_ATTACK_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert feat_module.default_cache_dir() == tmp_path / "xdg" / "sai-attack"


def test_worker_processes_give_the_serial_result(tmp_path, monkeypatch):
    paths = _write_images(tmp_path / "imgs", 6)
    monkeypatch.setitem(feat_module._MIN_PARALLEL, "spam", 2)
    settings = FeatureSettings("spam", "rgb")
    serial, _ = extract_files(paths, settings, workers=0)
    with FeatureExtractor(settings, workers=2, cache=FeatureCache(tmp_path / "c")) as fx:
        parallel, stats = fx.extract(paths)
        assert fx._pool is not None  # really ran in workers
        cached, stats2 = fx.extract(paths)
    np.testing.assert_array_equal(parallel, serial)
    np.testing.assert_array_equal(cached, serial)
    assert (stats.computed, stats2.cached) == (6, 6)


def test_unreadable_file_names_the_file(tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    with pytest.raises(data.ImageLoadError, match=r"bad\.png: not a recognised image format"):
        extract_files([bad], FeatureSettings())


# --------------------------------------------------------------------------------------------
# Protocol
# --------------------------------------------------------------------------------------------


def test_pair_split_is_a_seeded_partition():
    train, test = pair_split(10, 0.5, seed=3, split=0)
    assert len(train) == 5
    assert len(test) == 5
    assert sorted([*train, *test]) == list(range(10))
    again = pair_split(10, 0.5, seed=3, split=0)
    np.testing.assert_array_equal(train, again[0])
    assert not np.array_equal(train, pair_split(10, 0.5, seed=3, split=1)[0])
    assert len(pair_split(10, 0.8, 0, 0)[0]) == 8
    assert len(pair_split(4, 0.01, 0, 0)[0]) == 2  # at least 2 training pairs
    assert len(pair_split(4, 0.99, 0, 0)[1]) == 1  # at least 1 test pair
    with pytest.raises(ValueError, match="need at least 4 clean/adversarial pairs, got 3"):
        pair_split(3, 0.5, 0, 0)
    with pytest.raises(ValueError, match="train_fraction must lie strictly between 0 and 1"):
        pair_split(10, 1.0, 0, 0)


class _RecordingDetector(clf_module.Detector):
    """Remembers which pair ids (column 0) it trained and predicted on."""

    name = "recording"
    log: ClassVar[list] = []

    def fit(self, clean, adversarial, seed=0):
        self.dim = clean.shape[1]
        self.log.append(("fit", clean[:, 0].copy(), adversarial[:, 0].copy()))
        return self

    def decision_function(self, features):
        self.log.append(("predict", features[:, 0].copy()))
        return np.where(features[:, 1] > 0, 1.0, -1.0)


def test_evaluate_pairs_keeps_pairs_on_one_side(monkeypatch):
    monkeypatch.setitem(clf_module.CLASSIFIERS, "recording", _RecordingDetector)
    _RecordingDetector.log = []
    n = 12
    ids = np.arange(n, dtype=float)
    clean = np.stack([ids, -np.ones(n)], axis=1)  # column 1 < 0: a perfect detector says clean
    adversarial = np.stack([ids, np.ones(n)], axis=1)
    result = evaluate_pairs(clean, adversarial, "recording", splits=3, seed=5)
    fits = [e for e in _RecordingDetector.log if e[0] == "fit"]
    predicts = [e[1] for e in _RecordingDetector.log if e[0] == "predict"]
    assert len(fits) == 3
    for k, (_, c_ids, a_ids) in enumerate(fits):
        np.testing.assert_array_equal(c_ids, a_ids)  # same pairs on the training side
        test_clean, test_adv = predicts[2 * k], predicts[2 * k + 1]
        np.testing.assert_array_equal(test_clean, test_adv)
        assert not set(c_ids) & set(test_clean)  # no pair on both sides
        assert sorted([*c_ids, *test_clean]) == list(range(n))
    assert result.accuracy == 1.0
    assert result.p_fa == 0.0
    assert result.p_md == 0.0
    assert result.std == 0.0
    assert (result.n_train, result.n_test) == (6, 6)


def test_error_rates_and_accuracy_definition(monkeypatch):
    # A detector that flags everything: P_FA = 1, P_MD = 0, accuracy = 0.5.
    monkeypatch.setitem(clf_module.CLASSIFIERS, "recording", _RecordingDetector)
    clean = np.stack([np.arange(8.0), np.ones(8)], axis=1)
    result = evaluate_pairs(clean, clean.copy(), "recording", splits=2)
    assert (result.p_fa, result.p_md, result.accuracy) == (1.0, 0.0, 0.5)
    with pytest.raises(ValueError, match="^splits must be an integer >= 1, got 0"):
        evaluate_pairs(clean, clean, "recording", splits=0)
    with pytest.raises(ValueError, match="^classifier must be one of fld, logreg"):
        evaluate_pairs(clean, clean, "svm")
    with pytest.raises(ValueError, match="same shape"):
        evaluate_pairs(clean, clean[:5], "recording")


def test_roc_metrics_on_known_scores():
    from sklearn.metrics import roc_auc_score

    clean = np.array([-3.0, -2.0, -1.0, 0.5])
    adversarial = np.array([-0.5, 1.0, 2.0, 3.0])
    auc, tpr_at, fpr, tpr = roc_metrics(clean, adversarial)
    # 15 of the 16 (clean, adversarial) pairs are ordered correctly.
    assert auc == 15 / 16
    assert auc == roc_auc_score([0] * 4 + [1] * 4, np.concatenate([clean, adversarial]))
    # With 4 clean images no threshold has 0 < FPR <= 5%: the best at FPR 0 flags 1, 2, 3.
    assert tpr_at == 0.75
    assert (fpr[0], tpr[0], fpr[-1], tpr[-1]) == (0.0, 0.0, 1.0, 1.0)
    # 40 clean images: one false alarm (2.5%) is allowed, two (5%) too, three are not.
    clean = -np.arange(40.0)
    adversarial = np.array([0.5, -0.5, -1.5, -2.5])  # above 0, 1, 2, 3 clean scores
    assert roc_metrics(clean, adversarial)[1] == 0.75
    with pytest.raises(ValueError, match="scores_clean must be a non-empty array"):
        roc_metrics(np.array([np.nan]), adversarial)


def test_split_metrics_auc_and_tpr(monkeypatch):
    monkeypatch.setitem(clf_module.CLASSIFIERS, "recording", _RecordingDetector)
    n = 12
    ids = np.arange(n, dtype=float)
    clean = np.stack([ids, -np.ones(n)], axis=1)
    adversarial = np.stack([ids, np.ones(n)], axis=1)
    result = evaluate_pairs(clean, adversarial, "recording", splits=3, seed=5)
    assert (result.auc, result.tpr_at_fpr, result.auc_std) == (1.0, 1.0, 0.0)
    assert len(result.detectors) == 3
    fpr, tpr = result.mean_roc()
    assert (fpr[0], tpr[0], tpr[1], tpr[-1]) == (0.0, 0.0, 1.0, 1.0)
    record = result.describe()
    assert (record["auc"], record["tpr_at_fpr"], record["fpr_target"]) == (1.0, 1.0, 0.05)
    assert record["splits"][0]["roc_fpr"][0] == 0.0
    json.dumps(record, allow_nan=False)  # JSON-ready
    # A detector that flags everything: chance AUC.
    same = evaluate_pairs(clean, clean.copy(), "recording", splits=2)
    assert same.auc == 0.5


# --------------------------------------------------------------------------------------------
# Detectors: known answers
# --------------------------------------------------------------------------------------------


def test_fld_detects_strong_pm1_noise(synthetic_features):
    clean, noisy, _ = synthetic_features
    result = evaluate_pairs(clean, noisy, "fld", splits=2, seed=0)
    assert result.accuracy > 0.9
    assert result.p_fa < 0.15
    assert result.p_md < 0.15
    for s in result.splits:
        assert s.detector["L"] >= 1
        assert s.detector["d_sub"] >= 1


def test_clean_vs_clean_is_chance(synthetic_features):
    clean, _, other = synthetic_features
    fld = evaluate_pairs(
        clean, other, "fld", splits=3, seed=0, classifier_options={"L": 31, "d_sub": 100}
    )
    logreg = evaluate_pairs(clean, other, "logreg", splits=3, seed=0)
    assert abs(fld.accuracy - 0.5) < 0.15
    assert abs(logreg.accuracy - 0.5) < 0.15
    noisy_lr = evaluate_pairs(clean, synthetic_features[1], "logreg", splits=3, seed=0)
    assert noisy_lr.accuracy > 0.9


def test_splits_trained_in_worker_processes_give_the_serial_result(synthetic_features):
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    clean, noisy, _ = synthetic_features
    options = {"L": 15, "d_sub": 50}
    serial = evaluate_pairs(clean, noisy, "fld", splits=3, seed=4, classifier_options=options)
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(2, mp_context=ctx) as pool:
        parallel = evaluate_pairs(
            clean, noisy, "fld", splits=3, seed=4, classifier_options=options, executor=pool
        )
    strip = [{**asdict(s), "seconds": 0} for s in serial.splits]
    assert [{**asdict(s), "seconds": 0} for s in parallel.splits] == strip


def test_fld_predictions_agree_with_sealwatch(synthetic_features):
    clean, noisy, other = synthetic_features
    # Few, even L makes voting ties likely; ties must be broken exactly as sealwatch does.
    det = FLDEnsemble(L=6, d_sub=40).fit(clean[:20], noisy[:20], seed=7)
    ensemble, kept = det._sealwatch
    x = np.concatenate([clean[20:], noisy[20:], other])
    expected = ensemble.predict(x[:, kept])
    np.testing.assert_array_equal(2 * det.predict(x) - 1, expected)
    votes = det.votes(x)
    assert (votes == 0).any(), "the test should exercise ties"
    assert det.num_learners == 6
    assert det.d_sub == 40
    assert det.subspaces.max() < clean.shape[1]


def test_fld_drops_constant_columns_only(synthetic_features):
    clean, noisy, _ = synthetic_features
    const = np.zeros((40, 5))
    det = FLDEnsemble(L=5, d_sub=20).fit(
        np.hstack([const, clean])[:16], np.hstack([const, noisy])[:16], seed=1
    )
    assert det.dim == 686 + 5
    assert det.subspaces.min() >= 5  # the five constant columns are never used


def test_logreg_agrees_with_sklearn(synthetic_features):
    clean, noisy, other = synthetic_features
    det = LogisticDetector().fit(clean[:20], noisy[:20])
    scaler, model = det._sklearn
    x = np.concatenate([clean[20:], noisy[20:], other])
    np.testing.assert_array_equal(det.predict(x), model.predict(scaler.transform(x)))
    np.testing.assert_allclose(
        det.decision_function(x), model.decision_function(scaler.transform(x)), rtol=1e-9
    )


@pytest.mark.parametrize("name", ["fld", "logreg"])
def test_saved_detector_reloads_with_identical_predictions(tmp_path, synthetic_features, name):
    clean, noisy, other = synthetic_features
    det = (FLDEnsemble(L=9, d_sub=50) if name == "fld" else LogisticDetector()).fit(
        clean[:20], noisy[:20], seed=3
    )
    settings = FeatureSettings("spam", "gray")
    json_path, npz_path = save_detector(tmp_path / "det", det, settings, {"run": "r"})
    assert json_path.name == "det.json"
    assert npz_path.name == "det.npz"
    loaded, loaded_settings, info = load_detector(json_path)
    x = np.concatenate([clean, noisy, other])
    np.testing.assert_array_equal(loaded.predict(x), det.predict(x))
    np.testing.assert_array_equal(loaded.decision_function(x), det.decision_function(x))
    assert loaded_settings == settings
    assert info == {"run": "r"}
    record = json.loads(json_path.read_text())
    assert record["classifier"] == name
    assert record["features"]["dim"] == 686
    # The arrays are plain numeric arrays, readable without pickle.
    with np.load(npz_path, allow_pickle=False) as npz:
        assert all(npz[k].dtype.kind in "iuf" for k in npz.files)


def test_load_detector_refuses_tampered_or_pickled_files(tmp_path, synthetic_features):
    clean, noisy, _ = synthetic_features
    det = LogisticDetector().fit(clean[:10], noisy[:10])
    json_path, npz_path = save_detector(tmp_path / "d.json", det, FeatureSettings("spam", "gray"))
    original = npz_path.read_bytes()
    # An object array (which would need pickle) in place of the arrays.
    np.savez(npz_path, mean=np.array([{"x": 1}], dtype=object), scale=det.scale, coef=det.coef)
    with pytest.raises(ValueError, match="sha256 differs"):
        load_detector(json_path)
    record = json.loads(json_path.read_text())
    record["arrays"]["sha256"] = hashlib.sha256(npz_path.read_bytes()).hexdigest()
    json_path.write_text(json.dumps(record))
    with pytest.raises(ValueError, match="not a valid npz file|non-numeric"):
        load_detector(json_path)
    npz_path.write_bytes(original)
    record["arrays"]["file"] = "../elsewhere.npz"
    json_path.write_text(json.dumps(record))
    with pytest.raises(ValueError, match="bad arrays file name"):
        load_detector(json_path)
    json_path.write_text('{"format": "something else"}')
    with pytest.raises(ValueError, match="is not a saved detector"):
        load_detector(json_path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_detector(tmp_path / "missing.json")


# --------------------------------------------------------------------------------------------
# Run folders and the CLI
# --------------------------------------------------------------------------------------------


def _input_folder(root: Path, n: int) -> Path:
    folder = root / "in"
    rng = np.random.default_rng(99)
    folder.mkdir(parents=True)
    for i in range(n):
        data.save_png(folder / f"img{i:02d}.png", smooth_image(rng, 32))
    return folder


@pytest.fixture(scope="module")
def tiny_runs(tmp_path_factory):
    """Two real run folders (tiny model, 32 x 32): I-FGM and SAI-FGM (with templates)."""
    root = tmp_path_factory.mktemp("runs")
    inputs = _input_folder(root, 12)
    model = make_tiny_model()
    runs = {}
    for name, method in [("ifgm-d8", "ifgm"), ("sai-d8", "sai-fgm")]:
        cfg = AttackConfig(method=method, model="tiny", delta=8, image_size=32, steps=3)
        opts = RunOptions(workers=0, batch_size=12, save_templates=True)
        AttackRun(inputs, root / name, cfg, opts, model=model).run()
        runs[name] = root / name
    return runs


def test_read_run_pairs_by_output_and_skips_bad_rows(tiny_runs, tmp_path):
    run_dir = tmp_path / "copy"
    shutil.copytree(tiny_runs["sai-d8"], run_dir)
    rows = list(csv.DictReader((run_dir / "results.csv").open()))
    rows[0]["status"] = "skipped: broken"
    (run_dir / rows[1]["output"]).unlink()
    with (run_dir / "results.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    run = read_run(run_dir, require_items=False)
    assert len(run) == 10
    assert run.method == "sai-fgm"
    assert run.delta == 8
    assert merge_beta(run) == 0
    assert superpixel_algorithm(run) == "slic"
    assert run_label(run) == "SAI-FGM (β=0)"
    for item in run.items:
        assert item.clean == run_dir / "clean" / f"{item.stem}.png"
        assert item.adversarial == run_dir / "images" / f"{item.stem}.png"
    assert rows[0]["output"] not in {f"images/{it.stem}.png" for it in run.items}


@pytest.mark.parametrize(
    ("method", "parameters", "label"),
    [
        ("ifgm", {"merge_beta": 2.0, "superpixel": "lsc"}, "I-FGM"),
        ("sai-fgm", {"merge_beta": 2.0, "superpixel": "slic"}, "SAI-FGM (β=2)"),
        ("sai-fgm", {"merge_beta": 0.0, "superpixel": "lsc"}, "SAI-FGM (LSC, β=0)"),
        ("m-sai-fgm", {"superpixel": "seeds"}, "M-SAI-FGM (SEEDS)"),
        ("", {}, "folder"),
    ],
)
def test_run_label_names_the_superpixel_settings_of_superpixel_methods(method, parameters, label):
    run = Run(Path("folder"), "folder", RunRecord(method=method, parameters=parameters))
    assert run_label(run) == label
    if method == "ifgm":
        assert (merge_beta(run), superpixel_algorithm(run)) == (None, None)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"seed": -1}, "^seed must be an integer in"),
        ({"workers": -1}, "^workers must be an integer >= 0, got -1"),
        ({"splits": 0}, "^splits must be an integer >= 1, got 0"),
        ({"train_fraction": 0.0}, "^train_fraction must lie strictly between 0 and 1, got 0.0"),
    ],
)
def test_detection_options_name_the_bad_parameter(kwargs, message):
    with pytest.raises(ValueError, match=message):
        DetectionOptions(**kwargs)


def test_cli_detect_writes_table2_outputs(tiny_runs, tmp_path, capsys):
    out = tmp_path / "det"
    runs = [str(tiny_runs["ifgm-d8"]), str(tiny_runs["sai-d8"])]
    code = main(
        ["detect", *runs, "--out", str(out), "--classifier", "logreg", "--splits", "3",
         "--workers", "0", "--cache-dir", str(tmp_path / "cache"),
         "--save-model", str(tmp_path / "models")]
    )  # fmt: skip
    assert code == 0
    printed = capsys.readouterr().out
    assert "| Generation method | δ = 8 |" in printed
    rows = list(csv.DictReader((out / "detection.csv").open()))
    assert [r["run"] for r in rows] == ["ifgm-d8", "sai-d8"]
    assert list(rows[0])[:11] == [
        "run", "method", "delta", "delta_eff", "features", "n_train", "n_test", "accuracy",
        "std", "p_fa", "p_md",
    ]  # fmt: skip
    for r in rows:
        assert (r["delta"], r["features"], r["n_train"], r["n_test"]) == ("8", "spam", "6", "6")
        acc, p_fa, p_md = float(r["accuracy"]), float(r["p_fa"]), float(r["p_md"])
        assert acc == pytest.approx(1 - (p_fa + p_md) / 2, abs=1e-4)
        assert float(r["delta_eff"]) > 0
    md = (out / "detection.md").read_text()
    lines = md.splitlines()
    header = lines.index("| Generation method | δ = 8 |")
    assert lines[header + 2].startswith("| I-FGM | ")
    assert lines[header + 3].startswith("| SAI-FGM (β=0) | ")
    assert "pairs of the same image stay on the same side" in md
    assert "## Feature sets side by side" in md
    assert (out / "roc.png").is_file()
    assert len(list(csv.DictReader((out / "cross_attack.csv").open()))) == 4
    record = json.loads((out / "detection.json").read_text())
    assert record["settings"]["classifier"] == "logreg"
    assert record["settings"]["dim"] == 2058
    assert len(record["runs"][0]["detection"]["splits"]) == 3
    assert record["feature_extraction"]["images"] == 48
    # Clean images are identical across the two runs: the second run reads them from the cache.
    assert record["runs"][1]["features"]["cached"] == 12
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == [
        "ifgm-d8.json", "ifgm-d8.npz", "sai-d8.json", "sai-d8.npz",
    ]  # fmt: skip

    # Apply the saved I-FGM detector to the SAI run and to a plain image folder.
    applied = tmp_path / "applied"
    code = main(
        ["detect", runs[1], str(tiny_runs["sai-d8"] / "clean"), "--out", str(applied),
         "--apply", str(tmp_path / "models" / "ifgm-d8.json"), "--workers", "0", "--no-cache"]
    )  # fmt: skip
    assert code == 0
    preds = list(csv.DictReader((applied / "predictions.csv").open()))
    assert len(preds) == 12 * 2 + 12
    assert {p["kind"] for p in preds} == {"clean", "adversarial", "unknown"}
    assert all(
        p["predicted"] == ("adversarial" if float(p["score"]) > 0 else "clean") for p in preds
    )
    summary = json.loads((applied / "detection.json").read_text())
    assert summary["folders"][0]["is_run"]
    assert not summary["folders"][1]["is_run"]
    assert summary["model_info"]["run"] == "ifgm-d8"


def test_cli_detect_fld_default_on_tiny_run(tiny_runs, tmp_path):
    out = tmp_path / "fld"
    code = main(
        ["detect", str(tiny_runs["ifgm-d8"]), "--out", str(out), "--splits", "1",
         "--color", "gray", "--workers", "0", "--no-cache"]
    )  # fmt: skip
    assert code == 0
    row = next(csv.DictReader((out / "detection.csv").open()))
    assert (row["classifier"], row["color"], row["std"]) == ("fld", "gray", "")
    split = json.loads((out / "detection.json").read_text())["runs"][0]["detection"]["splits"][0]
    assert split["detector"]["L"] >= 1


def test_cli_detect_skips_runs_with_too_few_pairs(tiny_runs, tmp_path, capsys):
    small = tmp_path / "small"
    shutil.copytree(tiny_runs["ifgm-d8"], small)
    lines = (small / "results.csv").read_text().splitlines(keepends=True)
    (small / "results.csv").write_text("".join(lines[:4]))
    code = main(
        ["detect", str(small), str(tiny_runs["ifgm-d8"]), "--out", str(tmp_path / "o"),
         "--classifier", "logreg", "--splits", "1", "--workers", "0", "--no-cache"]
    )  # fmt: skip
    assert code == 3
    assert "skipped small: only 3 clean/adversarial pairs (need 4)" in capsys.readouterr().out
    assert "## Skipped" in (tmp_path / "o" / "detection.md").read_text()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--splits", "0"], "splits must be an integer >= 1, got 0"),
        (["--train-fraction", "1"], "train_fraction must lie strictly between 0 and 1, got 1\n"),
        (["--train-fraction", "x"], "train_fraction must be a number, got 'x'"),
        (["--workers", "-1"], "workers must be an integer >= 0, got -1"),
        (["--features", "lbp"], "invalid choice: 'lbp'"),
        (["--classifier", "svm"], "invalid choice: 'svm'"),
    ],
)
def test_cli_detect_bad_options_exit_2(tmp_path, capsys, args, message):
    with pytest.raises(SystemExit) as exc:
        main(["detect", str(tmp_path), "--out", str(tmp_path / "o"), *args])
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_cli_detect_not_a_run_folder_exit_2(tmp_path, capsys):
    assert main(["detect", str(tmp_path), "--out", str(tmp_path / "o"), "--no-cache"]) == 2
    assert "is not a run folder: results.csv is missing" in capsys.readouterr().err


# --------------------------------------------------------------------------------------------
# Several feature sets and the cross-attack matrix
# --------------------------------------------------------------------------------------------


def test_detection_options_take_several_feature_sets():
    options = DetectionOptions(features=["crm", "spam", "crm"])
    assert options.features == ("crm", "spam")
    assert [s.dim for s in options.feature_settings] == [5404, 2058]
    assert options.settings == FeatureSettings("crm")
    assert DetectionOptions().features == ("spam",)
    with pytest.raises(ValueError, match="^features must name at least one feature set"):
        DetectionOptions(features=[])
    with pytest.raises(ValueError, match="^color must be rgb for the crm features"):
        DetectionOptions(features=["spam", "crm"], color="gray")


def test_cross_attack_keeps_the_image_split_and_reuses_protocol_detectors(tiny_runs, monkeypatch):
    """Pair ids in column 0: no test image of the tested run was a training image."""
    monkeypatch.setitem(clf_module.CLASSIFIERS, "recording", _RecordingDetector)
    full = read_run(tiny_runs["ifgm-d8"])
    stems = sorted(it.stem for it in full.items)
    part = read_run(tiny_runs["sai-d8"]).subset(set(stems[2:]))  # 10 of the 12 images
    ids = {stem: float(i) for i, stem in enumerate(stems)}

    def features(run):
        col = np.array([ids[it.stem] for it in run.items])
        return (np.stack([col, -np.ones_like(col)], 1), np.stack([col, np.ones_like(col)], 1))

    runs = [full, part]
    results = [evaluate_pairs(*features(r), "recording", splits=2, seed=3) for r in runs]
    _RecordingDetector.log = []
    cells = cross_attack(runs, results, features, FeatureSettings(), "recording", seed=3)
    assert [(c.train.name, c.test.name, c.pairs, c.reused) for c in cells] == [
        ("ifgm-d8", "ifgm-d8", 12, True), ("ifgm-d8", "sai-d8", 10, False),
        ("sai-d8", "ifgm-d8", 10, True), ("sai-d8", "sai-d8", 10, True),
    ]  # fmt: skip
    # The diagonal is the protocol's own result.
    assert [asdict(s) | {"seconds": 0} for s in cells[0].result.splits] == [
        asdict(s) | {"seconds": 0} for s in results[0].splits
    ]
    # Trained anew only where the common images are not all of the training run's.
    fits = [e for e in _RecordingDetector.log if e[0] == "fit"]
    predicts = [e[1] for e in _RecordingDetector.log if e[0] == "predict"]
    assert len(fits) == 2
    common = {ids[s] for s in stems[2:]}
    for k, (_, trained, _) in enumerate(fits):
        tested = predicts[2 * 2 + 2 * k]  # after the 2 splits of the reused diagonal cell
        assert set(trained) <= common
        assert set(tested) <= common
        assert not set(trained) & set(tested)
        assert set(trained) | set(tested) == common
    assert all(c.result.accuracy == 1.0 and c.result.auc == 1.0 for c in cells)


def test_run_detection_several_feature_sets_and_cross_matrix(tiny_runs, tmp_path):
    runs = [read_run(tiny_runs["ifgm-d8"]), read_run(tiny_runs["sai-d8"])]
    options = DetectionOptions(features=["spam", "crm"], classifier="logreg", splits=2)
    outcome = run_detection(runs, options)
    assert [(r.settings.features, r.run.name) for r in outcome.results] == [
        ("spam", "ifgm-d8"), ("spam", "sai-d8"), ("crm", "ifgm-d8"), ("crm", "sai-d8"),
    ]  # fmt: skip
    assert len(outcome.cross) == 8
    for r in outcome.results:
        diagonal = next(
            c for c in outcome.cross
            if c.settings == r.settings and c.train is r.run and c.test is r.run
        )  # fmt: skip
        assert diagonal.reused
        assert diagonal.result.accuracy == r.result.accuracy
        assert diagonal.result.auc == r.result.auc
        assert 0.0 <= r.result.auc <= 1.0
        assert 0.0 <= r.result.tpr_at_fpr <= 1.0
        assert r.result.detectors == []  # released after the matrix
    # The single-set API gives the same numbers without the matrix.
    results, skipped = detect_runs(runs, DetectionOptions(classifier="logreg", splits=2))
    assert skipped == []
    assert [r.result.auc for r in results] == [r.result.auc for r in outcome.results[:2]]


def test_cli_detect_several_feature_sets_writes_roc_and_cross_matrix(tiny_runs, tmp_path, capsys):
    out = tmp_path / "det"
    runs = [str(tiny_runs["ifgm-d8"]), str(tiny_runs["sai-d8"])]
    code = main(
        ["detect", *runs, "--out", str(out), "--features", "spam", "crm", "--classifier",
         "logreg", "--splits", "2", "--workers", "0", "--cache-dir", str(tmp_path / "cache"),
         "--save-model", str(tmp_path / "models")]
    )  # fmt: skip
    assert code == 0
    printed = capsys.readouterr().out
    assert "CRMQ1-5404 (rgb, 5404-D)" in printed
    assert "Cross-attack matrix, SPAM-686 (rgb, 2058-D)" in printed
    rows = list(csv.DictReader((out / "detection.csv").open()))
    assert [(r["features"], r["run"]) for r in rows] == [
        ("spam", "ifgm-d8"), ("spam", "sai-d8"), ("crm", "ifgm-d8"), ("crm", "sai-d8"),
    ]  # fmt: skip
    for r in rows:
        assert 0 <= float(r["auc"]) <= 1
        assert 0 <= float(r["tpr_at_fpr"]) <= 1
    cross = list(csv.DictReader((out / "cross_attack.csv").open()))
    assert len(cross) == 8
    assert {(c["train_run"], c["test_run"]) for c in cross} == {
        (a, b) for a in ("ifgm-d8", "sai-d8") for b in ("ifgm-d8", "sai-d8")
    }
    by_key = {(r["features"], r["run"]): r for r in rows}
    for c in cross:
        if c["train_run"] == c["test_run"]:
            assert c["accuracy"] == by_key[(c["features"], c["train_run"])]["accuracy"]
    for name in ("roc.png", "cross_attack.png"):
        with Image.open(out / name) as im:
            assert im.format == "PNG"
            assert min(im.size) > 100
    md = (out / "detection.md").read_text()
    for heading in ("## SPAM-686 (rgb, 2058-D)", "## CRMQ1-5404 (rgb, 5404-D)",
                    "## Feature sets side by side", "## Cross-attack matrix"):  # fmt: skip
        assert heading in md
    assert "| trained on \\ tested on | I-FGM δ=8 | SAI-FGM (β=0) δ=8 |" in md
    record = json.loads((out / "detection.json").read_text())
    assert [s["features"] for s in record["settings"]["feature_sets"]] == ["spam", "crm"]
    assert len(record["cross_attack"]) == 8
    assert record["runs"][2]["detection"]["auc"] == pytest.approx(float(rows[2]["auc"]), abs=1e-4)
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == sorted(
        f"{run}-{f}.{ext}" for run in ("ifgm-d8", "sai-d8") for f in ("spam", "crm")
        for ext in ("json", "npz")
    )  # fmt: skip
