"""Delta sweeps (one run per delta, templates computed once) and the min_delta search."""

from __future__ import annotations

import json
import statistics

import numpy as np
import pytest
from PIL import Image

from conftest import make_tiny_model, textured_images
from sai_attack import cli, data
from sai_attack.pipeline import AttackConfig, AttackRun, MinDelta, RunOptions, sweep
from sai_attack.pipeline.sweeps import check_deltas
from sai_attack.runs import SWEEP_COLUMNS, read_results, read_run, read_sweep
from sai_attack.runs.sweep import SweepLayout, delta_text
from sai_attack.runtime import EXIT_USAGE, RunError

IMAGES = [f"im{i}.png" for i in range(5)]
DELTAS = [2.0, 4.0, 8.0]


@pytest.fixture
def folder(tmp_path):
    root = tmp_path / "in"
    root.mkdir()
    pics = textured_images(batch=len(IMAGES), size=32, seed=3).permute(0, 2, 3, 1) * 255
    for name, img in zip(IMAGES, pics.round().numpy().astype(np.uint8), strict=True):
        Image.fromarray(img).save(root / name)
    return root


def _config(**kwargs) -> AttackConfig:
    values = {"method": "sai-fgm", "model": "tiny", "delta": 8.0, "steps": 2, "image_size": 32}
    return AttackConfig(**{**values, **kwargs})


def _options(**kwargs) -> RunOptions:
    # A fixed layout: "auto" measures the tiny model's speed, and the layout is part of the key.
    return RunOptions(workers=0, batch_size=2, progress=False, memory_format="contiguous",
                      **kwargs)  # fmt: skip


def _pngs(out) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((out / "images").glob("*.png"))}


# -- sweeps ---------------------------------------------------------------------------------------


def test_a_sweep_writes_the_runs_separate_runs_write_and_computes_templates_once(folder, tmp_path):
    model = make_tiny_model()
    result = sweep(folder, tmp_path / "sweep", _config(), DELTAS, _options(), model=model)
    layout = SweepLayout(tmp_path / "sweep")
    for delta in DELTAS:
        alone = tmp_path / f"alone-{delta:g}"
        AttackRun(folder, alone, _config(delta=delta), _options(), model=model).run()
        assert _pngs(layout.run(delta)) == _pngs(alone)  # byte for byte
        assert len(_pngs(alone)) == len(IMAGES)
        swept = {r["image"]: r for r in read_results(layout.run(delta) / "results.csv")}
        for row in read_results(alone / "results.csv"):
            assert swept[row["image"]] == row  # every column, the input hash included
        run = read_run(layout.run(delta))  # an ordinary run folder
        assert run.delta == delta
    counts = [result.runs[d].cache["templates"] for d in DELTAS]
    assert counts[0] == {"computed": 5, "reused": 0, "rejected": 0}
    assert counts[1:] == [{"computed": 0, "reused": 5, "rejected": 0}] * 2
    assert [result.runs[d].cache["attention"]["computed"] for d in DELTAS] == [5, 0, 0]
    assert [result.runs[d].cache["predictions"]["computed"] for d in DELTAS] == [5, 0, 0]


def test_sweep_csv_and_png_summarise_the_runs(folder, tmp_path):
    result = sweep(folder, tmp_path / "s", _config(), DELTAS, _options(), model=make_tiny_model())
    rows = read_sweep(tmp_path / "s")
    assert list(rows[0]) == list(SWEEP_COLUMNS)
    assert [r["delta"] for r in rows] == ["2", "4", "8"]
    assert [r["run"] for r in rows] == ["delta-2", "delta-4", "delta-8"]
    for row, delta in zip(rows, DELTAS, strict=True):
        summary = json.loads((tmp_path / "s" / row["run"] / "summary.json").read_text())
        assert float(row["success_rate"]) == pytest.approx(summary["success_rate"], abs=1e-6)
        assert float(row["mean_delta_eff"]) == pytest.approx(summary["mean_delta_eff"], abs=1e-6)
        assert row["method"] == "sai-fgm"
        assert int(row["ok"]) == result.runs[delta].attacked == 5
    assert [int(r["templates_computed"]) for r in rows] == [5, 0, 0]
    effs = [float(r["mean_delta_eff"]) for r in rows]
    assert effs == sorted(effs)  # a larger delta is a larger perturbation
    png = (tmp_path / "s" / "sweep.png").read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    assert data.decode_image(png, name="sweep.png").shape[1] > 600


def test_a_sweep_with_a_cache_dir_keeps_it_and_resumes(folder, tmp_path):
    options = _options(cache_dir=str(tmp_path / "cache"))
    sweep(folder, tmp_path / "s", _config(), DELTAS[:2], options, model=make_tiny_model())
    assert (tmp_path / "cache" / "templates").is_dir()
    again = sweep(folder, tmp_path / "s", _config(), DELTAS, options, model=make_tiny_model())
    assert [again.runs[d].processed for d in DELTAS] == [0, 0, 5]  # finished runs resume
    assert again.runs[8.0].cache["templates"] == {"computed": 0, "reused": 5, "rejected": 0}


def test_sweep_deltas_are_checked():
    assert check_deltas([1, 2.5]) == [1.0, 2.5]
    with pytest.raises(ValueError, match="^delta 2 is given twice$"):
        check_deltas([2, 4, 2.0])
    with pytest.raises(ValueError, match="^delta: a sweep needs at least one value$"):
        check_deltas([])
    with pytest.raises(ValueError, match=r"^delta must be a finite number in \(0, 255\], got -1"):
        check_deltas([1, -1])


def test_delta_folder_names_are_exact_and_distinct():
    assert [delta_text(d) for d in (1.0, 0.5, 16.0, 1.25)] == ["1", "0.5", "16", "1.25"]
    assert delta_text(1 / 3) == "0.3333333333333333"
    assert float(delta_text(1 + 1e-9)) == 1 + 1e-9
    assert delta_text(1 + 1e-9) != delta_text(1.0)


def test_cli_takes_several_deltas_but_not_with_min_delta(folder, tmp_path, capsys):
    code = cli.main(["attack", str(folder), "--out", str(tmp_path / "o"), "--delta", "1", "2",
                     "--min-delta", "1", "8"])  # fmt: skip
    assert code == EXIT_USAGE
    assert "give --min-delta or several --delta" in capsys.readouterr().err
    code = cli.main(["attack", str(folder), "--out", str(tmp_path / "o"), "--min-delta", "8", "1"])
    assert code == EXIT_USAGE
    assert "min_delta low must be below high, got low 8 and high 1" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


# -- min_delta --------------------------------------------------------------------------------


def test_min_delta_checks_its_settings():
    assert MinDelta(0.5, 16).resolution == pytest.approx(15.5 / 64)
    with pytest.raises(
        ValueError, match="^min_delta low must be below high, got low 4 and high 4$"
    ):
        MinDelta(4, 4)
    with pytest.raises(ValueError, match=r"^min_delta must be a finite number in \(0, 255\]"):
        MinDelta(0, 4)
    with pytest.raises(ValueError, match=r"^min_delta_steps must be an integer in \[1, 40\]"):
        MinDelta(1, 4, steps=0)


def test_min_delta_is_the_bisection_bracket_top_and_its_image_is_saved(folder, tmp_path):
    model = make_tiny_model(seed=2)  # fooled at deltas between 8 and 32 (seed 0: none)
    search = MinDelta(1.0, 32.0, steps=3)
    out = tmp_path / "min"
    AttackRun(folder, out, _config(), _options(), model=model, min_delta=search).run()
    rows = read_results(out / "results.csv")
    found = {r["image"]: float(r["min_delta"]) for r in rows if r["min_delta"]}
    assert len(set(found.values())) > 1, "images fall at several deltas"
    grid = {1.0 + k * search.resolution for k in range(2**3 + 1)}
    for row in rows:
        if not row["min_delta"]:
            assert row["success"] == "0"  # resisted even delta 32
            continue
        delta = float(row["min_delta"])
        assert row["success"] == "1"
        assert min(abs(delta - g) for g in grid) < 1e-9  # a point of the bisection grid
        assert float(row["delta_eff"]) <= delta + 0.5 + 1e-9  # saved within its own budget
    # Each saved image is the attack at its min_delta, and that attack succeeds on its own.
    for delta in set(found.values()):
        alone = tmp_path / f"at-{delta:g}"
        AttackRun(folder, alone, _config(delta=delta), _options(), model=model).run()
        by_image = {r["image"]: r for r in read_results(alone / "results.csv")}
        for image in (i for i, d in found.items() if d == delta):
            assert by_image[image]["success"] == "1"
            saved = data.load_image(out / "images" / image)
            again = data.load_image(alone / "images" / image)
            assert np.abs(saved.astype(int) - again.astype(int)).max() <= 1
    summary = json.loads((out / "summary.json").read_text())
    correct = [r for r in rows if r["label"] in ("", r["clean_pred"])]
    expected = [float(r["min_delta"]) for r in correct if r["min_delta"]]
    assert summary["min_delta"]["median"] == pytest.approx(statistics.median(expected))
    assert summary["min_delta"]["found"] == len(expected)
    assert summary["min_delta"]["steps"] == 3
    assert summary["parameters"]["delta"] == 32.0
    assert json.loads((out / "run.json").read_text())["min_delta"] == search.record()
    assert read_run(out).items[0].min_delta == found.get(read_run(out).items[0].image)


def test_a_min_delta_folder_resumes_only_the_same_search(folder, tmp_path):
    model = make_tiny_model()
    out = tmp_path / "min"
    AttackRun(folder, out, _config(), _options(limit=2), model=model,
              min_delta=MinDelta(1, 16, steps=1)).run()  # fmt: skip
    with pytest.raises(RunError, match="holds a run with different parameters"):
        AttackRun(folder, out, _config(), _options(), model=model,
                  min_delta=MinDelta(1, 16, steps=2)).run()  # fmt: skip
    with pytest.raises(RunError, match="holds a run with different parameters"):
        AttackRun(folder, out, _config(delta=16), _options(), model=model).run()
    done = AttackRun(folder, out, _config(), _options(), model=model,
                     min_delta=MinDelta(1, 16, steps=1)).run()  # fmt: skip
    assert (done.reused, done.processed) == (2, 3)


def test_min_delta_runs_with_a_superpixel_count(folder, tmp_path):
    # Each delta's attack is the run's config with another delta (dataclasses.replace), which
    # once re-validated a superpixel_size that n_segments had replaced, and failed.
    cfg = _config(n_segments=20)
    out = tmp_path / "count"
    AttackRun(folder, out, cfg, _options(), model=make_tiny_model(seed=2),
              min_delta=MinDelta(1.0, 32.0, steps=1)).run()  # fmt: skip
    rows = read_results(out / "results.csv")
    assert [r["status"] for r in rows] == ["ok"] * len(IMAGES)
    assert json.loads((out / "run.json").read_text())["parameters"]["n_segments"] == 20
