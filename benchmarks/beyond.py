"""Defense-aware (EoT) and transfer-boosted attacks at matched norm, on correctly classified images.

Two tables, each printed as Markdown, every run through the same pipeline as ``sai-attack
attack`` and evaluated on its saved 8-bit PNGs:

- **EoT** (delta 4 by default): SAI-FGM without EoT and with ``--eot`` set to each defense and
  to a mixture of them, next to I-FGM (exact) without and with the mixture; gray-box success on
  the white-box model after every defense.
- **Transfer** (delta 16 by default): I-FGM (exact) and SAI-FGM, each plain, with input
  diversity + translation invariance, and against an ensemble of the white-box model and a
  surrogate (logits averaged); success on the white-box model, the surrogate (marked) and the
  black-box targets.

I-FGM runs with ``budget="exact"`` so that its perturbation has SAI-FGM's norm (matched norm);
``delta_eff`` is printed for every row.

Usage:
    python benchmarks/beyond.py [DATA_DIR] [--n 64] [--eot-delta 4] [--transfer-delta 16]
        [--eot-samples 4] [--out /tmp/sai-beyond] [--only eot|transfer]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from attack_success import correctly_classified, subset_folder
from sai_attack.evaluation import evaluate_folders
from sai_attack.models import DEFAULT_MODEL, load_model
from sai_attack.pipeline import AttackConfig, AttackRun, RunOptions
from sai_attack.runs import read_run
from threat_models import DEFAULT_TARGETS

EOT_DEFENSES = ["resize:3", "jpeg:55", "avgpool:5", "tvm", "bitdepth:3"]
EOT_MIXED = "resize:1..3 jpeg:30..90 avgpool:3,5"
SURROGATE = "efficientnet-lite1"


def mean_delta_eff(run: Path) -> float:
    """The mean ``delta_eff`` of a run's saved images (read by the run folder's reader)."""
    return read_run(run).mean_delta_eff


def attack(subset: Path, folder: Path, loaded, **settings) -> Path:
    """One run (resumed if already complete; ``loaded``: the model, if already loaded)."""
    t0 = time.perf_counter()
    config, options = AttackConfig(**settings), RunOptions(progress=False)
    AttackRun(subset, folder, config, options, model=loaded).run()
    print(f"<!-- {folder.name}: {time.perf_counter() - t0:.0f} s -->", flush=True)
    return folder


def eot_table(subset: Path, out: Path, model, args: argparse.Namespace, n: int) -> None:
    common = {"model": args.model, "delta": args.eot_delta, "seed": 0}
    runs = [
        ("I-FGM (exact)", "-", {"method": "ifgm", "budget": "exact"}),
        ("I-FGM (exact)", EOT_MIXED, {"method": "ifgm", "budget": "exact", "eot": EOT_MIXED}),
        ("SAI-FGM", "-", {"method": "sai-fgm"}),
        *[("EoT-SAI-FGM", d, {"method": "sai-fgm", "eot": d}) for d in EOT_DEFENSES],
        ("EoT-SAI-FGM", EOT_MIXED, {"method": "sai-fgm", "eot": EOT_MIXED}),
    ]
    folders = []
    for i, (_, eot, settings) in enumerate(runs):
        # One TVM draw (200 solver iterations) costs about five forward+backward passes.
        extra = {"eot_samples": 1 if eot == "tvm" else args.eot_samples} if eot != "-" else {}
        folders.append(attack(subset, out / f"eot-{i}", model, **common, **settings, **extra))
    defenses = ["none", *EOT_DEFENSES]
    evaluation = evaluate_folders(folders, models=[args.model], defenses=defenses[1:])
    print(f"\nEoT, delta {args.eot_delta:g} (L2), {n} images {args.model} classifies correctly, "
          f"K = {args.eot_samples} draws per step (tvm: 1); gray-box success % on {args.model} "
          "after each defense\n")  # fmt: skip
    print(f"| attack | EoT against | delta_eff | {' | '.join(defenses)} |")
    print(f"| --- | --- | --- |{' --- |' * len(defenses)}")
    for (title, eot, _), folder, run in zip(runs, folders, evaluation.runs, strict=True):
        cells = [evaluation.row(run.name, evaluation.targets[0].name, d.spec)["success_rate"]
                 for d in evaluation.defenses]  # fmt: skip
        print(f"| {title} | {eot} | {mean_delta_eff(folder):.3f} | "
              f"{' | '.join(f'{100 * c:.1f}' for c in cells)} |", flush=True)  # fmt: skip


def transfer_table(subset: Path, out: Path, model, args: argparse.Namespace, n: int) -> None:
    ensemble = f"{args.model},{SURROGATE}"
    boosted = {"input_diversity": 0.5, "translation_invariance": 7}
    rows = []
    for title, method, budget in (("I-FGM (exact)", "ifgm", "exact"), ("SAI-FGM", "sai-fgm", None)):
        base = {"method": method, "delta": args.transfer_delta, "seed": 0}
        if budget:
            base["budget"] = budget
        rows += [
            (title, "-", {**base, "model": args.model}),
            (title, "DI + TI", {**base, "model": args.model, **boosted}),
            (title, f"ensemble with {SURROGATE}", {**base, "model": ensemble}),
        ]
    folders = []
    for i, (*_, settings) in enumerate(rows):
        own = model if settings["model"] == args.model else None
        folders.append(attack(subset, out / f"transfer-{i}", own, **settings))
    targets = [args.model, SURROGATE, *[t for t in args.targets if t != SURROGATE]]
    evaluation = evaluate_folders(folders, models=targets)
    short = [t.name.split("/")[-1].removesuffix(".tflite") for t in evaluation.targets]
    print(f"\nTransfer, delta {args.transfer_delta:g} (L2), {n} images {args.model} classifies "
          f"correctly; success % over the images each model classifies correctly "
          f"(surrogate: the model was attacked)\n")  # fmt: skip
    print(f"| attack | boosters | delta_eff | {' | '.join(short)} | black-box mean |")
    print(f"| --- | --- | --- |{' --- |' * len(short)} --- |")
    for (title, boosters, settings), folder, run in zip(rows, folders, evaluation.runs,
                                                         strict=True):  # fmt: skip
        members = settings["model"].split(",")
        cells, black = [], []
        for target in evaluation.targets:
            rate = evaluation.row(run.name, target.name, "none")["success_rate"]
            attacked = target.name in members
            cells.append(f"{100 * rate:.1f}" + (" (surrogate)" if attacked and
                                                 target.name != args.model else ""))  # fmt: skip
            if not attacked and target.name != SURROGATE:
                black.append(rate)
        print(f"| {title} | {boosters} | {mean_delta_eff(folder):.3f} | {' | '.join(cells)} | "
              f"{100 * statistics.fmean(black):.1f} |", flush=True)  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data_dir", nargs="?", default="../shared/data/nips17-dev")
    parser.add_argument("--n", type=int, default=64)
    parser.add_argument("--eot-delta", type=float, default=4.0)
    parser.add_argument("--transfer-delta", type=float, default=16.0)
    parser.add_argument("--eot-samples", type=int, default=4)
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--targets", nargs="+", default=DEFAULT_TARGETS[1:])
    parser.add_argument("--only", choices=["eot", "transfer"])
    parser.add_argument("--out", default="/tmp/sai-beyond")
    args = parser.parse_args()
    out = Path(args.out)
    model = load_model(args.model)
    names = correctly_classified(model, Path(args.data_dir), args.n)
    subset = subset_folder(Path(args.data_dir), names, out / "inputs")
    if args.only in (None, "eot"):
        eot_table(subset, out, model, args, len(names))
    if args.only in (None, "transfer"):
        transfer_table(subset, out, model, args, len(names))


if __name__ == "__main__":
    main()
