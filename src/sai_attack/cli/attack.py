"""``sai-attack attack`` and ``sai-attack demo``."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from sai_attack.cli.options import add_command, add_options, names_in, option_values

ATTACK_GROUPS = ("attack", "superpixels", "attention", "model")


def cmd_attack(args: argparse.Namespace) -> int:
    """Generate adversarial examples for an image or a folder.

    Attack an image, a folder of images, or a folder with labels.csv. Writes DIR/images
    (adversarial PNGs), DIR/clean, DIR/results.csv and DIR/summary.json. Re-running the same
    command resumes.
    """
    from sai_attack.pipeline import AttackConfig, AttackRun, RunOptions

    config = AttackConfig(**option_values(args, *ATTACK_GROUPS))
    run_options = RunOptions(**option_values(args, "execution"))
    summary = AttackRun(args.input, args.out, config, run_options).run()
    if summary.rank != 0:
        return summary.exit_code
    rate, rate_all = (
        "n/a" if math.isnan(r) else f"{100 * r:.1f}%"
        for r in (summary.success_rate, summary.success_rate_all)
    )
    print(
        f"{config.method} on {config.model}: {summary.processed} attacked, "
        f"{summary.reused} reused, {summary.skipped} skipped; success {rate} "
        f"({summary.successes}/{summary.correct} correctly classified), {rate_all} of all "
        f"({summary.successes_all}/{summary.attacked}), "
        f"mean delta_eff {summary.mean_delta_eff:.3f}, {summary.seconds:.1f} s -> {args.out}"
    )
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
    p = add_command(sub, cmd_attack)
    p.add_argument("input", help="an image file, a folder of images, or a folder with labels.csv")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder")
    add_options(p, names_in(*ATTACK_GROUPS, "execution"))

    d = add_command(sub, cmd_demo)
    d.add_argument("--out", default="sai-attack-demo", metavar="DIR",
                   help="output folder (default ./sai-attack-demo)")  # fmt: skip
    add_options(d, ["delta", "device"])
