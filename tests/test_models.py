import os

import pytest
import torch
from safetensors.torch import save_file

from conftest import TinyNet, make_tiny_model, textured_images
from sai_attack import options
from sai_attack.models import (
    MODELS,
    ImageClassifier,
    WeightsError,
    layout,
    load_model,
    load_plain_model,
    load_state_dict,
    measure_memory_formats,
    resolve_memory_format,
    use_memory_format,
)


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
    # auto measured both layouts on this CPU and kept the faster
    assert model.memory_format_decisions == {"cpu": model.memory_format}
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
    model = load_model(
        "timm:resnet10t", weights=tmp_path / "r10t.safetensors", memory_format="contiguous"
    )
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
    # only the stride-2 convolutions (stem and 4 blocks) keep an explicit, asymmetric padding
    assert sum(isinstance(m, torch.nn.ZeroPad2d) for m in lite0.modules()) == 5
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


# -- memory layout ----------------------------------------------------------------------------


def _is_channels_last(t: torch.Tensor) -> bool:
    return t.is_contiguous(memory_format=torch.channels_last) and not t.is_contiguous()


def _input_gradient(model: ImageClassifier, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    xr = x.clone().requires_grad_(True)
    logits = model(xr)
    (grad,) = torch.autograd.grad(logits[:, 1].sum(), xr)
    return logits.detach(), grad


def test_channels_last_agrees_and_returns_default_layout_gradients():
    model = make_tiny_model()
    x = textured_images(3, 16)
    ref_logits, ref_grad = _input_gradient(model, x)
    assert model.memory_format == "contiguous"
    assert model.to_memory_format("channels_last") is model
    assert model.memory_format == "channels_last"
    assert all(_is_channels_last(p) for p in model.net.parameters() if p.ndim == 4)
    logits, grad = _input_gradient(model, x)
    torch.testing.assert_close(logits, ref_logits, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(grad, ref_grad, rtol=1e-5, atol=1e-6)
    # Attacks reshape gradients and mix them with their own tensors: the default layout comes back.
    assert grad.is_contiguous()
    logits_cam, feats = model.forward_features(x)
    torch.testing.assert_close(logits_cam, ref_logits, rtol=1e-5, atol=1e-5)
    assert feats.shape == (3, 16, 8, 8)
    assert "memory_format=channels_last" in repr(model)
    # Converting back restores the weights bit for bit: the default layout's exact results.
    model.to_memory_format("contiguous")
    assert all(p.is_contiguous() for p in model.parameters())
    logits, grad = _input_gradient(model, x)
    assert torch.equal(logits, ref_logits)
    assert torch.equal(grad, ref_grad)


def test_memory_format_errors():
    model = make_tiny_model()
    with pytest.raises(
        ValueError, match="^memory_format must be one of contiguous, channels_last, got 'auto'$"
    ):
        model.to_memory_format("auto")
    with pytest.raises(
        ValueError,
        match="^memory_format 'nhwc' is unknown; choose one of auto, contiguous, channels_last$",
    ):
        resolve_memory_format(model, "nhwc")
    assert options.default("memory_format") == "auto"
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 2))
    with pytest.raises(
        ValueError,
        match="^cpu_memory_format must be one of contiguous, channels_last or None, got 'nhwc'$",
    ):
        ImageClassifier(net, cpu_memory_format="nhwc")


def test_auto_uses_the_measured_cpu_layout_and_explicit_choices(caplog):
    model = ImageClassifier(TinyNet(), cpu_memory_format="channels_last", name="tiny")
    with caplog.at_level("INFO", logger="sai_attack.models.layout"):
        assert use_memory_format(model).memory_format == "channels_last"
    assert "memory_format auto: channels_last for tiny on the CPU" in caplog.text
    assert use_memory_format(model, "contiguous").memory_format == "contiguous"
    assert use_memory_format(model, "channels_last").memory_format == "channels_last"


def test_auto_keeps_small_models_in_the_default_layout(caplog):
    model = make_tiny_model()
    with caplog.at_level("INFO", logger="sai_attack.models.layout"):
        assert resolve_memory_format(model, "auto", 16, 16) == "contiguous"
    assert "contiguous for tiny (0.000 GFLOP per image, too small to matter)" in caplog.text
    assert model.memory_format == "contiguous"
    assert model.memory_format_decisions == {"cpu": "contiguous"}


@pytest.mark.parametrize(
    ("seconds", "expected"),
    [
        ({"contiguous": 1.0, "channels_last": 0.6}, "channels_last"),
        ({"contiguous": 1.0, "channels_last": 0.95}, "contiguous"),  # within noise: no change
        ({"contiguous": 1.0, "channels_last": 1.4}, "contiguous"),  # slower that way
        ({"contiguous": 1.0}, "contiguous"),  # channels_last changed the logits
    ],
)
def test_auto_measures_models_without_a_known_layout(monkeypatch, seconds, expected):
    calls = []

    def measure(model, batch_size, image_size):
        calls.append((batch_size, image_size))
        return seconds

    monkeypatch.setattr(layout, "measure_memory_formats", measure)
    monkeypatch.setattr(layout, "MIN_GFLOP", 0.0)
    model = make_tiny_model()
    assert layout.resolve_memory_format(model, "auto", 16, 32) == expected
    assert layout.resolve_memory_format(model, "auto", 16, 32) == expected  # remembered
    assert calls == [(layout.PROBE_BATCH, 32)]
    assert model.memory_format == "contiguous"  # resolving does not convert


class _LayoutSensitive(torch.nn.Module):
    """A network whose output depends on its input's layout (as a layout-assuming op would)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x).mean(dim=(2, 3))
        return y if x.is_contiguous() else y + 1.0


class _LayoutRefusing(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x).view(x.shape[0], -1)[:, :10]  # view() fails on channels-last


def test_measurement_leaves_out_a_layout_that_changes_the_logits(caplog):
    model = ImageClassifier(_LayoutSensitive(), name="sensitive")
    with caplog.at_level("WARNING", logger="sai_attack.models.layout"):
        seconds = measure_memory_formats(model, 2, 16)
    assert list(seconds) == ["contiguous"]
    assert "memory_format channels_last changes the logits of sensitive by 1" in caplog.text
    assert model.memory_format == "contiguous"


def test_forward_gflop_counts_the_convolutions():
    model = ImageClassifier(_LayoutSensitive(), input_size=16)
    # a 3x3 convolution 3 -> 4 channels on 16x16: 14 * 14 * 4 outputs of 27 multiply-adds each
    assert layout.forward_gflop(model) == pytest.approx(2 * 14 * 14 * 4 * 27 / 1e9)


def test_auto_falls_back_when_the_network_refuses_channels_last(monkeypatch, caplog):
    monkeypatch.setattr(layout, "MIN_GFLOP", 0.0)
    model = ImageClassifier(_LayoutRefusing(), name="refusing")
    with caplog.at_level("WARNING", logger="sai_attack.models.layout"):
        assert layout.resolve_memory_format(model, "auto", 2, 16) == "contiguous"
    assert "memory_format auto: contiguous for refusing (channels_last failed:" in caplog.text
    assert model.memory_format == "contiguous"
    assert model(torch.rand(1, 3, 16, 16)).shape == (1, 10)


@pytest.mark.integration
def test_builtin_models_run_channels_last_by_default_and_contiguous_exactly(lite0):
    assert lite0.memory_format == "channels_last"
    assert _is_channels_last(lite0.net._conv_stem.weight)
    contiguous = load_model("efficientnet-lite0", memory_format="contiguous")
    assert contiguous.memory_format == "contiguous"
    assert all(p.is_contiguous() for p in contiguous.parameters())
    x = torch.rand(2, 3, 224, 224)
    logits, grad = _input_gradient(lite0, x)
    ref_logits, ref_grad = _input_gradient(contiguous, x)
    torch.testing.assert_close(logits, ref_logits, rtol=1e-4, atol=1e-4)
    # float reordering only: the largest gradient difference is a small part of the largest value
    assert (grad - ref_grad).abs().max() < 0.05 * ref_grad.abs().max()
    cos = torch.nn.functional.cosine_similarity(grad.flatten(1), ref_grad.flatten(1))
    assert cos.min() > 0.999
    plain = load_plain_model("efficientnet-lite0")
    assert plain.memory_format == "contiguous"
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in plain.modules())
    assert all(p.requires_grad for p in plain.parameters())


def test_symmetric_same_padding_is_folded_into_the_convolution():
    from efficientnet_lite_pytorch.utils import Conv2dStaticSamePadding

    from sai_attack.models.prepare import fold_same_padding

    torch.manual_seed(0)
    net = torch.nn.Sequential(
        Conv2dStaticSamePadding(3, 6, 3, stride=1, image_size=16, groups=3, bias=False),
        Conv2dStaticSamePadding(6, 6, 5, stride=1, image_size=16, groups=6, bias=False),
        Conv2dStaticSamePadding(6, 4, 3, stride=2, image_size=16, bias=False),  # pads (0, 1)
    ).eval()
    x = torch.rand(2, 3, 16, 16)
    expected = net(x)
    assert fold_same_padding(net) == 2
    assert [tuple(m.padding) for m in net] == [(1, 1), (2, 2), (0, 0)]
    assert isinstance(net[2].static_padding, torch.nn.ZeroPad2d)  # asymmetric: kept
    torch.testing.assert_close(net(x), expected, rtol=1e-6, atol=1e-6)
    assert fold_same_padding(net) == 0  # idempotent
