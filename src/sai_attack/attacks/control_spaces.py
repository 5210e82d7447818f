"""Control perturbation spaces: as many values as the superpixel template, but no image content.

Is it the superpixels (regions that follow the image) that make SAI-FGM robust, or only that its
perturbation has few degrees of freedom and is smooth? These spaces answer it (issue 14): each has
K values per channel, the K of the superpixel settings (``n_segments``, or ``H*W / S^2`` from
``superpixel_size``), and none looks at the image:

- ``dct``: the K lowest-frequency 2-D DCT-II basis functions (ordered by spatial frequency
  ``(u/H)^2 + (v/W)^2``): a smooth, global perturbation.
- ``gaussian``: K Gaussian bumps on a regular grid of spacing ``s ~ S``, width ``sigma = s/2``,
  normalised to sum to one at every pixel: a pixel-wise perturbation on the grid smoothed by a
  Gaussian, a soft version of the ``grid`` template (``--superpixel grid``, the third control,
  which is piecewise constant on S x S blocks).

Budget and norm follow :class:`~sai_attack.attacks.spaces.SuperpixelSpace`: the variable is the
coefficient vector ``c`` (B, 3, K), one value per channel and basis function, and the perturbation
is ``Scale_eps(Crop_m(B c))``, ``B`` the (H*W, K) basis applied to every channel, with the same
initial noise, gradient w.r.t. ``c`` and budget protocols. The scale of ``B`` is the natural unit
of each norm (with the ``exact`` L2 budget it does not matter at all):

- L2: basis images of unit L2 norm on average (the DCT basis is then orthonormal), so the L2 norm
  of ``c`` is that of the perturbation and a step of ``alpha`` moves it by about ``alpha``, as in
  the pixel space;
- L-infinity: scaled like the block indicators of a grid of the same K (DCT images of L2 norm
  ``sqrt(H*W/K)``, Gaussian bumps summing to one at every pixel), so a coefficient is about a
  pixel value and a sign step of ``alpha`` changes pixels by about ``alpha``.

L-infinity: the superpixel space clips ``n`` into the box because its perturbation is ``n``
painted piecewise constant. Here one pixel mixes many coefficients, so clipping ``c`` would not
bound the pixels, and clipping the pixels would leave the span of the basis. Instead, after every
step (and after the initial noise) ``c`` is rescaled, per sample, so that the largest
``|Crop_m(B c)|`` is at most ``eps``: the perturbation stays in the box *and* in the span, and
since ``B`` is linear the rescaling is exactly a projection along the ray through the origin. The
``within`` render then clips nothing; the ``exact`` render puts every non-zero value at ``+-eps``
as for the other spaces (which leaves the span: a sign pattern of the smooth perturbation).
With L2 the render projects or rescales the whole perturbation, which keeps it in the span.

The attention mask cuts the perturbation per pixel (there are no regions to align it to), so a
masked perturbation is smooth inside the mask only.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import numpy as np
import torch

from sai_attack import options
from sai_attack import superpixels as sp
from sai_attack.attacks.spaces import Bound, Space, _SuperpixelBound


class SeparableBasis:
    """K basis images ``left[:, u_k] right[:, v_k]^T``: a separable linear map (B, C, K) -> pixels.

    Args:
        left: (H, U) column factors.
        right: (W, V) row factors.
        index: (K,) int64 positions ``u_k * V + v_k`` of the K basis images in the U x V grid.
    """

    def __init__(self, left: torch.Tensor, right: torch.Tensor, index: torch.Tensor) -> None:
        self.left, self.right, self.index = left, right, index

    @property
    def k(self) -> int:
        """The number K of basis images."""
        return int(self.index.numel())

    def rms_norm(self) -> float:
        """The root mean square of the K basis images' L2 norms."""
        norms = self.left.norm(dim=0)[:, None] * self.right.norm(dim=0)[None]  # (U, V)
        return float(norms.flatten()[self.index].square().mean().sqrt())

    def scaled(self, factor: float) -> SeparableBasis:
        """The basis with every image multiplied by ``factor``."""
        return SeparableBasis(self.left * factor, self.right, self.index)

    def to(self, like: torch.Tensor) -> SeparableBasis:
        """The basis in ``like``'s dtype and device."""
        f = functools.partial(torch.Tensor.to, device=like.device)
        return SeparableBasis(
            f(self.left, dtype=like.dtype), f(self.right, dtype=like.dtype), f(self.index)
        )

    def paint(self, c: torch.Tensor) -> torch.Tensor:
        """``B c``: (B, C, H, W) from coefficients (B, C, K); differentiable in ``c``."""
        b, ch, _ = c.shape
        u, v = self.left.shape[1], self.right.shape[1]
        grid = c.new_zeros(b, ch, u * v).index_add(2, self.index, c).view(b, ch, u, v)
        return self.left @ grid @ self.right.T  # (H, U) (B, C, U, V) (V, W) -> (B, C, H, W)


@functools.lru_cache(maxsize=16)
def dct_basis(h: int, w: int, k: int) -> SeparableBasis:
    """The K lowest-frequency orthogonal 2-D DCT-II basis images of an (H, W) image.

    Frequencies ``(u, v)`` are taken in increasing ``(u/H)^2 + (v/W)^2`` (ties: smaller ``u``
    first); every basis image has L2 norm ``sqrt(H*W/K)``, the norm of a block of a K-block grid.

    Raises:
        ValueError: ``k`` is not in ``[1, H*W]``.
    """
    if not 1 <= k <= h * w:
        raise ValueError(f"the dct space needs 1 <= K <= H*W = {h * w}, got K = {k}")
    u, v = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    u, v = u.ravel(), v.ravel()
    freq = (u / h) ** 2 + (v / w) ** 2
    order = np.lexsort((v, u, freq))[:k]  # by frequency, then u, then v
    chosen_u, chosen_v = torch.from_numpy(u[order]), torch.from_numpy(v[order])
    rows, cols = int(chosen_u.max()) + 1, int(chosen_v.max()) + 1
    scale = math.sqrt(h * w / k)
    left = _dct_matrix(h, rows) * scale  # the scale on one factor scales every basis image
    return SeparableBasis(left, _dct_matrix(w, cols), chosen_u * cols + chosen_v)


def _dct_matrix(n: int, m: int) -> torch.Tensor:
    """The first ``m`` orthonormal DCT-II basis vectors of length ``n``, as columns (n, m)."""
    x = torch.arange(n, dtype=torch.float64)[:, None] + 0.5
    f = torch.arange(m, dtype=torch.float64)[None]
    basis = torch.cos(math.pi * x * f / n) * math.sqrt(2.0 / n)
    basis[:, 0] /= math.sqrt(2.0)
    return basis


def gaussian_grid(h: int, w: int, k: int) -> tuple[int, int]:
    """The (rows, columns) of the Gaussian grid for about K bumps: ``round(H/S) x round(W/S)``."""
    if k < 1:
        raise ValueError(f"the gaussian space needs K >= 1, got K = {k}")
    s = math.sqrt(h * w / k)
    return max(1, min(h, round(h / s))), max(1, min(w, round(w / s)))


@functools.lru_cache(maxsize=16)
def gaussian_basis(h: int, w: int, k: int) -> SeparableBasis:
    """Normalised Gaussian bumps on a ``gaussian_grid(h, w, k)`` grid of an (H, W) image.

    Centres at ``(i + 1/2) * H / rows`` (pixel centres at ``y + 1/2``), width ``sigma`` half the
    spacing in each direction; at every pixel the bumps sum to one (the 1-D factors are
    normalised per pixel, which normalises their product), so constant coefficients give a
    constant perturbation, as for the grid template.
    """
    rows, cols = gaussian_grid(h, w, k)
    left, right = _bumps(h, rows), _bumps(w, cols)
    return SeparableBasis(left, right, torch.arange(rows * cols))


def _bumps(n: int, m: int) -> torch.Tensor:
    """(n, m): ``m`` Gaussians of width half their spacing over ``n`` pixels, rows summing to 1."""
    spacing = n / m
    x = torch.arange(n, dtype=torch.float64)[:, None] + 0.5
    centres = (torch.arange(m, dtype=torch.float64)[None] + 0.5) * spacing
    g = torch.exp(-0.5 * ((x - centres) / (spacing / 2)) ** 2)
    return g / g.sum(dim=1, keepdim=True)


class _BasisBound(_SuperpixelBound):
    """The superpixel bound with a linear basis instead of a template.

    ``paint`` is the basis; the render ``Scale_eps(Crop_m(B c))``, the gradient w.r.t. ``c`` and
    ``finish`` are the superpixel space's; ``step`` and ``init`` fit the box in L-infinity
    (module docstring).
    """

    def __init__(self, space: ControlSpace, basis: SeparableBasis, images, mask, eps, budget, norm):
        Bound.__init__(self, images, mask, eps, budget, norm)
        self.space, self.basis, self.weights = space, basis, None
        self.cropped = None  # a basis is not constant per region: paint, crop, then the budget
        self.counts = [basis.k] * images.shape[0]
        self.sizes = torch.full((images.shape[0],), 3.0 * basis.k, dtype=torch.float64)

    def paint(self, n: torch.Tensor) -> torch.Tensor:
        """``B c``: (B, 3, H, W) from coefficients (B, 3, K)."""
        return self.basis.paint(n)

    def _fit_box(self, n: torch.Tensor) -> torch.Tensor:
        """``n`` scaled per sample so that ``max |Crop_m(B n)| <= eps`` (L-infinity only)."""
        if self.norm != "linf":
            return n
        painted = self.paint(n)
        if self.mask is not None:
            painted = painted * self.mask
        peak = painted.detach().flatten(1).abs().amax(dim=1)  # (B,)
        factor = torch.clamp(self.eps / peak.clamp_min(1e-30), max=1.0)
        return n * factor.view(-1, 1, 1)

    def init(self, seeds: list[int], alpha: float, random_start: bool) -> torch.Tensor:
        """The superpixel space's initial noise, fitted into the box (L-infinity)."""
        return self._fit_box(super().init(seeds, alpha, random_start))

    def step(self, v: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
        """``v + delta``, fitted into the box (L-infinity); L2 is bounded by the render."""
        return self._fit_box(v.detach() + delta)


class ControlSpace(Space):
    """A space of K basis images per channel, K from the superpixel settings; no image content.

    Args:
        config: The superpixel settings; only the count (``n_segments`` or the size S) is read.
        init_scale: Size of the initial noise in units of the step, as for superpixels.
    """

    uses_superpixels = False
    grad_mode = "noise"  # the gradient w.r.t. the coefficients (there are no regions to average)

    def __init__(self, config: sp.SuperpixelConfig | None = None, init_scale: float = 1.0) -> None:
        if not init_scale >= 0:
            raise ValueError(f"init_scale must be >= 0, got {init_scale}")
        self.config = config if config is not None else sp.SuperpixelConfig()
        self.init_scale = float(init_scale)

    @classmethod
    def from_settings(
        cls,
        config: sp.SuperpixelConfig,
        grad_mode: str,
        init_scale: float,
        texture_weight: float = options.default("texture_weight"),
    ) -> ControlSpace:
        """The space with the count of ``config``; only the noise gradient applies here.

        Raises:
            ValueError: ``grad_mode`` is not ``noise`` or ``texture_weight`` is not 0 (both need
                superpixels).
        """
        if options.check("grad_mode", grad_mode) != "noise":
            raise ValueError(f"grad_mode must be noise for the {cls.name} space, got {grad_mode!r}")
        if options.check("texture_weight", texture_weight) != 0:
            raise ValueError(
                f"texture_weight needs superpixels; the {cls.name} space has none, got "
                f"{texture_weight:g}"
            )
        return cls(config, init_scale)

    def count(self, shape: tuple[int, int]) -> int:
        """The K of the superpixel settings for an (H, W) image (at most H*W)."""
        h, w = shape
        return min(self.config.count((h, w)), h * w)

    def basis(self, shape: tuple[int, int]) -> SeparableBasis:
        """The basis for an (H, W) image (float64, CPU, cached)."""
        raise NotImplementedError

    def bind(self, images, templates, mask, eps, budget, norm) -> Bound:
        """The space bound to a batch (``templates`` is ignored)."""
        basis = self.basis(tuple(images.shape[-2:]))
        if norm == "l2":  # unit images on average: ||c|| is the perturbation's norm
            basis = basis.scaled(1.0 / basis.rms_norm())
        return _BasisBound(self, basis.to(images), images, mask, eps, budget, norm)

    def describe(self) -> dict[str, Any]:
        """The count setting and the initial scale."""
        c = self.config
        return {
            "superpixel_size": c.size if c.n_segments is None else None,
            "n_segments": c.n_segments,
            "init_scale": self.init_scale,
        }


class DCTSpace(ControlSpace):
    """The K lowest-frequency DCT basis images per channel (:func:`dct_basis`)."""

    name = "dct"

    def basis(self, shape: tuple[int, int]) -> SeparableBasis:
        """The K lowest-frequency DCT-II basis images."""
        return dct_basis(*shape, self.count(shape))


class GaussianSpace(ControlSpace):
    """About K normalised Gaussian bumps on a regular grid per channel (:func:`gaussian_basis`)."""

    name = "gaussian"

    def basis(self, shape: tuple[int, int]) -> SeparableBasis:
        """The Gaussian bumps of the grid closest to K cells."""
        return gaussian_basis(*shape, self.count(shape))


CONTROL_SPACES: dict[str, type[ControlSpace]] = {"dct": DCTSpace, "gaussian": GaussianSpace}
"""The control spaces by name (registered in ``attacks.spaces.SPACES`` by ``attacks``)."""
