import csv
import html
import io
import re
import shutil
from html.parser import HTMLParser

import numpy as np
import pytest
import torch
from scipy.stats import binomtest

from conftest import make_tiny_model
from sai_attack import data
from sai_attack.models import MODELS, ModelSpec
from sai_attack.reproduce import PRESETS, RunSpec, Settings, run_reproduce

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
    }  # fmt: skip
    for key in expected_tables:
        assert (out / "tables" / f"{key}.csv").is_file(), key
        assert (out / "tables" / f"{key}.md").is_file(), key
    figures = {p.stem for p in (out / "figures").glob("*.png")}
    assert figures >= {"figure4_resize", "figure5_jpeg", "figure6_tvm_bitdepth",
                       "ablation_superpixel_size", "ablation_phi", "figure7_visual_delta4",
                       "figure7_visual_delta16"}  # fmt: skip

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
