"""The content of ``summary.json``: the run record, the protocol, counts, rates and timing."""

from __future__ import annotations

import math
from typing import Any

from sai_attack.attacks import Attack
from sai_attack.runs import PROTOCOL_TEXT
from sai_attack.runtime import library_versions


def _nan_to_none(value: float) -> float | None:
    return None if value is None or math.isnan(value) else round(value, 6)


def summary_record(
    summary: Any,
    record: dict,
    attack: Attack,
    ok_rows: int,
    has_labels: bool,
    device: str,
    attention: str | None,
) -> dict:
    """``summary.json`` of a finished run.

    Args:
        summary: The :class:`~sai_attack.pipeline.run.RunSummary`.
        record: The ``run.json`` record (method, model, parameters).
        attack: The attack that ran.
        ok_rows: Rows with status ok in ``results.csv``.
        has_labels: Whether a labels CSV gave the classes.
        device: Where the attack ran.
        attention: The attention method that ran (``auto`` resolved), None without attention.
    """
    n_done = summary.processed
    return {
        **record,
        "protocol": {
            "budget": attack.budget,
            "budget_text": PROTOCOL_TEXT[attack.budget],
            "epsilon": "delta * sqrt(N), N = C*H*W at the attack resolution, 0-255 units",
            "image_size": record["parameters"]["image_size"],
            "success": "measured on the saved 8-bit PNG; rate over images the model "
            "classified correctly before the attack",
            "labels": "labels CSV" if has_labels else "clean prediction used as label",
            "attention": attention or "none",
        },
        "counts": {
            "inputs": summary.total,
            "processed_now": summary.processed,
            "reused": summary.reused,
            "ok": ok_rows,
            "skipped": summary.skipped,
            "correct": summary.correct,
            "successes": summary.successes,
        },
        "success_rate": _nan_to_none(summary.success_rate),
        "mean_delta_eff": _nan_to_none(summary.mean_delta_eff),
        "seconds": round(summary.seconds, 3),
        "images_per_s": round(n_done / summary.seconds, 4) if summary.seconds and n_done else None,
        "timings": {k: round(v, 3) for k, v in summary.timings.items()},
        "device": device,
        "versions": library_versions(),
    }
