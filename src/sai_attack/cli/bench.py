"""``sai-attack bench``."""

from __future__ import annotations

import argparse

from sai_attack.attacks import ATTACKS
from sai_attack.cli.options import add_argument, add_command, add_options, names_in, option_values
from sai_attack.options import Option

BENCH_EXECUTION = ("batch_size", "device", "workers", "amp", "memory_format")
REPEATS = Option("repeats", int, 1, "time every method this many times, in turn, and report "
                 "the median", low=1, high=1000)  # fmt: skip


def cmd_bench(args: argparse.Namespace) -> int:
    """Measure speed and memory of every method.

    Times every method through the real attack pipeline on the same images: images/s, s/image,
    stage split, ratio to I-FGM, efficiency against the model's bare forward+backward pass (the
    floor, given in every memory layout), peak memory, and the attack loop of I-FGM against
    torchattacks' PGDL2 and PGD (L-infinity) on the plain network and on the same model.
    """
    from sai_attack.bench import BenchConfig, format_report, run_bench, write_json

    config = BenchConfig(
        input=args.input,
        methods=tuple(args.methods),
        limit=args.limit,
        repeats=args.repeats,
        reference=not args.no_reference,
        parameters=option_values(args, "attack", "superpixels", "attention", "model"),
        execution={
            k: v for k, v in option_values(args, "execution").items() if k in BENCH_EXECUTION
        },
    )
    report = run_bench(config)
    print(format_report(report))
    if args.json:
        write_json(report, args.json)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``bench`` subcommand."""
    p = add_command(sub, cmd_bench)
    p.add_argument("input", help="an image folder (labels.csv optional)")
    p.add_argument("--methods", nargs="+", choices=list(ATTACKS), default=list(ATTACKS),
                   help="methods to time (default: all)")  # fmt: skip
    add_argument(p, REPEATS)
    p.add_argument("--no-reference", action="store_true",
                   help="skip the torchattacks PGDL2 and PGD references")  # fmt: skip
    p.add_argument("--json", metavar="PATH", help="also write the measurements as JSON")
    attack_names = [n for n in names_in("attack", "superpixels", "attention", "model")
                    if n != "method"]  # fmt: skip
    add_options(p, [*attack_names, *BENCH_EXECUTION, "limit"], defaults={"limit": 64},
                helps={"limit": "number of images"})  # fmt: skip
