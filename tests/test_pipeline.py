"""The attack pipeline end to end on a tiny model: attention choice, run record, templates."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import make_tiny_model, textured_images
from sai_attack import data
from sai_attack.attention import cam_from_features, grad_cam
from sai_attack.pipeline import AttackConfig, AttackRun, RunOptions
from sai_attack.runs import read_run


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
