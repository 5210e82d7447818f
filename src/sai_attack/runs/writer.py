"""The one writer of run folders.

:class:`RunWriter` owns everything a run writes: it creates the folder, takes its lock, clears
what a killed run left behind, refuses to resume a run with other parameters, writes the PNGs
and templates (in writer threads) and appends rows to ``results.csv`` only after the files they
name are on disk, so that a row never points at a missing file.
"""

from __future__ import annotations

import io
import json
import logging
import os
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np

from sai_attack import data
from sai_attack.runs.layout import RunLayout
from sai_attack.runs.lock import RunLock
from sai_attack.runs.record import SCHEMA_VERSION, read_json
from sai_attack.runs.results import (
    STATUS_OK,
    append_rows,
    is_torn,
    read_results,
    write_results,
)
from sai_attack.runtime import RunError

logger = logging.getLogger(__name__)

RESUME_KEYS = ("schema", "method", "model", "parameters", "min_delta")
"""What a re-run must match in ``run.json`` to resume (``min_delta``: the search's settings,
absent from other runs)."""


def template_bytes(
    superpixels: np.ndarray, mask: np.ndarray | None, attention: np.ndarray | None
) -> bytes:
    """A saved template: ``superpixels`` (int32), ``mask`` (uint8), ``attention`` (float16)."""
    buf = io.BytesIO()
    arrays = {"superpixels": superpixels.astype(np.int32)}
    if mask is not None:
        arrays["mask"] = mask.astype(np.uint8)
    if attention is not None:
        arrays["attention"] = attention.astype(np.float16)
    np.savez_compressed(buf, **arrays)
    return buf.getvalue()


class RunWriter:
    """Writes one run folder.

    Args:
        folder: The run folder (created when missing).
        save_templates: Whether templates are written too.
        encode_in_threads: Encode PNGs in the writer threads (good when the CPU cores are free,
            i.e. the attack runs on a GPU), else on the calling thread between batches.
    """

    def __init__(self, folder: Path, save_templates: bool, encode_in_threads: bool) -> None:
        self.layout = RunLayout(Path(folder))
        self.save_templates = save_templates
        self.encode_in_threads = encode_in_threads
        self._lock = RunLock(self.layout.lock)
        self._pool: ThreadPoolExecutor | None = None

    @property
    def folder(self) -> Path:
        """The run folder."""
        return self.layout.folder

    # -- opening and closing ---------------------------------------------------------------

    def open(self, record: dict, order: list[str]) -> None:
        """Create and lock the folder, check that it resumes the same run, tidy it up.

        Args:
            record: The ``run.json`` content (``schema`` is added).
            order: All input names in input order (for merging rows of distributed runs).

        Raises:
            RunError: The folder cannot be created, is locked, or holds another run.
        """
        try:
            for sub in [self.folder, *self.layout.subfolders(self.save_templates)]:
                sub.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise RunError(
                f"cannot create output folder {str(self.folder)!r}: {exc.strerror}"
            ) from None
        self._lock.__enter__()
        try:
            for tmp in self.layout.temporary_files():  # the lock says nobody writes them
                tmp.unlink(missing_ok=True)
            self._check_resume({"schema": SCHEMA_VERSION, **record})
            if is_torn(self.layout.results):  # a write cut short: keep the complete rows
                logger.warning("%s ends in a torn row; it is dropped", self.layout.results)
                write_results(self.layout.results, read_results(self.layout.results))
            self.merge_parts(order)
            self._drop_retried_rows()
        except OSError as exc:
            self.close()
            raise RunError(f"cannot prepare output: {exc}") from None
        except RunError:
            self.close()
            raise

    def close(self) -> None:
        """Release the lock."""
        self._lock.__exit__()

    def _check_resume(self, record: dict) -> None:
        previous = read_json(self.layout.record) if self.layout.record.is_file() else None
        if previous and any(previous.get(k) != record.get(k) for k in RESUME_KEYS):
            raise RunError(
                f"output folder {str(self.folder)!r} holds a run with different parameters; "
                "use another output folder (or delete this one)"
            )
        data.atomic_write_text(
            self.layout.record, json.dumps(record, indent=2, sort_keys=True) + "\n"
        )

    # -- rows ------------------------------------------------------------------------------

    def is_done(self, row: dict[str, str]) -> bool:
        """Whether a row's image is finished: status ok and both its PNGs on disk."""
        return (
            row["status"] == STATUS_OK
            and bool(row.get("output"))
            and (self.folder / row["output"]).is_file()
            and self.layout.clean(Path(row["output"]).stem).is_file()
        )

    def done(self) -> dict[str, str]:
        """The finished images: ``image`` name -> the SHA-256 of the input it was made from."""
        rows = read_results(self.layout.results)
        return {r["image"]: r.get("sha256") or "" for r in rows if self.is_done(r)}

    def ok_rows(self) -> list[dict[str, str]]:
        """The rows with status ok."""
        return [r for r in read_results(self.layout.results) if r["status"] == STATUS_OK]

    def rows_path(self, rank: int, distributed: bool) -> Path:
        """Where this rank appends its rows."""
        path = self.layout.part(rank) if distributed else self.layout.results
        path.parent.mkdir(exist_ok=True)
        return path

    def merge_parts(self, order: list[str]) -> None:
        """Fold per-rank rows into ``results.csv``, one row per image, in input order."""
        parts = self.layout.parts()
        rows = {r["image"]: r for r in read_results(self.layout.results)}
        for part in parts:
            rows.update({r["image"]: r for r in read_results(part)})
        position = {data.printable_name(name): i for i, name in enumerate(order)}
        ordered = sorted(
            rows.values(), key=lambda r: (position.get(r["image"], len(order)), r["image"])
        )
        if parts or ordered != list(rows.values()):
            write_results(self.layout.results, ordered)
        for part in parts:
            part.unlink()

    def forget(self, images: set[str]) -> None:
        """Drop the rows of ``images`` (they will be attacked again)."""
        rows = read_results(self.layout.results)
        write_results(self.layout.results, [r for r in rows if r["image"] not in images])

    def _drop_retried_rows(self) -> None:
        """Earlier skipped rows, and rows whose images are gone, are retried: drop them."""
        rows = read_results(self.layout.results)
        keep = [r for r in rows if self.is_done(r)]
        if len(keep) != len(rows):
            write_results(self.layout.results, keep)

    # -- files -----------------------------------------------------------------------------

    def __enter__(self) -> RunWriter:
        threads = max(1, min(8, os.cpu_count() or 1)) if self.encode_in_threads else 1
        self._pool = ThreadPoolExecutor(max_workers=threads)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def _submit(self, fn, *args) -> Future:
        if self._pool is None:
            raise RuntimeError("RunWriter files are written inside 'with writer:'")
        return self._pool.submit(fn, *args)

    def write_png(self, path: Path, image: np.ndarray) -> Future:
        """Write an (H, W, 3) uint8 image as PNG (encoded here or in a writer thread)."""
        if self.encode_in_threads:
            return self._submit(data.save_png, path, image)
        return self._submit(data.atomic_write_bytes, path, data.encode_png(image))

    def write_image_pair(
        self, stem: str, adversarial: np.ndarray, clean: np.ndarray
    ) -> list[Future]:
        """Write the adversarial and the clean PNG of ``stem``."""
        return [
            self.write_png(self.layout.adversarial(stem), adversarial),
            self.write_png(self.layout.clean(stem), clean),
        ]

    def write_template(self, stem: str, payload: bytes) -> Future:
        """Write ``stem``'s template (see :func:`template_bytes`)."""
        return self._submit(data.atomic_write_bytes, self.layout.template(stem), payload)

    @staticmethod
    def commit(rows_path: Path, futures: list[Future], rows: list[dict]) -> None:
        """Wait for a batch's files, then append its rows (re-raises write errors)."""
        for f in futures:
            f.result()
        append_rows(rows_path, rows)

    def write_summary(self, summary: dict) -> None:
        """Write ``summary.json`` (``schema`` is added)."""
        record = {"schema": SCHEMA_VERSION, **summary}
        data.atomic_write_text(
            self.layout.summary, json.dumps(record, indent=2, sort_keys=True) + "\n"
        )
