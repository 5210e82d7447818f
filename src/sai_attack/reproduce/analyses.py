"""The analyses of Sec. 3.2 (Figure 2, HILL texture) and the visual comparison (Figs. 1/7)."""

from __future__ import annotations

import numpy as np

from sai_attack import data
from sai_attack.analysis import foreground_background_split
from sai_attack.attacks import METHOD_NAMES
from sai_attack.report import figure_png, percent
from sai_attack.reproduce import paper
from sai_attack.reproduce.experiments import Reproduction
from sai_attack.reproduce.plan import Need, RunSpec, Section, each
from sai_attack.reproduce.presets import Preset
from sai_attack.reproduce.tables import Figure, Table, num
from sai_attack.visualize import ComparisonRow, comparison_figure

FIGURE2_RUN = RunSpec("ifgm", 2.0)
"""The I-FGM run whose noise Figure 2 splits into foreground and background halves."""

TEXTURE_RUNS = (RunSpec("ifgm", 4.0), RunSpec("sai-fgm", 4.0))
"""The runs whose perturbation energy the texture table splits."""

VISUAL_DELTAS = (4.0, 16.0)
"""The deltas of the visual comparison (where the robustness or Table 1 runs have them)."""


def _figure2(r: Reproduction) -> None:
    spec = FIGURE2_RUN
    names = r.names(r.p.images)

    def split() -> dict:
        res = foreground_background_split(
            r.run_path(spec), r.model, names, r.s.batch_size, r.s.device
        )
        return {
            "n": res.n,
            "full": res.rate("full"),
            "foreground": res.rate("foreground"),
            "background": res.rate("background"),
            "d_fg": res.delta_eff_foreground,
            "d_bg": res.delta_eff_background,
        }

    res = r.cached("figure2", r.fingerprint_of([spec], "fig2"), split)
    table = Table(
        key="figure2_foreground_background",
        title="Figure 2: I-FGM noise on the foreground half vs the background half (delta = 2)",
        caption=f"The saved I-FGM perturbation split into two equal-size parts by {r.s.model}'s "
        f"CAM (most attended half of the pixels vs the rest), each added alone; white-box "
        f"success (%) over the n = {res['n']} correctly classified of the first "
        f"{r.p.images} images.",
        columns=["perturbation", "delta_eff", "success", "paper"],
    )
    table.add("whole", num(r.delta_eff(spec)), percent(res["full"]), "")
    for half in ("foreground", "background"):
        short = "d_fg" if half == "foreground" else "d_bg"
        table.add(f"{half} half", num(res[short]), percent(res[half]), num(paper.FIGURE2[half]))
    r.tables.append(table)


def _texture(r: Reproduction) -> None:
    from sai_attack.detection import analyze_run

    def texture() -> list[dict]:
        out = []
        for s in TEXTURE_RUNS:
            report = analyze_run(r.run_path(s), model=r.model, device=r.s.device, limit=r.p.images)
            out.append(
                {
                    "hill_fg": report.mean("hill_fg"),
                    "hill_bg": report.mean("hill_bg"),
                    "energy_fg": report.energy_fg,
                    "fg_fraction": report.mean("fg_fraction"),
                    "images": len(report.images),
                }
            )
        return out

    values = r.cached("texture", r.fingerprint_of(TEXTURE_RUNS, "texture"), texture)
    table = Table(
        key="texture_hill",
        title="Texture: HILL cost of the attention foreground and background (Sec. 3.2)",
        caption="Mean HILL cost (Li et al., ICIP 2014; larger = smoother) over the CAM foreground "
        "(attention >= 4/12) and the background of the clean images, and the share of each "
        "attack's squared perturbation that lies in the foreground; delta = 4.",
        columns=[
            "run",
            "images",
            "foreground fraction",
            "HILL foreground",
            "HILL background",
            "perturbation energy in foreground",
            "paper HILL foreground",
            "paper HILL background",
        ],
    )
    for s, v in zip(TEXTURE_RUNS, values, strict=True):
        table.add(
            s.label,
            v["images"],
            num(v["fg_fraction"], 3),
            num(v["hill_fg"]),
            num(v["hill_bg"]),
            percent(v["energy_fg"]),
            num(paper.HILL["foreground"]),
            num(paper.HILL["background"]),
        )
    r.tables.append(table)


def figure2_and_texture(r: Reproduction) -> None:
    """Foreground vs background halves of I-FGM noise, and HILL texture of the two regions."""
    _figure2(r)
    _texture(r)


FIGURE2 = Section(
    "figure 2 and texture",
    runs=lambda p: each([FIGURE2_RUN, *TEXTURE_RUNS], p.images),
    fill=figure2_and_texture,
    cost=lambda r: r.p.images * 1.5,
)


def _visual_deltas(p: Preset) -> list[float]:
    return [d for d in VISUAL_DELTAS if d in (*p.robustness_deltas, p.table1_delta)]


def _visual_runs(p: Preset) -> list[Need]:
    return each([s for d in _visual_deltas(p) for s in _visual_specs(d)], p.images)


def _visual_specs(delta: float) -> tuple[RunSpec, RunSpec]:
    return RunSpec("ifgm", delta), RunSpec("sai-fgm", delta)


def _comparison_rows(r: Reproduction, delta: float, count: int) -> list[ComparisonRow]:
    """The first ``count`` images both runs attacked, with SAI-FGM's template."""
    base_spec, sai_spec = _visual_specs(delta)
    base, sai = r.run(base_spec), r.run(sai_spec)
    sai_items = {it.image: it for it in sai.items}
    rows = []
    for item in base.items:
        other = sai_items.get(item.image)
        if other is None:
            continue
        template = np.load(sai.template(other))
        rows.append(
            ComparisonRow(
                title=data.printable_name(item.image)[:18],
                clean=data.load_image(item.clean),
                adversarial={
                    METHOD_NAMES[base_spec.method]: data.load_image(item.adversarial),
                    METHOD_NAMES[sai_spec.method]: data.load_image(other.adversarial),
                },
                superpixels=template["superpixels"],
                mask=template["mask"] if "mask" in template.files else None,
            )
        )
        if len(rows) == count:
            break
    return rows


def visual(r: Reproduction, rows_per_figure: int = 4) -> None:
    """Figures 1/7: clean, I-FGM and SAI-FGM images with zoomed crops, delta 4 and 16."""
    for delta in _visual_deltas(r.p):
        rows = _comparison_rows(r, delta, rows_per_figure)
        if not rows:
            continue
        key = f"figure7_visual_delta{delta:g}"
        path = r.s.out / "figures" / f"{key}.png"
        data.atomic_write_bytes(path, figure_png(comparison_figure(rows)))
        r.figures.append(
            Figure(
                key,
                f"Figures 1/7: visual comparison, delta = {delta:g}",
                "Clean | I-FGM | SAI-FGM, zoomed centre crops, perturbations amplified with one "
                "scale per row, the superpixel image and the attention mask.",
                path,
            )
        )


VISUAL = Section("figures", runs=_visual_runs, fill=visual, cost=lambda r: 50.0)
