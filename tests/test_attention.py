import pytest
import torch

from conftest import make_tiny_model, textured_images
from sai_attack import superpixels as sp
from sai_attack.attention import (
    AttentionConfig,
    attention_map,
    binarize,
    cam_from_features,
    grad_cam,
    normalize_minmax,
    superpixel_mask,
)


def test_normalize_minmax_per_image_and_constant():
    maps = torch.tensor([[[1.0, 3.0], [2.0, 5.0]], [[4.0, 4.0], [4.0, 4.0]]])
    out = normalize_minmax(maps)
    torch.testing.assert_close(out[0], torch.tensor([[0.0, 0.5], [0.25, 1.0]]))
    torch.testing.assert_close(out[1], torch.ones(2, 2))


def test_cam_equals_weighted_sum_of_features(tiny_model):
    x = textured_images(2, 16)
    classes = torch.tensor([3, 7])
    _, feats = tiny_model.forward_features(x)
    w = tiny_model.fc.weight
    manual = torch.einsum("chw,c->hw", feats[1], w[7])
    manual = (manual - manual.min()) / (manual.max() - manual.min())
    cam = cam_from_features(feats, w, classes, tuple(feats.shape[-2:]))
    torch.testing.assert_close(cam[1, 0], manual.detach())
    up = attention_map(tiny_model, x, classes, "cam")
    assert up.shape == (2, 1, 16, 16)
    assert float(up.min()) >= 0
    assert float(up.max()) <= 1
    assert not up.requires_grad


def test_forward_features_logits_match_forward(tiny_model):
    x = textured_images(3, 16)
    logits, _ = tiny_model.forward_features(x)
    torch.testing.assert_close(logits, tiny_model(x))


def test_auto_falls_back_to_gradcam():
    model = make_tiny_model(cam=False)
    x = textured_images(2, 16)
    classes = torch.tensor([0, 1])
    auto = attention_map(model, x, classes, "auto")
    torch.testing.assert_close(auto, grad_cam(model, x, classes))
    assert auto.shape == (2, 1, 16, 16)
    with pytest.raises(ValueError, match="model 'tiny' has no GAP \\+ linear head"):
        attention_map(model, x, classes, "cam")


def test_binarize_eq2():
    m = torch.tensor([0.0, 0.3, 1 / 3, 0.9]).view(1, 1, 2, 2)
    torch.testing.assert_close(
        binarize(m, 1 / 3), torch.tensor([0.0, 0.0, 1.0, 1.0]).view(1, 1, 2, 2)
    )
    torch.testing.assert_close(binarize(m, 0.0), torch.ones_like(m))
    with pytest.raises(ValueError, match="phi must be a finite number in \\[0, 1\\], got 1.5"):
        binarize(m, 1.5)


def test_superpixel_mask_keeps_whole_superpixels():
    att = torch.tensor([[0.9, 0.1, 0.0, 0.0], [0.9, 0.1, 0.0, 0.0]]).view(1, 1, 2, 4)
    labels = torch.tensor([[[0, 0, 1, 1], [0, 0, 1, 1]]])
    mask = superpixel_mask(att, labels, 0.4)  # superpixel 0 has mean 0.5
    torch.testing.assert_close(mask, torch.tensor([[1.0, 1, 0, 0], [1, 1, 0, 0]]).view(1, 1, 2, 4))


def test_attention_config():
    att = torch.rand(2, 1, 8, 8)
    labels = sp.stack_labels([sp.segment(torch.rand(8, 8, 3).numpy(), "grid", size=2)] * 2)
    assert torch.equal(AttentionConfig(phi=0).mask(att, labels), torch.ones_like(att))
    aligned = AttentionConfig(phi=0.5).mask(att, labels)
    k = int(labels.max()) + 1
    per_sp_max = sp.reduce(aligned, labels, k, "amax")
    per_sp_min = sp.reduce(aligned, labels, k, "amin")
    torch.testing.assert_close(per_sp_max, per_sp_min)
    pixel = AttentionConfig(phi=0.5, align=False).mask(att, labels)
    torch.testing.assert_close(pixel, binarize(att, 0.5))
    with pytest.raises(
        ValueError, match="attention 'saliency' is unknown; choose one of auto, cam, gradcam"
    ):
        AttentionConfig(method="saliency")
