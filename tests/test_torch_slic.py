import re

import numpy as np
import pytest
import torch
from skimage.color import rgb2lab
from skimage.measure import label as connected_label

from conftest import quadrants
from sai_attack import options
from sai_attack import superpixels as sp
from sai_attack import torch_slic as ts


def _blocky(h: int, w: int, block: int = 6, seed: int = 0) -> np.ndarray:
    """Random colour blocks of ``block`` x ``block`` pixels, (h, w, 3) uint8."""
    rng = np.random.default_rng(seed)
    low = rng.integers(0, 256, (-(-h // block), -(-w // block), 3)).astype(np.uint8)
    return np.kron(low, np.ones((block, block, 1), np.uint8))[:h, :w]


def _tensor(*arrays: np.ndarray) -> torch.Tensor:
    return torch.stack([torch.from_numpy(a).permute(2, 0, 1) for a in arrays])  # (B, 3, H, W)


def _assert_valid(labels: np.ndarray) -> int:
    """Labels 0..K-1 without gaps, every segment 4-connected; returns K."""
    k = int(labels.max()) + 1
    assert labels.dtype == np.int64
    assert set(np.unique(labels)) == set(range(k))
    # One 4-connected component per label: labelling equal-valued regions finds exactly K.
    assert connected_label(labels + 1, connectivity=1, background=0).max() == k
    return k


@pytest.mark.parametrize(("h", "w"), [(60, 60), (48, 90), (90, 42)])
def test_labels_are_contiguous_connected_and_near_the_requested_count(h, w):
    img = _blocky(h, w)
    requested = sp.num_segments_for((h, w), 6)
    labels = ts.slic(_tensor(img), requested)[0].numpy()
    assert labels.shape == (h, w)
    k = _assert_valid(labels)
    assert 0.8 * requested <= k <= 1.25 * requested, (k, requested)


def test_same_labels_alone_or_in_a_batch_and_on_every_run():
    imgs = [_blocky(40, 56, block=5, seed=s) for s in range(4)]
    batch = ts.slic(_tensor(*imgs), 80)
    for i, img in enumerate(imgs):
        torch.testing.assert_close(ts.slic(_tensor(img), 80)[0], batch[i], rtol=0, atol=0)
    torch.testing.assert_close(ts.slic(_tensor(*imgs), 80), batch, rtol=0, atol=0)


def test_rectangles_on_the_grid_are_recovered_exactly():
    # 40 x 60 with S = 10: a 4 x 6 grid; four flat rectangles of 2 x 3 cells each.
    img = np.zeros((40, 60, 3), np.uint8)
    colours = [(200, 30, 30), (30, 200, 30), (30, 30, 200), (220, 220, 40)]
    for i, colour in enumerate(colours):
        img[(i // 2) * 20 : (i // 2 + 1) * 20, (i % 2) * 30 : (i % 2 + 1) * 30] = colour
    labels = ts.slic(_tensor(img), 24)[0].numpy()
    cells = (np.arange(40)[:, None] // 10) * 6 + np.arange(60)[None, :] // 10
    np.testing.assert_array_equal(labels, cells)  # every cell a superpixel, numbered in order
    merged = ts.merge_similar(_tensor(img), torch.from_numpy(labels)[None], 1.0)[0].numpy()
    rects = (np.arange(40)[:, None] // 20) * 2 + np.arange(60)[None, :] // 30
    np.testing.assert_array_equal(merged, rects)


def test_boundaries_follow_a_colour_edge_off_the_grid():
    n = 64
    rows, cols = np.indices((n, n))
    img = np.where((rows + cols < n)[..., None], (200, 40, 40), (40, 40, 200)).astype(np.uint8)
    labels = ts.slic(_tensor(img), sp.num_segments_for((n, n), 8))[0].numpy()
    side = rows + cols < n
    for k in range(labels.max() + 1):  # no superpixel straddles the diagonal
        assert len(np.unique(side[labels == k])) == 1


def test_four_quadrants_give_four_segments():
    labels = ts.slic(_tensor(quadrants(16)), 4)[0].numpy()
    np.testing.assert_array_equal(labels, (np.arange(16)[:, None] // 8) * 2 + np.arange(16) // 8)


def test_float_and_uint8_inputs_agree_and_are_left_untouched():
    img = _blocky(32, 40)
    as_uint8 = _tensor(img)
    as_float = as_uint8.float() / 255
    before_u, before_f = as_uint8.clone(), as_float.clone()
    a = ts.slic(as_uint8, 50)
    b = ts.slic(as_float, 50)
    m = ts.merge_similar(as_float, b, 10.0)
    assert torch.equal(a, b)
    assert m.shape == b.shape
    assert torch.equal(as_uint8, before_u)
    assert torch.equal(as_float, before_f)
    labels = a.clone()
    ts.merge_similar(as_uint8, labels, 10.0)
    assert torch.equal(labels, a)


def test_rgb_to_lab_matches_skimage():
    rng = np.random.default_rng(1)
    img = rng.integers(0, 256, (16, 16, 3)).astype(np.uint8)
    img[0, :6] = [(0, 0, 0), (255, 255, 255), (1, 1, 1), (255, 0, 0), (0, 255, 0), (0, 0, 255)]
    ours = ts.rgb_to_lab(_tensor(img))[0].permute(1, 2, 0).numpy()
    np.testing.assert_allclose(ours, rgb2lab(img), atol=1e-9)


def test_merge_with_zero_beta_is_identity_and_large_beta_merges_equal_colours():
    img = _blocky(36, 36, block=12, seed=3)  # 3 x 3 flat blocks
    labels = ts.slic(_tensor(img), 36)
    torch.testing.assert_close(ts.merge_similar(_tensor(img), labels, 0.0), labels, rtol=0, atol=0)
    merged = ts.merge_similar(_tensor(img), labels, 0.5)[0].numpy()
    blocks = (np.arange(36)[:, None] // 12) * 3 + np.arange(36) // 12
    np.testing.assert_array_equal(merged, blocks)  # the equal-coloured pieces of each block
    everything = ts.merge_similar(_tensor(img), labels, 1000.0)
    assert int(everything.max()) == 0


def test_merge_matches_the_numpy_merge():
    imgs = [100 + _blocky(48, 48, block=4, seed=s) // 16 for s in range(3)]  # similar colours
    labels = ts.slic(_tensor(*imgs), 64)
    merged = ts.merge_similar(_tensor(*imgs), labels, 4.0)
    for i, img in enumerate(imgs):
        theirs = sp.merge_similar(img, labels[i].numpy(), 4.0)
        np.testing.assert_array_equal(merged[i].numpy(), theirs)
        assert 0 < theirs.max() < labels[i].max()  # merged some superpixels, not all


def test_relabel_orders_by_first_appearance_like_the_numpy_relabel():
    rng = np.random.default_rng(2)
    raw = rng.integers(0, 40, (2, 9, 11)) * 3
    ours = ts.relabel(torch.from_numpy(raw))
    for i in range(2):
        np.testing.assert_array_equal(ours[i].numpy(), sp.relabel(raw[i]))


def test_connectivity_splits_pieces_and_joins_small_ones_to_the_segment_above():
    labels = torch.zeros(1, 6, 6, dtype=torch.long)
    labels[0, :, 3:] = 1
    labels[0, 5, 0] = 1  # a one-pixel piece of label 1 inside label 0's area
    labels[0, 2:4, 1] = 2  # a two-pixel piece
    out = ts.enforce_connectivity(labels, max_small=1)[0]
    expected = torch.zeros(6, 6, dtype=torch.long)
    expected[:, 3:] = 1
    expected[2:4, 1] = 2  # kept: 2 pixels > max_small
    assert torch.equal(out, expected)  # (5, 0) joined the segment above it
    split = labels.clone()
    split[0, :, 2] = 1  # label 1 now in two pieces: columns 2..5 and (5, 0)
    out = ts.enforce_connectivity(split, max_small=0)[0]
    assert int(out.max()) + 1 == 4
    assert out[5, 0] != out[0, 3]


def test_components_of_a_small_graph():
    src = torch.tensor([0, 1, 3, 5])
    dst = torch.tensor([1, 2, 4, 0])
    keep = torch.tensor([[True, True, True, False], [False, True, False, True]])
    roots = ts.components(src, dst, keep, 6)
    assert roots.tolist() == [[0, 0, 0, 3, 3, 5], [0, 1, 1, 3, 4, 0]]


def test_registry_entry_runs_batched_and_matches_the_array_path():
    assert options.check("superpixel", "slic-torch") == "slic-torch"
    config = sp.SuperpixelConfig("slic-torch", size=6, merge_beta=8.0)
    assert config.batched
    assert not sp.SuperpixelConfig("slic").batched
    imgs = [_blocky(36, 48, seed=s) for s in range(3)]
    images = _tensor(*imgs).float() / 255
    batch = sp.segment_batch(images, config, device="cpu")
    assert batch.dtype == torch.int64
    assert batch.device == images.device
    for i, img in enumerate(imgs):
        np.testing.assert_array_equal(batch[i].numpy(), config(img))
    raw = sp.SUPERPIXEL_ALGORITHMS["slic-torch"](imgs[0], 48, 6.0, 20.0)
    np.testing.assert_array_equal(raw, ts.slic(_tensor(imgs[0]), 48)[0].numpy())


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: ts.slic(torch.zeros(3, 8, 8), 4), "images must be a (B, 3, H, W) tensor"),
        (lambda: ts.slic(torch.zeros(1, 3, 8, 8), 0), "n_segments must be an integer >= 1, got 0"),
        (lambda: ts.slic(torch.zeros(1, 3, 8, 8), 4, -1.0), "compactness must be >= 0, got -1.0"),
        (
            lambda: ts.slic(torch.zeros(1, 3, 8, 8), 4, iterations=0),
            "iterations must be an integer >= 1, got 0",
        ),
        (
            lambda: ts.merge_similar(torch.zeros(1, 3, 8, 8), torch.zeros(1, 8, 8).long(), -1),
            "merge beta must be >= 0, got -1",
        ),
        (
            lambda: ts.merge_similar(torch.zeros(1, 3, 8, 8), torch.zeros(1, 8, 9).long(), 1),
            "labels shape (1, 8, 9) does not match images (1, 3, 8, 8)",
        ),
    ],
)
def test_errors_name_the_parameter(call, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        call()
