import csv
import html
import io
import json
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.stats import binomtest

from conftest import make_tiny_model
from sai_attack import data
from sai_attack.demo import perceptual_cells, perceptual_means, psnr_of
from sai_attack.metrics import image_metrics
from sai_attack.models import MODELS, ModelSpec
from sai_attack.reproduce import PRESETS, RunSpec, Settings, run_reproduce, with_images
from sai_attack.reproduce.beyond import BEYOND, pareto_front, template_spec
from sai_attack.reproduce.plan import plan
from sai_attack.reproduce.sections import SECTIONS
from sai_attack.reproduce.tables import DISTORTION_COLUMNS, distortion_cells
from sai_attack.runs import RunItem

EVIL = "<img src=x onerror=alert(1)>.png"
RATE = r"(\d+\.\d) \[(\d+\.\d), (\d+\.\d)\]"  # a percentage with its 95% interval


class _Tables(HTMLParser):
    """Collects every table (by the id of the heading before it), images and external refs."""

    def __init__(self):
        super().__init__()
        self.tables: dict[str, list[list[str]]] = {}
        self.current_id = None
        self.table = None
        self.cell = None
        self.row = None
        self.external: list[str] = []
        self.scripts = 0
        self.images: list[str] = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        for key in ("src", "href"):
            value = attrs.get(key)
            if value is not None and not value.startswith(("data:", "#")):
                self.external.append(value)
        if tag == "script":
            self.scripts += 1
        if tag == "img":
            self.images.append(attrs.get("src", ""))
        if tag == "h3":
            self.current_id = attrs.get("id")
        if tag == "table":
            self.table = []
        if tag == "tr" and self.table is not None:
            self.row = []
        if tag in ("td", "th") and self.row is not None:
            self.cell = ""

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self.cell is not None:
            self.row.append(self.cell)
            self.cell = None
        if tag == "tr" and self.row is not None:
            self.table.append(self.row)
            self.row = None
        if tag == "table" and self.table is not None:
            if self.current_id:
                self.tables[self.current_id] = self.table
            self.table = None
            self.current_id = None

    def handle_data(self, text):
        if self.cell is not None:
            self.cell += text


@pytest.fixture
def tiny_models(monkeypatch):
    for name, seed in (("tiny-white", 0), ("tiny-black", 1)):

        def build(seed=seed, name=name):
            model = make_tiny_model(num_classes=1000, seed=seed)
            model.input_size = 32
            model.name = name
            return model

        monkeypatch.setitem(MODELS, name, ModelSpec(name, 32, build, "test model"))


@pytest.fixture
def tiny_data(tmp_path, nips17):
    folder = tmp_path / "data"
    folder.mkdir()
    names = sorted(p.name for p in (nips17 / "images").iterdir())[:5]  # + EVIL = 6 images
    for name in names:
        shutil.copy(nips17 / "images" / name, folder / name)
    shutil.copy(nips17 / "images" / names[0], folder / EVIL)
    # Labels: the white-box model's own predictions, so every image counts as correct.
    model = MODELS["tiny-white"].builder()
    rows = []
    for name in [*names, EVIL]:
        x = data.to_tensor(data.resize_center_crop(data.load_image(folder / name), 32))
        with torch.no_grad():
            rows.append((name, int(model(x).argmax())))
    with (folder / "labels.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["image", "label"])
        w.writerows(rows)
    return folder


def test_runspec_keys_and_protocols():
    assert RunSpec("ifgm", 4).key == "ifgm_d4"
    assert RunSpec("ifgm", 4).matched().key == "ifgm_d4_exact"
    assert RunSpec("sai-fgm", 4, budget="exact").key == "sai-fgm_d4"  # already the default
    spec = RunSpec("sai-fgm", 2, merge_beta=4, superpixel="lsc", size=3, phi12=0, grad_mode="max")
    assert spec.key == "sai-fgm_d2_b4_lsc_S3_phi0of12_grad-max"
    assert spec.config("m", 1).phi == 0
    assert RunSpec("ifgm", 16, budget="exact").label == "I-FGM (exact)"


def _item(name, delta_eff, ssim=None, ciede=None, p95=None):
    return RunItem(
        name, name, Path(name), Path(name), 1, 1, None, delta_eff,
        ssim=ssim, ciede2000=ciede, ciede2000_p95=p95,
    )  # fmt: skip


def test_psnr_of_delta_eff_equals_the_psnr_of_the_pair():
    rng = np.random.default_rng(0)
    clean = rng.integers(0, 256, (9, 7, 3), dtype=np.uint8)
    adv = np.clip(clean.astype(int) + rng.integers(-4, 5, clean.shape), 0, 255).astype(np.uint8)
    m = image_metrics(clean, adv)
    assert psnr_of(m["delta_eff"]) == pytest.approx(m["psnr"], abs=1e-9)
    assert psnr_of(0.0) == float("inf")
    assert psnr_of(255.0) == 0.0


def test_perceptual_means_skip_missing_values_and_unchanged_images():
    items = [
        _item("a", 1.0, 0.98, 1.0, 3.0),
        _item("b", 3.0, 0.90, 2.0, 5.0),
        _item("c", 0.0, 1.0, 0.0, 0.0),  # unchanged: PSNR infinite, left out of its mean
        _item("d", 2.0),  # a folder written before SSIM and CIEDE2000 existed
    ]
    means = perceptual_means(items)
    assert means["delta_eff"] == pytest.approx(1.5)
    assert means["ssim"] == pytest.approx((0.98 + 0.90 + 1.0) / 3)
    assert means["ciede2000"] == pytest.approx(1.0)
    assert means["ciede2000_p95"] == pytest.approx(8 / 3)
    psnr = [20 * np.log10(255 / d) for d in (1.0, 3.0, 2.0)]
    assert means["psnr"] == pytest.approx(np.mean(psnr))
    assert perceptual_cells(items) == ["1.500", "0.9600", "1.000", "2.667", f"{np.mean(psnr):.2f}"]
    assert DISTORTION_COLUMNS == ["mean SSIM", "mean CIEDE2000", "CIEDE2000 p95", "mean PSNR (dB)"]
    assert distortion_cells(items) == perceptual_cells(items)[1:]
    assert distortion_cells([_item("old", None)]) == ["", "", "", ""]


@pytest.mark.integration
@pytest.mark.slow
def test_reproduce_tiny_end_to_end(tmp_path, tiny_models, tiny_data):
    out = tmp_path / "out"
    settings = Settings(
        data=tiny_data, out=out, preset=PRESETS["tiny"], model="tiny-white",
        black_box=("tiny-black",), workers=0, batch_size=4,
    )  # fmt: skip
    paths = run_reproduce(settings)
    expected_tables = {
        "summary_matched_norm", "table1_paper", "table1_matched", "table2_detection",
        "figure4_resize", "figure5_jpeg", "table3_pooling", "figure6_tvm_bitdepth",
        "table4_superpixel_algorithms", "ablation_superpixel_size", "ablation_phi",
        "ablation_gradient_mode", "figure2_foreground_background", "texture_hill",
        "beyond_control", "beyond_eot", "beyond_transfer", "beyond_pareto",
    }  # fmt: skip
    for key in expected_tables:
        assert (out / "tables" / f"{key}.csv").is_file(), key
        assert (out / "tables" / f"{key}.md").is_file(), key
    figures = {p.stem for p in (out / "figures").glob("*.png")}
    assert figures >= {"figure4_resize", "figure5_jpeg", "figure6_tvm_bitdepth",
                       "ablation_superpixel_size", "ablation_phi", "figure7_visual_delta4",
                       "figure7_visual_delta16", "beyond_pareto"}  # fmt: skip

    text = paths["html"].read_text(encoding="utf-8")
    parser = _Tables()
    parser.feed(text)
    assert parser.external == []
    assert parser.scripts == 0
    assert "<link" not in text
    assert "http://" not in text
    assert "https://" not in text
    assert len(parser.images) == len(figures)
    assert all(src.startswith("data:image/png;base64,") for src in parser.images)
    # Every table in the HTML equals its CSV, cell for cell.
    for key in expected_tables:
        with (out / "tables" / f"{key}.csv").open(newline="", encoding="utf-8") as f:
            csv_rows = list(csv.reader(f))
        assert parser.tables[key] == csv_rows, key
        assert all(len(r) == len(csv_rows[0]) for r in csv_rows)
    # Names are escaped: the hostile file name never appears raw.
    assert EVIL not in text
    assert html.escape(EVIL) in text
    # Some numbers are real: white-box success of I-FGM at delta 16 on its own predictions.
    table1 = list(csv.DictReader(io.StringIO((out / "tables" / "table1_paper.csv").read_text())))
    ifgm = next(r for r in table1 if r["method"] == "I-FGM")
    rate, low, high = map(float, re.fullmatch(RATE, ifgm["tiny-white*"]).groups())
    assert 0 <= low <= rate <= high <= 100
    # The summary: every value with its 95% interval, every verdict from the paired test
    # (success rates) or from the split intervals (detection).
    summary = list(
        csv.DictReader(io.StringIO((out / "tables" / "summary_matched_norm.csv").read_text()))
    )
    assert summary[0]["measurement"].startswith("Table 1, white-box")
    verdicts = {"paper protocol": "paper test", "matched norm": "matched test"}
    for row in summary:
        for verdict, test in ((row[v], row[t]) for v, t in verdicts.items()):
            assert verdict in ("wins", "loses", "tie", "n/a"), row
            if verdict == "n/a":  # a rate over no image (n = 0) on this tiny data
                assert row is not summary[0]
                continue
            assert all(re.fullmatch(RATE, row[c]) for c in ("SAI-FGM", "I-FGM (paper)")), row
            if "detection" in row["measurement"]:
                assert re.fullmatch(r"95% split intervals (overlap|apart)", test), row
                assert (verdict == "tie") == test.endswith("overlap")
                continue
            pattern = r"McNemar p [=<] ([\d.]+), (\d+) vs (\d+) discordant of \d+ images"
            match = re.fullmatch(pattern, test)
            assert match, row
            b, c = int(match[2]), int(match[3])
            expected = 1.0 if b + c == 0 else binomtest(min(b, c), b + c, 0.5).pvalue
            assert float(match[1]) == pytest.approx(max(expected, 0.001), abs=5e-4), row
            assert (verdict == "tie") == (expected >= 0.05), row
    assert re.fullmatch(r"\d+\.\d\d", ifgm["delta_eff"])
    # Table 1 shows the perceptual metrics of each run next to its success rates: the means of
    # the run's results.csv columns (PSNR: finite values; this run attacked every input).
    with (out / "runs" / "ifgm_d16" / "results.csv").open(newline="") as f:
        results = [row for row in csv.DictReader(f) if row["status"] == "ok"]
    for column, name, digits in (("mean SSIM", "ssim", 4), ("mean CIEDE2000", "ciede2000", 3),
                                 ("mean PSNR (dB)", "psnr", 2)):  # fmt: skip
        values = [float(row[name]) for row in results]
        expected = np.mean([v for v in values if np.isfinite(v)])
        assert float(ifgm[column]) == pytest.approx(expected, abs=1.5 * 10**-digits), column
    # Every measured cell of the defense tables is filled (a spec mismatch leaves blanks).
    for key, columns in (
        ("figure6_tvm_bitdepth", ["tvm", "bitdepth d=3"]),
        ("table3_pooling", ["k=3"]),
        ("table4_superpixel_algorithms", ["white-box", "resize", "jpeg", "tvm"]),
    ):
        rows = list(csv.DictReader(io.StringIO((out / "tables" / f"{key}.csv").read_text())))
        for row in rows:
            for column in columns:
                assert 0 <= float(row[column]) <= 100, (key, column, row)

    _check_beyond(out, PRESETS["tiny"])

    # Re-running resumes: nothing is attacked again and the tables are identical.
    before = {p: p.read_text() for p in (out / "tables").glob("*.csv")}
    mtimes = {p: p.stat().st_mtime_ns for p in (out / "runs").rglob("*.png")}
    cached = {p: p.stat().st_mtime_ns for p in (out / "cache").glob("*.json")}
    run_reproduce(settings)
    assert mtimes == {p: p.stat().st_mtime_ns for p in (out / "runs").rglob("*.png")}
    # ... and no evaluation or detection is computed again
    assert cached == {p: p.stat().st_mtime_ns for p in (out / "cache").glob("*.json")}
    after = {p: p.read_text() for p in (out / "tables").glob("*.csv")}
    assert before.keys() == after.keys()
    # Identical, except the attack time per image of the gradient-mode ablation (a measurement),
    # which must still be a finite number of seconds for every mode.
    timing = "attack s/image"

    def without_timing(text):
        rows = list(csv.DictReader(io.StringIO(text)))
        return [{k: v for k, v in row.items() if k != timing} for row in rows]

    for path, text in after.items():
        if "gradient_mode" not in path.name:
            assert before[path] == text, path.name
            continue
        assert without_timing(before[path]) == without_timing(text)
        seconds = [float(row[timing]) for row in csv.DictReader(io.StringIO(text))]
        assert len(seconds) == len(PRESETS["tiny"].grad_modes)
        assert all(np.isfinite(s) and s >= 0 for s in seconds), seconds

    # Re-running with the finished runs removed and the cache kept attacks every image again but
    # computes no template twice, and writes the same images.
    def saved_images():
        return {p.relative_to(out): p.read_bytes() for p in (out / "runs").rglob("images/*.png")}

    pngs = saved_images()
    shutil.rmtree(out / "runs")
    run_reproduce(settings)
    counts = [json.loads(p.read_text())["cache"] for p in (out / "runs").rglob("summary.json")]
    templates = [c["templates"] for c in counts if c is not None]
    assert len(templates) == len(counts) > 0
    assert sum(t["computed"] for t in templates) == 0
    assert sum(t["reused"] for t in templates) > 0
    assert saved_images() == pngs


# --------------------------------------------------------------------------------------------
# Beyond the paper (issue 14)
# --------------------------------------------------------------------------------------------


def _csv_rows(out, key):
    return list(csv.DictReader(io.StringIO((out / "tables" / f"{key}.csv").read_text())))


def _check_beyond(out, preset):
    """The beyond section of a finished reproduction: one row per planned point, at matched norm."""
    control = _csv_rows(out, "beyond_control")
    assert [(r["template"], r["attention"]) for r in control] == [
        (t, a) for t in preset.control_templates for a in ("no", "yes")
    ]
    for row in control:
        assert abs(float(row["delta_eff"]) - preset.control_delta) < 0.1, row  # matched norm
        assert int(row["values per channel K"]) >= 1, row
        for column in ("white-box", "resize gamma=3", "JPEG q=55", "avgpool k=5", "TVM"):
            assert 0 <= float(row[column]) <= 100, (column, row)
        assert re.fullmatch(RATE, row["detection"]), row
    k = {(r["template"], r["attention"]): int(r["values per channel K"]) for r in control}
    assert k[("pixels", "no")] == 32 * 32  # every pixel of the 32 x 32 attack resolution
    assert k[("dct", "no")] == k[("dct", "yes")] == round(32 * 32 / 25)  # S = 5, as SLIC's
    eot = _csv_rows(out, "beyond_eot")
    assert [r["EoT against"] for r in eot] == ["", "", *preset.eot_defenses, preset.eot_mixed,
                                               preset.eot_mixed]  # fmt: skip
    assert all(0 <= float(r["bitdepth:3"]) <= 100 for r in eot)
    transfer = _csv_rows(out, "beyond_transfer")
    assert [r["boosters"] for r in transfer] == ["none", "DI + TI", "ensemble"] * 2
    assert [r["tiny-black"] == "surrogate" for r in transfer] == [False, False, True] * 2
    pareto = _csv_rows(out, "beyond_pareto")
    points_per_delta = (
        2 * len(preset.control_templates)
        + len(preset.texture_weights)
        + sum(1 for b in preset.detection_betas if b)
    )
    assert len(pareto) == points_per_delta * len(preset.beyond_deltas)
    assert any(r["front"] == "yes" for r in pareto)
    assert all(abs(float(r["delta_eff"]) - float(r["delta"])) < 0.1 for r in pareto)
    # every beyond run attacked exactly the section's images, with the options it names
    runs = {p.name for p in (out / "runs").iterdir()}
    assert "sai-fgm_d4_phi0of12_dct" in runs
    record = json.loads((out / "runs" / "sai-fgm_d16_ens2" / "run.json").read_text())
    assert record["parameters"]["model"] == "tiny-white,tiny-black"
    record = json.loads((out / "runs" / "sai-fgm_d4_tw1" / "run.json").read_text())
    assert record["parameters"]["texture_weight"] == 1.0
    with (out / "runs" / "sai-fgm_d4_eot-bitdepth3" / "results.csv").open(newline="") as f:
        assert len(list(csv.DictReader(f))) == preset.beyond_images


def test_runspec_beyond_fields_name_their_folder_and_configuration():
    spec = RunSpec("sai-fgm", 4, extra=(("eot_samples", 2), ("eot", "resize:1..3 avgpool:3,5")))
    assert spec.key == "sai-fgm_d4_eot-resize1to3+avgpool3-5_eot-samples-2"
    assert spec.extra == (("eot", "resize:1..3 avgpool:3,5"), ("eot_samples", 2))  # sorted
    config = spec.config("m", 0)
    assert (config.eot, config.eot_samples) == ("resize:1..3 avgpool:3,5", 2)
    # options at their default, and the method's own space, name nothing
    assert RunSpec("sai-fgm", 4, extra=(("eot_samples", 1),)).key == "sai-fgm_d4"
    assert RunSpec("sai-fgm", 4, space="superpixels").key == "sai-fgm_d4"
    assert RunSpec("sai-fgm", 4, space="dct", phi12=0).key == "sai-fgm_d4_phi0of12_dct"
    assert RunSpec("sai-fgm", 2, texture_weight=0.5).config("m", 0).texture_weight == 0.5
    assert RunSpec("sai-fgm", 2, texture_weight=0.5).label == "SAI-FGM W=0.5"
    ens = RunSpec("ifgm", 16, budget="exact", ensemble=1)
    assert ens.key == "ifgm_d16_exact_ens2"
    assert ens.config("a", 0, ("b", "c")).model == "a,b"
    with pytest.raises(ValueError, match="ensemble of the white-box model and 1 black-box model"):
        ens.config("a", 0)
    with pytest.raises(ValueError, match="extra option 'delta' is not an option beyond"):
        RunSpec("ifgm", 4, extra=(("delta", 2.0),))
    with pytest.raises(ValueError, match="eot_samples must be an integer"):
        RunSpec("ifgm", 4, extra=(("eot_samples", 0.5),))


def test_template_specs_and_the_pareto_front():
    assert template_spec("pixels", 4, False) == RunSpec("ifgm", 4, budget="exact")
    assert template_spec("pixels", 4, True).key == "sai-fgm_d4_pixels"
    assert template_spec("slic", 2, True) == RunSpec("sai-fgm", 2)
    assert template_spec("grid", 2, False).key == "sai-fgm_d2_grid_phi0of12"
    assert template_spec("gaussian", 4, True).config("m", 0).space == "gaussian"
    with pytest.raises(ValueError, match="template 'hexagons' is neither a space nor"):
        template_spec("hexagons", 4, True)
    nan = float("nan")
    points = [(0.5, 0.9), (0.6, 0.9), (0.4, 0.5), (0.4, 0.6), (0.8, 1.0), (nan, 1.0), (0.5, 0.9)]
    assert pareto_front(points) == [True, False, False, True, True, False, True]


def test_every_preset_plans_the_beyond_section_on_its_own_images():
    assert BEYOND in SECTIONS
    for preset in PRESETS.values():
        needs = plan([BEYOND], preset)
        assert {images for _, images in needs.values()} == {preset.beyond_images}
        keys = set(needs)
        assert {template_spec(t, preset.control_delta, a).key for t in preset.control_templates
                for a in (False, True)} <= keys  # fmt: skip
        assert preset.control_delta in preset.beyond_deltas  # the plot holds the control runs
    standard = PRESETS["standard"]
    assert standard.beyond_images == 32
    assert with_images(standard, 10).beyond_images == 10
    assert with_images(standard, 500).beyond_images == 32
    # runs other sections read with more images keep their larger count
    assert plan(SECTIONS, standard)["ifgm_d4_exact"][1] == standard.images


def test_quick_plans_every_section_with_a_fraction_of_the_standard_work(tmp_path):
    from sai_attack.reproduce.experiments import Reproduction

    def work(name: str) -> tuple[dict[str, float], int]:
        preset = PRESETS[name]
        settings = Settings(Path("."), tmp_path, preset, targets=("tflite:a", "tflite:b"))
        reproduction = Reproduction(settings, plan(SECTIONS, preset))
        return dict(reproduction.work_units(SECTIONS)), len(reproduction.needs)

    quick, n_quick = work("quick")
    standard, n_standard = work("standard")
    assert next(iter(PRESETS)) == "quick"  # the command's default
    for section in SECTIONS:
        assert section.runs(PRESETS["quick"]), section.name
        assert quick[section.name] > 0
    assert n_quick < n_standard
    # the estimate the progress log uses; standard took 40-58 min, quick must stay under 15
    assert sum(quick.values()) < 0.3 * sum(standard.values())
