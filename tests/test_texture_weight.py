"""Stego-aware SAI (issue 14): superpixel noise weighted by the HILL texture cost."""

import numpy as np
import pytest
import torch

from conftest import make_tiny_model
from sai_attack import options
from sai_attack import superpixels as sp
from sai_attack.attacks import SAIFGM, Attack, AttentionMask, SuperpixelSpace
from sai_attack.attacks.norms import l2_norm
from sai_attack.detection import hill
from sai_attack.pipeline import AttackConfig
from sai_attack.texture_cost import hill_cost, superpixel_log_costs, texture_weights

SIZE = 32


def _half_textured(batch: int = 2, seed: int = 0) -> torch.Tensor:
    """Left half: strong pixel noise (cheap for HILL); right half: flat gray (expensive)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.full((batch, 3, SIZE, SIZE), 0.5)
    x[..., : SIZE // 2] = 0.3 + 0.4 * torch.rand(batch, 3, SIZE, SIZE // 2, generator=g)
    return torch.round(x * 255) / 255  # 8-bit values, as loaded images are


def _grid(batch: int, size: int = 8) -> torch.Tensor:
    labels = sp.segment(np.zeros((SIZE, SIZE, 3), np.uint8), "grid", size=size)
    return sp.stack_labels([labels] * batch)


@pytest.fixture(scope="module")
def model():
    return make_tiny_model()


@pytest.fixture(scope="module")
def batch(model):
    x = _half_textured(3)
    with torch.no_grad():
        return x, model(x).argmax(1)


def test_one_home_for_the_hill_cost():
    assert hill.hill_cost is hill_cost


def test_superpixel_costs_and_weights_known_answer():
    x = _half_textured(1)
    labels = _grid(1)  # 4 x 4 blocks of 8 x 8 pixels
    image = (x[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    cost = hill_cost(image).astype(np.float64)
    flat = labels[0].numpy()
    expected = np.array([np.log(cost[flat == k]).mean() for k in range(16)])
    logs = superpixel_log_costs(x, labels)
    np.testing.assert_allclose(logs[0].numpy(), expected, rtol=1e-12)
    for w in (0.5, 2.0):
        weights = texture_weights(x, labels, w)
        assert weights.shape == (1, 1, 16)
        np.testing.assert_allclose(
            weights[0, 0].double().numpy(),
            np.exp(-w * (expected - expected.min())),
            rtol=1e-6,
        )
        assert float(weights.max()) == 1.0  # the most textured superpixel keeps its noise
    weights = texture_weights(x, labels, 1.0)[0, 0].view(4, 4)
    # textured columns 0-1 keep far more than the flat columns 2-3 (interior blocks)
    assert float(weights[1:3, :1].min()) > 100 * float(weights[1:3, 3:].max())


def test_weight_zero_is_exactly_one_and_padding_slots_are_zero():
    x = _half_textured(2)
    labels = torch.stack([_grid(1)[0], _grid(1, size=16)[0]])  # 16 and 4 superpixels
    assert torch.equal(texture_weights(x, labels, 0.0)[0], torch.ones(1, 16))
    weights = texture_weights(x, labels, 1.5)
    assert weights.shape == (2, 1, 16)
    assert torch.all(weights[1, 0, 4:] == 0)
    assert torch.all(weights[1, 0, :4] > 0)
    assert float(weights[1].max()) == 1.0
    with pytest.raises(ValueError, match="texture_weight must be >= 0, got -1"):
        texture_weights(x, labels, -1)


def test_texture_weight_zero_equals_sai_fgm_byte_for_byte(model, batch):
    x, y = batch
    plain = SAIFGM(model, delta=4, steps=3, superpixel_size=8, phi=0.3)(x, y)
    config = AttackConfig(
        method="sai-fgm", delta=4, steps=3, superpixel_size=8, phi=0.3, texture_weight=0.0
    )
    assert torch.equal(config.build_attack(model)(x, y), plain)
    spaced = Attack(
        model, delta=4, steps=3, budget="exact", mask=AttentionMask(phi=0.3),
        space=SuperpixelSpace(sp.SuperpixelConfig(size=8), texture_weight=0.0),
    )  # fmt: skip
    assert torch.equal(spaced(x, y), plain)


def _textured_share(r: torch.Tensor) -> torch.Tensor:
    """Share of each image's perturbation energy in the textured left half, (B,)."""
    energy = (r.double() ** 2).sum(dim=1)  # (B, H, W)
    return energy[..., : SIZE // 2].sum(dim=(1, 2)) / energy.sum(dim=(1, 2))


def test_texture_weight_moves_the_perturbation_to_textured_superpixels(model, batch):
    x, y = batch
    shares, norms = [], []
    for w in (0.0, 0.5, 2.0):
        config = AttackConfig(
            method="sai-fgm", delta=2, steps=3, superpixel="grid", superpixel_size=8, phi=0.0,
            texture_weight=w,
        )  # fmt: skip
        res = config.build_attack(model).run(x, y)
        shares.append(_textured_share(res.perturbation))
        norms.append(l2_norm(res.perturbation))
    assert torch.all(shares[1] > shares[0])
    assert torch.all(shares[2] > shares[1])
    assert torch.all(shares[2] > 0.99)
    for n in norms:  # matched norm: every weight spends the whole budget
        torch.testing.assert_close(n, norms[0], rtol=1e-4, atol=0)


def test_texture_weighted_attack_is_batch_independent_and_leaves_inputs(model, batch):
    x, y = batch
    x0 = x.clone()
    atk = AttackConfig(method="sai-fgm", delta=4, steps=2, superpixel_size=8, texture_weight=1.0)
    atk = atk.build_attack(model)
    res = atk.run(x, y, seeds=[1, 2, 3])
    assert torch.equal(x, x0)
    alone = atk.run(x[2:3], y[2:3], seeds=[3])
    torch.testing.assert_close(alone.adv, res.adv[2:3], atol=1e-6, rtol=0)
    k = int(res.superpixels.max()) + 1
    r = res.perturbation
    hi, lo = sp.reduce(r, res.superpixels, k, "amax"), sp.reduce(r, res.superpixels, k, "amin")
    torch.testing.assert_close(hi, lo, atol=1e-6, rtol=0)  # still constant per superpixel


def test_linf_exact_ignores_the_weights_as_documented(model, batch):
    x, y = batch

    def run(w):
        space = SuperpixelSpace(sp.SuperpixelConfig(size=8), texture_weight=w)
        return Attack(model, delta=4, steps=3, norm="linf", budget="exact", space=space)(x, y)

    assert torch.equal(run(0.0), run(1.0))


def test_texture_weight_option_checks_and_records():
    assert options.default("texture_weight") == 0.0
    with pytest.raises(ValueError, match=r"texture_weight must be a finite number in \[0, 100\]"):
        AttackConfig(texture_weight=-1.0)
    with pytest.raises(
        ValueError, match="texture_weight 1 needs a superpixel space, got space 'pixels'"
    ):
        AttackConfig(method="ifgm", texture_weight=1.0)
    assert AttackConfig(texture_weight=2.0).record()["texture_weight"] == 2.0
    assert SuperpixelSpace(texture_weight=3).describe()["texture_weight"] == 3.0
