"""Top-1 accuracy of the built-in models on an image folder with labels.csv.

Usage: python benchmarks/model_accuracy.py [DATA_DIR] [--models efficientnet-lite0 ...]
Preprocessing is the library's: shorter side resized to the model's input size, centre crop.
"""

from __future__ import annotations

import argparse
import time

import torch

from sai_attack import data
from sai_attack.models import MODELS, load_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("data_dir", nargs="?", default="../shared/data/nips17-dev")
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()
    inputs = data.discover_inputs(args.data_dir)
    names = [n for n in inputs.names if n in inputs.labels.labels]
    print(f"{len(names)} labelled images in {args.data_dir}")
    print("| model | input | top-1 | images | seconds |")
    print("| --- | --- | --- | --- | --- |")
    for name in args.models:
        model = load_model(name)
        size = model.input_size
        t0 = time.perf_counter()
        correct = 0
        for i in range(0, len(names), args.batch_size):
            chunk = names[i : i + args.batch_size]
            x = data.to_tensor(
                [data.resize_center_crop(data.load_image(inputs.root / n), size) for n in chunk]
            )
            y = torch.tensor([inputs.labels.labels[n] for n in chunk])
            with torch.no_grad():
                correct += int((model(x).argmax(1) == y).sum())
        dt = time.perf_counter() - t0
        print(f"| {name} | {size} | {100 * correct / len(names):.1f}% | {len(names)} | {dt:.0f} |")


if __name__ == "__main__":
    main()
