"""Defenses seen through their gradient (EoT, BPDA) and the attack runs that use them.

Every defense states the gradient it passes; its forward value is the defense itself, bit for
bit; BPDA's backward pass is the identity; JPEG's approximation is close to Pillow's codec; and
BPDA through bit-depth reduction reaches the white-box success rate where the plain attack does
not (a known answer on the tiny model)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import REPO, make_tiny_model, textured_images
from sai_attack import data
from sai_attack.attacks import IFGM
from sai_attack.attacks.transforms import DefenseSampler
from sai_attack.defenses import DEFENSES, JPEG, BitDepth, expand_defense_spec, jpeg
from sai_attack.defenses.base import GRADIENTS
from sai_attack.defenses.compression import jpeg_surrogate
from sai_attack.pipeline import AttackConfig, AttackRun, RunOptions

SPECS = ["none", "resize:2", "jpeg:55", "dnn-jpeg:50", "avgpool:3", "maxpool:3", "tvm",
         "bitdepth:3", "median:3"]  # fmt: skip


def test_every_defense_states_its_gradient():
    assert {spec.partition(":")[0] for spec in SPECS} == set(DEFENSES)
    for cls in DEFENSES.values():
        assert cls.gradient in GRADIENTS, cls.name
        assert (cls.gradient == "true") == cls.differentiable, cls.name
    assert JPEG.gradient == "approximate"
    assert {DEFENSES[n].gradient for n in ("tvm", "bitdepth", "dnn-jpeg")} == {"bpda"}
    assert {DEFENSES[n].gradient for n in ("resize", "avgpool", "maxpool", "median")} == {"true"}


@pytest.mark.parametrize("spec", SPECS)
def test_with_gradient_is_the_defense_forward_and_its_stated_gradient_backward(spec):
    (defense,) = expand_defense_spec(spec)
    x = textured_images(2, 16, seed=1).requires_grad_(True)
    w = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    seeds = [3, 4]
    out = defense.with_gradient(x, seeds)
    assert torch.equal(out.detach(), defense(x.detach(), seeds))  # exact forward value
    (grad,) = torch.autograd.grad((out * w).sum(), x)
    if defense.gradient == "bpda":
        assert torch.equal(grad, w)  # straight through
        return
    y = x.detach().clone().requires_grad_(True)
    reference = defense.apply(y, seeds) if defense.gradient == "true" else defense.surrogate(y)
    (expected,) = torch.autograd.grad((reference * w).sum(), y)
    torch.testing.assert_close(grad, expected)
    assert grad.abs().sum() > 0


def _samples(size: int = 224) -> torch.Tensor:
    files = sorted((REPO / "src" / "sai_attack" / "samples").glob("*.png"))
    images = [data.resize_center_crop(np.asarray(Image.open(f).convert("RGB")), size)
              for f in files]  # fmt: skip
    return data.to_tensor(images)


@pytest.mark.parametrize(
    ("quality", "subsampling", "bound"),
    [(30, None, 1.0), (55, None, 0.9), (90, None, 0.8), (55, 0, 0.75)],
)
def test_jpeg_surrogate_is_within_one_level_of_pillow_on_average(quality, subsampling, bound):
    """Measured on the 12 bundled photos at 224 x 224 (mean |surrogate - Pillow| in 0-255
    levels): q 30 0.91, q 55 0.79, q 90 0.68, q 55 4:4:4 0.63; JPEG itself moves the pixels by
    4.3 levels at q 55."""
    x = _samples()
    real = jpeg(x, quality, subsampling)
    approx = jpeg_surrogate(x, quality, subsampling)
    error = float((approx - real).abs().mean() * 255)
    change = float((real - x).abs().mean() * 255)
    assert error < bound
    assert error < change / 3


def test_jpeg_surrogate_gradient_favours_low_frequencies():
    """Quantisation zeroes small high-frequency coefficients: their gradient is nearly cut."""
    x = torch.full((1, 3, 16, 16), 0.5, requires_grad=True)
    out = jpeg_surrogate(x + 0.004 * torch.randn(1, 3, 16, 16), 30)
    checker = torch.ones(16, 16)
    checker[::2] *= -1
    checker[:, ::2] *= -1
    flat = torch.ones(16, 16)
    g_high, g_flat = (torch.autograd.grad((out * p).sum(), x, retain_graph=True)[0]
                      for p in (checker, flat))  # fmt: skip
    assert float((g_high * checker).sum()) < 0.1 * float((g_flat * flat).sum())


def _rates(model, x, y, defense, adv) -> tuple[int, int]:
    saved = data.to_tensor(data.to_uint8(adv))  # the 8-bit images that would be saved
    with torch.no_grad():
        white = int((model(saved).argmax(1) != y).sum())
        gray = int((model(defense(saved)).argmax(1) != y).sum())
    return white, gray


def test_bpda_through_bit_depth_reaches_the_white_box_rate():
    """Known answer (tiny model, 96 synthetic images, I-FGM at matched L2 norm, delta 20):
    the white-box attack fools the undefended model on 92 images but the 3-bit model on 89 only;
    BPDA through the reduction fools the 3-bit model on 94, the white-box rate."""
    model = make_tiny_model()
    x = textured_images(96, 32, seed=5)
    defense = BitDepth(3)
    with torch.no_grad():
        y = model(x).argmax(1)
        assert bool((model(defense(x)).argmax(1) == y).all())
    kwargs = {"delta": 20, "steps": 10, "norm": "l2", "budget": "exact"}
    white, gray = _rates(model, x, y, defense, IFGM(model, **kwargs)(x, y))
    eot = IFGM(model, transforms=[DefenseSampler([[defense]])], **kwargs)(x, y)
    _, bpda = _rates(model, x, y, defense, eot)
    assert (white, gray, bpda) == (92, 89, 94)


def test_a_run_with_eot_records_it_and_evaluates_the_saved_png(tmp_path):
    images = (textured_images(batch=3, size=32, seed=3).permute(0, 2, 3, 1) * 255).round()
    root = tmp_path / "in"
    root.mkdir()
    for i, img in enumerate(images.numpy().astype(np.uint8)):
        Image.fromarray(img).save(root / f"im{i}.png")
    cfg = AttackConfig(method="ifgm", model="tiny", delta=8, steps=2, image_size=32,
                       eot="resize:1..2 bitdepth:5", eot_samples=2, input_diversity=0.5,
                       translation_invariance=3)  # fmt: skip
    opts = RunOptions(workers=0, batch_size=2, progress=False)
    AttackRun(root, tmp_path / "out", cfg, opts, model=make_tiny_model()).run()
    summary = json.loads(Path(tmp_path / "out" / "summary.json").read_text())
    params = summary["parameters"]
    assert params["eot"] == "resize:1..2 bitdepth:5"
    assert (params["eot_samples"], params["input_diversity"]) == (2, 0.5)
    assert (params["diversity_ratio"], params["translation_invariance"]) == (1.1, 3)
    assert summary["protocol"]["transforms"].startswith("TI (Gaussian kernel 3")
    assert "bitdepth: bpda" in summary["protocol"]["transforms"]
    # Batch size 1 gives the same images (per-image draws).
    opts1 = RunOptions(workers=0, batch_size=1, progress=False)
    AttackRun(root, tmp_path / "one", cfg, opts1, model=make_tiny_model()).run()
    for i in range(3):
        a = data.load_image(tmp_path / "out" / "images" / f"im{i}.png")
        b = data.load_image(tmp_path / "one" / "images" / f"im{i}.png")
        assert np.abs(a.astype(int) - b.astype(int)).max() <= 1
