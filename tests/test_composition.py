"""The composable parts: spaces x masks x optimisers x norms, and the presets built from them."""

import itertools

import pytest
import torch
import torch.nn.functional as F

from conftest import make_tiny_model, textured_images
from sai_attack import options
from sai_attack import superpixels as sp
from sai_attack.attacks import (
    ATTACKS,
    IFGM,
    MIFGM,
    MSAIFGM,
    OPTIMIZERS,
    SAIFGM,
    Attack,
    AttentionMask,
    Mask,
    Optimizer,
    PixelSpace,
    SuperpixelSpace,
)
from sai_attack.attacks import (
    SPACES as SPACE_NAMES,
)
from sai_attack.attacks.norms import l2_norm
from sai_attack.attacks.spaces import make_space
from sai_attack.pipeline import AttackConfig

SPACES = {  # every registered space, with a template of 4x4-pixel superpixels where one is used
    name: lambda name=name: make_space(name, sp.SuperpixelConfig(size=4)) for name in SPACE_NAMES
}
MASKS = {"none": lambda: Mask(), "attention": lambda: AttentionMask(phi=0.4, align=True)}


def _labels_for(model, x):
    with torch.no_grad():
        return model(x).argmax(1)


def _constant_per_superpixel(r, labels):
    k = int(labels.max()) + 1
    hi, lo = sp.reduce(r, labels, k, "amax"), sp.reduce(r, labels, k, "amin")
    return torch.allclose(hi, lo, atol=1e-6)


@pytest.fixture(scope="module")
def model():
    return make_tiny_model()


@pytest.fixture(scope="module")
def batch(model):
    x = 0.4 + (textured_images(4, 32) - 0.2) / 3  # in [0.4, 0.6]: no clipping at delta 2
    return x, _labels_for(model, x)


def test_presets_equal_their_parts(model, batch):
    x, y = batch
    pairs = [
        (IFGM(model, delta=4, steps=3), Attack(model, delta=4, steps=3)),
        (
            MIFGM(model, delta=4, steps=3, momentum=0.5),
            Attack(model, delta=4, steps=3, optimizer="momentum", momentum=0.5),
        ),
        (
            SAIFGM(model, delta=4, steps=3, superpixel_size=4, phi=0.4),
            Attack(
                model,
                delta=4,
                steps=3,
                budget="exact",
                space=SuperpixelSpace(sp.SuperpixelConfig(size=4)),
                mask=AttentionMask(phi=0.4),
            ),
        ),
        (
            MSAIFGM(model, delta=4, steps=3, superpixel_size=4, norm="linf"),
            SAIFGM(model, delta=4, steps=3, superpixel_size=4, norm="linf", optimizer="momentum"),
        ),
    ]
    for preset, parts in pairs:
        assert torch.equal(preset(x, y), parts(x, y)), type(preset).__name__


def test_optimizer_override_and_one_step(model):
    assert ATTACKS["fgm"](model, steps=7).steps == 1
    assert ATTACKS["fgm"](model, steps=7, optimizer="iterative").steps == 7
    assert IFGM(model, optimizer="nesterov").momentum == 1.0
    assert IFGM(model).momentum is None
    assert SAIFGM(model, optimizer="nesterov").describe()["optimizer"] == "nesterov"
    with pytest.raises(ValueError, match="optimizer 'adam' is unknown; choose one of one-step, "):
        IFGM(model, optimizer="adam")


@pytest.mark.parametrize(
    ("space", "mask", "optimizer", "norm"),
    list(itertools.product(SPACES, MASKS, OPTIMIZERS, ("l2", "linf"))),
)
def test_every_combination_keeps_the_invariants(model, batch, space, mask, optimizer, norm):
    x, y = batch
    x0 = x.clone()
    atk = Attack(
        model, delta=2, steps=3, norm=norm, budget="within", space=SPACES[space](),
        mask=MASKS[mask](), optimizer=optimizer, random_start=optimizer == "iterative",
    )  # fmt: skip
    res = atk.run(x, y, seeds=[1, 2, 3, 4])
    assert torch.equal(x, x0)  # inputs untouched
    r = res.perturbation
    if norm == "linf":
        assert float(r.abs().max()) <= res.eps + 1e-6
    else:
        assert float(l2_norm(r).max()) <= res.eps * (1 + 1e-5)
    assert float(r.abs().max()) > 0
    if res.mask is not None:
        assert torch.all(r[res.mask.expand_as(r) == 0] == 0)
    if res.superpixels is not None:
        assert _constant_per_superpixel(r, res.superpixels)
    # batch-size independence: the second image alone gives the same result
    alone = atk.run(x[1:2], y[1:2], seeds=[2])
    torch.testing.assert_close(alone.adv, res.adv[1:2], atol=1e-6, rtol=0)


def _reference_ni_fgsm(model, x, y, eps, steps, mu):
    """NI-FGSM as Lin et al. (ICLR 2020) publish it, written independently of the library."""
    alpha = eps / steps
    adv, g = x.clone(), torch.zeros_like(x)
    for _ in range(steps):
        nes = (adv + alpha * mu * g).requires_grad_(True)
        loss = F.cross_entropy(model(nes), y, reduction="sum")
        (grad,) = torch.autograd.grad(loss, nes)
        g = mu * g + grad / grad.abs().mean(dim=(1, 2, 3), keepdim=True)
        adv = adv + alpha * g.sign()
        adv = (x + (adv - x).clamp(-eps, eps)).clamp(0, 1)
    return adv


def test_nesterov_equals_the_published_ni_fgsm(model, batch):
    x, y = batch
    atk = IFGM(model, delta=8, steps=5, norm="linf", optimizer="nesterov")
    expected = _reference_ni_fgsm(model, x, y, 8 / 255, 5, 1.0)
    torch.testing.assert_close(atk(x, y), expected, atol=1e-6, rtol=0)
    plain = IFGM(model, delta=8, steps=5, norm="linf", optimizer="momentum")(x, y)
    assert not torch.equal(plain, expected)  # the look-ahead changes the result


def test_random_start_is_seeded_and_inside_the_budget(model, batch):
    x, y = batch
    atk = IFGM(model, delta=8, steps=1, norm="linf", random_start=True)
    a = atk.run(x, y, seeds=[5, 6, 7, 8]).adv
    b = atk.run(x, y, seeds=[5, 6, 7, 8]).adv
    c = atk.run(x, y, seeds=[9, 6, 7, 8]).adv
    assert torch.equal(a, b)
    assert not torch.equal(a[0], c[0])
    assert torch.equal(a[1:], c[1:])
    assert not torch.equal(a, IFGM(model, delta=8, steps=1, norm="linf")(x, y))
    space = PixelSpace().bind(x, None, None, 8 / 255, "within", "linf")
    r0 = space.init([1, 2, 3, 4], 0.0, True)  # uniform in the box
    assert float(r0.abs().max()) <= 8 / 255 + 1e-7
    assert float(r0.abs().mean()) > 2 / 255
    l2_space = PixelSpace().bind(x, None, None, 0.5, "within", "l2")
    assert float(l2_norm(l2_space.init([1, 2, 3, 4], 0.0, True)).max()) <= 0.5 + 1e-6


class HalfStep(Optimizer):
    """A user's rule: half-size steps along the L2-normalised gradient."""

    name = "half"

    def direction(self, grad, state, norm):
        return 0.5 * super().direction(grad, state, norm)


def test_a_new_optimizer_drives_every_space(model, batch):
    x, y = batch
    for space in SPACES.values():
        full = Attack(model, delta=4, steps=2, space=space())
        half = Attack(model, delta=4, steps=2, space=space(), optimizer=HalfStep())
        r_full = full.run(x, y).perturbation
        r_half = half.run(x, y).perturbation
        assert 0 < float(l2_norm(r_half).max()) < float(l2_norm(r_full).max())
    assert Attack(model, optimizer=HalfStep()).describe()["optimizer"] == "half"
    with pytest.raises(TypeError, match="optimizer must be a name or an Optimizer, got int"):
        Attack(model, optimizer=3)


def test_the_run_config_passes_optimizer_and_random_start(model):
    config = AttackConfig(method="sai-fgm", optimizer="nesterov", random_start=True, momentum=0.9)
    atk = config.build_attack(model)
    assert isinstance(atk, SAIFGM)
    assert (atk.optimizer.name, atk.momentum, atk.random_start) == ("nesterov", 0.9, True)
    assert options.OPTIONS["optimizer"].names() == tuple(OPTIMIZERS)


def test_the_run_config_combines_space_and_mask_with_any_method(model, batch):
    x, y = batch
    pixel_sai = AttackConfig(method="sai-fgm", space="pixels", phi=0.4, delta=2)
    assert not pixel_sai.uses_superpixels
    assert pixel_sai.uses_attention
    res = pixel_sai.build_attack(model).run(x, y)
    assert res.superpixels is None
    assert 0 < float(res.mask.mean()) < 1  # the per-pixel attention mask
    assert torch.all(res.perturbation[res.mask.expand_as(x) == 0] == 0)
    masked_ifgm = AttackConfig(method="ifgm", mask="attention", phi=0.4)
    assert masked_ifgm.uses_attention
    assert not masked_ifgm.uses_superpixels
    superpixel_ifgm = AttackConfig(method="ifgm", space="superpixels", superpixel_size=8)
    atk = superpixel_ifgm.build_attack(model)
    assert superpixel_ifgm.uses_superpixels
    assert not superpixel_ifgm.uses_attention
    assert atk.space.config.size == 8
    assert atk.budget == "within"  # the preset's protocol stays
    assert not AttackConfig(method="sai-fgm", phi=0).uses_attention
    with pytest.raises(ValueError, match="space 'dots' is unknown; choose one of pixels, "):
        AttackConfig(method="ifgm", space="dots")
    with pytest.raises(TypeError, match="mask must be a name or a Mask, got float"):
        IFGM(model, mask=0.5)


class ScaledFGM(Attack):
    """A user's own named attack: FGM at half the budget."""

    name, title, optimizer_name = "half-fgm", "Half FGM", "one-step"

    def eps_for(self, images):
        return super().eps_for(images) / 2


def test_a_registered_attack_runs_through_the_config(model, batch):
    from sai_attack.attacks import METHOD_NAMES, register_attack

    x, y = batch
    register_attack("half-fgm", ScaledFGM)
    try:
        atk = AttackConfig(method="half-fgm", delta=4).build_attack(model)
        assert isinstance(atk, ScaledFGM)
        assert METHOD_NAMES["half-fgm"] == "Half FGM"
        r = atk.run(x, y).perturbation
        assert float(l2_norm(r).max()) <= atk.eps_for(x) * (1 + 1e-5)
        with pytest.raises(ValueError, match="method 'half-fgm' is already registered"):
            register_attack("half-fgm", ScaledFGM)
        with pytest.raises(TypeError, match="cls must be an Attack subclass, got 3"):
            register_attack("three", 3)
    finally:
        del ATTACKS["half-fgm"], METHOD_NAMES["half-fgm"]
        options.register_choices("method", ATTACKS)
    with pytest.raises(ValueError, match="method 'half-fgm' is unknown"):
        AttackConfig(method="half-fgm")


@pytest.mark.parametrize("texture_weight", [0.0, 1.0])
@pytest.mark.parametrize("norm", ["l2", "linf"])
@pytest.mark.parametrize("budget", ["within", "exact"])
@pytest.mark.parametrize("masked", [False, True])
def test_superpixel_render_on_the_noise_equals_painting_first(texture_weight, norm, budget, masked):
    # The fast render applies the budget to n and crops inside the template; the reference
    # paints f(n; t), crops by m* and applies the budget to the pixels (paper Eq. 3).
    x = textured_images(batch=3, size=24, seed=5).double()
    templates = sp.segment_batch(x, sp.SuperpixelConfig(size=4))
    mask = (torch.rand(3, 1, 24, 24, generator=torch.Generator().manual_seed(1)) > 0.4).double()
    space = SuperpixelSpace(sp.SuperpixelConfig(size=4), texture_weight=texture_weight)
    eps = 0.3 if norm == "l2" else 4 / 255
    bound = space.bind(x, templates, mask if masked else None, eps, budget, norm)
    assert bound.cropped is not None
    n = bound.init([1, 2, 3], 0.1, random_start=True)
    # (values within the box stay inside: scale them past it so that the budget acts)
    n = (n * (20 if norm == "linf" else 3)).requires_grad_(True)
    fast = bound.render(n)
    (g_fast,) = torch.autograd.grad((fast * x).sum(), n)
    bound.cropped = None
    reference = bound.render(n)
    (g_ref,) = torch.autograd.grad((reference * x).sum(), n)
    torch.testing.assert_close(fast, reference, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(g_fast, g_ref, rtol=1e-10, atol=1e-12)


def test_a_mask_with_fractions_is_applied_to_the_painting():
    x = textured_images(batch=2, size=16, seed=2).double()
    templates = sp.segment_batch(x, sp.SuperpixelConfig(size=4))
    soft = torch.full((2, 1, 16, 16), 0.5, dtype=torch.float64)
    bound = SuperpixelSpace(sp.SuperpixelConfig(size=4)).bind(
        x, templates, soft, 0.2, "within", "l2"
    )
    assert bound.cropped is None
    n = torch.ones(2, 3, templates.amax().item() + 1, dtype=torch.float64)
    painted = bound.render(n)
    expected = torch.full_like(painted, 0.5)
    expected *= 0.2 / l2_norm(expected).view(-1, 1, 1, 1)
    torch.testing.assert_close(painted, expected)
