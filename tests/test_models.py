import os

import pytest
import torch
from safetensors.torch import save_file

from sai_attack.models import MODELS, ImageClassifier, WeightsError, load_model, load_state_dict


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_registry_has_builtin_models():
    assert list(MODELS) == ["efficientnet-lite0", "efficientnet-lite1", "efficientnet-lite2"]
    assert [m.input_size for m in MODELS.values()] == [224, 240, 260]


def test_wrapper_normalises_and_resizes():
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 4 * 4, 2))
    model = ImageClassifier(net, mean=0.5, std=0.25, input_size=4)
    x = torch.rand(2, 3, 4, 4)
    torch.testing.assert_close(model(x), net((x - 0.5) / 0.25))
    assert model(torch.rand(1, 3, 9, 7)).shape == (1, 2)
    with pytest.raises(
        ValueError, match="expected \\(B, 3, H, W\\) images, got shape \\(3, 4, 4\\)"
    ):
        model(torch.rand(3, 4, 4))
    with pytest.raises(ValueError, match="std must be positive"):
        ImageClassifier(net, std=0)
    with pytest.raises(TypeError, match="net must be a torch.nn.Module, got function"):
        ImageClassifier(lambda x: x)


def test_load_state_dict_formats(tmp_path):
    state = {"w": torch.arange(4.0)}
    save_file(state, tmp_path / "a.safetensors")
    torch.save(state, tmp_path / "b.pt")
    torch.save({"state_dict": {"module.w": torch.arange(4.0)}}, tmp_path / "c.pth")
    for name in ("a.safetensors", "b.pt", "c.pth"):
        loaded = load_state_dict(tmp_path / name)
        assert list(loaded) == ["w"]
        torch.testing.assert_close(loaded["w"], torch.arange(4.0))


def test_malicious_checkpoint_refused_and_payload_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    torch.save({"weights": _Payload(marker)}, tmp_path / "evil.pt")
    with pytest.raises(WeightsError, match="refusing to load .*evil.pt.*could execute code"):
        load_state_dict(tmp_path / "evil.pt")
    assert not marker.exists()


def test_missing_and_garbage_weights(tmp_path):
    with pytest.raises(WeightsError, match="weights file .*nope.pt' does not exist"):
        load_state_dict(tmp_path / "nope.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsError, match="junk.pt"):
        load_state_dict(tmp_path / "junk.pt")
    torch.save([1, 2, 3], tmp_path / "list.pt")
    with pytest.raises(WeightsError, match="does not hold a state dict of tensors"):
        load_state_dict(tmp_path / "list.pt")


def test_unknown_model_and_missing_weights():
    with pytest.raises(
        ValueError, match="unknown model 'alexnet2'; choose one of efficientnet-lite0"
    ):
        load_model("alexnet2")
    with pytest.raises(WeightsError, match="model 'torchvision:resnet18' needs weights"):
        load_model("torchvision:resnet18")
    with pytest.raises(ValueError, match="unknown torchvision architecture 'resnet999'"):
        load_model("torchvision:resnet999", weights="x.pt")


def test_torchvision_model_with_weights_file(tmp_path):
    import torchvision

    net = torchvision.models.resnet18(weights=None, num_classes=1000)
    torch.save(net.state_dict(), tmp_path / "r18.pt")
    model = load_model("torchvision:resnet18", weights=tmp_path / "r18.pt")
    assert model.supports_cam
    assert not model.training
    x = torch.rand(1, 3, 64, 64)
    logits, feats = model.forward_features(x)
    torch.testing.assert_close(logits, model(x), rtol=1e-4, atol=1e-4)
    assert feats.shape == (1, 512, 2, 2)
    bad = {k: v for k, v in net.state_dict().items() if not k.startswith("fc.")}
    torch.save(bad, tmp_path / "bad.pt")
    with pytest.raises(WeightsError, match="do not fit torchvision:resnet18: 2 missing keys"):
        load_model("torchvision:resnet18", weights=tmp_path / "bad.pt")


def test_timm_model_with_weights_file(tmp_path):
    timm = pytest.importorskip("timm")
    net = timm.create_model("resnet10t", pretrained=False)
    save_file(net.state_dict(), tmp_path / "r10t.safetensors")
    model = load_model("timm:resnet10t", weights=tmp_path / "r10t.safetensors")
    assert model.input_size == 176
    assert model.supports_cam
    x = torch.rand(1, 3, 96, 96)
    logits, _ = model.forward_features(x)
    torch.testing.assert_close(logits, model(x), rtol=1e-4, atol=1e-4)


@pytest.mark.integration
def test_lite0_preprocessing_matches_reference(lite0):
    x = torch.rand(1, 3, 224, 224)
    expected = lite0.net((x * 255 - 127) / 128)
    torch.testing.assert_close(lite0(x), expected, rtol=1e-4, atol=1e-4)
    logits, feats = lite0.forward_features(x)
    torch.testing.assert_close(logits, expected, rtol=1e-4, atol=1e-4)
    assert feats.shape == (1, 1280, 7, 7)
    assert lite0(torch.rand(1, 3, 299, 299)).shape == (1, 1000)


@pytest.mark.integration
def test_lite0_batchnorm_folded_and_frozen(lite0):
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in lite0.modules())
    assert not any(p.requires_grad for p in lite0.parameters())
    unfused = MODELS["efficientnet-lite0"].builder().eval()
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in unfused.modules())
    x = torch.rand(2, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(lite0(x), unfused(x), rtol=1e-4, atol=1e-4)
    # the input gradient, which is all an attack uses, agrees too
    xa = x.clone().requires_grad_(True)
    xb = x.clone().requires_grad_(True)
    lite0(xa)[:, 7].sum().backward()
    unfused(xb)[:, 7].sum().backward()
    cos = torch.nn.functional.cosine_similarity(xa.grad.flatten(1), xb.grad.flatten(1))
    assert cos.min() > 0.999
