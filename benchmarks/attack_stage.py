"""Where an attack run's attack stage loses time against the bare pass, batch by batch.

Prints, on the first ``--limit`` images of DATA_DIR (batch ``--batch-size``, Lite0, the default
fast path), alternating the variants in every repeat:

1. the seconds per image and pass of every batch's attack call inside an ``AttackRun``, for
   I-FGM and SAI-FGM, with the heap trimmed before the loader worker forks (the library's
   behaviour) and without (``trim_heap`` patched out of ``worker_batches``), next to the median
   bare forward+backward pass timed just before each run;
2. the superpixel space's render and its gradient for one step of a batch: the budget applied
   to the noise with the mask folded into the template (the library's path) against painting,
   cropping and applying the budget to the pixels (the reference path).

Usage: python benchmarks/attack_stage.py DATA_DIR [--limit 64] [--batch-size 16] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from sai_attack import superpixels as sp
from sai_attack.attacks import base, spaces
from sai_attack.models import load_model, use_memory_format
from sai_attack.models.layout import forward_backward_times
from sai_attack.pipeline import AttackConfig, AttackRun, RunOptions, loading
from sai_attack.runtime import retain_heap, trim_heap


def _ms(seconds: list[float]) -> str:
    return " ".join(f"{1000 * s:5.1f}" for s in seconds)


def attack_calls(model, data_dir: str, out: Path, method: str, limit: int, batch: int) -> list:
    """Seconds per image and pass of every attack call of one run."""
    calls: list[float] = []
    run = base.Attack.run

    def timed(self, images, *args, **kwargs):
        t0 = time.perf_counter()
        result = run(self, images, *args, **kwargs)
        calls.append((time.perf_counter() - t0) / images.shape[0] / self.steps)
        return result

    base.Attack.run = timed
    try:
        options = RunOptions(limit=limit, batch_size=batch, progress=False)
        AttackRun(data_dir, out, AttackConfig(method=method), options, model).run()
    finally:
        base.Attack.run = run
    return calls


def render_step(bound, n: torch.Tensor) -> float:
    """Seconds of one render and its gradient w.r.t. the noise."""
    t0 = time.perf_counter()
    v = n.detach().requires_grad_(True)
    x = (bound.images + bound.render(v)).clamp(0, 1)
    torch.autograd.grad(x.sum(), v)
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data")
    parser.add_argument("--limit", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    retain_heap()
    model = load_model("efficientnet-lite0", None, torch.device("cpu"), memory_format="contiguous")
    use_memory_format(model, "auto", args.batch_size, 224)
    x = torch.rand(args.batch_size, 3, 224, 224)
    print("1. attack call per batch, ms per image and pass (floor: median bare pass before it)")
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.repeats):
            for method in ("ifgm", "sai-fgm"):
                for trimmed in (True, False):
                    floor = statistics.median(forward_backward_times(model, x, 5)[0])
                    loading.trim_heap = trim_heap if trimmed else (lambda: None)
                    out = Path(tmp) / f"{method}-{trimmed}-{r}"
                    calls = attack_calls(model, args.data, out, method, args.limit, args.batch_size)
                    label = "trimmed before the fork" if trimmed else "not trimmed"
                    print(f"  {method:8s} {label:24s} batches {_ms(calls)}   "
                          f"floor {1000 * floor / args.batch_size:5.1f}")  # fmt: skip
    loading.trim_heap = trim_heap
    print("2. superpixel render + gradient of one step, ms per batch (median of 15)")
    templates = sp.segment_batch(x, sp.SuperpixelConfig())
    mask = (torch.rand(args.batch_size, 1, 224, 224) > 0.5).float()
    bound = spaces.SuperpixelSpace().bind(x, templates, mask, 3.0, "exact", "l2")
    n = torch.randn(args.batch_size, 3, int(templates.amax()) + 1)
    folded = bound.cropped
    times: dict[str, list[float]] = {"budget on n, mask in the template": [], "reference": []}
    for _ in range(15):
        for name in times:
            bound.cropped = folded if name != "reference" else None
            times[name].append(render_step(bound, n))
    for name, ts in times.items():
        print(f"  {name:34s} {1000 * statistics.median(ts):5.1f}")


if __name__ == "__main__":
    main()
