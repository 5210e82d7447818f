import csv
import errno
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from hostile import OK, make_corpus
from sai_attack import data
from sai_attack.cli import main


def _rows(out):
    with (out / "results.csv").open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


@pytest.mark.integration
@pytest.mark.parametrize("labelled", [False, True])
def test_hostile_corpus_is_processed_or_reported(tmp_path, capfd, labelled):
    expected = make_corpus(tmp_path / "in", labelled)
    if os.geteuid() != 0:
        expected["unreadable.png"] = "cannot read file"
    assert len(expected) >= (50 if labelled else 45)
    out = tmp_path / "out"
    args = ["attack", str(tmp_path / "in"), "--out", str(out), "--iters", "1", "--batch-size", "8"]
    assert main(args) == 3
    err = capfd.readouterr().err
    assert "Traceback" not in err
    rows = _rows(out)
    by_name = {r["image"]: r for r in rows}
    assert len(rows) == len(by_name) == len(expected)
    wrong = []
    for name, outcome in expected.items():
        row = by_name[data.printable_name(name)]
        if outcome == OK:
            if row["status"] != "ok":
                wrong.append((name, row["status"]))
                continue
            assert data.load_image(out / row["output"]).shape == (224, 224, 3)
        else:
            if not row["status"].startswith(f"skipped: {outcome}"):
                wrong.append((name, row["status"]))
            assert "\n" not in row["status"]
            assert f"skipped {data.printable_name(name)!r}" in err
    assert not wrong
    outputs = [r["output"] for r in rows if r["status"] == "ok"]
    assert len(set(outputs)) == len(outputs)  # same.png and same.jpg do not collide
    assert not (out / ".lock").exists()

    # Resume: nothing finished is redone, skipped inputs are retried and reported again.
    before = {p.name: p.stat().st_mtime_ns for p in (out / "images").iterdir()}
    assert main(args) == 3
    assert before == {p.name: p.stat().st_mtime_ns for p in (out / "images").iterdir()}
    assert sorted(r["image"] for r in _rows(out)) == sorted(by_name)


def test_labels_without_label_column_is_a_usage_error(tmp_path, capsys):
    data.save_png(tmp_path / "a.png", __import__("numpy").zeros((8, 8, 3), "uint8"))
    (tmp_path / "labels.csv").write_text("image,class\na.png,3\n")
    assert main(["attack", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    assert "lacks column(s) label; found columns: image, class" in capsys.readouterr().err


@pytest.fixture
def small_input(tmp_path, nips17):
    folder = tmp_path / "in"
    folder.mkdir()
    names = sorted(p.name for p in (nips17 / "images").iterdir())[:6]
    for name in names:
        shutil.copy(nips17 / "images" / name, folder / name)
    return folder


@pytest.mark.integration
def test_second_process_is_refused_and_stale_lock_taken_over(tmp_path, small_input, capsys):
    out = tmp_path / "out"
    out.mkdir()
    holder = (
        "import fcntl, os, sys, time\n"
        "fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)\n"
        "fcntl.flock(fd, fcntl.LOCK_EX)\n"
        "os.write(fd, f'{os.getpid()}\\n'.encode())\n"
        "print('locked', flush=True)\n"
        "time.sleep(60)"
    )
    sleeper = subprocess.Popen(
        [sys.executable, "-c", holder, str(out / ".lock")], stdout=subprocess.PIPE, text=True
    )
    try:
        assert sleeper.stdout.readline().strip() == "locked"
        args = ["attack", str(small_input), "--out", str(out), "--iters", "1", "--limit", "2"]
        assert main(args) == 1
        assert f"is in use by process {sleeper.pid}" in capsys.readouterr().err
        assert not (out / "results.csv").exists()
    finally:
        sleeper.kill()
        sleeper.wait()
    assert main(args) == 0  # the owner is gone: the kernel released its lock
    assert len(_rows(out)) == 2
    assert not (out / ".lock").exists()


@pytest.mark.integration
def test_full_disk_gives_clear_error_and_resume_completes(
    tmp_path, small_input, capsys, monkeypatch
):
    out = tmp_path / "out"
    args = ["attack", str(small_input), "--out", str(out), "--iters", "1", "--batch-size", "2"]
    real = data.atomic_write_bytes
    calls = {"n": 0}

    def failing(path, payload):
        calls["n"] += 1
        if calls["n"] > 5:  # run.json, then the first batch's 4 PNGs succeed
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        real(path, payload)

    monkeypatch.setattr(data, "atomic_write_bytes", failing)
    assert main(args) == 1
    err = capsys.readouterr().err
    assert "No space left on device" in err
    assert "re-run the same command to resume" in err
    assert "Traceback" not in err
    rows = _rows(out)
    assert len(rows) == 2  # the first batch, complete
    for row in rows:
        data.load_image(out / row["output"])
    assert not list(out.rglob("*.tmp"))
    monkeypatch.setattr(data, "atomic_write_bytes", real)
    assert main(args) == 0
    assert len(_rows(out)) == 6


# Bit-for-bit equality needs the same thread count in every process (float reductions).
_ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def _start(args):
    return subprocess.Popen(
        [sys.executable, "-m", "sai_attack", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=_ENV,
    )


def _finish(args):
    return subprocess.run(
        [sys.executable, "-m", "sai_attack", *args], capture_output=True, text=True, env=_ENV
    )


def _count_rows(path):
    try:
        return max(0, path.read_text(encoding="utf-8").count("\n") - 1)
    except FileNotFoundError:
        return 0


@pytest.mark.integration
@pytest.mark.slow
def test_kill_9_at_several_points_then_resume_is_identical(tmp_path, small_input):
    common = ["attack", str(small_input), "--iters", "2", "--batch-size", "2", "--workers", "0"]
    reference = tmp_path / "reference"
    assert _finish([*common, "--out", str(reference)]).returncode == 0
    for kill_after_rows, delay in [(0, 0.0), (2, 0.0), (2, 0.35), (4, 0.1)]:
        out = tmp_path / f"killed-{kill_after_rows}-{delay}"
        proc = _start([*common, "--out", str(out)])
        deadline = time.time() + 300
        while _count_rows(out / "results.csv") < kill_after_rows and time.time() < deadline:
            if proc.poll() is not None:
                break
            time.sleep(0.02)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        # Whatever exists after the kill is whole: PNGs decode and CSV lines are complete.
        for png in out.rglob("*.png"):
            data.load_image(png)
        if (out / "results.csv").exists():
            assert (out / "results.csv").read_text().endswith("\n")
        resumed = _finish([*common, "--out", str(out)])
        assert resumed.returncode == 0, resumed.stderr
        assert (out / "results.csv").read_text() == (reference / "results.csv").read_text()
        pngs = sorted(p.relative_to(reference) for p in reference.rglob("*.png"))
        assert pngs == sorted(p.relative_to(out) for p in out.rglob("*.png"))
        for rel in pngs:
            assert (out / rel).read_bytes() == (reference / rel).read_bytes()
        assert not list(out.rglob("*.tmp"))
        assert not (out / ".lock").exists()


def _children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    if int(f.read().rsplit(") ", 1)[1].split()[1]) == pid:
                        found.append(int(entry))
            except (OSError, IndexError, ValueError):
                continue
    return found


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_sigterm_stops_cleanly_like_ctrl_c_and_resume_completes(tmp_path, small_input):
    out = tmp_path / "out"
    args = ["attack", str(small_input), "--out", str(out), "--iters", "2", "--batch-size", "2",
            "--workers", "1"]  # fmt: skip
    proc = subprocess.Popen([sys.executable, "-m", "sai_attack", *args], stderr=subprocess.PIPE,
                            text=True, env=_ENV)  # fmt: skip
    deadline = time.monotonic() + 300
    while _count_rows(out / "results.csv") < 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    workers = _children(proc.pid)
    proc.send_signal(signal.SIGTERM)
    err = proc.communicate(timeout=120)[1]
    assert proc.returncode == 143
    assert "terminated; re-run the same command to resume" in err
    assert "Traceback" not in err
    time.sleep(2)
    assert not [p for p in workers if os.path.exists(f"/proc/{p}")]
    assert not (out / ".lock").exists()
    assert _finish(args).returncode == 0
    assert _count_rows(out / "results.csv") == 6


def test_repeated_rows_of_one_image_count_once(tmp_path):
    from sai_attack.runs import RESULT_COLUMNS, read_run, write_results

    for sub in ("images", "clean"):
        (tmp_path / sub).mkdir()
        for name in ("a", "b"):
            data.save_png(
                tmp_path / sub / f"{name}.png", __import__("numpy").zeros((4, 4, 3), "uint8")
            )
    row = dict.fromkeys(RESULT_COLUMNS, "")
    rows = [{**row, "image": f"{n}.png", "output": f"images/{n}.png", "label": "1",
             "clean_pred": "1", "adv_pred": "2", "success": "1", "status": "ok"}
            for n in ("a", "b", "a", "a", "b")]  # fmt: skip
    write_results(tmp_path / "results.csv", rows)
    run = read_run(tmp_path)
    assert [it.image for it in run.items] == ["a.png", "b.png"]
    assert run.duplicates == 3
