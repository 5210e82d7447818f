"""``sai-attack detect`` and ``sai-attack texture``."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from sai_attack.cli.options import add_argument, add_command, add_options
from sai_attack.runtime import EXIT_OK, EXIT_SKIPPED


def _cache_dir(args: argparse.Namespace) -> Path | None:
    from sai_attack.detection import default_cache_dir

    if args.no_cache:
        return None
    return Path(args.cache_dir) if args.cache_dir else default_cache_dir()


def _versions() -> dict[str, str]:
    import sealwatch
    import sklearn

    from sai_attack import __version__

    return {
        "sai_attack": __version__,
        "sealwatch": str(getattr(sealwatch, "__version__", "")),
        "scikit-learn": sklearn.__version__,
    }


def _distributed_features(runs: list, options) -> bool:
    """Under torchrun, every rank extracts its share of the features into the shared cache.

    Returns:
        Whether this process goes on to train the detectors (rank 0, or a single process).
    """
    from sai_attack.detection import extract_files
    from sai_attack.parallel import context

    ctx = context()
    if not ctx.distributed:
        return True
    if options.cache_dir is None:
        raise ValueError("detect under torchrun needs the feature cache (no --no-cache)")
    files: list[str] = []
    for r in runs:
        files += [str(it.clean) for it in r.items] + [str(it.adversarial) for it in r.items]
    for settings in options.feature_settings:
        extract_files(ctx.shard(files), settings, workers=options.workers, cache=options.cache())
    ctx.barrier()  # every feature is now in the cache (on a filesystem all ranks share)
    return ctx.is_main


def _apply(args: argparse.Namespace, out: Path, cache: Path | None) -> int:
    """``detect --apply MODEL``: a saved detector applied to the folders."""
    from sai_attack.detection import (
        FeatureCache,
        apply_detector,
        apply_report,
        load_detector,
        write_apply_outputs,
    )
    from sai_attack.runs.layout import check_output_folder

    if args.save_model:
        raise ValueError("--save-model and --apply exclude each other")
    detector, settings, info = load_detector(args.apply)
    check_output_folder(out, args.runs, "input folder")
    results = apply_detector(detector, settings, args.runs, args.workers, FeatureCache(cache))
    paths = write_apply_outputs(out, str(args.apply), info, results)
    print(apply_report(str(args.apply), info, results), end="")
    print(f"-> {paths['md']}, {paths['csv']}, {paths['json']}")
    return EXIT_OK


def _print_results(args: argparse.Namespace, options, outcome) -> None:
    """Table 2 and the per-run numbers of every feature set, and the cross-attack matrix."""
    from sai_attack.detection.comparison import by_features, by_settings, run_names, title
    from sai_attack.detection.cross import cross_markdown
    from sai_attack.detection.reports import table2_markdown

    for settings, results in by_features(outcome.results):
        print(
            f"Detection accuracy (%), {title(settings)} + {args.classifier}, mean ± std over "
            f"{args.splits} split(s), train fraction {args.train_fraction:g}; "
            "clean/adversarial pairs never straddle a split:"
        )
        print(table2_markdown(results), end="")
        for r in results:
            res = r.result
            print(
                f"  {r.run.name}: {r.label}, {res.n_train}/{res.n_test} train/test pairs, "
                f"P_FA {100 * res.p_fa:.1f}%, P_MD {100 * res.p_md:.1f}%, AUC {res.auc:.3f}, "
                f"TPR@5%FPR {100 * res.tpr_at_fpr:.1f}%, features "
                f"{r.extraction.computed} computed / {r.extraction.cached} cached"
            )
    for name, reason in outcome.skipped:
        print(f"  skipped {name}: {reason}")
    label = run_names([r.run for r in outcome.results])
    for settings, cells in by_settings(outcome.cross):
        print(f"Cross-attack matrix, {title(settings)} (accuracy % / AUC; rows: trained on):")
        print(cross_markdown(cells, label), end="")


def cmd_detect(args: argparse.Namespace) -> int:
    """Steganalysis-based detection of a run's adversarial images (paper Table 2).

    Train and test one steganalysis detector per run folder (Liu et al., CVPR 2019, as used by
    Dong et al., CVPR 2020, Table 2): SPAM, SRM, SRMQ1 or CRM features (several compared side
    by side) of the 8-bit clean/ and images/ files, an FLD ensemble (or logistic regression),
    clean/adversarial pairs kept on one side of each random split; accuracy, ROC AUC and
    TPR@5%FPR. Writes DIR/detection.csv, detection.md (Table 2 layout), detection.json and
    roc.png, and with two or more runs the cross-attack matrix (detector trained on one run,
    tested on another) as cross_attack.csv and cross_attack.png. With --apply, applies a saved
    detector to run folders or image folders instead.
    """
    from sai_attack.detection import DetectionOptions, run_detection, write_detection_outputs
    from sai_attack.runs import read_run
    from sai_attack.runs.layout import check_output_folder

    out = Path(args.out)
    cache = _cache_dir(args)
    if args.apply:
        return _apply(args, out, cache)
    settings = [f.name for f in dataclasses.fields(DetectionOptions) if f.name != "cache_dir"]
    options = DetectionOptions(**{n: getattr(args, n) for n in settings}, cache_dir=cache)
    # A run with too few pairs is reported as skipped (exit 3) rather than refused.
    runs = [read_run(r, require_items=False) for r in args.runs]
    names = [r.name for r in runs]
    if args.save_model and len(set(names)) != len(names):
        raise ValueError("--save-model needs run folders with distinct names")
    for folder in (out, args.save_model):
        if folder:
            check_output_folder(folder, args.runs, "run folder")
    if not _distributed_features(runs, options):
        return EXIT_OK  # a helper rank under torchrun: rank 0 trains and writes the outputs
    outcome = run_detection(runs, options, save_dir=args.save_model)
    results, skipped = outcome.results, outcome.skipped
    paths = write_detection_outputs(out, results, options, skipped, _versions(), outcome.cross)
    _print_results(args, options, outcome)
    print(f"feature cache: {cache if cache is not None else 'disabled'}")
    if args.save_model:
        stem = "<run>" if len(options.features) == 1 else "<run>-<features>"
        print(f"detectors saved to {args.save_model}/{stem}.json + .npz")
    print("-> " + ", ".join(str(p) for p in paths.values()))
    return EXIT_SKIPPED if skipped else EXIT_OK


def cmd_texture(args: argparse.Namespace) -> int:
    """HILL texture of the attention foreground vs the background (paper Section 3.2).

    For each image of a run: the mean HILL cost (Li et al., ICIP 2014; larger = smoother) of the
    clean image's luminance over the attention foreground and over the background, and the share
    of the perturbation energy in each. The foreground is the attention map binarised at phi,
    from RUN_DIR/templates when saved, else computed with the run's model. Prints a table and
    writes texture.csv, texture_images.csv and texture.md into --out, or into each run folder.
    """
    from sai_attack.detection.texture import (
        TEXTURE_FILES,
        analyze_run,
        texture_markdown,
        write_texture_outputs,
    )
    from sai_attack.models import load_model
    from sai_attack.runs.layout import check_output_folder
    from sai_attack.runtime import resolve_device

    device = str(resolve_device(args.device))
    if args.out:
        check_output_folder(args.out, args.runs, "run folder", writes=TEXTURE_FILES)
    model = load_model(args.model, args.weights) if args.model else None
    reports = [
        analyze_run(
            run,
            model=model,
            phi=args.phi,
            foreground=args.foreground,
            device=device,
            batch_size=args.batch_size,
            limit=args.limit,
        )
        for run in args.runs
    ]
    print(texture_markdown(reports), end="")
    if args.out:
        written = write_texture_outputs(args.out, reports)
    else:
        written = [p for r in reports for p in write_texture_outputs(r.run.path, [r])]
    print("-> " + ", ".join(map(str, written)))
    return EXIT_OK


def _register_detect(sub: argparse._SubParsersAction) -> None:
    from sai_attack.detection.classifiers import CLASSIFIERS
    from sai_attack.detection.features import (
        CACHE_ENV,
        COLOR_MODES,
        FEATURE_SETS,
        default_workers,
    )
    from sai_attack.detection.protocol import SPLITS, TRAIN_FRACTION
    from sai_attack.detection.runs import SEED, WORKERS

    p = add_command(
        sub,
        cmd_detect,
        epilog="refused: an --out or --save-model folder that is, lies inside or contains a "
        "RUN_DIR (symlinks resolved) exits with 1 before any work.",
    )
    p.add_argument(
        "runs",
        nargs="+",
        metavar="RUN_DIR",
        help="run folders written by 'sai-attack attack' (with --apply: run folders "
        "or folders of images)",
    )
    p.add_argument("--out", required=True, metavar="DIR", help="output folder")
    p.add_argument(
        "--features",
        nargs="+",
        choices=FEATURE_SETS,
        default=["spam"],
        metavar="SET",
        help="one or more feature sets, compared side by side: spam: SPAM-686 per channel "
        "(default, fast, Rust); srm: SRM-34671 per channel (slow, ~9 s per channel of a "
        "224x224 image); srmq1: SRMQ1-12753 per channel (~4 s per channel); crm: the colour "
        "rich model CRMQ1-5404 of the RGB image (~2 s per image)",
    )
    p.add_argument(
        "--color",
        choices=COLOR_MODES,
        default="rgb",
        help="rgb: R, G, B feature vectors concatenated (default; crm always uses the colour "
        "image); gray: luminance only (not with crm)",
    )
    p.add_argument(
        "--classifier",
        choices=list(CLASSIFIERS),
        default="fld",
        help="fld: FLD ensemble, automatic L and d_sub (Kodovsky et al. 2012; "
        "default); logreg: logistic regression (scikit-learn)",
    )
    for option in (SPLITS, TRAIN_FRACTION, SEED):
        add_argument(p, option)
    add_argument(
        p, WORKERS, default=default_workers(), help=f"{WORKERS.help} (default: CPUs, at most 4)"
    )
    p.add_argument(
        "--cache-dir",
        metavar="DIR",
        help=f"feature cache folder (default ${CACHE_ENV}, else "
        "$XDG_CACHE_HOME/sai-attack, else ~/.cache/sai-attack); vectors are keyed by "
        "the file's SHA-256 and the feature settings",
    )
    p.add_argument("--no-cache", action="store_true", help="neither read nor write the cache")
    model = p.add_mutually_exclusive_group()
    model.add_argument(
        "--save-model",
        metavar="DIR",
        help="also train a detector on all pairs of each run and save it as "
        "DIR/<run>.json + DIR/<run>.npz (JSON and numpy arrays, no pickle; "
        "DIR/<run>-<features>.json with several --features)",
    )
    model.add_argument(
        "--apply",
        metavar="MODEL",
        help="apply a saved detector (the .json written by --save-model) to the "
        "folders instead of training; writes DIR/predictions.csv",
    )


def _register_texture(sub: argparse._SubParsersAction) -> None:
    from sai_attack.detection.texture import FOREGROUND_SOURCES

    t = add_command(
        sub,
        cmd_texture,
        epilog="refused: an --out that is or lies inside a RUN_DIR (symlinks resolved) exits "
        "with 1 before any work; one that holds a RUN_DIR is fine (only texture.csv, "
        "texture_images.csv and texture.md are written), and without --out they go into each "
        "run folder. A template that cannot be read is ignored (logged) and the attention "
        "computed instead; with --foreground mask, that image is left out (logged, counted "
        "in texture.md).",
    )
    t.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run folders")
    t.add_argument("--out", metavar="DIR", help="output folder (default: each run folder)")
    t.add_argument(
        "--foreground",
        choices=FOREGROUND_SOURCES,
        default="attention",
        help="attention: binarised attention map (default); mask: the attack's "
        "superpixel-aligned mask from RUN_DIR/templates",
    )
    helps = {
        "phi": "binarisation threshold of the attention map, in [0, 1] (default: the run's "
        "phi, 4/12 if it has none)",
        "model": "model for attention maps the run did not save (default: the run's model)",
        "limit": "use only the first N pairs of each run",
    }
    add_options(t, ["phi", "model", "weights", "device", "batch_size", "limit"], helps=helps)
    # Unset, phi and model come from each run's record.
    t.set_defaults(phi=None, model=None)


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``detect`` and ``texture`` subcommands."""
    _register_detect(sub)
    _register_texture(sub)
