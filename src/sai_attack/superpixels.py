"""Superpixel templates and the tensor operations that map noise onto them.

A template is an (H, W) integer array of superpixel labels ``0..K-1`` without gaps. It comes from
one of the algorithms in :data:`SUPERPIXEL_ALGORITHMS` (SLIC by default, as in the paper), then
optionally goes through the paper's adaptive merging (:func:`merge_similar`): adjacent superpixels
whose mean CIELAB colours differ by less than ``beta`` (Delta E 76) are combined, transitively.

The tensor side (:func:`fill`, :func:`reduce`) is vectorised over the batch: one ``gather`` maps
per-superpixel values (B, C, K) to pixels (B, C, H, W), one ``scatter_reduce`` goes back.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import cv2
import numpy as np
import torch
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from skimage.color import rgb2lab
from skimage.segmentation import slic as _skimage_slic

from sai_attack import options, torch_slic

logger = logging.getLogger(__name__)


def _check_image(image: np.ndarray) -> np.ndarray:
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3:
        shape = getattr(image, "shape", None)
        raise ValueError(f"image must be an (H, W, 3) array, got shape {shape}")
    if image.dtype != np.uint8:
        if image.min() < 0 or image.max() > 1:
            raise ValueError("float images must lie in [0, 1]; pass uint8 for 0-255 data")
        image = np.round(image * 255).astype(np.uint8)
    return image


def num_segments_for(shape: tuple[int, int], size: float) -> int:
    """The superpixel count K = H*W / S^2 for superpixel size S (at least 1)."""
    options.check("superpixel_size", size)
    return max(1, round(shape[0] * shape[1] / (size * size)))


def relabel(labels: np.ndarray) -> np.ndarray:
    """Renumber labels to ``0..K-1`` without gaps, ordered by first appearance in raster order."""
    flat = labels.ravel()
    _, first, inverse = np.unique(flat, return_index=True, return_inverse=True)
    order = np.argsort(np.argsort(first))  # rank of each unique label by first appearance
    return order[inverse].reshape(labels.shape).astype(np.int64)


# --------------------------------------------------------------------------------------------
# Algorithms: each maps (uint8 RGB image, K, S, compactness) to raw labels
# --------------------------------------------------------------------------------------------


@contextmanager
def _opencv_single_thread() -> Iterator[None]:
    # OpenCV's parallel loops would compete with PyTorch's threads and make the float sums of
    # cluster centres depend on the thread count; one thread keeps templates reproducible.
    previous = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        yield
    finally:
        cv2.setNumThreads(previous)


def _slic(image: np.ndarray, k: int, size: float, compactness: float) -> np.ndarray:
    # OpenCV's SLIC on float CIELAB (L in 0..100): the paper's Eq. 1 distance with p = compactness
    # and grid interval S, each centre searching a 2S x 2S window as in Achanta et al. (2012).
    lab = cv2.cvtColor(image.astype(np.float32) / 255.0, cv2.COLOR_RGB2LAB)
    with _opencv_single_thread():
        slic = cv2.ximgproc.createSuperpixelSLIC(
            lab, algorithm=cv2.ximgproc.SLIC, region_size=max(2, round(size)), ruler=compactness
        )
        slic.iterate(10)
        slic.enforceLabelConnectivity(25)  # absorb pieces under 25% of S^2 into a neighbour
        return slic.getLabels()


def _slic_skimage(image: np.ndarray, k: int, size: float, compactness: float) -> np.ndarray:
    # The uint8 RGB image goes in as is: skimage rescales any input to [0, 1] before its own Lab
    # conversion, so handing it precomputed Lab would shrink colour distances ~180x and leave a
    # regular grid at the paper's compactness.
    return _skimage_slic(
        image,
        n_segments=k,
        compactness=compactness,
        convert2lab=True,
        channel_axis=-1,
        start_label=0,
        enforce_connectivity=True,
    )


def _lsc(image: np.ndarray, k: int, size: float, compactness: float) -> np.ndarray:
    lab = cv2.cvtColor(image, cv2.COLOR_RGB2LAB)
    region = max(2, round(size))
    with _opencv_single_thread():
        lsc = cv2.ximgproc.createSuperpixelLSC(lab, region_size=region, ratio=0.075)
        lsc.iterate(10)
        lsc.enforceLabelConnectivity(max(1, region * region // 4))
        return lsc.getLabels()


def _seeds(image: np.ndarray, k: int, size: float, compactness: float) -> np.ndarray:
    h, w = image.shape[:2]
    lab = cv2.cvtColor(image, cv2.COLOR_RGB2LAB)
    # Two block levels let SEEDS reach small superpixels; it rounds K to its block grid.
    with _opencv_single_thread():
        seeds = cv2.ximgproc.createSuperpixelSEEDS(w, h, 3, k, 2, 2, 5, True)
        seeds.iterate(lab, 10)
        return seeds.getLabels()


def _grid(image: np.ndarray, k: int, size: float, compactness: float) -> np.ndarray:
    h, w = image.shape[:2]
    step = max(1, round(math.sqrt(h * w / k)))
    rows = np.arange(h) // step
    cols = np.arange(w) // step
    return rows[:, None] * (cols[-1] + 1) + cols[None, :]


SegmentFn = Callable[[np.ndarray, int, float, float], np.ndarray]

SUPERPIXEL_ALGORITHMS: dict[str, SegmentFn] = {
    "slic": _slic,
    "slic-skimage": _slic_skimage,
    "lsc": _lsc,
    "seeds": _seeds,
    "grid": _grid,
    "slic-torch": torch_slic.TorchSLIC(),
}
"""Superpixel algorithms by name.

``slic`` is OpenCV's SLIC (contrib ``ximgproc``), ``slic-skimage`` scikit-image's: both implement
Achanta et al.'s SLIC with the same distance, but scikit-image searches a 4S x 4S window around
each centre instead of 2S x 2S and takes about 2.5 times as long. ``lsc`` and ``seeds`` are
OpenCV's LSC and SEEDS; ``grid`` is a regular grid of S x S blocks. ``slic-torch`` is SLIC
in torch (:mod:`sai_attack.torch_slic`): it is ``batched``, so :func:`segment_batch` runs it on
the images' device in the calling process, a whole batch at once, merging included.
"""
options.register_choices("superpixel", SUPERPIXEL_ALGORITHMS)


# --------------------------------------------------------------------------------------------
# Adaptive merging
# --------------------------------------------------------------------------------------------


def adjacency(labels: np.ndarray) -> np.ndarray:
    """Pairs ``(i, j)`` with ``i < j`` of 4-adjacent superpixels, shape (E, 2), sorted, unique."""
    pairs = [
        np.stack([labels[:, :-1].ravel(), labels[:, 1:].ravel()], axis=1),
        np.stack([labels[:-1, :].ravel(), labels[1:, :].ravel()], axis=1),
    ]
    p = np.concatenate(pairs)
    p = p[p[:, 0] != p[:, 1]]
    if not len(p):
        return np.empty((0, 2), dtype=labels.dtype)
    p.sort(axis=1)
    # One integer per pair: a 1-D unique is several times faster than np.unique(axis=0), and
    # i * K + j sorts pairs in the same (lexicographic) order.
    k = int(p[:, 1].max()) + 1
    codes = np.unique(p[:, 0].astype(np.int64) * k + p[:, 1])
    return np.stack([codes // k, codes % k], axis=1).astype(labels.dtype)


def mean_colors(image: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Mean CIELAB colour of each superpixel, shape (K, 3), for labels ``0..K-1``."""
    lab = rgb2lab(_check_image(image)).reshape(-1, 3)
    flat = labels.ravel()
    k = int(flat.max()) + 1
    counts = np.bincount(flat, minlength=k).astype(np.float64)
    sums = np.stack([np.bincount(flat, weights=lab[:, c], minlength=k) for c in range(3)], axis=1)
    return sums / np.maximum(counts, 1)[:, None]


def merge_similar(image: np.ndarray, labels: np.ndarray, beta: float) -> np.ndarray:
    """Merge adjacent superpixels whose mean colours differ by less than ``beta`` (Delta E 76).

    This is the paper's adaptive combination strategy (Sec. 3.3). Merging is transitive: the
    result's segments are the connected components of the graph whose edges join adjacent
    superpixels closer than ``beta``; mean colours are those of the input superpixels. It is the
    region-adjacency-graph threshold cut of ``skimage.graph.cut_threshold`` on a
    ``rag_mean_color(..., connectivity=1, mode="distance")`` graph in CIELAB (4-adjacency),
    computed with array operations.

    Args:
        image: (H, W, 3) RGB image (uint8, or float in [0, 1]).
        labels: (H, W) superpixel labels ``0..K-1``.
        beta: Colour-difference threshold; ``0`` returns the labels unchanged.

    Returns:
        (H, W) int64 labels ``0..K'-1`` with ``K' <= K``.
    """
    if beta < 0:
        raise ValueError(f"merge beta must be >= 0, got {beta}")
    if labels.shape != image.shape[:2]:
        raise ValueError(f"labels shape {labels.shape} does not match image {image.shape[:2]}")
    labels = relabel(labels)
    if beta == 0:
        return labels
    k = int(labels.max()) + 1
    edges = adjacency(labels)
    colors = mean_colors(image, labels)
    dist = np.linalg.norm(colors[edges[:, 0]] - colors[edges[:, 1]], axis=1)
    keep = edges[dist < beta]
    graph = coo_matrix((np.ones(len(keep)), (keep[:, 0], keep[:, 1])), shape=(k, k))
    _, component = connected_components(graph, directed=False)
    return relabel(component[labels])


# --------------------------------------------------------------------------------------------
# The public entry point
# --------------------------------------------------------------------------------------------


def segment(
    image: np.ndarray,
    algorithm: str = options.default("superpixel"),
    size: float | None = options.default("superpixel_size"),
    n_segments: int | None = options.default("n_segments"),
    compactness: float = options.default("compactness"),
    merge_beta: float = options.default("merge_beta"),
) -> np.ndarray:
    """Compute a superpixel template.

    Args:
        image: (H, W, 3) RGB image, uint8 or float in [0, 1].
        algorithm: One of :data:`SUPERPIXEL_ALGORITHMS`.
        size: Superpixel size S in pixels (K = H*W / S^2). Ignored when ``n_segments`` is given.
        n_segments: The superpixel count K directly.
        compactness: SLIC compactness (the paper's p).
        merge_beta: Merge threshold beta in Delta E 76; 0 disables merging.

    Returns:
        (H, W) int64 labels ``0..K-1`` with no gaps.

    Example:
        >>> img = np.zeros((8, 8, 3), np.uint8); img[:4, :4] = 255
        >>> segment(img, "grid", size=4).max() + 1
        4
    """
    config = SuperpixelConfig(algorithm, size, n_segments, compactness, merge_beta)  # validates
    image = _check_image(image)
    h, w = image.shape[:2]
    k = config.count((h, w))
    if config.batched:  # the tensor path, so a template is the same whichever way it is made
        tensor = torch.from_numpy(image).permute(2, 0, 1)[None]  # (1, 3, H, W) uint8
        labels = SUPERPIXEL_ALGORITHMS[algorithm].segment(tensor, k, compactness, merge_beta)
        return labels[0].numpy()
    s = math.sqrt(h * w / k)
    labels = relabel(np.asarray(SUPERPIXEL_ALGORITHMS[algorithm](image, k, s, compactness)))
    if merge_beta > 0:
        labels = merge_similar(image, labels, merge_beta)
    return labels


@dataclass(frozen=True)
class SuperpixelConfig:
    """Validated superpixel settings; calling it segments an image (picklable for workers).

    Args:
        algorithm: One of :data:`SUPERPIXEL_ALGORITHMS`.
        size: Superpixel size S (used when ``n_segments`` is None).
        n_segments: Superpixel count K, overriding ``size``.
        compactness: SLIC compactness.
        merge_beta: Adaptive merging threshold (Delta E 76), 0 disables it.
    """

    algorithm: str = options.default("superpixel")
    size: float | None = options.default("superpixel_size")
    n_segments: int | None = options.default("n_segments")
    compactness: float = options.default("compactness")
    merge_beta: float = options.default("merge_beta")

    def __post_init__(self) -> None:
        # Validated by the option table; a size is only needed (and kept) without a count.
        set_ = object.__setattr__
        set_(self, "algorithm", options.check("superpixel", self.algorithm))
        set_(self, "n_segments", options.check("n_segments", self.n_segments))
        size = None if self.n_segments is not None and self.size is None else self.size
        set_(self, "size", None if size is None else options.check("superpixel_size", size))
        set_(self, "compactness", options.check("compactness", self.compactness))
        set_(self, "merge_beta", options.check("merge_beta", self.merge_beta))

    @property
    def batched(self) -> bool:
        """Whether :func:`segment_batch` runs the algorithm on a device, a batch at a time."""
        return bool(getattr(SUPERPIXEL_ALGORITHMS[self.algorithm], "batched", False))

    def count(self, shape: tuple[int, int]) -> int:
        """The superpixel count K requested for an (H, W) image."""
        k = self.n_segments
        return num_segments_for(shape, self.size) if k is None else k

    def __call__(self, image: np.ndarray) -> np.ndarray:
        """Segment an (H, W, 3) image; see :func:`segment`."""
        return segment(
            image, self.algorithm, self.size, self.n_segments, self.compactness, self.merge_beta
        )


# --------------------------------------------------------------------------------------------
# Tensor operations
# --------------------------------------------------------------------------------------------


def _check_labels(labels: torch.Tensor, batch: int | None = None) -> None:
    if labels.ndim != 3 or labels.dtype != torch.int64:
        raise ValueError(
            f"superpixel labels must be an int64 (B, H, W) tensor, got "
            f"{labels.dtype} {tuple(labels.shape)}"
        )
    if batch is not None and labels.shape[0] != batch:
        raise ValueError(f"labels batch {labels.shape[0]} does not match values batch {batch}")


def fill(values: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Paint per-superpixel values onto pixels: the paper's mapping f(n; t).

    Args:
        values: (B, C, K) values, K at least the largest label + 1.
        labels: (B, H, W) int64 superpixel labels.

    Returns:
        (B, C, H, W) tensor, constant inside every superpixel. Differentiable in ``values``; the
        gradient of a superpixel is the sum of its pixels' gradients.
    """
    _check_labels(labels, values.shape[0])
    b, c, _ = values.shape
    _, h, w = labels.shape
    index = labels.view(b, 1, h * w).expand(b, c, h * w)  # (B, C, HW)
    return values.gather(2, index).view(b, c, h, w)


def reduce(pixels: torch.Tensor, labels: torch.Tensor, num: int, how: str = "mean") -> torch.Tensor:
    """Reduce pixel values per superpixel: ``sum``, ``mean``, ``amax``, ``amin`` or ``absmax``.

    ``absmax`` keeps, per superpixel and channel, the signed value of largest magnitude.

    Args:
        pixels: (B, C, H, W) values.
        labels: (B, H, W) int64 labels.
        num: K, the number of slots in the output (labels must be < K).
        how: The reduction.

    Returns:
        (B, C, K) tensor; slots with no pixels hold 0.
    """
    _check_labels(labels, pixels.shape[0])
    if how == "absmax":
        hi = reduce(pixels, labels, num, "amax")
        lo = reduce(pixels, labels, num, "amin")
        return torch.where(hi.abs() >= lo.abs(), hi, lo)
    if how not in ("sum", "mean", "amax", "amin"):
        raise ValueError(f"unknown reduction {how!r}; use sum, mean, amax, amin or absmax")
    b, c, h, w = pixels.shape
    index = labels.view(b, 1, h * w).expand(b, c, h * w)
    out = pixels.new_zeros(b, c, num)
    return out.scatter_reduce(2, index, pixels.reshape(b, c, h * w), how, include_self=False)


def stack_labels(templates: list[np.ndarray] | np.ndarray) -> torch.Tensor:
    """Stack (H, W) label arrays into a (B, H, W) int64 tensor."""
    arr = np.stack(list(templates)) if not isinstance(templates, np.ndarray) else templates
    if arr.ndim == 2:
        arr = arr[None]
    return torch.from_numpy(np.ascontiguousarray(arr).astype(np.int64))


def segment_batch(
    images: torch.Tensor, config: SuperpixelConfig, device: torch.device | str | None = None
) -> torch.Tensor:
    """Segment (B, 3, H, W) images in [0, 1]; returns (B, H, W) int64 labels on their device.

    A ``batched`` algorithm runs on ``device`` (default: the images' own), the whole batch at
    once; the others run image by image on the CPU. Both give the labels :func:`segment` gives.
    """
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"expected (B, 3, H, W) images, got shape {tuple(images.shape)}")
    if config.batched:
        on, k = images.detach().to(device or images.device), config.count(images.shape[-2:])
        fn, c = SUPERPIXEL_ALGORITHMS[config.algorithm], config  # runs on `on`'s device
        return fn.segment(on, k, c.compactness, c.merge_beta).to(images.device)
    arrays = torch.round(images.detach().clamp(0, 1) * 255).to(torch.uint8)
    arrays = arrays.permute(0, 2, 3, 1).cpu().numpy()
    return stack_labels([config(a) for a in arrays]).to(images.device)
