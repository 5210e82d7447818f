"""Target selection of targeted runs: the labels file, a seeded random class, the least-likely."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import make_tiny_model, textured_images
from sai_attack import data
from sai_attack.pipeline import AttackConfig, AttackRun, RunOptions
from sai_attack.pipeline.targets import TARGET_MODES, choose_targets
from sai_attack.runs import read_results, read_run
from sai_attack.runtime import RunError

IMAGES = 6
LABELS = [3, 7, 0, 9, 5, 2]


def _folder(root, labels: str | None):
    images = (textured_images(batch=IMAGES, size=32, seed=5).permute(0, 2, 3, 1) * 255).round()
    root.mkdir()
    for i, img in enumerate(images.numpy().astype(np.uint8)):
        Image.fromarray(img).save(root / f"im{i}.png")
    if labels is not None:
        (root / "labels.csv").write_text(labels)
    return root


@pytest.fixture
def labelled(tmp_path):
    rows = "".join(f"im{i}.png,{label}\n" for i, label in enumerate(LABELS))
    return _folder(tmp_path / "labelled", "image,label\n" + rows)


@pytest.fixture
def unlabelled(tmp_path):
    return _folder(tmp_path / "unlabelled", None)


def _run(folder, out, batch_size=2, **config):
    cfg = AttackConfig(method="ifgm", model="tiny", delta=8, steps=1, image_size=32, **config)
    opts = RunOptions(workers=0, batch_size=batch_size, progress=False)
    AttackRun(folder, out, cfg, opts, model=make_tiny_model()).run()
    return read_run(out)


def _targets(run) -> list[int]:
    return [it.target for it in run.items]


def test_random_targets_avoid_the_true_class_and_follow_the_seed(labelled, tmp_path):
    a = _run(labelled, tmp_path / "a", targeted=True, target_mode="random", seed=1)
    b = _run(labelled, tmp_path / "b", batch_size=4, targeted=True, target_mode="random", seed=1)
    c = _run(labelled, tmp_path / "c", targeted=True, target_mode="random", seed=2)
    assert [it.label for it in a.items] == LABELS
    assert all(t != label for t, label in zip(_targets(a), LABELS, strict=True))
    assert all(0 <= t < 10 for t in _targets(a))
    assert _targets(a) == _targets(b)  # reproducible, whatever the batch size
    assert _targets(a) != _targets(c)  # another seed, other targets
    assert all(t != label for t, label in zip(_targets(c), LABELS, strict=True))
    for row in read_results(tmp_path / "a" / "results.csv"):  # success: predicted as target
        assert row["success"] == str(int(row["adv_pred"] == row["target"]))


def test_random_targets_without_labels_avoid_the_clean_prediction(unlabelled, tmp_path):
    run = _run(unlabelled, tmp_path / "r", targeted=True, target_mode="random")
    assert len(run.items) == IMAGES
    assert all(it.target != it.clean_pred for it in run.items)


def test_random_draw_is_uniform_over_the_other_classes():
    logits = torch.zeros(1, 5)
    seen = {int(choose_targets("random", logits, [2], [f"im{i}"], 0, {})[0]) for i in range(200)}
    assert seen == {0, 1, 3, 4}


def test_least_likely_is_the_lowest_clean_logit(labelled, tmp_path):
    run = _run(labelled, tmp_path / "ll", targeted=True, target_mode="least-likely")
    model = make_tiny_model()
    x = data.to_tensor(np.stack([data.load_image(it.clean) for it in run.items]))
    with torch.no_grad():
        logits = model(x)
    logits[torch.arange(IMAGES), torch.tensor(LABELS)] = float("inf")  # never the true class
    assert _targets(run) == logits.argmin(dim=1).tolist()


def test_least_likely_never_takes_the_true_class():
    logits = torch.tensor([[0.0, -5.0, 1.0], [3.0, -1.0, 2.0]])
    assert choose_targets("least-likely", logits, [1, 0], ["a", "b"], 0, {}).tolist() == [0, 1]


def test_targets_from_the_labels_file_are_written_to_results(tmp_path):
    rows = "".join(f"im{i}.png,{label},{(label + 1) % 10}\n" for i, label in enumerate(LABELS))
    folder = _folder(tmp_path / "in", "image,label,target\n" + rows)
    run = _run(folder, tmp_path / "out", targeted=True)
    assert _targets(run) == [(label + 1) % 10 for label in LABELS]
    text = (tmp_path / "out" / "results.csv").read_text()
    assert text.splitlines()[0].split(",").count("target") == 1


def test_target_mode_without_targeted_is_an_error(labelled, tmp_path):
    for mode in TARGET_MODES[1:]:
        with pytest.raises(ValueError, match=f"^target_mode '{mode}' needs targeted=True$"):
            _run(labelled, tmp_path / mode, target_mode=mode)
        assert not (tmp_path / mode).exists()  # before any work


def test_targeted_without_targets_is_an_error(labelled, unlabelled, tmp_path):
    message = (
        "targeted with target_mode 'labels' needs a labels CSV with a 'target' column; "
        "set target_mode to 'random' or 'least-likely' to choose targets without one"
    )
    for folder in (labelled, unlabelled):
        with pytest.raises(RunError) as err:
            _run(folder, tmp_path / f"out-{folder.name}", targeted=True)
        assert str(err.value) == message
        assert not (tmp_path / f"out-{folder.name}").exists()


def test_target_column_without_targeted_is_a_warning(tmp_path, caplog):
    rows = "".join(f"im{i}.png,{label},1\n" for i, label in enumerate(LABELS))
    folder = _folder(tmp_path / "in", "image,label,target\n" + rows)
    with caplog.at_level(logging.WARNING, logger="sai_attack"):
        run = _run(folder, tmp_path / "out")
    assert "labels file has a target column; it is ignored without targeted" in caplog.messages
    assert len(run.items) == IMAGES
    assert all(it.target is None for it in run.items)
