"""``sai-attack bench``: where the time goes, method by method, on one machine.

Each method runs through the real attack pipeline (the same code as ``sai-attack attack``) on the
same images, batch size and device, into a temporary folder. Reported per method: images/s and
seconds per image end to end, the time split into stages, the ratio to I-FGM in the same run, and
the attack's efficiency ``floor * T / attack time``, where the floor is the model's bare
forward+backward pass on a batch. Peak memory (RSS, and CUDA memory on GPU) is reported for the
whole process. torchattacks' ``PGDL2`` (same steps and budget, same model, same batches) is timed
as an external reference for the iterative L2 baseline when torchattacks is installed.
"""

from __future__ import annotations

import json
import logging
import math
import resource
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import torch
import torch.nn.functional as F

from sai_attack import data, options
from sai_attack.attacks import ATTACKS, IFGM, epsilon
from sai_attack.models import ImageClassifier, load_model
from sai_attack.pipeline import STAGES, AttackConfig, AttackRun, RunOptions
from sai_attack.runtime import library_versions, resolve_device

logger = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass
class BenchConfig:
    """What to benchmark.

    Attributes:
        input: An image folder.
        methods: The methods to time, in this order.
        limit: Number of images.
        repeats: Time every method this many times, in turn; the median run is reported.
        reference: Also time torchattacks' ``PGDL2`` on the same batches.
        parameters: Attack options (names of the option table) shared by every method.
        execution: Execution options (``batch_size``, ``device``, ``workers``, ``amp``).
    """

    input: str
    methods: tuple[str, ...] = tuple(ATTACKS)
    limit: int = 64
    repeats: int = 1
    reference: bool = True
    parameters: dict[str, Any] = field(default_factory=dict)
    execution: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.methods = tuple(options.check("method", m) for m in self.methods)
        self.limit = options.check("limit", self.limit)
        if not isinstance(self.repeats, int) or self.repeats < 1:
            raise ValueError(f"repeats must be an integer >= 1, got {self.repeats!r}")
        self.attack_config()  # validates the parameters
        self.run_options()

    def attack_config(self, method: str | None = None) -> Any:
        """The :class:`~sai_attack.pipeline.AttackConfig` of ``method`` (default: the first)."""
        return AttackConfig(**{**self.parameters, "method": method or self.methods[0]})

    def run_options(self) -> Any:
        """The :class:`~sai_attack.pipeline.RunOptions` of every timed run."""
        return RunOptions(**{**self.execution, "limit": self.limit, "progress": False})

    def describe(self) -> dict[str, Any]:
        """Every setting, flat, for the report."""
        attack = self.attack_config().record()
        attack.pop("method")
        execution = {k: v for k, v in asdict(self.run_options()).items() if k != "progress"}
        return {
            "input": self.input, "methods": list(self.methods), "repeats": self.repeats,
            "reference": self.reference, **attack, **execution,
        }  # fmt: skip


@dataclass
class MethodTiming:
    """One method's measurements."""

    method: str
    images: int
    seconds: float
    images_per_s: float
    seconds_per_image: float
    stages: dict[str, float]
    attack_seconds_per_image: float
    efficiency: float
    ratio_to_ifgm: float | None = None
    success_rate: float | None = None
    repeat_seconds_per_image: list[float] = field(default_factory=list)
    """End-to-end seconds per image of every repetition (the fields above: the median one)."""


@dataclass
class BenchReport:
    """Everything ``sai-attack bench`` measured."""

    config: dict
    device: str
    threads: int
    floor_seconds_per_batch: float
    floor_seconds_per_image: float
    methods: list[MethodTiming] = field(default_factory=list)
    reference: dict | None = None
    peak_rss_mb: float = 0.0
    peak_cuda_mb: float | None = None
    versions: dict = field(default_factory=dict)


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, in MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def forward_backward_floor(
    model: ImageClassifier, batch: int, size: int, device: torch.device, reps: int = 3
) -> float:
    """Seconds for one bare forward+backward pass (gradient w.r.t. the input) of a batch."""
    x = torch.rand(batch, 3, size, size, device=device)
    y = torch.zeros(batch, dtype=torch.long, device=device)
    times = []
    for i in range(reps + 1):
        _sync(device)
        t0 = time.perf_counter()
        xr = x.clone().requires_grad_(True)
        loss = F.cross_entropy(model(xr), y, reduction="sum")
        torch.autograd.grad(loss, xr)
        _sync(device)
        if i:  # the first pass warms up
            times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]


def _load_batches(
    folder: Path, names: list[str], size: int, batch: int, device: torch.device
) -> list[torch.Tensor]:
    inputs = data.discover_inputs(folder)
    problems = inputs.labels.problems if inputs.labels else {}
    images = []
    for name in names:
        # Names from a labels file are opened only when they are plain names inside the folder.
        if name in problems or not data.is_plain_name(name):
            logger.warning("skipped %r: %s", name, problems.get(name, "not a plain file name"))
            continue
        try:
            images.append(data.resize_center_crop(data.load_image(inputs.root / name), size))
        except data.ImageLoadError as exc:
            logger.warning("skipped %r: %s", name, exc)
    return [data.to_tensor(images[i : i + batch]).to(device) for i in range(0, len(images), batch)]


def reference_pgdl2(
    model: ImageClassifier,
    batches: list[torch.Tensor],
    delta: float,
    steps: int,
    device: torch.device,
) -> dict | None:
    """Attack-only seconds per image of our IFGM and torchattacks' PGDL2 on the same batches."""
    try:
        import torchattacks
    except ImportError:
        logger.info("torchattacks is not installed; skipping the PGDL2 reference")
        return None
    eps = epsilon(delta, batches[0].shape[1:])
    ours = IFGM(model, delta=delta, steps=steps)
    theirs = torchattacks.PGDL2(model, eps=eps, alpha=eps / steps, steps=steps, random_start=False)
    n = sum(x.shape[0] for x in batches)
    result: dict[str, float] = {"images": n}
    totals = {"ifgm": 0.0, "torchattacks.PGDL2": 0.0}
    for x in batches:  # both attacks on each batch in turn, so drifts of the machine cancel
        with torch.no_grad():
            y = model(x).argmax(1)
        for name, attack in (("ifgm", ours), ("torchattacks.PGDL2", theirs)):
            _sync(device)
            t0 = time.perf_counter()
            attack(x, y)
            _sync(device)
            totals[name] += time.perf_counter() - t0
    result.update({name: total / n for name, total in totals.items()})
    result["ifgm_over_pgdl2"] = result["ifgm"] / result["torchattacks.PGDL2"]
    return result


def _median_item(items: list[T], key: Callable[[T], float]) -> T:
    """The item of median ``key`` (the lower one of the middle two for an even count)."""
    return sorted(items, key=key)[(len(items) - 1) // 2]


def _time_method(
    config: BenchConfig, model: ImageClassifier, method: str, out: Path, device: torch.device
) -> MethodTiming:
    """One timed run of ``method`` through the attack pipeline (efficiency filled in later)."""
    run = AttackRun(config.input, out, config.attack_config(method), config.run_options(), model)
    _sync(device)
    t0 = time.perf_counter()
    summary = run.run()
    _sync(device)
    seconds = time.perf_counter() - t0
    n = max(summary.processed, 1)
    return MethodTiming(
        method=method,
        images=summary.processed,
        seconds=seconds,
        images_per_s=summary.processed / seconds,
        seconds_per_image=seconds / n,
        stages={k: summary.timings.get(k, 0.0) / n for k in STAGES},
        attack_seconds_per_image=summary.timings["attack"] / n,
        efficiency=math.nan,
        success_rate=None if math.isnan(summary.success_rate) else summary.success_rate,
    )


def run_bench(config: BenchConfig) -> BenchReport:
    """Benchmark every method of ``config`` and return the report."""
    settings, execution = config.attack_config(), config.run_options()
    device = resolve_device(execution.device)
    model = load_model(settings.model, settings.weights).to(device).eval()
    size = model.input_size or 224
    inputs = data.discover_inputs(config.input)
    names = inputs.names[: config.limit]
    floors = [forward_backward_floor(model, execution.batch_size, size, device)]
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    # Repetitions run every method in turn, so a machine whose speed drifts slows all alike.
    runs: dict[str, list[MethodTiming]] = {m: [] for m in config.methods}
    with tempfile.TemporaryDirectory(prefix="sai-bench-") as tmp:
        for r in range(config.repeats):
            if r:
                floors.append(forward_backward_floor(model, execution.batch_size, size, device))
            for method in config.methods:
                timing = _time_method(config, model, method, Path(tmp) / f"{method}-{r}", device)
                runs[method].append(timing)
                logger.info("%s: %.3f s/image", method, timing.seconds_per_image)
    floor = statistics.median(floors)
    report = BenchReport(
        config=config.describe(),
        device=str(device) if device.type == "cpu" else torch.cuda.get_device_name(device),
        threads=torch.get_num_threads(),
        floor_seconds_per_batch=floor,
        floor_seconds_per_image=floor / execution.batch_size,
        versions=library_versions(),
    )
    for method, timings in runs.items():
        chosen = _median_item(timings, key=lambda t: t.seconds_per_image)
        chosen.repeat_seconds_per_image = [t.seconds_per_image for t in timings]
        steps = config.attack_config(method).build_attack(model).steps
        attack = chosen.attack_seconds_per_image
        chosen.efficiency = report.floor_seconds_per_image * steps / attack if attack else math.nan
        if "ifgm" in runs:  # paired ratios, one per repetition
            chosen.ratio_to_ifgm = statistics.median(
                t.seconds_per_image / b.seconds_per_image
                for t, b in zip(timings, runs["ifgm"], strict=True)
            )
        report.methods.append(chosen)
    if config.reference:
        batches = _load_batches(Path(config.input), names, size, execution.batch_size, device)
        refs = [
            reference_pgdl2(model, batches, settings.delta, settings.steps, device)
            for _ in range(config.repeats)
        ]
        if refs[0] is not None:
            report.reference = _median_item(refs, key=lambda r: r["ifgm_over_pgdl2"])
    report.peak_rss_mb = peak_rss_mb()
    if device.type == "cuda":
        report.peak_cuda_mb = torch.cuda.max_memory_allocated(device) / 2**20
    return report


def format_report(report: BenchReport) -> str:
    """The report as Markdown tables."""
    c = report.config
    lines = [
        f"model {c['model']}, device {report.device} ({report.threads} threads), batch "
        f"{c['batch_size']}, {c['limit']} images from {c['input']}, delta {c['delta']:g}, "
        f"T = {c['steps']}, workers {c['workers']}{', amp' if c['amp'] else ''}, "
        f"superpixels {c.get('superpixel', 'slic')}"
        + (
            f", {c['repeats']} repeats (median run; x I-FGM: median of the paired ratios)"
            if c.get("repeats", 1) > 1
            else ""
        ),
        f"floor (bare forward+backward): {report.floor_seconds_per_batch:.3f} s per batch, "
        f"{report.floor_seconds_per_image * 1000:.1f} ms per image",
        "",
        "| method | images/s | s/image | x I-FGM | efficiency | "
        + " | ".join(f"{s} ms" for s in STAGES)
        + " |",
        "| --- " * (5 + len(STAGES)) + "|",
    ]
    for m in report.methods:
        ratio = f"{m.ratio_to_ifgm:.3f}" if m.ratio_to_ifgm is not None else "n/a"
        stages = " | ".join(f"{1000 * m.stages[s]:.1f}" for s in STAGES)
        lines.append(
            f"| {m.method} | {m.images_per_s:.3f} | {m.seconds_per_image:.3f} | {ratio} | "
            f"{m.efficiency:.3f} | {stages} |"
        )
    if report.reference:
        r = report.reference
        lines += [
            "",
            f"attack loop only, same {r['images']} images and batches: I-FGM "
            f"{r['ifgm']:.3f} s/image, torchattacks PGDL2 {r['torchattacks.PGDL2']:.3f} s/image "
            f"(ratio {r['ifgm_over_pgdl2']:.3f})",
        ]
    mem = f"peak RSS {report.peak_rss_mb:.0f} MiB"
    if report.peak_cuda_mb is not None:
        mem += f", peak CUDA memory {report.peak_cuda_mb:.0f} MiB"
    lines += ["", mem]
    return "\n".join(lines)


def write_json(report: BenchReport, path: str | Path) -> None:
    """Write the report as JSON."""
    data.atomic_write_text(path, json.dumps(asdict(report), indent=2) + "\n")
