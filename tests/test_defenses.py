import math
from pathlib import Path

import numpy as np
import pytest
import scipy.fft
import scipy.ndimage as ndi
import scipy.sparse as sps
import scipy.sparse.linalg as spla
import torch

from conftest import textured_images
from sai_attack import defenses as D
from sai_attack.data import load_image

SAMPLES = Path(D.__file__).parents[1] / "samples"  # sai_attack/samples


def _sample(size=None) -> torch.Tensor:
    """A bundled natural image as (1, 3, H, W) in [0, 1]."""
    a = load_image(sorted(SAMPLES.glob("*.png"))[0])
    if size is not None:
        a = a[40 : 40 + size[0], 60 : 60 + size[1]]
    return torch.from_numpy(a.copy()).permute(2, 0, 1)[None].float() / 255.0


ALL_SPECS = [
    "none", "resize:2", "resize:2.5", "jpeg:55", "dnn-jpeg:50", "avgpool:3", "maxpool:3",
    "tvm", "bitdepth:3", "median:3",
]  # fmt: skip


def test_registry_names():
    assert list(D.DEFENSES) == [
        "none", "resize", "jpeg", "dnn-jpeg", "avgpool", "maxpool", "tvm", "bitdepth", "median",
    ]  # fmt: skip
    for cls in D.DEFENSES.values():
        # Each defense cites its paper and states its limitations.
        doc = cls.__doc__ or ""
        if cls.name != "none":
            assert "Paper:" in doc
            assert "Limitations:" in doc


@pytest.mark.parametrize("spec", ALL_SPECS)
def test_shape_range_and_determinism(spec):
    x = torch.rand(3, 3, 30, 27, generator=torch.Generator().manual_seed(0))
    defense = D.parse_defense(spec)
    y = defense(x, seeds=[1, 2, 3])
    assert y.shape == x.shape
    assert y.dtype == x.dtype
    assert float(y.min()) >= 0.0
    assert float(y.max()) <= 1.0
    torch.testing.assert_close(defense(x, seeds=[1, 2, 3]), y, rtol=0, atol=0)
    # The first image of a batch is processed like any other (a known bug elsewhere skips it).
    torch.testing.assert_close(defense(x[:1], seeds=[1]), y[:1], rtol=0, atol=1e-6)
    torch.testing.assert_close(defense(x[1:2], seeds=[2]), y[1:2], rtol=0, atol=1e-6)
    if spec != "none":
        assert not torch.equal(y[0], x[0])


@pytest.mark.parametrize(
    "spec", ["resize:1", "resize:2", "resize:2.7", "avgpool:5", "maxpool:7", "median:5", "tvm"]
)
def test_constant_image_unchanged(spec):
    x = torch.full((2, 3, 17, 20), 0.4)
    x[1] = 0.8
    # TVM converges to the constant up to its solver tolerance.
    atol = 1e-4 if spec == "tvm" else 1e-6
    torch.testing.assert_close(D.parse_defense(spec)(x), x, rtol=0, atol=atol)


@pytest.mark.parametrize("d", [1, 2, 3, 8])
def test_bitdepth_levels_and_fixed_points(d):
    levels = 2**d - 1
    grid = torch.full((1, 3, 4, 4), min(2, levels) / levels)
    torch.testing.assert_close(D.bitdepth(grid, d), grid)
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    y = D.bitdepth(x, d)
    assert len(torch.unique(y)) <= 2**d
    torch.testing.assert_close(y, torch.round(x * levels) / levels)
    x8 = torch.round(x * 255) / 255
    if d == 8:
        torch.testing.assert_close(D.bitdepth(x8, 8), x8, rtol=0, atol=0)


def test_resize_known_answer():
    # gamma = 2 halves a 4x4 image by averaging 2x2 blocks (bilinear, half-pixel centres): a
    # checkerboard of 1x1 cells becomes uniform grey.
    x = torch.zeros(1, 3, 4, 4)
    x[..., ::2, ::2] = 1.0
    x[..., 1::2, 1::2] = 1.0
    torch.testing.assert_close(D.resize(x, 2.0), torch.full_like(x, 0.5))
    # Sizes are rounded to the nearest pixel.
    y = D.Resize(3)(torch.rand(1, 3, 224, 224))
    assert y.shape == (1, 3, 224, 224)


def test_pooling_and_median_match_scipy():
    x = torch.rand(2, 3, 11, 9, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    a = x.numpy()
    for k in (3, 5):
        size = (1, 1, k, k)
        # Windows over the border use only the pixels inside the image.
        ones = np.ones_like(a)
        avg = ndi.uniform_filter(a, size, mode="constant") / ndi.uniform_filter(
            ones, size, mode="constant"
        )
        np.testing.assert_allclose(D.avgpool(x, k).numpy(), avg, atol=1e-12)
        np.testing.assert_array_equal(
            D.maxpool(x, k).numpy(), ndi.maximum_filter(a, size, mode="nearest")
        )
        np.testing.assert_array_equal(
            D.median(x, k).numpy(), ndi.median_filter(a, size, mode="nearest")
        )
    # Median smoothing removes an isolated outlier.
    img = torch.full((1, 3, 7, 7), 0.5)
    img[0, :, 3, 3] = 1.0
    torch.testing.assert_close(D.median(img, 3), torch.full_like(img, 0.5))


@pytest.mark.parametrize(
    "fn", [lambda x: D.resize(x, 2.0), lambda x: D.resize(x, 1.5), lambda x: D.avgpool(x, 3),
           lambda x: D.maxpool(x, 3)],
)  # fmt: skip
def test_gradients(fn):
    x = torch.rand(1, 3, 6, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    x.requires_grad_(True)
    assert torch.autograd.gradcheck(fn, (x,))
    fn(x).sum().backward()
    assert x.grad is not None
    assert float(x.grad.abs().sum()) > 0


def test_differentiable_flags_and_no_grad():
    x = torch.rand(1, 3, 8, 8, requires_grad=True)
    for spec in ("resize:2", "avgpool:3", "maxpool:3", "median:3"):
        assert D.parse_defense(spec)(x).requires_grad
    for spec in ("jpeg:50", "dnn-jpeg:50", "bitdepth:3", "tvm"):
        assert not D.parse_defense(spec)(x).requires_grad


# -- JPEG ----------------------------------------------------------------------------------------


def test_jpeg_q100_close_to_identity_and_monotone():
    x = _sample()
    y100 = D.jpeg(x, 100, subsampling=0)
    err = (y100 - x).abs() * 255
    assert float(err.mean()) < 1.0
    assert float(err.max()) <= 6.0
    err50 = float(((D.jpeg(x, 50) - x).abs() * 255).mean())
    err_default_100 = float(((D.jpeg(x, 100) - x).abs() * 255).mean())
    assert float(err.mean()) < err_default_100 < err50
    # Output is a decoded 8-bit image.
    torch.testing.assert_close(y100, torch.round(y100 * 255) / 255)


# -- DNN-oriented JPEG ---------------------------------------------------------------------------


def test_dnn_jpeg_table_scaling():
    t50 = D.dnn_jpeg_table(50)
    expected = np.full((8, 8), 30)
    expected[:4, :4] = 25
    np.testing.assert_array_equal(t50, expected)
    np.testing.assert_array_equal(D.dnn_jpeg_table(100), np.ones((8, 8)))
    # libjpeg scaling: q = 25 doubles the table (scale 200), q = 75 halves it (scale 50).
    np.testing.assert_array_equal(D.dnn_jpeg_table(25), expected * 2)
    np.testing.assert_array_equal(D.dnn_jpeg_table(75), (expected * 50 + 50) // 100)
    assert D.dnn_jpeg_table(1).max() == 255
    with pytest.raises(ValueError, match=r"dnn-jpeg quality q must be an integer in 1..100, got 0"):
        D.dnn_jpeg_table(0)


def _expected_block(block: np.ndarray, table: np.ndarray) -> np.ndarray:
    """DCT -> quantise -> dequantise -> IDCT of one 8x8 block of 0-255 values (scipy)."""
    coef = scipy.fft.dctn(block.astype(np.float64) - 128.0, norm="ortho")
    rec = scipy.fft.idctn(np.round(coef / table) * table, norm="ortho") + 128.0
    return np.clip(np.round(rec), 0, 255)


@pytest.mark.parametrize("quality", [50, 20, 90])
def test_dnn_jpeg_applies_table_exactly_on_one_block(quality):
    rng = np.random.default_rng(quality)
    gray = rng.integers(0, 256, size=(8, 8))
    table = D.dnn_jpeg_table(quality)
    expected = _expected_block(gray, table)
    # A grey block: in YCbCr, Y is the grey level and Cb = Cr = 128 exactly.
    x = torch.from_numpy(np.repeat(gray[None, None] / 255.0, 3, axis=1)).float()
    # The block is the first image of a batch; it must be processed.
    batch = torch.cat([x, torch.rand(1, 3, 8, 8)])
    out = D.dnn_jpeg(batch, quality)
    for c in range(3):
        np.testing.assert_array_equal(np.round(out[0, c].numpy() * 255), expected)
    assert not np.array_equal(expected, gray)
    # In RGB mode every channel is its own block.
    colour = rng.integers(0, 256, size=(3, 8, 8))
    out_rgb = D.dnn_jpeg(torch.from_numpy(colour[None] / 255.0).float(), quality, "rgb")
    for c in range(3):
        np.testing.assert_array_equal(
            np.round(out_rgb[0, c].numpy() * 255), _expected_block(colour[c], table)
        )


def test_dnn_jpeg_pads_to_multiples_of_8():
    rng = np.random.default_rng(5)
    img = rng.integers(0, 256, size=(3, 10, 13))
    padded = np.pad(img, ((0, 0), (0, 6), (0, 3)), mode="edge")
    table = D.dnn_jpeg_table(50)
    expected = np.zeros_like(padded, dtype=np.float64)
    for c in range(3):
        for i in range(0, 16, 8):
            for j in range(0, 16, 8):
                expected[c, i : i + 8, j : j + 8] = _expected_block(
                    padded[c, i : i + 8, j : j + 8], table
                )
    out = D.dnn_jpeg(torch.from_numpy(img[None] / 255.0).float(), 50, "rgb")
    assert out.shape == (1, 3, 10, 13)
    np.testing.assert_array_equal(np.round(out[0].numpy() * 255), expected[:, :10, :13])


# -- TVM -----------------------------------------------------------------------------------------


def tv_admm_reference(f: np.ndarray, keep: np.ndarray, lam: float, rho: float = 1.0):
    """Slow reference: ADMM / split Bregman for 0.5*|keep*(u-f)|^2 + lam*TV_iso(u), one channel.

    A different algorithm from the library's primal-dual solver: the u-step solves the linear
    system (diag(keep) + rho D^T D) u = ... exactly with a sparse LU factorisation, the d-step is
    the isotropic shrinkage. 3000 iterations bring the objective within about 1e-8 (relative) of
    its optimum on 20x20 images, far below the tolerance tested.
    """
    h, w = f.shape

    def diff(k):
        d = sps.lil_matrix((k, k))
        for i in range(k - 1):
            d[i, i], d[i, i + 1] = -1.0, 1.0
        return d.tocsr()

    n = h * w
    grad = sps.vstack(
        [sps.kron(sps.identity(h), diff(w)), sps.kron(diff(h), sps.identity(w))]
    ).tocsr()
    m = keep.ravel().astype(np.float64)
    lu = spla.splu((sps.diags(m) + rho * (grad.T @ grad)).tocsc())
    fv = f.ravel()
    d = np.zeros(2 * n)
    b = np.zeros(2 * n)
    for _ in range(3000):
        u = lu.solve(m * fv + rho * (grad.T @ (d - b)))
        gu = grad @ u
        v = gu + b
        mag = np.hypot(v[:n], v[n:])
        shrink = np.maximum(mag - lam / rho, 0.0) / np.where(mag > 0, mag, 1.0)
        d_new = v * np.concatenate([shrink, shrink])
        primal = np.linalg.norm(gu - d_new)
        dual = rho * np.linalg.norm(grad.T @ (d_new - d))
        d, b = d_new, v - d_new
        if primal < 1e-9 and dual < 1e-9:
            break
    return u.reshape(h, w)


def test_tvm_matches_reference_solver():
    """Stated tolerance (default 200 iterations): the objective within 1e-4 (relative) of the
    reference optimum, kept pixels (where the minimiser is unique) within 0.5/255, and the mean
    absolute difference over all pixels below 0.05/255."""
    images = torch.cat([textured_images(1, 20, seed=4), _sample((20, 20))]).double()
    keep = torch.stack(
        [torch.rand(3, 20, 20, generator=torch.Generator().manual_seed(s)) >= 0.5 for s in (7, 8)]
    )
    u = D.tv_reconstruct(images.float(), keep, 0.03).double()
    ref = torch.from_numpy(
        np.stack(
            [
                [
                    tv_admm_reference(images[i, c].numpy(), keep[i, c].numpy(), 0.03)
                    for c in range(3)
                ]
                for i in range(2)
            ]
        )
    )
    energy = D.tv_energy(u, images, keep.double(), 0.03)
    energy_ref = D.tv_energy(ref, images, keep.double(), 0.03)
    assert torch.all(energy >= energy_ref * (1 - 1e-7))  # the reference is (near) optimal
    assert torch.all((energy - energy_ref) / energy_ref < 1e-4)
    diff = (u - ref).abs() * 255
    assert float(diff[keep].max()) < 0.5
    assert float(diff.mean()) < 0.05


def test_tvm_seeding_masks_and_batch_independence():
    x = textured_images(3, 24, seed=9)
    y = D.tvm(x, seeds=[11, 12, 13])
    torch.testing.assert_close(D.tvm(x[1:2], seeds=[12]), y[1:2], rtol=0, atol=1e-6)
    assert not torch.allclose(D.tvm(x[:1], seeds=[99]), y[:1])
    # The object derives per-position seeds from its own seed when none are given.
    torch.testing.assert_close(D.TVM(seed=3)(x), D.TVM(seed=3)(x))
    assert not torch.allclose(D.TVM(seed=3)(x), D.TVM(seed=4)(x))
    # Without dropout and with a tiny weight the reconstruction is the image itself.
    torch.testing.assert_close(D.tvm(x, weight=1e-6, drop_rate=0.0), x, rtol=0, atol=1e-3)
    with pytest.raises(ValueError, match="tvm needs one seed per image, got 2 seeds for 3 images"):
        D.tvm(x, seeds=[1, 2])


def test_tvm_dropout_mask():
    keep = D.dropout_mask((3, 64, 64), seed=5)
    assert keep.dtype == torch.bool
    assert abs(float(keep.float().mean()) - 0.5) < 0.02
    assert not torch.equal(keep[0], keep[1])  # per pixel and channel
    assert torch.equal(keep, D.dropout_mask((3, 64, 64), seed=5))
    assert float(D.dropout_mask((3, 64, 64), seed=5, drop_rate=0.8).float().mean()) < 0.25
    # tvm reconstructs from exactly this mask.
    x = textured_images(1, 16, seed=2)
    expected = D.tv_reconstruct(x, D.dropout_mask((3, 16, 16), seed=21)[None], 0.03)
    torch.testing.assert_close(D.tvm(x, seeds=[21]), expected, rtol=0, atol=0)


# -- Parameters and specs ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: D.Resize(0.5), "resize factor gamma must be a number in [1, 100], got 0.5"),
        (lambda: D.Resize(math.nan), "resize factor gamma must be a number in [1, 100], got nan"),
        (lambda: D.JPEG(0), "jpeg quality q must be an integer in 1..100, got 0"),
        (lambda: D.JPEG(101), "jpeg quality q must be an integer in 1..100, got 101"),
        (lambda: D.JPEG(5.5), "jpeg quality q must be an integer in 1..100, got 5.5"),
        (lambda: D.JPEG(50, subsampling=4), "jpeg subsampling must be 0, 1, 2 or None, got 4"),
        (lambda: D.DnnJPEG(0), "dnn-jpeg quality q must be an integer in 1..100, got 0"),
        (lambda: D.DnnJPEG(50, "lab"), "dnn-jpeg colorspace must be 'ycbcr' or 'rgb', got 'lab'"),
        (lambda: D.AvgPool(4), "avgpool kernel size k must be an odd integer >= 1, got 4"),
        (lambda: D.MaxPool(0), "maxpool kernel size k must be an odd integer >= 1, got 0"),
        (lambda: D.Median(2), "median kernel size k must be an odd integer >= 1, got 2"),
        (lambda: D.BitDepth(9), "bitdepth d must be an integer in 1..8, got 9"),
        (lambda: D.BitDepth(0), "bitdepth d must be an integer in 1..8, got 0"),
        (lambda: D.TVM(weight=0), "tvm weight must be a number in (0, 10], got 0"),
        (lambda: D.TVM(drop_rate=1.0), "tvm drop_rate must lie in [0, 1), got 1.0"),
        (lambda: D.TVM(iterations=0), "tvm iterations must be an integer >= 1, got 0"),
    ],
)  # fmt: skip
def test_bad_parameters_rejected(make, message):
    with pytest.raises(ValueError, match=".") as exc:
        make()
    assert str(exc.value) == message


def test_bad_image_shapes_rejected():
    with pytest.raises(ValueError, match=r"expected \(B, 3, H, W\) images, got shape \(3, 8, 8\)"):
        D.Resize(2)(torch.rand(3, 8, 8))
    with pytest.raises(ValueError, match=r"got shape \(1, 1, 8, 8\)"):
        D.jpeg(torch.rand(1, 1, 8, 8), 50)


def test_sweeps_and_lists():
    sweep = D.parse_defenses(["resize:1.0..3.0:0.1"])
    assert len(sweep) == 21
    assert [d.gamma for d in sweep] == [round(1 + 0.1 * i, 1) for i in range(21)]
    assert sweep[10].spec == "resize:2"
    jpegs = D.parse_defenses(["jpeg:5..95:10"])
    assert [d.q for d in jpegs] == list(range(5, 96, 10))
    assert all(isinstance(d.q, int) for d in jpegs)
    assert [d.spec for d in D.parse_defenses(["avgpool:3,5,7", "avgpool:5", "none", "tvm"])] == [
        "avgpool:3", "avgpool:5", "avgpool:7", "none", "tvm:0.03",
    ]  # fmt: skip
    assert [d.d for d in D.parse_defenses(["bitdepth:2..4"])] == [2, 3, 4]
    assert D.parse_defense(" JPEG:55 ") == D.JPEG(55)
    assert D.parse_defense("tvm") == D.TVM(0.03)
    assert D.parse_defense("resize:2").param == 2.0
    assert D.parse_defense("none").param is None


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("blur:3", "unknown defense 'blur'; choose one of none, resize, jpeg, dnn-jpeg, avgpool, "
         "maxpool, tvm, bitdepth, median"),
        ("resize", "defense 'resize' needs its parameter gamma: resize:GAMMA (e.g. resize:2)"),
        ("jpeg:", "defense 'jpeg:' has an empty parameter after ':'"),
        ("none:3", "defense 'none' takes no parameter, got 'none:3'"),
        ("resize:abc", "defense 'resize:abc': 'abc' is not a number"),
        ("resize:3..1:0.1", "sweep 'resize:3..1:0.1': the end 1 is below the start 3"),
        ("resize:1..3:0", "sweep 'resize:1..3:0': the step must be > 0, got 0"),
        ("jpeg:5.5", "jpeg quality q must be an integer in 1..100, got 5.5"),
        ("jpeg:0..100:10", "jpeg quality q must be an integer in 1..100, got 0"),
        ("resize:1..100:0.01", "sweep 'resize:1..100:0.01' has 9901 values; at most 1000 are "
         "allowed"),
        ("avgpool:3,4", "avgpool kernel size k must be an odd integer >= 1, got 4"),
    ],
)  # fmt: skip
def test_bad_specs_rejected(spec, message):
    with pytest.raises(ValueError, match=".") as exc:
        D.parse_defenses([spec])
    assert str(exc.value) == message


def test_parse_defense_wants_one():
    with pytest.raises(ValueError, match="names 3 defenses; expected one"):
        D.parse_defense("avgpool:3,5,7")
    assert math.isclose(D.parse_defense("tvm:0.05").weight, 0.05)
