"""The cache's two users: the loader's templates and the clean pass's predictions and maps.

:class:`TemplateSource` runs in the loader workers: it returns an image's template from the
cache or computes (and stores) it. :class:`PredictionStore` serves the clean pass in the main
process: the logits and attention maps of one model. Both count what they found, so that a run
can say (in its log and in ``summary.json``) how much it computed and how much it reused.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np

from sai_attack import superpixels as sp
from sai_attack.pipeline.cache import (
    ATTENTION,
    HIT,
    MISS,
    PREDICTIONS,
    REJECTED,
    TEMPLATES,
    EntryCache,
    check_logits,
    check_map,
    check_template,
    template_settings,
)

logger = logging.getLogger(__name__)


class TemplateSource:
    """Superpixel templates, computed or taken from a cache (picklable, for loader workers).

    Args:
        config: The superpixel settings.
        cache: Where templates are kept; None computes every template.
    """

    def __init__(self, config: sp.SuperpixelConfig, cache: EntryCache | None = None) -> None:
        self.config = config
        self.cache = cache
        self.settings = template_settings(config) if cache is not None else {}

    def __call__(self, image: np.ndarray, digest: str) -> tuple[np.ndarray, str]:
        """The template of a prepared image (digest: :func:`image_digest`), and its lookup."""
        if self.cache is None:
            return self.config(image), MISS
        key = self.cache.key(TEMPLATES, digest, self.settings)
        shape = image.shape[:2]
        labels, found = self.cache.get(TEMPLATES, key, lambda v: check_template(v, shape))
        if labels is not None:
            logger.debug("cache: template %s reused", key[:16])
            return labels, found
        labels = self.config(image)
        logger.debug("cache: template %s computed", key[:16])
        if int(labels.max(initial=0)) < 2**31:
            self.cache.put(TEMPLATES, key, labels.astype(np.int32))
        return labels, found


class PredictionStore:
    """The clean logits and attention maps of one model, kept in a cache.

    Args:
        cache: The cache.
        identity: The model's :func:`model_identity`.
    """

    def __init__(self, cache: EntryCache, identity: dict[str, Any]) -> None:
        self.cache = cache
        self.identity = identity
        self.counts: dict[str, Counter] = {PREDICTIONS: Counter(), ATTENTION: Counter()}

    def _key(self, kind: str, digest: str, extra: dict[str, Any]) -> str:
        return self.cache.key(kind, digest, {**self.identity, **extra})

    def logits(self, digests: Sequence[str], forward: str) -> np.ndarray | None:
        """(B, K) logits of every image, or None unless all are cached (with one K).

        ``forward`` names the pass that computes them (``features`` for the one that also gives
        CAM features, ``plain``): the two may differ in the last bits, so each has its entries.
        The lookup stops at the first image without a valid entry: the batch is computed again.
        """
        rows = []
        for digest in digests:
            key = self._key(PREDICTIONS, digest, {"forward": forward})
            value, found = self.cache.get(PREDICTIONS, key, check_logits)
            self.counts[PREDICTIONS][REJECTED] += found == REJECTED
            if value is None:
                return None
            rows.append(value)
        return np.stack(rows) if len({(*r.shape, r.dtype) for r in rows}) == 1 else None

    def attention(
        self, digests: Sequence[str], method: str, classes: Sequence[int], shape: tuple[int, int]
    ) -> np.ndarray | None:
        """(B, H, W) attention maps of ``classes``, or None unless all are cached."""
        maps = []
        for digest, cls in zip(digests, classes, strict=True):
            key = self._key(ATTENTION, digest, {"method": method, "class": int(cls)})
            value, found = self.cache.get(ATTENTION, key, lambda v: check_map(v, shape))
            self.counts[ATTENTION][REJECTED] += found == REJECTED
            if value is None:
                return None
            maps.append(value)
        return np.stack(maps) if len({m.dtype for m in maps}) == 1 else None

    def store(
        self,
        digests: Sequence[str],
        forward: str,
        logits: np.ndarray,
        method: str | None,
        classes: Sequence[int],
        maps: np.ndarray | None,
    ) -> None:
        """Keep computed logits (B, K) and maps (B, H, W); values that are not finite are not."""
        for i, digest in enumerate(digests):
            if np.isfinite(logits[i]).all():
                key = self._key(PREDICTIONS, digest, {"forward": forward})
                self.cache.put(PREDICTIONS, key, logits[i])
            if maps is not None and np.isfinite(maps[i]).all():
                key = self._key(ATTENTION, digest, {"method": method, "class": int(classes[i])})
                self.cache.put(ATTENTION, key, maps[i])


# -- what a run's cache saved -------------------------------------------------------------------

COUNTS = ("computed", "reused", "rejected")
"""What ``summary.json``'s ``cache`` counts per kind: entries computed (rejected ones included),
reused, and rejected (found unusable, recomputed)."""

Counts = dict[str, dict[str, int]]


def run_counts(templates: Counter, store: PredictionStore | None) -> Counts:
    """The counts of a run: its items' template lookups and its clean pass's store."""
    counts = {TEMPLATES: {"computed": sum(templates.values()) - templates[HIT],
                          "reused": templates[HIT], "rejected": templates[REJECTED]}}  # fmt: skip
    if store is not None:
        counts.update({kind: {k: c[k] for k in COUNTS} for kind, c in store.counts.items()})
    return counts


def merge_counts(shares: Sequence[Counts | None]) -> Counts | None:
    """The counts of all ranks of a run, summed (None without a cache)."""
    merged: Counts = {}
    for share in shares:
        for kind, counts in (share or {}).items():
            into = merged.setdefault(kind, dict.fromkeys(COUNTS, 0))
            for k in COUNTS:
                into[k] += counts.get(k, 0)
    return merged if any(s is not None for s in shares) else None


def counts_text(counts: Counts) -> str:
    """The counts in words, for the log: ``templates 0 computed, 16 reused, 0 rejected; ...``."""
    return "; ".join(
        f"{kind} {c['computed']} computed, {c['reused']} reused, {c['rejected']} rejected"
        for kind, c in counts.items()
    )
