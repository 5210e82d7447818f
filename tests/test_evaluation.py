import csv
import json
import shutil
import warnings

import numpy as np
import pytest
import torch

from conftest import TinyNet, make_tiny_model, textured_images
from sai_attack import defenses as D
from sai_attack import evaluation as ev
from sai_attack.cli import main
from sai_attack.data import load_image, save_png, to_tensor, to_uint8
from sai_attack.pipeline import AttackConfig, AttackRun, RunOptions
from sai_attack.report import wilson_interval
from sai_attack.runs import RunFolderError, read_run
from sai_attack.runtime import image_seed

DEFENSES = ["resize:1.5..2.5:0.5", "avgpool:3,5", "maxpool:3", "bitdepth:3", "tvm", "jpeg:60"]


class CountingModel(torch.nn.Module):
    """Counts the images a model sees."""

    def __init__(self, model):
        super().__init__()
        self.model = model
        self.seen = 0

    def forward(self, x):
        self.seen += x.shape[0]
        return self.model(x)


class PixelHashModel(torch.nn.Module):
    """A 'classifier' whose class changes with almost any change of the pixels."""

    def forward(self, x):
        cls = (x.double().sum(dim=(1, 2, 3)) * 1e4).long() % 10
        return torch.nn.functional.one_hot(cls, 10).float()


def _make_inputs(folder, model, n=8, targeted=False):
    """n synthetic images; labels: the model's prediction for most, a wrong class for two."""
    folder.mkdir()
    x = textured_images(n, 32, seed=11)
    with torch.no_grad():
        pred = model(x).argmax(1).tolist()
    rows = []
    for i, img in enumerate(to_uint8(x)):
        name = f"img{i:02d}.png"
        save_png(folder / name, img)
        label = pred[i] if i not in (2, 5) else (pred[i] + 1) % 10
        rows.append([name, label, (pred[i] + 3) % 10])
    with (folder / "labels.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["image", "label", "target"])
        w.writerows(rows)
    return folder


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two untargeted runs (I-FGM, SAI-FGM) and one targeted run on the tiny model."""
    root = tmp_path_factory.mktemp("evalruns")
    model = make_tiny_model()
    inputs = _make_inputs(root / "inputs", model)
    opts = RunOptions(workers=0, batch_size=4)
    out = {}
    for name, method, targeted in (
        ("ifgm", "ifgm", False),
        ("saifgm", "sai-fgm", False),
        ("ifgm-targeted", "ifgm", True),
    ):
        cfg = AttackConfig(
            method=method, model="tiny", delta=6, image_size=32, steps=3, targeted=targeted
        )
        AttackRun(inputs, root / name, cfg, opts, model=model).run()
        out[name] = root / name
    return out


def _hand_computed(run_dir, models, defense, targeted=False, seed=0):
    """The protocol, image by image, without the library's batching or caching.

    Returns (n, successes) per model (one model: just the pair).
    """
    single = not isinstance(models, dict)
    models = {"m": models} if single else models
    counts = {name: [0, 0] for name in models}
    with (run_dir / "results.csv").open() as f:
        rows = [r for r in csv.DictReader(f) if r["status"] == "ok"]
    defended, kept = [], []
    for r in rows:
        stem = r["output"].split("/")[-1][: -len(".png")]
        if not (run_dir / "images" / f"{stem}.png").is_file():
            continue
        clean = to_tensor(load_image(run_dir / "clean" / f"{stem}.png"))
        adv = to_tensor(load_image(run_dir / "images" / f"{stem}.png"))
        s = [image_seed(seed, r["image"])]  # one image at a time, same seed for both
        defended += [defense(clean, seeds=s), defense(adv, seeds=s)]
        kept.append(r)
    for name, model in models.items():
        with torch.no_grad():
            preds = model(torch.cat(defended)).argmax(1).tolist()
        for i, r in enumerate(kept):
            pc, pa = preds[2 * i], preds[2 * i + 1]
            label = int(r["label"]) if r["label"] else int(r["clean_pred"])
            if pc == label:
                counts[name][0] += 1
                counts[name][1] += pa == int(r["target"]) if targeted else pa != label
    result = {name: tuple(c) for name, c in counts.items()}
    return result["m"] if single else result


@pytest.fixture(scope="module")
def evaluation(runs, tmp_path_factory):
    out = tmp_path_factory.mktemp("evalout")
    result = ev.evaluate_folders(
        [runs["ifgm"], runs["saifgm"], runs["ifgm-targeted"]],
        models={"tiny": make_tiny_model(), "other": make_tiny_model(seed=1)},
        defenses=DEFENSES,
        batch_size=3,
    )
    files = ev.write_evaluation(result, out)
    return result, files, out


def test_rates_match_a_hand_computation(runs, evaluation):
    _, files, _ = evaluation
    models = {"tiny": make_tiny_model(), "other": make_tiny_model(seed=1)}
    with files["csv"].open() as f:
        rows = {(r["run"], r["model"], r["spec"]): r for r in csv.DictReader(f)}
    specs = [d.spec for d in D.parse_defenses(["none", *DEFENSES])]
    assert len(rows) == 3 * 2 * len(specs)
    for run in ("ifgm", "saifgm", "ifgm-targeted"):
        for spec in specs:
            expected = _hand_computed(
                runs[run], models, D.parse_defense(spec), targeted=run.endswith("targeted")
            )
            for model_name, (n, successes) in expected.items():
                row = rows[(run, model_name, spec)]
                assert (int(row["n"]), int(row["successes"])) == (n, successes), (run, spec)
                rate = float(row["success_rate"]) if row["success_rate"] else float("nan")
                if n:
                    assert rate == pytest.approx(successes / n, abs=1e-6)
                else:
                    assert np.isnan(rate)
                assert int(row["images"]) == 8


def test_white_box_none_reproduces_the_attack_summary(runs, evaluation):
    result, _, _ = evaluation
    for run in ("ifgm", "saifgm", "ifgm-targeted"):
        summary = json.loads((runs[run] / "summary.json").read_text())
        row = result.row(run, "tiny", "none")
        assert row["setting"] == "white-box"
        assert row["n"] == summary["counts"]["correct"] == 6  # two labels are wrong on purpose
        assert row["successes"] == summary["counts"]["successes"]
        assert result.row(run, "other", "none")["setting"] == "black-box"
        assert result.row(run, "tiny", "jpeg:60")["setting"] == "gray-box"
    assert result.row("ifgm-targeted", "tiny", "none")["attack_model"] == "tiny"
    assert result.runs[2].targeted


def test_output_files(evaluation):
    result, _, out = evaluation
    header = (out / "evaluation.csv").read_text().splitlines()[0].split(",")
    assert header[:9] == [
        "run", "method", "delta", "delta_eff", "model", "defense", "param", "spec", "setting",
    ]  # fmt: skip
    assert {"n", "success_rate"} <= set(header)
    record = json.loads((out / "evaluation.json").read_text())
    assert set(record["protocol"]) == set(ev.PROTOCOL)
    assert [r["name"] for r in record["runs"]] == ["ifgm", "saifgm", "ifgm-targeted"]
    assert record["runs"][0]["delta"] == 6.0
    assert len(record["results"]) == len(result.rows)
    assert record["results"][0]["n"] == result.rows[0]["n"]
    assert [d["spec"] for d in record["defenses"]][:3] == ["none", "resize:1.5", "resize:2"]
    md = (out / "evaluation.md").read_text()
    assert "layout of Table 1" in md
    assert "layout of Table 3" in md
    assert "| AVG | 6√N | ifgm (I-FGM) |" in md
    row = result.row("saifgm", "tiny", "none")
    low, high = wilson_interval(row["successes"], row["n"])
    rate = f"{100 * row['success_rate']:.1f} [{100 * low:.1f}, {100 * high:.1f}]"
    assert f"{rate}* (n={row['n']})" in md
    assert "95% Wilson interval" in md
    assert header[-2:] == ["ci_low", "ci_high"]
    with (out / "evaluation.csv").open() as f:
        for r in csv.DictReader(f):
            if int(r["n"]):
                expected = wilson_interval(int(r["successes"]), int(r["n"]))
                got = (float(r["ci_low"]), float(r["ci_high"]))
                assert got == pytest.approx(expected, abs=1e-5)
                assert got[0] <= float(r["success_rate"]) <= got[1]
            else:
                assert (r["ci_low"], r["ci_high"]) == ("", "")
    first = record["results"][0]
    assert [first["ci_low"], first["ci_high"]] == pytest.approx(
        wilson_interval(first["successes"], first["n"]), abs=1e-6
    )
    assert "![resize on tiny](plots/resize_tiny.png)" in md
    for name in ("resize_tiny.png", "resize_other.png", "avgpool_tiny.png", "avgpool_other.png"):
        assert (out / "plots" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not (out / "plots" / "jpeg_tiny.png").exists()  # one value is not a sweep
    with (out / "predictions.csv").open() as f:
        predictions = list(csv.DictReader(f))
    assert len(predictions) == 3 * 8 * 2 * len(result.defenses)
    some = [
        p for p in predictions if (p["run"], p["model"], p["defense"]) == ("ifgm", "tiny", "none")
    ]
    assert sum(int(p["clean_correct"]) for p in some) == result.row("ifgm", "tiny", "none")["n"]


def test_batch_size_independent_and_clean_predictions_cached(runs):
    counting = CountingModel(make_tiny_model())
    paths = [runs["ifgm"], runs["saifgm"]]
    a = ev.evaluate_folders(paths, {"tiny": counting}, ["tvm", "resize:2"], batch_size=8)
    # Per defense: 8 clean images once (both runs share them) + 8 adversarial images per run.
    assert counting.seen == 3 * (8 + 2 * 8)
    b = ev.evaluate_folders(paths, {"tiny": make_tiny_model()}, ["tvm", "resize:2"], batch_size=3)
    assert a.rows == b.rows
    assert a.predictions == b.predictions
    # The seed sets TVM's masks: a model that reacts to any pixel change sees it.
    seeded = {
        seed: ev.evaluate_folders(paths, {"hash": PixelHashModel()}, ["tvm"], seed=seed)
        for seed in (0, 5)
    }
    tvm = {k: [p["adv_pred"] for p in v.predictions if p["defense"] == "tvm:0.03"] for k, v in
           seeded.items()}  # fmt: skip
    assert tvm[0] != tvm[5]
    assert tvm[0] == [
        p["adv_pred"]
        for p in ev.evaluate_folders(
            paths, {"hash": PixelHashModel()}, ["tvm"], batch_size=5
        ).predictions
        if p["defense"] == "tvm:0.03"
    ]


def test_runs_without_labels_use_the_clean_prediction(runs, tmp_path):
    run = tmp_path / "nolabels"
    shutil.copytree(runs["ifgm"], run)
    with (run / "results.csv").open() as f:
        rows = list(csv.DictReader(f))
    for r in rows:
        r["label"] = ""
    with (run / "results.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]), lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
    # One adversarial file is missing: that image is left out.
    (run / "images" / "img07.png").unlink()
    result = ev.evaluate_folders([run], {"tiny": make_tiny_model()}, [])
    info = result.runs[0]
    assert info.label_source == "clean prediction"
    assert len(info.items) == 7
    assert [m.split(":")[0] for m in info.missing] == ["img07.png"]
    row = result.row("nolabels", "tiny", "none")
    # Against its own clean prediction every image is "correct" on the attacked model.
    assert row["n"] == 7
    assert (row["n"], row["successes"]) == _hand_computed(run, make_tiny_model(), D.NoDefense())


def test_bad_inputs(tmp_path, runs):
    with pytest.raises(RunFolderError, match="run folder .*nope' does not exist"):
        read_run(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(RunFolderError, match="is not a run folder: results.csv is missing"):
        ev.evaluate_folders([tmp_path / "empty"], {"tiny": make_tiny_model()}, [])
    with pytest.raises(ValueError, match="unknown defense 'blur'"):
        ev.evaluate_folders([runs["ifgm"]], {"tiny": make_tiny_model()}, ["blur:3"])
    # The default model is the one the run attacked; "tiny" is not a loadable name.
    with pytest.raises(ValueError, match="unknown target 'tiny'"):
        ev.evaluate_folders([runs["ifgm"]], None, [])
    run, tiny = read_run(runs["ifgm"]), ev.Target("tiny", "tiny", make_tiny_model())
    with pytest.raises(ev.EvaluationError, match="models is empty"):
        ev.load_targets([" "], [run])
    with pytest.raises(ev.EvaluationError, match="no model to evaluate on"):
        ev.evaluate([run], [], [])
    with pytest.raises(ValueError, match=r"batch_size must be an integer in \[1, 65536\], got 0"):
        ev.evaluate([run], [tiny], [], batch_size=0)


def test_reads_a_run_folder_of_the_previous_version(runs, tmp_path):
    old = tmp_path / "old-schema"
    shutil.copytree(runs["ifgm-targeted"], old)
    # summary.json and run.json as f20f404 wrote them (no "schema"; "iters", "segments").
    config = {
        "method": "ifgm", "model": "tiny", "weights": None, "delta": 6.0, "iters": 3,
        "superpixel": "slic", "superpixel_size": 5.0, "segments": None, "compactness": 20.0,
        "merge_beta": 0.0, "phi": 4 / 12, "attention": "auto", "align_mask": True,
        "grad_mode": "noise", "momentum": 1.0, "loss": "ce", "budget": None, "targeted": True,
        "attack_prediction": False, "image_size": 32, "seed": 0,
    }  # fmt: skip
    attack = {"method": "ifgm", "delta": 6.0, "steps": 3, "loss": "ce", "targeted": True,
              "budget": "within", "seed": 0}  # fmt: skip
    summary = {"method": "ifgm", "model": "tiny", "parameters": attack, "config": config}
    record = {"config": config, "attack": attack, "model": "tiny", "input": "in", "image_size": 32}
    (old / "summary.json").write_text(json.dumps(summary))
    (old / "run.json").write_text(json.dumps(record))
    result = ev.evaluate_folders([old], {"tiny": make_tiny_model()}, ["jpeg:60"], batch_size=3)
    run = result.runs[0]
    assert (run.record.schema, len(run.items)) == (1, 8)
    assert (run.method, run.model, run.delta, run.targeted) == ("ifgm", "tiny", 6.0, True)
    for spec in ("none", "jpeg:60"):
        row = result.row("old-schema", "tiny", spec)
        assert (row["method"], row["delta"], row["targeted"]) == ("ifgm", 6.0, True)
        expected = _hand_computed(old, make_tiny_model(), D.parse_defense(spec), targeted=True)
        assert (row["n"], row["successes"]) == expected
    assert result.row("old-schema", "tiny", "none")["setting"] == "white-box"
    described = json.loads(ev.results_json(result))["runs"][0]
    assert [described[k] for k in ("method", "delta", "targeted")] == ["ifgm", 6.0, True]
    assert "| old-schema (I-FGM, δ=6) |" in ev.results_markdown(result)


def _export_tiny(path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(TinyNet().eval(), (torch.rand(1, 3, 32, 32),), str(path), dynamo=False,
                          input_names=["x"], output_names=["y"],
                          dynamic_axes={"x": {0: "b"}, "y": {0: "b"}})  # fmt: skip


def test_cli_evaluate_with_an_onnx_target(runs, tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    onnx_path = tmp_path / "tiny.onnx"
    _export_tiny(onnx_path)
    out = tmp_path / "out"
    target = f"onnx:{onnx_path}@mean=0.5,std=0.25"
    code = main(
        ["evaluate", str(runs["ifgm"]), str(runs["saifgm"]), "--out", str(out),
         "--models", target, "--defenses", "jpeg:50..70:20", "avgpool:3",
         "--batch-size", "3", "--workers", "0"]
    )  # fmt: skip
    assert code == 0
    printed = capsys.readouterr().out
    assert "| ifgm (I-FGM, δ=6) |" in printed
    assert (out / "plots" / "jpeg_onnx_tiny.png").is_file()
    with (out / "evaluation.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2 * 4
    # The ONNX export of the tiny network with its normalisation is the tiny model.
    tiny = make_tiny_model()
    for r in rows:
        n, s = _hand_computed(runs[r["run"]], tiny, D.parse_defense(r["spec"]))
        assert (int(r["n"]), int(r["successes"])) == (n, s)
        assert r["setting"] == ("black-box" if r["spec"] == "none" else "gray-box")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--defenses", "jpeg:0"], "jpeg quality q must be an integer in 1..100, got 0"),
        (["--defenses", "resize"], "defense 'resize' needs its parameter gamma"),
        (["--models", "tflite:/nonexistent.tflite"], "TFLite model file '/nonexistent.tflite'"),
        (["--label-offset", "x"], "label_offset must be 'auto' or an integer >= 0, got 'x'"),
        (["--label-offset", "-1"], "label_offset must be 'auto' or an integer >= 0, got '-1'"),
        (["--seed", "-1"], "seed must be an integer >= 0, got -1"),
        (["--batch-size", "0"], "--batch-size: batch_size must be an integer in [1, 65536]"),
    ],
)
def test_cli_bad_arguments_exit_2(runs, tmp_path, capsys, args, message):
    out = tmp_path / "out"
    try:
        code = main(["evaluate", str(runs["ifgm"]), "--out", str(out), *args])
    except SystemExit as exc:  # argparse errors
        code = exc.code
    assert code == 2
    assert message in capsys.readouterr().err
    assert not (out / "evaluation.csv").exists()


def test_cli_missing_run_folder(tmp_path, capsys):
    assert main(["evaluate", str(tmp_path / "missing"), "--out", str(tmp_path / "o")]) == 2
    assert "does not exist" in capsys.readouterr().err


@pytest.mark.integration
def test_lite0_run_and_tflite_target(nips17, tmp_path, capsys):
    """A real run on three images, evaluated on Lite0 and a quantised MobileNet."""
    pytest.importorskip("ai_edge_litert")
    tflite = nips17.parents[1] / "models" / "mobilenet_v1_0.75_192_quant.tflite"
    if not tflite.is_file():
        pytest.skip("shared TFLite models not found")
    folder = tmp_path / "in"
    folder.mkdir()
    with (nips17 / "labels.csv").open() as f:
        rows = list(csv.DictReader(f))[:3]
    for r in rows:
        shutil.copy(nips17 / "images" / r["image"], folder / r["image"])
    with (folder / "labels.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["image", "label"])
        w.writerows([[r["image"], r["label"]] for r in rows])
    run = tmp_path / "run"
    assert main(["attack", str(folder), "--out", str(run), "--method", "ifgm", "--iters", "2",
                 "--workers", "0"]) == 0  # fmt: skip
    out = tmp_path / "eval"
    code = main(
        ["evaluate", str(run), "--out", str(out), "--models", "efficientnet-lite0",
         f"tflite:{tflite}", "--defenses", "jpeg:55", "--workers", "0"]
    )  # fmt: skip
    assert code == 0
    summary = json.loads((run / "summary.json").read_text())
    result = json.loads((out / "evaluation.json").read_text())
    white = next(
        r for r in result["results"] if r["model"] == "efficientnet-lite0" and r["spec"] == "none"
    )
    assert white["setting"] == "white-box"
    assert white["n"] == summary["counts"]["correct"]
    assert white["successes"] == summary["counts"]["successes"]
    models = [m["name"] for m in result["models"]]
    assert models == ["efficientnet-lite0", "tflite:mobilenet_v1_0.75_192_quant"]
    assert result["models"][1]["label_offset"] == 1
