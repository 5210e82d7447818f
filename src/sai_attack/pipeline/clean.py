"""The clean pass of a batch: predictions, attacked classes, attention maps and targets.

The clean prediction and (for CAM) the attention map come from one forward pass; Grad-CAM is
computed here too, for the attacked classes, so that every attack gets its attention map
from this pass and the map can be cached. Which attention method runs is decided by
:func:`sai_attack.attention.resolve_method` alone, so ``attention="gradcam"`` is honoured on
models that support CAM too. With a :class:`~sai_attack.pipeline.stores.PredictionStore`, a
batch whose logits and maps are all cached skips the model; any entry missing and the whole
batch is computed as without a cache (so its numbers are those of an uncached run) and stored.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from sai_attack.attention import attention_map, cam_from_features, resolve_method
from sai_attack.models import ImageClassifier
from sai_attack.pipeline.loading import Item
from sai_attack.pipeline.stores import ATTENTION, PREDICTIONS, PredictionStore
from sai_attack.pipeline.targets import choose_targets


def attention_for(config: Any, model: torch.nn.Module) -> str | None:
    """The attention method a run uses (``cam``/``gradcam``), None when it uses none."""
    if not config.uses_attention:
        return None
    return resolve_method(config.attention, model)


def _rows(t: torch.Tensor | None, rows: torch.Tensor) -> torch.Tensor | None:
    return None if t is None else t[rows]


@dataclass
class CleanBatch:
    """What the clean pass found for a batch.

    Attributes:
        logits: (B, K) clean logits.
        pred: (B,) clean predictions.
        true: The label of each image, None without one.
        attacked: (B,) the classes attacked (the label, else the clean prediction).
        attention: (B, 1, H, W) attention maps of the attacked classes, None without attention.
        targets: (B,) target classes of a targeted run, else None.
        finite: Whether each image's clean logits are finite.
    """

    logits: torch.Tensor
    pred: torch.Tensor
    true: list[int | None]
    attacked: torch.Tensor
    attention: torch.Tensor | None
    targets: torch.Tensor | None
    finite: list[bool]

    def select(self, index: list[int]) -> CleanBatch:
        """The clean pass of the images at ``index`` (in that order)."""
        rows = torch.tensor(index, dtype=torch.long, device=self.logits.device)
        return CleanBatch(
            self.logits[rows], self.pred[rows], [self.true[i] for i in index],
            self.attacked[rows], _rows(self.attention, rows), _rows(self.targets, rows),
            [self.finite[i] for i in index],
        )  # fmt: skip


class CleanPass:
    """Computes (or takes from the cache) the clean pass of batches.

    Args:
        model: The white-box model, on ``device``.
        config: The run's :class:`~sai_attack.pipeline.config.AttackConfig`.
        labels: True classes by input name.
        targets: Target classes by input name (targeted runs, ``target_mode`` labels).
        device: Where the model runs.
        store: The cache of logits and attention maps, or None.
    """

    def __init__(
        self,
        model: ImageClassifier,
        config: Any,
        labels: dict[str, int],
        targets: dict[str, int],
        device: torch.device,
        store: PredictionStore | None = None,
    ) -> None:
        self.model, self.config, self.labels, self.targets = model, config, labels, targets
        self.device, self.store = device, store
        self.method = attention_for(config, model)
        self.forward = "features" if self.method == "cam" else "plain"  # which pass gives logits

    def _attacked(self, true: list[int | None], pred: torch.Tensor) -> torch.Tensor:
        return torch.tensor(
            [int(p) if (t is None or self.config.attack_prediction) else t
             for t, p in zip(true, pred.tolist(), strict=True)],
            device=self.device,
        )  # fmt: skip

    def _computed(self, x: torch.Tensor, true: list[int | None]):
        with torch.no_grad():
            if self.method == "cam":
                logits, feats = self.model.forward_features(x)
            else:
                logits, feats = self.model(x), None
        attacked = self._attacked(true, logits.argmax(dim=1))
        attention = None
        if self.method == "cam":
            size = tuple(x.shape[-2:])
            attention = cam_from_features(feats, self.model.cam_weights(), attacked, size)
        elif self.method == "gradcam":  # needs gradients: not inside no_grad
            attention = attention_map(self.model, x, attacked, method="gradcam")
        return logits, attacked, attention

    def _cached(self, x: torch.Tensor, items: list[Item], true: list[int | None]):
        """The batch's logits, attacked classes and maps from the cache, or None."""
        digests = [it.digest for it in items]
        if self.store is None or not all(digests):
            return None
        rows = self.store.logits(digests, self.forward)
        if rows is None:
            return None
        logits = torch.from_numpy(rows).to(self.device)
        attacked = self._attacked(true, logits.argmax(dim=1))
        attention = None
        if self.method is not None:
            maps = self.store.attention(digests, self.method, attacked.tolist(),
                                        tuple(x.shape[-2:]))  # fmt: skip
            if maps is None:
                return None
            attention = torch.from_numpy(maps).to(self.device).unsqueeze(1)  # (B, 1, H, W)
        return logits, attacked, attention

    def __call__(self, x: torch.Tensor, items: list[Item]) -> CleanBatch:
        """The clean pass of the batch ``x`` (B, 3, H, W) of ``items``."""
        true = [self.labels.get(it.name) for it in items]
        found = self._cached(x, items, true)
        if found is None:
            logits, attacked, attention = self._computed(x, true)
            self._count("computed", len(items))
            if self.store is not None and all(it.digest for it in items):
                maps = None if attention is None else attention[:, 0].detach().cpu().numpy()
                self.store.store([it.digest for it in items], self.forward,
                                 logits.detach().cpu().numpy(), self.method, attacked.tolist(),
                                 maps)  # fmt: skip
        else:
            logits, attacked, attention = found
            self._count("reused", len(items))
        pred = logits.argmax(dim=1)
        targets = None
        if self.config.targeted:
            reference = [p if t is None else t for t, p in zip(true, pred.tolist(), strict=True)]
            targets = choose_targets(self.config.target_mode, logits, reference,
                                     [it.name for it in items], self.config.seed,
                                     self.targets)  # fmt: skip
        finite = torch.isfinite(logits).all(dim=1).tolist()
        return CleanBatch(logits, pred, true, attacked, attention, targets, finite)

    def _count(self, what: str, n: int) -> None:
        if self.store is not None:
            self.store.counts[PREDICTIONS][what] += n
            if self.method is not None:
                self.store.counts[ATTENTION][what] += n
