"""Attacking one batch: the clean pass, the attention map, the attack, the saved result.

The clean prediction and (for CAM) the attention map come from one forward pass; which
attention method runs is decided by :func:`sai_attack.attention.resolve_method` alone, so
``attention="gradcam"`` is honoured on models that support CAM too. Success is measured on the
8-bit pixels that the PNGs hold.
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import Future
from typing import Any

import torch

from sai_attack import data
from sai_attack import superpixels as sp
from sai_attack.attacks import Attack, AttackResult
from sai_attack.attention import cam_from_features, resolve_method
from sai_attack.metrics import image_metrics
from sai_attack.models import ImageClassifier
from sai_attack.pipeline.loading import Item
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


def attention_for(config: Any, model: torch.nn.Module) -> str | None:
    """The attention method a run uses (``cam``/``gradcam``), None when it uses none."""
    if not (config.uses_superpixels and config.phi > 0):
        return None
    return resolve_method(config.attention, model)


class BatchAttacker:
    """Attacks batches of loaded items and hands their files to the run's writer.

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

    def _clean_pass(self, x: torch.Tensor, items: list[Item]):
        """Clean predictions, attacked classes and (for CAM) attention maps of a batch."""
        with torch.no_grad():
            if self.attention_method == "cam":
                logits, feats = self.model.forward_features(x)
            else:  # Grad-CAM needs gradients: the attack computes it itself
                logits, feats = self.model(x), None
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
        return clean_pred, true, attacked, attention

    def __call__(
        self, items: list[Item], timings: dict[str, float]
    ) -> tuple[dict[str, dict], list[Future]]:
        """Attack ``items`` (all loaded); returns their rows by name and the pending writes."""
        cfg = self.config
        x = data.to_tensor([it.image for it in items]).to(self.device)  # (B, 3, S, S)
        t0 = time.perf_counter()
        clean_pred, true, attacked, attention = self._clean_pass(x, items)
        timings["clean_forward"] += time.perf_counter() - t0

        t0 = time.perf_counter()
        targets = (
            torch.tensor([self.targets[it.name] for it in items], device=self.device)
            if cfg.targeted
            else None
        )
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
        futures = self._write(items, adv_u8, result)
        timings["encode"] += time.perf_counter() - t0

        t0 = time.perf_counter()
        with torch.no_grad():
            # PNG is lossless, so predicting on the 8-bit array is predicting on the saved file.
            adv_pred = self.model(saved).argmax(dim=1).tolist()
        timings["evaluate"] += time.perf_counter() - t0

        rows: dict[str, dict] = {}
        mask_frac = result.mask.flatten(1).mean(dim=1).tolist() if result.mask is not None else None
        for i, it in enumerate(items):
            a = int(attacked[i])
            success = adv_pred[i] == targets[i].item() if cfg.targeted else adv_pred[i] != a
            m = image_metrics(it.image, adv_u8[i])
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
            }
        return rows, futures

    def _write(self, items: list[Item], adv_u8, result: AttackResult) -> list[Future]:
        futures: list[Future] = []
        for it, adv in zip(items, adv_u8, strict=True):
            futures += self.writer.write_image_pair(it.stem, adv, it.image)
        if self.save_templates and result.superpixels is not None:
            for i, it in enumerate(items):
                mask = None if result.mask is None else result.mask[i, 0].cpu().numpy()
                att = None if result.attention is None else result.attention[i, 0].cpu().numpy()
                payload = template_bytes(result.superpixels[i].cpu().numpy(), mask, att)
                futures.append(self.writer.write_template(it.stem, payload))
        return futures
