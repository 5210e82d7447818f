"""``sai-attack attack`` and ``sai-attack demo``."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from sai_attack.cli.options import (
    add_attack_options,
    add_execution_options,
    add_model_options,
    add_precision_options,
    int_at_least,
    positive_float,
)


def _attack_config(args: argparse.Namespace):
    from sai_attack.pipeline import AttackConfig

    return AttackConfig(
        method=args.method,
        model=args.model,
        weights=args.weights,
        delta=args.delta,
        iters=args.iters,
        superpixel=args.superpixel,
        superpixel_size=None if args.segments else args.superpixel_size,
        segments=args.segments,
        compactness=args.compactness,
        merge_beta=args.merge_beta,
        phi=args.phi,
        attention=args.attention,
        align_mask=not args.pixel_mask,
        grad_mode=args.grad_mode,
        momentum=args.momentum,
        loss=args.loss,
        budget=args.budget,
        targeted=args.targeted,
        attack_prediction=args.attack_prediction,
        image_size=args.image_size,
        seed=args.seed,
    )


def cmd_attack(args: argparse.Namespace) -> int:
    """``sai-attack attack INPUT --out DIR``."""
    from sai_attack.pipeline import AttackRun, RunOptions

    config = _attack_config(args)
    options = RunOptions(
        batch_size=args.batch_size,
        device=args.device,
        workers=args.workers,
        limit=args.limit,
        save_templates=args.save_templates,
        labels=args.labels,
        amp=args.amp,
        deterministic=args.deterministic,
    )
    run = AttackRun(args.input, args.out, config, options)
    summary = run.run()
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
    p.add_argument(
        "--labels",
        metavar="CSV",
        help="labels CSV with columns image,label[,target] (default: INPUT/labels.csv if "
        "present; without labels the clean prediction is used as the label)",
    )
    p.add_argument(
        "--limit", type=int_at_least("--limit", 1), help="attack only the first N images"
    )
    p.add_argument(
        "--image-size",
        type=int_at_least("--image-size", 8),
        default=None,
        help="attack resolution (default: the model's input size, 224 for models without one); "
        "images are resized on the shorter side and centre-cropped",
    )
    p.add_argument(
        "--save-templates",
        action="store_true",
        help="also write DIR/templates/<stem>.npz with the superpixel labels and mask",
    )
    add_model_options(p)
    add_attack_options(p)
    add_execution_options(p)
    add_precision_options(p)
    p.set_defaults(func=cmd_attack)

    d = sub.add_parser(
        "demo",
        help="I-FGM vs SAI-FGM on bundled sample images, with a comparison figure",
        description="Attacks the bundled sample images with I-FGM and SAI-FGM (delta 4) on the "
        "default model, prints a table and writes a comparison figure like the paper's Fig. 1/7.",
    )
    d.add_argument("--out", default="sai-attack-demo", metavar="DIR",
                   help="output folder (default ./sai-attack-demo)")  # fmt: skip
    d.add_argument("--delta", type=positive_float("--delta"), default=4.0,
                   help="perturbation scale (default 4)")  # fmt: skip
    d.add_argument("--device", default="cpu", help="auto, cpu, cuda or cuda:N (default cpu)")
    d.set_defaults(func=cmd_demo)
