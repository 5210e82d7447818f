"""The first-labelled-batch check of the input convention (pipeline/sanity.py)."""

import csv
import logging

import numpy as np
import pytest
import torch
from PIL import Image
from scipy.stats import binomtest
from torch import nn

from conftest import make_tiny_model
from sai_attack.models import IMAGENET_MEAN, IMAGENET_STD, ImageClassifier
from sai_attack.pipeline import AttackConfig, AttackRun, RunOptions
from sai_attack.pipeline.sanity import (
    ALPHA,
    CONVENTIONS,
    MIN_GAIN,
    Probe,
    better_convention,
    check_first_labelled,
    probe_conventions,
)

# Labels of the synthetic images: 10 of class 0 (left half brighter), 6 of class 1.
LABELS = [0] * 10 + [1] * 6


class MeanSensitiveNet(nn.Module):
    """Class 0 if the left half of the input is brighter, else 1, confident only near mean 0.

    ``logit_0 - logit_1 = 2 * 40 * s * d + 2``, ``d`` the left-minus-right mean of the normalised
    input and ``s = exp(-50 * mean^2)``: with its input normalised to mean ~0 the brightness
    difference decides; fed another convention (mean far from 0) ``s`` vanishes and the bias
    makes every image class 0, so 10 of 16 (62%) are still right.
    """

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        w = z.shape[-1] // 2
        d = z[..., :w].mean(dim=(1, 2, 3)) - z[..., w:].mean(dim=(1, 2, 3))  # (B,)
        s = torch.exp(-50 * z.mean(dim=(1, 2, 3)) ** 2)  # (B,)
        margin = 40 * s * d + 1.0
        return torch.stack([margin, -margin], dim=1)  # (B, 2)


def _images() -> torch.Tensor:
    """(16, 3, 32, 32): ImageNet-mean colours, one half brighter by 0.02-0.2 (left for class 0)."""
    g = torch.Generator().manual_seed(0)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    x = mean + 0.01 * torch.randn(16, 3, 32, 32, generator=g)
    steps = torch.linspace(0.02, 0.2, 16)
    for i, (label, step) in enumerate(zip(LABELS, steps, strict=True)):
        side = slice(0, 16) if label == 0 else slice(16, 32)
        x[i, :, :, side] += step / 2
        x[i, :, :, slice(16, 32) if label == 0 else slice(0, 16)] -= step / 2
    return x.clamp(0, 1)


def _model(mean, std, name: str) -> ImageClassifier:
    return ImageClassifier(MeanSensitiveNet(), mean=mean, std=std, name=name)


def _predictions(model: ImageClassifier, x: torch.Tensor) -> list[int]:
    with torch.no_grad():
        return model(x).argmax(dim=1).tolist()


def test_a_model_without_its_normalisation_is_told_which_one_fits(caplog):
    caplog.set_level(logging.WARNING)
    x = _images()
    right = _model(IMAGENET_MEAN, IMAGENET_STD, "normalised")
    raw = _model(0.0, 1.0, "raw")
    assert sum(p == t for p, t in zip(_predictions(right, x), LABELS, strict=True)) == 16
    assert _predictions(raw, x) == [0] * 16  # 10/16 right: accuracy alone looks fine

    assert check_first_labelled(right, x, _predictions(right, x), LABELS) == []
    assert caplog.records == []

    given, probes = probe_conventions(raw, x, LABELS)
    assert [p.convention.name for p in probes] == [
        c.name for c in CONVENTIONS if c.std != (1, 1, 1)
    ]
    up, down, p, gain = next(q for q in probes if q.convention.name == "ImageNet mean/std").against(
        given
    )
    assert (up, down) == (16, 0)
    assert p == pytest.approx(binomtest(16, 16, 0.5, alternative="greater").pvalue)
    (warning,) = check_first_labelled(raw, x, _predictions(raw, x), LABELS)
    assert warning == (
        "input normalisation looks wrong: with ImageNet mean/std the network gets 16/16 of these "
        "images right (clean accuracy as given: 10/16) and gives the true class a higher "
        f"probability on 16/16 of them (sign test p = 1.5e-05 < 0.017; +{gain:.2f} nats per "
        "image); the model normalises with mean (0, 0, 0), std (1, 1, 1). Success rates measured "
        "with the wrong normalisation describe another model"
    )
    assert [r.getMessage() for r in caplog.records] == [f"model raw: {warning}"]


def _probe(name: str, hits: int, log_p: list[float]) -> Probe:
    convention = next(c for c in CONVENTIONS if c.name.startswith(name))
    return Probe(convention, hits, torch.tensor(log_p))


def test_a_convention_is_named_only_when_all_three_conditions_hold():
    given = _probe("[0, 1]", 12, [-1.0] * 16)
    # 13 of 16 images up, 3 down, +0.5 nats: p = P(X >= 13), X ~ B(16, 1/2) = 0.0106 < 0.05 / 3
    up13 = [-0.5 + (0.5 if i < 13 else -1.5) for i in range(16)]
    probes = [_probe("[-1, 1]", 14, up13), _probe("ImageNet", 12, [-0.5] * 16)]
    found = better_convention(given, probes)
    p = binomtest(13, 16, 0.5, alternative="greater").pvalue
    assert found.startswith(
        "with [-1, 1] input (mean 0.5, std 0.5) the network gets 14/16 of these images right "
        f"(clean accuracy as given: 12/16) and gives the true class a higher probability on "
        f"13/16 of them (sign test p = {p:.2g} < {ALPHA / 2:.2g}; "
    )
    # no more images right: a convention that only sharpens the logits is not named
    assert better_convention(given, [_probe("[-1, 1]", 12, up13)]) is None
    # 12 of 16 up (p = 0.038) is not enough against 0.05 / 2 conventions
    up12 = [-0.5 + (0.5 if i < 12 else -1.0) for i in range(16)]
    assert better_convention(given, [_probe("[-1, 1]", 14, up12), probes[1]]) is None
    # a consistent but negligible gain (< MIN_GAIN nats per image) is not named
    tiny = [-1.0 + MIN_GAIN / 2] * 16
    assert better_convention(given, [_probe("[-1, 1]", 14, tiny)]) is None


def test_conventions_within_tolerance_of_the_models_own_are_not_tried():
    lite = make_tiny_model()  # mean 0.5, std 0.25: none of the conventions
    assert len(probe_conventions(lite, _images()[:8], [0] * 8)[1]) == len(CONVENTIONS)
    lite = ImageClassifier(MeanSensitiveNet(), mean=127 / 255, std=128 / 255)  # (255x - 127) / 128
    names = [p.convention.name for p in probe_conventions(lite, _images()[:8], [0] * 8)[1]]
    assert "[-1, 1] input (mean 0.5, std 0.5)" not in names
    assert len(names) == len(CONVENTIONS) - 1


def test_too_few_labelled_images_are_not_checked():
    raw = _model(0.0, 1.0, "raw")
    x = _images()[:7]
    assert check_first_labelled(raw, x, _predictions(raw, x), LABELS[:7]) == []


def test_low_accuracy_names_a_label_offset():
    x = _images()
    right = _model(IMAGENET_MEAN, IMAGENET_STD, "normalised")
    pred = _predictions(right, x)
    # labels 1-based: the predictions equal label - 1
    (warning,) = check_first_labelled(right, x, pred, [t + 1 for t in LABELS])
    assert warning.startswith("clean accuracy on the first 16 labelled images is 0% (0/16)")
    assert warning.endswith(
        "Likely cause: label offset: 16/16 predictions equal label -1; the labels are 1-based "
        "(a 1001-class list with background at 0?)"
    )


def _sanity_warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "sai_attack.pipeline.sanity"]


def _folder(tmp_path, images: np.ndarray, labels: list[int], names: list[str] | None = None):
    root = tmp_path / "labelled"
    root.mkdir()
    names = names or [f"im{i:02d}.png" for i in range(len(labels))]
    for name, img in zip(names, images, strict=True):
        Image.fromarray(img).save(root / name)
    with (root / "labels.csv").open("w", newline="") as f:
        csv.writer(f).writerows([("image", "label"), *zip(names, labels, strict=True)])
    return root


def test_an_attack_run_warns_once_for_a_model_without_its_normalisation(tmp_path, caplog):
    caplog.set_level(logging.WARNING)
    pixels = (_images().permute(0, 2, 3, 1) * 255).round().numpy().astype(np.uint8)
    folder = _folder(tmp_path, pixels, LABELS)
    cfg = AttackConfig(method="ifgm", model="tiny", delta=2, steps=1, image_size=32)
    opts = RunOptions(workers=0, batch_size=16, progress=False)
    for name, mean, std in (("normalised", IMAGENET_MEAN, IMAGENET_STD), ("raw", 0.0, 1.0)):
        AttackRun(folder, tmp_path / name, cfg, opts, model=_model(mean, std, name)).run()
    warnings = _sanity_warnings(caplog)
    assert len(warnings) == 1
    assert warnings[0].startswith(
        "model raw: input normalisation looks wrong: with ImageNet mean/std the network gets "
        "16/16 of these images right (clean accuracy as given: 10/16)"
    )


@pytest.mark.integration
def test_lite0_without_its_preprocessing_gets_the_warning(tmp_path, nips17, lite0, caplog):
    caplog.set_level(logging.WARNING)
    cfg = AttackConfig(method="ifgm", steps=1)
    opts = RunOptions(workers=0, batch_size=16, limit=16, progress=False)
    AttackRun(nips17, tmp_path / "lite0", cfg, opts, model=lite0).run()
    assert _sanity_warnings(caplog) == []

    # Lite0 takes (255 x - 127) / 128; wrapped without it, the network sees [0, 1] input and
    # still gets most images right.
    raw = ImageClassifier(lite0.net, mean=0.0, std=1.0, input_size=224, name="lite0-raw")
    AttackRun(nips17, tmp_path / "raw", cfg, opts, model=raw).run()
    (warning,) = _sanity_warnings(caplog)
    assert warning.startswith(
        "model lite0-raw: input normalisation looks wrong: with [-1, 1] input (mean 0.5, std 0.5) "
        "the network gets 15/16 of these images right (clean accuracy as given: 13/16)"
    )
    assert warning.endswith(
        "the model normalises with mean (0, 0, 0), std (1, 1, 1). Success rates measured with "
        "the wrong normalisation describe another model"
    )
