import csv
import json
import os
import shutil
import subprocess
import sys

import pytest

from sai_attack.parallel import DistContext, shutdown


def test_shard_deals_whole_batches():
    items = list(range(7))
    assert DistContext(0, 2).shard(items, batch_size=2) == [0, 1, 4, 5]
    assert DistContext(1, 2).shard(items, batch_size=2) == [2, 3, 6]
    assert DistContext().shard(items, batch_size=3) == items
    every = sorted(
        DistContext(r, 3).shard(items, 2)[i]
        for r in range(3)
        for i in range(len(DistContext(r, 3).shard(items, 2)))
    )
    assert every == items


def test_single_process_context_is_inert():
    ctx = DistContext()
    assert not ctx.distributed
    assert ctx.is_main
    assert ctx.broadcast("x") == "x"
    assert ctx.gather(3) == [3]
    ctx.barrier()


def _make_input(tmp_path, nips17, n=5):
    folder = tmp_path / "in"
    folder.mkdir()
    rows = list(csv.DictReader((nips17 / "labels.csv").open()))[:n]
    with (folder / "labels.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["image", "label"])
        for r in rows:
            shutil.copy(nips17 / "images" / r["image"], folder / r["image"])
            w.writerow([r["image"], r["label"]])
    (folder / "zz-broken.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    return folder


def _run(args, env=None):
    return subprocess.run(args, capture_output=True, text=True, env=env, timeout=600)


@pytest.mark.integration
@pytest.mark.slow
def test_two_process_gloo_run_matches_single_process(tmp_path, nips17):
    folder = _make_input(tmp_path, nips17)
    common = ["attack", str(folder), "--iters", "2", "--batch-size", "2", "--workers", "0",
              "--save-templates"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    single = _run(
        [sys.executable, "-m", "sai_attack", *common, "--out", str(tmp_path / "one")], env
    )
    assert single.returncode == 3, single.stderr
    multi = _run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
         "-m", "sai_attack", *common, "--out", str(tmp_path / "two")],
        env,
    )  # fmt: skip
    assert multi.returncode == 0, multi.stderr[-3000:]  # torchrun: every rank exits 0
    one, two = tmp_path / "one", tmp_path / "two"
    assert (one / "results.csv").read_text() == (two / "results.csv").read_text()
    pngs = sorted(p.relative_to(one) for p in one.rglob("*.png"))
    assert len(pngs) == 10
    assert pngs == sorted(p.relative_to(two) for p in two.rglob("*.png"))
    for rel in pngs:
        assert (one / rel).read_bytes() == (two / rel).read_bytes(), rel
    s1, s2 = (json.loads((d / "summary.json").read_text()) for d in (one, two))
    for key in ("counts", "success_rate", "mean_delta_eff", "parameters", "protocol"):
        assert s1[key] == s2[key]
    assert not (two / ".parts").exists() or not any((two / ".parts").iterdir())
    assert not (two / ".lock").exists()


@pytest.mark.integration
@pytest.mark.slow
def test_two_process_evaluate_and_detect_match_single_process(tmp_path, nips17):
    folder = _make_input(tmp_path, nips17)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = tmp_path / "run"
    attack = [sys.executable, "-m", "sai_attack", "attack", str(folder), "--out", str(run),
              "--iters", "1", "--method", "ifgm", "--workers", "0"]  # fmt: skip
    assert _run(attack, env).returncode == 3
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone",
                "--nproc-per-node", "2", "-m", "sai_attack"]  # fmt: skip
    evaluate = ["evaluate", str(run), "--defenses", "none", "jpeg:55", "tvm", "--batch-size", "2",
                "--workers", "0"]  # fmt: skip
    detect = ["detect", str(run), "--classifier", "logreg", "--splits", "2", "--workers", "0"]
    for name, args in (("evaluate", evaluate), ("detect", detect)):
        extra = {
            k: ["--cache-dir", str(tmp_path / f"c{k}")] if name == "detect" else [] for k in (1, 2)
        }
        single = [sys.executable, "-m", "sai_attack", *args, *extra[1]]
        one = _run([*single, "--out", str(tmp_path / f"{name}1")], env)
        assert one.returncode == 0, one.stderr[-2000:]
        two = _run([*torchrun, *args, *extra[2], "--out", str(tmp_path / f"{name}2")], env)
        assert two.returncode == 0, two.stderr[-3000:]
        csv_name = f"{'evaluation' if name == 'evaluate' else 'detection'}.csv"
        a = (tmp_path / f"{name}1" / csv_name).read_text()
        b = (tmp_path / f"{name}2" / csv_name).read_text()
        assert a == b
        assert a.count("\n") > 1


def test_shutdown_leaves_the_process_group_and_is_a_no_op_without_one(tmp_path):
    import torch.distributed as dist

    shutdown()  # never joined: nothing to do
    store = dist.FileStore(str(tmp_path / "store"), 1)
    dist.init_process_group("gloo", store=store, rank=0, world_size=1)
    assert dist.is_initialized()
    shutdown()
    assert not dist.is_initialized()
