"""SLIC superpixels and adaptive merging on (B, 3, H, W) tensors, on whatever device they are on.

The algorithm is Achanta et al.'s SLIC (TPAMI 2012) as OpenCV's ``ximgproc`` runs it for the
``slic`` template: CIELAB colours, seeds on a regular grid of interval S moved to the lowest
colour gradient of their 3 x 3 neighbourhood, the distance D = d_lab^2 + (m / S)^2 d_xy^2 with
m the compactness, a 2S x 2S search window around every centre, 10 iterations, then pieces of at
most a quarter of the mean superpixel area joined to a neighbour. Every image and pixel of a batch
is processed at once:

* assignment: a centre seeded in one grid cell stays within about a cell of it, so a pixel is
  compared with the 9 centres of its own cell and the 8 around it (9 tensor passes instead of a
  loop over centres); when no centre's 2S x 2S window includes the pixel, it goes to its own
  cell's centre;
* update: the centre sums are integer ``scatter_add`` s of fixed-point CIELAB (units of 2^-16),
  so they are exact whatever the order of additions: the same on CPU and GPU and for any batch;
* connectivity and merging: connected components by min-label propagation with hooking and
  pointer jumping on an edge list (a few passes), then small pieces join the segment above (or
  left of) their first pixel, as OpenCV's ``enforceLabelConnectivity`` does.

Labels come back numbered ``0..K-1`` by first appearance in raster order, like
:func:`sai_attack.superpixels.relabel`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch

_FIXED = 65536.0  # CIELAB in units of 2^-16: |L|, |a|, |b| < 128, so each value is exact in float32
_XYZ_FROM_RGB = (  # sRGB (D65) to XYZ, as scikit-image's rgb2xyz
    (0.412453, 0.357580, 0.180423),
    (0.212671, 0.715160, 0.072169),
    (0.019334, 0.119193, 0.950227),
)
_WHITE_D65 = (0.95047, 1.0, 1.08883)
# The pixel's own cell first: on a tie the own cell's centre wins.
_OFFSETS = ((0, 0), *((dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if dy or dx))
_SMALL = 4  # pieces of at most 1/_SMALL of the mean superpixel area join a neighbour (OpenCV: 25%)


def _square(t: torch.Tensor) -> torch.Tensor:
    return t.mul_(t)


def _check_images(images: torch.Tensor) -> None:
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[1] != 3:
        shape = tuple(getattr(images, "shape", ()))
        raise ValueError(f"images must be a (B, 3, H, W) tensor, got shape {shape}")


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """The 8-bit values of (B, 3, H, W) images: uint8 as is, floats in [0, 1] rounded."""
    _check_images(images)
    if images.dtype == torch.uint8:
        return images
    return torch.round(images.detach().clamp(0, 1) * 255).to(torch.uint8)


def rgb_to_lab(images: torch.Tensor) -> torch.Tensor:
    """CIELAB (D65, L in 0..100) of the 8-bit values of (B, 3, H, W) images, float64.

    The same formulas as ``skimage.color.rgb2lab`` (equal up to float rounding); the sRGB
    linearisation is a 256-entry table, so every device computes it identically.
    """
    values = to_uint8(images).long()  # (B, 3, H, W)
    v = np.arange(256) / 255.0
    table = np.where(v > 0.04045, ((v + 0.055) / 1.055) ** 2.4, v / 12.92)
    r, g, b = torch.as_tensor(table, device=values.device)[values].unbind(1)  # (B, H, W) each
    f = []
    for row, white in zip(_XYZ_FROM_RGB, _WHITE_D65, strict=True):
        t = (row[0] * r + row[1] * g + row[2] * b) / white
        f.append(torch.where(t > 0.008856, t.clamp_min(0.008856).pow(1 / 3), 7.787 * t + 16 / 116))
    fx, fy, fz = f
    return torch.stack([116 * fy - 16, 500 * (fx - fy), 200 * (fy - fz)], dim=1)


def _segment_sums(
    labels: torch.Tensor, values: torch.Tensor, k: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixel counts (B, k) and integer sums (B, C, k) of (B, C, N) int64 values per label."""
    b, c, _ = values.shape
    counts = torch.zeros(b, k, dtype=torch.long, device=labels.device)
    counts.scatter_add_(1, labels, torch.ones_like(labels))
    sums = torch.zeros(b, c, k, dtype=torch.long, device=labels.device)
    return counts, sums.scatter_add_(2, labels[:, None].expand(-1, c, -1), values)


def _fixed_lab(images: torch.Tensor) -> torch.Tensor:
    """CIELAB in fixed point (units of 2^-16), (B, 3, H*W) int64."""
    return torch.round(rgb_to_lab(images) * _FIXED).long().flatten(2)


# --------------------------------------------------------------------------------------------
# Graph helpers: connected components and first-appearance labels
# --------------------------------------------------------------------------------------------


def _pixel_edges(h: int, w: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(E,) flat indices of the 4-adjacent pixel pairs: right neighbours, then lower ones."""
    idx = torch.arange(h * w, device=device).view(h, w)
    src = torch.cat([idx[:, :-1].flatten(), idx[:-1, :].flatten()])
    dst = torch.cat([idx[:, 1:].flatten(), idx[1:, :].flatten()])
    return src, dst


def components(src: torch.Tensor, dst: torch.Tensor, keep: torch.Tensor, n: int) -> torch.Tensor:
    """Connected components of a batch of graphs on nodes ``0..n-1``.

    Args:
        src: (E,) or (B, E) int64 first node of each edge.
        dst: Same shape, the second node.
        keep: (B, E) bool, the edges present in each graph.
        n: Number of nodes.

    Returns:
        (B, n) int64: for every node, the smallest node of its component.
    """
    b = keep.shape[0]
    src = src.expand(b, -1)
    dst = torch.where(keep, dst, src)  # absent edges become self-loops, which change nothing
    parent = torch.arange(n, device=keep.device).expand(b, n).contiguous()  # parent[x] <= x
    while True:
        ps, pd = parent.gather(1, src), parent.gather(1, dst)
        low = torch.minimum(ps, pd)
        # Hook both trees under the smaller root, then halve every path (pointer jumping).
        new = parent.scatter_reduce(1, ps, low, "amin").scatter_reduce(1, pd, low, "amin")
        new = new.gather(1, new)
        if torch.equal(new, parent):  # every edge inside one tree, every tree of depth 1
            return parent
        parent = new


def relabel(labels: torch.Tensor) -> torch.Tensor:
    """Renumber (B, H, W) non-negative labels to ``0..K-1`` per image by first appearance."""
    b, h, w = labels.shape
    flat = labels.reshape(b, h * w)
    pixel = torch.arange(h * w, device=labels.device).expand(b, -1)
    first = torch.full((b, int(flat.max()) + 1), h * w, dtype=torch.long, device=labels.device)
    first = first.scatter_reduce(1, flat, pixel, "amin").gather(1, flat)  # (B, HW)
    rank = torch.cumsum(first == pixel, dim=1) - 1  # segments met so far, at their first pixel
    return rank.gather(1, first).view(b, h, w)


def enforce_connectivity(labels: torch.Tensor, max_small: int) -> torch.Tensor:
    """Split (B, H, W) labels into 4-connected pieces and join the small ones to a neighbour.

    A piece of at most ``max_small`` pixels joins the segment above its first (raster-order)
    pixel, or left of it on the top row. That neighbour always belongs to a piece met earlier,
    so chains of joins end at a piece that is kept (the piece at the top-left corner always is).
    Returns labels ``0..K-1``.
    """
    b, h, w = labels.shape
    n = h * w
    flat = labels.reshape(b, n)
    src, dst = _pixel_edges(h, w, labels.device)
    root = components(src, dst, flat[:, src] == flat[:, dst], n)  # (B, HW) first pixel of piece
    size = torch.zeros_like(root).scatter_add_(1, root, torch.ones_like(root))
    node = torch.arange(n, device=labels.device)
    up = torch.where(node >= w, node - w, torch.where(node % w > 0, node - 1, node))  # (HW,)
    target = torch.where(size <= max_small, root.gather(1, up.expand(b, -1)), node)  # at roots
    while True:  # follow chains of joins; each step goes to an earlier piece
        nxt = target.gather(1, target)
        if torch.equal(nxt, target):
            break
        target = nxt
    return relabel(target.gather(1, root).view(b, h, w))


# --------------------------------------------------------------------------------------------
# SLIC
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Axis:
    """One image axis cut into ``cells`` grid cells of ``slots`` or fewer positions each."""

    cell: torch.Tensor  # (n,) cell of every position
    slot: torch.Tensor  # (n,) its place inside the cell
    seed: torch.Tensor  # (cells,) seed position of every cell, its middle
    position: torch.Tensor  # (slots, cells) position at each slot; past a cell's end, its last
    valid: torch.Tensor  # (slots, cells) whether the slot holds a position of the cell

    @classmethod
    def cut(cls, n: int, cells: int, device: torch.device) -> _Axis:
        """Cells ``[ceil(i n / cells), ceil((i + 1) n / cells))``: as even as integers allow."""
        start = (torch.arange(cells + 1, device=device) * n + cells - 1) // cells
        cell = torch.arange(n, device=device) * cells // n
        slots = int((start[1:] - start[:-1]).max())
        raw = start[:-1] + torch.arange(slots, device=device)[:, None]  # (slots, cells)
        slot = torch.arange(n, device=device) - start[cell]
        seed = (start[:-1] + start[1:]) // 2
        return cls(cell, slot, seed, torch.minimum(raw, start[1:] - 1), raw < start[1:])


def _seeds(lab: torch.Tensor, seed_y: torch.Tensor, seed_x: torch.Tensor) -> torch.Tensor:
    """Grid seeds moved to the lowest gradient of their 3 x 3 neighbourhood.

    Returns (B, 5, K) centres ``(L, a, b, y, x)`` from (B, 3, H, W) float32 CIELAB.
    """
    b, _, h, w = lab.shape
    pad = torch.nn.functional.pad(lab, (1, 1, 1, 1), mode="replicate")
    gx = pad[:, :, 1:-1, 2:] - pad[:, :, 1:-1, :-2]  # central differences, as OpenCV's Sobel(1)
    gy = pad[:, :, 2:, 1:-1] - pad[:, :, :-2, 1:-1]
    sq = gx * gx + gy * gy  # (B, 3, H, W)
    grad = (sq[:, 0] + sq[:, 1] + sq[:, 2]).flatten(1)  # (B, HW), term by term like the distance
    y0, x0 = torch.meshgrid(seed_y, seed_x, indexing="ij")  # (ny, nx)
    best = (y0 * w + x0).flatten().expand(b, -1)  # (B, K) flat seed pixels
    best_grad = grad.gather(1, best)
    for dy, dx in _OFFSETS[1:]:  # strict < keeps the grid position (then raster order) on ties
        pos = ((y0 + dy).clamp(0, h - 1) * w + (x0 + dx).clamp(0, w - 1)).flatten().expand(b, -1)
        g = grad.gather(1, pos)
        lower = g < best_grad
        best, best_grad = torch.where(lower, pos, best), torch.where(lower, g, best_grad)
    colour = lab.flatten(2).gather(2, best[:, None].expand(-1, 3, -1))  # (B, 3, K)
    return torch.cat([colour, (best // w)[:, None].float(), (best % w)[:, None].float()], 1)


def slic(
    images: torch.Tensor, n_segments: int, compactness: float = 20.0, iterations: int = 10
) -> torch.Tensor:
    """SLIC superpixels of (B, 3, H, W) images (uint8, or float in [0, 1]) on their device.

    Pixels are held cell by cell, (B, P, K) for P slots in each of K grid cells, so that a
    centre, or the centre of the cell next to it, lines up with its pixels by broadcasting: no
    per-pixel gather in the iterations.

    Args:
        images: The batch; floats are rounded to 8-bit values first.
        n_segments: Requested count K; the grid has ``round(H / S) x round(W / S)`` cells with
            S = sqrt(H * W / K), and connectivity enforcement may add or remove a few.
        compactness: The paper's p (Achanta et al.'s m): weight of distance against colour.
        iterations: Assignment/update rounds (OpenCV's default is 10).

    Returns:
        (B, H, W) int64 labels ``0..K_b-1`` per image, each segment 4-connected.
    """
    _check_images(images)
    if isinstance(n_segments, bool) or not isinstance(n_segments, int) or n_segments < 1:
        raise ValueError(f"n_segments must be an integer >= 1, got {n_segments!r}")
    if not compactness >= 0:
        raise ValueError(f"compactness must be >= 0, got {compactness}")
    if isinstance(iterations, bool) or not isinstance(iterations, int) or iterations < 1:
        raise ValueError(f"iterations must be an integer >= 1, got {iterations!r}")
    b, _, h, w = images.shape
    device = images.device
    s = math.sqrt(h * w / n_segments)
    ny, nx = min(h, max(1, round(h / s))), min(w, max(1, round(w / s)))
    k = ny * nx
    ay, ax = _Axis.cut(h, ny, device), _Axis.cut(w, nx, device)
    p = ay.position.shape[0] * ax.position.shape[0]

    # (slots_y, slots_x, cells_y, cells_x) -> (P, K): the pixel in every slot of every cell
    pixel = (ay.position[:, None, :, None] * w + ax.position[None, :, None, :]).reshape(p, k)
    valid = (ay.valid[:, None, :, None] & ax.valid[None, :, None, :]).reshape(p, k)
    fixed = _fixed_lab(images)  # (B, 3, HW) int64
    lab = fixed.float() / _FIXED  # exact: the fixed-point values fit float32's mantissa
    centres = _seeds(lab.view(b, 3, h, w), ay.seed, ax.seed)  # (B, 5, K) float32
    flat = pixel.flatten()
    fixed = torch.cat([fixed[:, :, flat], torch.stack([flat // w, flat % w]).expand(b, -1, -1)], 1)
    lab = lab[:, :, flat].view(b, 3, p, k)  # (B, 3, P, K)
    yf, xf = (flat // w).float().view(p, k), (flat % w).float().view(p, k)
    cells = torch.arange(k, device=device)
    # D inside a window is below 3 * 255^2 (colour) + 2 m^2 (distance); `far` marks a centre
    # whose window excludes the pixel, 2 * far more a neighbouring cell beyond the grid's edge.
    far = 1.0e6 + 4.0 * compactness**2
    neighbours, penalties = [], []  # per offset: (K,) the neighbouring cell and its penalty
    for dy, dx in _OFFSETS:
        iy, ix = cells // nx + dy, cells % nx + dx
        missing = (iy < 0) | (iy >= ny) | (ix < 0) | (ix >= nx)
        neighbours.append(iy.clamp(0, ny - 1) * nx + ix.clamp(0, nx - 1))
        penalties.append(missing.float() * (2 * far))
    table = torch.stack(neighbours).flatten()  # (9K,) cell reached by offset o from cell k
    weight, s2 = (compactness / s) ** 2, s * s
    for _ in range(iterations):
        best_d = best_o = None
        for o, (nbr, penalty) in enumerate(zip(neighbours, penalties, strict=True)):
            c = centres.index_select(2, nbr)[:, :, None, :]  # (B, 5, 1, K)
            # D term by term, in place: plain elementwise ops round the same on every device.
            d = _square(lab[:, 0] - c[:, 0])  # (B, P, K)
            d += _square(lab[:, 1] - c[:, 1])
            d += _square(lab[:, 2] - c[:, 2])
            dy2, dx2 = _square(yf - c[:, 3]), _square(xf - c[:, 4])
            outside = torch.maximum(dy2, dx2) > s2  # beyond the centre's 2S x 2S window
            dy2 += dx2
            d += dy2.mul_(weight)
            d.masked_fill_(outside, far)  # ties among these go to the earliest offset
            d += penalty
            if best_d is None:
                best_d, best_o = d, torch.zeros_like(d, dtype=torch.uint8)
            else:
                best_o.masked_fill_(d < best_d, o)  # strict: on ties the own cell, then raster
                best_d = torch.minimum(best_d, d)
        labels = table[best_o.long() * k + cells].masked_fill(~valid, k).flatten(1)  # (B, PK)
        counts, sums = _segment_sums(labels, fixed, k + 1)  # bin K: slots without a pixel
        counts, sums = counts[:, None, :k], sums[..., :k]
        means = (sums.double() / counts.clamp_min(1).double()).float()
        means[:, :3] /= _FIXED
        centres = torch.where(counts > 0, means, centres)  # an empty centre stays put
    slot = ay.slot[:, None] * ax.position.shape[0] + ax.slot  # (H, W) slot of every pixel
    inverse = (slot * k + ay.cell[:, None] * nx + ax.cell).flatten()  # (HW,) into (P, K)
    labels = labels[:, inverse].view(b, h, w)
    return enforce_connectivity(labels, (h * w // k) // _SMALL)


# --------------------------------------------------------------------------------------------
# Adaptive merging
# --------------------------------------------------------------------------------------------


def merge_similar(images: torch.Tensor, labels: torch.Tensor, beta: float) -> torch.Tensor:
    """Merge adjacent superpixels whose mean CIELAB colours differ by less than ``beta``.

    The tensor form of :func:`sai_attack.superpixels.merge_similar` (the paper's adaptive
    combination, Delta E 76, transitive over 4-adjacency), batched and on the labels' device.

    Args:
        images: (B, 3, H, W) images, uint8 or float in [0, 1].
        labels: (B, H, W) int64 non-negative labels.
        beta: Colour-difference threshold; ``0`` only renumbers the labels.

    Returns:
        (B, H, W) int64 labels ``0..K'-1`` per image, in first-appearance order.
    """
    _check_images(images)
    if not beta >= 0:
        raise ValueError(f"merge beta must be >= 0, got {beta}")
    if labels.ndim != 3 or labels.shape != (images.shape[0], *images.shape[2:]):
        raise ValueError(
            f"labels shape {tuple(labels.shape)} does not match images {tuple(images.shape)}"
        )
    labels = relabel(labels.to(images.device))
    if beta == 0:
        return labels
    b, h, w = labels.shape
    flat = labels.view(b, h * w)
    k = int(flat.max()) + 1
    counts, sums = _segment_sums(flat, _fixed_lab(images), k)
    mean = sums.double() / (counts[:, None].double() * _FIXED)  # (B, 3, K), exact sums
    src, dst = _pixel_edges(h, w, flat.device)
    ls, ld = flat[:, src], flat[:, dst]  # (B, E) label pairs across every pixel edge
    diff = mean.gather(2, ls[:, None].expand(-1, 3, -1)) - mean.gather(
        2, ld[:, None].expand(-1, 3, -1)
    )
    dist = torch.sqrt(diff[:, 0] * diff[:, 0] + diff[:, 1] * diff[:, 1] + diff[:, 2] * diff[:, 2])
    group = components(ls, ld, (ls != ld) & (dist < beta), k)  # (B, K)
    return relabel(group.gather(1, flat).view(b, h, w))


class TorchSLIC:
    """The ``slic-torch`` template: :func:`slic` (+ :func:`merge_similar`) on tensors.

    Its registry entry runs batched on the attack's device (``batched``); called like the other
    entries of ``SUPERPIXEL_ALGORITHMS`` on one (H, W, 3) uint8 array it runs on the CPU.
    """

    batched: ClassVar[bool] = True

    def __call__(self, image: np.ndarray, k: int, size: float, compactness: float) -> np.ndarray:
        """Raw labels of one (H, W, 3) uint8 image (the registry's array interface)."""
        tensor = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None]
        return slic(tensor, k, compactness)[0].numpy()

    def segment(
        self, images: torch.Tensor, k: int, compactness: float, merge_beta: float
    ) -> torch.Tensor:
        """(B, H, W) labels of (B, 3, H, W) images on their device, merged when beta > 0."""
        labels = slic(images, k, compactness)
        return merge_similar(images, labels, merge_beta) if merge_beta > 0 else labels
