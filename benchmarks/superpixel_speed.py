"""Milliseconds per image for every superpixel algorithm (and adaptive merging) at one size.

Usage: python benchmarks/superpixel_speed.py [DATA_DIR] [--size 224] [--n 50]
"""

from __future__ import annotations

import argparse
import statistics
import time

from sai_attack import data
from sai_attack import superpixels as sp


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data_dir", nargs="?", default="../shared/data/nips17-dev")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--n", type=int, default=50)
    args = parser.parse_args()
    inputs = data.discover_inputs(args.data_dir)
    images = [
        data.resize_center_crop(data.load_image(inputs.root / n), args.size)
        for n in inputs.names[: args.n]
    ]
    print(f"{len(images)} images at {args.size}x{args.size}, superpixel size S = 5\n")
    print("| algorithm | merge beta | median ms | mean ms | mean K |")
    print("| --- | --- | --- | --- | --- |")
    for algorithm in sp.SUPERPIXEL_ALGORITHMS:
        for beta in (0.0, 4.0) if algorithm == "slic" else (0.0,):
            config = sp.SuperpixelConfig(algorithm, size=5, merge_beta=beta)
            config(images[0])  # warm-up
            times, counts = [], []
            for image in images:
                t0 = time.perf_counter()
                labels = config(image)
                times.append(1000 * (time.perf_counter() - t0))
                counts.append(int(labels.max()) + 1)
            print(
                f"| {algorithm} | {beta:g} | {statistics.median(times):.1f} | "
                f"{statistics.fmean(times):.1f} | {statistics.fmean(counts):.0f} |"
            )


if __name__ == "__main__":
    main()
