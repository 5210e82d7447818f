"""Attacking one batch: the clean pass, the attention map, the attack, the saved result.

The clean pass (:mod:`~sai_attack.pipeline.clean`: predictions, attention maps, targets, from
the cache when it holds them) runs once per batch; the attack then runs at the run's delta, or
at the deltas of a :class:`~sai_attack.pipeline.mindelta.MinDelta` search. Success is measured
on the 8-bit pixels that the PNGs hold, and so are the distortion metrics of
:mod:`sai_attack.metrics`.
The perceptual ones (SSIM, CIEDE2000) cost tens of milliseconds of CPU per image: on a GPU run
they are computed in threads while the next batch is attacked (its rows are written one batch
later anyway); on a CPU run, whose cores the model keeps busy, in line.

The first labelled images of a run also check that the model is fed what it expects
(:mod:`~sai_attack.pipeline.sanity`: clean accuracy, input normalisation, label offset).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np
import torch

from sai_attack import data
from sai_attack import superpixels as sp
from sai_attack.attacks import Attack, AttackResult
from sai_attack.metrics import image_metrics, perceptual_metrics
from sai_attack.models import ImageClassifier
from sai_attack.pipeline.clean import CleanBatch, CleanPass
from sai_attack.pipeline.loading import Item
from sai_attack.pipeline.mindelta import Attempt, MinDelta, combine
from sai_attack.pipeline.sanity import CHECK_IMAGES, check_first_labelled
from sai_attack.pipeline.stores import PredictionStore
from sai_attack.runs import RESULT_COLUMNS, STATUS_OK, RunLayout, RunWriter, format_cell
from sai_attack.runs.writer import template_bytes
from sai_attack.runtime import image_seed

logger = logging.getLogger(__name__)


def skip_row(item: Item, label: int | None) -> dict:
    """The ``results.csv`` row of an input that could not be attacked."""
    reason = (item.error or "unknown error").replace("\n", " ")
    logger.warning("skipped %r: %s", data.printable_name(item.name), reason)
    row = dict.fromkeys(RESULT_COLUMNS, "")
    row.update(image=data.printable_name(item.name), status=f"skipped: {reason}")
    if label is not None:
        row["label"] = label
    return row


def _fill_perceptual(row: dict, clean: np.ndarray, adv: np.ndarray) -> None:
    m = perceptual_metrics(clean, adv)
    row.update(
        ssim=format_cell(m["ssim"], 6),  # 6 digits: SSIM of small perturbations is 0.99...
        ciede2000=format_cell(m["ciede2000"]),
        ciede2000_p95=format_cell(m["ciede2000_p95"]),
    )


def segments_on_device(config: Any, device: torch.device) -> bool:
    """Whether the templates are made on the attack device, a batch at a time.

    So it is for a ``batched`` algorithm (``slic-torch``) on a GPU; on the CPU the loader
    workers overlap segmentation with the attack image by image, which is faster.
    """
    return config.uses_superpixels and device.type != "cpu" and config.superpixel_config().batched


class BatchAttacker:
    """Attacks batches of loaded items and hands their files to the run's writer.

    Used inside ``with``, which holds the threads of the perceptual metrics (GPU runs).

    Args:
        model: The white-box model, on ``device``.
        attack: The attack.
        config: The run's :class:`~sai_attack.pipeline.config.AttackConfig`.
        writer: The run folder's writer (open, inside ``with``).
        labels: True classes by input name.
        targets: Target classes by input name (targeted runs).
        device: Where the attack runs.
        save_templates: Whether templates are written.
        store: The cache of clean logits and attention maps, or None.
        search: A search of each image's smallest successful delta instead of one attack.
    """

    def __init__(
        self,
        model: ImageClassifier,
        attack: Attack,
        config: Any,
        writer: RunWriter,
        labels: dict[str, int],
        targets: dict[str, int],
        device: torch.device,
        save_templates: bool,
        store: PredictionStore | None = None,
        search: MinDelta | None = None,
    ) -> None:
        self.model, self.attack, self.config, self.writer = model, attack, config, writer
        self.labels, self.device = labels, device
        self.save_templates = save_templates
        self.clean_pass = CleanPass(model, config, labels, targets, device, store)
        self.search = search
        self._attacks = {config.delta: attack}
        self._fallback_config = config.fallback()
        self._fallbacks: dict[float, Attack] = {}
        self._pool: ThreadPoolExecutor | None = None
        self._check: list[tuple[torch.Tensor, list[int], list[int]]] | None = []

    def metric_threads(self) -> int:
        """Threads for SSIM and CIEDE2000: none on a CPU run, half the cores beside a GPU."""
        if self.device.type == "cpu":  # the model keeps the cores busy: compute in line
            return 0
        return max(1, (os.cpu_count() or 2) // 2)

    def __enter__(self) -> BatchAttacker:
        threads = self.metric_threads()
        self._pool = ThreadPoolExecutor(max_workers=threads) if threads else None
        return self

    def __exit__(self, *exc: object) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:  # waits for the metrics still running
            pool.shutdown(wait=True)

    def _check_clean_accuracy(
        self, x: torch.Tensor, clean_pred: torch.Tensor, true: list[int | None]
    ) -> None:
        """Once :data:`~sai_attack.pipeline.sanity.CHECK_IMAGES` labelled images are in, check."""
        if self._check is None:
            return
        index = [i for i, t in enumerate(true) if t is not None]
        if index:
            pred = clean_pred.tolist()
            self._check.append(
                (x[index], [pred[i] for i in index], [true[i] for i in index])  # type: ignore[misc]
            )
        if sum(len(p) for _, p, _ in self._check) < CHECK_IMAGES:
            return
        seen, self._check = self._check, None
        check_first_labelled(
            self.model,
            torch.cat([xs for xs, _, _ in seen]),
            [p for _, ps, _ in seen for p in ps],
            [t for _, _, ts in seen for t in ts],
        )

    def __call__(
        self, items: list[Item], timings: dict[str, float]
    ) -> tuple[dict[str, dict], list[Future]]:
        """Attack ``items`` (all loaded); returns their rows by name and the pending writes."""
        cfg = self.config
        x = data.to_tensor([it.image for it in items]).to(self.device)  # (B, 3, S, S)
        t0 = time.perf_counter()
        clean = self.clean_pass(x, items)
        timings["clean_forward"] += time.perf_counter() - t0
        self._check_clean_accuracy(x, clean.pred, clean.true)
        superpixels = None
        if segments_on_device(cfg, self.device):  # the loaders left the templates to us
            t0 = time.perf_counter()
            superpixels = sp.segment_batch(x, cfg.superpixel_config(), self.device)
            timings["superpixels"] += time.perf_counter() - t0
        elif cfg.uses_superpixels:
            superpixels = sp.stack_labels([it.superpixels for it in items]).to(self.device)
        seeds = [image_seed(cfg.seed, it.name) for it in items]
        min_delta: list[float | None] | None = None
        if self.search is None:
            tried = self._attempt(cfg.delta, x, clean, superpixels, seeds, timings)
            deltas = [cfg.delta] * len(items)
        else:

            def attempt(delta: float, index: list[int]) -> Attempt:
                sub = None if superpixels is None else superpixels[index]
                return self._attempt(delta, x[index], clean.select(index), sub,
                                     [seeds[i] for i in index], timings)  # fmt: skip

            tried, deltas, min_delta = self.search.run(len(items), attempt)
        result, adv_u8, adv_pred = tried.result, tried.adv_u8, tried.adv_pred
        rows: dict[str, dict] = {}
        good: list[int] = []
        mask_frac = result.mask.flatten(1).mean(dim=1).tolist() if result.mask is not None else None
        for i, it in enumerate(items):
            m = image_metrics(it.image, adv_u8[i])
            problem = self._problem(clean.finite[i], tried.finite[i], m, deltas[i])
            if problem is not None:
                it.error = problem
                rows[it.name] = skip_row(it, clean.true[i])
                continue
            good.append(i)
            true, targets = clean.true[i], clean.targets
            rows[it.name] = {
                "image": data.printable_name(it.name),
                "output": RunLayout.output_name(it.stem),
                "label": "" if true is None else true,
                "target": int(targets[i]) if targets is not None else "",
                "clean_pred": int(clean.pred[i]),
                "adv_pred": adv_pred[i],
                "success": int(tried.success[i]),
                "l2": format_cell(m["l2"]),
                "delta_eff": format_cell(m["delta_eff"]),
                "linf": format_cell(m["linf"], 0),
                "psnr": format_cell(m["psnr"], 3),
                "superpixels": int(it.superpixels.max()) + 1 if it.superpixels is not None else "",
                "mask_fraction": format_cell(mask_frac[i]) if mask_frac is not None else "1.0000",
                "status": STATUS_OK,
                "sha256": it.sha256,
                "min_delta": "" if min_delta is None else format_cell(min_delta[i], 6),
                "fallback": "" if tried.fallback is None else int(tried.fallback[i]),
            }
        t0 = time.perf_counter()
        futures = self._write([items[i] for i in good], adv_u8[good], result, good)
        timings["encode"] += time.perf_counter() - t0
        t0 = time.perf_counter()
        futures += self._perceptual(
            [(rows[items[i].name], items[i].image, adv_u8[i]) for i in good]
        )
        timings["evaluate"] += time.perf_counter() - t0
        return rows, futures

    def _attack_for(self, delta: float, fallback: bool = False) -> Attack:
        """The run's attack (or its fallback attack) at ``delta``, built once per delta."""
        built, config = (
            (self._fallbacks, self._fallback_config) if fallback else (self._attacks, self.config)
        )
        if delta not in built:
            attack = dataclasses.replace(config, delta=delta).build_attack(self.model)
            attack.autocast = self.attack.autocast
            built[delta] = attack
        return built[delta]

    def _attempt(
        self,
        delta: float,
        x: torch.Tensor,
        clean: CleanBatch,
        superpixels: torch.Tensor | None,
        seeds: list[int],
        timings: dict[str, float],
        fallback: bool = False,
    ) -> Attempt:
        """Attack ``x`` at ``delta``, measure the result on its 8-bit pixels, and re-attack misses.

        The run's fallback attack (``fallback_loss``) then attacks only the images that resist
        (finite output, goal not met), with their own seeds, so a fooled image's result never
        depends on the others; its image is kept where it succeeds. ``fallback``: this is that
        re-attack.
        """
        t0 = time.perf_counter()
        result = self._attack_for(delta, fallback).run(
            x, clean.attacked, clean.targets, superpixels=superpixels,
            attention=clean.attention, seeds=seeds,
        )  # fmt: skip
        timings["attack"] += time.perf_counter() - t0

        t0 = time.perf_counter()
        adv_u8 = data.to_uint8(result.adv)  # (B, H, W, 3): exactly the pixels the PNGs hold
        saved = data.to_tensor(adv_u8).to(self.device)
        finite_adv = torch.isfinite(result.adv.flatten(1)).all(dim=1).tolist()
        timings["encode"] += time.perf_counter() - t0

        t0 = time.perf_counter()
        with torch.no_grad():
            # PNG is lossless, so predicting on the 8-bit array is predicting on the saved file.
            adv_logits = self.model(saved)
        adv_pred = adv_logits.argmax(dim=1).tolist()
        finite_pred = torch.isfinite(adv_logits).all(dim=1).tolist()
        finite = [a and p for a, p in zip(finite_adv, finite_pred, strict=True)]
        goal = clean.targets if self.config.targeted else clean.attacked
        hits = [p == int(g) for p, g in zip(adv_pred, goal.tolist(), strict=True)]
        success = [f and (h if self.config.targeted else not h)
                   for f, h in zip(finite, hits, strict=True)]  # fmt: skip
        timings["evaluate"] += time.perf_counter() - t0
        attempt = Attempt(result, adv_u8, adv_pred, finite, success)
        if fallback or self._fallback_config is None:
            return attempt
        attempt.fallback = [False] * len(seeds)
        missed = [i for i, (f, ok) in enumerate(zip(finite, success, strict=True)) if f and not ok]
        if not missed:
            return attempt
        sub = None if superpixels is None else superpixels[missed]
        again = self._attempt(delta, x[missed], clean.select(missed), sub,
                              [seeds[i] for i in missed], timings, fallback=True)  # fmt: skip
        again.fallback = [True] * len(missed)
        where = dict(zip(missed, range(len(missed)), strict=True))
        chosen = [(again, where[i]) if i in where and again.success[where[i]] else (attempt, i)
                  for i in range(len(seeds))]  # fmt: skip
        logger.debug("fallback attack fooled %d of %d resisting images",
                     sum(again.success), len(missed))  # fmt: skip
        return combine(chosen)

    def _perceptual(self, jobs: list[tuple[dict, np.ndarray, np.ndarray]]) -> list[Future]:
        """Fill the SSIM and CIEDE2000 cells of rows: in threads when there is a pool.

        The run writes a batch's rows only after its futures are done, so a row is never
        written without them.
        """
        if self._pool is None:
            for job in jobs:
                _fill_perceptual(*job)
            return []
        return [self._pool.submit(_fill_perceptual, *job) for job in jobs]

    def _problem(
        self, finite_clean: bool, finite_adv: bool, metrics: dict[str, float], delta: float
    ) -> str | None:
        """Why an attacked image must not count (never reported as a success), or None."""
        if not finite_clean:
            return "the model's output on the clean image is not finite (NaN or inf logits)"
        if not finite_adv:
            return "the attack produced non-finite values (NaN or inf gradients or logits)"
        # The saved pair's metrics, in the run's norm. Rounding to 8 bits moves each value by at
        # most 0.5, so delta_eff (L2) or linf (L-infinity) <= delta + 0.5.
        measure = "linf" if self.config.norm == "linf" else "delta_eff"
        value, limit = metrics[measure], delta + 0.5
        if not value <= limit + 1e-9:
            return (
                f"the saved perturbation breaks the budget: {measure} {value:.3f} > delta "
                f"{delta:g} + 0.5 rounding (norm {self.config.norm})"
            )
        return None

    def _write(
        self, items: list[Item], adv_u8, result: AttackResult, index: list[int]
    ) -> list[Future]:
        futures: list[Future] = []
        for it, adv in zip(items, adv_u8, strict=True):
            futures += self.writer.write_image_pair(it.stem, adv, it.image)
        if self.save_templates and result.superpixels is not None:
            for i, it in zip(index, items, strict=True):
                mask = None if result.mask is None else result.mask[i, 0].cpu().numpy()
                att = None if result.attention is None else result.attention[i, 0].cpu().numpy()
                payload = template_bytes(result.superpixels[i].cpu().numpy(), mask, att)
                futures.append(self.writer.write_template(it.stem, payload))
        return futures
