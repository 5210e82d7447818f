"""``sai-attack reproduce``."""

from __future__ import annotations

import argparse
from pathlib import Path

from sai_attack import options
from sai_attack.cli.options import add_argument, add_command, add_options
from sai_attack.options import Option

OWN_OPTIONS = (
    Option("data", str, None, "folder of images with labels.csv (image,label)", metavar="DIR"),
    Option("out", str, None, "output folder", metavar="DIR"),
    Option("images", int, None, "override the preset's image count", low=1, nullable=True,
           metavar="N"),
)  # fmt: skip
"""The options only ``reproduce`` has (besides ``--preset`` and the model lists)."""


def cmd_reproduce(args: argparse.Namespace) -> int:
    """Run the paper's experiments end to end and write one report.

    Regenerates every table and figure of the paper's Section 4 on your data and models (attack
    ability, steganalysis detection, image-processing defenses, superpixel algorithms,
    ablations, foreground/background and texture analyses, visual comparison) under the
    paper protocol and at matched norm, into DIR/report.html, DIR/report.md, DIR/tables and
    DIR/figures. Re-running resumes.
    """
    from sai_attack.reproduce import PRESETS, Settings, run_reproduce, with_images
    from sai_attack.runs.layout import check_output_folder
    from sai_attack.runtime import resolve_device

    data = Path(args.data)
    if not (data.is_dir() or data.is_file()):
        raise FileNotFoundError(f"--data {str(data)!r} does not exist")
    resolve_device(args.device)  # fail before any work
    check_output_folder(args.out, [data if data.is_dir() else data.parent], "data folder")
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
    from sai_attack.reproduce import BLACK_BOX_MODELS, PRESETS

    p = add_command(
        sub,
        cmd_reproduce,
        epilog="refused: an --out that is, lies inside or contains the --data folder (symlinks "
        "resolved) exits with 1 before any work.",
    )
    data, out, images = OWN_OPTIONS
    add_argument(p, data, required=True)
    add_argument(p, out, required=True)
    default = next(iter(PRESETS))
    described = "; ".join(f"{name}: {preset.summary}" for name, preset in PRESETS.items())
    p.add_argument("--preset", choices=list(PRESETS), default=default,
                   help=f"{described} (default {default})")  # fmt: skip
    add_argument(p, images)
    p.add_argument("--black-box", nargs="*", default=list(BLACK_BOX_MODELS), metavar="MODEL",
                   help="black-box PyTorch models (default: lite1, lite2)")  # fmt: skip
    p.add_argument("--target", nargs="*", default=[], metavar="SPEC",
                   help="more black-box targets, e.g. tflite:PATH or onnx:PATH")  # fmt: skip
    add_options(
        p,
        ["model", "batch_size", "device", "workers", "seed"],
        helps={
            "model": f"white-box model (default {options.default('model')})",
            "workers": "worker processes: loading, features, detectors "
            f"(default {options.default('workers')})",
            "seed": "seed of the attacks, the randomised defenses and the detector splits "
            f"(default {options.default('seed')})",
        },
    )
