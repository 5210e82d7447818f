"""Attack ability (Table 1) and robustness to image-processing defenses (Figs. 4-6, Table 3)."""

from __future__ import annotations

from sai_attack.attacks import ATTACKS, METHOD_NAMES, OPTIMIZERS
from sai_attack.defenses import parse_defenses
from sai_attack.report import percent
from sai_attack.reproduce import paper
from sai_attack.reproduce.experiments import Rates, Reproduction, defense_specs
from sai_attack.reproduce.plan import Need, RunSpec, Section, each
from sai_attack.reproduce.presets import Preset
from sai_attack.reproduce.tables import (
    DISTORTION_COLUMNS,
    DISTORTION_TEXT,
    Figure,
    Finding,
    Lines,
    Measure,
    Panel,
    Table,
    distortion_cells,
    mean_known,
    num,
)
from sai_attack.reproduce.tables import plot_rates as plot

PAPER_PROTOCOL = (
    "paper protocol: baselines projected into the L2 ball (||r|| <= eps), superpixel methods "
    "rescaled to ||r|| = eps"
)
MATCHED_PROTOCOL = "matched protocol: every method rescaled to ||r|| = eps (--budget exact)"


# --------------------------------------------------------------------------------------------
# Table 1: attack ability
# --------------------------------------------------------------------------------------------


def _takes_momentum(method: str) -> bool:
    return OPTIMIZERS[ATTACKS[method].optimizer_name].uses_momentum


def _matched_for(p: Preset, spec: RunSpec) -> RunSpec | None:
    """The matched-protocol run of ``spec``: the same run for superpixel methods."""
    if ATTACKS[spec.method].uses_superpixels:
        return spec  # already rescaled to the full budget
    if _takes_momentum(spec.method) and not p.matched_momentum:
        return None
    return spec.matched()


def _table1_specs(p: Preset) -> tuple[list[RunSpec], list[RunSpec]]:
    """Table 1's runs under the paper protocol and under the matched protocol."""
    paper_specs = [RunSpec(m, p.table1_delta) for m in METHOD_NAMES]
    matched = [x for x in (_matched_for(p, s) for s in paper_specs) if x is not None]
    return paper_specs, matched


def _table1_runs(p: Preset) -> list[Need]:
    specs = []
    for spec in _table1_specs(p)[0]:
        specs += [x for x in (spec, _matched_for(p, spec)) if x is not None]
    return each(specs, p.images)


def table1(r: Reproduction) -> None:
    """White-box and black-box success at delta 16, both protocols."""
    delta, n, models = r.p.table1_delta, r.p.images, r.s.models
    paper_specs, matched_specs = _table1_specs(r.p)
    rows = r.evaluate("table1", paper_specs + matched_specs, ["none"], models, n)

    def measures(spec: RunSpec) -> list[Measure]:
        return [rows.measure(spec, m, "none") for m in models]

    for protocol, chosen in (("paper", paper_specs), ("matched", matched_specs)):
        table = Table(
            key=f"table1_{protocol}",
            title=f"Table 1 ({protocol} protocol): attack success, delta = {delta:g}",
            caption=f"Success rate (%) on the first {n} images of {r.s.data.name}; white-box "
            f"model {r.s.model} (*), the others black-box; rates over the images each model "
            f"classifies correctly, with their 95% Wilson interval in brackets (black-box mean: "
            f"over the pooled (model, image) pairs); {DISTORTION_TEXT}. "
            f"{PAPER_PROTOCOL if protocol == 'paper' else MATCHED_PROTOCOL}.",
            columns=["method", "delta_eff", *DISTORTION_COLUMNS, f"{r.s.model}*", *models[1:]]
            + ["black-box mean"]
            + (["paper Inc-v3*", "paper black-box mean"] if protocol == "paper" else []),
        )
        for spec in chosen:
            x = measures(spec)
            cells = [spec.label, num(r.delta_eff(spec)), *distortion_cells(r.items(spec, n))]
            cells += [v.cell() for v in x]
            cells.append(Measure.pooled(x[1:]).cell())
            if protocol == "paper":
                ref = paper.TABLE1[spec.method]
                cells += [num(ref[0]), num(mean_known(ref[1:]))]
            table.add(*cells)
        base = RunSpec("ifgm", delta)
        table.notes.append(
            "images classified correctly (n): "
            + ", ".join(f"{m}: {rows.n(base, m, 'none')}" for m in models)
        )
        r.tables.append(table)
    sai, base = RunSpec("sai-fgm", delta), RunSpec("ifgm", delta)
    for label, pick in (
        ("white-box", lambda v: v[0]),
        ("black-box mean", lambda v: Measure.pooled(v[1:])),
    ):
        r.findings.append(
            Finding(
                f"Table 1, {label} success, delta = {delta:g}",
                True,
                (pick(measures(sai)), pick(measures(base))),
                (pick(measures(sai)), pick(measures(base.matched()))),
                (r.delta_eff(sai), r.delta_eff(base), r.delta_eff(base.matched())),
            )
        )


TABLE1 = Section(
    "evaluate table 1",
    runs=_table1_runs,
    fill=table1,
    cost=lambda r: 0.6 * r.p.images * 8 * len(r.s.models),
)


# --------------------------------------------------------------------------------------------
# Defenses: Figure 4, Figure 5, Table 3, Figure 6
# --------------------------------------------------------------------------------------------


def _robustness_specs(delta: float) -> list[RunSpec]:
    return [
        RunSpec("ifgm", delta),
        RunSpec("ifgm", delta, budget="exact"),
        RunSpec("sai-fgm", delta),
    ]


def _robustness_runs(p: Preset) -> list[Need]:
    return each([s for d in sorted(p.robustness_deltas) for s in _robustness_specs(d)], p.images)


def _defenses(p: Preset) -> list[str]:
    pools = [f"{op}:{k}" for op in ("avgpool", "maxpool") for k in p.pooling]
    depths = [f"bitdepth:{d}" for d in p.bitdepths]
    return defense_specs(
        [
            "none",
            p.resize,
            "resize:2",
            "resize:3",
            p.jpeg,
            "jpeg:55",
            p.dnn_jpeg,
            "dnn-jpeg:55",
            *pools,
            "tvm",
            *depths,
        ]
    )


def _sweeps(r: Reproduction, rows: Rates, defenses: list[str]) -> None:
    """Figure 4 (resize) and Figure 5 (JPEG, DNN-oriented JPEG): success along each sweep."""
    p, m, deltas = r.p, r.s.model, sorted(r.p.robustness_deltas)

    def sweep(name: str) -> list[str]:
        return [d for d in defenses if d.split(":")[0] == name]

    for key, title, names, xlabel in (
        ("figure4_resize", "Figure 4: success vs resize factor gamma", ["resize"], "gamma"),
        (
            "figure5_jpeg",
            "Figure 5: success vs JPEG and DNN-oriented JPEG quality",
            ["jpeg", "dnn-jpeg"],
            "quality q",
        ),
    ):
        panels: list[Panel] = []
        table = Table(
            key=key,
            title=title,
            caption=f"Gray-box success (%) on {m} after the defense; first {p.images} images; "
            "'(exact)' marks the matched protocol. Rows: defense, delta, method (delta_eff).",
            columns=[
                "defense",
                "delta",
                "method",
                "delta_eff",
                *sorted({f"{s.split(':')[1]}" for n_ in names for s in sweep(n_)}, key=float),
            ],
        )
        for name in names:
            for delta in deltas:
                lines: Lines = {}
                for spec in _robustness_specs(delta):
                    xs = [float(s.split(":")[1]) for s in sweep(name)]
                    ys = [rows.rate(spec, m, s) for s in sweep(name)]
                    lines[spec.label] = (xs, ys)
                    by_param = {f"{x:g}": percent(y) for x, y in zip(xs, ys, strict=True)}
                    table.add(
                        name,
                        f"{delta:g}",
                        spec.label,
                        num(r.delta_eff(spec)),
                        *[by_param.get(f"{float(c):g}", "") for c in table.columns[4:]],
                    )
                panels.append((f"{name}, delta = {delta:g}", xlabel, lines))
        table.notes.append(rows.interval_note())
        r.tables.append(table)
        path = r.s.out / "figures" / f"{key}.png"
        plot(path, panels)
        r.figures.append(Figure(key, title, table.caption, path))


def _pooling(r: Reproduction, rows: Rates) -> None:
    """Table 3: success after average and max pooling."""
    p, m = r.p, r.s.model
    table = Table(
        key="table3_pooling",
        title="Table 3: gray-box success after average / max pooling",
        caption=f"Success (%) on {m} after stride-1 pooling with kernel k; first {p.images} "
        "images; the paper's values (Inception-v3) in the paper columns.",
        columns=[
            "operation",
            "delta",
            "method",
            "delta_eff",
            *[f"k={k}" for k in p.pooling],
            *[f"paper k={k}" for k in p.pooling],
        ],
    )
    for op in ("avgpool", "maxpool"):
        for delta in sorted(p.robustness_deltas):
            for spec in _robustness_specs(delta):
                ours = [percent(rows.rate(spec, m, f"{op}:{k}")) for k in p.pooling]
                ref = paper.table3(op, delta, spec.method) if spec.budget is None else {}
                table.add(
                    "AVG" if op == "avgpool" else "MAX",
                    f"{delta:g}",
                    spec.label,
                    num(r.delta_eff(spec)),
                    *ours,
                    *[num(ref.get(k)) for k in p.pooling],
                )
    table.notes.append(rows.interval_note())
    r.tables.append(table)


def _tvm_bitdepth(r: Reproduction, rows: Rates) -> None:
    """Figure 6: success after TVM (by delta) and after bit-depth reduction."""
    p, m, deltas = r.p, r.s.model, sorted(r.p.robustness_deltas)
    table = Table(
        key="figure6_tvm_bitdepth",
        title="Figure 6: success after TVM and bit-depth reduction",
        caption=f"Success (%) on {m}; TVM (Guo et al.): pixel dropout 0.5, TV weight 0.03, "
        f"seeded per image; bit-depth reduction to d bits; first {p.images} images.",
        columns=["delta", "method", "delta_eff", "tvm", *[f"bitdepth d={d}" for d in p.bitdepths]],
    )
    tvm_lines: Lines = {}
    depth_lines: Lines = {}
    tvm = defense_specs(["tvm"])[0]
    for delta in deltas:
        for spec in _robustness_specs(delta):
            t = rows.rate(spec, m, tvm)
            ds = [rows.rate(spec, m, f"bitdepth:{d}") for d in p.bitdepths]
            table.add(
                f"{delta:g}",
                spec.label,
                num(r.delta_eff(spec)),
                percent(t),
                *[percent(x) for x in ds],
            )
            xs, ys = tvm_lines.setdefault(spec.label, ([], []))
            xs.append(delta)
            ys.append(t)
            if delta == deltas[0]:
                depth_lines[spec.label] = (list(p.bitdepths), ds)
    table.notes.append(rows.interval_note())
    r.tables.append(table)
    path = r.s.out / "figures" / "figure6_tvm_bitdepth.png"
    plot(
        path,
        [
            ("TVM", "delta", tvm_lines),
            (f"bit-depth reduction, delta = {deltas[0]:g}", "bits d", depth_lines),
        ],
    )
    r.figures.append(Figure("figure6_tvm_bitdepth", table.title, table.caption, path))


def robustness(r: Reproduction) -> None:
    """Resizing, JPEG, DNN-oriented JPEG, pooling, TVM and bit depth (gray-box)."""
    p, m = r.p, r.s.model
    defenses = _defenses(p)
    deltas = sorted(p.robustness_deltas)
    specs = [s for d in deltas for s in _robustness_specs(d)]
    rows = r.evaluate("defenses", specs, defenses, [m], p.images)
    _sweeps(r, rows, defenses)
    _pooling(r, rows)
    _tvm_bitdepth(r, rows)

    # Findings at the smallest delta (4 in the paper's text).
    delta = 4.0 if 4.0 in deltas else deltas[0]
    sai, base = RunSpec("sai-fgm", delta), RunSpec("ifgm", delta)
    for spec_, label in (
        ("resize:2", "resize gamma = 2"),
        ("resize:3", "resize gamma = 3"),
        ("jpeg:55", "JPEG q = 55"),
        ("dnn-jpeg:55", "DNN-oriented JPEG q = 55"),
        ("avgpool:3", "average pooling k = 3"),
        ("maxpool:3", "max pooling k = 3"),
        ("tvm", "TVM"),
        (f"bitdepth:{p.bitdepths[0]}", f"bit depth {p.bitdepths[0]}"),
    ):
        d = defense_specs([spec_])[0]
        if d not in defenses:
            continue
        r.findings.append(
            Finding(
                f"{label}, delta = {delta:g}",
                True,
                (rows.measure(sai, m, d), rows.measure(base, m, d)),
                (rows.measure(sai, m, d), rows.measure(base.matched(), m, d)),
                (r.delta_eff(sai), r.delta_eff(base), r.delta_eff(base.matched())),
            )
        )


def _robustness_cost(r: Reproduction) -> float:
    p = r.p
    sweep = len(parse_defenses([p.resize, p.jpeg, p.dnn_jpeg, "tvm"]))
    sweep += 2 * len(p.pooling) + len(p.bitdepths)
    return p.images * 4 * len(p.robustness_deltas) * (0.45 * sweep + 7.0)


ROBUSTNESS = Section(
    "evaluate defenses", runs=_robustness_runs, fill=robustness, cost=_robustness_cost
)
