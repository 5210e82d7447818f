import re

import numpy as np
import pytest
import torch
from skimage import graph as skgraph
from skimage.color import rgb2lab

from conftest import quadrants
from sai_attack import superpixels as sp


def _assert_no_gaps(labels):
    k = labels.max() + 1
    assert set(np.unique(labels)) == set(range(k))
    assert labels.dtype == np.int64


@pytest.mark.parametrize("algorithm", ["slic", "slic-skimage", "grid"])
def test_four_quadrants_give_four_segments(algorithm):
    img = quadrants(16)
    labels = sp.segment(img, algorithm, n_segments=4)
    _assert_no_gaps(labels)
    assert labels.max() + 1 == 4
    for block in (labels[:8, :8], labels[:8, 8:], labels[8:, :8], labels[8:, 8:]):
        assert len(np.unique(block)) == 1


@pytest.mark.parametrize("algorithm", ["slic", "slic-skimage", "lsc", "seeds", "grid"])
def test_algorithms_give_valid_labels_near_requested_count(algorithm):
    rng = np.random.default_rng(0)
    low = rng.integers(0, 256, (12, 12, 3)).astype(np.uint8)
    img = np.kron(low, np.ones((6, 6, 1), np.uint8))  # 72 x 72, blocky texture
    labels = sp.segment(img, algorithm, size=6)
    _assert_no_gaps(labels)
    assert labels.shape == (72, 72)
    k = labels.max() + 1
    assert 0.4 * 144 <= k <= 1.6 * 144, k


def _diagonal_two_colours(n: int = 64) -> np.ndarray:
    """Red above the anti-diagonal, blue below: an edge no regular grid can follow."""
    img = np.zeros((n, n, 3), np.uint8)
    rows, cols = np.indices((n, n))
    img[rows + cols < n] = (200, 40, 40)
    img[rows + cols >= n] = (40, 40, 200)
    return img


def _purity(labels: np.ndarray, truth: np.ndarray) -> float:
    """Fraction of pixels whose segment's majority colour is their own colour."""
    k = labels.max() + 1
    ones = np.bincount(labels.ravel(), weights=truth.ravel(), minlength=k)
    sizes = np.bincount(labels.ravel(), minlength=k)
    return float(np.maximum(ones, sizes - ones).sum() / labels.size)


@pytest.mark.parametrize("algorithm", ["slic", "slic-skimage", "lsc", "seeds"])
def test_superpixels_follow_a_colour_edge_the_grid_cannot(algorithm):
    img = _diagonal_two_colours()
    truth = np.indices((64, 64)).sum(axis=0) >= 64
    assert _purity(sp.segment(img, "grid", size=8), truth) < 0.96  # the test can fail
    assert _purity(sp.segment(img, algorithm, size=8), truth) >= 0.99


@pytest.mark.parametrize("algorithm", ["slic", "slic-skimage"])
def test_slic_compactness_is_in_cielab_units(algorithm):
    # Regression: Lab handed to skimage was rescaled to [0, 1] there, which turned SLIC into a
    # grid at compactness 20. A real image must give irregular, colour-adhering segments.
    rng = np.random.default_rng(3)
    img = _diagonal_two_colours(48)
    img = np.clip(img + rng.normal(0, 4, img.shape), 0, 255).astype(np.uint8)
    labels = sp.segment(img, algorithm, size=6, compactness=20)
    grid = sp.segment(img, "grid", size=6)
    assert not np.array_equal(labels, grid)
    truth = np.indices((48, 48)).sum(axis=0) >= 48
    assert _purity(labels, truth) > _purity(grid, truth) + 0.02


def test_size_and_segments_agree():
    img = np.full((40, 40, 3), 128, np.uint8)
    assert sp.num_segments_for((40, 40), 5) == 64
    a = sp.segment(img, "grid", size=5)
    b = sp.segment(img, "grid", n_segments=64)
    np.testing.assert_array_equal(a, b)
    assert a.max() + 1 == 64


def test_grid_blocks_are_squares():
    labels = sp.segment(np.zeros((8, 12, 3), np.uint8), "grid", size=4)
    expected = np.repeat(np.repeat(np.arange(6).reshape(2, 3), 4, axis=0), 4, axis=1)
    np.testing.assert_array_equal(labels, expected)


def test_relabel_orders_by_first_appearance():
    labels = np.array([[7, 7, 3], [9, 3, 3]])
    np.testing.assert_array_equal(sp.relabel(labels), [[0, 0, 1], [2, 1, 1]])


def test_merge_known_answer_two_colours():
    img = np.zeros((8, 8, 3), np.uint8)
    img[:, 4:] = 255
    labels = sp.segment(img, "grid", size=2)  # 16 blocks, two colours
    merged = sp.merge_similar(img, labels, beta=1.0)
    _assert_no_gaps(merged)
    assert merged.max() + 1 == 2
    assert len(np.unique(merged[:, :4])) == 1
    assert len(np.unique(merged[:, 4:])) == 1
    np.testing.assert_array_equal(sp.merge_similar(img, labels, beta=0), labels)


def test_merge_is_transitive_and_uses_delta_e():
    # A ramp of 4 vertical stripes, neighbours 1 Delta E apart; ends 3 apart.
    lab_l = [50.0, 51.0, 52.0, 53.0]
    from skimage.color import lab2rgb

    img = np.zeros((4, 16, 3), np.float64)
    for i, light in enumerate(lab_l):
        img[:, 4 * i : 4 * i + 4] = lab2rgb(np.array([[[light, 0, 0]]]))[0, 0]
    img8 = np.round(img * 255).astype(np.uint8)
    labels = sp.segment(img8, "grid", size=4)
    lab = sp.mean_colors(img8, labels)
    step = np.linalg.norm(lab[1] - lab[0])
    assert 0.5 < step < 1.6
    assert sp.merge_similar(img8, labels, beta=step * 1.5).max() + 1 == 1  # all chained
    assert sp.merge_similar(img8, labels, beta=step * 0.5).max() + 1 == 4


def test_merge_matches_skimage_rag_threshold_cut():
    rng = np.random.default_rng(1)
    img = (rng.random((40, 40, 3)) * 60 + np.linspace(0, 180, 40)[None, :, None]).astype(np.uint8)
    labels = sp.segment(img, "slic", size=4)
    beta = 6.0
    ours = sp.merge_similar(img, labels, beta)
    rag = skgraph.rag_mean_color(rgb2lab(img), labels, connectivity=1, mode="distance")
    theirs = sp.relabel(skgraph.cut_threshold(labels, rag, beta, in_place=False))
    np.testing.assert_array_equal(ours, theirs)
    assert ours.max() < labels.max()


def test_segment_with_merge_reduces_count():
    img = quadrants(32)
    plain = sp.segment(img, "grid", size=4)
    merged = sp.segment(img, "grid", size=4, merge_beta=2.0)
    assert plain.max() + 1 == 64
    assert merged.max() + 1 == 4


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"algorithm": "watershed"},
            "superpixel 'watershed' is unknown; "
            "choose one of slic, slic-skimage, lsc, seeds, grid, slic-torch",
        ),
        ({"size": 0}, "superpixel_size must be a finite number in [1, 4096], got 0"),
        ({"size": 0.000001}, "superpixel_size must be a finite number in [1, 4096], got 1e-06"),
        ({"n_segments": 0}, "n_segments must be an integer in [1, 16777216], got 0"),
        (
            {"n_segments": 99999999999},
            "n_segments must be an integer in [1, 16777216], got 99999999999",
        ),
        ({"compactness": -1}, "compactness must be a finite number in (0, 10000], got -1"),
        ({"merge_beta": -0.5}, "merge_beta must be a finite number in [0, 1000], got -0.5"),
    ],
)
def test_segment_rejects_bad_parameters(kwargs, message):
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        sp.segment(quadrants(8), **kwargs)


def test_segment_rejects_bad_images():
    with pytest.raises(
        ValueError, match="image must be an \\(H, W, 3\\) array, got shape \\(8, 8\\)"
    ):
        sp.segment(np.zeros((8, 8)))
    with pytest.raises(ValueError, match="float images must lie in \\[0, 1\\]"):
        sp.segment(np.full((8, 8, 3), 2.0))


def test_fill_and_reduce_known_answers():
    labels = torch.tensor([[[0, 0, 1], [2, 2, 1]]])  # (1, 2, 3)
    values = torch.tensor([[[1.0, 2.0, 3.0], [10.0, 20.0, 30.0]]])  # (1, 2, 3)
    filled = sp.fill(values, labels)
    expected = torch.tensor([[[[1.0, 1, 2], [3, 3, 2]], [[10.0, 10, 20], [30, 30, 20]]]])
    torch.testing.assert_close(filled, expected)
    pixels = torch.tensor([[[[1.0, 3, -5], [2, -4, 1]]]])  # (1, 1, 2, 3)
    torch.testing.assert_close(
        sp.reduce(pixels, labels, 4, "sum"), torch.tensor([[[4.0, -4, -2, 0]]])
    )
    torch.testing.assert_close(
        sp.reduce(pixels, labels, 3, "mean"), torch.tensor([[[2.0, -2, -1]]])
    )
    torch.testing.assert_close(
        sp.reduce(pixels, labels, 3, "absmax"), torch.tensor([[[3.0, -5, -4]]])
    )
    with pytest.raises(ValueError, match="unknown reduction 'median'"):
        sp.reduce(pixels, labels, 3, "median")


def test_fill_gradient_is_sum_over_superpixel():
    labels = torch.tensor([[[0, 0, 1], [1, 1, 1]]])
    values = torch.zeros(1, 1, 2, requires_grad=True)
    weights = torch.arange(6.0).view(1, 1, 2, 3)
    (sp.fill(values, labels) * weights).sum().backward()
    torch.testing.assert_close(values.grad, torch.tensor([[[1.0, 14.0]]]))


def test_fill_rejects_wrong_labels():
    with pytest.raises(ValueError, match="superpixel labels must be an int64 \\(B, H, W\\) tensor"):
        sp.fill(torch.zeros(1, 3, 2), torch.zeros(1, 4, 4, dtype=torch.int32))


def test_segment_batch_matches_per_image():
    imgs = torch.rand(2, 3, 16, 16)
    config = sp.SuperpixelConfig("slic", size=4)
    batch = sp.segment_batch(imgs, config)
    assert batch.shape == (2, 16, 16)
    assert batch.dtype == torch.int64
    single = config(np.round(imgs[1].permute(1, 2, 0).numpy() * 255).astype(np.uint8))
    np.testing.assert_array_equal(batch[1].numpy(), single)


def test_opencv_algorithms_leave_the_opencv_thread_count_alone():
    import cv2

    before = cv2.getNumThreads()
    img = _diagonal_two_colours(32)
    for algorithm in ("slic", "lsc", "seeds"):
        sp.segment(img, algorithm, size=4)
    assert cv2.getNumThreads() == before


def test_adjacency_lists_each_4_adjacent_pair_once_in_order():
    labels = np.array(
        [
            [0, 0, 1, 1],
            [2, 2, 1, 3],
            [2, 4, 4, 3],
        ]
    )
    expected = [[0, 1], [0, 2], [1, 2], [1, 3], [1, 4], [2, 4], [3, 4]]
    np.testing.assert_array_equal(sp.adjacency(labels), expected)
    diagonal = np.array([[0, 1, 1], [2, 3, 1]])  # 0 and 3 touch only at a corner
    np.testing.assert_array_equal(sp.adjacency(diagonal), [[0, 1], [0, 2], [1, 3], [2, 3]])
    assert sp.adjacency(np.zeros((3, 3), np.int64)).shape == (0, 2)
