"""Transforms inside the attack objective (EoT, DI, TI) and the surrogate ensemble.

Known answers: with no transform, or with transforms that do nothing, the attack is the plain
attack byte for byte, for every method and norm; TI's backward pass is a convolution with Dong et
al.'s kernel; the gradient is the mean over K draws; draws are per image (batch-independent)."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import make_tiny_model, textured_images
from sai_attack.attacks import ATTACKS, IFGM, NORMS, SAIFGM
from sai_attack.attacks.transforms import (
    DefenseSampler,
    InputDiversity,
    InputTransform,
    Transforms,
    TranslationInvariance,
    gaussian_kernel,
)
from sai_attack.cli import build_parser
from sai_attack.cli.options import option_values
from sai_attack.defenses import AvgPool, NoDefense, Resize, expand_defense_spec
from sai_attack.models import EnsembleClassifier
from sai_attack.models.ensemble import ensemble_members
from sai_attack.pipeline import AttackConfig


@pytest.fixture(scope="module")
def model():
    return make_tiny_model()


@pytest.fixture(scope="module")
def batch(model):
    x = textured_images(3, 32, seed=3)
    with torch.no_grad():
        return x, model(x).argmax(dim=1)


class Counting(InputTransform):
    """Counts the draws; the identity."""

    randomized = True

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, x, generators):
        self.calls += 1
        return x


@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("name", list(ATTACKS))
def test_identity_transforms_equal_the_plain_attack_byte_for_byte(model, batch, name, norm):
    """EoT with K = 1 over the identity defense, DI with p = 0 and TI with a 1x1 kernel."""
    x, y = batch
    plain = ATTACKS[name](model, delta=3, steps=3, norm=norm)(x, y)
    for transforms in ([DefenseSampler([[NoDefense()]])], [InputDiversity(0.0)],
                       [TranslationInvariance(1)]):  # fmt: skip
        adv = ATTACKS[name](model, delta=3, steps=3, norm=norm, transforms=transforms)(x, y)
        assert torch.equal(adv, plain), transforms


def test_options_off_build_no_transforms_and_equal_the_plain_attack(model, batch):
    x, y = batch
    config = AttackConfig(method="sai-fgm", delta=3, steps=2)
    attack = config.build_attack(model)
    assert attack.transforms.chain == []
    assert attack.transforms.describe() == {}
    plain = SAIFGM(model, delta=3, steps=2)(x, y)
    assert torch.equal(attack(x, y), plain)


def test_the_config_builds_ti_eot_di_in_order():
    config = AttackConfig(eot="resize:1..3  jpeg:55", eot_samples=4, input_diversity=0.5,
                          translation_invariance=7)  # fmt: skip
    attack = config.build_attack(make_tiny_model())
    kinds = [type(t) for t in attack.transforms.chain]
    assert kinds == [TranslationInvariance, DefenseSampler, InputDiversity]
    assert attack.describe()["eot"] == "resize:1..3 jpeg:55"
    assert attack.transforms.draws == 4
    assert config.record()["eot"] == "resize:1..3  jpeg:55"
    text = attack.transforms.text()
    assert "resize: true" in text
    assert "jpeg: approximate" in text
    assert "4 draw(s)" in text


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"eot": "foo"}, "eot 'foo': unknown defense 'foo'; choose one of none, resize,"),
        ({"eot": "jpeg:101"}, "eot 'jpeg:101': jpeg quality q must be an integer in 1..100"),
        ({"translation_invariance": 4}, "translation_invariance must be an odd kernel size (0 "
         "turns TI off), got 4"),
        ({"eot_samples": 0}, "eot_samples must be an integer in [1, 1000], got 0"),
        ({"input_diversity": 1.5}, "input_diversity must be a finite number in [0, 1], got 1.5"),
        ({"diversity_ratio": 1.0}, "diversity_ratio must be a finite number in (1, 2], got 1.0"),
    ],
)  # fmt: skip
def test_bad_settings_fail_on_construction(kwargs, message):
    with pytest.raises(ValueError, match="^" + re.escape(message)):
        AttackConfig(**kwargs)


def test_cli_takes_several_eot_specs_as_one_option():
    args = build_parser().parse_args([
        "attack", "in", "--out", "o", "--eot", "resize:1..3", "jpeg:30..90", "avgpool:3,5",
        "--eot-samples", "4", "--input-diversity", "0.5", "--translation-invariance", "7",
    ])  # fmt: skip
    values = option_values(args, "attack")
    assert values["eot"] == "resize:1..3 jpeg:30..90 avgpool:3,5"
    assert (values["eot_samples"], values["input_diversity"]) == (4, 0.5)
    assert values["translation_invariance"] == 7
    assert build_parser().parse_args(["attack", "in", "--out", "o"]).eot is None


def test_gaussian_kernel_is_dong_et_al_gkern():
    t = np.linspace(-3, 3, 7)
    pdf = np.exp(-t * t / 2) / np.sqrt(2 * np.pi)
    reference = np.outer(pdf, pdf) / np.outer(pdf, pdf).sum()
    np.testing.assert_allclose(gaussian_kernel(7).numpy(), reference, rtol=1e-12)


def test_ti_forward_is_identity_and_backward_convolves_the_gradient():
    x = torch.rand(2, 3, 12, 12, requires_grad=True)
    w = torch.randn(2, 3, 12, 12)
    ti = TranslationInvariance(5)
    out = ti(x, [])
    assert torch.equal(out, x)
    (grad,) = torch.autograd.grad((out * w).sum(), x)
    kernel = gaussian_kernel(5).float().view(1, 1, 5, 5).expand(3, 1, 5, 5)
    torch.testing.assert_close(grad, F.conv2d(w, kernel, padding=2, groups=3))


def test_ti_smooths_the_pixel_gradient_of_a_superpixel_noise_vector(model, batch):
    """TI acts before the noise vector: with TI the superpixel attack differs from without."""
    x, y = batch
    plain = SAIFGM(model, delta=3, steps=2)(x, y)
    boosted = SAIFGM(model, delta=3, steps=2, transforms=[TranslationInvariance(7)])(x, y)
    assert not torch.equal(plain, boosted)


def test_input_diversity_resizes_pads_and_keeps_the_size():
    x = torch.rand(4, 3, 20, 20)
    generators = [torch.Generator().manual_seed(s) for s in range(4)]
    out = InputDiversity(1.0, 1.5)(x, generators)
    assert out.shape == x.shape
    assert all(not torch.equal(out[i], x[i]) for i in range(4))  # p = 1: every image changed
    again = InputDiversity(1.0, 1.5)(x, [torch.Generator().manual_seed(s) for s in range(4)])
    assert torch.equal(out, again)  # seeded
    singles = torch.cat([InputDiversity(1.0, 1.5)(x[i : i + 1],
                                                  [torch.Generator().manual_seed(i)])
                         for i in range(4)])  # fmt: skip
    assert torch.equal(out, singles)  # per image: independent of the batch


def test_the_gradient_is_the_mean_over_k_draws_and_deterministic_chains_run_once(model, batch):
    x, y = batch
    counter = Counting()
    IFGM(model, delta=2, steps=3, transforms=[counter], eot_samples=4)(x, y)
    assert counter.calls == 12
    assert Transforms([TranslationInvariance(3)], 4).draws == 1
    assert Transforms([DefenseSampler([[Resize(2.0)]])], 4).draws == 1
    assert Transforms([DefenseSampler([[Resize(2.0), AvgPool(3)]])], 4).draws == 4
    # K identical draws average to the single draw (up to the division).
    one = IFGM(model, delta=2, steps=2, transforms=[Counting()])(x, y)
    four = IFGM(model, delta=2, steps=2, transforms=[Counting()], eot_samples=4)(x, y)
    torch.testing.assert_close(one, four, atol=1e-6, rtol=0)


def test_eot_draws_a_spec_then_a_value_uniformly():
    groups = [expand_defense_spec("resize:2"), expand_defense_spec("avgpool:3..11:2")]
    x = torch.rand(400, 3, 8, 8)
    out = DefenseSampler(groups)(x, [torch.Generator().manual_seed(s) for s in range(400)])
    resized = torch.isclose(out, Resize(2.0)(x)).flatten(1).all(dim=1).float().mean()
    assert 0.4 < float(resized) < 0.6  # the specs are equally likely, not 1 : 5
    pooled = [torch.isclose(out, AvgPool(k)(x)).flatten(1).all(dim=1).float().mean()
              for k in (3, 5, 7, 9, 11)]  # fmt: skip
    assert all(0.05 < float(f) < 0.15 for f in pooled)  # then each value: 1/10 of all


def test_eot_attack_does_not_depend_on_the_batch(model, batch):
    x, y = batch
    groups = [expand_defense_spec(s) for s in ("resize:1..3", "avgpool:3,5", "bitdepth:5")]
    attack = SAIFGM(model, delta=3, steps=3, eot_samples=2, transforms=[
        TranslationInvariance(3), DefenseSampler(groups), InputDiversity(0.5)])  # fmt: skip
    together = attack(x, y, seeds=[5, 6, 7])
    apart = torch.cat([attack(x[i : i + 1], y[i : i + 1], seeds=[5 + i]) for i in range(3)])
    torch.testing.assert_close(together, apart, atol=1e-5, rtol=0)
    assert not torch.equal(together, attack(x, y, seeds=[8, 9, 10]))


def test_ensemble_averages_logits_and_takes_the_first_members_cam():
    a, b = make_tiny_model(seed=0), make_tiny_model(seed=1)
    ensemble = EnsembleClassifier([a, b])
    x = textured_images(2, 16)
    torch.testing.assert_close(ensemble(x), (a(x) + b(x)) / 2)
    # The network behind an identity normalisation: what the normalisation probe feeds.
    assert torch.equal(ensemble.net(ensemble.preprocess(x)), ensemble(x))
    logits, features = ensemble.forward_features(x)
    torch.testing.assert_close(logits, (a(x) + b(x)) / 2)
    torch.testing.assert_close(features, a.forward_features(x)[1])
    assert ensemble.name == "tiny,tiny"
    assert ensemble.supports_cam
    assert torch.equal(ensemble.cam_weights(), a.cam_weights())
    ensemble.to_memory_format("channels_last")
    assert a.memory_format == b.memory_format == "channels_last"
    adv = SAIFGM(ensemble, delta=3, steps=2)(x, ensemble(x).argmax(dim=1))
    assert adv.shape == x.shape


def test_ensemble_names():
    assert ensemble_members("efficientnet-lite0") is None
    assert ensemble_members("efficientnet-lite0, efficientnet-lite1") == [
        "efficientnet-lite0", "efficientnet-lite1"]  # fmt: skip
    with pytest.raises(ValueError, match="needs two or more names separated by commas"):
        ensemble_members("efficientnet-lite0,")
    with pytest.raises(ValueError, match="an ensemble needs two or more models, got 1"):
        EnsembleClassifier([make_tiny_model()])


@pytest.mark.integration
def test_load_model_builds_the_lite0_lite1_ensemble():
    from sai_attack.models import load_model

    ensemble = load_model("efficientnet-lite0,efficientnet-lite1", memory_format="contiguous")
    assert isinstance(ensemble, EnsembleClassifier)
    assert ensemble.input_size == 224
    assert ensemble.name == "efficientnet-lite0,efficientnet-lite1"
    x = torch.rand(1, 3, 224, 224)
    with torch.no_grad():
        expected = (ensemble.members[0](x) + ensemble.members[1](x)) / 2
        torch.testing.assert_close(ensemble(x), expected)
    with pytest.raises(ValueError, match="weights cannot be given for the model ensemble"):
        load_model("efficientnet-lite0,efficientnet-lite1", weights="w.pt")
