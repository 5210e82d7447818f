"""Attacking one batch: the clean pass, the attention map, the attack, the saved result.

The clean prediction and (for CAM) the attention map come from one forward pass; which
attention method runs is decided by :func:`sai_attack.attention.resolve_method` alone, so
``attention="gradcam"`` is honoured on models that support CAM too. Success is measured on the
8-bit pixels that the PNGs hold, and so are the distortion metrics of :mod:`sai_attack.metrics`.
The perceptual ones (SSIM, CIEDE2000) cost tens of milliseconds of CPU per image: on a GPU run
they are computed in threads while the next batch is attacked (its rows are written one batch
later anyway); on a CPU run, whose cores the model keeps busy, in line.

The first labelled images of a run also check the model's clean accuracy: below 50% the
success rates mean little, and a warning names the likely cause (label offset, normalisation).
"""

from __future__ import annotations

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
from sai_attack.attention import cam_from_features, resolve_method
from sai_attack.metrics import image_metrics, perceptual_metrics
from sai_attack.models import IMAGENET_MEAN, IMAGENET_STD, ImageClassifier
from sai_attack.pipeline.loading import Item
from sai_attack.pipeline.targets import choose_targets
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


CLEAN_CHECK_IMAGES = 8
"""Labelled images the clean-accuracy check waits for (within the first batch at the default
batch size); a run with fewer labelled images is too small to tell and is not checked."""
CLEAN_CHECK_ACCURACY = 0.5
"""Below this clean accuracy a run warns (a working ImageNet model gets 70-90%)."""
NORMALISATIONS = (
    ("ImageNet mean/std", IMAGENET_MEAN, IMAGENET_STD),
    ("[-1, 1] input (mean 0.5, std 0.5)", 0.5, 0.5),
    ("[0, 1] input (no normalisation)", 0.0, 1.0),
    ("[0, 255] input (mean 0, std 1/255)", 0.0, 1.0 / 255.0),
)
"""The input conventions the check tries when the accuracy is low, to name the one that fits."""
LABEL_OFFSETS = (
    (1, "the labels are 1-based (a 1001-class list with background at 0?)"),
    (-1, "the model has an extra class 0 (background) the labels lack"),
)
"""Label shifts the check tries: prediction = label - shift."""


def _hits(pred: list[int], labels: list[int], shift: int = 0) -> int:
    return sum(p == t - shift for p, t in zip(pred, labels, strict=True))


def _triplet(value: float | tuple[float, ...]) -> tuple[float, ...]:
    values = (value,) * 3 if isinstance(value, float) else tuple(value)
    return tuple(round(float(v), 4) for v in values)


def _normalisation_hint(model: ImageClassifier, x: torch.Tensor, labels: list[int]) -> str | None:
    """The input convention under which the network gets most of ``labels`` right, if any."""
    given = (_triplet(model.mean.flatten().tolist()), _triplet(model.std.flatten().tolist()))
    best, best_hits = None, 0
    with torch.no_grad():
        resized = model.preprocess(x) * model.std + model.mean  # [0, 1] at the network's size
        for text, mean, std in NORMALISATIONS:
            if (_triplet(mean), _triplet(std)) == given:
                continue  # the one the model has already
            m, s = (torch.tensor(_triplet(v), dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
                    for v in (mean, std))  # fmt: skip
            hits = _hits(model.net((resized - m) / s).argmax(dim=1).tolist(), labels)
            if hits > best_hits:
                best, best_hits = text, hits
    if best is None or best_hits < CLEAN_CHECK_ACCURACY * len(labels):
        return None
    mean, std = (", ".join(f"{v:.3g}" for v in values) for values in given)
    return (
        f"input normalisation: with {best} the network gets {best_hits}/{len(labels)} of "
        f"these images right; the model normalises with mean ({mean}), std ({std})"
    )


def clean_accuracy_problem(
    model: ImageClassifier, x: torch.Tensor, pred: list[int], labels: list[int]
) -> str | None:
    """Why a model's clean accuracy on labelled images is below 50%, or None when it is not.

    Args:
        model: The attacked model.
        x: The (B, 3, H, W) images in [0, 1].
        pred: The model's clean predictions of ``x``.
        labels: Their labels.

    Returns:
        A warning naming the likely cause: labels offset by one against the model's classes,
        an input convention (range, mean/std) under which the network does get them right, or
        labels outside the model's classes; else the things to check.
    """
    n, hits = len(labels), _hits(pred, labels)
    if n == 0 or hits >= CLEAN_CHECK_ACCURACY * n:
        return None
    with torch.no_grad():
        classes = int(model(x[:1]).shape[1])
    cause = None
    for shift, meaning in LABEL_OFFSETS:
        shifted = _hits(pred, labels, shift)
        if shifted >= CLEAN_CHECK_ACCURACY * n:
            cause = f"label offset: {shifted}/{n} predictions equal label {-shift:+d}; {meaning}"
            break
    if cause is None:
        cause = _normalisation_hint(model, x, labels)
    if cause is None and max(labels) >= classes:
        cause = f"labels up to {max(labels)} for a model with {classes} classes: another label set"
    if cause is None:
        cause = (
            "the input range or normalisation (the model takes RGB in [0, 1] and normalises it "
            "itself), or labels that are not the model's 0-based class indices"
        )
    return (
        f"clean accuracy on the first {n} labelled images is {hits / n:.0%} ({hits}/{n}), "
        f"below {CLEAN_CHECK_ACCURACY:.0%}: success rates will rest on few images. "
        f"Likely cause: {cause}"
    )


def _fill_perceptual(row: dict, clean: np.ndarray, adv: np.ndarray) -> None:
    m = perceptual_metrics(clean, adv)
    row.update(
        ssim=format_cell(m["ssim"], 6),  # 6 digits: SSIM of small perturbations is 0.99...
        ciede2000=format_cell(m["ciede2000"]),
        ciede2000_p95=format_cell(m["ciede2000_p95"]),
    )


def attention_for(config: Any, model: torch.nn.Module) -> str | None:
    """The attention method a run uses (``cam``/``gradcam``), None when it uses none."""
    if not config.uses_attention:
        return None
    return resolve_method(config.attention, model)


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
    ) -> None:
        self.model, self.attack, self.config, self.writer = model, attack, config, writer
        self.labels, self.targets, self.device = labels, targets, device
        self.save_templates = save_templates
        self.attention_method = attention_for(config, model)
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
        """Once :data:`CLEAN_CHECK_IMAGES` labelled images are in, warn if most are wrong."""
        if self._check is None:
            return
        index = [i for i, t in enumerate(true) if t is not None]
        if index:
            pred = clean_pred.tolist()
            self._check.append(
                (x[index], [pred[i] for i in index], [true[i] for i in index])  # type: ignore[misc]
            )
        if sum(len(p) for _, p, _ in self._check) < CLEAN_CHECK_IMAGES:
            return
        seen, self._check = self._check, None
        problem = clean_accuracy_problem(
            self.model,
            torch.cat([xs for xs, _, _ in seen]),
            [p for _, ps, _ in seen for p in ps],
            [t for _, _, ts in seen for t in ts],
        )
        if problem is not None:
            logger.warning("model %s: %s", self.model.name, problem)

    def _clean_pass(self, x: torch.Tensor, items: list[Item]):
        """Clean predictions, attacked classes, (for CAM) attention maps and targets of a batch."""
        with torch.no_grad():
            if self.attention_method == "cam":
                logits, feats = self.model.forward_features(x)
            else:  # Grad-CAM needs gradients: the attack computes it itself
                logits, feats = self.model(x), None
        self._finite_clean = torch.isfinite(logits).all(dim=1).tolist()
        clean_pred = logits.argmax(dim=1)
        true = [self.labels.get(it.name) for it in items]
        attacked = torch.tensor(
            [int(p) if (t is None or self.config.attack_prediction) else t
             for t, p in zip(true, clean_pred.tolist(), strict=True)],
            device=self.device,
        )  # fmt: skip
        attention = None
        if feats is not None:
            size = tuple(x.shape[-2:])
            attention = cam_from_features(feats, self.model.cam_weights(), attacked, size)
        targets = None
        if self.config.targeted:
            names = [it.name for it in items]
            reference = [
                p if t is None else t for t, p in zip(true, clean_pred.tolist(), strict=True)
            ]
            targets = choose_targets(self.config.target_mode, logits, reference, names,
                                     self.config.seed, self.targets)  # fmt: skip
        return clean_pred, true, attacked, attention, targets

    def __call__(
        self, items: list[Item], timings: dict[str, float]
    ) -> tuple[dict[str, dict], list[Future]]:
        """Attack ``items`` (all loaded); returns their rows by name and the pending writes."""
        cfg = self.config
        x = data.to_tensor([it.image for it in items]).to(self.device)  # (B, 3, S, S)
        t0 = time.perf_counter()
        clean_pred, true, attacked, attention, targets = self._clean_pass(x, items)
        timings["clean_forward"] += time.perf_counter() - t0
        self._check_clean_accuracy(x, clean_pred, true)

        t0 = time.perf_counter()
        superpixels = (
            sp.stack_labels([it.superpixels for it in items]).to(self.device)
            if cfg.uses_superpixels
            else None
        )
        result = self.attack.run(
            x,
            attacked,
            targets,
            superpixels=superpixels,
            attention=attention,
            seeds=[image_seed(cfg.seed, it.name) for it in items],
        )
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
        timings["evaluate"] += time.perf_counter() - t0

        rows: dict[str, dict] = {}
        good: list[int] = []
        mask_frac = result.mask.flatten(1).mean(dim=1).tolist() if result.mask is not None else None
        for i, it in enumerate(items):
            m = image_metrics(it.image, adv_u8[i])
            problem = self._problem(self._finite_clean[i], finite_adv[i] and finite_pred[i], m)
            if problem is not None:
                it.error = problem
                rows[it.name] = skip_row(it, true[i])
                continue
            good.append(i)
            a = int(attacked[i])
            success = adv_pred[i] == targets[i].item() if cfg.targeted else adv_pred[i] != a
            rows[it.name] = {
                "image": data.printable_name(it.name),
                "output": RunLayout.output_name(it.stem),
                "label": "" if true[i] is None else true[i],
                "target": int(targets[i]) if targets is not None else "",
                "clean_pred": int(clean_pred[i]),
                "adv_pred": adv_pred[i],
                "success": int(success),
                "l2": format_cell(m["l2"]),
                "delta_eff": format_cell(m["delta_eff"]),
                "linf": format_cell(m["linf"], 0),
                "psnr": format_cell(m["psnr"], 3),
                "superpixels": int(it.superpixels.max()) + 1 if it.superpixels is not None else "",
                "mask_fraction": format_cell(mask_frac[i]) if mask_frac is not None else "1.0000",
                "status": STATUS_OK,
                "sha256": it.sha256,
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
        self, finite_clean: bool, finite_adv: bool, metrics: dict[str, float]
    ) -> str | None:
        """Why an attacked image must not count (never reported as a success), or None."""
        if not finite_clean:
            return "the model's output on the clean image is not finite (NaN or inf logits)"
        if not finite_adv:
            return "the attack produced non-finite values (NaN or inf gradients or logits)"
        # The saved pair's metrics, in the run's norm. Rounding to 8 bits moves each value by at
        # most 0.5, so delta_eff (L2) or linf (L-infinity) <= delta + 0.5.
        measure = "linf" if self.config.norm == "linf" else "delta_eff"
        value, limit = metrics[measure], self.config.delta + 0.5
        if not value <= limit + 1e-9:
            return (
                f"the saved perturbation breaks the budget: {measure} {value:.3f} > delta "
                f"{self.config.delta:g} + 0.5 rounding (norm {self.config.norm})"
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
