"""Beyond the paper (issue 14): EoT, transfer boosters, the control experiment, stego-aware SAI.

Defense-aware (EoT) and transfer-boosted attacks; the control experiment (is it the superpixels,
or only few smooth degrees of freedom?); stego-aware SAI; and the trade-off between white-box
success and steganalysis detection.

Every attack here is at matched norm (``--budget exact``: every perturbation at ``||r|| = eps``)
and every row shows its delta_eff. The section reads the first ``beyond_images`` inputs.
"""

from __future__ import annotations

import math
from pathlib import Path

from sai_attack import data
from sai_attack.attacks import SPACES
from sai_attack.report import figure_png, new_figure, percent
from sai_attack.reproduce.detectability import split_measure
from sai_attack.reproduce.experiments import Rates, Reproduction, defense_specs
from sai_attack.reproduce.plan import Need, RunSpec, Section, each
from sai_attack.reproduce.presets import Preset
from sai_attack.reproduce.tables import Figure, Measure, Table, num
from sai_attack.superpixels import SUPERPIXEL_ALGORITHMS

CONTROL_DEFENSES = ("none", "resize:3", "jpeg:55", "avgpool:5", "tvm")
"""The columns of the control table (gray-box success after each defense)."""

EOT_COLUMNS = ("resize:3", "jpeg:55", "avgpool:5", "tvm", "bitdepth:3")
"""Every EoT attack is measured under each of these defenses (and the ones it targets)."""

MATCHED = "matched norm: every attack rescaled to ||r|| = eps (--budget exact)"

# --------------------------------------------------------------------------------------------
# The runs
# --------------------------------------------------------------------------------------------


def template_spec(template: str, delta: float, attention: bool) -> RunSpec:
    """SAI-FGM's loop on one template, with or without the attention mask, at matched norm.

    ``pixels`` without attention is I-FGM (exact) itself (the same attack); a superpixel
    algorithm is SAI-FGM on its template; a control space (``dct``, ``gaussian``) replaces the
    superpixel space.

    Raises:
        ValueError: ``template`` is neither a space nor a superpixel algorithm.
    """
    phi12 = 4 if attention else 0
    if template == "pixels" and not attention:
        return RunSpec("ifgm", delta, budget="exact")
    if template in SUPERPIXEL_ALGORITHMS:
        return RunSpec("sai-fgm", delta, superpixel=template, phi12=phi12)
    if template in SPACES:
        return RunSpec("sai-fgm", delta, space=template, phi12=phi12)
    raise ValueError(f"template {template!r} is neither a space nor a superpixel algorithm")


def _templates(p: Preset, delta: float) -> list[tuple[str, bool, RunSpec]]:
    return [(t, a, template_spec(t, delta, a)) for t in p.control_templates for a in (False, True)]


def _eot(spec: RunSpec, p: Preset, defenses: str) -> RunSpec:
    return RunSpec(
        spec.method,
        spec.delta,
        budget=spec.budget,
        extra=(("eot", defenses), ("eot_samples", p.eot_samples)),
    )


def _eot_specs(p: Preset) -> list[tuple[str, str, RunSpec]]:
    """(attack, defenses it targets, run) of the EoT table."""
    d = p.control_delta
    sai, base = RunSpec("sai-fgm", d), RunSpec("ifgm", d, budget="exact")
    rows = [("I-FGM (exact)", "", base), ("SAI-FGM", "", sai)]
    rows += [("EoT-SAI-FGM", spec, _eot(sai, p, spec)) for spec in p.eot_defenses]
    rows.append(("EoT-SAI-FGM", p.eot_mixed, _eot(sai, p, p.eot_mixed)))
    rows.append(("EoT-I-FGM (exact)", p.eot_mixed, _eot(base, p, p.eot_mixed)))
    return rows


def _transfer_specs(p: Preset) -> list[tuple[str, str, RunSpec]]:
    """(attack, boosters, run) of the transfer table."""
    d, rows = p.transfer_delta, []
    boost = (
        ("input_diversity", p.input_diversity),
        ("translation_invariance", p.translation_invariance),
    )
    for title, method, budget in (("I-FGM (exact)", "ifgm", "exact"), ("SAI-FGM", "sai-fgm", None)):
        rows += [
            (title, "none", RunSpec(method, d, budget=budget)),
            (title, "DI + TI", RunSpec(method, d, budget=budget, extra=boost)),
            (title, "ensemble", RunSpec(method, d, budget=budget, ensemble=1)),
        ]
    return rows


def _pareto_specs(p: Preset, delta: float) -> list[tuple[str, str, RunSpec]]:
    """(family, setting, run) of the points of the Pareto plot at one delta."""
    points = [
        ("templates", f"{t}{' + attention' if a else ''}", spec)
        for t, a, spec in _templates(p, delta)
    ]
    points += [
        ("merging", f"beta={b:g}", RunSpec("sai-fgm", delta, merge_beta=b))
        for b in p.detection_betas
        if b
    ]
    return points + [
        ("texture weight", f"W={w:g}", RunSpec("sai-fgm", delta, texture_weight=w))
        for w in p.texture_weights
    ]


def _all_pareto(p: Preset) -> list[RunSpec]:
    return [spec for d in p.beyond_deltas for _, _, spec in _pareto_specs(p, d)]


def _runs(p: Preset) -> list[Need]:
    specs = [s for _, _, s in _templates(p, p.control_delta)]
    specs += [s for *_, s in _eot_specs(p)] + [s for *_, s in _transfer_specs(p)]
    return each([*specs, *_all_pareto(p)], p.beyond_images)


# --------------------------------------------------------------------------------------------
# The tables
# --------------------------------------------------------------------------------------------


def _values_per_channel(r: Reproduction, template: str, spec: RunSpec) -> str:
    """K: the free values per channel of a run's perturbation (mean over images for templates)."""
    n = r.p.beyond_images
    if template in SUPERPIXEL_ALGORITHMS:
        return num(r.column_mean(spec, n, "superpixels"), 0)
    size = r.run(spec).record.get("image_size")
    if not isinstance(size, int):
        return ""
    if template == "pixels":
        return str(size * size)
    config = spec.config(r.s.model, r.s.seed, r.s.black_box).superpixel_config()
    return str(SPACES[template].from_settings(config, "noise", 1.0).basis((size, size)).k)


def _control(r: Reproduction, detection: dict[str, dict]) -> None:
    p, m, n = r.p, r.s.model, r.p.beyond_images
    rows_ = _templates(p, p.control_delta)
    defenses = defense_specs(CONTROL_DEFENSES)
    rates = r.evaluate("beyond-control", [s for *_, s in rows_], defenses, [m], n)
    table = Table(
        key="beyond_control",
        title=f"Beyond the paper: superpixels or just smoothness? (delta = {p.control_delta:g})",
        caption=f"SAI-FGM's loop on templates with the same number of values per channel K and "
        f"no image content (grid: S x S blocks; dct: the K lowest DCT frequencies; gaussian: K "
        f"Gaussian bumps on a grid), with and without the attention mask, on {m}, first {n} "
        f"images: white-box success and success after resize gamma = 3, JPEG q = 55, average "
        f"pooling k = 5 and TVM (%), detection accuracy (%) of the SPAM + "
        f"{p.detection_classifier} detector with its 95% interval over "
        f"{p.detection_splits} splits (lower = harder to detect). pixels without attention is "
        f"I-FGM (exact). {MATCHED}.",
        columns=["template", "attention", "values per channel K", "delta_eff", "white-box",
                 "resize gamma=3", "JPEG q=55", "avgpool k=5", "TVM", "detection"],
    )  # fmt: skip
    for template, attention, spec in rows_:
        table.add(
            template,
            "yes" if attention else "no",
            _values_per_channel(r, template, spec),
            num(r.delta_eff(spec, n)),
            *[percent(rates.rate(spec, m, d)) for d in defenses],
            split_measure(detection.get(spec.key, {})).cell(),
        )
    table.notes.append(rates.interval_note())
    r.tables.append(table)


def _eot_table(r: Reproduction) -> None:
    p, m, n = r.p, r.s.model, r.p.beyond_images
    rows_ = _eot_specs(p)
    columns = list(dict.fromkeys([*EOT_COLUMNS, *p.eot_defenses]))
    defenses = defense_specs(["none", *columns])
    rates = r.evaluate("beyond-eot", [s for *_, s in rows_], defenses, [m], n)
    table = Table(
        key="beyond_eot",
        title=f"Beyond the paper: defense-aware attacks (EoT), delta = {p.control_delta:g}",
        caption=f"Gray-box success (%) on {m} after each defense, first {n} images. EoT: each "
        f"step's gradient is the mean over {p.eot_samples} draw(s) of the targeted defenses "
        "applied before the model (true gradients of resize and pooling, a differentiable "
        f"JPEG, straight-through BPDA for TVM and bit depth). {MATCHED}.",
        columns=["attack", "EoT against", "delta_eff", "none", *columns],
    )
    for title, target, spec in rows_:
        cells = [percent(rates.rate(spec, m, d)) for d in defenses]
        table.add(title, target, num(r.delta_eff(spec, n)), *cells)
    table.notes.append(rates.interval_note())
    r.tables.append(table)


def _transfer(r: Reproduction) -> None:
    p, n, models = r.p, r.p.beyond_images, r.s.models
    rows_ = _transfer_specs(p)
    rates = r.evaluate("beyond-transfer", [s for *_, s in rows_], ["none"], models, n)
    surrogates = set(r.s.black_box[:1])
    table = Table(
        key="beyond_transfer",
        title=f"Beyond the paper: transfer with boosters, delta = {p.transfer_delta:g}",
        caption=f"Success (%) with its 95% Wilson interval on the first {n} images; white-box "
        f"model {r.s.model} (*). Boosters: input diversity (DI, p = {p.input_diversity:g}) with "
        f"translation invariance (TI, {p.translation_invariance}-pixel Gaussian kernel), or an "
        f"ensemble of {r.s.model} and {', '.join(sorted(surrogates)) or 'a black-box model'} "
        "(logits averaged; a surrogate is no longer black-box there). Black-box mean over the "
        f"black-box models of the row. {MATCHED}.",
        columns=["attack", "boosters", "delta_eff", f"{r.s.model}*", *models[1:], "black-box mean"],
    )
    for title, boosters, spec in rows_:
        measures = [rates.measure(spec, model, "none") for model in models]
        own = [spec.ensemble > 0 and model in surrogates for model in models[1:]]
        cells = ["surrogate" if s else x.cell() for x, s in zip(measures[1:], own, strict=True)]
        black = [x for x, s in zip(measures[1:], own, strict=True) if not s]
        table.add(
            title,
            boosters,
            num(r.delta_eff(spec, n)),
            measures[0].cell(),
            *cells,
            Measure.pooled(black).cell() if black else "n/a",
        )
    r.tables.append(table)


# --------------------------------------------------------------------------------------------
# Success against detection
# --------------------------------------------------------------------------------------------

Point = tuple[str, str, float, float]
"""(family, setting, detection accuracy, white-box success), both in [0, 1]."""


def pareto_front(points: list[tuple[float, float]]) -> list[bool]:
    """Whether each (detection, success) point is undominated.

    A point is dominated when another is at most as detectable and at least as successful, and
    better in one of the two. Points with a NaN coordinate are never on the front.
    """
    known = [not (math.isnan(a) or math.isnan(s)) for a, s in points]

    def dominated(i: int) -> bool:
        a, s = points[i]
        return any(
            known[j] and b <= a and t >= s and (b < a or t > s)
            for j, (b, t) in enumerate(points)
            if j != i
        )

    return [known[i] and not dominated(i) for i in range(len(points))]


MARKERS = {"templates": "o", "merging": "s", "texture weight": "^"}


def plot_pareto(path: Path, panels: list[tuple[str, list[Point]]]) -> None:
    """One panel per delta: every point by family, labelled, the undominated ones joined."""
    figure = new_figure(5.0 * len(panels), 4.2, dpi=110)
    axes = figure.subplots(1, len(panels), squeeze=False)[0]
    for ax, (title, points) in zip(axes, panels, strict=True):
        for family, marker in MARKERS.items():
            mine = [(a, s) for f, _, a, s in points if f == family]
            if mine:
                ax.scatter([100 * a for a, _ in mine], [100 * s for _, s in mine], marker=marker,
                           label=family)  # fmt: skip
        for _, setting, a, s in points:
            if not (math.isnan(a) or math.isnan(s)):
                ax.annotate(setting, (100 * a, 100 * s), fontsize=6, xytext=(3, 3),
                            textcoords="offset points")  # fmt: skip
        on_front = pareto_front([(a, s) for *_, a, s in points])
        front = sorted((a, s) for (*_, a, s), on in zip(points, on_front, strict=True) if on)
        if front:
            ax.plot([100 * a for a, _ in front], [100 * s for _, s in front], "k--", lw=0.8,
                    label="undominated")  # fmt: skip
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("detection accuracy (%), lower = stealthier")
        ax.set_ylabel("white-box success (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    figure.tight_layout()
    data.atomic_write_bytes(path, figure_png(figure))


def _pareto(r: Reproduction, detection: dict[str, dict]) -> None:
    p, m, n = r.p, r.s.model, r.p.beyond_images
    rates: Rates = r.evaluate("beyond-pareto", _all_pareto(p), ["none"], [m], n)
    table = Table(
        key="beyond_pareto",
        title="Beyond the paper: white-box success against steganalysis detection",
        caption=f"Each point: white-box success on {m} (%) and detection accuracy (%) of the "
        f"SPAM + {p.detection_classifier} detector (95% interval over {p.detection_splits} "
        f"splits), first {n} images: the templates of the control table with and without "
        "attention, SAI-FGM with adaptive merging (beta) and stego-aware SAI-FGM (superpixels "
        "weighted by their HILL texture cost, W). 'front': no other point at the same delta is "
        f"both as successful and as hard to detect. {MATCHED}.",
        columns=["delta", "family", "setting", "delta_eff", "white-box", "detection", "front"],
    )
    panels: list[tuple[str, list[Point]]] = []
    for delta in p.beyond_deltas:
        specs = _pareto_specs(p, delta)
        points = [
            (family, setting, split_measure(detection.get(spec.key, {})).value,
             rates.rate(spec, m, "none"))
            for family, setting, spec in specs
        ]  # fmt: skip
        front = pareto_front([(a, s) for *_, a, s in points])
        for (family, setting, spec), on in zip(specs, front, strict=True):
            table.add(
                f"{delta:g}",
                family,
                setting,
                num(r.delta_eff(spec, n)),
                percent(rates.rate(spec, m, "none")),
                split_measure(detection.get(spec.key, {})).cell(),
                "yes" if on else "",
            )
        panels.append((f"delta = {delta:g}", points))
    table.notes.append(rates.interval_note())
    r.tables.append(table)
    path = r.s.out / "figures" / "beyond_pareto.png"
    plot_pareto(path, panels)
    r.figures.append(Figure("beyond_pareto", table.title, table.caption, path))


def beyond(r: Reproduction) -> None:
    """The control table, EoT, transfer with boosters, and the Pareto plot."""
    p = r.p
    detected = [*_all_pareto(p), *[s for *_, s in _templates(p, p.control_delta)]]
    detection = r.detect("beyond", detected, images=p.beyond_images)
    _control(r, detection)
    _eot_table(r)
    _transfer(r)
    _pareto(r, detection)


def _cost(r: Reproduction) -> float:
    p, n = r.p, r.p.beyond_images
    evaluations = len(CONTROL_DEFENSES) * 2 * len(p.control_templates)
    evaluations += len(_eot_specs(p)) * (len(EOT_COLUMNS) + 1) + 6 * len(r.s.models)
    tvm = 2 * len(p.control_templates) + len(_eot_specs(p))
    detectors = len(set(_all_pareto(p)) | {s for *_, s in _templates(p, p.control_delta)})
    share = min(1.0, n / max(1, p.images))
    return n * (0.45 * evaluations + 7.0 * tvm) + detectors * r.detector_units * share


BEYOND = Section("beyond the paper", runs=_runs, fill=beyond, cost=_cost)
