"""Loading the inputs: decoding, resizing and segmentation, in DataLoader worker processes."""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np
from torch.utils.data import DataLoader, Dataset

from sai_attack import data
from sai_attack.pipeline.cache import image_digest
from sai_attack.pipeline.stores import TemplateSource
from sai_attack.runtime import die_with_parent, trim_heap

T = TypeVar("T")


@dataclass
class Item:
    """One input image, loaded and prepared, or the reason it could not be."""

    name: str
    stem: str
    image: np.ndarray | None = None  # (S, S, 3) uint8
    superpixels: np.ndarray | None = None  # (S, S) int64
    error: str | None = None
    seconds_load: float = 0.0
    seconds_superpixels: float = 0.0
    sha256: str = ""  # of the input file, so that a resumed run knows it is the same input
    digest: str = ""  # of the prepared pixels: the key of the template cache's entries
    template_lookup: str = ""  # what the template cache found (cache.HIT, MISS or REJECTED)


def input_sha256(path: Path) -> str:
    """The SHA-256 (hex) of an input image file, read with the data layer's checks.

    Raises:
        ImageLoadError: The file is not a regular file, is too large, or not an image.
    """
    return hashlib.sha256(data.read_image_file(path)).hexdigest()


class InputDataset(Dataset):
    """Loads, resizes/crops and segments images; errors become items with a reason.

    ``superpixels`` computes each template or takes it from the template cache.
    """

    def __init__(
        self,
        root: Path,
        names: list[str],
        stems: dict[str, str],
        size: int,
        superpixels: TemplateSource | None,
        problems: dict[str, str] | None = None,
    ) -> None:
        self.root, self.names, self.stems, self.size = root, names, stems, size
        self.superpixels = superpixels
        self.problems = problems or {}

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, index: int) -> Item:
        name = self.names[index]
        item = Item(name=name, stem=self.stems[name])
        if not data.is_plain_name(name):  # never open paths that come from a labels file
            item.error = self.problems.get(name, "not a plain file name")
            return item
        t0 = time.perf_counter()
        try:
            # The image is read first so that a broken file is reported as such; its bytes are
            # read once, for the pixels and for the hash that resume compares.
            payload = data.read_image_file(self.root / name)
            image = data.decode_image(payload, name=name)
        except data.ImageLoadError as exc:
            item.error = str(exc)
            return item
        if name in self.problems:
            item.error = self.problems[name]
            return item
        item.sha256 = hashlib.sha256(payload).hexdigest()
        item.image = data.resize_center_crop(image, self.size)
        item.digest = image_digest(item.image)
        t1 = time.perf_counter()
        item.seconds_load = t1 - t0
        if self.superpixels is not None:
            item.superpixels, item.template_lookup = self.superpixels(item.image, item.digest)
            item.seconds_superpixels = time.perf_counter() - t1
        return item


def batches(items: Iterable[T], batch_size: int) -> Iterator[list[T]]:
    """Group the loader's items, in order, into lists of ``batch_size`` (the last may be short)."""
    batch: list[T] = []
    for item in items:
        batch.append(item)
        if len(batch) == batch_size:
            yield batch
            batch = []
    if batch:
        yield batch


def worker_batches(dataset: Dataset, batch_size: int, workers: int) -> Iterator[list]:
    """The items of ``dataset`` (which has a length), in order, in lists of ``batch_size``.

    Workers load single items, not whole batches, so every batch is spread over all of them (the
    first batch arrives ``workers`` times sooner); each keeps up to two batches' worth of items in
    flight so that loading (and segmentation) runs ahead of the model. A share that fits in one
    batch is not worth starting processes for. Workers die with the main process.
    """
    workers = workers if len(dataset) > batch_size else 0
    loader = DataLoader(
        dataset,
        batch_size=None,
        shuffle=False,
        num_workers=workers,
        prefetch_factor=max(2, math.ceil(2 * batch_size / workers)) if workers else None,
        worker_init_fn=die_with_parent if workers else None,
    )
    if workers:
        # Forked workers share this process's pages copy-on-write, the freed activation memory
        # that retain_heap keeps included, so every such page the attack writes again is copied
        # first: the first batch after the fork took 1.3-1.4 x as long per pass as the next
        # (I-FGM, Lite0, batch 16, 2-core CPU, 2026-12-07). Freed pages returned before the fork
        # are fresh ones to it, and the first batch ran as fast as the rest.
        trim_heap()
    yield from batches(loader, batch_size)
