"""HILL texture of the attention foreground vs background, and `sai-attack texture`."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import conseal as cl
import numpy as np
import pytest
import torch
from PIL import Image
from scipy.ndimage import zoom

from conftest import make_tiny_model
from sai_attack import data
from sai_attack.attention import attention_map
from sai_attack.cli import main
from sai_attack.detection.texture import analyze_run, hill_cost, region_stats
from sai_attack.pipeline import AttackConfig, AttackRun, RunOptions

SAMPLE = Path(data.__file__).parents[1] / "samples" / "0ed355357757528d.png"
FLAT_COST = 1.0 / np.finfo(np.float32).eps  # HILL of a flat area: 1/EPS32 everywhere


def test_hill_cost_matches_conseal_reference_on_luminance():
    image = data.load_image(SAMPLE)
    cost = hill_cost(image)
    gray = np.asarray(Image.fromarray(image).convert("L"))
    with cl.tools.BACKEND_PYTHON:
        reference = cl.hill._costmap.compute_cost(gray)
    assert cost.shape == gray.shape
    assert cost.dtype == np.float32
    np.testing.assert_allclose(cost, reference, rtol=1e-4)
    # Small images use the Python backend (conseal's Rust HILL fails below 9 x 9).
    np.testing.assert_allclose(hill_cost(gray[:8, :8]), cl.hill._costmap.compute_cost(gray[:8, :8]))


def test_hill_is_larger_on_smooth_than_on_textured_regions():
    rng = np.random.default_rng(0)
    flat = np.full((32, 32), 120, np.uint8)
    textured = rng.integers(0, 256, (32, 32), dtype=np.uint8)
    np.testing.assert_allclose(hill_cost(flat), FLAT_COST, rtol=1e-5)
    assert hill_cost(textured).mean() < 1e-3 * hill_cost(flat).mean()


def test_region_stats_known_answers():
    rng = np.random.default_rng(1)
    clean = np.full((32, 32, 3), 128, np.uint8)
    clean[:, :16] = rng.integers(0, 256, (32, 16, 3), dtype=np.uint8)  # textured left half
    fg = np.zeros((32, 32), bool)
    fg[:, :16] = True
    adv = clean.astype(int)
    adv[:, :16] += rng.choice(np.array([-2, 2]), size=(32, 16, 3))
    adv = np.clip(adv, 0, 255).astype(np.uint8)
    stats = region_stats(clean, adv, fg)
    assert stats["fg_fraction"] == 0.5
    assert stats["hill_fg"] < stats["hill_bg"]
    assert stats["sq_bg"] == 0
    assert stats["rms_bg"] == 0
    diff = adv.astype(float) - clean.astype(float)
    assert stats["rms_fg"] == pytest.approx(math.sqrt(np.mean(diff[:, :16] ** 2)))
    cost = hill_cost(clean)
    assert stats["hill_fg"] == pytest.approx(cost[:, :16].mean(), rel=1e-6)
    assert stats["hill_bg"] == pytest.approx(cost[:, 16:].mean(), rel=1e-6)
    empty = region_stats(clean, adv, np.zeros((32, 32), bool))
    assert math.isnan(empty["hill_fg"])
    assert math.isnan(empty["rms_fg"])
    with pytest.raises(ValueError, match="shapes differ"):
        region_stats(clean, adv, fg[:8])


@pytest.fixture(scope="module")
def texture_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("texture")
    inputs = root / "in"
    inputs.mkdir()
    rng = np.random.default_rng(5)
    for i in range(4):
        img = zoom(rng.uniform(40, 215, (4, 4, 3)), (8, 8, 1), order=1)
        img = np.clip(np.rint(img + rng.normal(0, 3, img.shape)), 0, 255).astype(np.uint8)
        data.save_png(inputs / f"t{i}.png", img)
    model = make_tiny_model()
    out = {}
    for name, method, templates in [("sai", "sai-fgm", True), ("ifgm", "ifgm", False)]:
        cfg = AttackConfig(method=method, model="tiny", delta=8, image_size=32, steps=2)
        opts = RunOptions(workers=0, batch_size=4, save_templates=templates)
        AttackRun(inputs, root / name, cfg, opts, model=model).run()
        out[name] = root / name
    return out, model


def test_analyze_run_uses_saved_attention(texture_runs):
    runs, _ = texture_runs
    report = analyze_run(runs["sai"])
    assert len(report.images) == 4
    assert {r["source"] for r in report.images} == {"template attention"}
    assert report.phi == pytest.approx(4 / 12)
    for r in report.images:
        npz = np.load(runs["sai"] / "templates" / f"{r['image']}.npz", allow_pickle=False)
        fg = npz["attention"].astype(np.float32) >= 4 / 12
        assert r["fg_fraction"] == pytest.approx(fg.mean())
    # SAI-FGM perturbs whole superpixels of the attention mask: most energy is in the foreground.
    mask = analyze_run(runs["sai"], foreground="mask")
    assert {r["source"] for r in mask.images} == {"template mask"}
    assert mask.energy_fg == pytest.approx(1.0)
    assert mask.mean("rms_bg") == 0.0


def test_analyze_run_computes_attention_without_templates(texture_runs):
    runs, model = texture_runs
    report = analyze_run(runs["ifgm"], model=model, phi=0.5)
    assert {r["source"] for r in report.images} == {"computed attention"}
    items = report.run.items
    x = data.to_tensor([data.load_image(it.clean) for it in items])
    att = attention_map(model, x, torch.tensor([it.clean_pred for it in items]))
    expected = (att[:, 0] >= 0.5).float().mean(dim=(1, 2)).numpy()
    np.testing.assert_allclose([r["fg_fraction"] for r in report.images], expected)
    # I-FGM perturbs everywhere: both regions get perturbation energy.
    assert 0 < report.energy_fg < 1
    with pytest.raises(ValueError, match="^foreground='mask' needs .* with a 'mask' array"):
        analyze_run(runs["ifgm"], model=model, foreground="mask")
    with pytest.raises(ValueError, match=r"^phi must be a finite number in \[0, 1\], got 2.0"):
        analyze_run(runs["ifgm"], model=model, phi=2.0)
    with pytest.raises(ValueError, match="^foreground must be one of attention, mask"):
        analyze_run(runs["ifgm"], foreground="edges")
    with pytest.raises(ValueError, match="^limit must be an integer >= 1, got 0"):
        analyze_run(runs["ifgm"], limit=0)


def test_cli_texture_writes_tables(texture_runs, tmp_path, capsys):
    runs, _ = texture_runs
    out = tmp_path / "tex"
    assert main(["texture", str(runs["sai"]), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "| run | attack | δ | images | foreground % | HILL fg | HILL bg |" in printed
    rows = list(csv.DictReader((out / "texture.csv").open()))
    assert len(rows) == 1
    assert (rows[0]["run"], rows[0]["images"], rows[0]["label"]) == ("sai", "4", "SAI-FGM (β=0)")
    assert float(rows[0]["hill_fg"]) > 0
    per_image = list(csv.DictReader((out / "texture_images.csv").open()))
    assert len(per_image) == 4
    assert "Paper (2000 ImageNet images)" in (out / "texture.md").read_text()
    # Without --out the tables go into the run folder.
    assert main(["texture", str(runs["sai"]), "--limit", "2"]) == 0
    assert len(list(csv.DictReader((runs["sai"] / "texture_images.csv").open()))) == 2
