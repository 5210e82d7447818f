"""Attack a folder of images and write a run folder: the engine behind ``sai-attack attack``.

A run folder holds::

    images/<stem>.png     adversarial images, 8-bit RGB, rounded to nearest
    clean/<stem>.png      the preprocessed clean inputs (resized and centre-cropped)
    templates/<stem>.npz  superpixel labels and mask (with --save-templates)
    results.csv           one row per input image, skipped inputs included (status column)
    summary.json          parameters, protocol, counts, success rate, timing, versions
    run.json              the parameters, written first; a re-run must match them to resume

Images stream through in batches: decoding, resizing and superpixel segmentation run in DataLoader
worker processes, the clean prediction and the CAM come from one forward pass, PNG files are
written by a background thread, and rows are appended to ``results.csv`` as batches finish.
Success is measured on the decoded 8-bit PNG bytes that are written to disk.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import math
import os
import platform
import sys
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from sai_attack import data, parallel
from sai_attack import superpixels as sp
from sai_attack.attacks import ATTACKS, DEFAULT_METHOD, LOSSES, Attack
from sai_attack.attacks.base import BUDGETS
from sai_attack.attacks.saifgm import GRAD_MODES
from sai_attack.attention import ATTENTION_METHODS, DEFAULT_PHI, cam_from_features
from sai_attack.models import DEFAULT_MODEL, ImageClassifier, load_model

logger = logging.getLogger(__name__)


def _load_malloc_trim() -> Callable[[int], int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes

        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc (e.g. musl)
        return None


_MALLOC_TRIM = _load_malloc_trim()


def _trim_heap() -> None:
    """Give freed heap pages back to the OS between batches (glibc only).

    The attack's activation tensors come and go every iteration and glibc keeps freed heap pages
    resident (Lite0, batch 32, 500 images with FGM: peak RSS 2.79 GiB without this, 2.58 GiB
    with it). The peak still varies by a few hundred MB from run to run.
    """
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)


RESULT_COLUMNS = (
    "image", "output", "label", "target", "clean_pred", "adv_pred", "success", "l2",
    "delta_eff", "linf", "psnr", "superpixels", "mask_fraction", "status",
)  # fmt: skip
STATUS_OK = "ok"
EXIT_OK, EXIT_USAGE, EXIT_SKIPPED = 0, 2, 3

PROTOCOL_TEXT = {
    "within": "perturbation projected into the L2 ball ||r|| <= eps",
    "exact": "perturbation rescaled to ||r|| = eps (Scale_eps), reduced only by clipping",
}


class RunError(RuntimeError):
    """A run cannot start or continue (locked, incompatible output folder, ...)."""


# --------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------


@dataclass
class AttackConfig:
    """Every parameter of an attack run, validated on construction (before any work).

    The defaults are the paper's settings and the CLI's defaults.
    """

    method: str = DEFAULT_METHOD
    model: str = DEFAULT_MODEL
    weights: str | None = None
    delta: float = 4.0
    iters: int = 10
    superpixel: str = "slic"
    superpixel_size: float | None = sp.DEFAULT_SIZE
    segments: int | None = None
    compactness: float = sp.DEFAULT_COMPACTNESS
    merge_beta: float = 0.0
    phi: float = DEFAULT_PHI
    attention: str = "auto"
    align_mask: bool = True
    grad_mode: str = "noise"
    momentum: float = 1.0
    loss: str = "ce"
    budget: str | None = None
    targeted: bool = False
    attack_prediction: bool = False
    image_size: int | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        checks: list[tuple[bool, str]] = [
            (self.method in ATTACKS, f"--method {self.method!r} is unknown; choose one of "
             f"{', '.join(ATTACKS)}"),
            (math.isfinite(self.delta) and self.delta > 0,
             f"--delta must be > 0 (0-255 pixel units), got {self.delta}"),
            (isinstance(self.iters, int) and self.iters >= 1,
             f"--iters must be an integer >= 1, got {self.iters}"),
            (0.0 <= self.phi <= 1.0, f"--phi must lie in [0, 1], got {self.phi}"),
            (self.merge_beta >= 0, f"--merge-beta must be >= 0, got {self.merge_beta}"),
            (self.compactness > 0, f"--compactness must be > 0, got {self.compactness}"),
            (self.segments is None or self.segments >= 1,
             f"--segments must be >= 1, got {self.segments}"),
            (self.superpixel_size is None or self.superpixel_size > 0,
             f"--superpixel-size must be > 0, got {self.superpixel_size}"),
            (self.superpixel in sp.SUPERPIXEL_ALGORITHMS,
             f"--superpixel {self.superpixel!r} is unknown; choose one of "
             f"{', '.join(sp.SUPERPIXEL_ALGORITHMS)}"),
            (self.attention in ATTENTION_METHODS,
             f"--attention must be one of {', '.join(ATTENTION_METHODS)}, got {self.attention!r}"),
            (self.grad_mode in GRAD_MODES,
             f"--grad-mode must be one of {', '.join(GRAD_MODES)}, got {self.grad_mode!r}"),
            (self.momentum >= 0, f"--momentum must be >= 0, got {self.momentum}"),
            (self.loss in LOSSES, f"--loss must be one of {', '.join(LOSSES)}, got {self.loss!r}"),
            (self.budget is None or self.budget in BUDGETS,
             f"--budget must be one of {', '.join(BUDGETS)}, got {self.budget!r}"),
            (self.image_size is None or 8 <= self.image_size <= 4096,
             f"--image-size must lie in 8..4096, got {self.image_size}"),
            (0 <= self.seed < 2**63, f"--seed must lie in 0..2^63-1, got {self.seed}"),
        ]  # fmt: skip
        for ok, message in checks:
            if not ok:
                raise ValueError(message)

    @property
    def attack_class(self) -> type[Attack]:
        """The attack class of ``method``."""
        return ATTACKS[self.method]

    @property
    def uses_superpixels(self) -> bool:
        """Whether the method needs superpixel templates."""
        return self.attack_class.uses_superpixels

    def superpixel_config(self) -> sp.SuperpixelConfig:
        """The superpixel settings."""
        return sp.SuperpixelConfig(
            self.superpixel, self.superpixel_size, self.segments, self.compactness, self.merge_beta
        )

    def build_attack(self, model: torch.nn.Module) -> Attack:
        """Instantiate the attack on ``model``."""
        common = {
            "delta": self.delta,
            "steps": self.iters,
            "loss": self.loss,
            "targeted": self.targeted,
            "budget": self.budget,
            "seed": self.seed,
        }
        cls = self.attack_class
        if cls.uses_superpixels:
            common.update(
                superpixel=self.superpixel,
                superpixel_size=self.superpixel_size,
                n_segments=self.segments,
                compactness=self.compactness,
                merge_beta=self.merge_beta,
                phi=self.phi,
                attention=self.attention,
                align_mask=self.align_mask,
                grad_mode=self.grad_mode,
            )
        if self.method in ("mifgm", "m-sai-fgm"):
            common["momentum"] = self.momentum
        return cls(model, **common)


def image_seed(seed: int, name: str) -> int:
    """The per-image random seed: a hash of the run seed and the image name.

    It does not depend on the batch, the rank or the order, so outputs do not depend on how the
    work is split.
    """
    digest = hashlib.sha256(f"{seed}\x00{name}".encode("utf-8", "surrogateescape")).digest()
    return int.from_bytes(digest[:8], "big") & (2**63 - 1)


def library_versions() -> dict[str, str]:
    """Versions of the libraries that shape the numbers."""
    import cv2
    import PIL
    import skimage

    from sai_attack import __version__

    return {
        "sai_attack": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "scikit-image": skimage.__version__,
        "opencv": cv2.__version__,
        "pillow": PIL.__version__,
    }


# --------------------------------------------------------------------------------------------
# Loading images in worker processes
# --------------------------------------------------------------------------------------------


@dataclass
class Item:
    """One input image, loaded and prepared, or the reason it could not be."""

    name: str
    stem: str
    image: np.ndarray | None = None  # (S, S, 3) uint8
    superpixels: np.ndarray | None = None  # (S, S) int64
    error: str | None = None
    seconds_load: float = 0.0
    seconds_superpixels: float = 0.0


class InputDataset(Dataset):
    """Loads, resizes/crops and segments images; errors become items with a reason."""

    def __init__(
        self,
        root: Path,
        names: list[str],
        stems: dict[str, str],
        size: int,
        superpixels: sp.SuperpixelConfig | None,
        problems: dict[str, str] | None = None,
    ) -> None:
        self.root, self.names, self.stems, self.size = root, names, stems, size
        self.superpixels = superpixels
        self.problems = problems or {}

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, index: int) -> Item:
        name = self.names[index]
        item = Item(name=name, stem=self.stems[name])
        if not data.is_plain_name(name):  # never open paths that come from a labels file
            item.error = self.problems.get(name, "not a plain file name")
            return item
        t0 = time.perf_counter()
        try:
            # The image is read first so that a broken file is reported as such.
            image = data.load_image(self.root / name)
        except data.ImageLoadError as exc:
            item.error = str(exc)
            return item
        if name in self.problems:
            item.error = self.problems[name]
            return item
        item.image = data.resize_center_crop(image, self.size)
        t1 = time.perf_counter()
        item.seconds_load = t1 - t0
        if self.superpixels is not None:
            item.superpixels = self.superpixels(item.image)
            item.seconds_superpixels = time.perf_counter() - t1
        return item


def _batches(items, batch_size: int):
    """Group the loader's items, in order, into lists of ``batch_size`` (the last may be short)."""
    batch: list[Item] = []
    for item in items:
        batch.append(item)
        if len(batch) == batch_size:
            yield batch
            batch = []
    if batch:
        yield batch


def _encode_in_writers(device: torch.device) -> bool:
    """Whether the writer threads also encode the PNGs, not only write them.

    On a GPU the CPU cores are free, and Pillow's zlib encoder releases the GIL, so encoding
    runs in parallel threads. On the CPU, PyTorch's threads already use every core and encoding
    next to them would stall their parallel regions: the main thread encodes between batches.
    """
    return device.type != "cpu"


def _writer_threads(device: torch.device) -> int:
    """Threads that write the PNGs: up to 8 when they also encode them, else one."""
    return max(1, min(8, os.cpu_count() or 1)) if _encode_in_writers(device) else 1


# --------------------------------------------------------------------------------------------
# Results files
# --------------------------------------------------------------------------------------------


def read_results(path: Path) -> list[dict[str, str]]:
    """Read ``results.csv`` rows (complete lines only)."""
    if not path.is_file():
        return []
    text = path.read_text(encoding="utf-8", errors="replace")
    if text and not text.endswith("\n"):
        text = text[: text.rfind("\n") + 1]  # a torn last line is dropped
    rows = list(csv.DictReader(io.StringIO(text, newline="")))
    return [r for r in rows if r.get("status") is not None and r.get("image")]


def _format_row(row: dict) -> str:
    buf = io.StringIO()
    csv.DictWriter(buf, fieldnames=RESULT_COLUMNS, lineterminator="\n").writerow(row)
    return buf.getvalue()


def append_rows(path: Path, rows: list[dict]) -> None:
    """Append complete rows to a CSV in one ``write`` call (a kill cannot tear a row)."""
    if not rows:
        return
    header = "" if path.is_file() and path.stat().st_size > 0 else ",".join(RESULT_COLUMNS) + "\n"
    payload = (header + "".join(_format_row(r) for r in rows)).encode("utf-8")
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, payload)
        os.fsync(fd)
    finally:
        os.close(fd)


def write_results(path: Path, rows: list[dict]) -> None:
    """Rewrite a whole results CSV atomically."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=RESULT_COLUMNS, lineterminator="\n", extrasaction="ignore")
    w.writeheader()
    w.writerows(rows)
    data.atomic_write_text(path, buf.getvalue())


def _fmt(value: float, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float) and math.isinf(value):
        return "inf"
    return f"{value:.{digits}f}"


def image_metrics(clean: np.ndarray, adv: np.ndarray) -> dict[str, float]:
    """L2 (0-255 units), delta_eff = L2 / sqrt(N), Linf and PSNR between two uint8 images."""
    diff = adv.astype(np.float64) - clean.astype(np.float64)
    l2 = float(np.sqrt(np.sum(diff * diff)))
    mse = float(np.mean(diff * diff))
    return {
        "l2": l2,
        "delta_eff": l2 / math.sqrt(diff.size),
        "linf": float(np.max(np.abs(diff))) if diff.size else 0.0,
        "psnr": float("inf") if mse == 0 else 10.0 * math.log10(255.0**2 / mse),
    }


# --------------------------------------------------------------------------------------------
# Locking
# --------------------------------------------------------------------------------------------


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class RunLock:
    """An output-folder lock file holding the owner's PID; a dead owner's lock is taken over."""

    def __init__(self, folder: Path) -> None:
        self.path = folder / ".lock"
        self.acquired = False

    def __enter__(self) -> RunLock:
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                try:
                    pid = int(self.path.read_text().strip() or "0")
                except (OSError, ValueError):
                    pid = 0
                if pid and pid != os.getpid() and _pid_alive(pid):
                    raise RunError(
                        f"output folder {str(self.path.parent)!r} is in use by process {pid} "
                        f"(lock file {self.path.name}); wait for it or use another --out"
                    ) from None
                logger.warning("taking over stale lock %s (process %s is gone)", self.path, pid)
                self.path.unlink(missing_ok=True)
                continue
            with os.fdopen(fd, "w") as f:
                f.write(f"{os.getpid()}\n")
            self.acquired = True
            return self
        raise RunError(f"cannot acquire lock {str(self.path)!r}")

    def __exit__(self, *exc: object) -> None:
        if self.acquired:
            self.path.unlink(missing_ok=True)
            self.acquired = False


# --------------------------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------------------------


@dataclass
class RunOptions:
    """How a run executes (does not change its results)."""

    batch_size: int = 16
    device: str = "cpu"
    workers: int = 1
    limit: int | None = None
    save_templates: bool = False
    labels: str | None = None
    progress: bool | None = None  # None: on when stderr is a terminal
    amp: bool = False
    deterministic: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise ValueError(f"--batch-size must be an integer >= 1, got {self.batch_size}")
        if self.workers < 0:
            raise ValueError(f"--workers must be >= 0, got {self.workers}")
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"--limit must be >= 1, got {self.limit}")

    def amp_dtype(self, device: torch.device) -> torch.dtype | None:
        """The autocast dtype of the attack passes: float16 on CUDA, bfloat16 on CPU."""
        if not self.amp:
            return None
        return torch.float16 if device.type == "cuda" else torch.bfloat16

    def apply_determinism(self) -> None:
        """Ask PyTorch for deterministic kernels (slower on GPU; CPU runs are already so)."""
        if self.deterministic:
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.use_deterministic_algorithms(True, warn_only=True)
            torch.backends.cudnn.benchmark = False


@dataclass
class RunSummary:
    """What a run did; also written to ``summary.json``."""

    out: Path
    total: int = 0
    processed: int = 0
    skipped: int = 0
    reused: int = 0
    correct: int = 0
    successes: int = 0
    success_rate: float = float("nan")
    mean_delta_eff: float = float("nan")
    seconds: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)
    rank: int = 0
    world_size: int = 1

    @property
    def exit_code(self) -> int:
        """0 when every input was processed, 3 when some were skipped.

        Under torchrun every rank exits 0 (torchrun turns any other code into a failure of the
        whole job); skipped inputs are still listed in ``results.csv`` and on stderr.
        """
        if self.world_size > 1:
            return EXIT_OK
        return EXIT_SKIPPED if self.skipped else EXIT_OK


def resolve_device(device: str) -> torch.device:
    """Turn ``auto``/``cpu``/``cuda``/``cuda:N`` into a device, checking it exists."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise ValueError(
            f"--device {device!r} is not a device (use auto, cpu, cuda, cuda:N)"
        ) from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {device!r} requested but CUDA is not available")
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"--device {device!r} is not supported (use auto, cpu, cuda, cuda:N)")
    return dev


class AttackRun:
    """One attack run over an input (file or folder) into an output folder.

    Args:
        input_path: An image, or a folder of images (optionally with ``labels.csv``).
        out: The output folder.
        config: The attack parameters.
        options: Execution options.
        model: An already loaded model to use instead of ``config.model`` (Python API).
    """

    def __init__(
        self,
        input_path: str | os.PathLike,
        out: str | os.PathLike,
        config: AttackConfig,
        options: RunOptions | None = None,
        model: ImageClassifier | None = None,
    ) -> None:
        self.input_path = Path(input_path)
        self.out = Path(out)
        self.config = config
        self.options = options or RunOptions()
        self.device = resolve_device(self.options.device)
        self._model = model
        self._writer: ThreadPoolExecutor | None = None
        self.on_batch: Callable[[int, int], None] | None = None

    # -- setup ---------------------------------------------------------------------------------

    def _check_output_folder(self, inputs: data.InputSet) -> None:
        out = self.out.resolve()
        for folder in {inputs.root.resolve(), self.input_path.resolve()}:
            if folder.is_dir() and out in (folder, folder / "images"):
                raise RunError(
                    f"--out {str(self.out)!r} is the input folder; choose another folder"
                )

    def _run_record(self, model: ImageClassifier, attack: Attack) -> dict:
        cfg = asdict(self.config)
        return {
            "config": cfg,
            "attack": attack.describe(),
            "model": model.name,
            "input": str(self.input_path),
            "image_size": self._image_size(model),
        }

    def _image_size(self, model: ImageClassifier) -> int:
        return self.config.image_size or model.input_size or 224

    def _check_resume(self, record: dict) -> None:
        path = self.out / "run.json"
        if path.is_file():
            try:
                previous = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                previous = None
            if previous is not None:
                keys = ("config", "attack", "model", "image_size")
                if any(previous.get(k) != record.get(k) for k in keys):
                    raise RunError(
                        f"output folder {str(self.out)!r} holds a run with different parameters; "
                        "use another --out (or delete the folder)"
                    )
        data.atomic_write_text(path, json.dumps(record, indent=2, sort_keys=True) + "\n")

    # -- the loop ------------------------------------------------------------------------------

    def run(self) -> RunSummary:
        """Execute the run; returns the summary (also written to ``summary.json``).

        Under ``torchrun`` every rank attacks its share of the images and writes its rows to
        ``.parts/``; rank 0 holds the lock and, after a barrier, merges the rows into
        ``results.csv`` (in input order) and writes ``summary.json``.
        """
        started = time.perf_counter()
        ctx = parallel.context(self.device)
        self.device = ctx.device(self.device)
        self.options.apply_determinism()
        model = self._model or load_model(self.config.model, self.config.weights)
        model = model.to(self.device).eval()
        attack = self.config.build_attack(model)
        attack.autocast = self.options.amp_dtype(self.device)
        inputs = data.discover_inputs(self.input_path, self.options.labels)
        if self.config.targeted and inputs.labels is None:
            raise RunError("--targeted needs a labels CSV with a 'target' column")
        self._check_output_folder(inputs)
        names = inputs.names[: self.options.limit] if self.options.limit else inputs.names
        lock = RunLock(self.out)
        error = None
        if ctx.is_main:
            try:
                self._prepare_folder()
                lock.__enter__()
                self._remove_stale_temporaries()
                self._check_resume(self._run_record(model, attack))
                self._merge_parts(inputs.names)
                self._drop_retried_rows()
            except (RunError, OSError) as exc:
                lock.__exit__()
                error = str(exc) if isinstance(exc, RunError) else f"cannot prepare output: {exc}"
        error = ctx.broadcast(error)
        if error is not None:
            raise RunError(error)
        try:
            summary = self._loop_or_explain(model, attack, inputs, names, ctx)
            shares = ctx.gather((summary.processed, summary.skipped, summary.timings))
            ctx.barrier()
            if ctx.is_main:
                summary.processed = sum(p for p, _, _ in shares)
                summary.skipped = sum(k for _, k, _ in shares)
                summary.timings = {
                    key: sum(t[key] for _, _, t in shares) for key in summary.timings
                }
                self._merge_parts(inputs.names)
                summary.seconds = time.perf_counter() - started
                self._write_summary(summary, model, attack, inputs)
            ctx.barrier()
        finally:
            if ctx.is_main:
                lock.__exit__()
        summary.seconds = time.perf_counter() - started
        return summary

    def _loop_or_explain(self, *args) -> RunSummary:
        try:
            return self._loop(*args)
        except OSError as exc:
            where = exc.filename or self.out
            raise RunError(
                f"cannot write {str(where)!r}: {exc.strerror or exc}; finished images are kept, "
                "re-run the same command to resume"
            ) from None

    def _prepare_folder(self) -> None:
        try:
            self.out.mkdir(parents=True, exist_ok=True)
            for sub in ("images", "clean"):
                (self.out / sub).mkdir(exist_ok=True)
            if self.options.save_templates:
                (self.out / "templates").mkdir(exist_ok=True)
        except OSError as exc:
            raise RunError(
                f"cannot create output folder {str(self.out)!r}: {exc.strerror}"
            ) from None

    def _remove_stale_temporaries(self) -> None:
        """Delete temporary files a killed run left behind (the lock says nobody writes)."""
        for sub in ("", "images", "clean", "templates", ".parts"):
            folder = self.out / sub
            if folder.is_dir():
                for tmp in folder.glob(".*.tmp"):
                    tmp.unlink(missing_ok=True)

    @property
    def _results_path(self) -> Path:
        return self.out / "results.csv"

    def _part_path(self, rank: int) -> Path:
        return self.out / ".parts" / f"results.rank{rank}.csv"

    def _merge_parts(self, order: list[str]) -> None:
        """Fold per-rank rows into ``results.csv``, one row per image, in input order."""
        parts = sorted((self.out / ".parts").glob("results.rank*.csv"))
        rows = {r["image"]: r for r in read_results(self._results_path)}
        for part in parts:
            rows.update({r["image"]: r for r in read_results(part)})
        position = {data.printable_name(name): i for i, name in enumerate(order)}
        ordered = sorted(
            rows.values(), key=lambda r: (position.get(r["image"], len(order)), r["image"])
        )
        current = list(rows.values())
        if parts or ordered != current:
            write_results(self._results_path, ordered)
        for part in parts:
            part.unlink()

    def _drop_retried_rows(self) -> None:
        """Earlier skipped rows, and rows whose images are gone, are retried: drop them."""
        rows = read_results(self._results_path)
        keep = [r for r in rows if self._is_done(r)]
        if len(keep) != len(rows):
            write_results(self._results_path, keep)

    def _is_done(self, row: dict[str, str]) -> bool:
        return (
            row["status"] == STATUS_OK
            and bool(row.get("output"))
            and (self.out / row["output"]).is_file()
            and (self.out / "clean" / Path(row["output"]).name).is_file()
        )

    def _loop(
        self,
        model: ImageClassifier,
        attack: Attack,
        inputs: data.InputSet,
        names: list[str],
        ctx: parallel.DistContext,
    ) -> RunSummary:
        rows_path = self._part_path(ctx.rank) if ctx.distributed else self._results_path
        rows_path.parent.mkdir(exist_ok=True)
        stems = data.unique_stems(inputs.names)
        done = {r["image"] for r in read_results(self._results_path) if self._is_done(r)}
        pending_names = [n for n in names if data.printable_name(n) not in done]
        todo = ctx.shard(pending_names, self.options.batch_size)
        summary = RunSummary(
            out=self.out,
            total=len(names),
            reused=len(done),
            rank=ctx.rank,
            world_size=ctx.world_size,
        )
        timings = dict.fromkeys(
            ("load", "superpixels", "wait", "clean_forward", "attack", "encode", "evaluate"), 0.0
        )
        problems = inputs.labels.problems if inputs.labels else {}
        if inputs.labels is not None:
            problems = {
                **{n: "no label for this image in the labels file" for n in todo
                   if n not in inputs.labels.labels and n not in problems},
                **problems,
            }  # fmt: skip
            if self.config.targeted:
                for n in todo:
                    if n in inputs.labels.labels and n not in inputs.labels.targets:
                        problems.setdefault(n, "no target class for this image (--targeted)")
        size = self._image_size(model)
        dataset = InputDataset(
            inputs.root,
            todo,
            stems,
            size,
            self.config.superpixel_config() if self.config.uses_superpixels else None,
            problems,
        )
        batch_size = self.options.batch_size
        workers = self.options.workers if len(todo) > batch_size else 0
        # Workers load single images, not whole batches, so every batch is spread over all of
        # them (the first batch arrives `workers` times sooner); each keeps up to two batches'
        # worth of images in flight so the segmentation runs ahead of the model.
        loader = DataLoader(
            dataset,
            batch_size=None,
            shuffle=False,
            num_workers=workers,
            prefetch_factor=max(2, math.ceil(2 * batch_size / workers)) if workers else None,
        )
        progress = self._progress(len(todo))
        self._writer = ThreadPoolExecutor(max_workers=_writer_threads(self.device))
        pending: tuple[list[Future], list[dict]] | None = None
        try:
            t_wait = time.perf_counter()
            for batch in _batches(loader, batch_size):
                timings["wait"] += time.perf_counter() - t_wait
                rows, futures = self._process_batch(model, attack, inputs, batch, timings)
                if pending is not None:
                    self._commit(rows_path, *pending)
                    _trim_heap()
                pending = (futures, rows)
                summary.processed += sum(r["status"] == STATUS_OK for r in rows)
                summary.skipped += sum(r["status"] != STATUS_OK for r in rows)
                if progress is not None:
                    progress.update(len(batch))
                if self.on_batch is not None:
                    self.on_batch(summary.processed + summary.skipped, len(todo))
                t_wait = time.perf_counter()
            if pending is not None:
                self._commit(rows_path, *pending)
        finally:
            self._writer.shutdown(wait=True)
            self._writer = None
            if progress is not None:
                progress.close()
        summary.timings = timings
        return summary

    def _progress(self, total: int):
        show = self.options.progress
        if show is None:
            show = sys.stderr.isatty()
        if not show or total == 0:
            return None
        from tqdm import tqdm

        return tqdm(total=total, unit="img", desc=self.config.method, file=sys.stderr)

    @staticmethod
    def _commit(results_path: Path, futures: list[Future], rows: list[dict]) -> None:
        for f in futures:
            f.result()  # re-raises write errors (disk full, read-only folder)
        append_rows(results_path, rows)

    def _skip_row(self, item: Item, inputs: data.InputSet) -> dict:
        reason = (item.error or "unknown error").replace("\n", " ")
        logger.warning("skipped %r: %s", data.printable_name(item.name), reason)
        row = dict.fromkeys(RESULT_COLUMNS, "")
        row.update(image=data.printable_name(item.name), status=f"skipped: {reason}")
        if inputs.labels is not None and item.name in inputs.labels.labels:
            row["label"] = inputs.labels.labels[item.name]
        return row

    def _process_batch(
        self,
        model: ImageClassifier,
        attack: Attack,
        inputs: data.InputSet,
        batch: list[Item],
        timings: dict[str, float],
    ) -> tuple[list[dict], list[Future]]:
        good = [it for it in batch if it.error is None]
        rows_by_name = {it.name: self._skip_row(it, inputs) for it in batch if it.error is not None}
        futures: list[Future] = []
        for it in good:
            timings["load"] += it.seconds_load
            timings["superpixels"] += it.seconds_superpixels
        if good:
            rows, futures = self._attack_items(model, attack, inputs, good, timings)
            rows_by_name.update(rows)
        return [rows_by_name[it.name] for it in batch], futures

    def _attack_items(
        self,
        model: ImageClassifier,
        attack: Attack,
        inputs: data.InputSet,
        items: list[Item],
        timings: dict[str, float],
    ) -> tuple[dict[str, dict], list[Future]]:
        cfg = self.config
        dev = self.device
        x = data.to_tensor([it.image for it in items]).to(dev)  # (B, 3, S, S)
        known = inputs.labels.labels if inputs.labels else {}
        target_map = inputs.labels.targets if inputs.labels else {}

        t0 = time.perf_counter()
        attention = None
        with torch.no_grad():
            if model.supports_cam and cfg.uses_superpixels and cfg.phi > 0:
                logits, feats = model.forward_features(x)
            else:
                logits, feats = model(x), None
        clean_pred = logits.argmax(dim=1)
        true = [known.get(it.name) for it in items]
        attacked = torch.tensor(
            [
                int(p) if (t is None or cfg.attack_prediction) else t
                for t, p in zip(true, clean_pred.tolist(), strict=True)
            ],
            device=dev,
        )
        if feats is not None:
            attention = cam_from_features(feats, model.cam_weights(), attacked, tuple(x.shape[-2:]))
        timings["clean_forward"] += time.perf_counter() - t0

        t0 = time.perf_counter()
        targets = (
            torch.tensor([target_map[it.name] for it in items], device=dev)
            if cfg.targeted
            else None
        )
        superpixels = (
            sp.stack_labels([it.superpixels for it in items]).to(dev)
            if cfg.uses_superpixels
            else None
        )
        result = attack.run(
            x,
            attacked,
            targets,
            superpixels=superpixels,
            attention=attention,
            seeds=[image_seed(cfg.seed, it.name) for it in items],
        )
        timings["attack"] += time.perf_counter() - t0

        t0 = time.perf_counter()
        adv_u8 = data.to_uint8(result.adv)  # (B, H, W, 3): exactly the pixels the PNGs hold
        saved = data.to_tensor(adv_u8).to(dev)
        # The writer threads write the PNGs (and encode them, off the CPU); _commit waits.
        futures = [self._save_png(self.out / "images" / f"{it.stem}.png", a)
                   for it, a in zip(items, adv_u8, strict=True)]  # fmt: skip
        futures += [self._save_png(self.out / "clean" / f"{it.stem}.png", it.image)
                    for it in items]  # fmt: skip
        if self.options.save_templates and result.superpixels is not None:
            for i, it in enumerate(items):
                futures.append(self._writer.submit(
                    data.atomic_write_bytes,
                    self.out / "templates" / f"{it.stem}.npz",
                    self._template_bytes(result, i),
                ))  # fmt: skip
        timings["encode"] += time.perf_counter() - t0

        t0 = time.perf_counter()
        with torch.no_grad():
            # PNG is lossless, so predicting on the 8-bit array is predicting on the saved file.
            adv_pred = model(saved).argmax(dim=1).tolist()
        timings["evaluate"] += time.perf_counter() - t0

        rows: dict[str, dict] = {}
        mask_frac = result.mask.flatten(1).mean(dim=1).tolist() if result.mask is not None else None
        for i, it in enumerate(items):
            a = int(attacked[i])
            success = adv_pred[i] == targets[i].item() if cfg.targeted else adv_pred[i] != a
            m = image_metrics(it.image, adv_u8[i])
            rows[it.name] = {
                "image": data.printable_name(it.name),
                "output": f"images/{it.stem}.png",
                "label": "" if true[i] is None else true[i],
                "target": int(targets[i]) if targets is not None else "",
                "clean_pred": int(clean_pred[i]),
                "adv_pred": adv_pred[i],
                "success": int(success),
                "l2": _fmt(m["l2"]),
                "delta_eff": _fmt(m["delta_eff"]),
                "linf": _fmt(m["linf"], 0),
                "psnr": _fmt(m["psnr"], 3),
                "superpixels": int(it.superpixels.max()) + 1 if it.superpixels is not None else "",
                "mask_fraction": _fmt(mask_frac[i]) if mask_frac is not None else "1.0000",
                "status": STATUS_OK,
            }
        return rows, futures

    def _save_png(self, path: Path, image: np.ndarray) -> Future:
        assert self._writer is not None, "the writer threads run only inside _loop"
        if _encode_in_writers(self.device):
            return self._writer.submit(data.save_png, path, image)
        return self._writer.submit(data.atomic_write_bytes, path, data.encode_png(image))

    @staticmethod
    def _template_bytes(result, i: int) -> bytes:
        buf = io.BytesIO()
        arrays = {"superpixels": result.superpixels[i].cpu().numpy().astype(np.int32)}
        if result.mask is not None:
            arrays["mask"] = result.mask[i, 0].cpu().numpy().astype(np.uint8)
        if result.attention is not None:
            arrays["attention"] = result.attention[i, 0].cpu().numpy().astype(np.float16)
        np.savez_compressed(buf, **arrays)
        return buf.getvalue()

    # -- summary -------------------------------------------------------------------------------

    def _write_summary(
        self,
        summary: RunSummary,
        model: ImageClassifier,
        attack: Attack,
        inputs: data.InputSet,
    ) -> None:
        rows = [r for r in read_results(self.out / "results.csv") if r["status"] == STATUS_OK]
        correct = [r for r in rows if r["label"] in ("", r["clean_pred"])]
        summary.correct = len(correct)
        summary.successes = sum(int(r["success"]) for r in correct)
        summary.success_rate = summary.successes / len(correct) if correct else float("nan")
        deltas = [float(r["delta_eff"]) for r in rows if r["delta_eff"]]
        summary.mean_delta_eff = float(np.mean(deltas)) if deltas else float("nan")
        n_done = summary.processed
        record = {
            "method": self.config.method,
            "model": model.name,
            "parameters": attack.describe(),
            "config": asdict(self.config),
            "protocol": {
                "budget": attack.budget,
                "budget_text": PROTOCOL_TEXT[attack.budget],
                "epsilon": "delta * sqrt(N), N = C*H*W at the attack resolution, 0-255 units",
                "image_size": self._image_size(model),
                "success": "measured on the saved 8-bit PNG; rate over images the model "
                "classified correctly before the attack",
                "labels": "labels CSV" if inputs.labels else "clean prediction used as label",
            },
            "counts": {
                "inputs": summary.total,
                "processed_now": summary.processed,
                "reused": summary.reused,
                "ok": len(rows),
                "skipped": summary.skipped,
                "correct": summary.correct,
                "successes": summary.successes,
            },
            "success_rate": _nan_to_none(summary.success_rate),
            "mean_delta_eff": _nan_to_none(summary.mean_delta_eff),
            "seconds": round(summary.seconds, 3),
            "images_per_s": round(n_done / summary.seconds, 4)
            if summary.seconds and n_done
            else None,
            "timings": {k: round(v, 3) for k, v in summary.timings.items()},
            "device": str(self.device),
            "versions": library_versions(),
        }
        data.atomic_write_text(
            self.out / "summary.json", json.dumps(record, indent=2, sort_keys=True) + "\n"
        )


def _nan_to_none(value: float) -> float | None:
    return None if value is None or math.isnan(value) else round(value, 6)
