import csv
import json
import shutil

import pytest
from PIL import Image

from sai_attack.cli import main
from sai_attack.data import load_image


def _folder_with_images(tmp_path, nips17, n=3):
    folder = tmp_path / "in"
    folder.mkdir()
    rows = list(csv.DictReader((nips17 / "labels.csv").open()))[:n]
    for r in rows:
        shutil.copy(nips17 / "images" / r["image"], folder / r["image"])
    with (folder / "labels.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["image", "label", "target"])
        for r in rows:
            w.writerow([r["image"], r["label"], r["target"]])
    return folder, rows


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--delta", "0"], "argument --delta: delta must be a finite number in (0, 255], got 0"),
        (["--delta", "-2"], "argument --delta: delta must be a finite number in (0, 255], got -2"),
        (
            ["--delta", "1e300"],
            "argument --delta: delta must be a finite number in (0, 255], got 1e300",
        ),
        (["--delta", "abc"], "argument --delta: delta must be a number, got 'abc'"),
        (["--phi", "1.5"], "argument --phi: phi must be a finite number in [0, 1], got 1.5"),
        (["--phi=-1/12"], "argument --phi: phi must be a finite number in [0, 1], got -1/12"),
        (["--phi", "13/12"], "argument --phi: phi must be a finite number in [0, 1], got 13/12"),
        (["--iters", "0"], "argument --iters: steps must be an integer in [1, 100000], got 0"),
        (
            ["--merge-beta", "-1"],
            "argument --merge-beta: merge_beta must be a finite number in [0, 1000], got -1",
        ),
        (
            ["--batch-size", "0"],
            "argument --batch-size: batch_size must be an integer in [1, 65536]",
        ),
        (["--segments", "99999999999"], "argument --segments: n_segments must be an integer in"),
        (
            ["--superpixel-size", "0.000001"],
            "argument --superpixel-size: superpixel_size must be a",
        ),
        (["--superpixel-size", "5", "--segments", "9"], "not allowed with argument"),
        (["--method", "pgd"], "argument --method: method 'pgd' is unknown; choose one of fgm,"),
        (["--superpixel", "quickshift"], "superpixel 'quickshift' is unknown; choose one of slic,"),
    ],
)
def test_bad_parameters_exit_2_before_work(tmp_path, capsys, args, message):
    img = tmp_path / "x.png"
    Image.new("RGB", (8, 8)).save(img)
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exc:
        main(["attack", str(img), "--out", str(out), *args])
    assert exc.value.code == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model", "nope"], "unknown model 'nope'; choose one of efficientnet-lite0"),
        (["--model", "torchvision:resnet18"], "needs weights (a .pt/.pth state dict"),
        (["--device", "cuda:7"], "device 'cuda:7' requested but CUDA is not available"),
        (["--device", "banana"], "device 'banana' is not a device"),
    ],
)
def test_bad_model_or_device_exit_2(tmp_path, capsys, args, message):
    img = tmp_path / "x.png"
    Image.new("RGB", (8, 8)).save(img)
    out = tmp_path / "out"
    assert main(["attack", str(img), "--out", str(out), *args]) == 2
    err = capsys.readouterr().err
    assert message in err
    assert err.count("\n") == 1
    assert not (out / "results.csv").exists()


def test_missing_input_exit_2(tmp_path, capsys):
    assert main(["attack", str(tmp_path / "missing"), "--out", str(tmp_path / "o")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_refuses_to_write_into_input_folder(tmp_path, capsys):
    Image.new("RGB", (8, 8)).save(tmp_path / "x.png")
    assert main(["attack", str(tmp_path), "--out", str(tmp_path), "--iters", "1"]) == 1
    assert "is, contains or writes into the input folder" in capsys.readouterr().err


@pytest.mark.integration
def test_attack_folder_end_to_end_with_lite0(tmp_path, nips17, lite0, capsys):
    import torch

    folder, rows = _folder_with_images(tmp_path, nips17, n=3)
    (folder / "broken.png").write_text("this is not an image")
    out = tmp_path / "run"
    code = main(["attack", str(folder), "--out", str(out), "--iters", "3", "--batch-size", "2",
                 "--save-templates"])  # fmt: skip
    assert code == 3  # one input skipped
    captured = capsys.readouterr()
    assert "skipped 'broken.png': not a recognised image format" in captured.err
    assert "sai-fgm on efficientnet-lite0: 3 attacked, 0 reused, 1 skipped" in captured.out
    results = list(csv.DictReader((out / "results.csv").open()))
    assert [r["image"] for r in results] == sorted([*(r["image"] for r in rows), "broken.png"])
    by_name = {r["image"]: r for r in results}
    assert by_name["broken.png"]["status"] == "skipped: not a recognised image format"
    for r in rows:
        row = by_name[r["image"]]
        assert row["status"] == "ok"
        assert row["label"] == r["label"]
        adv = load_image(out / row["output"])
        clean = load_image(out / "clean" / row["output"].split("/")[-1])
        assert adv.shape == clean.shape == (224, 224, 3)
        x = torch.from_numpy(adv).permute(2, 0, 1)[None].float() / 255
        with torch.no_grad():
            assert int(lite0(x).argmax()) == int(row["adv_pred"])  # measured on the saved PNG
        assert abs(float(row["delta_eff"]) - 4.0) < 0.15  # exact budget, then 8-bit rounding
        assert int(row["superpixels"]) > 1000
        assert 0 < float(row["mask_fraction"]) < 1
        assert (out / "templates" / (row["output"].split("/")[-1][:-4] + ".npz")).is_file()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["method"] == "sai-fgm"
    assert summary["protocol"]["budget"] == "exact"
    assert summary["counts"]["ok"] == 3
    assert summary["counts"]["skipped"] == 1
    assert summary["parameters"]["phi"] == pytest.approx(4 / 12)
    assert "torch" in summary["versions"]

    # Re-running resumes: finished images are not recomputed.
    mtimes = {p.name: p.stat().st_mtime_ns for p in (out / "images").iterdir()}
    assert main(["attack", str(folder), "--out", str(out), "--iters", "3", "--batch-size", "2",
                 "--save-templates"]) == 3  # fmt: skip
    assert "0 attacked, 3 reused, 1 skipped" in capsys.readouterr().out
    assert mtimes == {p.name: p.stat().st_mtime_ns for p in (out / "images").iterdir()}
    assert len(list(csv.DictReader((out / "results.csv").open()))) == 4

    # A different configuration into the same folder is refused.
    assert main(["attack", str(folder), "--out", str(out), "--iters", "4"]) == 1
    assert "holds a run with different parameters" in capsys.readouterr().err


@pytest.mark.integration
def test_attack_single_image_without_labels_ifgm(tmp_path, nips17, capsys):
    image = next(iter(sorted((nips17 / "images").iterdir())))
    out = tmp_path / "one"
    assert main(["attack", str(image), "--out", str(out), "--method", "ifgm", "--iters", "2"]) == 0
    row = next(csv.DictReader((out / "results.csv").open()))
    assert row["label"] == ""
    assert row["superpixels"] == ""
    assert row["mask_fraction"] == "1.0000"
    assert float(row["delta_eff"]) <= 4.0 + 0.3
    summary = json.loads((out / "summary.json").read_text())
    assert summary["protocol"]["budget"] == "within"
    assert summary["protocol"]["labels"] == "clean prediction used as label"


@pytest.mark.integration
@pytest.mark.slow
def test_demo_runs(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path / "demo")]) == 0
    out = capsys.readouterr().out
    assert "| ifgm |" in out
    assert "| sai-fgm |" in out
    assert (tmp_path / "demo" / "comparison.png").stat().st_size > 10_000
    assert len(list((tmp_path / "demo" / "sai-fgm" / "images").glob("*.png"))) == 12
