"""The torchattacks and ART adapters give the native attacks' outputs inside those harnesses."""

from __future__ import annotations

import importlib
import subprocess
import sys

import numpy as np
import pytest
import torch

from conftest import TinyNet, make_tiny_model, textured_images
from sai_attack.attacks import ATTACKS, SAIFGM
from sai_attack.integrations._adapter import SUPERPIXEL_METHODS
from sai_attack.models import ImageClassifier
from sai_attack.models.wrapper import gap_linear_head

KWARGS = {"delta": 4.0, "steps": 3, "n_segments": 16, "seed": 3}
MEAN, STD = [0.5, 0.5, 0.5], [0.25, 0.25, 0.25]  # make_tiny_model's own normalisation


@pytest.fixture
def batch() -> tuple[torch.Tensor, torch.Tensor]:
    return textured_images(3, 32), torch.tensor([1, 4, 7])


def native(method: str, model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, **kw):
    return ATTACKS[method](model, **KWARGS, **kw)(x, y)


def test_importing_sai_attack_imports_no_harness():
    code = (
        "import sys, sai_attack, sai_attack.attacks, sai_attack.integrations; "
        "assert 'torchattacks' not in sys.modules and 'art' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize(
    ("module", "package", "extra"),
    [("torchattacks", "torchattacks", "torchattacks"), ("art", "art", "art")],
)
def test_missing_harness_names_the_extra(module, package, extra):
    # A fresh interpreter, so that no earlier test has the harness imported already.
    code = (
        f"import sys; sys.modules[{package!r}] = None\n"  # importing it now raises ImportError
        "try:\n"
        f"    import sai_attack.integrations.{module}\n"
        "except ImportError as exc:\n"
        "    print(exc)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert f"sai-attack[{extra}]" in done.stdout


# --------------------------------------------------------------------------------------------
# torchattacks
# --------------------------------------------------------------------------------------------


@pytest.fixture
def ta():
    pytest.importorskip("torchattacks")
    return importlib.import_module("sai_attack.integrations.torchattacks")


@pytest.mark.parametrize("method", list(SUPERPIXEL_METHODS))
def test_torchattacks_equals_native(ta, tiny_model, batch, method):
    x, y = batch
    atk = ta.ATTACK_CLASSES[method](tiny_model, **KWARGS)
    assert atk.method == method
    assert torch.equal(atk(x, y), native(method, tiny_model, x, y))
    assert atk.last is not None
    assert atk.last.superpixels is not None


def test_torchattacks_named_classes(ta):
    for method, cls in ta.ATTACK_CLASSES.items():
        assert getattr(ta, ATTACKS[method].__name__) is cls
    with pytest.raises(ValueError, match="method must be a superpixel method"):
        ta.SuperpixelAttack(make_tiny_model(), method="ifgm")
    with pytest.raises(TypeError, match="set_mode_targeted"):
        ta.SAIFGM(make_tiny_model(), targeted=True)
    with pytest.raises(ValueError, match="delta"):
        ta.SAIFGM(make_tiny_model(), delta=-1)


def test_torchattacks_normalization_equals_native_on_normalising_model(ta, batch):
    x, y = batch
    normalising = make_tiny_model()  # normalises with MEAN, STD itself
    net: TinyNet = normalising.net
    raw = ImageClassifier(  # the same net expecting normalised inputs (torchattacks' convention)
        net, mean=0.0, std=1.0, input_size=None, name="tiny",
        features=net.features, head=gap_linear_head(net.fc), fc=net.fc,
    )  # fmt: skip
    atk = ta.SAIFGM(raw, **KWARGS)
    atk.set_normalization_used(mean=MEAN, std=STD)
    mean, std = torch.tensor(MEAN).view(1, 3, 1, 1), torch.tensor(STD).view(1, 3, 1, 1)
    adv = atk((x - mean) / std, y) * std + mean
    torch.testing.assert_close(adv, native("sai-fgm", normalising, x, y), atol=1e-5, rtol=0)


def test_torchattacks_targeted_by_label(ta, tiny_model, batch):
    x, _ = batch
    targets = torch.tensor([2, 3, 5])
    atk = ta.SAIFGM(tiny_model, **KWARGS)
    atk.set_mode_targeted_by_label(quiet=True)
    expected = SAIFGM(tiny_model, targeted=True, **KWARGS).run(x, targets, targets).adv
    assert torch.equal(atk(x, targets), expected)


def test_torchattacks_multiattack(ta, tiny_model, batch):
    import torchattacks

    x, y = batch
    first, second = ta.SAFGM(tiny_model, **KWARGS), ta.MSAIFGM(tiny_model, **KWARGS)
    adv = torchattacks.MultiAttack([first, second])(x, y)
    one, two = native("sa-fgm", tiny_model, x, y), native("m-sai-fgm", tiny_model, x, y)
    with torch.no_grad():
        fooled = tiny_model(one).argmax(1) != y
    for i in range(x.shape[0]):
        assert torch.equal(adv[i], one[i]) or (not fooled[i] and torch.equal(adv[i], two[i]))


@pytest.mark.parametrize("model_training", [False, True])
def test_torchattacks_training_mode(ta, batch, model_training):
    x, y = batch
    model = make_tiny_model().train()
    seen: list[bool] = []
    model.net.register_forward_pre_hook(lambda module, _inputs: seen.append(module.training))
    atk = ta.SAIFGM(model, **KWARGS)
    atk.set_model_training_mode(model_training=model_training)
    atk(x, y)
    assert seen
    assert set(seen) == {model_training}
    assert model.training  # torchattacks restores the given training mode


# --------------------------------------------------------------------------------------------
# ART
# --------------------------------------------------------------------------------------------


@pytest.fixture
def art_adapter():
    pytest.importorskip("art")
    return importlib.import_module("sai_attack.integrations.art")


def classifier(model: torch.nn.Module, clip: tuple[float, float], **kw):
    from art.estimators.classification import PyTorchClassifier

    return PyTorchClassifier(
        model, loss=torch.nn.CrossEntropyLoss(), input_shape=(3, 32, 32), nb_classes=10,
        clip_values=clip, **kw,
    )  # fmt: skip


@pytest.mark.parametrize("one_hot", [False, True])
def test_art_equals_native(art_adapter, tiny_model, batch, one_hot):
    x, y = batch
    labels = np.eye(10, dtype=np.float32)[y.numpy()] if one_hot else y.numpy()
    attack = art_adapter.SuperpixelEvasion(classifier(tiny_model, (0, 1)), "sai-fgm", **KWARGS)
    adv = attack.generate(x.numpy(), labels)
    assert adv.dtype == np.float32
    assert adv.shape == tuple(x.shape)
    np.testing.assert_allclose(adv, native("sai-fgm", tiny_model, x, y).numpy(), atol=1e-6)


@pytest.mark.parametrize("one_hot", [False, True])
def test_art_clip_range_0_255(art_adapter, tiny_model, batch, one_hot):
    x, y = batch
    labels = np.eye(10, dtype=np.float32)[y.numpy()] if one_hot else y.numpy()
    estimator = classifier(tiny_model, (0, 255), preprocessing=(0, 255))  # model sees x / 255
    attack = art_adapter.ATTACK_CLASSES["m-sai-fgm"](estimator, batch_size=2, **KWARGS)
    adv = attack.generate(x.numpy() * 255, labels)
    expected = native("m-sai-fgm", tiny_model, x, y).numpy() * 255
    np.testing.assert_allclose(adv, expected, atol=1e-3)


def test_art_targeted_and_checks(art_adapter, tiny_model, batch):
    x, _ = batch
    targets = torch.tensor([2, 3, 5])
    estimator = classifier(tiny_model, (0, 1))
    attack = art_adapter.SAIFGM(estimator, targeted=True, **KWARGS)
    with torch.no_grad():
        predicted = tiny_model(x).argmax(1)
    expected = SAIFGM(tiny_model, targeted=True, **KWARGS).run(x, predicted, targets).adv
    np.testing.assert_allclose(attack.generate(x.numpy(), targets.numpy()), expected, atol=1e-6)
    with pytest.raises(ValueError, match="target classes"):
        attack.generate(x.numpy())
    with pytest.raises(ValueError, match="clip range"):
        attack.generate(x.numpy() + 2)
    with pytest.raises(ValueError, match="y must be"):
        attack.generate(x.numpy(), np.zeros((2,), np.int64))
    with pytest.raises(ValueError, match="method must be a superpixel method"):
        art_adapter.SuperpixelEvasion(estimator, "fgm")
