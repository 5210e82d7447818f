"""How far two attack runs of the same command on other devices or precisions agree.

Compares two run folders written by ``sai-attack attack`` with the same images and settings
(for example ``--device cpu`` against ``--device cuda``, or ``--device cuda`` against
``--device cuda --amp``): per image, whether the adversarial 8-bit PNGs are identical, the largest
pixel difference, and whether success and the effective norm agree.

Usage: python benchmarks/device_agreement.py RUN_A RUN_B [--json PATH]
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import numpy as np
from PIL import Image


def _rows(run: Path) -> dict[str, dict[str, str]]:
    with (run / "results.csv").open(newline="") as f:
        return {r["image"]: r for r in csv.DictReader(f) if r["status"] == "ok"}


def compare(a: Path, b: Path) -> dict:
    """Agreement statistics of two run folders over the images both attacked."""
    ra, rb = _rows(a), _rows(b)
    names = sorted(set(ra) & set(rb))
    if not names:
        raise ValueError(f"{a} and {b} have no attacked image in common")
    identical, max_diff, pixels_differing, success_same, delta_gap = 0, 0, [], 0, []
    for name in names:
        x = np.asarray(Image.open(a / ra[name]["output"]), dtype=np.int16)
        y = np.asarray(Image.open(b / rb[name]["output"]), dtype=np.int16)
        diff = np.abs(x - y)
        identical += int(not diff.any())
        max_diff = max(max_diff, int(diff.max()))
        pixels_differing.append(float((diff > 0).mean()))
        success_same += int(ra[name]["success"] == rb[name]["success"])
        delta_gap.append(abs(float(ra[name]["delta_eff"]) - float(rb[name]["delta_eff"])))
    n = len(names)
    return {
        "images": n,
        "identical_pngs": identical,
        "max_pixel_difference": max_diff,
        "mean_fraction_of_values_differing": float(np.mean(pixels_differing)),
        "success_agreement": success_same / n,
        "success_rate_a": sum(int(ra[k]["success"]) for k in names) / n,
        "success_rate_b": sum(int(rb[k]["success"]) for k in names) / n,
        "max_delta_eff_gap": float(max(delta_gap)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_a", type=Path)
    parser.add_argument("run_b", type=Path)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    stats = compare(args.run_a, args.run_b)
    print(f"{args.run_a} vs {args.run_b}:")
    for key, value in stats.items():
        print(f"  {key}: {value:.4g}" if isinstance(value, float) else f"  {key}: {value}")
    if args.json:
        args.json.write_text(json.dumps(stats, indent=2) + "\n")


if __name__ == "__main__":
    main()
