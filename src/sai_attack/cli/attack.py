"""``sai-attack attack`` and ``sai-attack demo``."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from sai_attack.cli.options import add_options, names_in, option_values

ATTACK_GROUPS = ("attack", "superpixels", "attention", "model")


def cmd_attack(args: argparse.Namespace) -> int:
    """``sai-attack attack INPUT --out DIR``."""
    from sai_attack.pipeline import AttackConfig, AttackRun, RunOptions

    config = AttackConfig(**option_values(args, *ATTACK_GROUPS))
    run_options = RunOptions(**option_values(args, "execution"))
    summary = AttackRun(args.input, args.out, config, run_options).run()
    if summary.rank != 0:
        return summary.exit_code
    rate = "n/a" if math.isnan(summary.success_rate) else f"{100 * summary.success_rate:.1f}%"
    print(
        f"{config.method} on {config.model}: {summary.processed} attacked, "
        f"{summary.reused} reused, {summary.skipped} skipped; success {rate} "
        f"({summary.successes}/{summary.correct} correctly classified), "
        f"mean delta_eff {summary.mean_delta_eff:.3f}, {summary.seconds:.1f} s -> {args.out}"
    )
    return summary.exit_code


def cmd_demo(args: argparse.Namespace) -> int:
    """``sai-attack demo``."""
    from sai_attack.demo import run_demo

    return run_demo(out=Path(args.out), device=args.device, delta=args.delta)


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``attack`` and ``demo`` subcommands."""
    p = sub.add_parser(
        "attack",
        help="generate adversarial examples for an image or a folder",
        description="Attack an image, a folder of images, or a folder with labels.csv. Writes "
        "DIR/images (adversarial PNGs), DIR/clean, DIR/results.csv and DIR/summary.json. "
        "Re-running the same command resumes.",
    )
    p.add_argument("input", help="an image file, a folder of images, or a folder with labels.csv")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder")
    add_options(p, names_in(*ATTACK_GROUPS, "execution"))
    p.set_defaults(func=cmd_attack)

    d = sub.add_parser(
        "demo",
        help="I-FGM vs SAI-FGM on bundled sample images, with a comparison figure",
        description="Attacks the bundled sample images with I-FGM and SAI-FGM on the default "
        "model, prints a table and writes a comparison figure like the paper's Fig. 1/7.",
    )
    d.add_argument("--out", default="sai-attack-demo", metavar="DIR",
                   help="output folder (default ./sai-attack-demo)")  # fmt: skip
    add_options(d, ["delta", "device"])
    d.set_defaults(func=cmd_demo)
