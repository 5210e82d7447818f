"""The timed runs of ``bench``: every method through the attack pipeline, and the floors."""

from __future__ import annotations

import copy
import logging
import math
import os
import resource
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

import torch

from sai_attack import data, options
from sai_attack.attacks import ATTACKS
from sai_attack.bench.reference import load_batches, reference_attacks
from sai_attack.models import MEMORY_FORMATS, ImageClassifier, load_model, use_memory_format
from sai_attack.models.layout import FLOOR_PASSES, forward_backward_times
from sai_attack.pipeline import STAGES, AttackConfig, AttackRun, RunOptions
from sai_attack.runtime import library_versions, resolve_device, retain_heap

logger = logging.getLogger(__name__)

T = TypeVar("T")

__all__ = ["STAGES", "BenchConfig", "BenchReport", "MethodTiming", "run_bench"]


@dataclass
class BenchConfig:
    """What to benchmark.

    Attributes:
        input: An image folder.
        methods: The methods to time, in this order.
        limit: Number of images.
        repeats: Time every method this many times, in turn; the median run is reported.
        reference: Also time torchattacks' ``PGDL2`` and ``PGD`` on the same batches.
        parameters: Attack options (names of the option table) shared by every method.
        execution: Execution options (``batch_size``, ``device``, ``workers``, ``amp``,
            ``memory_format``).
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
    """``floor * T / attack time`` with the median bare pass as the floor."""
    efficiency_fastest: float = math.nan
    """The same against the fastest bare pass (an upper bound of the floor's speed)."""
    ratio_to_ifgm: float | None = None
    success_rate: float | None = None
    repeat_seconds_per_image: list[float] = field(default_factory=list)
    """End-to-end seconds per image of every repetition (the fields above: the median one)."""


@dataclass
class BenchReport:
    """Everything ``sai-attack bench`` measured.

    ``floor_seconds_per_batch`` is the floor in the layout the runs used (``memory_format``, as
    ``auto`` resolved it), the median of the bare passes timed before and after the runs, the
    one efficiencies are computed against; ``floors_seconds_per_image``
    has it in every layout, and for the plain module of the reference (``plain``).
    """

    config: dict
    device: str
    threads: int
    floor_seconds_per_batch: float
    floor_seconds_per_image: float
    memory_format: str = "contiguous"
    interop_threads: int = 1
    omp_wait_policy: str = ""
    load_average: list[float] = field(default_factory=list)
    """The machine's 1-minute load average when the bench started and when it ended."""
    floors_seconds_per_image: dict[str, float] = field(default_factory=dict)
    floor_fastest_seconds_per_image: float = math.nan
    """The fastest bare pass in ``memory_format`` (the floors above: the median pass)."""
    methods: list[MethodTiming] = field(default_factory=list)
    reference: dict | None = None
    peak_rss_methods_mb: float = 0.0
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
    model: ImageClassifier, batch: int, size: int, device: torch.device, reps: int = FLOOR_PASSES
) -> list[float]:
    """Seconds of ``reps`` bare forward+backward passes (gradient w.r.t. the input) of a batch.

    Timed after a warm-up pass, in the model's current layout (the input is an ordinary tensor,
    converted at the model's boundary as in an attack).
    """
    x = torch.rand(batch, 3, size, size, device=device)
    return forward_backward_times(model, x, reps)[0]


def layout_floors(
    model: ImageClassifier, batch: int, size: int, device: torch.device
) -> dict[str, list[float]]:
    """:func:`forward_backward_floor` in every layout; ``model`` itself is never converted.

    The model's own layout is measured on the model as it is, the others on a copy: converting
    weights to another layout and back made every pass on them slower (I-FGM's attack stage
    290-380 ms per image after such a round trip against 245-270 ms without, and a floor measured
    on round-tripped weights 31.4 ms against 26.1 ms per pass of the attack loop itself, on this
    project's 2-core CPU, 2026-12-02).
    """
    own = model.memory_format
    floors = {own: forward_backward_floor(model, batch, size, device)}
    others = [name for name in MEMORY_FORMATS if name != own]
    if others:
        twin = copy.deepcopy(model)
        for name in others:
            floors[name] = forward_backward_floor(twin.to_memory_format(name), batch, size, device)
    return {name: floors[name] for name in MEMORY_FORMATS}


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


def _chosen_timing(
    config: BenchConfig,
    model: ImageClassifier,
    method: str,
    runs: dict[str, list[MethodTiming]],
    floor_per_image: float,
    fastest_per_image: float,
) -> MethodTiming:
    """The median repetition of ``method``, with its efficiency and paired ratio to I-FGM."""
    timings = runs[method]
    chosen = _median_item(timings, key=lambda t: t.seconds_per_image)
    chosen.repeat_seconds_per_image = [t.seconds_per_image for t in timings]
    steps = config.attack_config(method).build_attack(model).steps
    attack = chosen.attack_seconds_per_image
    chosen.efficiency = floor_per_image * steps / attack if attack else math.nan
    chosen.efficiency_fastest = fastest_per_image * steps / attack if attack else math.nan
    if "ifgm" in runs:  # paired ratios, one per repetition
        chosen.ratio_to_ifgm = statistics.median(
            t.seconds_per_image / b.seconds_per_image
            for t, b in zip(timings, runs["ifgm"], strict=True)
        )
    return chosen


def run_bench(config: BenchConfig) -> BenchReport:
    """Benchmark every method of ``config`` and return the report."""
    settings, execution = config.attack_config(), config.run_options()
    device = resolve_device(execution.device)
    retain_heap()  # as every attack run does, so the floors are measured the same way
    load_at_start = os.getloadavg()[0]
    model = load_model(settings.model, settings.weights, device, memory_format="contiguous")
    size = settings.image_size or model.input_size or 224
    use_memory_format(model, execution.memory_format, execution.batch_size, size)
    batch = execution.batch_size
    floors = [layout_floors(model, batch, size, device)]
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    # Repetitions run every method in turn, so a machine whose speed drifts slows all alike. The
    # floors are measured before and after them, and one untimed batch of the first method runs
    # first. The run after the floors used to be 5-15% slower than the next: every run's first
    # batch was (copy-on-write of the retained heap after its loader worker forked, worst after
    # the floors had grown the heap); worker_batches now trims the heap before the fork.
    runs: dict[str, list[MethodTiming]] = {m: [] for m in config.methods}
    with tempfile.TemporaryDirectory(prefix="sai-bench-") as tmp:
        warm_up = replace(config, limit=min(config.limit, batch))
        _time_method(warm_up, model, config.methods[0], Path(tmp) / "warm-up", device)
        for r in range(config.repeats):
            for method in config.methods:
                timing = _time_method(config, model, method, Path(tmp) / f"{method}-{r}", device)
                runs[method].append(timing)
                logger.info("%s: %.3f s/image", method, timing.seconds_per_image)
    floors.append(layout_floors(model, batch, size, device))
    # The attack's time is the sum of all its passes, slow ones included, so the floor it is
    # compared with is the median pass, not the luckiest: single passes spread by +-20% here.
    times = {k: [t for f in floors for t in f[k]] for k in floors[0]}
    per_image = {k: statistics.median(ts) / batch for k, ts in times.items()}
    report = BenchReport(
        config=config.describe(),
        device=str(device) if device.type == "cpu" else torch.cuda.get_device_name(device),
        threads=torch.get_num_threads(),
        interop_threads=torch.get_num_interop_threads(),
        omp_wait_policy=os.environ.get("OMP_WAIT_POLICY", "unset"),
        memory_format=model.memory_format,
        floor_seconds_per_batch=per_image[model.memory_format] * batch,
        floor_seconds_per_image=per_image[model.memory_format],
        floors_seconds_per_image=per_image,
        floor_fastest_seconds_per_image=min(times[model.memory_format]) / batch,
        versions=library_versions(),
    )
    report.methods = [
        _chosen_timing(config, model, m, runs, report.floor_seconds_per_image,
                       report.floor_fastest_seconds_per_image)
        for m in runs
    ]  # fmt: skip
    report.peak_rss_methods_mb = peak_rss_mb()
    if config.reference:
        names = data.discover_inputs(config.input).names[: config.limit]
        batches = load_batches(Path(config.input), names, size, batch, device)
        report.reference = reference_attacks(model, batches, settings, config.repeats, device)
        if report.reference is not None:
            report.floors_seconds_per_image["plain"] = report.reference.pop("plain_floor") / batch
    report.peak_rss_mb = peak_rss_mb()
    report.load_average = [load_at_start, os.getloadavg()[0]]
    if device.type == "cuda":
        report.peak_cuda_mb = torch.cuda.max_memory_allocated(device) / 2**20
    return report
