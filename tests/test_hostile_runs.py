"""Hostile run folders, weights, detectors, templates and target specs (issue 17, classes 2, 5, 8).

A small generator (:func:`tampered`) copies a real run folder and damages it in one way each: a
PNG replaced by one of another size or by garbage, a truncated template, a record whose JSON
values have the wrong types. Every case must end in a one-line message (exit 2 for bad inputs,
1 for a refused output folder) or in the image being left out with its reason, never in a
traceback, and no input may be overwritten.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import os
import re
import shutil
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import make_tiny_model, textured_images
from sai_attack import data
from sai_attack import evaluation as ev
from sai_attack.cli import main
from sai_attack.detection.classifiers import LogisticDetector, load_detector, save_detector
from sai_attack.detection.feature_sets import FeatureSettings
from sai_attack.detection.texture import analyze_run, texture_markdown
from sai_attack.models import load_model, load_target
from sai_attack.models.zoo import WeightsError
from sai_attack.pipeline import AttackConfig, AttackRun, RunOptions
from sai_attack.runs import read_run
from sai_attack.runs.layout import check_output_folder
from sai_attack.runtime import RunError

N_IMAGES = 4
SIZE = 32

# --------------------------------------------------------------------------------------------
# The generator
# --------------------------------------------------------------------------------------------


def _png(path: Path, size: int, value: int = 90) -> None:
    data.save_png(path, np.full((size, size, 3), value, np.uint8))


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _json(path: Path, value: object) -> None:
    path.write_text(value if isinstance(value, str) else json.dumps(value))


DAMAGE: dict[str, Callable[[Path], str]] = {}
"""Ways to damage a run folder: each damages ``img01`` and returns the start of the reason."""


def damage(func: Callable[[Path], str]) -> Callable[[Path], str]:
    DAMAGE[func.__name__] = func
    return func


@damage
def adversarial_of_another_size(run: Path) -> str:
    _png(run / "images" / "img01.png", SIZE + 8)
    return f"its clean image is {SIZE}x{SIZE} and its adversarial image {SIZE + 8}x{SIZE + 8}"


@damage
def pair_of_another_size(run: Path) -> str:
    _png(run / "images" / "img01.png", SIZE + 8)
    _png(run / "clean" / "img01.png", SIZE + 8, 80)
    return f"its images are {SIZE + 8}x{SIZE + 8}, the run's are {SIZE}x{SIZE}"


@damage
def undecodable_adversarial(run: Path) -> str:
    (run / "images" / "img01.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 64)
    return "images/img01.png: not a recognised image format"


@damage
def truncated_clean(run: Path) -> str:
    _truncate(run / "clean" / "img01.png")
    return "clean/img01.png: cannot decode image"


def tampered(base: Path, root: Path, how: str) -> tuple[Path, str]:
    """A copy of run folder ``base`` under ``root``, damaged by ``DAMAGE[how]``."""
    run = root / how
    shutil.copytree(base, run)
    return run, DAMAGE[how](run)


def tree_digest(folder: Path) -> dict[str, str]:
    """SHA-256 of every file under ``folder`` (to show nothing was overwritten)."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.fixture
def log(caplog):
    """``caplog`` that also sees the ``sai_attack`` logger (the CLI stops its propagation)."""
    logger = logging.getLogger("sai_attack")
    logger.addHandler(caplog.handler)
    yield caplog
    logger.removeHandler(caplog.handler)


@pytest.fixture(scope="module")
def model():
    return make_tiny_model()


@pytest.fixture(scope="module")
def base_run(tmp_path_factory, model) -> Path:
    """A SAI-FGM run of the tiny model on four 32 x 32 images, with templates."""
    root = tmp_path_factory.mktemp("hostile_runs")
    inputs = root / "in"
    inputs.mkdir()
    for i, img in enumerate(data.to_uint8(textured_images(N_IMAGES, SIZE, seed=3))):
        data.save_png(inputs / f"img{i:02d}.png", img)
    cfg = AttackConfig(method="sai-fgm", model="tiny", delta=6, image_size=SIZE, steps=2)
    opts = RunOptions(workers=0, batch_size=4, save_templates=True)
    AttackRun(inputs, root / "run", cfg, opts, model=model).run()
    return root / "run"


# --------------------------------------------------------------------------------------------
# Class 8: mixed runs are evaluated without the damaged image
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("how", sorted(DAMAGE))
def test_evaluate_leaves_out_a_damaged_image(base_run, tmp_path, model, how, log):
    run, reason = tampered(base_run, tmp_path, how)
    result = ev.evaluate_folders([run], models={"tiny": model}, batch_size=4)
    row = result.rows[0]
    assert row["images"] == N_IMAGES - 1
    (missing,) = result.runs[0].missing  # the reason may go on with the decoder's words
    assert missing.startswith(f"img01.png: {reason}")
    assert f"img01.png left out: {reason}" in log.text
    assert "img01.png" not in {p["image"] for p in result.predictions}
    # Counted in evaluation.json, once even when the same runs are evaluated again.
    ev.evaluate(result.runs, result.targets, [], batch_size=2)
    files = ev.write_evaluation(result, tmp_path / "eval")
    record = json.loads(files["json"].read_text())
    assert record["runs"][0]["missing_files"] == 1


def test_evaluate_every_image_damaged_and_mixed_batches(base_run, tmp_path, model):
    run = tmp_path / "all"
    shutil.copytree(base_run, run)
    for i in range(N_IMAGES):
        _png(run / "images" / f"img{i:02d}.png", SIZE + i + 1)
    result = ev.evaluate_folders([run], models={"tiny": model}, batch_size=3)
    assert result.rows[0]["images"] == 0
    assert len(result.runs[0].missing) == N_IMAGES


def test_cli_evaluate_mixed_run_exit_0(base_run, tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    run, reason = tampered(base_run, tmp_path, "pair_of_another_size")
    onnx_path = tmp_path / "tiny.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(make_tiny_model().net, (torch.rand(1, 3, SIZE, SIZE),), str(onnx_path),
                          dynamo=False, input_names=["x"], output_names=["y"],
                          dynamic_axes={"x": {0: "b"}, "y": {0: "b"}})  # fmt: skip
    out = tmp_path / "e"
    target = f"onnx:{onnx_path}@mean=0.5,std=0.25"
    assert main(["evaluate", str(run), "--out", str(out), "--models", target]) == 0
    assert f"img01.png left out: {reason}" in capsys.readouterr().err
    rows = list(csv.DictReader((out / "evaluation.csv").open()))
    assert rows[0]["images"] == str(N_IMAGES - 1)
    assert json.loads((out / "evaluation.json").read_text())["runs"][0]["missing_files"] == 1


# --------------------------------------------------------------------------------------------
# Class 5: tampered records, detectors, templates; weights and target specs
# --------------------------------------------------------------------------------------------

RECORD_VALUES = [
    [],
    "a string",
    42,
    {"parameters": []},
    {"schema": "two", "method": ["sai-fgm"], "model": {"x": 1}, "parameters": "none"},
    {
        "schema": 2,
        "parameters": {
            "delta": "big", "targeted": "yes", "weights": [1, 2], "image_size": 10**400,
            "phi": {"a": 1}, "steps": 2.5, "attack_prediction": 1, "attention": 7,
        },
    },
    {"config": {"iters": "x", "segments": [1]}, "attack": [], "image_size": "32"},
    "[" * 100_000,
    "{not json",
]  # fmt: skip


@pytest.mark.parametrize("value", RECORD_VALUES, ids=range(len(RECORD_VALUES)))
@pytest.mark.parametrize("name", ["summary.json", "run.json"])
def test_tampered_records_are_read(base_run, tmp_path, model, name, value):
    run = tmp_path / "run"
    shutil.copytree(base_run, run)
    if name == "run.json":
        (run / "summary.json").unlink()
    _json(run / name, value)
    folder = read_run(run)
    assert isinstance(folder.method, str)
    assert isinstance(folder.model, str)
    assert folder.delta is None or isinstance(folder.delta, float)
    assert folder.weights is None or isinstance(folder.weights, str)
    assert isinstance(folder.targeted, bool)
    assert isinstance(folder.record.schema, int)
    assert len(folder.items) == N_IMAGES
    result = ev.evaluate_folders([run], models={"tiny": model}, batch_size=4)
    assert result.rows[0]["images"] == N_IMAGES
    assert analyze_run(run, model=model).images


@pytest.fixture
def detector(tmp_path) -> tuple[Path, Path]:
    rng = np.random.default_rng(0)
    clean, adv = rng.normal(size=(12, 686)), rng.normal(0.5, 1, size=(12, 686))
    det = LogisticDetector().fit(clean, adv)
    return save_detector(tmp_path / "det.json", det, FeatureSettings("spam", "gray"), {"run": "r"})


def _edit(path: Path, edit: Callable[[dict], None]) -> None:
    record = json.loads(path.read_text())
    edit(record)
    path.write_text(json.dumps(record))


DETECTOR_EDITS = {
    "features list": (lambda r: r.update(features=["spam"]), "'features' is ['spam']"),
    "feature set number": (lambda r: r["features"].update(features=3), "'features' is 3"),
    "unknown feature set": (lambda r: r["features"].update(features="lbp"), "features must be"),
    "classifier list": (lambda r: r.update(classifier=["logreg"]), "'classifier' is"),
    "dim string": (lambda r: r.update(dim="686"), "'dim' is '686'"),
    "dim bool": (lambda r: r.update(dim=True), "'dim' is True"),
    "arrays string": (lambda r: r.update(arrays="x"), "'arrays' is 'x'"),
    "names number": (lambda r: r["arrays"].update(names=5), "'names' is 5"),
    "file list": (lambda r: r["arrays"].update(file=["det.npz"]), "'file' is"),
    "params list": (lambda r: r.update(params=[]), "'params' is []"),
    "intercept text": (lambda r: r["params"].update(intercept="abc"), "not a valid saved"),
    "intercept list": (lambda r: r["params"].update(intercept=[1]), "not a valid saved"),
    "C negative": (lambda r: r["params"].update(C=-1), "C must be > 0"),
    "missing intercept": (lambda r: r["params"].pop("intercept"), "lacks parameter 'intercept'"),
    "info list": (lambda r: r.update(info=[1, 2]), None),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(DETECTOR_EDITS))
def test_tampered_detector_json(detector, case):
    json_path, _ = detector
    edit, message = DETECTOR_EDITS[case]
    _edit(json_path, edit)
    if message is None:  # harmless: the extra information is dropped
        assert load_detector(json_path)[2] == {}
        return
    with pytest.raises(ValueError, match="det.json") as exc:
        load_detector(json_path)
    assert str(json_path) in str(exc.value)
    assert message in str(exc.value)
    assert "\n" not in str(exc.value)


@pytest.mark.parametrize("cut", [0, 10, 60, -30, -1])
def test_truncated_detector_npz(detector, cut):
    json_path, npz_path = detector
    payload = npz_path.read_bytes()
    npz_path.write_bytes(payload[:cut] if cut else b"")
    with pytest.raises(ValueError, match="sha256 differs"):
        load_detector(json_path)
    # The same with a matching hash (the record edited too): the zip itself is refused.
    digest = hashlib.sha256(npz_path.read_bytes()).hexdigest()
    _edit(json_path, lambda r: r["arrays"].update(sha256=digest))
    with pytest.raises(ValueError, match=r"det\.npz' is not a valid npz file \("):
        load_detector(json_path)


def test_cli_detect_apply_tampered_detector_exit_2(detector, base_run, tmp_path, capsys):
    json_path, _ = detector
    _edit(json_path, lambda r: r.update(params=[]))
    args = ["detect", str(base_run), "--apply", str(json_path), "--out", str(tmp_path / "o")]
    assert main([*args, "--no-cache"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("sai-attack: error: ")
    assert err.count("\n") == 1
    assert "'params' is []" in err


def _templates(run: Path) -> Path:
    return run / "templates" / "img01.npz"


TEMPLATE_DAMAGE = {
    "truncated": _truncate,
    "empty": lambda p: p.write_bytes(b""),
    "garbage": lambda p: p.write_bytes(b"PK\x03\x04" + b"\x00" * 100),
    "wrong shape": lambda p: np.savez(p, attention=np.zeros((3, 3, 3)), mask=np.zeros(5)),
    "text array": lambda p: np.savez(p, attention=np.array([["a"]]), mask=np.array([["b"]])),
    "other size": lambda p: np.savez(p, attention=np.zeros((8, 8)), mask=np.zeros((8, 8))),
}


@pytest.mark.parametrize("case", sorted(TEMPLATE_DAMAGE))
def test_damaged_template(base_run, tmp_path, model, case, log):
    run = tmp_path / "run"
    shutil.copytree(base_run, run)
    TEMPLATE_DAMAGE[case](_templates(run))
    report = analyze_run(run, model=model)
    sources = {r["image"]: r["source"] for r in report.images}
    if case == "other size":  # readable, but not of the image's size: left out
        assert "img01" not in sources
        assert "shapes differ" in report.left_out["img01"]
    else:  # unreadable: the attention is computed instead, and the log says so
        assert sources["img01"] == "computed attention"
        assert "computing the attention instead" in log.text
        assert "templates/img01.npz" in log.text
    assert len(sources) >= N_IMAGES - 1
    masked = analyze_run(run, foreground="mask")
    assert [r["image"] for r in masked.images] == ["img00", "img02", "img03"]
    assert "img01" in masked.left_out


def test_texture_leaves_out_or_recomputes_damaged_pairs(base_run, tmp_path, model):
    run, reason = tampered(base_run, tmp_path, "undecodable_adversarial")
    report = analyze_run(run, model=model)
    assert report.left_out == {"img01": reason}
    assert len(report.images) == N_IMAGES - 1
    assert "Images left out (unreadable or mismatched files): undecodable_adversarial: 1." in (
        texture_markdown([report])
    )
    # A pair of another size does not fit its saved template: left out.
    run, _ = tampered(base_run, tmp_path, "pair_of_another_size")
    report = analyze_run(run, model=model)
    assert report.left_out["img01"].startswith(f"shapes differ: clean ({SIZE + 8}, {SIZE + 8}, 3)")
    # Without templates its attention is computed in a batch of its own size, and it is used.
    shutil.rmtree(run / "templates")
    report = analyze_run(run, model=model, batch_size=4)
    assert len(report.images) == N_IMAGES
    assert not report.left_out
    assert {r["source"] for r in report.images} == {"computed attention"}


@pytest.fixture(scope="module")
def ten_class_resnet(tmp_path_factory) -> Path:
    import torchvision

    path = tmp_path_factory.mktemp("weights") / "resnet18_10.pt"
    torch.save(torchvision.models.resnet18(num_classes=10).state_dict(), path)
    return path


def test_checkpoint_for_another_class_count(ten_class_resnet):
    with pytest.raises(WeightsError) as exc:
        load_model("torchvision:resnet18", ten_class_resnet)
    message = str(exc.value)
    assert message == (
        f"weights {str(ten_class_resnet)!r} do not fit torchvision:resnet18: the checkpoint has "
        "10 classes and the model 1000; 2 tensor(s) have other shapes: fc.weight (10, 512) vs "
        "(1000, 512), fc.bias (10,) vs (1000,)"
    )


def test_weights_of_other_shapes(tmp_path):
    import torchvision

    state = torchvision.models.resnet18().state_dict()
    state["conv1.weight"] = torch.zeros(64, 3, 3, 3)
    state["layer1.0.bn1.bias"] = torch.zeros(5)
    torch.save(state, tmp_path / "odd.pt")
    with pytest.raises(WeightsError, match=r"2 tensor\(s\) have other shapes: conv1.weight "):
        load_model("torchvision:resnet18", tmp_path / "odd.pt")
    # A checkpoint for another architecture: missing and unexpected keys.
    torch.save(torchvision.models.alexnet().state_dict(), tmp_path / "alexnet.pt")
    with pytest.raises(WeightsError, match="do not fit torchvision:resnet18: .*missing keys"):
        load_model("torchvision:resnet18", tmp_path / "alexnet.pt")


def test_cli_weights_that_do_not_fit_exit_2(base_run, ten_class_resnet, tmp_path, capsys):
    target = f"torchvision:resnet18@weights={ten_class_resnet}"
    code = main(["evaluate", str(base_run), "--out", str(tmp_path / "e"), "--models", target])
    assert code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "the checkpoint has 10 classes and the model 1000" in err


@pytest.mark.parametrize(
    ("option", "message"),
    [
        ("size=-5", "size of target 'onnx:m.onnx@size=-5' must be an integer in 8..4096, got '-5'"),
        ("size=100000", "size of target 'onnx:m.onnx@size=100000' must be an integer in 8..4096"),
        ("size=7", "must be an integer in 8..4096, got '7'"),
        ("size=2.5", "must be an integer in 8..4096, got '2.5'"),
        ("size=", "must be an integer in 8..4096, got ''"),
        ("mean=nan", "mean of target 'onnx:m.onnx@mean=nan' must be a finite number"),
        ("std=inf/1/1", "std of target 'onnx:m.onnx@std=inf/1/1' must be a finite number"),
        ("label-offset=-1", "label-offset of target 'onnx:m.onnx@label-offset=-1' must be"),
    ],
)  # fmt: skip
def test_target_options_are_bounded(option, message):
    with pytest.raises(ValueError, match="of target 'onnx:m.onnx@") as exc:
        load_target(f"onnx:m.onnx@{option}")
    assert message in str(exc.value)


def test_cli_huge_onnx_size_exit_2(base_run, tmp_path, capsys):
    spec = "onnx:model.onnx@size=100000"
    code = main(["evaluate", str(base_run), "--out", str(tmp_path / "e"), "--models", spec])
    assert code == 2
    assert "must be an integer in 8..4096, got '100000'" in capsys.readouterr().err


# --------------------------------------------------------------------------------------------
# Class 2: output folders that could overwrite a run folder or the data
# --------------------------------------------------------------------------------------------


def test_check_output_folder(tmp_path):
    run = tmp_path / "runs" / "a"
    (run / "images").mkdir(parents=True)
    os.symlink(run, tmp_path / "link")
    for out, relation in [
        (run, "is"),
        (tmp_path / "link", "is"),
        (run / "images", "lies inside"),
        (tmp_path / "link" / "new" / "deeper", "lies inside"),
        (tmp_path / "runs", "contains"),
        (tmp_path, "contains"),
    ]:
        expected = re.escape(f"output folder '{out}' {relation} the run folder '{run}', so its")
        with pytest.raises(RunError, match=f"^{expected}"):
            check_output_folder(out, [run], "run folder")
    # Sibling folders, and written paths that provably miss the input, are fine.
    check_output_folder(tmp_path / "runs" / "b", [run], "run folder")
    check_output_folder(tmp_path / "runs", [run], "run folder", writes=["a.json", "b/x.csv"])
    check_output_folder(tmp_path / "missing", [tmp_path / "missing" / "x"], "run folder")
    with pytest.raises(RunError, match="contains"):
        check_output_folder(tmp_path / "runs", [run], "run folder", writes=["a/x.json"])
    with pytest.raises(RunError, match="contains"):
        check_output_folder(tmp_path, [run], "run folder", writes=["runs"])
    os.symlink(run / "images", tmp_path / "runs" / "plots")  # a written folder leads inside
    with pytest.raises(RunError, match="contains"):
        check_output_folder(tmp_path / "runs", [run], "run folder", writes=["plots/p.png"])


def _outputs(run: Path, tmp_path: Path, contains: bool) -> list[Path]:
    (tmp_path / "link").symlink_to(run)
    return [run, run / "images", run / "sub", tmp_path / "link"] + [run.parent] * contains


@pytest.mark.parametrize("command", ["evaluate", "detect", "save-model", "texture"])
def test_cli_refuses_output_folders_overlapping_a_run(base_run, tmp_path, capsys, command):
    run = tmp_path / "runs" / "run"
    run.parent.mkdir()
    shutil.copytree(base_run, run)
    before = tree_digest(run)
    # texture writes only DIR/texture*.csv and .md: the folder holding the run is fine.
    for out in _outputs(run, tmp_path, contains=command != "texture"):
        args = {
            "evaluate": ["evaluate", str(run), "--out", str(out), "--models", "efficientnet-lite0"],
            "detect": ["detect", str(run), "--out", str(out), "--no-cache"],
            "save-model": ["detect", str(run), "--out", str(tmp_path / "d"), "--no-cache",
                           "--save-model", str(out)],
            "texture": ["texture", str(run), "--out", str(out)],
        }[command]  # fmt: skip
        assert main(args) == 1, out
        err = capsys.readouterr().err
        assert err.startswith(f"sai-attack: error: output folder '{out}' ")
        assert "run folder" in err
    assert tree_digest(run) == before
    assert not (tmp_path / "d").exists()
    if command == "texture":  # beside the run folder: no written file can be one of its files
        assert main(["texture", str(run), "--out", str(run.parent)]) == 0
        assert (run.parent / "texture.csv").is_file()
        assert tree_digest(run) == before


def test_cli_reproduce_refuses_output_folders_overlapping_the_data(tmp_path, capsys):
    folder = tmp_path / "data"
    folder.mkdir()
    _png(folder / "a.png", 16)
    (folder / "labels.csv").write_text("image,label\na.png,1\n")
    before = tree_digest(folder)
    for out in [folder, folder / "out", tmp_path]:
        args = ["reproduce", "--data", str(folder), "--out", str(out), "--device", "cpu"]
        assert main(args) == 1
        assert "the data folder" in capsys.readouterr().err
    assert tree_digest(folder) == before
    assert not (folder / "out").exists()
