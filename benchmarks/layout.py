"""How far the model's forward+backward pass is from this CPU's limits, in each memory layout.

Prints, for the model an attack differentiates (gradient w.r.t. the input only):

1. the floor (ms per image) in each layout at several batch sizes and thread counts, and the
   forward pass alone;
2. how the layouts' logits and input gradients differ on real images;
3. the work (FLOPs counted by ``torch.utils.flop_counter``) and the rate achieved, against this
   CPU's measured matrix-multiply rate and memory bandwidth;
4. where the time goes (``torch.profiler``, channels-last): depthwise convolutions, the other
   convolutions, element-wise operations, the rest.

Usage: python benchmarks/layout.py [DATA_DIR] [--batch-sizes 8 16 32] [--threads 2 1]
       [--interop N] [--reps 5] [--model efficientnet-lite0]
Prefix OMP_WAIT_POLICY=ACTIVE to time PyTorch's spinning threads (sai_attack sets PASSIVE).
"""

from __future__ import annotations

import os

# As importing sai_attack does, before torch loads (OMP_WAIT_POLICY=ACTIVE: spinning threads).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import time
from collections import defaultdict

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from sai_attack import data
from sai_attack.models import MEMORY_FORMATS, ImageClassifier, load_model
from sai_attack.models.layout import forward_backward_seconds
from sai_attack.runtime import retain_heap


def forward_seconds(model: ImageClassifier, x: torch.Tensor, reps: int) -> float:
    """The fastest of ``reps`` forward passes without gradients, after a warm-up."""
    best = float("inf")
    with torch.no_grad():
        for i in range(reps + 1):
            t0 = time.perf_counter()
            model(x)
            if i:
                best = min(best, time.perf_counter() - t0)
    return best


def floors(model: ImageClassifier, sizes: list[int], threads: list[int], reps: int) -> None:
    """Print the floor per image for every layout, batch size and thread count."""
    side = model.input_size or 224
    print("| threads | batch | layout | forward+backward ms/image | forward ms/image |")
    print("| --- | --- | --- | --- | --- |")
    for n in threads:
        torch.set_num_threads(n)
        for batch in sizes:
            x = torch.rand(batch, 3, side, side)
            for name in MEMORY_FORMATS:
                model.to_memory_format(name)
                fb = forward_backward_seconds(model, x, reps)[0] / batch
                fw = forward_seconds(model, x, reps) / batch
                print(f"| {n} | {batch} | {name} | {1000 * fb:.1f} | {1000 * fw:.1f} |")
    torch.set_num_threads(max(threads))


def _gradient(model: ImageClassifier, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    xr = x.clone().requires_grad_(True)
    logits = model(xr)
    loss = F.cross_entropy(logits, logits.argmax(1), reduction="sum")
    return logits.detach(), torch.autograd.grad(loss, xr)[0]


def agreement(model: ImageClassifier, images: torch.Tensor) -> None:
    """Print how logits and input gradients differ between the layouts."""
    model.to_memory_format("contiguous")
    ref_logits, ref_grad = _gradient(model, images)
    model.to_memory_format("channels_last")
    logits, grad = _gradient(model, images)
    cos = F.cosine_similarity(grad.flatten(1), ref_grad.flatten(1))
    rel = (grad - ref_grad).abs().amax(dim=(1, 2, 3)) / ref_grad.abs().amax(dim=(1, 2, 3))
    same = int((logits.argmax(1) == ref_logits.argmax(1)).sum())
    print(
        f"\n{images.shape[0]} real images, channels_last against contiguous: largest logit "
        f"difference {float((logits - ref_logits).abs().max()):.2e} (largest logit "
        f"{float(ref_logits.abs().max()):.1f}), same prediction {same}/{images.shape[0]}; input "
        f"gradient: largest difference {float(rel.max()):.2%} of the image's largest value "
        f"(median {float(rel.median()):.2%}), cosine >= {float(cos.min()):.6f}"
    )


def machine_limits(reps: int) -> tuple[float, float]:
    """This CPU's fp32 matrix-multiply GFLOP/s and copy bandwidth (GB/s read + written)."""
    a, b = torch.rand(2048, 2048), torch.rand(2048, 2048)
    t_mm = min(_timed(lambda: torch.mm(a, b)) for _ in range(reps + 1))
    big = torch.rand(64 * 2**20)  # 256 MiB, far beyond the caches
    out = torch.empty_like(big)
    t_copy = min(_timed(lambda: out.copy_(big)) for _ in range(reps + 1))
    return 2 * 2048**3 / t_mm / 1e9, 2 * big.numel() * 4 / t_copy / 1e9


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def work(model: ImageClassifier, batch: int, reps: int) -> None:
    """Print FLOPs per image, the rate achieved, and the machine's limits."""
    side = model.input_size or 224
    x = torch.rand(batch, 3, side, side)
    model.to_memory_format("channels_last")
    xr = x.clone().requires_grad_(True)
    with FlopCounterMode(display=False) as counter:  # parameters are frozen: input gradient only
        logits = model(xr)
        F.cross_entropy(logits, logits.argmax(1), reduction="sum").backward()
    flops = counter.get_total_flops() / batch
    seconds = forward_backward_seconds(model, x, reps)[0] / batch
    gemm, bandwidth = machine_limits(reps)
    print(
        f"\nforward+backward (input gradient only): {flops / 1e9:.2f} GFLOP per image "
        f"(FlopCounterMode; convolutions and the linear layer), {1000 * seconds:.1f} ms per image "
        f"channels-last at batch {batch}: {flops / seconds / 1e9:.1f} GFLOP/s. This CPU "
        f"({torch.get_num_threads()} threads): fp32 matrix multiply {gemm:.0f} GFLOP/s "
        f"(2048^3), copy bandwidth {bandwidth:.1f} GB/s; at the matrix-multiply rate the pass "
        f"would take {1000 * flops / gemm / 1e9:.1f} ms per image."
    )


def _category(name: str, shapes: list) -> str:
    if "conv" in name:
        # (input, weight, ...) forward, (grad_output, input, weight, ...) backward
        four_d = [s for s in shapes if isinstance(s, list) and len(s) == 4]
        weight = four_d[2 if "backward" in name else 1] if len(four_d) > 2 else four_d[-1]
        depthwise = weight[1] == 1 and weight[2] > 1  # (C, 1, k, k): one channel per group
        return "depthwise convolutions" if depthwise else "other convolutions (1x1, stem)"
    if name in ("aten::hardtanh", "aten::hardtanh_backward", "aten::clamp", "aten::relu6",
                "aten::add", "aten::add_", "aten::mul", "aten::sub", "aten::div", "aten::copy_",
                "aten::threshold_backward", "aten::clone", "aten::contiguous"):  # fmt: skip
        return "element-wise and copies"
    return "the rest"


def profile(model: ImageClassifier, batch: int) -> None:
    """Print where the time of one channels-last pass goes, by kind of operation."""
    from torch.profiler import ProfilerActivity, profile

    side = model.input_size or 224
    x = torch.rand(batch, 3, side, side)
    model.to_memory_format("channels_last")
    _gradient(model, x)  # warm-up
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        _gradient(model, x)
    totals: dict[str, float] = defaultdict(float)
    ops: dict[str, float] = defaultdict(float)
    for event in prof.key_averages(group_by_input_shape=True):
        if event.self_cpu_time_total > 0:
            category = _category(event.key, event.input_shapes)
            totals[category] += event.self_cpu_time_total / 1000.0
            ops[event.key] += event.self_cpu_time_total / 1000.0
    total = sum(totals.values())
    print(f"\nwhere one channels-last pass goes (batch {batch}, self CPU ms of all threads' ops):")
    print("| kind | ms | share |")
    print("| --- | --- | --- |")
    for category, ms in sorted(totals.items(), key=lambda kv: -kv[1]):
        print(f"| {category} | {ms:.0f} | {ms / total:.0%} |")
    top = sorted(ops.items(), key=lambda kv: -kv[1])[:8]
    print("largest operations: " + ", ".join(f"{k} {v:.0f} ms" for k, v in top))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data_dir", nargs="?", default="../shared/data/nips17-dev")
    parser.add_argument("--model", default="efficientnet-lite0")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[8, 16, 32])
    parser.add_argument("--threads", type=int, nargs="+", default=[torch.get_num_threads()])
    parser.add_argument("--interop", type=int, default=None, help="inter-op threads to set")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--images", type=int, default=16, help="real images for the agreement")
    args = parser.parse_args()
    if args.interop is not None:
        torch.set_num_interop_threads(args.interop)
    retain_heap()  # as attack runs do
    model = load_model(args.model, memory_format="contiguous")
    print(
        f"{args.model}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"{torch.get_num_interop_threads()} inter-op threads, OMP_WAIT_POLICY "
        f"{os.environ['OMP_WAIT_POLICY']}, load average {os.getloadavg()[0]:.1f}\n"
    )
    floors(model, args.batch_sizes, args.threads, args.reps)
    inputs = data.discover_inputs(args.data_dir)
    side = model.input_size or 224
    images = data.to_tensor(
        [data.resize_center_crop(data.load_image(inputs.root / n), side)
         for n in inputs.names[: args.images]]
    )  # fmt: skip
    agreement(model, images)
    work(model, 16, args.reps)
    profile(model, 16)


if __name__ == "__main__":
    main()
