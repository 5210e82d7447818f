import json
import shutil

import pytest

from sai_attack.bench import STAGES, BenchConfig
from sai_attack.cli import main


def test_bench_config_validation():
    with pytest.raises(ValueError, match="^method 'pgd' is unknown; choose one of fgm, ifgm"):
        BenchConfig(input=".", methods=("pgd",))
    with pytest.raises(ValueError, match="^limit must be an integer >= 1, got 0$"):
        BenchConfig(input=".", limit=0)
    with pytest.raises(ValueError, match="^repeats must be an integer >= 1, got 0$"):
        BenchConfig(input=".", repeats=0)
    with pytest.raises(
        ValueError, match="^superpixel 'quickshift' is unknown; choose one of slic,"
    ):
        BenchConfig(input=".", parameters={"superpixel": "quickshift"})
    with pytest.raises(
        ValueError, match="^batch_size must be an integer in \\[1, 65536\\], got 0$"
    ):
        BenchConfig(input=".", execution={"batch_size": 0})


def test_bench_config_describes_every_setting_by_table_name():
    config = BenchConfig(input=".", methods=("ifgm",), parameters={"delta": 2, "steps": 3})
    described = config.describe()
    assert described["delta"] == 2.0
    assert described["steps"] == 3
    assert described["batch_size"] == 16
    assert described["methods"] == ["ifgm"]
    assert "iters" not in described


@pytest.mark.integration
def test_bench_reports_every_method_with_stages(tmp_path, nips17, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    for p in sorted((nips17 / "images").iterdir())[:3]:
        shutil.copy(p, folder / p.name)
    out_json = tmp_path / "bench.json"
    args = ["bench", str(folder), "--methods", "ifgm", "sai-fgm", "--limit", "3", "--iters", "1",
            "--batch-size", "2", "--workers", "0", "--repeats", "2",
            "--json", str(out_json)]  # fmt: skip
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "| ifgm |" in printed
    assert "| sai-fgm |" in printed
    assert "peak RSS" in printed
    assert "superpixels slic, 2 repeats" in printed
    report = json.loads(out_json.read_text())
    assert report["config"]["superpixel"] == "slic"
    assert [m["method"] for m in report["methods"]] == ["ifgm", "sai-fgm"]
    for m in report["methods"]:
        assert m["images"] == 3
        assert len(m["repeat_seconds_per_image"]) == 2
        assert m["seconds_per_image"] in m["repeat_seconds_per_image"]
        assert set(m["stages"]) == set(STAGES)
        assert m["attack_seconds_per_image"] > 0
        # A ratio of two timings: check how it is made, not its value (timings vary with load).
        floor = report["floor_seconds_per_image"]
        assert m["efficiency"] == pytest.approx(floor * 1 / m["attack_seconds_per_image"])
    assert report["methods"][0]["ratio_to_ifgm"] == 1.0
    assert report["floor_seconds_per_batch"] > 0
    assert report["peak_rss_mb"] > 100
    ref = report["reference"]
    assert ref is None or ref["ifgm_over_pgdl2"] > 0


def test_reference_batches_never_open_names_outside_the_folder(tmp_path, monkeypatch):
    import numpy as np
    import torch
    from PIL import Image

    from sai_attack import bench, data

    folder = tmp_path / "in"
    folder.mkdir()
    Image.fromarray(np.full((16, 16, 3), 100, np.uint8)).save(folder / "good.png")
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(tmp_path / "outside.png")
    (folder / "broken.png").write_bytes(b"not an image")
    (folder / "labels.csv").write_text("image,label\ngood.png,1\n../outside.png,2\nbroken.png,3\n")
    opened = []
    real = data.load_image

    def recording(path):
        opened.append(str(path))
        return real(path)

    monkeypatch.setattr(data, "load_image", recording)
    names = data.discover_inputs(folder).names
    assert "../outside.png" in names  # listed with its problem, so it must be filtered
    batches = bench._load_batches(folder, names, 8, 4, torch.device("cpu"))
    assert [b.shape[0] for b in batches] == [1]
    assert not any("outside" in p for p in opened)
