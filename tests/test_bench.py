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
        fastest = report["floor_fastest_seconds_per_image"]
        assert m["efficiency_fastest"] == pytest.approx(fastest / m["attack_seconds_per_image"])
    assert report["methods"][0]["ratio_to_ifgm"] == 1.0
    assert report["floor_seconds_per_batch"] > 0
    assert 0 < report["floor_fastest_seconds_per_image"] <= report["floor_seconds_per_image"]
    # auto: the built-in model runs channels-last on the CPU; the floor is given in every layout
    assert report["memory_format"] == "channels_last"
    assert report["config"]["memory_format"] == "auto"
    floors = report["floors_seconds_per_image"]
    assert report["floor_seconds_per_image"] == floors["channels_last"]
    assert floors["contiguous"] > 0
    assert "floor (bare forward+backward, channels_last)" in printed
    assert report["peak_rss_mb"] >= report["peak_rss_methods_mb"] > 100
    ref = report["reference"]
    if ref is not None:  # torchattacks installed
        assert floors["plain"] > 0
        assert ref["repeats"] == 2
        assert ref["ifgm_over_pgdl2"] > 0
        assert ref["ifgm_linf_over_pgd_same_model"] > 0
        assert "| torchattacks.PGD |" in printed


def test_reference_batches_never_open_names_outside_the_folder(tmp_path, monkeypatch):
    import numpy as np
    import torch
    from PIL import Image

    from sai_attack import data
    from sai_attack.bench import reference

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
    batches = reference.load_batches(folder, names, 8, 4, torch.device("cpu"))
    assert [b.shape[0] for b in batches] == [1]
    assert not any("outside" in p for p in opened)


def test_references_compute_what_our_attacks_compute(monkeypatch):
    """torchattacks' PGDL2 and PGD on the same model give I-FGM's images (L2 and L-infinity)."""
    pytest.importorskip("torchattacks")
    import torch

    from conftest import make_tiny_model, textured_images
    from sai_attack.bench import reference
    from sai_attack.pipeline import AttackConfig

    model = make_tiny_model()
    plain = make_tiny_model()
    monkeypatch.setattr(reference, "load_plain_model", lambda name, weights: plain)
    batches = [textured_images(3, 16, seed=0), textured_images(2, 16, seed=1)]
    settings = AttackConfig(method="ifgm", delta=4.0, steps=3)
    result = reference.reference_attacks(model, batches, settings, 2, torch.device("cpu"))
    assert result["images"] == 5
    assert result["repeats"] == 2
    for name in reference.COUNTERPARTS:
        assert result[f"gap to {name} same model"] < 1e-3  # 0-255 units: the same images
        assert result[name] > 0
    assert set(reference.PAIRS) <= set(result)
    assert result["plain_floor"] > 0


def test_report_lists_floors_references_and_memory():
    from sai_attack.bench import BenchReport, MethodTiming, format_report

    config = BenchConfig(input="in", methods=("ifgm",), limit=4).describe()
    report = BenchReport(
        config=config, device="cpu", threads=2, interop_threads=1, memory_format="channels_last",
        floor_seconds_per_batch=0.32, floor_seconds_per_image=0.02,
        floor_fastest_seconds_per_image=0.018,
        floors_seconds_per_image={"contiguous": 0.04, "channels_last": 0.02, "plain": 0.05},
        methods=[MethodTiming("ifgm", 4, 1.0, 4.0, 0.25, dict.fromkeys(STAGES, 0.001), 0.2,
                              1.0, 0.9, 1.0)],
        reference={"images": 4, "repeats": 1, "ifgm": 0.2, "ifgm linf": 0.21,
                   "torchattacks.PGDL2": 0.4, "torchattacks.PGDL2 same model": 0.2,
                   "torchattacks.PGD": 0.42, "torchattacks.PGD same model": 0.21,
                   "ifgm_over_pgdl2": 0.5, "ifgm_over_pgdl2_same_model": 1.0,
                   "ifgm_linf_over_pgd": 0.5, "ifgm_linf_over_pgd_same_model": 1.0,
                   "gap to torchattacks.PGDL2 same model": 0.0,
                   "gap to torchattacks.PGD same model": 2e-5},
        peak_rss_methods_mb=900, peak_rss_mb=1200, omp_wait_policy="PASSIVE",
        load_average=[3.0, 2.5],
    )  # fmt: skip
    text = format_report(report)
    assert (
        "model efficientnet-lite0 (channels_last), device cpu (2 threads, 1 inter-op, "
        "OMP_WAIT_POLICY PASSIVE, load average 3.0 -> 2.5), batch 16, 4 images from in"
    ) in text
    assert (
        "floor (bare forward+backward, channels_last): 0.320 s per batch, 20.0 ms per image "
        "(median pass; fastest 18.0 ms); ms per image by layout (median): contiguous 40.0, "
        "channels_last 20.0, plain 50.0"
    ) in text
    assert "| ifgm | 4.000 | 0.250 | 1.000 | 1.000 | 0.900 |" in text
    assert "| torchattacks.PGDL2 | 0.400 | 0.500 | 0.200 | 1.000 | 0 |" in text
    assert "| torchattacks.PGD | 0.420 | 0.500 | 0.210 | 1.000 | 2e-05 |" in text
    assert "peak RSS 900 MiB after the methods, 1200 MiB in all" in text
