"""``sai-attack attack`` and ``sai-attack demo``."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from sai_attack import options as table
from sai_attack.cli.options import add_argument, add_command, add_options, names_in, option_values

ATTACK_GROUPS = ("attack", "superpixels", "attention", "model")


def _rates(summary) -> str:
    rate, rate_all = (
        "n/a" if math.isnan(r) else f"{100 * r:.1f}%"
        for r in (summary.success_rate, summary.success_rate_all)
    )
    return (
        f"success {rate} ({summary.successes}/{summary.correct} correctly classified), "
        f"{rate_all} of all ({summary.successes_all}/{summary.attacked}), "
        f"mean delta_eff {summary.mean_delta_eff:.3f}"
    )


def cmd_attack(args: argparse.Namespace) -> int:
    """Generate adversarial examples for an image or a folder.

    Attack an image, a folder of images, or a folder with labels.csv. Writes DIR/images
    (adversarial PNGs), DIR/clean, DIR/results.csv and DIR/summary.json. Re-running the same
    command resumes. Several --delta values run a sweep: one run folder per delta in
    DIR/delta-<d>/ computing each image's template, clean prediction and attention map once,
    plus DIR/sweep.csv and DIR/sweep.png. --min-delta LO HI finds each image's smallest
    successful delta instead.
    """
    from sai_attack.pipeline import AttackConfig, AttackRun, MinDelta, RunOptions, sweep

    deltas = args.delta if isinstance(args.delta, list) else [args.delta]
    values = option_values(args, *ATTACK_GROUPS)
    values["delta"] = deltas[0]
    config = AttackConfig(**values)
    run_options = RunOptions(**option_values(args, "execution"))
    if args.min_delta is not None and len(deltas) > 1:
        raise ValueError("min_delta searches one range: give --min-delta or several --delta")
    if len(deltas) > 1:
        result = sweep(args.input, args.out, config, deltas, run_options)
        if result.rank == 0:
            for delta, summary in result.runs.items():
                print(f"{config.method} delta {delta:g}: {summary.processed} attacked, "
                      f"{summary.reused} reused, {summary.skipped} skipped; {_rates(summary)}, "
                      f"superpixels {summary.timings.get('superpixels', 0.0):.1f} s, "
                      f"{summary.seconds:.1f} s")  # fmt: skip
            print(f"-> {args.out} (sweep.csv, sweep.png)")
        return result.exit_code
    search = None
    if args.min_delta is not None:
        search = MinDelta(*args.min_delta, steps=args.min_delta_steps)
    summary = AttackRun(args.input, args.out, config, run_options, min_delta=search).run()
    if summary.rank != 0:
        return summary.exit_code
    print(
        f"{config.method} on {config.model}: {summary.processed} attacked, "
        f"{summary.reused} reused, {summary.skipped} skipped; {_rates(summary)}, "
        f"{summary.seconds:.1f} s -> {args.out}"
    )
    if summary.min_delta is not None:
        found = summary.min_delta
        median = "n/a" if found["median"] is None else f"{found['median']:g}"
        print(f"median min_delta {median} (found for {found['found']} of {found['images']} "
              f"correctly classified images, resolution {found['resolution']:.3g})")  # fmt: skip
    return summary.exit_code


def cmd_demo(args: argparse.Namespace) -> int:
    """I-FGM vs SAI-FGM on bundled sample images, with a comparison figure.

    Attacks the bundled sample images with I-FGM and SAI-FGM on the default model, prints a
    table and writes a comparison figure like the paper's Fig. 1/7.
    """
    from sai_attack.demo import compare

    result = compare(out=Path(args.out), device=args.device, delta=args.delta)
    print(result.text)
    return result.exit_code


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``attack`` and ``demo`` subcommands."""
    from sai_attack.pipeline.mindelta import MIN_DELTA, MIN_DELTA_STEPS

    p = add_command(sub, cmd_attack)
    p.add_argument("input", help="an image file, a folder of images, or a folder with labels.csv")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder")
    sweep_help = (f"{table.OPTIONS['delta'].help}; several values run a sweep, one run folder "
                  f"per delta in DIR/delta-<d>/ (default {table.default('delta'):g})")  # fmt: skip
    add_options(p, names_in(*ATTACK_GROUPS, "execution"), nargs={"delta": "+"},
                helps={"delta": sweep_help})  # fmt: skip
    search = p.add_argument_group("smallest successful delta")
    add_argument(search, MIN_DELTA, nargs=2, metavar=("LO", "HI"), default=None,
                 help=MIN_DELTA.help)  # fmt: skip
    add_argument(search, MIN_DELTA_STEPS)

    d = add_command(sub, cmd_demo)
    d.add_argument("--out", default="sai-attack-demo", metavar="DIR",
                   help="output folder (default ./sai-attack-demo)")  # fmt: skip
    add_options(d, ["delta", "device"])
