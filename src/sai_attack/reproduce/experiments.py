"""The experiments of the paper's Section 4, run on the user's data and models.

:class:`Reproduction` executes the planned attack runs through the normal attack pipeline
(resuming finished ones), evaluates and detects with the normal evaluation and detection code
(caching their results by a fingerprint of their inputs), reads the runs back through
:func:`sai_attack.runs.read_run`, and collects the sections'
:class:`~sai_attack.reproduce.tables.Table` and ``Figure`` objects.

Two protocols are measured side by side: ``paper`` (baselines projected into the L2 ball,
superpixel methods rescaled to the full budget, as published) and ``matched`` (every method
rescaled to the full budget, ``--budget exact``, so comparisons hold at equal L2 norm).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sai_attack import data
from sai_attack.attacks import ATTACKS
from sai_attack.defenses import parse_defenses
from sai_attack.models import ImageClassifier, load_model
from sai_attack.pipeline import AttackRun, RunOptions
from sai_attack.report import wilson_interval
from sai_attack.reproduce.plan import Need, RunSpec, Section, Settings
from sai_attack.reproduce.tables import (
    Figure,
    Finding,
    Measure,
    Table,
    marked_outcomes,
    outcome_marks,
)
from sai_attack.runs import Run, RunItem, RunLayout, read_run

logger = logging.getLogger(__name__)


def _fingerprint(*parts: object) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def defense_specs(specs: Sequence[str]) -> list[str]:
    """The canonical spec of every defense of ``specs`` (sweeps expanded), as results key them."""
    return [d.spec for d in parse_defenses(specs)]


OUTCOMES_FORMAT = "outcomes-v1"
"""Tag of the cache format of evaluations (rows with per-image outcomes); part of the fingerprint,
so that caches written before the outcomes were stored are computed again."""


@dataclass
class Rates:
    """Success rows of one evaluation, keyed by (run key, model, defense spec).

    Attributes:
        rows: The rows; ``outcomes`` holds the per-image marks of :func:`outcome_marks`.
        images: The images of every run key, in the order of the marks.
    """

    rows: dict[tuple[str, str, str], dict[str, Any]]
    images: dict[str, list[str]] = field(default_factory=dict)

    def rate(self, spec: RunSpec, model: str, defense: str) -> float:
        """The success rate in [0, 1], NaN when not measured or over no image."""
        row = self.rows.get((spec.key, model, defense))
        return row["success_rate"] if row and row["n"] else math.nan

    def n(self, spec: RunSpec, model: str, defense: str) -> str:
        """The number of images the rate is over (``""`` when not measured)."""
        row = self.rows.get((spec.key, model, defense))
        return str(row["n"]) if row else ""

    def measure(self, spec: RunSpec, model: str, defense: str) -> Measure:
        """The rate, its 95% Wilson interval and per-image outcomes (for the paired test)."""
        row = self.rows.get((spec.key, model, defense))
        if not row:
            return Measure(math.nan)
        outcomes = marked_outcomes(self.images.get(spec.key, []), row["outcomes"])
        low, high = wilson_interval(row["successes"], row["n"])
        return Measure(self.rate(spec, model, defense), low, high, outcomes)

    def interval_note(self) -> str:
        """A table note bounding the 95% Wilson intervals of every rate of this evaluation."""
        counts = [(row["successes"], row["n"]) for row in self.rows.values() if row["n"]]
        if not counts:
            return "uncertainty: no rate measured"
        half = max(high - low for low, high in (wilson_interval(*c) for c in counts)) / 2
        return (
            f"uncertainty: every 95% Wilson interval of these rates is at most ± {100 * half:.1f} "
            f"points (n >= {min(n for _, n in counts)} images per rate); the summary gives "
            "intervals and paired tests"
        )


class Reproduction:
    """Runs and tabulates the experiments of one ``sai-attack reproduce`` call.

    Args:
        settings: What it runs on.
        needs: The planned runs (:func:`~sai_attack.reproduce.plan.plan`).
    """

    def __init__(self, settings: Settings, needs: dict[str, Need]) -> None:
        self.s = settings
        self.p = settings.preset
        self.needs = dict(needs)
        self.runs_dir = settings.out / "runs"
        self.cache_dir = settings.out / "cache"
        self._model: ImageClassifier | None = None
        self._runs: dict[str, Run] = {}
        self._names: list[str] | None = None
        self.tables: list[Table] = []
        self.figures: list[Figure] = []
        self.findings: list[Finding] = []

    @property
    def specs(self) -> list[RunSpec]:
        """The planned runs, in order."""
        return [spec for spec, _ in self.needs.values()]

    def work_units(self, sections: Sequence[Section]) -> list[tuple[str, float]]:
        """Planned stages with their cost in model passes per image (estimates).

        Calibrated on a 2-core CPU with Lite0 (standard preset): an attack costs T + 1 passes per
        image; the sections estimate their own evaluation, detection and figure work.
        """
        stages = []
        for key, (spec, images) in self.needs.items():
            steps = 1 if ATTACKS[spec.method].fixed_steps == 1 else 10
            stages.append((f"attack {key}", images * (steps + 1.0)))
        return stages + [(section.name, section.cost(self)) for section in sections]

    @property
    def detection_workers(self) -> int:
        """Processes for features and detector training: as ``sai-attack detect`` by default."""
        from sai_attack.detection import default_workers

        return max(self.s.workers, default_workers())

    @property
    def detector_units(self) -> float:
        """The cost of training one detector on all its splits, in model passes per image.

        An FLD-ensemble split costs about 250, a logistic regression about 5.
        """
        p = self.p
        fld = 250.0 if p.detection_classifier == "fld" else 5.0
        return fld * p.detection_splits / max(1, min(self.detection_workers, p.detection_splits))

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
        """Run (or resume) one planned attack run."""
        self._runs.pop(spec.key, None)
        config = spec.config(self.s.model, self.s.seed, self.s.black_box)
        run = AttackRun(
            self.s.data,
            self.run_path(spec),
            config,
            RunOptions(
                batch_size=self.s.batch_size,
                device=self.s.device,
                workers=self.s.workers,
                limit=self.needs[spec.key][1],
                save_templates=ATTACKS[spec.method].uses_superpixels,
                progress=False,
                # Templates, clean predictions and attention maps, shared by every run of the
                # same images and kept when finished runs are removed.
                cache_dir=str(self.cache_dir),
            ),
            # the loaded white-box model, unless the run attacks an ensemble of surrogates
            model=self.model if config.model == self.s.model else None,
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
        if self._names is None:
            inputs = data.discover_inputs(self.s.data)
            self._names = [data.printable_name(n) for n in inputs.names]
        return set(self._names[:images])

    def cached(self, name: str, fingerprint: str, compute: Callable[[], Any]) -> Any:
        """``compute()``, or its stored value when ``fingerprint`` is the one it was stored with."""
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
        path = RunLayout(self.run_path(spec)).results
        return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else ""

    def evaluate(
        self,
        name: str,
        specs: Sequence[RunSpec],
        defenses: Sequence[str],
        models: Sequence[str],
        images: int,
    ) -> Rates:
        """Success rates by (run, model, defense spec), cached by their inputs."""
        from sai_attack.evaluation import evaluate, load_targets

        specs = list(dict.fromkeys(specs))
        fingerprint = _fingerprint(
            [(s.key, self._run_state(s)) for s in specs],
            list(defenses),
            list(models),
            images,
            self.s.seed,
            OUTCOMES_FORMAT,
        )

        def compute() -> dict[str, Any]:
            runs = [self.subset(s, images) for s in specs]
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
            order, marks = outcome_marks(result.predictions, keys, names)
            rows = []
            for row in result.rows:
                key = (keys[row["run"]], names[row["model"]], row["spec"])
                rows.append({**row, "run": key[0], "model": key[1], "outcomes": marks.get(key, "")})
            return {"rows": rows, "images": order}

        value = self.cached(f"evaluate-{name}", fingerprint, compute)
        rows = {(r["run"], r["model"], r["spec"]): r for r in value["rows"]}
        return Rates(rows, value["images"])

    def detect(
        self, name: str, specs: Sequence[RunSpec], images: int | None = None
    ) -> dict[str, dict]:
        """Detection results per run key (features cached, results cached by their inputs).

        Each run's detector sees its attacked images among the first ``images`` inputs (default:
        the preset's ``images``).
        """
        from sai_attack.detection import DetectionOptions, detect_runs

        specs = list(dict.fromkeys(specs))
        images = images or self.p.images
        options = dict(
            splits=self.p.detection_splits,
            seed=self.s.seed,
            classifier=self.p.detection_classifier,
        )
        fingerprint = _fingerprint(
            [(s.key, self._run_state(s)) for s in specs],
            options,
            "split-accuracies",
            *([images] if images != self.p.images else []),  # earlier caches stay valid
        )

        def compute() -> dict[str, dict]:
            runs = [self.subset(s, images) for s in specs]
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
                        "split_accuracies": [split.accuracy for split in r.result.splits],
                    }
            return out

        return self.cached(f"detect-{name}", fingerprint, compute)

    # -- reading the runs ----------------------------------------------------------------------

    def run(self, spec: RunSpec) -> Run:
        """The run folder of ``spec``, read and validated once after its attack."""
        if spec.key not in self._runs:
            self._runs[spec.key] = read_run(self.run_path(spec), require_items=False)
        return self._runs[spec.key]

    def items(self, spec: RunSpec, images: int) -> list[RunItem]:
        """The run's attacked images among the first ``images`` inputs."""
        keep = self.names(images)
        return [it for it in self.run(spec).items if it.image in keep]

    def subset(self, spec: RunSpec, images: int) -> Run:
        """The run restricted to its attacked images among the first ``images`` inputs."""
        return self.run(spec).subset({it.stem for it in self.items(spec, images)})

    def inputs(self) -> list[tuple[str, str]]:
        """(image, status) of the main image set, from the I-FGM delta-4 run."""
        return list(self.run(RunSpec("ifgm", 4.0)).statuses.items())

    def delta_eff(self, spec: RunSpec, images: int | None = None) -> float:
        """Mean delta_eff of a run's saved images (over the first ``images`` inputs)."""
        return self.subset(spec, images or self.p.images).mean_delta_eff

    def column_mean(self, spec: RunSpec, images: int, column: str) -> float:
        """Mean of a per-image number (``superpixels``, ``mask_fraction``) of a run's items.

        Over the run's attacked images among the first ``images`` inputs.
        """
        values = [getattr(it, column) for it in self.items(spec, images)]
        values = [v for v in values if v is not None]
        return float(np.mean(values)) if values else math.nan
