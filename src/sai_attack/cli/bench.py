"""``sai-attack bench``."""

from __future__ import annotations

import argparse

from sai_attack.attacks import ATTACKS
from sai_attack.cli.options import add_model_options, int_at_least, positive_float
from sai_attack.superpixels import SUPERPIXEL_ALGORITHMS


def cmd_bench(args: argparse.Namespace) -> int:
    """Run the benchmark, print the tables, optionally write JSON."""
    from sai_attack.bench import BenchConfig, format_report, run_bench, write_json

    config = BenchConfig(
        input=args.input,
        model=args.model,
        weights=args.weights,
        methods=tuple(args.methods),
        batch_size=args.batch_size,
        device=args.device,
        limit=args.limit,
        iters=args.iters,
        delta=args.delta,
        workers=args.workers,
        amp=args.amp,
        reference=not args.no_reference,
        superpixel=args.superpixel,
        repeats=args.repeats,
    )
    report = run_bench(config)
    print(format_report(report))
    if args.json:
        write_json(report, args.json)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``bench`` subcommand."""
    p = sub.add_parser(
        "bench",
        help="measure speed and memory of every method",
        description="Times every method through the real attack pipeline on the same images: "
        "images/s, s/image, stage split, ratio to I-FGM, efficiency against the model's bare "
        "forward+backward pass, peak memory, and torchattacks PGDL2 as a reference.",
    )
    p.add_argument("input", help="an image folder (labels.csv optional)")
    p.add_argument("--methods", nargs="+", choices=list(ATTACKS), default=list(ATTACKS),
                   help="methods to time (default: all)")  # fmt: skip
    p.add_argument("--limit", type=int_at_least("--limit", 1), default=64,
                   help="number of images (default 64)")  # fmt: skip
    p.add_argument("--iters", type=int_at_least("--iters", 1), default=10,
                   help="iterations T (default 10)")  # fmt: skip
    p.add_argument("--delta", type=positive_float("--delta"), default=4.0,
                   help="perturbation scale (default 4)")  # fmt: skip
    p.add_argument("--batch-size", type=int_at_least("--batch-size", 1), default=16,
                   help="images per batch (default 16)")  # fmt: skip
    p.add_argument("--device", default="cpu", help="auto, cpu, cuda or cuda:N (default cpu)")
    p.add_argument("--workers", type=int_at_least("--workers", 0), default=1,
                   help="loader worker processes (default 1)")  # fmt: skip
    p.add_argument("--repeats", type=int_at_least("--repeats", 1), default=1,
                   help="time every method this many times, in turn, and report the median "
                   "(default 1)")  # fmt: skip
    p.add_argument("--superpixel", choices=list(SUPERPIXEL_ALGORITHMS), default="slic",
                   help="template algorithm of the superpixel methods (default slic)")  # fmt: skip
    p.add_argument("--amp", action="store_true", help="mixed precision attack passes")
    p.add_argument("--no-reference", action="store_true",
                   help="skip the torchattacks PGDL2 reference")  # fmt: skip
    p.add_argument("--json", metavar="PATH", help="also write the measurements as JSON")
    add_model_options(p)
    p.set_defaults(func=cmd_bench)
