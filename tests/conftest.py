"""Shared fixtures: a tiny CNN classifier, synthetic images, and the shared nips17 data."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from sai_attack.models import ImageClassifier
from sai_attack.models.wrapper import gap_linear_head

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SAI_SHARED", REPO.parent / "shared"))
NIPS17 = SHARED / "data" / "nips17-dev"

torch.set_num_threads(min(2, os.cpu_count() or 1))


class TinyNet(nn.Module):
    """Two convolutions, global average pooling and a linear layer (CAM-compatible)."""

    def __init__(self, num_classes: int = 10, seed: int = 0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 16, 3, stride=2, padding=1),
            nn.ReLU(),
        )  # fmt: skip
        self.fc = nn.Linear(16, num_classes)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x).mean(dim=(2, 3)))


def make_tiny_model(num_classes: int = 10, seed: int = 0, cam: bool = True) -> ImageClassifier:
    net = TinyNet(num_classes, seed).eval()
    kwargs = {}
    if cam:
        kwargs = {"features": net.features, "head": gap_linear_head(net.fc), "fc": net.fc}
    return ImageClassifier(net, mean=0.5, std=0.25, input_size=None, name="tiny", **kwargs)


@pytest.fixture
def tiny_model() -> ImageClassifier:
    return make_tiny_model()


def quadrants(size: int = 16) -> np.ndarray:
    """Four flat coloured quadrants, (size, size, 3) uint8."""
    img = np.zeros((size, size, 3), np.uint8)
    h = size // 2
    img[:h, :h] = (220, 30, 30)
    img[:h, h:] = (30, 200, 40)
    img[h:, :h] = (30, 40, 210)
    img[h:, h:] = (230, 220, 40)
    return img


def textured_images(batch: int = 4, size: int = 32, seed: int = 0) -> torch.Tensor:
    """Smooth random images in [0.2, 0.8] (no clipping at small budgets), (B, 3, size, size)."""
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(batch, 3, size // 4, size // 4, generator=g)
    x = torch.nn.functional.interpolate(low, size=(size, size), mode="bilinear")
    return 0.2 + 0.6 * x


@pytest.fixture(scope="session")
def nips17() -> Path:
    if not (NIPS17 / "labels.csv").is_file():
        pytest.skip(f"shared data not found at {NIPS17}")
    return NIPS17


@pytest.fixture(scope="session")
def lite0():
    from sai_attack.models import load_model

    return load_model("efficientnet-lite0")
