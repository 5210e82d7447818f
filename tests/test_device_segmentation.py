"""Templates of a batched algorithm made on the attack device equal those made in the loaders."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import make_tiny_model, textured_images
from sai_attack.pipeline import AttackConfig, AttackRun, RunOptions, batch, run
from sai_attack.pipeline.batch import segments_on_device


@pytest.fixture
def folder(tmp_path):
    images = (textured_images(batch=3, size=32, seed=5).permute(0, 2, 3, 1) * 255).round()
    root = tmp_path / "in"
    root.mkdir()
    for i, img in enumerate(images.numpy().astype(np.uint8)):
        Image.fromarray(img).save(root / f"im{i}.png")
    return root


def test_only_batched_algorithms_segment_on_an_accelerator():
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    torch_slic = AttackConfig(method="sai-fgm", superpixel="slic-torch")
    assert segments_on_device(torch_slic, cuda)
    assert not segments_on_device(torch_slic, cpu)  # the loaders overlap it with the attack
    assert not segments_on_device(AttackConfig(method="sai-fgm"), cuda)  # OpenCV: CPU only
    assert not segments_on_device(AttackConfig(method="ifgm", superpixel="slic-torch"), cuda)


def test_device_path_writes_the_same_run(folder, tmp_path, monkeypatch):
    def attack(out):
        cfg = AttackConfig(method="sai-fgm", model="tiny", delta=8, steps=2, image_size=32,
                           superpixel="slic-torch", superpixel_size=4)  # fmt: skip
        opts = RunOptions(workers=0, batch_size=2, save_templates=True, progress=False)
        AttackRun(folder, out, cfg, opts, model=make_tiny_model()).run()

    attack(tmp_path / "loaders")
    forced = lambda config, device: config.uses_superpixels  # noqa: E731  (as on a GPU)
    monkeypatch.setattr(batch, "segments_on_device", forced)
    monkeypatch.setattr(run, "segments_on_device", forced)
    attack(tmp_path / "device")
    for name in ("im0.png", "im1.png", "im2.png"):
        a = (tmp_path / "loaders" / "images" / name).read_bytes()
        assert a == (tmp_path / "device" / "images" / name).read_bytes()
        with (
            np.load(tmp_path / "loaders" / "templates" / name.replace(".png", ".npz")) as x,
            np.load(tmp_path / "device" / "templates" / name.replace(".png", ".npz")) as y,
        ):
            assert np.array_equal(x["superpixels"], y["superpixels"])
