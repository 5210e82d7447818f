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
    torch.testing.assert_close(back, torch.round(x.clamp(0, 1) * 255.0) / 255.0)


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


# Small units of the checks that tests/test_hostile_inputs.py exercises end to end.


def test_image_format_from_header():
    assert data.image_format(b"\x89PNG\r\n\x1a\n") == "PNG"
    assert data.image_format(b"RIFF\x00\x00\x00\x00WEBPVP8 ") == "WEBP"
    assert data.image_format(b"P4\n2 2\n") == "PPM"
    with pytest.raises(data.ImageLoadError, match="^empty file"):
        data.image_format(b"")
    with pytest.raises(data.ImageLoadError, match="^not a recognised image format$"):
        data.image_format(b"RIFF\x00\x00\x00\x00AVI LIST")
    with pytest.raises(data.ImageLoadError, match="^unsupported image format 'PDF'"):
        data.image_format(b"%PDF-1.7")


def test_read_limited_refuses_a_file_that_grew(tmp_path):
    path = tmp_path / "f.bin"
    path.write_bytes(b"abc")
    with data.open_regular_file(path) as (f, size):
        path.write_bytes(b"abcdef")  # grows after opening
        with pytest.raises(data.FileReadError, match="grew while it was read"):
            data.read_limited(f, size, 100)
    with data.open_regular_file(path) as (f, size):
        assert data.read_limited(f, size, 100, already=f.read(2)) == b"abcdef"
        with pytest.raises(data.FileReadError, match="^file too large: 6 bytes"):
            data.read_limited(f, size, 5)


def test_name_problem():
    assert data.name_problem("ok name (1).png") is None
    assert data.name_problem("a\u2215b.png") is None  # looks like a slash, is not one
    assert data.name_problem("") == "it is empty"
    assert data.name_problem("a\x00") == "it contains a NUL byte"
    assert data.name_problem("a\\b") == "it contains a path separator"
    assert data.name_problem("..") == "it is '..'"


def test_labels_with_nul_bytes_and_ragged_rows(tmp_path):
    path = tmp_path / "labels.csv"
    path.write_bytes(b"image,label\na.png,1,extra\nb.png\nc\x00.png,3\n\nd.png,4\n")
    table = data.read_labels(path)
    assert table.labels == {"a.png": 1, "d.png": 4}
    assert table.problems["b.png"] == "bad label in labels file: label '' is not an integer"
    assert "NUL byte" in table.problems["c\x00.png"]


def test_discover_a_single_fifo_input(tmp_path):
    os.mkfifo(tmp_path / "pipe.png")
    inputs = data.discover_inputs(tmp_path / "pipe.png")  # not taken for a folder
    assert inputs.names == ["pipe.png"]
    with pytest.raises(data.ImageLoadError, match="^not a regular file$"):
        data.load_image(tmp_path / "pipe.png")


def test_size_text():
    from sai_attack.data.files import size_text

    assert [size_text(n) for n in (5, 1536, 256 * 2**20, 3 * 2**30)] == [
        "5 bytes",
        "1.5 KiB",
        "256 MiB",
        "3 GiB",
    ]


def test_discover_unlistable_folder_is_a_one_line_error(tmp_path, monkeypatch):
    def denied(self):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(type(tmp_path), "iterdir", denied)
    with pytest.raises(ValueError, match="^cannot list input folder .*: Permission denied$"):
        data.discover_inputs(tmp_path)
