"""Hostile inputs at the data layer: formats, sizes, names and labels CSVs (issue 17)."""

from __future__ import annotations

import os
import random
import re
import resource
import subprocess
import threading
import time
import unicodedata

import numpy as np
import pytest
from PIL import EpsImagePlugin, Image

from hostile import OK
from hostile_inputs import (
    EPS,
    NAME_CASES,
    WINDOWS_FORBIDDEN,
    fake_ghostscript,
    format_cases,
    huge_header_cases,
    labels_cases,
    labels_name_cases,
    make_hostile_inputs,
    write_labels,
    write_size_cases,
    write_sparse,
)
from sai_attack import data
from sai_attack.data import images as images_module
from sai_attack.data import inputs as inputs_module

FORMATS = format_cases()


def _outcome(path) -> str:
    try:
        image = data.load_image(path)
    except data.ImageLoadError as exc:
        reason = str(exc)
    else:
        assert image.dtype == np.uint8
        assert image.ndim == 3
        assert image.shape[2] == 3
        return OK
    assert "\n" not in reason
    return reason


# --------------------------------------------------------------------------------------------
# 1. No input content handed to an external program
# --------------------------------------------------------------------------------------------


@pytest.fixture
def no_external_programs(tmp_path, monkeypatch):
    """A fake ``gs`` first on PATH that leaves a marker, and a record of every process started."""
    marker = tmp_path / "gs-was-run"
    fake_ghostscript(tmp_path / "bin", marker)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}")
    monkeypatch.setattr(EpsImagePlugin, "gs_binary", None)  # forget any earlier lookup
    started = []
    real_popen = subprocess.Popen

    def recording_popen(*args, **kwargs):
        started.append(args[0] if args else kwargs.get("args"))
        return real_popen(*args, **kwargs)

    monkeypatch.setattr(subprocess, "Popen", recording_popen)
    yield
    assert not marker.exists(), f"Ghostscript was run: {marker.read_text()}"
    assert started == []


@pytest.mark.parametrize("name", sorted(FORMATS))
def test_formats_are_decided_by_content_and_allow_list(tmp_path, no_external_programs, name):
    payload, expected = FORMATS[name]
    path = tmp_path / name
    path.write_bytes(payload)
    outcome = _outcome(path)
    assert outcome == OK if expected == OK else outcome.startswith(expected), outcome


def test_the_fake_ghostscript_would_be_noticed(tmp_path, monkeypatch):
    """The check above is real: Pillow's EPS plugin, when reached, runs the fake ``gs``."""
    marker = tmp_path / "gs-was-run"
    fake_ghostscript(tmp_path / "bin", marker)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}")
    monkeypatch.setattr(EpsImagePlugin, "gs_binary", None)
    (tmp_path / "x.eps").write_bytes(EPS)
    with pytest.raises(subprocess.CalledProcessError), Image.open(tmp_path / "x.eps") as im:
        im.load()
    assert marker.exists()


def test_refusal_names_the_format_and_the_allow_list(tmp_path):
    (tmp_path / "d.eps").write_bytes(EPS)
    with pytest.raises(data.ImageLoadError) as info:
        data.load_image(tmp_path / "d.eps")
    assert str(info.value) == (
        "unsupported image format 'EPS' (allowed: PNG, JPEG, BMP, TIFF, WebP, PPM/PGM/PBM, GIF)"
    )


def test_pillow_is_only_offered_the_sniffed_format(monkeypatch):
    seen = []
    real_open = Image.open

    def spy(fp, mode="r", formats=None):
        seen.append(formats)
        return real_open(fp, mode, formats)

    monkeypatch.setattr(Image, "open", spy)
    for name in ("png_named.eps", "jpeg_named.gif", "tiff_named.bmp", "gif_named.jpg"):
        data.decode_image(FORMATS[name][0])
    for name in ("drawing.eps", "document.pdf", "icon_named.png", "targa_named.png"):
        with pytest.raises(data.ImageLoadError):
            data.decode_image(FORMATS[name][0])
    assert seen == [["PNG"], ["JPEG"], ["TIFF"], ["GIF"]]
    assert all(set(f) <= set(data.IMAGE_FORMATS) for f in seen)


def test_a_single_eps_input_is_discovered_and_refused(tmp_path, no_external_programs):
    """An input argument naming one file is taken whatever its extension, then refused."""
    (tmp_path / "x.eps").write_bytes(EPS)
    inputs = data.discover_inputs(tmp_path / "x.eps")
    assert inputs.names == ["x.eps"]
    assert _outcome(inputs.root / "x.eps").startswith("unsupported image format 'EPS'")


# --------------------------------------------------------------------------------------------
# 2. Rejected by header, within size and pixel limits
# --------------------------------------------------------------------------------------------


def _peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


def test_size_cases_are_refused_fast_without_big_allocations(tmp_path):
    expected = write_size_cases(tmp_path)
    for name, reason in expected.items():
        before, t0 = _peak_rss_bytes(), time.perf_counter()
        outcome = _outcome(tmp_path / name)
        seconds, grown = time.perf_counter() - t0, _peak_rss_bytes() - before
        assert outcome.startswith(reason), (name, outcome)
        assert seconds < 1.0, (name, seconds)
        assert grown < 64 * 2**20, (name, grown)


def test_sparse_file_is_read_only_up_to_its_header(tmp_path, monkeypatch):
    path = write_sparse(tmp_path / "sparse.png", 3 * 2**30)
    reads = []
    real_read = images_module.read_limited

    def spy(*args, **kwargs):
        reads.append(args)
        return real_read(*args, **kwargs)

    monkeypatch.setattr(images_module, "read_limited", spy)
    with pytest.raises(data.ImageLoadError, match="^not a recognised image format$"):
        data.read_image_file(path)
    assert reads == []  # the body was never read


def test_huge_declared_dimensions(no_external_programs):
    for name, payload in huge_header_cases().items():
        t0 = time.perf_counter()
        with pytest.raises(data.ImageLoadError, match="^image too large: ") as info:
            data.decode_image(payload)
        assert time.perf_counter() - t0 < 1.0, name
        assert "limit 100,000,000 pixels" in str(info.value)
    with pytest.raises(data.ImageLoadError) as info:
        data.decode_image(huge_header_cases()["wide_12000x9000.png"])
    assert str(info.value) == "image too large: 12000 x 9000 pixels (limit 100,000,000 pixels)"


def test_pixel_and_file_limits_are_the_module_constants(monkeypatch):
    ten = data.encode_png(np.zeros((10, 10, 3), np.uint8))
    monkeypatch.setattr(images_module, "MAX_PIXELS", 100)
    assert data.decode_image(ten).shape == (10, 10, 3)
    with pytest.raises(data.ImageLoadError, match="^image too large: 11 x 10 pixels"):
        data.decode_image(data.encode_png(np.zeros((10, 11, 3), np.uint8)))
    monkeypatch.setattr(images_module, "MAX_FILE_BYTES", len(ten) - 1)
    with pytest.raises(data.ImageLoadError, match="^file too large: "):
        data.decode_image(ten)
    assert data.MAX_PIXELS == 100_000_000
    assert data.MAX_FILE_BYTES == 256 * 2**20


def test_large_but_allowed_image_still_loads(tmp_path):
    path = tmp_path / "big.png"
    data.save_png(path, np.full((3000, 4000, 3), 7, np.uint8))  # 12 M pixels
    assert data.load_image(path).shape == (3000, 4000, 3)


def test_fifo_and_device_are_refused_without_blocking(tmp_path):
    os.mkfifo(tmp_path / "fifo.png")
    os.mkfifo(tmp_path / "labels.csv")
    os.symlink("/dev/zero", tmp_path / "zero.png")
    results = {}

    def run():
        results["fifo"] = _outcome(tmp_path / "fifo.png")
        results["zero"] = _outcome(tmp_path / "zero.png")
        try:
            data.read_labels(tmp_path / "labels.csv")
        except data.LabelsError as exc:
            results["labels"] = str(exc)

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(5)
    assert not worker.is_alive(), "reading a FIFO blocked"
    assert results["fifo"] == results["zero"] == "not a regular file"
    assert results["labels"].endswith("labels.csv': not a regular file")


def test_hostile_inputs_folder(tmp_path, no_external_programs):
    """The whole generated folder: every file decoded or refused with its reason."""
    expected = make_hostile_inputs(tmp_path / "in")
    names = data.discover_inputs(tmp_path / "in").names
    assert "drawing.eps" not in names  # discovery goes by extension
    assert "png_named.eps" not in names
    assert "eps_named.png" in names
    wrong = {}
    for name, reason in expected.items():
        outcome = _outcome(tmp_path / "in" / name)
        if not (outcome == OK if reason == OK else outcome.startswith(reason)):
            wrong[name] = outcome
    assert not wrong


# --------------------------------------------------------------------------------------------
# 3. Output names: valid on every filesystem, unique, deterministic
# --------------------------------------------------------------------------------------------

NAMES = [name for name, _ in NAME_CASES]


def _check_valid_everywhere(stem: str) -> None:
    encoded = stem.encode("utf-8")  # no surrogates, so valid UTF-8
    assert 0 < len(encoded) <= data.MAX_STEM_BYTES, stem
    assert len(f"{stem}-9999.png".encode()) <= 255
    assert not stem.startswith("."), stem
    assert not any(c in WINDOWS_FORBIDDEN or ord(c) < 0x20 or c == "\x7f" for c in stem), stem
    device = stem.split(".")[0].upper()
    assert device not in inputs_module._WINDOWS_RESERVED, stem
    assert unicodedata.is_normalized("NFC", stem), stem


def test_stems_are_valid_everywhere_and_writable(tmp_path):
    stems = data.unique_stems(NAMES)
    for stem in stems.values():
        _check_valid_everywhere(stem)
        for suffix in ("", "-12"):
            data.atomic_write_bytes(tmp_path / "images" / f"{stem}{suffix}.png", b"x")
    folded = [unicodedata.normalize("NFKC", s).casefold() for s in stems.values()]
    assert len(set(folded)) == len(NAMES)  # unique even on case-insensitive filesystems
    assert len(os.listdir(tmp_path / "images")) == 2 * len(NAMES)


def test_long_names_are_cut_by_bytes_at_character_boundaries():
    for name in ("é" * 120 + ".png", "ก" * 80 + ".png", "x" * 300 + ".png"):
        stem = data.safe_stem(name)
        assert len(stem.encode()) <= data.MAX_STEM_BYTES
        assert re.fullmatch(r".+-[0-9a-f]{8}", stem), stem
        assert stem[0] == name[0]
    assert data.safe_stem("a" * 150 + ".png") == "a" * 150  # at the limit: unchanged
    assert data.safe_stem("a" * 151 + ".png").startswith("a" * 141 + "-")


def test_names_differing_after_the_cut_get_distinct_stable_stems():
    a, b = "x" * 200 + "-first.png", "x" * 200 + "-second.png"
    alone = data.unique_stems([a])[a]
    together = data.unique_stems([b, a])
    assert together[a] == alone == data.safe_stem(a)  # independent of the other inputs
    assert together[b] == data.safe_stem(b) != together[a]
    assert data.safe_stem("ж" * 100 + "1.png") != data.safe_stem("ж" * 100 + "2.png")


def test_case_and_normalisation_clashes_get_suffixes():
    stems = data.unique_stems(["Photo.png", "photo.png", "PHOTO.jpg", "Straße.png", "STRASSE.png"])
    assert stems == {
        "Photo.png": "Photo",
        "photo.png": "photo-2",
        "PHOTO.jpg": "PHOTO-3",
        "Straße.png": "Straße",
        "STRASSE.png": "STRASSE-2",
    }
    nfc, nfd = "caf\u00e9.png", "cafe\u0301.png"
    stems = data.unique_stems([nfc, nfd])
    assert stems == {nfc: "caf\u00e9", nfd: "caf\u00e9-2"}


@pytest.mark.parametrize(
    ("name", "stem"),
    [
        ("CON.png", "CON_"),
        ("con.png", "con_"),
        ("nul.tar.gz", "nul_.tar"),
        ("com1.jpg", "com1_"),
        ("LPT\u00b9.png", "LPT\u00b9_"),
        ("AUX", "AUX_"),
        ("console.png", "console"),
        ("com10.png", "com10"),
        ("a\u2215b.png", "a_b"),
        ("a\u2044b.png", "a_b"),
        ("a\uff0fb.png", "a_b"),
        ("a\uff3cb.png", "a_b"),
        ('a<b>c:d"e|f?g*h.png', "a_b_c_d_e_f_g_h"),
        ("tab\there.png", "tab_here"),
        ("...hidden.png", "hidden"),
        (".png", "png"),
        ("../up.png", "up"),
        ("", "image"),
    ],
)
def test_safe_stem_cases(name, stem):
    assert data.safe_stem(name) == stem


def test_unique_stems_are_deterministic():
    names = sorted(NAMES)
    first = data.unique_stems(names)
    assert data.unique_stems(list(names)) == first
    shuffled = names[:]
    random.Random(0).shuffle(shuffled)
    again = data.unique_stems(shuffled)
    # Only names whose stems clash need a suffix, which depends on the order; no other does.
    keys = {n: unicodedata.normalize("NFKC", data.safe_stem(n)).casefold() for n in names}
    alone = [n for n in names if list(keys.values()).count(keys[n]) == 1]
    assert len(alone) >= 15
    assert all(again[n] == first[n] == data.safe_stem(n) for n in alone)


# --------------------------------------------------------------------------------------------
# 4. Labels CSVs
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", sorted(labels_cases()))
def test_malformed_labels_csv_is_one_line_error_naming_file_and_line(tmp_path, case):
    text, message = labels_cases()[case]
    path = tmp_path / "labels.csv"
    path.write_text(text, encoding="utf-8", newline="")
    with pytest.raises(data.LabelsError) as info:
        data.read_labels(path)
    error = str(info.value)
    assert "\n" not in error
    assert len(error) < 300
    assert error.startswith(f"labels file {str(path)!r}: {message}"), error


def test_well_formed_quotes_and_line_breaks_still_read(tmp_path):
    names = ['quote\'s "double".png', "line\nbreak.png", "comma,semicolon;.png", "plain.png"]
    path = tmp_path / "labels.csv"
    write_labels(path, [(n, str(k)) for k, n in enumerate(names)])
    table = data.read_labels(path)
    assert table.labels == {n: k for k, n in enumerate(names)}
    assert not table.problems


def test_names_outside_the_folder_are_problems_with_reasons(tmp_path):
    cases = labels_name_cases()
    path = tmp_path / "labels.csv"
    write_labels(path, [("good.png", "1"), *((name, "2") for name in cases)])
    table = data.read_labels(path)
    assert table.labels == {"good.png": 1}
    for name, reason in cases.items():
        problem = table.problems[name]
        assert problem.startswith("image name in labels file is not a plain file name: ")
        assert reason in problem, (name, problem)
    inputs = data.discover_inputs(tmp_path)  # kept, so they are reported, never opened
    assert set(cases) <= set(inputs.names)
    assert all(not data.is_plain_name(n) for n in cases)


def test_labels_file_size_and_kind_are_bounded(tmp_path, monkeypatch):
    path = tmp_path / "labels.csv"
    path.write_text("image,label\n" + "a.png,1\n" * 100)
    monkeypatch.setattr(inputs_module, "MAX_LABELS_BYTES", 100)
    with pytest.raises(data.LabelsError, match=r"labels.csv': file too large: 812 bytes"):
        data.read_labels(path)
    with pytest.raises(data.LabelsError, match=r"': is a directory$"):
        data.read_labels(tmp_path)
    with pytest.raises(data.LabelsError, match=r"nope.csv': No such file or directory$"):
        data.read_labels(tmp_path / "nope.csv")
