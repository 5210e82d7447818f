"""White-box success and effective perturbation of every method on correctly classified images.

Attacks the first N (default 100) images of a labelled folder that the model classifies
correctly, with every method at one delta, through the same pipeline as ``sai-attack attack``
(success is measured on the saved 8-bit PNGs), and prints a Markdown table.

Usage:
    python benchmarks/attack_success.py [DATA_DIR] [--n 100] [--delta 4] [--out /tmp/sai-bench]
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import time
from pathlib import Path

import torch

from sai_attack import data
from sai_attack.attacks import ATTACKS
from sai_attack.models import DEFAULT_MODEL, load_model
from sai_attack.pipeline import AttackConfig, AttackRun, RunOptions


def correctly_classified(model, folder: Path, n: int) -> list[str]:
    """The first ``n`` labelled images of ``folder`` that ``model`` gets right."""
    inputs = data.discover_inputs(folder)
    chosen: list[str] = []
    for name in inputs.names:
        if name not in inputs.labels.labels:
            continue
        x = data.to_tensor(
            [data.resize_center_crop(data.load_image(inputs.root / name), model.input_size)]
        )
        with torch.no_grad():
            if int(model(x).argmax()) == inputs.labels.labels[name]:
                chosen.append(name)
        if len(chosen) == n:
            break
    return chosen


def subset_folder(folder: Path, names: list[str], dest: Path) -> Path:
    """Link the chosen images and their labels into ``dest`` (a folder with labels.csv)."""
    inputs = data.discover_inputs(folder)
    dest.mkdir(parents=True, exist_ok=True)
    for name in names:
        link = dest / name
        if not link.exists():
            link.symlink_to((inputs.root / name).resolve())
    with (dest / "labels.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["image", "label", "target"])
        for name in names:
            w.writerow([name, inputs.labels.labels[name], inputs.labels.targets.get(name, "")])
    return dest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data_dir", nargs="?", default="../shared/data/nips17-dev")
    parser.add_argument("--n", type=int, default=100)
    parser.add_argument("--delta", type=float, default=4.0)
    parser.add_argument("--methods", nargs="+", default=list(ATTACKS))
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--out", default="/tmp/sai-bench-success")
    parser.add_argument("--fresh", action="store_true", help="delete earlier outputs first")
    args = parser.parse_args()
    out = Path(args.out)
    if args.fresh and out.exists():
        shutil.rmtree(out)
    model = load_model(args.model)
    names = correctly_classified(model, Path(args.data_dir), args.n)
    subset = subset_folder(Path(args.data_dir), names, out / "inputs")
    print(f"{len(names)} correctly classified images of {args.data_dir}, {args.model}, "
          f"delta = {args.delta:g}, T = 10\n")  # fmt: skip
    print("| method | budget | white-box success | mean delta_eff | s/image |")
    print("| --- | --- | --- | --- | --- |")
    for method in args.methods:
        t0 = time.perf_counter()
        run = AttackRun(
            subset,
            out / method,
            AttackConfig(method=method, model=args.model, delta=args.delta),
            RunOptions(progress=False),
            model=model,
        )
        summary = run.run()
        record = json.loads((out / method / "summary.json").read_text())
        per_image = (time.perf_counter() - t0) / max(summary.processed, 1)
        print(
            f"| {method} | {record['protocol']['budget']} | "
            f"{100 * summary.success_rate:.1f}% ({summary.successes}/{summary.correct}) | "
            f"{summary.mean_delta_eff:.3f} | {per_image:.2f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
