"""``AttackRun``: attack an image or a folder into a run folder, resumably and in batches.

Images stream through in batches: decoding, resizing and superpixel segmentation run in
DataLoader worker processes, :class:`~sai_attack.pipeline.batch.BatchAttacker` attacks each
batch, and the :class:`~sai_attack.runs.RunWriter` writes the PNGs and appends the rows of a
batch once its files are on disk. Under ``torchrun`` every rank attacks its share; rank 0 holds
the lock, merges the rows and writes ``summary.json``.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from sai_attack import data, parallel
from sai_attack.attacks import Attack
from sai_attack.models import ImageClassifier, load_model, use_memory_format
from sai_attack.pipeline.batch import BatchAttacker, segments_on_device, skip_row
from sai_attack.pipeline.cache import EntryCache, model_identity
from sai_attack.pipeline.clean import attention_for
from sai_attack.pipeline.config import RunOptions
from sai_attack.pipeline.loading import InputDataset, Item, input_sha256, worker_batches
from sai_attack.pipeline.mindelta import MinDelta
from sai_attack.pipeline.stores import (
    PredictionStore,
    TemplateSource,
    counts_text,
    merge_counts,
    run_counts,
)
from sai_attack.pipeline.summary import successes_over_all, summary_record
from sai_attack.pipeline.targets import FROM_FILE, check_target_mode, check_target_source
from sai_attack.runs import STATUS_OK, RunLayout, RunWriter
from sai_attack.runtime import (
    EXIT_OK,
    EXIT_SKIPPED,
    RunError,
    resolve_device,
    retain_heap,
    trim_heap,
)

logger = logging.getLogger(__name__)

STAGES = ("load", "superpixels", "wait", "clean_forward", "attack", "encode", "evaluate")
"""Where a run's time goes (``summary.json``, ``bench``): decoding and resizing and superpixel
segmentation or its cache lookup (in the workers), time the main loop waited for the workers,
the clean prediction and the attention map (or their cache lookup), the attack iterations,
quantising and PNG encoding, prediction on the saved images
and their distortion metrics (those computed in line; on a GPU run SSIM and CIEDE2000 run in
threads beside the next batch)."""


@dataclass
class RunSummary:
    """What a run did; also written to ``summary.json``."""

    out: Path
    total: int = 0
    processed: int = 0
    skipped: int = 0
    reused: int = 0
    mean_delta_eff: float = float("nan")
    correct: int = 0
    successes: int = 0
    success_rate: float = float("nan")
    attacked: int = 0
    successes_all: int = 0
    success_rate_all: float = float("nan")
    seconds: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)
    cache: dict[str, dict[str, int]] | None = None
    min_delta: dict[str, Any] | None = None
    rank: int = 0
    world_size: int = 1

    @property
    def exit_code(self) -> int:
        """0 when every input was processed, 3 when some were skipped.

        Under torchrun every rank exits 0 (torchrun turns any other code into a failure of the
        whole job); skipped inputs are still listed in ``results.csv`` and on stderr.
        """
        if self.world_size > 1:
            return EXIT_OK
        return EXIT_SKIPPED if self.skipped else EXIT_OK


class AttackRun:
    """One attack run over an input (file or folder) into an output folder.

    Args:
        input_path: An image, or a folder of images (optionally with ``labels.csv``).
        out: The output folder.
        config: The attack parameters (:class:`~sai_attack.pipeline.config.AttackConfig`).
        options: Execution options.
        model: An already loaded model to use instead of ``config.model`` (Python API).
        min_delta: Search each image's smallest successful delta instead of attacking at
            ``config.delta`` (which becomes ``min_delta.high``); see
            :mod:`~sai_attack.pipeline.mindelta`.
    """

    def __init__(
        self,
        input_path: str | os.PathLike,
        out: str | os.PathLike,
        config: Any,
        options: RunOptions | None = None,
        model: ImageClassifier | None = None,
        min_delta: MinDelta | None = None,
    ) -> None:
        self.input_path = Path(input_path)
        self.out = Path(out)
        self.config = config if min_delta is None else replace(config, delta=min_delta.high)
        self.options = options or RunOptions()
        self.device = resolve_device(self.options.device)
        self._model = model
        self.min_delta = min_delta
        self._cache = EntryCache(self.options.cache_dir) if self.options.cache_dir else None
        self._store: PredictionStore | None = None

    def _check_output_folder(self, inputs: data.InputSet) -> None:
        """Refuse an output folder whose files could overwrite or mix with the inputs.

        The inputs are the files directly inside ``inputs.root`` (not below it), so a run
        folder inside the input folder cannot collide with them; one that is the input
        folder, holds it, or writes a subfolder that is the input folder can.
        """
        out = self.out.resolve()
        root = inputs.root.resolve()
        written = [out, *RunLayout(out).subfolders(templates=True)]
        if root in written or out in root.parents:
            raise RunError(
                f"output folder {str(self.out)!r} is, contains or writes into the input folder "
                f"{str(inputs.root)!r}; choose a folder outside it"
            )

    def image_size(self, model: ImageClassifier) -> int:
        """The attack resolution: the configured size, else the model's, else 224."""
        return self.config.image_size or model.input_size or 224

    def _record(self, model: ImageClassifier) -> dict:
        parameters = {**self.config.record(), "image_size": self.image_size(model)}
        record = {
            "method": self.config.method,
            "model": model.name,
            "parameters": parameters,
            "input": str(self.input_path),
        }
        if self.min_delta is not None:
            record["min_delta"] = self.min_delta.record()
        return record

    def run(self) -> RunSummary:
        """Execute the run; returns the summary (also written to ``summary.json``)."""
        started = time.perf_counter()
        check_target_mode(self.config)
        ctx = parallel.context(self.device)
        self.device = ctx.device(self.device)
        self.options.apply_determinism()
        retain_heap()  # the attack's passes reuse their activation pages within a batch
        layout = self.options.memory_format
        model = self._model or load_model(self.config.model, self.config.weights,
                                          memory_format=layout)  # fmt: skip
        model = model.to(self.device).eval()
        use_memory_format(model, layout, self.options.batch_size, self.image_size(model))
        attention_for(self.config, model)  # a bad attention choice fails before any work
        if self._cache is not None:
            self._store = PredictionStore(self._cache, model_identity(model, self.device))
        attack = self.config.build_attack(model)
        attack.autocast = self.options.amp_dtype(self.device)
        inputs = data.discover_inputs(self.input_path, self.options.labels)
        check_target_source(self.config, inputs.labels)
        self._check_output_folder(inputs)
        names = inputs.names[: self.options.limit] if self.options.limit else inputs.names
        writer = RunWriter(self.out, self.options.save_templates, self.device.type != "cpu")
        error = None
        if ctx.is_main:
            try:
                writer.open(self._record(model), inputs.names)
                self._forget_changed_inputs(writer, inputs, names)
            except RunError as exc:
                error = str(exc)
        error = ctx.broadcast(error)
        if error is not None:
            raise RunError(error)
        try:
            summary = self._loop_or_explain(model, attack, inputs, names, ctx, writer)
            shares = ctx.gather((summary.processed, summary.skipped, summary.timings,
                                 summary.cache))  # fmt: skip
            ctx.barrier()
            if ctx.is_main:
                summary.processed = sum(s[0] for s in shares)
                summary.skipped = sum(s[1] for s in shares)
                summary.timings = {k: sum(s[2][k] for s in shares) for k in summary.timings}
                summary.cache = merge_counts([s[3] for s in shares])
                writer.merge_parts(inputs.names)
                summary.seconds = time.perf_counter() - started
                self._finish(summary, writer, model, attack, inputs)
            ctx.barrier()
        finally:
            if ctx.is_main:
                writer.close()
        summary.seconds = time.perf_counter() - started
        return summary

    def _forget_changed_inputs(
        self, writer: RunWriter, inputs: data.InputSet, names: list[str]
    ) -> None:
        """Drop finished rows whose input file is not the one they were made from."""
        finished = writer.done()
        stale = set()
        for name in names:
            shown = data.printable_name(name)
            if shown in finished and data.is_plain_name(name):
                try:
                    same = finished[shown] == input_sha256(inputs.root / name)
                except (OSError, data.ImageLoadError):
                    same = False
                if not same:
                    stale.add(shown)
        if stale:
            logger.warning("%d finished image(s) have other input content now: redone", len(stale))
            writer.forget(stale)

    def _loop_or_explain(self, *args) -> RunSummary:
        try:
            return self._loop(*args)
        except OSError as exc:
            where = exc.filename or self.out
            raise RunError(
                f"cannot write {str(where)!r}: {exc.strerror or exc}; finished images are kept, "
                "re-run the same command to resume"
            ) from None

    def _problems(self, inputs: data.InputSet, todo: list[str]) -> dict[str, str]:
        """Inputs that cannot be attacked and why (no label, no target)."""
        if inputs.labels is None:
            return {}
        table = inputs.labels
        problems = {n: "no label for this image in the labels file" for n in todo
                    if n not in table.labels and n not in table.problems}  # fmt: skip
        problems.update(table.problems)
        if self.config.targeted and self.config.target_mode == FROM_FILE:
            for n in todo:
                if n in table.labels and n not in table.targets:
                    problems.setdefault(n, "no target class for this image (targeted attack)")
        return problems

    def _batches(self, inputs: data.InputSet, todo: list[str], size: int) -> Iterator[list[Item]]:
        templates = (
            TemplateSource(self.config.superpixel_config(), self._cache)
            if self.config.uses_superpixels and not segments_on_device(self.config, self.device)
            else None
        )
        dataset = InputDataset(
            inputs.root,
            todo,
            data.unique_stems(inputs.names),
            size,
            templates,
            self._problems(inputs, todo),
        )
        return worker_batches(dataset, self.options.batch_size, self.options.workers)

    def _loop(
        self,
        model: ImageClassifier,
        attack: Attack,
        inputs: data.InputSet,
        names: list[str],
        ctx: parallel.DistContext,
        writer: RunWriter,
    ) -> RunSummary:
        rows_path = writer.rows_path(ctx.rank, ctx.distributed)
        done = writer.done()
        pending_names = [n for n in names if data.printable_name(n) not in done]
        todo = ctx.shard(pending_names, self.options.batch_size)
        summary = RunSummary(out=self.out, total=len(names), reused=len(done), rank=ctx.rank,
                             world_size=ctx.world_size)  # fmt: skip
        timings = dict.fromkeys(STAGES, 0.0)
        labels = inputs.labels.labels if inputs.labels else {}
        attacker = BatchAttacker(
            model, attack, self.config, writer, labels,
            inputs.labels.targets if inputs.labels else {}, self.device,
            self.options.save_templates, self._store, self.min_delta,
        )  # fmt: skip
        templates: Counter = Counter()
        progress = self._progress(len(todo))
        pending: tuple[list[Future], list[dict]] | None = None
        try:
            with writer, attacker:
                t_wait = time.perf_counter()
                for batch in self._batches(inputs, todo, self.image_size(model)):
                    timings["wait"] += time.perf_counter() - t_wait
                    rows, futures = self._process(attacker, labels, batch, timings)
                    templates.update(it.template_lookup for it in batch if it.template_lookup)
                    if pending is not None:
                        writer.commit(rows_path, *pending)
                        trim_heap()
                    pending = (futures, rows)
                    summary.processed += sum(r["status"] == STATUS_OK for r in rows)
                    summary.skipped += sum(r["status"] != STATUS_OK for r in rows)
                    if progress is not None:
                        progress.update(len(batch))
                    t_wait = time.perf_counter()
                if pending is not None:
                    writer.commit(rows_path, *pending)
        finally:
            if progress is not None:
                progress.close()
        summary.timings = timings
        summary.cache = None if self._cache is None else run_counts(templates, self._store)
        return summary

    @staticmethod
    def _process(
        attacker: BatchAttacker, labels: dict[str, int], batch: list[Item], timings: dict
    ) -> tuple[list[dict], list[Future]]:
        good = [it for it in batch if it.error is None]
        rows = {it.name: skip_row(it, labels.get(it.name)) for it in batch if it.error is not None}
        futures: list[Future] = []
        for it in good:
            timings["load"] += it.seconds_load
            timings["superpixels"] += it.seconds_superpixels
        if good:
            attacked, futures = attacker(good, timings)
            rows.update(attacked)
        return [rows[it.name] for it in batch], futures

    def _progress(self, total: int):
        show = self.options.progress
        if show is None:
            show = sys.stderr.isatty()
        if not show or total == 0:
            return None
        from tqdm import tqdm

        return tqdm(total=total, unit="img", desc=self.config.method, file=sys.stderr)

    def _finish(self, summary: RunSummary, writer: RunWriter, model, attack, inputs) -> None:
        rows = writer.ok_rows()
        correct = [r for r in rows if r["label"] in ("", r["clean_pred"])]
        summary.correct = len(correct)
        summary.successes = sum(int(r["success"]) for r in correct)
        summary.success_rate = summary.successes / len(correct) if correct else float("nan")
        summary.successes_all, summary.attacked = successes_over_all(rows)
        summary.success_rate_all = summary.successes_all / len(rows) if rows else float("nan")
        deltas = [float(r["delta_eff"]) for r in rows if r["delta_eff"]]
        summary.mean_delta_eff = float(np.mean(deltas)) if deltas else float("nan")
        if summary.cache is not None:
            logger.info("cache %s: %s", self._cache.root if self._cache else "",
                        counts_text(summary.cache))  # fmt: skip
        record = self._record(model)
        written = summary_record(
            summary,
            record,
            attack,
            rows,
            inputs.labels is not None,
            str(self.device),
            attention_for(self.config, model),
        )
        summary.min_delta = written.get("min_delta")
        writer.write_summary(written)
