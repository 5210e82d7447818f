"""The ``bench`` report: Markdown tables and JSON."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from sai_attack import data
from sai_attack.bench.reference import COUNTERPARTS, SAME_MODEL
from sai_attack.bench.timing import STAGES, BenchReport


def _header(report: BenchReport) -> list[str]:
    c = report.config
    repeats = (
        f", {c['repeats']} repeats (median run; x I-FGM: median of the paired ratios)"
        if c.get("repeats", 1) > 1
        else ""
    )
    load = (
        f", load average {report.load_average[0]:.1f} -> {report.load_average[1]:.1f}"
        if report.load_average
        else ""
    )
    floors = ", ".join(
        f"{name} {1000 * seconds:.1f}" for name, seconds in report.floors_seconds_per_image.items()
    )
    return [
        f"model {c['model']} ({report.memory_format}), device {report.device} ({report.threads} "
        f"threads, {report.interop_threads} inter-op, OMP_WAIT_POLICY {report.omp_wait_policy}"
        f"{load}), batch {c['batch_size']}, {c['limit']} "
        f"images from {c['input']}, delta {c['delta']:g}, T = {c['steps']}, workers "
        f"{c['workers']}{', amp' if c['amp'] else ''}, superpixels {c.get('superpixel', 'slic')}"
        + repeats,
        f"floor (bare forward+backward, {report.memory_format}): "
        f"{report.floor_seconds_per_batch:.3f} s per batch, "
        f"{report.floor_seconds_per_image * 1000:.1f} ms per image (median pass; fastest "
        f"{report.floor_fastest_seconds_per_image * 1000:.1f} ms)"
        + (f"; ms per image by layout (median): {floors}" if floors else ""),
    ]


def _reference_lines(reference: dict) -> list[str]:
    r = reference
    lines = [
        "",
        f"attack loop only, same {r['images']} images and batches, median of {r['repeats']}; "
        "torchattacks on the plain module (BatchNorm kept, default layout) as a user loads it, "
        "and on the same model as I-FGM:",
        "",
        "| attack | s/image | ours over it | same model: s/image | ours over it | largest "
        "difference to ours (0-255) |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    ratio_keys = {
        "torchattacks.PGDL2": ("ifgm_over_pgdl2", "ifgm_over_pgdl2_same_model"),
        "torchattacks.PGD": ("ifgm_linf_over_pgd", "ifgm_linf_over_pgd_same_model"),
    }
    for name, ours in COUNTERPARTS.items():
        plain_ratio, same_ratio = ratio_keys[name]
        lines += [
            f"| {ours} (ours) | {r[ours]:.3f} | | | | |",
            f"| {name} | {r[name]:.3f} | {r[plain_ratio]:.3f} | {r[name + SAME_MODEL]:.3f} | "
            f"{r[same_ratio]:.3f} | {r[f'gap to {name}{SAME_MODEL}']:.3g} |",
        ]
    return lines


def format_report(report: BenchReport) -> str:
    """The report as Markdown tables."""
    lines = [
        *_header(report),
        "",
        "| method | images/s | s/image | x I-FGM | efficiency | vs fastest pass | "
        + " | ".join(f"{s} ms" for s in STAGES)
        + " |",
        "| --- " * (6 + len(STAGES)) + "|",
    ]
    for m in report.methods:
        ratio = f"{m.ratio_to_ifgm:.3f}" if m.ratio_to_ifgm is not None else "n/a"
        stages = " | ".join(f"{1000 * m.stages[s]:.1f}" for s in STAGES)
        lines.append(
            f"| {m.method} | {m.images_per_s:.3f} | {m.seconds_per_image:.3f} | {ratio} | "
            f"{m.efficiency:.3f} | {m.efficiency_fastest:.3f} | {stages} |"
        )
    if report.reference:
        lines += _reference_lines(report.reference)
    mem = (
        f"peak RSS {report.peak_rss_methods_mb:.0f} MiB after the methods, "
        f"{report.peak_rss_mb:.0f} MiB in all"
    )
    if report.peak_cuda_mb is not None:
        mem += f", peak CUDA memory {report.peak_cuda_mb:.0f} MiB"
    lines += ["", mem]
    return "\n".join(lines)


def write_json(report: BenchReport, path: str | Path) -> None:
    """Write the report as JSON."""
    data.atomic_write_text(path, json.dumps(asdict(report), indent=2) + "\n")
