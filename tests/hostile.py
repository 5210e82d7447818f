"""A generator of malformed and unusual inputs (nothing binary is committed).

:func:`make_corpus` fills a folder and returns, for every entry, the expected outcome: ``"ok"`` for
inputs that must be converted and attacked, or the start of the one-line reason of the
``skipped: <reason>`` status in ``results.csv``.
"""

from __future__ import annotations

import io
import os
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

OK = "ok"


def _photo(w: int = 48, h: int = 40, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    low = rng.integers(0, 256, (max(1, h // 8), max(1, w // 8), 3), dtype=np.uint8)
    return Image.fromarray(low).resize((w, h), Image.Resampling.BILINEAR)


def _encode(im: Image.Image, fmt: str, **kwargs) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format=fmt, **kwargs)
    return buf.getvalue()


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return (
        struct.pack(">I", len(payload))
        + kind
        + payload
        + struct.pack(">I", zlib.crc32(kind + payload) & 0xFFFFFFFF)
    )


def _png_raw(width: int, height: int, depth: int, color: int, rows: bytes | None) -> bytes:
    """A hand-made PNG (for 16-bit RGB and for headers Pillow would refuse to write)."""
    header = struct.pack(">IIBBBBB", width, height, depth, color, 0, 0, 0)
    body = _png_chunk(b"IHDR", header)
    if rows is not None:
        body += _png_chunk(b"IDAT", zlib.compress(rows))
    return b"\x89PNG\r\n\x1a\n" + body + _png_chunk(b"IEND", b"")


def _png16_rgb(w: int = 20, h: int = 12) -> bytes:
    arr = (np.linspace(0, 65535, w * h * 3).reshape(h, w, 3)).astype(">u2")
    rows = b"".join(b"\x00" + arr[y].tobytes() for y in range(h))
    return _png_raw(w, h, 16, 2, rows)


def make_corpus(folder: Path, labelled: bool) -> dict[str, str]:
    """Write the corpus into ``folder``, with a hostile ``labels.csv`` when ``labelled``.

    Returns:
        The expected outcome per input name (file names, and names listed in labels.csv).
    """
    folder.mkdir(parents=True, exist_ok=True)
    expected: dict[str, str] = {}
    files: dict[str, bytes] = {}

    def add(name: str, payload: bytes, outcome: str = OK) -> None:
        files[name] = payload
        expected[name] = outcome

    photo = _photo()
    # Converted and processed.
    add("rgb.png", _encode(photo, "PNG"))
    add("gray.png", _encode(photo.convert("L"), "PNG"))
    add("gray_alpha.png", _encode(photo.convert("LA"), "PNG"))
    add("rgba.png", _encode(photo.convert("RGBA"), "PNG"))
    add("palette.png", _encode(photo.convert("P", palette=Image.Palette.ADAPTIVE), "PNG"))
    pal = photo.convert("P", palette=Image.Palette.ADAPTIVE)
    pal.info["transparency"] = 0
    add("palette_transparent.png", _encode(pal, "PNG", transparency=0))
    add("bilevel.png", _encode(photo.convert("1"), "PNG"))
    gray16 = Image.fromarray((np.arange(40 * 48).reshape(40, 48) * 30).astype(np.uint16))
    add("gray16.png", _encode(gray16, "PNG"))
    add("rgb16.png", _png16_rgb())
    floats = np.random.default_rng(1).random((30, 30), dtype=np.float32)
    add("float32.tif", _encode(Image.fromarray(floats), "TIFF"))
    add("cmyk.jpg", _encode(photo.convert("CMYK"), "JPEG"))
    exif = Image.Exif()
    exif[0x0112] = 6
    add("exif_rotated.jpg", _encode(_photo(60, 20), "JPEG", exif=exif.tobytes()))
    frames = [_photo(seed=s) for s in range(3)]
    add("animated.gif", _encode(frames[0], "GIF", save_all=True, append_images=frames[1:]))
    add("multipage.tif", _encode(frames[0], "TIFF", save_all=True, append_images=frames[1:]))
    add("transparent.gif", _encode(photo.convert("P"), "GIF", transparency=0))
    add("one_by_one.png", _encode(Image.new("RGB", (1, 1), (200, 10, 10)), "PNG"))
    add("two_by_two.png", _encode(_photo(2, 2), "PNG"))
    add("thin_strip.png", _encode(_photo(3000, 2), "PNG"))
    add("large.png", _encode(_photo(1600, 1200), "PNG"))
    add("photo.bmp", _encode(photo, "BMP"))
    add("photo.webp", _encode(photo, "WEBP"))
    add("photo.ppm", _encode(photo, "PPM"))
    add("UPPER.PNG", _encode(photo, "PNG"))
    add("jpeg_named.png", _encode(photo, "JPEG"))
    add("png_named.jpg", _encode(photo, "PNG"))
    add("name with spaces.png", _encode(photo, "PNG"))
    add('quote\'s "double".png', _encode(photo, "PNG"))
    add("<img src=x onerror=alert(1)>.png", _encode(photo, "PNG"))
    add("comma,semicolon;.png", _encode(photo, "PNG"))
    add("line\nbreak.png", _encode(photo, "PNG"))
    add("ümlaut-日本語.png", _encode(photo, "PNG"))
    add("a" * 245 + ".png", _encode(photo, "PNG"))
    # Not valid UTF-8: a labels CSV cannot name it, so with labels it has none.
    add(os.fsdecode(b"latin1-caf\xe9.png"), _encode(photo, "PNG"),
        "no label for this image" if labelled else OK)  # fmt: skip
    add("unreadable.png", _encode(photo, "PNG"))  # chmod 000 below; root still reads it
    add("same.png", _encode(photo, "PNG"))
    add("same.jpg", _encode(photo, "JPEG"))  # same stem: outputs must not collide
    # Skipped, with their reason.
    add("empty.png", b"", "empty file (0 bytes)")
    add("text.png", b"just some text, not an image\n", "not a recognised image format")
    add("page.jpg", b"<!doctype html><html><body>hi</body></html>", "not a recognised image format")
    full = _encode(_photo(64, 64), "PNG")
    add("truncated.png", full[: len(full) // 2], "cannot decode image")
    jpeg = _encode(_photo(64, 64), "JPEG", quality=95)
    add("truncated.jpg", jpeg[: len(jpeg) // 2], "cannot decode image")
    add("bomb.png", _png_raw(40000, 40000, 8, 2, None), "image too large")
    add("zero_width.png", _png_raw(0, 10, 8, 2, b""), "not a recognised image format")
    add("magic_only.png", b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, "not a recognised image format")
    add("not_listed.png", _encode(photo, "PNG"), "no label for this image" if labelled else OK)
    for name, payload in files.items():
        path = folder / name
        path.write_bytes(payload)
    (folder / "unreadable.png").chmod(0)
    # Things that are not files.
    (folder / "directory.png").mkdir()
    expected["directory.png"] = "is a directory"
    os.symlink("loop_b.png", folder / "loop_a.png")
    os.symlink("loop_a.png", folder / "loop_b.png")
    expected["loop_a.png"] = expected["loop_b.png"] = "cannot read file"
    os.symlink("does-not-exist.png", folder / "dangling.png")
    expected["dangling.png"] = "cannot read file"
    os.mkfifo(folder / "fifo.png")
    expected["fifo.png"] = "not a regular file"
    os.symlink("/dev/zero", folder / "dev_zero.png")
    expected["dev_zero.png"] = "not a regular file"
    # Ignored by discovery (documented): hidden files and other extensions.
    (folder / ".hidden.png").write_bytes(_encode(photo, "PNG"))
    (folder / "notes.txt").write_text("not an image")

    if not labelled:
        return expected
    labels = {
        name: "1"
        for name, outcome in expected.items()
        if name != "not_listed.png" and not outcome.startswith("no label")
    }
    # Hostile label rows: each names a file that exists (or not) with a bad label.
    for name, raw, reason in [
        ("bad_label_text.png", "cat", "bad label in labels file: label 'cat' is not an integer"),
        ("bad_label_float.png", "3.5", "bad label in labels file: label '3.5' is not an integer"),
        ("bad_label_range.png", "1000", "bad label in labels file: label 1000 is outside 0..999"),
        ("bad_label_negative.png", "-1", "bad label in labels file: label -1 is outside 0..999"),
        ("bad_label_empty.png", "", "bad label in labels file: label '' is not an integer"),
    ]:
        (folder / name).write_bytes(_encode(photo, "PNG"))
        labels[name] = raw
        expected[name] = reason
    labels["listed_but_missing.png"] = "5"
    expected["listed_but_missing.png"] = "cannot read file"
    labels["../escape.png"] = "5"
    expected["../escape.png"] = "image name in labels file is not a plain file name"
    labels["sub/dir.png"] = "5"
    expected["sub/dir.png"] = "image name in labels file is not a plain file name"
    labels["conflict.png"] = "7"
    (folder / "conflict.png").write_bytes(_encode(photo, "PNG"))
    expected["conflict.png"] = "conflicting duplicate rows in labels file"
    _write_labels(folder / "labels.csv", labels)
    return expected


def _write_labels(path: Path, labels: dict[str, str]) -> None:
    """A labels CSV with a BOM, CRLF line ends, an identical and a conflicting duplicate row."""
    import csv

    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\r\n")
    w.writerow(["image", "label"])
    for name, raw in labels.items():
        w.writerow([name, raw])
    w.writerow(["rgb.png", labels["rgb.png"]])  # identical duplicate: ignored
    w.writerow(["conflict.png", "8"])  # conflicting duplicate: the image is skipped
    path.write_bytes(b"\xef\xbb\xbf" + buf.getvalue().encode("utf-8"))
