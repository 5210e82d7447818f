"""The control spaces (issue 14): grid, dct and gaussian templates with K values per channel."""

import numpy as np
import pytest
import torch
from scipy.fft import dctn, idctn

from conftest import make_tiny_model, textured_images
from sai_attack import options
from sai_attack import superpixels as sp
from sai_attack.attacks import SAIFGM, SPACES, Attack, AttentionMask, DCTSpace, GaussianSpace
from sai_attack.attacks.control_spaces import dct_basis, gaussian_basis, gaussian_grid
from sai_attack.attacks.norms import l2_norm
from sai_attack.pipeline import AttackConfig

SIZE = 32  # images are SIZE x SIZE; superpixel size S = 4 gives K = 64 values per channel


@pytest.fixture(scope="module")
def model():
    return make_tiny_model()


@pytest.fixture(scope="module")
def batch(model):
    x = 0.4 + (textured_images(3, SIZE) - 0.2) / 3  # in [0.4, 0.6]: no clipping at delta 2
    with torch.no_grad():
        return x, model(x).argmax(1)


def _attack(model, space, **kwargs):
    kwargs = {"delta": 2, "steps": 3, "budget": "exact", **kwargs}
    return Attack(model, space=space, **kwargs)


def _dct_coefficients(r: torch.Tensor) -> np.ndarray:
    """Orthonormal 2-D DCT-II of every channel: scipy, independent of the library."""
    return dctn(r.double().numpy(), type=2, norm="ortho", axes=(-2, -1))


def _chosen(h: int, w: int, k: int) -> np.ndarray:
    """(H, W) bool: the K lowest frequencies, by brute force in the documented order."""
    pairs = sorted(((u / h) ** 2 + (v / w) ** 2, u, v) for u in range(h) for v in range(w))
    mask = np.zeros((h, w), bool)
    for _, u, v in pairs[:k]:
        mask[u, v] = True
    return mask


def test_the_control_spaces_are_registered_options():
    assert {"dct", "gaussian"} <= set(SPACES)
    assert options.check("space", "dct") == "dct"
    assert SPACES["gaussian"] is GaussianSpace
    assert not DCTSpace.uses_superpixels


# --------------------------------------------------------------------------------------------
# grid: piecewise constant on its blocks
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("norm", ["l2", "linf"])
@pytest.mark.parametrize("phi", [0.0, 0.4])
def test_grid_perturbation_is_constant_on_its_square_blocks(model, batch, norm, phi):
    x, y = batch
    atk = SAIFGM(model, delta=2, steps=3, superpixel="grid", superpixel_size=4, phi=phi, norm=norm)
    r = atk.run(x, y).perturbation  # (B, 3, 32, 32)
    blocks = r.reshape(3, 3, SIZE // 4, 4, SIZE // 4, 4)  # (B, C, rows, 4, cols, 4)
    spread = blocks.amax(dim=(3, 5)) - blocks.amin(dim=(3, 5))
    assert float(spread.max()) <= 1e-6  # adv - x: float rounding of x + r only
    assert float(r.abs().max()) > 0


# --------------------------------------------------------------------------------------------
# dct: the span of the K lowest frequencies
# --------------------------------------------------------------------------------------------


def test_dct_basis_is_the_scaled_orthonormal_dct_of_the_lowest_frequencies():
    h, w, k = 8, 6, 7
    basis = dct_basis(h, w, k)
    assert basis.k == k
    images = basis.paint(torch.eye(k, dtype=torch.float64)[None])[0]  # (K, H, W)
    expected_mask = _chosen(h, w, k)
    scale = np.sqrt(h * w / k)
    found = np.zeros((h, w), bool)
    for image in images.numpy():
        coefficients = dctn(image, norm="ortho") / scale
        u, v = np.unravel_index(np.abs(coefficients).argmax(), coefficients.shape)
        one_hot = np.zeros((h, w))
        one_hot[u, v] = 1.0
        np.testing.assert_allclose(coefficients, one_hot, atol=1e-12)
        found[u, v] = True
    np.testing.assert_array_equal(found, expected_mask)
    # ties: (0, 1) and (1, 0) of a square image have the same frequency; u = 0 comes first
    square = dct_basis(4, 4, 2).paint(torch.tensor([[[0.0, 1.0]]], dtype=torch.float64))[0, 0]
    one_hot = np.zeros((4, 4))
    one_hot[0, 1] = 1.0
    expected = idctn(one_hot, norm="ortho") * np.sqrt(16 / 2)
    np.testing.assert_allclose(square.numpy(), expected, atol=1e-12)


@pytest.mark.parametrize(
    ("norm", "budget"), [("l2", "exact"), ("l2", "within"), ("linf", "within")]
)
def test_dct_perturbation_lies_in_the_span_of_the_k_lowest_frequencies(model, batch, norm, budget):
    x, y = batch
    space = DCTSpace(sp.SuperpixelConfig(size=4))
    r = _attack(model, space, norm=norm, budget=budget, delta=2 if norm == "l2" else 4).run(x, y)
    r = r.perturbation
    k = space.count((SIZE, SIZE))
    assert k == SIZE * SIZE // 16
    chosen = _chosen(SIZE, SIZE, k)
    coefficients = _dct_coefficients(r)  # (B, 3, H, W)
    outside = (coefficients[..., ~chosen] ** 2).sum()
    assert outside <= 1e-10 * (coefficients**2).sum()
    # reconstructing from the K chosen coefficients alone gives the perturbation back
    kept = np.where(chosen, coefficients, 0.0)
    rebuilt = idctn(kept, type=2, norm="ortho", axes=(-2, -1))
    np.testing.assert_allclose(rebuilt, r.double().numpy(), atol=1e-6)


def test_dct_count_comes_from_the_superpixel_settings():
    assert DCTSpace(sp.SuperpixelConfig(n_segments=10)).count((8, 8)) == 10
    assert DCTSpace(sp.SuperpixelConfig(size=2)).count((8, 8)) == 16
    assert DCTSpace(sp.SuperpixelConfig(n_segments=1000)).count((8, 8)) == 64  # at most H*W
    assert DCTSpace(sp.SuperpixelConfig(n_segments=10)).basis((8, 8)).k == 10
    with pytest.raises(ValueError, match=r"the dct space needs 1 <= K <= H\*W = 64, got K = 65"):
        dct_basis(8, 8, 65)


# --------------------------------------------------------------------------------------------
# gaussian: smooth, a soft grid
# --------------------------------------------------------------------------------------------


def _energy_above(r: torch.Tensor, rows: int, cols: int) -> float:
    """Share of the energy at spatial frequencies above 1/spacing in either direction.

    DCT index u is frequency u / (2H) cycles per pixel, so 1/spacing = rows/H is u = 2 * rows.
    """
    c = _dct_coefficients(r) ** 2
    high = c[..., 2 * rows :, :].sum() + c[..., : 2 * rows, 2 * cols :].sum()
    return float(high / c.sum())


def test_gaussian_perturbation_has_no_energy_above_its_cutoff_unlike_the_grid(model, batch):
    x, y = batch
    rows, cols = gaussian_grid(SIZE, SIZE, 64)
    assert (rows, cols) == (8, 8)
    smooth = _attack(model, GaussianSpace(sp.SuperpixelConfig(size=4))).run(x, y).perturbation
    blocky = SAIFGM(model, delta=2, steps=3, superpixel="grid", superpixel_size=4, phi=0)
    blocky = blocky.run(x, y).perturbation
    assert _energy_above(smooth, rows, cols) < 1e-4
    assert _energy_above(blocky, rows, cols) > 1e-2  # the same K, piecewise constant: edges


def test_gaussian_bumps_sum_to_one_and_follow_the_count():
    basis = gaussian_basis(12, 20, 15)
    assert gaussian_grid(12, 20, 15) == (3, 5)
    assert basis.k == 15
    ones = basis.paint(torch.ones(1, 1, 15, dtype=torch.float64))
    torch.testing.assert_close(ones, torch.ones(1, 1, 12, 20, dtype=torch.float64))
    one_bump = basis.paint(torch.eye(15, dtype=torch.float64)[None, 7:8])[0, 0]  # centre cell
    assert np.unravel_index(int(one_bump.argmax()), (12, 20)) in {(5, 9), (5, 10), (6, 9), (6, 10)}
    assert float(one_bump.min()) > 0  # smooth: no exact zeros, no edges
    with pytest.raises(ValueError, match="the gaussian space needs K >= 1, got K = 0"):
        gaussian_grid(4, 4, 0)


# --------------------------------------------------------------------------------------------
# Budgets, masks, batches, inputs (both spaces)
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["dct", "gaussian"])
@pytest.mark.parametrize("norm", ["l2", "linf"])
@pytest.mark.parametrize("budget", ["within", "exact"])
def test_budget_mask_and_batch_invariants(model, batch, name, norm, budget):
    x, y = batch
    x0 = x.clone()
    space = SPACES[name].from_settings(sp.SuperpixelConfig(size=4), "noise", 1.0)
    atk = _attack(model, space, norm=norm, budget=budget, mask=AttentionMask(phi=0.4), delta=4)
    res = atk.run(x, y, seeds=[3, 4, 5])
    assert torch.equal(x, x0)  # inputs untouched
    r, m = res.perturbation, res.mask.expand_as(res.perturbation)
    assert torch.all(r[m == 0] == 0)  # nothing outside the attention mask
    assert 0 < float(m.float().mean()) < 1
    if norm == "l2":
        norms = l2_norm(r)
        assert float(norms.max()) <= res.eps * (1 + 1e-5)
        if budget == "exact":
            torch.testing.assert_close(norms, torch.full_like(norms, res.eps), rtol=1e-5, atol=0)
    else:
        assert float(r.abs().max()) <= res.eps * (1 + 1e-5)
        if budget == "exact":  # every perturbed value at +-eps
            inside = r[m == 1]
            torch.testing.assert_close(inside.abs(), torch.full_like(inside, res.eps))
        else:  # rescaled, not clipped: the peak is exactly at eps
            assert float(r.abs().max()) == pytest.approx(res.eps, rel=1e-5)
    alone = atk.run(x[1:2], y[1:2], seeds=[4])
    torch.testing.assert_close(alone.adv, res.adv[1:2], atol=1e-6, rtol=0)
    assert res.superpixels is None


def test_control_spaces_attack_and_are_seeded(model, batch):
    x, y = batch
    for name in ("dct", "gaussian"):
        atk = _attack(model, SPACES[name](sp.SuperpixelConfig(size=4)), random_start=True, steps=1)
        a = atk.run(x, y, seeds=[1, 2, 3]).adv
        b = atk.run(x, y, seeds=[1, 2, 3]).adv
        c = atk.run(x, y, seeds=[9, 2, 3]).adv
        assert torch.equal(a, b)
        assert not torch.equal(a[0], c[0])
        assert torch.equal(a[1:], c[1:])
        with torch.no_grad():
            loss = [float(torch.nn.functional.cross_entropy(model(v), y)) for v in (x, a)]
        assert loss[1] > loss[0]  # the gradient w.r.t. the coefficients ascends


def test_the_pipeline_builds_control_spaces_and_refuses_what_needs_superpixels(model):
    config = AttackConfig(method="sai-fgm", space="dct", n_segments=30, phi=0.0)
    atk = config.build_attack(model)
    assert isinstance(atk.space, DCTSpace)
    assert atk.space.count((SIZE, SIZE)) == 30
    assert not config.uses_superpixels
    assert atk.describe()["space"] == "dct"
    with pytest.raises(
        ValueError, match="grad_mode must be noise for the gaussian space, got 'mean'"
    ):
        AttackConfig(method="sai-fgm", space="gaussian", grad_mode="mean").build_attack(model)
    with pytest.raises(
        ValueError, match="texture_weight 2 needs a superpixel space, got space 'dct'"
    ):
        AttackConfig(method="sai-fgm", space="dct", texture_weight=2.0)
    with pytest.raises(
        ValueError, match="texture_weight needs superpixels; the dct space has none"
    ):
        DCTSpace.from_settings(sp.SuperpixelConfig(), "noise", 1.0, texture_weight=1.0)
