"""Total variation minimisation (TVM) after random pixel dropout (Guo et al., ICLR 2018).

The solver is a batched primal-dual (Chambolle-Pock) iteration built from element-wise tensor
operations, so it runs on the CPU or GPU and its result does not depend on how images are batched.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
from collections.abc import Iterator, Sequence

import torch
import torch.nn.functional as F

from sai_attack.defenses.base import Defense, _check_images, _is_int, _is_real

CPU_TVM_CHUNK = 2**18  # tensor elements per TVM solver call on the CPU


def _forward_differences(u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward differences with zero at the last column/row (Neumann boundary)."""
    dx = torch.zeros_like(u)
    dy = torch.zeros_like(u)
    dx[..., :, :-1] = u[..., :, 1:] - u[..., :, :-1]
    dy[..., :-1, :] = u[..., 1:, :] - u[..., :-1, :]
    return dx, dy


def tv_energy(
    u: torch.Tensor, images: torch.Tensor, keep: torch.Tensor, weight: float
) -> torch.Tensor:
    """The TVM objective per image: ``0.5 * sum(keep * (u - x)^2) + weight * TV(u)``.

    TV is the isotropic total variation of every channel, ``sum sqrt(dx^2 + dy^2)`` with forward
    differences (zero across the last row and column).

    Args:
        u: (B, 3, H, W) candidate reconstruction.
        images: (B, 3, H, W) the observed images.
        keep: (B, 3, H, W) 1 where the pixel was kept, 0 where dropped.
        weight: The TV weight lambda.

    Returns:
        (B,) objective values.
    """
    dx, dy = _forward_differences(u)
    data_term = 0.5 * (keep * (u - images) ** 2).flatten(1).sum(1)
    return data_term + weight * torch.sqrt(dx * dx + dy * dy).flatten(1).sum(1)


def _tvm_initial(images: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """The solver's start: kept pixels as they are, dropped ones filled from their neighbours.

    A dropped value becomes the mean of the kept values in its 3x3 neighbourhood, or of the
    channel's kept values when there are none (0.5 when nothing is kept).
    """
    b, c, h, w = images.shape
    kernel = torch.ones(1, 1, 3, 3, dtype=images.dtype, device=images.device)
    num = F.conv2d((keep * images).reshape(b * c, 1, h, w), kernel, padding=1).view(b, c, h, w)
    den = F.conv2d(keep.reshape(b * c, 1, h, w), kernel, padding=1).view(b, c, h, w)
    kept = keep.sum(dim=(2, 3), keepdim=True)
    channel_mean = torch.where(
        kept > 0, (keep * images).sum(dim=(2, 3), keepdim=True) / kept.clamp(min=1.0), 0.5
    )
    fill = torch.where(den > 0, num / den.clamp(min=1.0), channel_mean.expand_as(num))
    return torch.where(keep > 0, images, fill)


def tv_reconstruct(
    images: torch.Tensor, keep: torch.Tensor, weight: float, iterations: int = 200
) -> torch.Tensor:
    """Minimise :func:`tv_energy` over u with a batched primal-dual (Chambolle-Pock) solver.

    The first-order primal-dual algorithm of Chambolle and Pock (J. Math. Imaging Vis. 2011,
    Alg. 1, theta = 1, tau = sigma = 1/sqrt(8)) with the dual variable projected onto the
    ``weight``-ball of every pixel's gradient: only element-wise tensor operations, so whole
    batches run at once on the CPU or GPU. Every image and channel is an independent problem and
    the iteration count is fixed, so the result does not depend on the batch.

    Args:
        images: (B, 3, H, W) observed images.
        keep: (B, 3, H, W) mask, 1 where the pixel was kept.
        weight: TV weight lambda > 0.
        iterations: Primal-dual iterations.

    Returns:
        (B, 3, H, W) the reconstruction, clipped to [0, 1].
    """
    f = images.detach().float()
    m = keep.detach().float()
    tau = sigma = 1.0 / math.sqrt(8.0)
    u = _tvm_initial(f, m)
    ubar = u.clone()
    px = torch.zeros_like(f)
    py = torch.zeros_like(f)
    scaled_data = tau * m * f
    inverse = 1.0 / (1.0 + tau * m)
    div = torch.empty_like(f)
    norm = torch.empty_like(f)
    for _ in range(iterations):
        # Dual ascent on p, then projection onto {|p| <= weight} pixel by pixel.
        px[..., :, :-1].add_(ubar[..., :, 1:] - ubar[..., :, :-1], alpha=sigma)
        py[..., :-1, :].add_(ubar[..., 1:, :] - ubar[..., :-1, :], alpha=sigma)
        torch.hypot(px, py, out=norm)
        norm.mul_(1.0 / weight).clamp_(min=1.0)
        px.div_(norm)
        py.div_(norm)
        # div p, the negative adjoint of the forward differences.
        div.copy_(px)
        div[..., :, 1:].sub_(px[..., :, :-1])
        div.add_(py)
        div[..., 1:, :].sub_(py[..., :-1, :])
        # Proximal step of the masked quadratic data term, then extrapolation.
        u_new = div.mul_(tau).add_(u).add_(scaled_data).mul_(inverse)
        torch.mul(u_new, 2.0, out=ubar).sub_(u)
        u, div = u_new, u
    return u.clamp_(0.0, 1.0).to(images.dtype)


@contextlib.contextmanager
def _cpu_threads(n: int | None) -> Iterator[None]:
    """Temporarily limit PyTorch's intra-op CPU threads (``None``: leave them).

    The TVM solver runs thousands of element-wise operations on tensors of one image: splitting
    each across threads gains little, and when the other cores are busy every operation waits for
    a descheduled thread (measured 50x slower with 2 threads on a loaded 2-core machine).
    """
    previous = torch.get_num_threads()
    if n is None or n >= previous:
        yield
        return
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _seed_from(value: int | str) -> int:
    """A 63-bit seed from the SHA-256 of ``str(value)``: stable across runs and platforms."""
    digest = hashlib.sha256(str(value).encode("utf-8", "surrogateescape")).digest()
    return int.from_bytes(digest[:8], "big") & (2**63 - 1)


def dropout_mask(shape: Sequence[int], seed: int, drop_rate: float = 0.5) -> torch.Tensor:
    """TVM's random pixel dropout: True where a value is kept, independently per pixel and channel.

    Drawn on the CPU from a generator seeded with ``seed``, so it does not depend on the device.

    Args:
        shape: (3, H, W).
        seed: The seed.
        drop_rate: Probability that a value is dropped.

    Returns:
        A bool tensor of ``shape``.
    """
    g = torch.Generator().manual_seed(int(seed) & (2**63 - 1))
    return torch.rand(tuple(shape), generator=g) >= drop_rate


def tvm(
    images: torch.Tensor,
    weight: float = 0.03,
    drop_rate: float = 0.5,
    seeds: Sequence[int] | None = None,
    iterations: int = 200,
) -> torch.Tensor:
    """Total variation minimisation: drop random pixels and reconstruct the simplest image.

    Guo et al., "Countering Adversarial Images using Input Transformations" (ICLR 2018): every
    pixel of every channel is kept with probability ``1 - drop_rate``, and the image ``u`` that
    minimises ``0.5 * sum_kept (u - x)^2 + weight * TV(u)`` (isotropic TV per channel, images in
    [0, 1]) is returned; see :func:`tv_reconstruct`. This is the objective of their split-Bregman
    code (``reconstruct(..., 'bregman', weight=0.03)``, fidelity ``1 / weight``), which the paper
    follows with drop rate 0.5 and TV weight 0.03. Not differentiable.

    Args:
        images: (B, 3, H, W) in [0, 1].
        weight: TV weight lambda.
        drop_rate: Probability that a pixel value is dropped, in [0, 1).
        seeds: One seed per image for its dropout mask (default 0, 1, 2, ... by position).
        iterations: Solver iterations.

    Returns:
        (B, 3, H, W) in [0, 1].
    """
    _check_images(images)
    b = images.shape[0]
    seeds = list(range(b)) if seeds is None else list(seeds)
    if len(seeds) != b:
        raise ValueError(f"tvm needs one seed per image, got {len(seeds)} seeds for {b} images")
    keep = torch.stack([dropout_mask(images.shape[1:], s, drop_rate) for s in seeds])
    keep = keep.to(images.device)
    # On the CPU, small chunks stay in cache and run faster than one big batch.
    h, w = images.shape[-2:]
    chunk = b if images.device.type != "cpu" else max(1, CPU_TVM_CHUNK // (3 * h * w))
    with torch.no_grad(), _cpu_threads(1 if images.device.type == "cpu" else None):
        return torch.cat(
            [
                tv_reconstruct(images[i : i + chunk], keep[i : i + chunk], weight, iterations)
                for i in range(0, b, chunk)
            ]
        )


class TVM(Defense):
    """Total variation minimisation after random pixel dropout (see :func:`tvm`).

    Paper: Guo et al., "Countering Adversarial Images using Input Transformations", ICLR 2018;
    Dong et al., Fig. 6(a) and Table 4 (drop rate 0.5, TV weight 0.03). Limitations: randomised
    (deterministic given the seeds; the evaluation seeds every image from its name, so a clean
    image and its adversarial version get the same mask); the solver runs a fixed number of
    iterations of a convergent algorithm, while Guo et al.'s Gauss-Seidel split-Bregman code
    stops early (10 inner sweeps, tolerance 0.01), so outputs agree with theirs only up to that
    tolerance; the minimiser is not unique where a dropped pixel sits between neighbours that leave
    its value free, so such pixels may differ between solvers; no gradient.

    Args:
        weight: TV weight lambda > 0 on images in [0, 1] (the swept parameter).
        drop_rate: Probability of dropping a pixel value, in [0, 1).
        iterations: Solver iterations, >= 1.
        seed: Default seed of image i of a batch is ``hash(seed, i)`` when no seeds are given.
    """

    name = "tvm"
    param_name = "weight"
    randomized = True
    description = "total variation minimisation, drop rate 0.5"
    example = "tvm or tvm:0.03"

    def __init__(
        self,
        weight: float = 0.03,
        drop_rate: float = 0.5,
        iterations: int = 200,
        seed: int = 0,
    ) -> None:
        if not (_is_real(weight) and 0 < weight <= 10):
            raise ValueError(f"tvm weight must be a number in (0, 10], got {weight}")
        if not (isinstance(drop_rate, (int, float)) and 0 <= drop_rate < 1):
            raise ValueError(f"tvm drop_rate must lie in [0, 1), got {drop_rate}")
        if isinstance(iterations, bool) or not _is_int(iterations) or int(iterations) < 1:
            raise ValueError(f"tvm iterations must be an integer >= 1, got {iterations}")
        self.weight = float(weight)
        self.drop_rate = float(drop_rate)
        self.iterations = int(iterations)
        self.seed = int(seed)

    def apply(self, images: torch.Tensor, seeds: Sequence[int] | None) -> torch.Tensor:
        """Drop pixels and reconstruct."""
        if seeds is None:
            seeds = [_seed_from(f"{self.seed}:{i}") for i in range(images.shape[0])]
        return tvm(images, self.weight, self.drop_rate, seeds, self.iterations)
