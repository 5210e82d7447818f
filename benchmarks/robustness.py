"""Robustness of I-FGM vs SAI-FGM to image-processing defenses and black-box models (Sec. 4.2).

Attacks the first COUNT nips17-dev images (labels.csv order) that EfficientNet-Lite0 classifies
correctly with I-FGM and SAI-FGM at delta = 4 (the paper's settings otherwise), then evaluates the
saved adversarial images with ``sai_attack.evaluation``:

* white-box: Lite0, no defense;
* gray-box: Lite0 after resize:2, resize:3, jpeg:55, avgpool:3, avgpool:5, maxpool:3, tvm,
  bitdepth:3;
* black-box: EfficientNet-Lite1/2 and the two quantised TFLite MobileNets (label offset 1).

Every rate is over the images whose clean version the model classifies correctly after the
defense (n next to each rate). Prints a Markdown table next to the paper's numbers (Inception-v3,
2000 ImageNet images, Tables 3-4), which are not directly comparable (other model, other images).

Usage: python benchmarks/robustness.py [--data DIR] [--out DIR] [--count 100] [--delta 4]
       [--budget within|exact]
Re-running resumes the attacks (run folders) and redoes the evaluation.
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
from sai_attack import evaluation as ev
from sai_attack.models import load_model
from sai_attack.pipeline import AttackConfig, AttackRun, RunOptions

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
DEFENSES = [
    "resize:2", "resize:3", "jpeg:55", "avgpool:3", "avgpool:5", "maxpool:3", "tvm", "bitdepth:3",
]  # fmt: skip
METHODS = ("ifgm", "sai-fgm")
PAPER = {
    # Dong et al., Inception-v3, delta = 4: Table 4 (white-box, resize gamma=2, JPEG q=55, TVM)
    # and Table 3 (pooling, threshold 4 sqrt(N)).
    "ifgm": {"none": 99.40, "resize:2": 46.05, "jpeg:55": 68.40, "tvm:0.03": 44.60,
             "avgpool:3": 73.67, "avgpool:5": 20.55, "maxpool:3": 41.45},
    "sai-fgm": {"none": 98.90, "resize:2": 82.17, "jpeg:55": 91.40, "tvm:0.03": 82.00,
                "avgpool:3": 93.27, "avgpool:5": 65.14, "maxpool:3": 70.37},
}  # fmt: skip


def select_images(data_dir: Path, out: Path, count: int, batch_size: int) -> Path:
    """Copy the first ``count`` images Lite0 classifies correctly into ``out/inputs``."""
    inputs = out / "inputs"
    chosen_file = inputs / "labels.csv"
    if chosen_file.is_file():
        with chosen_file.open(encoding="utf-8") as f:
            if sum(1 for _ in csv.DictReader(f)) == count:
                return inputs
    inputs.mkdir(parents=True, exist_ok=True)
    with (data_dir / "labels.csv").open(encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    model = load_model("efficientnet-lite0")
    chosen: list[dict] = []
    for i in range(0, len(rows), batch_size):
        chunk = rows[i : i + batch_size]
        x = data.to_tensor(
            [data.resize_center_crop(data.load_image(data_dir / "images" / r["image"]), 224)
             for r in chunk]
        )  # fmt: skip
        with torch.no_grad():
            pred = model(x).argmax(1).tolist()
        chosen += [r for r, p in zip(chunk, pred, strict=True) if p == int(r["label"])]
        if len(chosen) >= count:
            break
    chosen = chosen[:count]
    for r in chosen:
        if not (inputs / r["image"]).is_file():
            shutil.copy2(data_dir / "images" / r["image"], inputs / r["image"])
    with chosen_file.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["image", "label", "target"])
        w.writerows([[r["image"], r["label"], r["target"]] for r in chosen])
    scanned = i + len(chunk)
    print(f"selected {len(chosen)} images that Lite0 classifies correctly (of the first {scanned})")
    return inputs


def cell(evaluation: ev.Evaluation, run: str, model: str, spec: str) -> str:
    row = evaluation.row(run, model, spec)
    rate = row["success_rate"]
    return f"{100 * rate:.1f} ({row['n']})" if row["n"] else f"n/a ({row['n']})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=SHARED / "data" / "nips17-dev")
    parser.add_argument("--models-dir", type=Path, default=SHARED / "models")
    parser.add_argument("--out", type=Path, default=Path("/tmp/sai-robustness"))
    parser.add_argument("--count", type=int, default=100)
    parser.add_argument("--delta", type=float, default=4.0)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument(
        "--budget",
        choices=["within", "exact"],
        default=None,
        help="budget protocol for both methods (default: the paper's, within for I-FGM and "
        "exact for SAI-FGM; exact compares at matched perturbation norm)",
    )
    args = parser.parse_args()

    t0 = time.perf_counter()
    inputs = select_images(args.data, args.out, args.count, args.batch_size)
    lite0 = load_model("efficientnet-lite0")
    runs = []
    suffix = f"-{args.budget}" if args.budget else ""
    for method in METHODS:
        folder = args.out / f"{method}-d{args.delta:g}{suffix}"
        t = time.perf_counter()
        config = AttackConfig(
            method=method, model="efficientnet-lite0", delta=args.delta, budget=args.budget
        )
        options = RunOptions(batch_size=args.batch_size, workers=args.workers)
        summary = AttackRun(inputs, folder, config, options, model=lite0).run()
        print(
            f"{method}: {summary.processed} attacked, {summary.reused} reused, white-box success "
            f"{100 * summary.success_rate:.1f}% in {time.perf_counter() - t:.0f} s"
        )
        runs.append(folder)

    t = time.perf_counter()
    gray = ev.evaluate_folders(
        runs, {"efficientnet-lite0": lite0}, DEFENSES, batch_size=args.batch_size,
        workers=args.workers,
    )  # fmt: skip
    ev.write_evaluation(gray, args.out / f"eval-graybox{suffix}")
    print(f"gray-box evaluation: {time.perf_counter() - t:.0f} s")
    t = time.perf_counter()
    black_specs = [
        "efficientnet-lite1",
        "efficientnet-lite2",
        f"tflite:{args.models_dir / 'mobilenet_v2_1.0_224_quant.tflite'}@label-offset=1",
        f"tflite:{args.models_dir / 'mobilenet_v1_0.75_192_quant.tflite'}@label-offset=1",
    ]
    black = ev.evaluate_folders(
        runs, black_specs, [], batch_size=args.batch_size, workers=args.workers
    )
    ev.write_evaluation(black, args.out / f"eval-blackbox{suffix}")
    print(f"black-box evaluation: {time.perf_counter() - t:.0f} s")

    specs = [d.spec for d in gray.defenses]
    black_names = [t.name for t in black.targets]
    header = ["method", "mean δ_eff", "white-box (Lite0)", *specs[1:], *black_names]
    print()
    print(f"Success rate % (n) on {len(gray.runs[0].items)} images, delta = {args.delta:g}; "
          "defenses on Lite0 (gray-box), other models without defense (black-box)")  # fmt: skip
    print()
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for run in gray.runs:
        cells = [run.method, f"{run.mean_delta_eff:.3f}"]
        cells += [cell(gray, run.name, "efficientnet-lite0", s) for s in specs]
        cells += [cell(black, run.name, m, "none") for m in black_names]
        print("| " + " | ".join(cells) + " |")
    print()
    print("Paper (Inception-v3, 2000 ImageNet images, delta = 4; Tables 3 and 4), for reference:")
    print()
    paper_specs = ["none", *specs[1:]]
    print("| method | " + " | ".join(paper_specs) + " |")
    print("|" + "---|" * (len(paper_specs) + 1))
    for method in METHODS:
        values = [PAPER[method].get(s) for s in paper_specs]
        print(
            f"| {method} | " + " | ".join("—" if v is None else f"{v:.1f}" for v in values) + " |"
        )
    record = {
        "graybox": gray.rows,
        "blackbox": black.rows,
        "seconds": round(time.perf_counter() - t0, 1),
    }
    (args.out / f"robustness{suffix}.json").write_text(
        json.dumps(record, indent=2, default=str) + "\n"
    )
    print(f"\ntotal {time.perf_counter() - t0:.0f} s; details in {args.out}")


if __name__ == "__main__":
    main()
