"""Check that the current code writes the same run folders as an earlier commit.

Runs a fixed set of ``sai-attack attack`` commands twice, once with the package found under
``--ref-src`` (the ``src`` folder of a checkout of the reference commit) and once with the
installed one, and compares: adversarial and clean PNGs byte for byte, the arrays of saved
templates, and every column of ``results.csv`` that both versions write.

    git worktree add /tmp/ref f20f404
    python benchmarks/equivalence.py ../shared/data/nips17-dev --ref-src /tmp/ref/src

Exit status 0 when every case matches, 1 otherwise.
"""

from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

CASES: dict[str, list[str]] = {
    "fgm": ["--method", "fgm"],
    "ifgm": ["--method", "ifgm"],
    "mifgm": ["--method", "mifgm", "--momentum", "0.5"],
    "sa-fgm": ["--method", "sa-fgm"],
    "sai-fgm": ["--method", "sai-fgm", "--save-templates"],
    "m-sai-fgm": ["--method", "m-sai-fgm"],
    "sai-variants": ["--method", "sai-fgm", "--merge-beta", "2", "--budget", "within",
                     "--loss", "cw", "--pixel-mask", "--seed", "7"],
    "sai-grid-cam": ["--method", "sai-fgm", "--superpixel", "grid", "--segments", "150",
                     "--grad-mode", "mean", "--attention", "cam", "--phi", "0.5"],
    "ifgm-targeted": ["--method", "ifgm", "--targeted", "--delta", "8", "--iters", "5"],
    "fgm-prediction": ["--method", "fgm", "--attack-prediction", "--image-size", "160"],
    "mifgm-linf": ["--method", "mifgm", "--norm", "linf", "--delta", "8"],
    "m-sai-linf": ["--method", "m-sai-fgm", "--norm", "linf", "--delta", "8", "--budget",
                   "within"],
    "sa-fgm-linf-random": ["--method", "sa-fgm", "--norm", "linf", "--targeted",
                           "--target-mode", "random", "--delta", "16"],
}  # fmt: skip


def run_case(python_path: str | None, images: Path, out: Path, args: list[str], limit: int):
    env = dict(os.environ)
    if python_path:
        env["PYTHONPATH"] = python_path
    command = [sys.executable, "-m", "sai_attack", "-q", "attack", str(images), "--out", str(out),
               "--limit", str(limit), "--batch-size", "4", *args]  # fmt: skip
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if done.returncode not in (0, 3):
        raise SystemExit(f"{' '.join(command)} failed ({done.returncode}):\n{done.stderr}")


def compare(ref: Path, new: Path) -> list[str]:
    problems = []
    for sub in ("images", "clean"):
        ref_files = sorted(p.name for p in (ref / sub).glob("*.png"))
        new_files = sorted(p.name for p in (new / sub).glob("*.png"))
        if ref_files != new_files:
            problems.append(f"{sub}/: different files")
        for name in set(ref_files) & set(new_files):
            if (ref / sub / name).read_bytes() != (new / sub / name).read_bytes():
                problems.append(f"{sub}/{name}: bytes differ")
    for path in sorted((ref / "templates").glob("*.npz")):
        other = new / "templates" / path.name
        if not other.is_file():
            problems.append(f"templates/{path.name}: missing")
            continue
        with np.load(path) as a, np.load(other) as b:
            for key in a.files:
                if key not in b.files or not np.array_equal(a[key], b[key]):
                    problems.append(f"templates/{path.name}: {key} differs")
    with open(ref / "results.csv", newline="") as f:
        ref_rows = list(csv.DictReader(f))
    with open(new / "results.csv", newline="") as f:
        new_rows = list(csv.DictReader(f))
    if len(ref_rows) != len(new_rows):
        problems.append(f"results.csv: {len(ref_rows)} rows vs {len(new_rows)}")
    for a, b in zip(ref_rows, new_rows, strict=False):
        for key in a.keys() & b.keys():
            if a[key] != b[key]:
                problems.append(f"results.csv {a['image']} {key}: {a[key]!r} vs {b[key]!r}")
    return problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("images", type=Path, help="folder of images with labels.csv")
    parser.add_argument("--ref-src", required=True, help="src/ of the reference checkout")
    parser.add_argument("--out", type=Path, default=Path("equivalence-out"))
    parser.add_argument("--limit", type=int, default=8)
    parser.add_argument("--cases", nargs="*", default=list(CASES), choices=list(CASES))
    parser.add_argument("--reuse-ref", action="store_true", help="keep existing reference runs")
    args = parser.parse_args()
    failed = 0
    for name in args.cases:
        ref, new = args.out / "ref" / name, args.out / "new" / name
        if not (args.reuse_ref and (ref / "summary.json").is_file()):
            run_case(args.ref_src, args.images, ref, CASES[name], args.limit)
        subprocess.run(["rm", "-rf", str(new)], check=True)
        run_case(None, args.images, new, CASES[name], args.limit)
        problems = compare(ref, new)
        failed += bool(problems)
        print(f"{name:16s} {'identical' if not problems else 'DIFFERENT'}")
        for p in problems[:10]:
            print(f"    {p}")
    print(f"{len(args.cases) - failed} of {len(args.cases)} cases identical")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
