"""Run folders under hostile conditions: locks, kills, bad models, torn writes, tricky names."""

from __future__ import annotations

import errno
import multiprocessing as mp
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import make_tiny_model, textured_images
from sai_attack.attacks import IFGM
from sai_attack.pipeline import AttackConfig, AttackRun, RunOptions
from sai_attack.runs import RunLayout, read_results, read_run
from sai_attack.runs import results as results_module
from sai_attack.runs.lock import RunLock
from sai_attack.runtime import RunError


def _images(folder, names, seed=3):
    folder.mkdir(parents=True, exist_ok=True)
    pics = textured_images(batch=len(names), size=32, seed=seed).permute(0, 2, 3, 1) * 255
    for name, img in zip(names, pics.round().numpy().astype(np.uint8), strict=True):
        Image.fromarray(img).save(folder / name, format="PNG")
    return folder


def _attack(folder, out, model=None, method="ifgm", **kwargs):
    cfg = AttackConfig(method=method, model="tiny", delta=8, steps=2, image_size=32)
    opts = RunOptions(workers=0, batch_size=2, progress=False, **kwargs)
    return AttackRun(folder, out, cfg, opts, model=model or make_tiny_model()).run()


# -- locks --------------------------------------------------------------------------------------


def _try_lock(path, barrier, queue):
    barrier.wait()
    try:
        with RunLock(path):
            queue.put("got")
            time.sleep(1.0)
    except RunError:
        queue.put("refused")


def test_lock_is_granted_to_exactly_one_of_many_racing_processes(tmp_path):
    ctx = mp.get_context("spawn")
    n = 6
    barrier, queue = ctx.Barrier(n), ctx.Queue()
    procs = [ctx.Process(target=_try_lock, args=(tmp_path / ".lock", barrier, queue))
             for _ in range(n)]  # fmt: skip
    for p in procs:
        p.start()
    outcomes = sorted(queue.get(timeout=600) for _ in range(n))  # imports are slow under load
    for p in procs:
        p.join(timeout=30)
    assert outcomes.count("got") == 1
    assert outcomes.count("refused") == n - 1
    assert not (tmp_path / ".lock").exists()


@pytest.mark.parametrize("content", ["", "99999999999999999999999\n", "not a pid", "1\n"])
def test_lock_file_without_a_holder_is_taken_whatever_it_says(tmp_path, content):
    (tmp_path / ".lock").write_text(content)
    with RunLock(tmp_path / ".lock") as lock:
        assert lock.acquired
        assert (tmp_path / ".lock").read_text() == f"{os.getpid()}\n"
    assert not (tmp_path / ".lock").exists()


def test_held_lock_is_refused_even_before_its_pid_is_written(tmp_path):
    holder = subprocess.Popen(
        [sys.executable, "-c", "import fcntl, os, sys, time\n"
         "fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)\n"
         "fcntl.flock(fd, fcntl.LOCK_EX)\nprint('locked', flush=True)\ntime.sleep(30)",
         str(tmp_path / ".lock")],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(RunError, match="is in use by another process"):
            RunLock(tmp_path / ".lock").__enter__()
    finally:
        holder.kill()
        holder.wait()
    with RunLock(tmp_path / ".lock"):  # the holder is gone: the kernel released its lock
        pass


# -- workers die with their parent ---------------------------------------------------------------

_ORPHAN_SCRIPT = """
import os, sys, time, torch
from torch.utils.data import DataLoader, Dataset
from sai_attack.runtime import die_with_parent

class Slow(Dataset):
    def __len__(self): return 1000
    def __getitem__(self, i):
        time.sleep(0.05)
        return os.getpid()

loader = DataLoader(Slow(), batch_size=None, num_workers=2, worker_init_fn=die_with_parent)
pids = set()
for pid in loader:
    pids.add(pid)
    if len(pids) == 2:
        print(" ".join(map(str, sorted(pids))), flush=True)
        os.kill(os.getpid(), 9)
"""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie waiting for init to reap it is dead too
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[1][0] != "Z"
    except OSError:
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="prctl is Linux-only")
def test_loader_workers_die_when_the_main_process_is_killed():
    done = subprocess.run([sys.executable, "-c", _ORPHAN_SCRIPT], capture_output=True,
                          text=True, timeout=120)  # fmt: skip
    assert done.returncode == -signal.SIGKILL
    pids = [int(p) for p in done.stdout.split()]
    assert len(pids) == 2
    deadline = time.monotonic() + 10
    while any(_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(_alive(p) for p in pids)


# -- results that must never count ---------------------------------------------------------------


def test_nan_weights_stop_every_image_with_a_reason(tmp_path):
    folder = _images(tmp_path / "in", ["a.png", "b.png", "c.png"])
    model = make_tiny_model()
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(float("nan"))
    summary = _attack(folder, tmp_path / "out", model)
    rows = read_results(tmp_path / "out" / "results.csv")
    assert summary.skipped == 3
    assert summary.exit_code == 3
    assert all(
        r["status"].startswith("skipped: the model's output on the clean image") for r in rows
    )
    assert not list((tmp_path / "out" / "images").iterdir())


def test_a_perturbation_over_budget_is_never_reported(tmp_path, monkeypatch):
    folder = _images(tmp_path / "in", ["a.png", "b.png"])
    real = IFGM._run

    def too_big(self, images, *args):
        result = real(self, images, *args)
        result.adv = (images + 0.3).clamp(0, 1)  # far over delta = 8
        return result

    monkeypatch.setattr(IFGM, "_run", too_big)
    _attack(folder, tmp_path / "out")
    rows = read_results(tmp_path / "out" / "results.csv")
    assert [r["status"][:50] for r in rows] == [
        "skipped: the saved perturbation breaks the budget:"
    ] * 2
    assert all(r["success"] == "" for r in rows)


def test_nan_gradients_stop_the_image(tmp_path, monkeypatch):
    folder = _images(tmp_path / "in", ["a.png", "b.png"])
    real = IFGM._run

    def nan_first(self, images, *args):
        result = real(self, images, *args)
        result.adv[0] = float("nan")
        return result

    monkeypatch.setattr(IFGM, "_run", nan_first)
    _attack(folder, tmp_path / "out")
    rows = {r["image"]: r for r in read_results(tmp_path / "out" / "results.csv")}
    assert rows["a.png"]["status"].startswith("skipped: the attack produced non-finite values")
    assert rows["b.png"]["status"] == "ok"


# -- names a spreadsheet would evaluate -----------------------------------------------------------


def test_formula_names_are_escaped_in_the_csv_and_read_back_unchanged(tmp_path):
    names = ["=HYPERLINK(1).png", "-minus.png", "+plus.png", "@at.png", "'quote.png"]
    folder = _images(tmp_path / "in", names)
    _attack(folder, tmp_path / "out")
    text = (tmp_path / "out" / "results.csv").read_text()
    for line in text.splitlines()[1:]:
        assert line.lstrip('"')[0] == "'"  # every such cell starts with the escaping quote
    assert sorted(it.image for it in read_run(tmp_path / "out").items) == sorted(names)


# -- resume --------------------------------------------------------------------------------------


def test_resume_redoes_images_whose_content_changed(tmp_path):
    folder = _images(tmp_path / "in", ["a.png", "b.png"])
    out = tmp_path / "out"
    _attack(folder, out)
    before = {r["image"]: r for r in read_results(out / "results.csv")}
    _images(folder, ["a.png"], seed=11)  # same name, other picture
    summary = _attack(folder, out)
    after = {r["image"]: r for r in read_results(out / "results.csv")}
    assert summary.reused == 1
    assert summary.processed == 1
    assert len(read_results(out / "results.csv")) == 2
    assert after["a.png"]["sha256"] != before["a.png"]["sha256"]
    assert after["b.png"] == before["b.png"]


def test_torn_last_row_is_repaired_on_resume(tmp_path):
    folder = _images(tmp_path / "in", ["a.png", "b.png", "c.png"])
    out = tmp_path / "out"
    _attack(folder, out)
    path = out / "results.csv"
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[:-1]) + lines[-1][:20])  # the last row cut short
    summary = _attack(folder, out)
    assert summary.reused == 2
    assert summary.processed == 1
    assert path.read_text().endswith("\n")
    assert len(read_results(path)) == 3


def test_a_short_append_is_undone_and_raised(tmp_path, monkeypatch):
    path = tmp_path / "results.csv"
    row = dict.fromkeys(results_module.RESULT_COLUMNS, "")
    results_module.append_rows(path, [{**row, "image": "a.png", "status": "ok"}])
    size = path.stat().st_size
    real = os.write

    def half(fd, payload):
        real(fd, payload[: len(payload) // 2])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(results_module.os, "write", half)
    with pytest.raises(OSError, match="No space left"):
        results_module.append_rows(path, [{**row, "image": "b.png", "status": "ok"}] * 50)
    monkeypatch.undo()
    assert path.stat().st_size == size
    assert [r["image"] for r in read_results(path)] == ["a.png"]


# -- output folders ------------------------------------------------------------------------------


@pytest.mark.parametrize("where", ["same", "parent", "images-of-parent", "symlink"])
def test_output_folder_that_could_overwrite_inputs_is_refused(tmp_path, where):
    root = _images(tmp_path / "data" / "images", ["a.png"])
    out = {
        "same": root,
        "parent": tmp_path / "data",
        "images-of-parent": tmp_path / "data",
        "symlink": tmp_path / "link",
    }[where]
    if where == "symlink":
        out.symlink_to(root)
    before = (root / "a.png").read_bytes()
    with pytest.raises(RunError, match="is, contains or writes into the input folder"):
        _attack(root, out)
    assert (root / "a.png").read_bytes() == before
    assert not (RunLayout(out).results).exists()


def test_output_folder_inside_the_input_folder_is_allowed(tmp_path):
    root = _images(tmp_path / "in", ["a.png", "b.png"])
    _attack(root, root / "run")
    assert len(read_run(root / "run").items) == 2
