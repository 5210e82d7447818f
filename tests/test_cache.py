"""The template cache: equal outputs, reuse, keys, and entries that cannot be trusted."""

from __future__ import annotations

import io
import json
import logging
import multiprocessing as mp
import os
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import make_tiny_model, textured_images
from sai_attack import superpixels as sp
from sai_attack.pipeline import AttackConfig, AttackRun, RunOptions
from sai_attack.pipeline.cache import (
    HIT,
    MISS,
    REJECTED,
    TEMPLATES,
    CacheEntryError,
    EntryCache,
    check_template,
    decode_entry,
    encode_entry,
    image_digest,
    model_identity,
    template_settings,
)
from sai_attack.pipeline.stores import TemplateSource
from sai_attack.runs import read_run

IMAGES = [f"im{i}.png" for i in range(5)]


@pytest.fixture
def folder(tmp_path):
    root = tmp_path / "in"
    root.mkdir()
    pics = textured_images(batch=len(IMAGES), size=32, seed=3).permute(0, 2, 3, 1) * 255
    for name, img in zip(IMAGES, pics.round().numpy().astype(np.uint8), strict=True):
        Image.fromarray(img).save(root / name)
    return root


def _run(folder, out, cache=None, model=None, **config):
    config = {"method": "sai-fgm", "delta": 8, "steps": 2, **config}
    cfg = AttackConfig(model="tiny", image_size=32, **config)
    # A fixed layout: "auto" measures the tiny model's speed, and the layout is part of the key.
    opts = RunOptions(workers=0, batch_size=2, progress=False, memory_format="contiguous",
                      cache_dir=None if cache is None else str(cache))  # fmt: skip
    return AttackRun(folder, out, cfg, opts, model=model or make_tiny_model()).run()


def _pngs(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((out / "images").glob("*.png"))}


def _entries(cache: Path, kind: str) -> list[Path]:
    return sorted((cache / kind).rglob("*.npz"))


# -- the cache changes nothing but the time -------------------------------------------------------


@pytest.mark.parametrize("attention", ["cam", "gradcam"])
def test_cached_runs_write_the_pngs_of_an_uncached_run(folder, tmp_path, attention, caplog):
    plain = _run(folder, tmp_path / "plain", attention=attention)
    first = _run(folder, tmp_path / "first", tmp_path / "cache", attention=attention)
    with caplog.at_level(logging.INFO, logger="sai_attack.pipeline.run"):
        second = _run(folder, tmp_path / "second", tmp_path / "cache", attention=attention)
    assert plain.cache is None
    assert _pngs(tmp_path / "first") == _pngs(tmp_path / "plain")
    assert _pngs(tmp_path / "second") == _pngs(tmp_path / "plain")
    every = {"computed": 5, "reused": 0, "rejected": 0}
    assert first.cache == {"templates": every, "predictions": every, "attention": every}
    none = {"computed": 0, "reused": 5, "rejected": 0}
    assert second.cache == {"templates": none, "predictions": none, "attention": none}
    summary = json.loads((tmp_path / "second" / "summary.json").read_text())
    assert summary["cache"]["templates"] == none
    assert (
        "templates 0 computed, 5 reused, 0 rejected; predictions 0 computed, 5 reused, 0 "
        "rejected; attention 0 computed, 5 reused, 0 rejected" in caplog.text
    )
    # Rows (except timing-free identical columns) agree too.
    rows = {it.image: it for it in read_run(tmp_path / "plain").items}
    for it in read_run(tmp_path / "second").items:
        assert (it.adv_pred, it.clean_pred, it.delta_eff) == (
            rows[it.image].adv_pred, rows[it.image].clean_pred, rows[it.image].delta_eff,
        )  # fmt: skip


def test_pixel_methods_share_clean_predictions_and_compute_no_template(folder, tmp_path):
    first = _run(folder, tmp_path / "a", tmp_path / "cache", method="ifgm")
    second = _run(folder, tmp_path / "b", tmp_path / "cache", method="mifgm")
    assert first.cache["templates"] == {"computed": 0, "reused": 0, "rejected": 0}
    assert first.cache["predictions"]["computed"] == 5
    assert second.cache["predictions"] == {"computed": 0, "reused": 5, "rejected": 0}
    assert second.cache["attention"] == {"computed": 0, "reused": 0, "rejected": 0}
    assert not (tmp_path / "cache" / TEMPLATES).exists()


def test_other_superpixel_settings_compute_their_own_templates(folder, tmp_path):
    _run(folder, tmp_path / "a", tmp_path / "cache")
    other = _run(folder, tmp_path / "b", tmp_path / "cache", superpixel_size=4)
    assert other.cache["templates"]["computed"] == 5
    assert other.cache["predictions"]["reused"] == 5  # the model and images are the same
    assert len(_entries(tmp_path / "cache", TEMPLATES)) == 10


def test_another_model_computes_its_own_predictions(folder, tmp_path):
    _run(folder, tmp_path / "a", tmp_path / "cache")
    other = _run(folder, tmp_path / "b", tmp_path / "cache", model=make_tiny_model(seed=1))
    assert other.cache["templates"]["reused"] == 5
    assert other.cache["predictions"]["computed"] == 5
    assert other.cache["attention"]["computed"] == 5


# -- keys -------------------------------------------------------------------------------------


def test_keys_change_with_every_setting_that_changes_the_content():
    image = np.zeros((8, 8, 3), np.uint8)
    base = sp.SuperpixelConfig("slic", 4.0, None, 20.0, 0.0)
    variants = [
        sp.SuperpixelConfig("grid", 4.0, None, 20.0, 0.0),
        sp.SuperpixelConfig("slic", 5.0, None, 20.0, 0.0),
        sp.SuperpixelConfig("slic", None, 9, 20.0, 0.0),
        sp.SuperpixelConfig("slic", 4.0, None, 10.0, 0.0),
        sp.SuperpixelConfig("slic", 4.0, None, 20.0, 1.0),
    ]
    digest = image_digest(image)
    keys = {EntryCache.key(TEMPLATES, digest, template_settings(c)) for c in [base, *variants]}
    assert len(keys) == 6
    other = image.copy()
    other[0, 0, 0] = 1
    assert image_digest(other) != digest
    assert image_digest(image[:4]) != image_digest(np.zeros((4, 16, 3), np.uint8))  # shape counts
    settings = template_settings(base)
    assert {"code", "opencv", "scikit-image", "numpy"} <= set(settings)


def test_model_identity_covers_weights_buffers_layout_and_device():
    import torch

    cpu = torch.device("cpu")
    a, b = make_tiny_model(seed=0), make_tiny_model(seed=0)
    assert model_identity(a, cpu) == model_identity(b, cpu)
    assert (
        model_identity(make_tiny_model(seed=1), cpu)["weights"] != model_identity(a, cpu)["weights"]
    )
    with torch.no_grad():
        b.mean.add_(1e-7)  # a buffer (the normalisation), not a parameter
    assert model_identity(b, cpu)["weights"] != model_identity(a, cpu)["weights"]
    assert model_identity(a, torch.device("meta"))["device"] == "meta"
    assert model_identity(make_tiny_model(cam=False), cpu) != model_identity(a, cpu)
    channels_last = make_tiny_model().to(memory_format=torch.channels_last)
    assert model_identity(channels_last, cpu)["channels_last"] is True


# -- entries are never trusted --------------------------------------------------------------------


def _one_template(cache_dir: Path) -> tuple[Path, TemplateSource, np.ndarray, str]:
    image = (textured_images(batch=1, size=32)[0].permute(1, 2, 0) * 255).round().byte().numpy()
    source = TemplateSource(sp.SuperpixelConfig("slic", 5.0), EntryCache(cache_dir))
    labels, found = source(image, image_digest(image))
    assert found == MISS
    (path,) = _entries(cache_dir, TEMPLATES)
    return path, source, image, labels


def _npz(**arrays) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def _corruptions(path: Path, labels: np.ndarray) -> dict[str, bytes]:
    good = path.read_bytes()
    key = path.stem
    gaps = labels.copy()
    gaps[gaps == 1] = 0  # label 1 missing: not 0..K-1
    huge = bytearray(encode_entry(key, labels.astype(np.int32)))
    return {
        "truncated": good[: len(good) // 2],
        "garbage": os.urandom(len(good)),
        "empty": b"",
        "another key": encode_entry("0" * 64, labels.astype(np.int32)),
        "wrong shape": encode_entry(key, labels[:-1].astype(np.int32)),
        "labels with gaps": encode_entry(key, gaps.astype(np.int32)),
        "float labels": encode_entry(key, labels.astype(np.float32)),
        "hash mismatch": _npz(
            value=labels.astype(np.int32),
            meta=np.frombuffer(
                json.dumps({"format": 1, "key": key, "sha256": "0"}).encode(), np.uint8
            ),
        ),
        "pickled object": _npz(
            value=np.array([{"x": 1}], dtype=object), meta=np.zeros(1, np.uint8)
        ),
        "extra member": _npz(value=labels, meta=np.zeros(1, np.uint8), more=np.zeros(1)),
        "flipped byte": bytes(huge[:-30]) + bytes([huge[-30] ^ 0xFF]) + bytes(huge[-29:]),
    }


def test_every_damaged_or_foreign_entry_is_rejected_and_recomputed(tmp_path, caplog):
    path, source, image, labels = _one_template(tmp_path / "cache")
    for what, payload in _corruptions(path, labels).items():
        path.write_bytes(payload)
        with caplog.at_level(logging.WARNING):
            caplog.clear()
            again, found = source(image, image_digest(image))
        assert found == REJECTED, what
        np.testing.assert_array_equal(again, labels)
        assert f"cache: recomputing {path}" in caplog.text, what
        # The recomputed template was written back whole.
        assert source(image, image_digest(image))[1] == HIT, what


class _Bomb:
    """Unpickling it would create a file."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (Path.touch, (self.path,))


def test_a_pickle_is_never_loaded(tmp_path):
    meta = np.frombuffer(json.dumps({"format": 1, "key": "k", "sha256": ""}).encode(), np.uint8)
    bomb = np.array([_Bomb(tmp_path / "exploded")], dtype=object)
    buf = io.BytesIO()
    np.savez(buf, value=bomb, meta=meta)
    with pytest.raises(CacheEntryError, match="^value: unsupported array type object$"):
        decode_entry(buf.getvalue(), "k")
    assert not (tmp_path / "exploded").exists()


def test_a_header_claiming_a_huge_array_allocates_nothing():
    from numpy.lib import format as npy

    buf = io.BytesIO()
    npy.write_array_header_1_0(buf, {"descr": "<f8", "fortran_order": False, "shape": (1 << 40,)})
    member = buf.getvalue() + b"\0" * 8
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as zf:
        zf.writestr("value.npy", member)
        zf.writestr("meta.npy", member)
    with pytest.raises(CacheEntryError, match="data bytes for shape"):
        decode_entry(out.getvalue(), "k")


def test_a_fifo_or_directory_in_place_of_an_entry_is_rejected_without_blocking(tmp_path):
    path, source, image, labels = _one_template(tmp_path / "cache")
    path.unlink()
    os.mkfifo(path)
    assert source(image, image_digest(image))[1] == REJECTED  # never blocks on the FIFO
    path.unlink()
    path.mkdir()
    again, found = source(image, image_digest(image))
    assert found == REJECTED
    np.testing.assert_array_equal(again, labels)


def test_check_template_accepts_exactly_the_templates_segment_makes():
    labels = sp.segment(np.random.default_rng(0).integers(0, 255, (16, 16, 3), dtype=np.uint8),
                        "slic", 4.0)  # fmt: skip
    np.testing.assert_array_equal(check_template(labels.astype(np.int32), (16, 16)), labels)
    with pytest.raises(CacheEntryError, match="^template labels are not 0..K-1 without gaps$"):
        check_template((labels + 1).astype(np.int32), (16, 16))
    with pytest.raises(CacheEntryError, match="^template of int32 \\(16, 15\\), expected int"):
        check_template(labels[:, 1:].astype(np.int32), (16, 16))


def test_damaged_entries_in_a_run_are_recomputed_and_the_pngs_do_not_change(folder, tmp_path):
    cache = tmp_path / "cache"
    _run(folder, tmp_path / "a", cache)
    for kind in ("templates", "predictions", "attention"):
        for entry in _entries(cache, kind)[:2]:
            entry.write_bytes(entry.read_bytes()[:100])
    again = _run(folder, tmp_path / "b", cache)
    assert again.cache["templates"] == {"computed": 2, "reused": 3, "rejected": 2}
    assert again.cache["predictions"]["rejected"] >= 1
    assert _pngs(tmp_path / "b") == _pngs(tmp_path / "a")


def test_an_unwritable_cache_folder_slows_a_run_down_but_never_fails_it(folder, tmp_path, caplog):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with caplog.at_level(logging.WARNING):
        summary = _run(folder, tmp_path / "a", blocker / "cache")
    assert summary.processed == 5
    assert "going on without storing" in caplog.text
    assert _pngs(tmp_path / "a") == _pngs(_run(folder, tmp_path / "b") and tmp_path / "b")


# -- concurrent runs share a cache ----------------------------------------------------------------


def _hammer(root: str, seed: int, queue) -> None:
    cache = EntryCache(root)
    rng = np.random.default_rng(seed)
    values = {f"{k:064x}": np.arange(k * 1000, (k + 1) * 1000, dtype=np.int32) for k in range(4)}
    seen = []
    for _ in range(300):
        key = rng.choice(sorted(values))
        if rng.random() < 0.5:
            cache.put(TEMPLATES, key, values[key])
        value, found = cache.get(TEMPLATES, key, lambda v: v)
        if found == HIT and not np.array_equal(value, values[key]):
            found = "wrong"
        seen.append(found)
    queue.put(seen)


def test_processes_writing_and_reading_one_cache_never_see_a_partial_entry(tmp_path):
    # fork: the workers use NumPy and files only, and spawn would import torch in each (slow).
    if "fork" not in mp.get_all_start_methods():
        pytest.skip("needs the fork start method")
    ctx = mp.get_context("fork")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_hammer, args=(str(tmp_path), s, queue)) for s in range(4)]
    for p in procs:
        p.start()
    seen = [x for _ in procs for x in queue.get(timeout=120)]
    for p in procs:
        p.join(timeout=60)
    assert set(seen) <= {HIT, MISS}
    assert seen.count(HIT) > len(seen) // 2
    assert not list(tmp_path.rglob("*.tmp"))  # no temporary file left behind
