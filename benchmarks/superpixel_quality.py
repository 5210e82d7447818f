"""Ground-truth-free quality of the SLIC templates: explained variation, compactness, count, time.

No segmentation ground truth ships here, so the SLIC implementations (OpenCV's ``slic``, the
default; scikit-image's ``slic-skimage``; the torch ``slic-torch``) are compared on the two
measures of Stutz et al.'s superpixel benchmark (CVIU 2018) that need none, computed as its
``lib_eval/evaluation.cpp`` does:

* explained variation (Moore et al. 2008): sum_S |S| ||mu_S - mu||^2 / sum_p ||I(p) - mu||^2 on
  8-bit RGB, the share of the image's colour variance the superpixel means keep (1 is best);
* compactness (Schick et al. 2012): sum_S (|S| / N) 4 pi |S| / P(S)^2 with P(S) the number of
  pixel sides of S facing another superpixel or the image border (1 would be all discs).

Time is per image, one image at a time (``segment``); ``slic-torch`` also as one batch through
``segment_batch`` (``--batch``). OpenCV runs single-threaded in this project, so ``--threads``
(default 1) sets torch's thread count for a like-for-like comparison.

Usage: python benchmarks/superpixel_quality.py [DATA_DIR] [--n 100] [--size 224] [--s 5]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from sai_attack import data
from sai_attack import superpixels as sp


def explained_variation(image: np.ndarray, labels: np.ndarray) -> float:
    rgb = image.reshape(-1, 3).astype(np.float64)
    flat = labels.ravel()
    counts = np.bincount(flat).astype(np.float64)
    means = np.stack([np.bincount(flat, rgb[:, c]) for c in range(3)], 1) / counts[:, None]
    overall = rgb.mean(0)
    top = (counts[:, None] * (means - overall) ** 2).sum()
    return float(top / ((rgb - overall) ** 2).sum())


def compactness(labels: np.ndarray) -> float:
    padded = np.pad(labels, 1, constant_values=-1)  # the border counts as perimeter
    centre = padded[1:-1, 1:-1]
    sides = sum(
        (centre != padded[1 + dy : padded.shape[0] - 1 + dy, 1 + dx : padded.shape[1] - 1 + dx])
        for dy, dx in ((-1, 0), (1, 0), (0, -1), (0, 1))
    )
    area = np.bincount(labels.ravel()).astype(np.float64)
    perimeter = np.bincount(labels.ravel(), sides.ravel().astype(np.float64))
    return float((area * 4 * np.pi * area / perimeter**2).sum() / labels.size)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data_dir", nargs="?", default="../shared/data/nips17-dev")
    parser.add_argument("--n", type=int, default=100, help="images (the first N)")
    parser.add_argument("--size", type=int, default=224, help="image side after resize + crop")
    parser.add_argument("--s", type=float, default=5.0, help="superpixel size S")
    parser.add_argument("--beta", type=float, default=0.0, help="merge beta (0: no merging)")
    parser.add_argument("--batch", type=int, default=16, help="batch for slic-torch's batched run")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--algorithms", nargs="+", default=["slic", "slic-skimage", "slic-torch"])
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    inputs = data.discover_inputs(args.data_dir)
    images = [
        data.resize_center_crop(data.load_image(inputs.root / n), args.size)
        for n in inputs.names[: args.n]
    ]
    print(
        f"{len(images)} images at {args.size}x{args.size}, S = {args.s:g} "
        f"(K = {sp.num_segments_for((args.size, args.size), args.s)}), merge beta {args.beta:g}, "
        f"{torch.get_num_threads()} torch thread(s)\n"
    )
    print("| algorithm | explained variation | compactness | superpixels | ms/image |")
    print("| --- | --- | --- | --- | --- |")
    for algorithm in args.algorithms:
        config = sp.SuperpixelConfig(algorithm, size=args.s, merge_beta=args.beta)
        config(images[0])  # warm-up
        ev, co, counts, times = [], [], [], []
        for image in images:
            t0 = time.perf_counter()
            labels = config(image)
            times.append(1000 * (time.perf_counter() - t0))
            ev.append(explained_variation(image, labels))
            co.append(compactness(labels))
            counts.append(int(labels.max()) + 1)
        print(
            f"| {algorithm} | {statistics.fmean(ev):.4f} | {statistics.fmean(co):.4f} | "
            f"{statistics.fmean(counts):.0f} | {statistics.median(times):.1f} |"
        )
        if config.batched:
            stack = torch.stack([torch.from_numpy(i).permute(2, 0, 1) for i in images])
            stack = stack.float() / 255
            t0 = time.perf_counter()
            for i in range(0, len(images), args.batch):
                sp.segment_batch(stack[i : i + args.batch], config)
            ms = 1000 * (time.perf_counter() - t0) / len(images)
            print(f"| {algorithm}, batches of {args.batch} | | | | {ms:.1f} |")


if __name__ == "__main__":
    main()
