"""``evaluation.md``: the protocol and Markdown tables in the layout of the paper's tables."""

from __future__ import annotations

import re
from collections.abc import Sequence

from sai_attack.attacks import METHOD_NAMES
from sai_attack.defenses import Defense
from sai_attack.evaluation.compute import Evaluation
from sai_attack.evaluation.protocol import PROTOCOL, method_of, success_interval
from sai_attack.evaluation.targets import Target
from sai_attack.report import markdown_table, number, rate_interval
from sai_attack.runs import Run

POOLING = {"avgpool": "AVG", "maxpool": "MAX"}
"""The pooling defenses of the paper's Table 3 and their row labels."""


def _cell(row: dict | None, star: bool = False) -> str:
    if row is None:
        return ""
    rate = rate_interval(row["success_rate"], *success_interval(row))
    return f"{rate}{'*' if star else ''} (n={row['n']})"


def _method_name(run: Run) -> str:
    method = method_of(run)
    return METHOD_NAMES.get(method, method)


def run_label(run: Run) -> str:
    """``name (Method, δ=...)``: how tables and plots name a run."""
    delta = "" if run.delta is None else f", δ={run.delta:g}"
    return f"{run.name} ({_method_name(run)}{delta})"


def swept(evaluation: Evaluation) -> dict[str, list[Defense]]:
    """The defenses evaluated at more than one parameter value, by name, in parameter order."""
    groups: dict[str, list[Defense]] = {}
    for d in evaluation.defenses:
        if d.param_name is not None:
            groups.setdefault(d.name, []).append(d)
    return {k: sorted(v, key=lambda d: d.param) for k, v in groups.items() if len(v) > 1}


def _runs_by_defense(
    evaluation: Evaluation, target: Target, defenses: Sequence[Defense], header: Sequence[str]
) -> list[str]:
    """Runs x ``defenses`` on one model."""
    rows = [
        [run_label(run)] + [_cell(evaluation.row(run.name, target.name, d.spec)) for d in defenses]
        for run in evaluation.runs
    ]
    return markdown_table(["Attack", *header], rows)


def attack_ability_table(evaluation: Evaluation) -> list[str]:
    """Table 1 layout: success without defense, runs x models, * on the white-box model."""
    header = ["Attack", *[t.name for t in evaluation.targets]]
    rows = []
    for run in evaluation.runs:
        cells = [run_label(run)]
        for t in evaluation.targets:
            cells.append(_cell(evaluation.row(run.name, t.name, "none"), t.is_attack_model(run)))
        rows.append(cells)
    return markdown_table(header, rows)


def defense_table(evaluation: Evaluation, target: Target) -> list[str]:
    """Runs x defenses on one model (the layout of the paper's Table 4)."""
    specs = [d.spec for d in evaluation.defenses]
    return _runs_by_defense(evaluation, target, evaluation.defenses, specs)


def pooling_table(evaluation: Evaluation, target: Target) -> list[str]:
    """Table 3 layout: (operation, threshold, method) x kernel size, on one model."""
    pools = [d for d in evaluation.defenses if d.name in POOLING]
    kernels = sorted({d.param for d in pools})
    header = ["Operation", "Threshold", "Attack method", *[f"k={k}" for k in kernels]]
    rows = []
    for op, label in POOLING.items():
        present = {d.param: d for d in pools if d.name == op}
        if not present:
            continue
        runs = sorted(evaluation.runs, key=lambda r: (r.delta is None, r.delta or 0.0))
        for run in runs:
            threshold = "" if run.delta is None else f"{run.delta:g}√N"
            cells = [label, threshold, f"{run.name} ({_method_name(run)})"]
            for k in kernels:
                d = present.get(k)
                cells.append(_cell(evaluation.row(run.name, target.name, d.spec)) if d else "")
            rows.append(cells)
    return markdown_table(header, rows)


def sweep_table(evaluation: Evaluation, target: Target, sweep: Sequence[Defense]) -> list[str]:
    """Runs x parameter values of one swept defense, on one model."""
    header = [f"{d.param_name}={d.param:g}" for d in sweep]
    return _runs_by_defense(evaluation, target, sweep, header)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "model"


def plot_name(defense: str, target: Target) -> str:
    """File name of the sweep plot of ``defense`` on ``target`` under ``plots/``."""
    return f"{_slug(defense)}_{_slug(target.name)}.png"


def _runs_table(evaluation: Evaluation) -> list[str]:
    header = ["Run", "Method", "Attack model", "δ", "mean δ_eff", "Images", "Labels", "Folder"]
    rows = [
        [
            r.name,
            _method_name(r),
            r.model,
            "" if r.delta is None else f"{r.delta:g}",
            number(r.mean_delta_eff, 3),
            len(r.items),
            r.label_source,
            r.path,
        ]
        for r in evaluation.runs
    ]
    return markdown_table(header, rows)


def results_markdown(evaluation: Evaluation, plots: bool = True) -> str:
    """``evaluation.md``: protocol, runs, and tables in the layout of the paper's tables."""
    lines = [
        "# Evaluation of adversarial examples under models and defenses",
        "",
        "Protocol:",
        "",
        *[f"- {key}: {text}." for key, text in PROTOCOL.items()],
        "",
        "Cells: attack success rate in % with its 95% Wilson interval in brackets (n = images "
        "whose defended clean version the model classifies correctly); `*` marks the white-box "
        "model of the run; n/a: n = 0.",
        "",
        "## Runs",
        "",
        *_runs_table(evaluation),
        "",
        "## Attack ability: white-box and black-box (layout of Table 1)",
        "",
        "Success rate without defense.",
        "",
        *attack_ability_table(evaluation),
    ]
    if len(evaluation.defenses) > 1:
        for t in evaluation.targets:
            lines += ["", f"## Robustness to defenses (gray-box) on {t.name}", ""]
            lines += defense_table(evaluation, t)
    if any(d.name in POOLING for d in evaluation.defenses):
        for t in evaluation.targets:
            lines += ["", f"## Pooling on {t.name} (layout of Table 3)", ""]
            lines += pooling_table(evaluation, t)
    for name, sweep in swept(evaluation).items():
        for t in evaluation.targets:
            lines += ["", f"## Sweep of {name} on {t.name}", ""]
            lines += sweep_table(evaluation, t, sweep)
            if plots:
                lines += ["", f"![{name} on {t.name}](plots/{plot_name(name, t)})"]
    return "\n".join(lines) + "\n"
