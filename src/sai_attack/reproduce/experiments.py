"""The experiments of the paper's Section 4, run on the user's data and models.

:class:`Reproduction` plans every attack run the experiments need (deduplicated, so that Table 1,
the robustness figures and the detection table share runs), executes them through the normal
attack pipeline (resuming finished ones), evaluates and detects with the normal evaluation and
detection code (caching their results by a fingerprint of their inputs), and turns the numbers
into :class:`~sai_attack.reproduce.tables.Table` and ``Figure`` objects.

Two protocols are measured side by side: ``paper`` (baselines projected into the L2 ball,
superpixel methods rescaled to the full budget, as published) and ``matched`` (every method
rescaled to the full budget, ``--budget exact``, so comparisons hold at equal L2 norm).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from sai_attack import data
from sai_attack.attacks import ATTACKS, METHOD_NAMES
from sai_attack.defenses import parse_defenses
from sai_attack.models import ImageClassifier, load_model
from sai_attack.pipeline import AttackConfig, AttackRun, RunOptions, read_results
from sai_attack.reproduce.presets import Preset
from sai_attack.reproduce.tables import Figure, Finding, Table

logger = logging.getLogger(__name__)

SUPERPIXEL_OF = {"fgm": "sa-fgm", "ifgm": "sai-fgm", "mifgm": "m-sai-fgm"}


@dataclass(frozen=True)
class RunSpec:
    """One attack configuration of the reproduction.

    ``budget`` is ``None`` for the method's paper default; ``phi12`` is phi in twelfths.
    """

    method: str
    delta: float
    budget: str | None = None
    merge_beta: float = 0.0
    superpixel: str = "slic"
    size: int = 5
    phi12: int = 4
    grad_mode: str = "noise"

    def __post_init__(self) -> None:
        if self.budget == ATTACKS[self.method].default_budget:
            object.__setattr__(self, "budget", None)  # one folder for identical configurations

    @property
    def key(self) -> str:
        """Folder name under ``runs/``."""
        parts = [self.method, f"d{self.delta:g}"]
        if self.budget:
            parts.append(self.budget)
        if self.merge_beta:
            parts.append(f"b{self.merge_beta:g}")
        if self.superpixel != "slic":
            parts.append(self.superpixel)
        if self.size != 5:
            parts.append(f"S{self.size}")
        if self.phi12 != 4:
            parts.append(f"phi{self.phi12}of12")
        if self.grad_mode != "noise":
            parts.append(f"grad-{self.grad_mode}")
        return "_".join(parts)

    @property
    def label(self) -> str:
        """Display name: method (and matched protocol marker)."""
        name = METHOD_NAMES[self.method]
        if self.budget == "exact":
            name += " (exact)"
        if self.merge_beta:
            name += f" beta={self.merge_beta:g}"
        return name

    def matched(self) -> RunSpec:
        """The same attack under the matched protocol (full budget)."""
        return replace(self, budget="exact")

    def config(self, model: str, seed: int) -> AttackConfig:
        """The pipeline configuration."""
        return AttackConfig(
            method=self.method,
            model=model,
            delta=self.delta,
            budget=self.budget,
            merge_beta=self.merge_beta,
            superpixel=self.superpixel,
            superpixel_size=self.size,
            phi=self.phi12 / 12.0,
            grad_mode=self.grad_mode,
            seed=seed,
        )


def _fingerprint(*parts: object) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


@dataclass
class Settings:
    """What a reproduction runs on."""

    data: Path
    out: Path
    preset: Preset
    model: str = "efficientnet-lite0"
    black_box: tuple[str, ...] = ("efficientnet-lite1", "efficientnet-lite2")
    targets: tuple[str, ...] = ()
    device: str = "cpu"
    batch_size: int = 16
    workers: int = 1
    seed: int = 0


class Progress:
    """Stage-by-stage progress with an estimate of the time left (by planned work units)."""

    def __init__(self, stages: Sequence[tuple[str, float]]) -> None:
        self.stages = list(stages)
        self.total = sum(u for _, u in stages) or 1.0
        self.done_units = 0.0
        self.measured_units = 0.0
        self.measured_seconds = 0.0
        self.started = time.perf_counter()
        self.index = 0

    def step(self, name: str, fn: Callable[[], object]) -> object:
        """Run one stage, log its time, the elapsed time and the estimate of the time left."""
        units = dict(self.stages).get(name, 1.0)
        self.index += 1
        t0 = time.perf_counter()
        result = fn()
        seconds = time.perf_counter() - t0
        self.done_units += units
        if seconds > 0.5:  # reused stages take no time and say nothing about the rate
            self.measured_units += units
            self.measured_seconds += seconds
        rate = self.measured_seconds / self.measured_units if self.measured_units else 0.0
        left = (self.total - self.done_units) * rate
        logger.info(
            "[%d/%d] %s: %.0f s (elapsed %.0f s, about %.0f s left)",
            self.index,
            len(self.stages),
            name,
            seconds,
            time.perf_counter() - self.started,
            left,
        )
        return result


class Reproduction:
    """Plans, runs and tabulates the experiments of one ``sai-attack reproduce`` call."""

    def __init__(self, settings: Settings) -> None:
        self.s = settings
        self.p = settings.preset
        self.runs_dir = settings.out / "runs"
        self.cache_dir = settings.out / "cache"
        self._model: ImageClassifier | None = None
        self._limits: dict[str, int] = {}
        self._specs: dict[str, RunSpec] = {}
        self.tables: list[Table] = []
        self.figures: list[Figure] = []
        self.findings: list[Finding] = []

    # -- planning ------------------------------------------------------------------------------

    def _need(self, spec: RunSpec, images: int) -> RunSpec:
        self._specs[spec.key] = spec
        self._limits[spec.key] = max(self._limits.get(spec.key, 0), images)
        return spec

    def plan(self) -> list[RunSpec]:
        """Every attack run the experiments need, each once."""
        p, n, na = self.p, self.p.images, self.p.ablation_images
        for method in ATTACKS:
            spec = self._need(RunSpec(method, p.table1_delta), n)
            if method in ("fgm", "ifgm") or (method == "mifgm" and p.matched_momentum):
                self._need(spec.matched(), n)
        for delta in sorted({*p.robustness_deltas, 4.0}):
            for spec in (RunSpec("ifgm", delta), RunSpec("sai-fgm", delta)):
                self._need(spec, n)
                self._need(spec.matched(), n)
        for delta in p.detection_deltas:
            for method in ("fgm", "ifgm"):
                self._need(RunSpec(method, delta), n)
                self._need(RunSpec(method, delta).matched(), n)
            for beta in p.detection_betas:
                self._need(RunSpec("sai-fgm", delta, merge_beta=beta), n)
        for algorithm in p.algorithms:
            self._need(RunSpec("sai-fgm", 4.0, superpixel=algorithm), n)
        for size in p.superpixel_sizes:
            self._need(RunSpec("sai-fgm", 4.0, size=size), na)
        for phi12 in p.phis:
            self._need(RunSpec("sai-fgm", 4.0, phi12=phi12), na)
        for mode in p.grad_modes:
            self._need(RunSpec("sai-fgm", 4.0, grad_mode=mode), na)
        for delta in (2.0,):  # Fig. 2
            self._need(RunSpec("ifgm", delta), n)
        return list(self._specs.values())

    def work_units(self) -> list[tuple[str, float]]:
        """Planned stages with their cost in model passes per image (estimates).

        Calibrated on a 2-core CPU with Lite0 (quick preset): an attack costs T + 1 passes per
        image; evaluating one image under one defense on one model about half a pass (decoding
        and the defense included), TVM about 7 passes; training one FLD-ensemble split about
        250 passes.
        """
        p, n, na = self.p, self.p.images, self.p.ablation_images
        models = 1 + len(self.s.black_box) + len(self.s.targets)
        stages = []
        for key, spec in self._specs.items():
            steps = 1 if ATTACKS[spec.method].fixed_steps == 1 else 10
            stages.append((f"attack {key}", self._limits[key] * (steps + 1.0)))
        robustness_runs = 4 * len(p.robustness_deltas)
        sweep = len(parse_defenses([p.resize, p.jpeg, p.dnn_jpeg, "tvm"]))
        sweep += 2 * len(p.pooling) + len(p.bitdepths)
        detectors = len(p.detection_deltas) * (4 + len(p.detection_betas))
        fld = 250.0 if p.detection_classifier == "fld" else 5.0
        fit = fld * p.detection_splits / max(1, min(self.detection_workers, p.detection_splits))
        ablations = na * (2 * len(p.superpixel_sizes) + models * len(p.phis) + len(p.grad_modes))
        stages += [
            ("evaluate table 1", 0.6 * n * 8 * models),
            ("evaluate defenses", n * robustness_runs * (0.45 * sweep + 7.0)),
            ("detection", detectors * fit),
            ("evaluate table 4 and ablations", n * len(p.algorithms) * (0.6 * 4 + 7.0)
             + 0.6 * ablations + len(p.algorithms) * fit),
            ("figure 2 and texture", n * 1.5),
            ("figures", 50.0),
        ]  # fmt: skip
        return stages

    @property
    def detection_workers(self) -> int:
        """Processes for features and detector training: as ``sai-attack detect`` by default."""
        from sai_attack.detection import default_workers

        return max(self.s.workers, default_workers())

    # -- execution -----------------------------------------------------------------------------

    @property
    def model(self) -> ImageClassifier:
        """The white-box model (loaded once)."""
        if self._model is None:
            self._model = load_model(self.s.model)
        return self._model

    def run_path(self, spec: RunSpec) -> Path:
        """The run folder of ``spec``."""
        return self.runs_dir / spec.key

    def attack(self, spec: RunSpec) -> None:
        """Run (or resume) one attack run."""
        run = AttackRun(
            self.s.data,
            self.run_path(spec),
            spec.config(self.s.model, self.s.seed),
            RunOptions(
                batch_size=self.s.batch_size,
                device=self.s.device,
                workers=self.s.workers,
                limit=self._limits[spec.key],
                save_templates=ATTACKS[spec.method].uses_superpixels,
                progress=False,
            ),
            model=self.model,
        )
        summary = run.run()
        if summary.processed:
            seconds = summary.timings.get("attack", 0.0) / summary.processed
            data.atomic_write_text(
                self.cache_dir / f"timing-{spec.key}.json", json.dumps({"attack": seconds})
            )

    def attack_seconds(self, spec: RunSpec) -> float:
        """Attack time per image of a run, as measured when its images were attacked."""
        try:
            return float(
                json.loads((self.cache_dir / f"timing-{spec.key}.json").read_text())["attack"]
            )
        except (OSError, ValueError, KeyError):
            return math.nan

    def fingerprint_of(self, specs: Sequence[RunSpec], tag: str) -> str:
        """A fingerprint of the runs' current results and the experiment settings."""
        return _fingerprint(
            [(s.key, self._run_state(s)) for s in specs], tag, self.p.images, self.s.seed
        )

    def names(self, images: int) -> set[str]:
        """The first ``images`` inputs (the subset every experiment of that size uses)."""
        inputs = data.discover_inputs(self.s.data)
        return {data.printable_name(n) for n in inputs.names[:images]}

    def _cached(self, name: str, fingerprint: str, compute: Callable[[], object]) -> object:
        path = self.cache_dir / f"{name}.json"
        if path.is_file():
            try:
                stored = json.loads(path.read_text(encoding="utf-8"))
                if stored.get("fingerprint") == fingerprint:
                    return stored["value"]
            except (OSError, ValueError):
                pass
        value = compute()
        data.atomic_write_text(path, json.dumps({"fingerprint": fingerprint, "value": value}))
        return value

    def _run_state(self, spec: RunSpec) -> str:
        path = self.run_path(spec) / "results.csv"
        return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else ""

    def evaluate(
        self,
        name: str,
        specs: Sequence[RunSpec],
        defenses: Sequence[str],
        models: Sequence[str],
        images: int,
    ) -> dict[tuple[str, str, str], dict]:
        """Success rows keyed by (run key, model, defense spec), cached by their inputs."""
        from sai_attack.evaluation import evaluate, load_runs, load_targets

        specs = list(dict.fromkeys(specs))
        fingerprint = _fingerprint(
            [(s.key, self._run_state(s)) for s in specs],
            list(defenses),
            list(models),
            images,
            self.s.seed,
        )

        def compute() -> list[dict]:
            runs = load_runs([self.run_path(s) for s in specs])
            keep = self.names(images)
            for run in runs:
                run.items = [it for it in run.items if it.image in keep]
            targets = load_targets(list(models), runs, device=self.s.device)
            result = evaluate(
                runs,
                targets,
                list(defenses),
                batch_size=self.s.batch_size,
                device=self.s.device,
                seed=self.s.seed,
            )
            keys = {run.name: s.key for run, s in zip(runs, specs, strict=True)}
            names = {t.name: spec for t, spec in zip(targets, models, strict=True)}
            return [
                {**row, "run": keys[row["run"]], "model": names[row["model"]]}
                for row in result.rows
            ]

        rows = self._cached(f"evaluate-{name}", fingerprint, compute)
        return {(r["run"], r["model"], r["spec"]): r for r in rows}

    def detect(self, name: str, specs: Sequence[RunSpec]) -> dict[str, dict]:
        """Detection results per run key (features cached, results cached by their inputs)."""
        from sai_attack.detection import DetectionOptions, detect_runs, read_run

        specs = list(dict.fromkeys(specs))
        options = dict(
            splits=self.p.detection_splits,
            seed=self.s.seed,
            classifier=self.p.detection_classifier,
        )
        fingerprint = _fingerprint([(s.key, self._run_state(s)) for s in specs], options)

        def compute() -> dict[str, dict]:
            keep = self.names(self.p.images)
            runs = []
            for s in specs:
                run = read_run(self.run_path(s))
                rows = read_results(self.run_path(s) / "results.csv")
                stems = {Path(r["output"]).stem for r in rows if r["image"] in keep and r["output"]}
                runs.append(run.subset(stems))
            opts = DetectionOptions(
                workers=self.detection_workers, cache_dir=self.cache_dir / "features", **options
            )
            results, _ = detect_runs(runs, opts)
            by_path = {str(r.run.path): r for r in results}
            out = {}
            for s in specs:
                r = by_path.get(str(self.run_path(s)))
                if r is not None:
                    out[s.key] = {
                        "accuracy": r.result.accuracy,
                        "std": r.result.std,
                        "p_fa": r.result.p_fa,
                        "p_md": r.result.p_md,
                        "n_test": r.result.n_test,
                        "n_train": r.result.n_train,
                    }
            return out

        return self._cached(f"detect-{name}", fingerprint, compute)

    def inputs(self) -> list[tuple[str, str]]:
        """(image, status) of the main image set, from the I-FGM delta-4 run."""
        rows = read_results(self.run_path(RunSpec("ifgm", 4.0)) / "results.csv")
        return [(r["image"], r["status"]) for r in rows]

    def delta_eff(self, spec: RunSpec, images: int | None = None) -> float:
        """Mean delta_eff of a run's saved images (over the first ``images`` inputs)."""
        keep = self.names(images or self.p.images)
        rows = read_results(self.run_path(spec) / "results.csv")
        values = [float(r["delta_eff"]) for r in rows if r["image"] in keep and r["delta_eff"]]
        return float(np.mean(values)) if values else math.nan

    def summary_value(self, spec: RunSpec, images: int, key: str) -> float:
        """Mean of a numeric ``results.csv`` column over the first ``images`` inputs."""
        keep = self.names(images)
        rows = read_results(self.run_path(spec) / "results.csv")
        values = [float(r[key]) for r in rows if r["image"] in keep and r.get(key)]
        return float(np.mean(values)) if values else math.nan
