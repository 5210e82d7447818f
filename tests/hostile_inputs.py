"""A generator of hostile inputs for the data layer (round 2; nothing binary is committed).

Four classes, each with the outcome the data layer must give (``OK`` or the start of the
one-line reason of the :class:`~sai_attack.data.ImageLoadError` / ``skipped:`` status):

* :func:`format_cases`: files of formats outside the allow-list (EPS and PDF run Ghostscript in
  Pillow), under their own or another format's extension, and allowed formats under wrong names;
* :func:`write_size_cases`: sparse files of gigabytes and headers declaring huge images;
* :data:`NAME_CASES`: file names that are long in bytes, collide after truncation or by case,
  are Windows device names, or contain separator-like characters;
* :func:`labels_cases`: broken ``labels.csv`` texts (unclosed quotes, oversized fields, names
  that leave the folder).

:func:`make_hostile_inputs` writes the first two classes into a folder, like
``hostile.make_corpus``; :func:`fake_ghostscript` puts a ``gs`` on a PATH folder that leaves a
marker file when anything runs it.
"""

from __future__ import annotations

import csv
import io
import os
import stat
import struct
from pathlib import Path

from hostile import OK, _encode, _photo, _png_raw

UNSUPPORTED = "unsupported image format"
NOT_IMAGE = "not a recognised image format"
TOO_LARGE_IMAGE = "image too large"
TOO_LARGE_FILE = "file too large"
CANNOT_DECODE = "cannot decode image"

EPS = (
    b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 8 8\n%%EndComments\n"
    b"newpath 0 0 moveto 8 0 lineto 8 8 lineto closepath fill\nshowpage\n%%EOF\n"
)
PDF = (
    b"%PDF-1.4\n1 0 obj << /Type /Catalog /Pages 2 0 R >> endobj\n"
    b"2 0 obj << /Type /Pages /Kids [] /Count 0 >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n"
)


def _dos_eps() -> bytes:
    """An EPS with the binary DOS header (Pillow's EPS plugin reads it too)."""
    header = struct.pack("<4sIIIIIIH", b"\xc5\xd0\xd3\xc6", 30, len(EPS), 0, 0, 0, 0, 0xFFFF)
    return header + EPS


def format_cases() -> dict[str, tuple[bytes, str]]:
    """File name -> (content, expected outcome) for the format allow-list."""
    photo = _photo(24, 16)
    png = _encode(photo, "PNG")
    return {
        # Formats that Pillow would hand to Ghostscript, under any name.
        "drawing.eps": (EPS, f"{UNSUPPORTED} 'EPS'"),
        "drawing.ps": (b"%!PS-Adobe-3.0\n" + EPS, f"{UNSUPPORTED} 'EPS'"),
        "dos_header.eps": (_dos_eps(), f"{UNSUPPORTED} 'EPS'"),
        "eps_named.png": (EPS, f"{UNSUPPORTED} 'EPS'"),
        "eps_named.jpg": (EPS, f"{UNSUPPORTED} 'EPS'"),
        "document.pdf": (PDF, f"{UNSUPPORTED} 'PDF'"),
        "pdf_named.png": (PDF, f"{UNSUPPORTED} 'PDF'"),
        # Other formats Pillow knows but the allow-list leaves out.
        "icon_named.png": (_encode(photo, "ICO"), f"{UNSUPPORTED} 'ICO'"),
        "qoi_named.png": (_encode(photo, "QOI"), f"{UNSUPPORTED} 'QOI'"),
        "dds_named.png": (_encode(photo, "DDS"), f"{UNSUPPORTED} 'DDS'"),
        "xbm_named.png": (_encode(photo.convert("1"), "XBM"), f"{UNSUPPORTED} 'XBM'"),
        "targa_named.png": (_encode(photo, "TGA"), NOT_IMAGE),
        "pcx_named.png": (_encode(photo, "PCX"), NOT_IMAGE),
        "sgi_named.png": (_encode(photo, "SGI"), f"{UNSUPPORTED} 'SGI'"),
        "svg_named.png": (b'<svg xmlns="http://www.w3.org/2000/svg"/>', NOT_IMAGE),
        # Allowed formats are decoded by content, whatever the extension.
        "png_named.eps": (png, OK),
        "png_named.pdf": (png, OK),
        "png_without_extension": (png, OK),
        "jpeg_named.gif": (_encode(photo, "JPEG"), OK),
        "bmp_named.tif": (_encode(photo, "BMP"), OK),
        "tiff_named.bmp": (_encode(photo, "TIFF"), OK),
        "webp_named.png": (_encode(photo, "WEBP"), OK),
        "ppm_named.png": (_encode(photo, "PPM"), OK),
        "pgm_named.png": (_encode(photo.convert("L"), "PPM"), OK),
        "pbm_named.png": (_encode(photo.convert("1"), "PPM"), OK),
        "gif_named.jpg": (_encode(photo, "GIF"), OK),
        # Magic bytes of an allowed format followed by something else.
        "bm_text.bmp": (b"BMW owners manual, chapter 1\n", CANNOT_DECODE),
        "p6_text.ppm": (b"P6 is the sixth item on the list\n", CANNOT_DECODE),
        "riff_wave.webp": (b"RIFF\x24\x00\x00\x00WAVEfmt " + b"\x00" * 16, NOT_IMAGE),
    }


def _gif_header(width: int, height: int) -> bytes:
    screen = struct.pack("<HHBBB", width, height, 0, 0, 0)
    image = b"," + struct.pack("<HHHHB", 0, 0, width, height, 0)
    return b"GIF89a" + screen + image + b"\x02\x02\x44\x01\x00;"


def _bmp_header(width: int, height: int) -> bytes:
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 24, 0, 0, 2835, 2835, 0, 0)
    return b"BM" + struct.pack("<IHHI", 54 + 64, 0, 0, 54) + info + b"\x00" * 64


def huge_header_cases() -> dict[str, bytes]:
    """Small files whose headers declare images over the pixel limit (100 M pixels)."""
    return {
        "bomb_40000.png": _png_raw(40000, 40000, 8, 2, None),  # over Pillow's own hard limit
        "wide_12000x9000.png": _png_raw(12000, 9000, 8, 2, None),  # between the two limits
        "strip_2e9x1.png": _png_raw(2_000_000_000, 1, 8, 0, None),
        "bomb.gif": _gif_header(65535, 65535),
        "bomb.bmp": _bmp_header(20000, 20000),
    }


def write_sparse(path: Path, size: int, head: bytes = b"") -> Path:
    """A sparse file of ``size`` bytes (no disk used) that starts with ``head``."""
    with path.open("wb") as f:
        f.write(head)
        f.seek(size - 1)
        f.write(b"\0")
    return path


def write_size_cases(folder: Path) -> dict[str, str]:
    """Write the size cases into ``folder``; returns name -> expected outcome."""
    folder.mkdir(parents=True, exist_ok=True)
    expected = {}
    write_sparse(folder / "sparse_3gib.png", 3 * 2**30)
    expected["sparse_3gib.png"] = NOT_IMAGE  # refused from its header alone
    write_sparse(folder / "sparse_3gib_png_magic.png", 3 * 2**30, b"\x89PNG\r\n\x1a\n")
    expected["sparse_3gib_png_magic.png"] = f"{TOO_LARGE_FILE}: 3 GiB"
    write_sparse(folder / "sparse_300mib.jpg", 300 * 2**20, b"\xff\xd8\xff\xe0")
    expected["sparse_300mib.jpg"] = f"{TOO_LARGE_FILE}: 300 MiB"
    for name, payload in huge_header_cases().items():
        (folder / name).write_bytes(payload)
        expected[name] = TOO_LARGE_IMAGE
    return expected


def make_hostile_inputs(folder: Path) -> dict[str, str]:
    """Write the format and size cases into ``folder``; returns name -> expected outcome."""
    folder.mkdir(parents=True, exist_ok=True)
    expected = {}
    for name, (payload, outcome) in format_cases().items():
        (folder / name).write_bytes(payload)
        expected[name] = outcome
    expected.update(write_size_cases(folder))
    return expected


def fake_ghostscript(bin_dir: Path, marker: Path) -> Path:
    """An executable ``gs`` in ``bin_dir`` that appends its arguments to ``marker`` when run.

    It answers ``--version`` (so that Pillow takes it for Ghostscript) and fails otherwise.
    """
    bin_dir.mkdir(parents=True, exist_ok=True)
    gs = bin_dir / "gs"
    gs.write_text(
        f"#!/bin/sh\necho \"$@\" >> '{marker}'\n"
        '[ "$1" = "--version" ] && { echo 10.02.1; exit 0; }\nexit 1\n'
    )
    gs.chmod(gs.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return gs


# Names: (name, why it is hostile). Output stems must be valid, short in bytes and unique.
NAME_CASES: list[tuple[str, str]] = [
    ("é" * 120 + ".png", "240 bytes of two-byte characters"),
    ("ж" * 100 + "1.png", "two-byte characters, differs from the next only after the cut"),
    ("ж" * 100 + "2.png", "two-byte characters, differs from the previous only after the cut"),
    ("ก" * 80 + ".png", "three-byte characters (Thai), 240 bytes"),
    ("x" * 200 + "-first.png", "ASCII, differs from the next only after the cut"),
    ("x" * 200 + "-second.png", "ASCII, differs from the previous only after the cut"),
    ("Photo.png", "case-only difference"),
    ("photo.png", "case-only difference"),
    ("PHOTO.jpg", "case-only difference, other extension"),
    ("Stra\u00dfe.png", "ß folds to ss on case-insensitive filesystems"),
    ("STRASSE.png", "ß folds to ss on case-insensitive filesystems"),
    ("caf\u00e9.png", "NFC é"),
    ("cafe\u0301.png", "NFD é: the same name on macOS"),
    ("CON.png", "Windows device name"),
    ("nul.tar.gz", "Windows device name before the first dot"),
    ("com1.jpg", "Windows device name"),
    ("LPT\u00b9.png", "Windows device name with a superscript digit"),
    ("AUX", "Windows device name, no extension"),
    ("console.png", "not a device name (must stay as it is)"),
    ("a\u2215b.png", "division slash"),
    ("a\u2044b.png", "fraction slash"),
    ("a\uff0fb.png", "fullwidth solidus"),
    ("a\uff3cb.png", "fullwidth reverse solidus"),
    ('a<b>c:d"e|f?g*h.png', "characters Windows forbids"),
    ("tab\there.png", "control character"),
    ("rtl\u202egnp.exe.png", "right-to-left override"),
    ("...hidden.png", "leading dots"),
    (".png", "only an extension"),
    ("trailing. .png", "trailing dot and space before the extension"),
    (os.fsdecode(b"latin1-caf\xe9.png"), "not valid UTF-8 (surrogate escapes)"),
    ("emoji-\U0001f600.png", "four-byte character"),
]

WINDOWS_FORBIDDEN = set('<>:"/\\|?*')


def labels_cases() -> dict[str, tuple[str, str]]:
    """Case name -> (labels.csv text, what the LabelsError must say) for malformed CSVs."""
    rows = "".join(f"img{k}.png,{k}\n" for k in range(5))
    many = "".join(f"img{k}.png,{k % 1000}\n" for k in range(40000))
    return {
        "unclosed_quote_in_name": (
            f'image,label\na.png,1\n"b.png,2\n{rows}',
            "line 3: a quote opened on this line is never closed",
        ),
        "unclosed_quote_in_label": (
            f'image,label\na.png,"1\n{rows}',
            "line 2: a quote opened on this line is never closed",
        ),
        "unclosed_quote_long_file": (
            f'image,label\na.png,1\nb.png,2\n"c.png,3\n{many}',
            "line 4: a quote opened on this line is never closed",
        ),
        "unclosed_quote_crlf": (
            'image,label\r\na.png,1\r\n"b.png,2\r\nc.png,3\r\n',
            "line 3: a quote opened on this line is never closed",
        ),
        "field_over_limit": (
            f"image,label\na.png,1\n{'x' * (csv.field_size_limit() + 10)}.png,2\nc.png,3\n",
            f"line 3: a field is longer than {csv.field_size_limit():,} characters",
        ),
        "text_after_closing_quote": (
            'image,label\na.png,1\n"b".png,2\n',
            "line 3: malformed CSV",
        ),
    }


def labels_name_cases() -> dict[str, str]:
    """Image names in a labels CSV that do not name a file inside the folder -> reason."""
    return {
        "../outside.png": "path separator",
        "../../etc/passwd": "path separator",
        "/etc/passwd": "path separator",
        "/tmp/x.png": "path separator",
        "sub/dir.png": "path separator",
        "..\\outside.png": "path separator",
        "C:\\Windows\\x.png": "path separator",
        "a\x00b.png": "NUL byte",
        "..": "'..'",
        ".": "'.'",
    }


def write_labels(path: Path, rows: list[tuple[str, str]]) -> None:
    """A well-formed labels CSV (csv.writer quoting) with the given (image, label) rows."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["image", "label"])
    writer.writerows(rows)
    path.write_text(buf.getvalue(), encoding="utf-8")
