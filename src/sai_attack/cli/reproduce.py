"""``sai-attack reproduce``."""

from __future__ import annotations

import argparse
from pathlib import Path

from sai_attack.cli.options import int_at_least
from sai_attack.models import DEFAULT_MODEL


def cmd_reproduce(args: argparse.Namespace) -> int:
    """Run the reproduction and print where the report is."""
    from sai_attack.runtime import resolve_device
    from sai_attack.reproduce import PRESETS, Settings, run_reproduce, with_images

    data = Path(args.data)
    if not (data.is_dir() or data.is_file()):
        raise FileNotFoundError(f"--data {str(data)!r} does not exist")
    resolve_device(args.device)  # fail before any work
    settings = Settings(
        data=data,
        out=Path(args.out),
        preset=with_images(PRESETS[args.preset], args.images),
        model=args.model,
        black_box=tuple(args.black_box),
        targets=tuple(args.target),
        device=args.device,
        batch_size=args.batch_size,
        workers=args.workers,
        seed=args.seed,
    )
    paths = run_reproduce(settings)
    print(f"report: {paths['html']}\nmarkdown: {paths['md']}\ntables: {Path(args.out) / 'tables'}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``reproduce`` subcommand."""
    from sai_attack.reproduce import PRESETS

    p = sub.add_parser(
        "reproduce",
        help="run the paper's experiments end to end and write one report",
        description="Regenerates every table and figure of the paper's Section 4 on your data "
        "and models (attack ability, steganalysis detection, image-processing defenses, "
        "superpixel algorithms, ablations, foreground/background and texture analyses, visual "
        "comparison) under the paper protocol and at matched norm, into DIR/report.html, "
        "DIR/report.md, DIR/tables and DIR/figures. Re-running resumes.",
    )
    p.add_argument("--data", required=True, metavar="DIR",
                   help="folder of images with labels.csv (image,label)")  # fmt: skip
    p.add_argument("--out", required=True, metavar="DIR", help="output folder")
    p.add_argument("--preset", choices=list(PRESETS), default="quick",
                   help="quick: ~100 images, fewer sweep points (< 30 min on a 2-core CPU); "
                   "full: all images, all points; tiny: smoke test (default quick)")  # fmt: skip
    p.add_argument("--images", type=int_at_least("--images", 1), default=None,
                   help="override the preset's image count")  # fmt: skip
    p.add_argument(
        "--model", default=DEFAULT_MODEL, help=f"white-box model (default {DEFAULT_MODEL})"
    )
    p.add_argument(
        "--black-box",
        nargs="*",
        default=["efficientnet-lite1", "efficientnet-lite2"],
        metavar="MODEL",
        help="black-box PyTorch models (default: lite1, lite2)",
    )
    p.add_argument("--target", nargs="*", default=[], metavar="SPEC",
                   help="more black-box targets, e.g. tflite:PATH or onnx:PATH")  # fmt: skip
    p.add_argument("--batch-size", type=int_at_least("--batch-size", 1), default=16,
                   help="images per batch (default 16)")  # fmt: skip
    p.add_argument("--device", default="cpu", help="auto, cpu, cuda or cuda:N (default cpu)")
    p.add_argument("--workers", type=int_at_least("--workers", 0), default=1,
                   help="worker processes: loading, features, detectors (default 1)")  # fmt: skip
    p.add_argument("--seed", type=int_at_least("--seed", 0), default=0, help="seed (default 0)")
    p.set_defaults(func=cmd_reproduce)
