"""Time of the rich models: sealwatch's own against this library's (the same vectors).

Alternates the two implementations on the green channel (SRM, SRMQ1) or the colour image (CRM)
of the first N images of a folder, checks that their vectors are identical, and prints the median
time of each and the ratio.

Usage:
    python benchmarks/feature_speed.py [DATA_DIR] [--n 3]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
import sealwatch as sw

from sai_attack import data
from sai_attack.detection import feature_sets

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "nips17-dev"
REFERENCES = {
    "srmq1": (lambda c: sw.srm.srmq1.extract(c), feature_sets.srmq1_features),
    "srm": (lambda c: sw.srm.extract(c), feature_sets.srm_features),
    "crm": (lambda rgb: sw.srm.crm.extract(rgb, q=1, Tc=3), feature_sets.crm_features),
}


def _timed(fn, x: np.ndarray) -> tuple[float, np.ndarray]:
    start = time.perf_counter()
    out = fn(x)
    return time.perf_counter() - start, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", nargs="?", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--n", type=int, default=3, help="images to time (default 3)")
    args = parser.parse_args()
    inputs = data.discover_inputs(args.data)
    images = [data.load_image(inputs.root / name) for name in inputs.names[: args.n]]
    print(f"{len(images)} images of {images[0].shape}, {inputs.root}")
    print("| Feature set | sealwatch (s) | sai-attack (s) | ratio | identical |")
    print("|---|---:|---:|---:|---|")
    for name, (reference, ours) in REFERENCES.items():
        times: dict[str, list[float]] = {"ref": [], "ours": []}
        identical = True
        for image in images:
            x = image if name == "crm" else image[..., 1].copy()
            t_ref, v_ref = _timed(reference, x)
            t_ours, v_ours = _timed(ours, x)
            times["ref"].append(t_ref)
            times["ours"].append(t_ours)
            ref_vec = np.asarray(sw.tools.flatten(v_ref), dtype=np.float32)
            identical &= bool(np.array_equal(ref_vec, v_ours))
        ref, mine = statistics.median(times["ref"]), statistics.median(times["ours"])
        print(f"| {name} | {ref:.2f} | {mine:.2f} | {mine / ref:.3f} | {identical} |")


if __name__ == "__main__":
    main()
