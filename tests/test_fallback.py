"""The fallback re-attack (``fallback_loss``): AutoAttack's pattern on the images an attack misses.

The model here has saturated logits (the tiny CNN's last layer times 1e4): the cross-entropy's
gradient is exactly zero on every confidently classified image, so sign steps do not move and
the attack fails, while the margin loss's gradient does not saturate. This is the textbook
gradient-masking case the re-attack exists for.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import make_tiny_model, textured_images
from sai_attack import data
from sai_attack.pipeline import AttackConfig, AttackRun, RunOptions
from sai_attack.runs import read_results, read_run


def saturated_model():
    model = make_tiny_model(seed=1)  # a seed whose CNN superpixel perturbations can fool
    with torch.no_grad():
        model.net.fc.weight.mul_(1e4)
        model.net.fc.bias.mul_(1e4)
    return model


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    images = (textured_images(batch=6, size=32, seed=3).permute(0, 2, 3, 1) * 255).round()
    root = tmp_path_factory.mktemp("in")
    for i, img in enumerate(images.numpy().astype(np.uint8)):
        Image.fromarray(img).save(root / f"im{i}.png")
    return root


def _run(folder, out, **config):
    settings = {"method": "ifgm", "model": "tiny", "delta": 24, "steps": 3, "image_size": 32,
                "norm": "linf", **config}  # fmt: skip
    cfg = AttackConfig(**settings)
    opts = RunOptions(workers=0, batch_size=4, progress=False, save_templates=True)
    AttackRun(folder, out, cfg, opts, model=saturated_model()).run()
    return {r["image"]: r for r in read_results(out / "results.csv")}, read_run(out)


def _pixels(run, image: str) -> np.ndarray:
    item = next(it for it in run.items if it.image == image)
    return data.load_image(item.adversarial)


def test_auto_is_the_margin_loss_under_linf_and_none_under_l2():
    assert AttackConfig(norm="linf").fallback_loss == "cw"
    assert AttackConfig(norm="l2").fallback_loss == "none"
    assert AttackConfig(norm="l2").fallback() is None
    fallback = AttackConfig(norm="linf", method="sai-fgm").fallback()
    assert (fallback.loss, fallback.budget, fallback.fallback_loss) == ("cw", "within", "none")
    # the re-attack would repeat the attack itself
    assert AttackConfig(norm="linf", loss="cw", budget="within").fallback() is None


def test_an_unknown_fallback_loss_is_refused_naming_the_parameter():
    with pytest.raises(ValueError, match="fallback_loss 'hinge' is unknown; choose one of auto"):
        AttackConfig(fallback_loss="hinge")


@pytest.mark.parametrize("method", ["ifgm", "sai-fgm"])
def test_fallback_keeps_every_fooled_image_and_reattacks_only_the_rest(folder, tmp_path, method):
    delta = {"ifgm": 24, "sai-fgm": 32}[method]
    plain, plain_run = _run(folder, tmp_path / "plain", method=method, delta=delta,
                            fallback_loss="none")  # fmt: skip
    with_fb, fb_run = _run(folder, tmp_path / "fb", method=method, delta=delta,
                           fallback_loss="cw")  # fmt: skip
    alone, alone_run = _run(folder, tmp_path / "cw", method=method, delta=delta, loss="cw",
                            budget="within", fallback_loss="none")  # fmt: skip
    used = [name for name, row in with_fb.items() if row["fallback"] == "1"]
    assert used, "the saturated model must leave the cross-entropy attack something to miss"
    assert sum(r["success"] == "1" for r in with_fb.values()) > sum(
        r["success"] == "1" for r in plain.values()
    )
    for name, row in with_fb.items():
        assert plain[name]["fallback"] == ""
        if row["fallback"] == "1":  # a miss of the attack, fooled by the re-attack alone
            assert plain[name]["success"] == "0"
            assert row["success"] == alone[name]["success"] == "1"
            np.testing.assert_array_equal(_pixels(fb_run, name), _pixels(alone_run, name))
        else:  # the attack's own image, byte for byte
            assert row["fallback"] == "0"
            assert row["success"] == plain[name]["success"]
            np.testing.assert_array_equal(_pixels(fb_run, name), _pixels(plain_run, name))
        clean = data.load_image(next(it.clean for it in fb_run.items if it.image == name))
        gap = np.abs(_pixels(fb_run, name).astype(int) - clean.astype(int)).max()
        assert gap <= delta
    summary = fb_run.record.summary
    assert summary["counts"]["fallback"] == len(used)
    assert "loss cw and budget within" in summary["protocol"]["fallback"]
    assert plain_run.record.summary["protocol"]["fallback"] == "none"
    assert plain_run.record.summary["counts"]["fallback"] == 0


def test_l2_runs_are_untouched_by_default(folder, tmp_path):
    rows, run = _run(folder, tmp_path / "l2", norm="l2", delta=4)
    assert {r["fallback"] for r in rows.values()} == {""}
    assert run.record.get("fallback_loss") == "none"
