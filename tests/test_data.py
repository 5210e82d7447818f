import io
import os

import numpy as np
import pytest
import torch
from PIL import Image

from sai_attack import data


def _png_bytes(im: Image.Image, fmt: str = "PNG", **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format=fmt, **kw)
    return buf.getvalue()


def test_decode_rgb_roundtrip():
    rng = np.random.default_rng(0)
    arr = rng.integers(0, 256, (5, 7, 3), dtype=np.uint8)
    out = data.decode_image(data.encode_png(arr))
    np.testing.assert_array_equal(out, arr)


@pytest.mark.parametrize(
    ("mode", "value", "expected"),
    [
        ("L", 100, (100, 100, 100)),
        ("1", 1, (255, 255, 255)),
        ("I;16", 65535, (255, 255, 255)),
        ("CMYK", (0, 0, 0, 0), (255, 255, 255)),
    ],
)
def test_decode_converts_modes(mode, value, expected):
    im = Image.new(mode, (4, 3), value)
    fmt = "JPEG" if mode == "CMYK" else "PNG"
    out = data.decode_image(_png_bytes(im, fmt))
    assert out.shape == (3, 4, 3)
    assert out.dtype == np.uint8
    np.testing.assert_allclose(out[0, 0], expected, atol=2)


def test_decode_rgba_composited_on_white():
    im = Image.new("RGBA", (2, 2), (255, 0, 0, 0))
    out = data.decode_image(_png_bytes(im))
    np.testing.assert_array_equal(out[0, 0], (255, 255, 255))
    im = Image.new("RGBA", (2, 2), (255, 0, 0, 255))
    np.testing.assert_array_equal(data.decode_image(_png_bytes(im))[0, 0], (255, 0, 0))


def test_decode_palette():
    im = Image.new("RGB", (3, 3), (10, 200, 30)).convert("P", palette=Image.Palette.ADAPTIVE)
    np.testing.assert_array_equal(data.decode_image(_png_bytes(im))[1, 1], (10, 200, 30))


def test_decode_applies_exif_orientation():
    im = Image.new("RGB", (6, 2), (0, 0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees
    out = data.decode_image(_png_bytes(im, "JPEG", exif=exif.tobytes()))
    assert out.shape[:2] == (6, 2)


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"", "empty file \\(0 bytes\\)"),
        (b"hello, this is text", "not a recognised image format"),
        (b"<html><body>hi</body></html>", "not a recognised image format"),
    ],
)
def test_decode_errors(payload, reason):
    with pytest.raises(data.ImageLoadError, match=f"^{reason}"):
        data.decode_image(payload)


def test_decode_truncated_png():
    arr = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    payload = data.encode_png(arr)
    with pytest.raises(data.ImageLoadError, match="cannot decode image"):
        data.decode_image(payload[: len(payload) // 2])


def test_load_image_missing_and_directory(tmp_path):
    with pytest.raises(data.ImageLoadError, match="cannot read file"):
        data.load_image(tmp_path / "nope.png")
    with pytest.raises(data.ImageLoadError, match="is a directory"):
        data.load_image(tmp_path)


def test_resize_center_crop_shapes():
    img = np.zeros((100, 200, 3), np.uint8)
    img[:, 40:160] = 255  # the centre square (and a margin) is white
    out = data.resize_center_crop(img, 50)
    assert out.shape == (50, 50, 3)
    assert out.min() == 255  # the black sides were cropped away
    same = data.resize_center_crop(out, 50)
    np.testing.assert_array_equal(same, out)
    with pytest.raises(ValueError, match="size must be >= 1, got 0"):
        data.resize_center_crop(img, 0)


def test_to_uint8_rounds_not_truncates():
    x = torch.tensor([0.0, 0.499 / 255, 0.501 / 255, 1.0, 1.2, -0.1]).view(1, 3, 1, 2)
    out = data.to_uint8(x)
    assert out.shape == (1, 1, 2, 3)
    np.testing.assert_array_equal(out.transpose(0, 3, 1, 2).ravel(), [0, 0, 1, 255, 255, 0])
    back = data.to_tensor(out)
    torch.testing.assert_close(back, data.quantize(x))


def test_atomic_write_replaces_and_leaves_no_temp(tmp_path):
    target = tmp_path / "sub" / "f.txt"
    data.atomic_write_text(target, "one")
    data.atomic_write_text(target, "two")
    assert target.read_text() == "two"
    assert os.listdir(target.parent) == ["f.txt"]
    # the permissions of an ordinary new file, not mkstemp's owner-only 0600
    plain = tmp_path / "plain.txt"
    plain.write_text("x")
    assert target.stat().st_mode & 0o777 == plain.stat().st_mode & 0o777


def test_read_labels_bom_crlf_and_problems(tmp_path):
    csv = tmp_path / "labels.csv"
    csv.write_bytes(
        "\ufeffimage,label,target\r\na.png,1,2\r\nb.png,x,3\r\nc.png,1000,1\r\n"
        "a.png,1,2\r\nd.png,5,\r\ne.png,4,1\r\ne.png,5,1\r\n".encode()
    )
    table = data.read_labels(csv)
    assert table.labels == {"a.png": 1, "d.png": 5}
    assert table.targets == {"a.png": 2}
    assert table.problems["b.png"] == "bad label in labels file: label 'x' is not an integer"
    assert table.problems["c.png"] == "bad label in labels file: label 1000 is outside 0..999"
    assert table.problems["e.png"].startswith("conflicting duplicate rows")
    assert any("duplicate row for 'a.png' ignored" in w for w in table.warnings)


def test_read_labels_missing_column(tmp_path):
    csv = tmp_path / "labels.csv"
    csv.write_text("image,class\na.png,1\n")
    with pytest.raises(
        data.LabelsError, match="lacks column\\(s\\) label; found columns: image, class"
    ):
        data.read_labels(csv)


def test_discover_inputs(tmp_path):
    for name in ("b.png", "a.jpg", "notes.txt"):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "labels.csv").write_text("image,label\na.jpg,3\nmissing.png,4\n")
    inputs = data.discover_inputs(tmp_path)
    assert inputs.names == ["a.jpg", "b.png", "missing.png"]
    assert inputs.labels.labels == {"a.jpg": 3, "missing.png": 4}
    single = data.discover_inputs(tmp_path / "b.png")
    assert single.names == ["b.png"]
    assert single.labels is None
    with pytest.raises(FileNotFoundError, match="does not exist"):
        data.discover_inputs(tmp_path / "nothing")


def test_discover_images_subfolder(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "x.png").write_bytes(b"x")
    (tmp_path / "labels.csv").write_text("image,label\nx.png,1\n")
    inputs = data.discover_inputs(tmp_path)
    assert inputs.root == tmp_path / "images"
    assert inputs.names == ["x.png"]


def test_unique_stems_are_safe_and_unique():
    stems = data.unique_stems(["a.png", "a.jpg", "A.png", "<script>x.png", "../up.png", ".hid.png"])
    assert stems["a.png"] == "a"
    assert stems["a.jpg"] == "a-2"
    assert stems["A.png"] == "A-3"
    assert "/" not in stems["../up.png"]
    assert "<" not in stems["<script>x.png"]
    assert not stems[".hid.png"].startswith(".")
    assert len(set(stems.values())) == len(stems)
