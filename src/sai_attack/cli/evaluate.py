"""``sai-attack evaluate``: success rates of run folders under models x defenses."""

from __future__ import annotations

import argparse
import sys

from sai_attack.cli.options import add_argument, add_command, add_options, parse_value
from sai_attack.options import Option, default

EPILOG = """\
protocol: for every (run, model, defense) the success rate is computed over the images whose
clean version (RUN_DIR/clean), after that defense, the model classifies correctly; that count n is
reported next to every rate. Success is measured on the saved 8-bit adversarial PNG: untargeted,
the prediction differs from the label (the labels CSV's, or the attack model's clean prediction
for runs without labels); targeted, it equals the target. White-box: the attack's own model and
defense none; black-box: another model, none; gray-box: any defense. 'none' is always evaluated.

defenses (name:param): none, resize:GAMMA, jpeg:Q, dnn-jpeg:Q, avgpool:K, maxpool:K, tvm[:WEIGHT],
bitdepth:D, median:K; lists avgpool:3,5,7; sweeps resize:1.0..3.0:0.1, jpeg:5..95:10.

models: efficientnet-lite0/1/2, torchvision:<arch>@weights=PATH, timm:<name>@weights=PATH,
tflite:PATH, onnx:PATH; deployed models take options after '@', e.g.
tflite:m.tflite@label-offset=1 or onnx:m.onnx@mean=0.5,std=0.5,size=224.

refused: an --out that is, contains or lies inside a RUN_DIR (symlinks resolved) exits with 1
before any work. An image whose PNG cannot be decoded, or whose clean and adversarial PNGs differ
in size or are not of the run's size, is left out with its reason (logged, and counted in
evaluation.json's missing_files); the other images are evaluated.
"""


SEED = Option(
    "seed",
    int,
    0,
    "seed of randomised defenses (tvm); each image's seed is derived from it and the image name",
    low=0,
    metavar="N",
)
LABEL_OFFSET = Option(
    "label_offset",
    int,
    None,
    "output index of ImageNet class 0 for tflite:/onnx: models: auto (1 for models with 1001 "
    "outputs, whose output 0 is 'background'; else 0) or an integer; a per-model "
    "'@label-offset=N' wins (default auto)",
    low=0,
    metavar="auto|N",
)


def _label_offset(text: str) -> int | str:
    """``auto`` or an integer >= 0 (checked like every option)."""
    if text == "auto":
        return text
    try:
        return parse_value(LABEL_OFFSET, text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(
            f"label_offset must be 'auto' or an integer >= 0, got {text!r}"
        ) from None


def cmd_evaluate(args: argparse.Namespace) -> int:
    """Success rates of attack run folders under models and defenses.

    Evaluate the adversarial images of one or more run folders (written by 'sai-attack attack')
    on several models (white-box / black-box) and after image-processing defenses
    (gray-box), as in Sec. 4.1-4.2 of Dong et al. Writes DIR/evaluation.csv, evaluation.json,
    evaluation.md, predictions.csv and, for swept defenses, DIR/plots/*.png.
    """
    from sai_attack import evaluation as ev

    bar = None
    if sys.stderr.isatty() and not getattr(args, "quiet", False):
        from tqdm import tqdm

        bar = tqdm(unit="img", desc="evaluate", file=sys.stderr)

    def progress(done: int, total: int) -> None:
        if bar is not None:
            bar.total = total
            bar.n = done
            bar.refresh()

    try:
        result = ev.evaluate_folders(
            args.runs,
            models=args.models,
            defenses=args.defenses,
            label_offset=args.label_offset,
            batch_size=args.batch_size,
            device=args.device,
            workers=args.workers,
            seed=args.seed,
            on_batch=progress,
            out=args.out,
        )
    finally:
        if bar is not None:
            bar.close()
    from sai_attack.parallel import context

    if not context().is_main:  # under torchrun, rank 0 writes the merged outputs
        return 0
    files = ev.write_evaluation(result, args.out)
    print("Attack success rate (%), no defense; * white-box, n = clean images classified correctly")
    print("\n".join(ev.attack_ability_table(result)))
    if len(result.defenses) > 1 and len(result.defenses) <= 16:
        for target in result.targets:
            print(f"\nUnder defenses, on {target.name}")
            print("\n".join(ev.defense_table(result, target)))
    plots = sum(k.startswith("plot:") for k in files)
    print(
        f"\n{len(result.runs)} run(s) x {len(result.targets)} model(s) x "
        f"{len(result.defenses)} defense(s) in {result.seconds:.1f} s -> {files['csv']}, "
        f"{files['json'].name}, {files['markdown'].name}, {files['predictions'].name}"
        + (f", {plots} plot(s) in {args.out}/plots" if plots else "")
    )
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``evaluate`` subcommand."""
    p = add_command(
        sub, cmd_evaluate, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run folders")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder")
    p.add_argument(
        "--models",
        nargs="+",
        metavar="MODEL",
        help="models to evaluate on (default: the model each run attacked)",
    )
    p.add_argument(
        "--defenses",
        nargs="+",
        default=[],
        metavar="SPEC",
        help="defenses as name:param, lists or sweeps (default: none only)",
    )
    add_argument(p, LABEL_OFFSET, type=_label_offset, default="auto")
    add_argument(p, SEED)
    add_options(
        p,
        ["batch_size", "device", "workers"],
        helps={
            "workers": "processes that decode the PNG files (0: in the main process) "
            f"(default {default('workers')})"
        },
    )
