"""The reproduction report: ``report.html`` (self-contained), ``report.md``, tables and figures.

The HTML page embeds its figures as data URIs, has no scripts and loads nothing from anywhere;
every string it shows (file names, model specs, paths) goes through :func:`html.escape`.
"""

from __future__ import annotations

import base64
import html
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

from sai_attack import data
from sai_attack.reproduce.tables import ALPHA, Figure, Finding, Table, num

ORDER = (
    "table1_paper", "table1_matched", "table2_detection", "figure4_resize", "figure5_jpeg",
    "table3_pooling", "figure6_tvm_bitdepth", "table4_superpixel_algorithms",
    "ablation_superpixel_size", "ablation_phi", "ablation_gradient_mode",
    "figure2_foreground_background", "texture_hill",
)  # fmt: skip

CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 0.85em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.5em; text-align: right; }
th { background: #f2f2f2; } td:first-child, th:first-child { text-align: left; }
.caption { color: #555; font-size: 0.9em; max-width: 1000px; }
img { max-width: 100%; border: 1px solid #ddd; }
.wins { color: #1a7f37; font-weight: 600; } .loses { color: #b42318; font-weight: 600; }
code { background: #f6f6f6; padding: 0 0.2em; }
"""


PROGRAM = "sai-attack"
"""How the command line program is named in reports (whatever path started it)."""


def typed_command(argv: Sequence[str] | None = None) -> str:
    """The command as the user typed it, e.g. ``sai-attack reproduce data --out out``.

    ``sys.argv[0]`` is the absolute path of the ``sai-attack`` console script (or of
    ``sai_attack/__main__.py`` under ``python -m sai_attack``): a report shows it as
    ``sai-attack``, which is what was typed and does not leak the installation's path. Any other
    program (a script calling the Python API) is shown by its file name.

    Args:
        argv: The arguments, program first (default ``sys.argv``).
    """
    argv = list(sys.argv if argv is None else argv)
    if not argv:
        return ""
    program = Path(argv[0])
    is_ours = program.stem == PROGRAM or (
        program.name == "__main__.py" and program.parent.name == "sai_attack"
    )
    return shlex.join([PROGRAM if is_ours else program.name, *argv[1:]])


def _md_code(text: str) -> str:
    return "`" + text.replace("`", "'").replace("\n", " ") + "`"


def _sorted_tables(tables: list[Table]) -> list[Table]:
    rank = {k: i for i, k in enumerate(ORDER)}
    return sorted(tables, key=lambda t: rank.get(t.key, len(ORDER)))


def findings_table(findings: list[Finding]) -> Table:
    """The summary: does the superpixel method still win at matched norm?"""
    table = Table(
        key="summary_matched_norm",
        title="Summary: SAI-FGM vs I-FGM under both protocols",
        caption="Success rates (%) of SAI-FGM and I-FGM, or detection accuracy (%) where lower "
        "is better, each with its 95% interval in brackets (success rates: Wilson; detection: "
        "mean ± t·sd/√k over the k splits). 'paper': I-FGM projected into the L2 ball as "
        "published (its delta_eff is smaller); 'matched': I-FGM rescaled to the same full budget "
        "as SAI-FGM. Verdicts on success rates come from the exact McNemar test on the per-image "
        f"outcomes of the two runs on the same images: a tie unless p < {ALPHA:g}. Detection "
        "accuracies pair no images across runs, so there the verdict is a tie while the 95% "
        "split intervals overlap. Black-box mean: the interval and test pool the (model, image) "
        "pairs of the black-box models.",
        columns=["measurement", "SAI-FGM", "I-FGM (paper)", "paper protocol", "paper test",
                 "I-FGM (exact)", "matched norm", "matched test",
                 "delta_eff SAI / I-FGM / I-FGM exact"],
    )  # fmt: skip
    for f in findings:
        d = f.delta_eff
        table.add(
            f.measurement,
            f.paper[0].cell(),
            f.paper[1].cell(),
            *f.paper_comparison,
            f.matched[1].cell() if f.matched else "",
            *f.matched_comparison,
            f"{num(d[0])} / {num(d[1])} / {num(d[2]) if d[2] is not None else ''}",
        )
    return table


def _html_table(table: Table) -> str:
    e = html.escape
    head = "".join(f"<th>{e(c)}</th>" for c in table.columns)
    body = []
    for row in table.rows:
        cells = []
        for c in row:
            cls = f' class="{c}"' if c in ("wins", "loses") else ""
            cells.append(f"<td{cls}>{e(c)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    notes = "".join(f"<li>{e(n)}</li>" for n in table.notes)
    return (
        f'<h3 id="{e(table.key)}">{e(table.title)}</h3>\n<p class="caption">{e(table.caption)}</p>'
        f"\n<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"
        + (f"<ul>{notes}</ul>" if notes else "")
    )


def _html_figure(figure: Figure) -> str:
    e = html.escape
    payload = base64.b64encode(figure.path.read_bytes()).decode("ascii")
    return (
        f'<h3 id="{e(figure.key)}">{e(figure.title)}</h3>\n<p class="caption">'
        f'{e(figure.caption)}</p>\n<img alt="{e(figure.title)}" '
        f'src="data:image/png;base64,{payload}">'
    )


def write_report(
    out: Path,
    tables: list[Table],
    figures: list[Figure],
    findings: list[Finding],
    meta: dict,
    inputs: list[tuple[str, str]] = (),
) -> dict[str, Path]:
    """Write ``tables/``, ``report.md`` and ``report.html``; returns their paths.

    Args:
        out: The output folder.
        tables: The tables.
        figures: The figures.
        findings: The summary lines.
        meta: Setup shown at the top (protocol, models, data, versions, seeds, run time).
        inputs: ``(image name, status)`` of every input of the main image set.
    """
    tables = _sorted_tables(tables)
    summary = findings_table(findings)
    for t in [summary, *tables]:
        t.write(out / "tables")
    e = html.escape
    meta_rows = "".join(
        f"<tr><th>{e(str(k))}</th><td>{e(str(v))}</td></tr>" for k, v in meta.items()
    )
    figures_by_key = {f.key: f for f in figures}
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        "<title>sai-attack reproduction report</title>",
        f"<style>{CSS}</style></head><body>",
        "<h1>Robust Superpixel-Guided Attentional Adversarial Attack: reproduction</h1>",
        "<p>Every table of Section 4 of Dong et al. (CVPR 2020) measured with <code>sai-attack"
        " reproduce</code>. Paper values (ImageNet, Inception-v3) are shown next to ours where "
        "the paper has one; our models and data differ, so they are a reference, not a target."
        "</p>",
        f"<h2>Setup</h2><table><tbody>{meta_rows}</tbody></table>",
        "<h2>Summary</h2>",
        _html_table(summary),
        "<h2>Tables and figures</h2>",
    ]
    md = [
        "# Robust Superpixel-Guided Attentional Adversarial Attack: reproduction",
        "",
        "| setting | value |",
        "| --- | --- |",
        *[f"| {k} | {str(v).replace('|', '/')} |" for k, v in meta.items()],
        "",
        "## Summary",
        "",
        summary.markdown(),
        "",
        "## Tables and figures",
        "",
    ]
    placed: set[str] = set()
    for t in tables:
        parts.append(_html_table(t))
        md += [t.markdown(), ""]
        if t.key in figures_by_key:
            f = figures_by_key[t.key]
            parts.append(_html_figure(f))
            md += [f"![{f.title}](figures/{f.path.name})", ""]
            placed.add(t.key)
    for f in figures:
        if f.key not in placed:
            parts.append(_html_figure(f))
            md += [f"### {f.title}", "", f.caption, "", f"![{f.title}](figures/{f.path.name})", ""]
    if inputs:
        used = sum(status == "ok" for _, status in inputs)
        items = "".join(f"<li>{e(name)}: {e(status)}</li>" for name, status in inputs)
        parts.append(
            f"<h2>Inputs</h2><details><summary>{used} of {len(inputs)} inputs attacked "
            f"(status from runs/*/results.csv)</summary><ul>{items}</ul></details>"
        )
        md += ["## Inputs", "", f"{used} of {len(inputs)} inputs attacked.", ""]
        md += [f"- {_md_code(name)}: {status}" for name, status in inputs]
    parts.append("</body></html>")
    paths = {"html": out / "report.html", "md": out / "report.md"}
    data.atomic_write_text(paths["html"], "\n".join(parts) + "\n")
    data.atomic_write_text(paths["md"], "\n".join(md) + "\n")
    return paths
