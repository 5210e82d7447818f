import math
import re

import pytest
import torch

from conftest import make_tiny_model, textured_images
from sai_attack import superpixels as sp
from sai_attack.attacks import ATTACKS, FGM, IFGM, MIFGM, MSAIFGM, SAFGM, SAIFGM, delta_eff, epsilon
from sai_attack.attacks.base import (
    l2_norm,
    margin_loss,
    project_l2,
    project_linf,
    scale_l2,
    scale_linf,
)

SUPERPIXEL_ATTACKS = [SAFGM, SAIFGM, MSAIFGM]
PIXEL_ATTACKS = [FGM, IFGM, MIFGM]


def _labels_for(model, x):
    with torch.no_grad():
        return model(x).argmax(1)


def _constant_per_superpixel(r, labels):
    k = int(labels.max()) + 1
    hi = sp.reduce(r, labels, k, "amax")
    lo = sp.reduce(r, labels, k, "amin")
    return torch.allclose(hi, lo, atol=1e-6)


def test_epsilon_is_delta_sqrt_n():
    assert epsilon(4, (3, 224, 224)) == pytest.approx(4 * math.sqrt(3 * 224 * 224) / 255)
    r = torch.full((2, 3, 8, 8), 4 / 255)
    torch.testing.assert_close(delta_eff(r), torch.tensor([4.0, 4.0], dtype=torch.float64))


def test_norm_helpers():
    r = torch.randn(3, 3, 4, 4)
    torch.testing.assert_close(l2_norm(scale_l2(r, 2.0)), torch.full((3,), 2.0))
    small = r / l2_norm(r).view(-1, 1, 1, 1) * 0.5
    torch.testing.assert_close(project_l2(small, 1.0), small)
    torch.testing.assert_close(l2_norm(project_l2(r * 10, 1.0)), torch.ones(3))


def test_margin_loss():
    logits = torch.tensor([[1.0, 3.0, 2.0]])
    torch.testing.assert_close(margin_loss(logits, torch.tensor([1])), torch.tensor([-1.0]))
    torch.testing.assert_close(margin_loss(logits, torch.tensor([0])), torch.tensor([2.0]))


@pytest.mark.parametrize("cls", SUPERPIXEL_ATTACKS)
@pytest.mark.parametrize("align", [True, False])
def test_superpixel_perturbation_constant_and_masked(cls, align, tiny_model):
    x = textured_images(3, 32)
    y = _labels_for(tiny_model, x)
    atk = cls(tiny_model, delta=2, steps=3, superpixel_size=4, align_mask=align, phi=0.4)
    res = atk.run(x, y)
    r = res.perturbation
    mask = res.mask
    assert mask.shape == (3, 1, 32, 32)
    assert 0 < float(mask.mean()) < 1
    assert torch.all(r[mask.expand_as(r) == 0] == 0)
    # Inside the mask the perturbation is constant per superpixel (restricted to masked pixels).
    masked_labels = torch.where(mask[:, 0] > 0, res.superpixels, res.superpixels.max() + 1)
    assert _constant_per_superpixel(r * mask, masked_labels)
    if align:
        assert _constant_per_superpixel(r, res.superpixels)


@pytest.mark.parametrize("cls", SUPERPIXEL_ATTACKS)
def test_exact_budget_hits_eps(cls, tiny_model):
    x = textured_images(2, 32)
    y = _labels_for(tiny_model, x)
    atk = cls(tiny_model, delta=1.0, steps=4)
    assert atk.budget == "exact"
    res = atk.run(x, y)
    torch.testing.assert_close(
        l2_norm(res.perturbation), torch.full((2,), res.eps), rtol=1e-4, atol=0
    )
    torch.testing.assert_close(
        delta_eff(res.perturbation).float(), torch.full((2,), 1.0), rtol=1e-4, atol=0
    )


@pytest.mark.parametrize("cls", SUPERPIXEL_ATTACKS + PIXEL_ATTACKS)
def test_within_budget_never_exceeds_eps(cls, tiny_model):
    x = torch.rand(3, 3, 24, 24)  # some pixels at the box edges: clipping only shrinks r
    y = _labels_for(tiny_model, x)
    atk = cls(tiny_model, delta=8, steps=5, budget="within")
    res = atk.run(x, y)
    assert torch.all(l2_norm(res.perturbation) <= res.eps * (1 + 1e-5))
    assert float(res.adv.min()) >= 0
    assert float(res.adv.max()) <= 1


@pytest.mark.parametrize("cls", PIXEL_ATTACKS)
def test_pixel_exact_budget(cls, tiny_model):
    x = textured_images(2, 24)
    y = _labels_for(tiny_model, x)
    res = cls(tiny_model, delta=1, steps=3, budget="exact").run(x, y)
    torch.testing.assert_close(
        l2_norm(res.perturbation), torch.full((2,), res.eps), rtol=1e-4, atol=0
    )


@pytest.mark.parametrize("name", list(ATTACKS))
def test_batch_equals_single_runs(name, tiny_model):
    x = textured_images(4, 32, seed=3)
    y = _labels_for(tiny_model, x)
    atk = ATTACKS[name](tiny_model, delta=3, steps=4, seed=11)
    batch = atk(x, y)
    singles = torch.cat([atk(x[i : i + 1], y[i : i + 1]) for i in range(4)])
    torch.testing.assert_close(batch, singles, atol=1e-5, rtol=0)


def test_per_sample_seeds_change_only_their_sample(tiny_model):
    x = textured_images(2, 32)
    y = _labels_for(tiny_model, x)
    atk = SAIFGM(tiny_model, delta=2, steps=1, init_scale=5.0)
    a = atk(x, y, seeds=[1, 2])
    b = atk(x, y, seeds=[1, 3])
    torch.testing.assert_close(a[0], b[0])
    assert not torch.allclose(a[1], b[1])
    torch.testing.assert_close(atk(x, y, seeds=[1, 2]), a)


@pytest.mark.parametrize("name", list(ATTACKS))
def test_inputs_untouched_and_train_state_restored(name, tiny_model):
    x = textured_images(2, 32)
    y = _labels_for(tiny_model, x)
    x_copy, y_copy = x.clone(), y.clone()
    tiny_model.train()
    ATTACKS[name](tiny_model, delta=2, steps=2)(x, y)
    assert tiny_model.training
    tiny_model.eval()
    ATTACKS[name](tiny_model, delta=2, steps=2)(x, y)
    assert not tiny_model.training
    assert torch.equal(x, x_copy)
    assert torch.equal(y, y_copy)
    assert all(p.grad is None for p in tiny_model.parameters())


@pytest.mark.parametrize("cls", [IFGM, SAIFGM, MSAIFGM])
def test_targeted_reaches_target(cls):
    model = make_tiny_model(num_classes=5, seed=2)
    x = textured_images(4, 32, seed=5)
    with torch.no_grad():
        logits = model(x)
    y = logits.argmax(1)
    target = logits.topk(2, dim=1).indices[:, 1]  # the runner-up class
    adv = cls(model, delta=20, steps=10, targeted=True)(x, y, targets=target)
    assert torch.equal(_labels_for(model, adv), target)


@pytest.mark.parametrize("cls", [IFGM, SAIFGM])
def test_untargeted_success_on_toy_model(cls):
    model = make_tiny_model(num_classes=5, seed=2)
    x = textured_images(4, 32, seed=5)
    y = _labels_for(model, x)
    adv = cls(model, delta=40, steps=10)(x, y)
    assert torch.all(_labels_for(model, adv) != y)


@pytest.mark.parametrize("mode", ["mean", "max"])
def test_gradient_modes_keep_invariants(mode, tiny_model):
    x = textured_images(2, 32)
    y = _labels_for(tiny_model, x)
    res = SAIFGM(tiny_model, delta=2, steps=3, grad_mode=mode, phi=0).run(x, y)
    assert _constant_per_superpixel(res.perturbation, res.superpixels)
    torch.testing.assert_close(
        l2_norm(res.perturbation), torch.full((2,), res.eps), rtol=1e-4, atol=0
    )


def test_precomputed_superpixels_and_mask_are_used(tiny_model):
    x = textured_images(2, 16)
    y = _labels_for(tiny_model, x)
    labels = sp.stack_labels([sp.segment(torch.zeros(16, 16, 3).numpy(), "grid", size=8)] * 2)
    mask = torch.zeros(2, 1, 16, 16)
    mask[..., :8, :] = 1
    res = SAIFGM(tiny_model, delta=2, steps=2).run(x, y, superpixels=labels, mask=mask)
    assert torch.equal(res.superpixels, labels)
    assert torch.all(res.perturbation[..., 8:, :] == 0)
    assert _constant_per_superpixel(res.perturbation, labels)
    r = res.perturbation
    assert torch.allclose(r[:, :, 0, 0], r[:, :, 7, 7], atol=1e-6)  # one 8x8 superpixel


def test_pixel_attack_with_mask(tiny_model):
    x = textured_images(2, 16)
    y = _labels_for(tiny_model, x)
    mask = torch.zeros(2, 1, 16, 16)
    mask[..., :, :5] = 1
    r = IFGM(tiny_model, delta=2, steps=3).run(x, y, mask=mask).perturbation
    assert torch.all(r[..., 5:] == 0)
    assert torch.any(r[..., :5] != 0)


def test_fgm_and_safgm_take_one_step(tiny_model):
    assert FGM(tiny_model, steps=10).steps == 1
    assert SAFGM(tiny_model, steps=10).steps == 1
    x = textured_images(1, 16)
    y = _labels_for(tiny_model, x)
    fgm = FGM(tiny_model, delta=2)(x, y)
    ifgm1 = IFGM(tiny_model, delta=2, steps=1)(x, y)
    torch.testing.assert_close(fgm, ifgm1)


def test_momentum_zero_mifgm_equals_ifgm(tiny_model):
    x = textured_images(2, 16)
    y = _labels_for(tiny_model, x)
    a = MIFGM(tiny_model, delta=2, steps=4, momentum=0.0)(x, y)
    b = IFGM(tiny_model, delta=2, steps=4)(x, y)
    torch.testing.assert_close(a, b)


def test_custom_loss_callable(tiny_model):
    x = textured_images(1, 16)
    y = _labels_for(tiny_model, x)
    calls = []

    def loss(logits, labels):
        calls.append(logits.shape)
        return -logits.gather(1, labels.view(-1, 1)).squeeze(1)

    IFGM(tiny_model, delta=1, steps=2, loss=loss)(x, y)
    assert len(calls) == 2


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"delta": 0}, "delta must be a finite number in (0, 255], got 0"),
        ({"delta": -1}, "delta must be a finite number in (0, 255], got -1"),
        ({"delta": 1e300}, "delta must be a finite number in (0, 255], got 1e+300"),
        ({"delta": float("nan")}, "delta must be a finite number, got nan"),
        ({"steps": 0}, "steps must be an integer in [1, 100000], got 0"),
        ({"steps": 2.5}, "steps must be an integer, got 2.5"),
        ({"loss": "hinge"}, "loss 'hinge' is unknown; choose one of ce, cw"),
        ({"budget": "loose"}, "budget 'loose' is unknown; choose one of within, exact"),
        ({"phi": 1.5}, "phi must be a finite number in [0, 1], got 1.5"),
        ({"grad_mode": "median"}, "grad_mode 'median' is unknown; choose one of noise, mean, max"),
        (
            {"superpixel": "quickshift"},
            "superpixel 'quickshift' is unknown; "
            "choose one of slic, slic-skimage, lsc, seeds, grid, slic-torch",
        ),
        ({"momentum": -1}, "momentum must be a finite number in [0, 100], got -1"),
    ],
)
def test_constructor_rejects_bad_parameters(kwargs, message, tiny_model):
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        (MSAIFGM if "momentum" in kwargs else SAIFGM)(tiny_model, **kwargs)


def test_run_rejects_bad_inputs(tiny_model):
    atk = IFGM(tiny_model)
    with pytest.raises(
        ValueError, match="images must be \\(B, 3, H, W\\), got shape \\(3, 8, 8\\)"
    ):
        atk(torch.rand(3, 8, 8), torch.tensor([0]))
    with pytest.raises(ValueError, match="images must lie in \\[0, 1\\]"):
        atk(torch.rand(1, 3, 8, 8) * 2, torch.tensor([0]))
    with pytest.raises(ValueError, match="got 2 labels for 1 images"):
        atk(torch.rand(1, 3, 8, 8), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="targeted attack needs targets"):
        IFGM(tiny_model, targeted=True)(torch.rand(1, 3, 8, 8), torch.tensor([0]))


def test_describe_and_repr(tiny_model):
    atk = MSAIFGM(tiny_model, delta=3, merge_beta=2, momentum=0.5)
    d = atk.describe()
    assert d["method"] == "m-sai-fgm"
    assert d["merge_beta"] == 2
    assert d["momentum"] == 0.5
    assert d["budget"] == "exact"
    assert "delta=3.0" in repr(atk)


# --------------------------------------------------------------------------------------------
# L-infinity (norm="linf"): budget delta/255, sign steps, the box
# --------------------------------------------------------------------------------------------


def test_linf_epsilon_and_helpers():
    assert epsilon(8, (3, 224, 224), "linf") == pytest.approx(8 / 255)
    assert epsilon(8, (3, 224, 224), "l2") == epsilon(8, (3, 224, 224))
    r = torch.tensor([[-0.5, 0.0, 0.01, 0.2]])
    torch.testing.assert_close(scale_linf(r, 0.1), torch.tensor([[-0.1, 0.0, 0.1, 0.1]]))
    torch.testing.assert_close(project_linf(r, 0.1), torch.tensor([[-0.1, 0.0, 0.01, 0.1]]))
    grad_in = r.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad((scale_linf(grad_in, 0.1) * 3).sum(), grad_in)
    torch.testing.assert_close(grad, torch.full_like(r, 3.0))  # straight through


@pytest.mark.parametrize("name", list(ATTACKS))
@pytest.mark.parametrize("budget", ["within", "exact"])
def test_linf_stays_in_the_box(name, budget, tiny_model):
    x = torch.rand(3, 3, 24, 24)  # pixels at the edges too: clipping to [0, 1] only shrinks r
    y = _labels_for(tiny_model, x)
    res = ATTACKS[name](tiny_model, delta=8, steps=5, budget=budget, norm="linf").run(x, y)
    assert res.eps == pytest.approx(8 / 255)
    assert float((res.adv - x).abs().max()) <= res.eps + 1e-6
    assert float(res.adv.min()) >= 0
    assert float(res.adv.max()) <= 1
    assert float((res.adv - x).abs().max()) > 0.5 * res.eps  # it did move


@pytest.mark.parametrize("cls", SUPERPIXEL_ATTACKS)
@pytest.mark.parametrize("budget", ["within", "exact"])
def test_linf_superpixel_constant_and_masked(cls, budget, tiny_model):
    x = textured_images(3, 32)  # in [0.2, 0.8]: nothing is clipped at delta 8
    y = _labels_for(tiny_model, x)
    atk = cls(tiny_model, delta=8, steps=4, superpixel_size=4, phi=0.4, budget=budget, norm="linf")
    res = atk.run(x, y)
    r, mask = res.perturbation, res.mask
    assert 0 < float(mask.mean()) < 1
    assert torch.all(r[mask.expand_as(r) == 0] == 0)
    assert _constant_per_superpixel(r, res.superpixels)
    assert float(r.abs().max()) <= res.eps + 1e-6


@pytest.mark.parametrize("cls", SUPERPIXEL_ATTACKS)
def test_linf_exact_puts_perturbed_superpixels_at_eps(cls, tiny_model):
    x = textured_images(2, 32)
    y = _labels_for(tiny_model, x)
    atk = cls(tiny_model, delta=8, steps=4, norm="linf")
    assert atk.budget == "exact"
    res = atk.run(x, y)
    inside = res.perturbation[res.mask.expand_as(res.perturbation) > 0]
    torch.testing.assert_close(inside.abs(), torch.full_like(inside, res.eps), rtol=0, atol=1e-6)


def test_linf_ifgm_equals_torchattacks_pgd_and_the_margin_loss_differs(tiny_model):
    torchattacks = pytest.importorskip("torchattacks")
    x = textured_images(3, 32, seed=4)
    y = _labels_for(tiny_model, x)
    eps = 8 / 255
    reference = torchattacks.PGD(tiny_model, eps=eps, alpha=eps / 5, steps=5, random_start=False)
    expected = reference(x, y)
    ours = IFGM(tiny_model, delta=8, steps=5, norm="linf")(x, y)
    torch.testing.assert_close(ours, expected, atol=1e-6, rtol=0)
    margin = IFGM(tiny_model, delta=8, steps=5, norm="linf", loss="cw")
    assert not torch.equal(margin(x, y), expected)


@pytest.mark.parametrize("cls", PIXEL_ATTACKS)
def test_linf_pixel_exact_budget(cls, tiny_model):
    x = textured_images(2, 24)
    y = _labels_for(tiny_model, x)
    res = cls(tiny_model, delta=4, steps=3, budget="exact", norm="linf").run(x, y)
    moved = res.perturbation[res.perturbation != 0]
    assert moved.numel() > 0.9 * res.perturbation.numel()
    torch.testing.assert_close(moved.abs(), torch.full_like(moved, res.eps), rtol=0, atol=1e-6)


@pytest.mark.parametrize("name", list(ATTACKS))
def test_linf_batch_equals_single_runs_and_inputs_untouched(name, tiny_model):
    x = textured_images(4, 32, seed=3)
    y = _labels_for(tiny_model, x)
    x_copy, y_copy = x.clone(), y.clone()
    atk = ATTACKS[name](tiny_model, delta=8, steps=4, seed=11, norm="linf")
    batch = atk(x, y)
    singles = torch.cat([atk(x[i : i + 1], y[i : i + 1]) for i in range(4)])
    torch.testing.assert_close(batch, singles, atol=1e-5, rtol=0)
    assert torch.equal(x, x_copy)
    assert torch.equal(y, y_copy)
    assert all(p.grad is None for p in tiny_model.parameters())
    assert atk.describe()["norm"] == "linf"


def test_fgsm_known_answer_on_a_linear_model():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 5))
    x = torch.rand(4, 3, 8, 8)
    y = _labels_for(model, x)
    adv = FGM(model, delta=8, loss="cw", norm="linf")(x, y)
    # The margin loss max_{j != y} z_j - z_y of a linear model has gradient w_j* - w_y.
    with torch.no_grad():
        logits = model(x)
    runner_up = logits.scatter(1, y.view(-1, 1), float("-inf")).argmax(1)
    w = model[1].weight
    grad = (w[runner_up] - w[y]).view_as(x)
    expected = (x + 8 / 255 * grad.sign()).clamp(0, 1)
    torch.testing.assert_close(adv, expected, rtol=0, atol=1e-7)


def test_linf_momentum_zero_mifgm_equals_ifgm(tiny_model):
    x = textured_images(2, 32)
    y = _labels_for(tiny_model, x)
    a = MIFGM(tiny_model, delta=8, steps=3, momentum=0.0, norm="linf")(x, y)
    b = IFGM(tiny_model, delta=8, steps=3, norm="linf")(x, y)
    torch.testing.assert_close(a, b)


def test_norm_is_checked(tiny_model):
    with pytest.raises(ValueError, match="norm 'l1' is unknown"):
        IFGM(tiny_model, norm="l1")
