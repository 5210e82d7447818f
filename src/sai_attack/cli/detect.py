"""``sai-attack detect`` and ``sai-attack texture``."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from sai_attack.cli.options import add_argument, add_options
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
    extract_files(
        ctx.shard(files), options.settings, workers=options.workers, cache=options.cache()
    )
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

    if args.save_model:
        raise ValueError("--save-model and --apply exclude each other")
    detector, settings, info = load_detector(args.apply)
    results = apply_detector(detector, settings, args.runs, args.workers, FeatureCache(cache))
    paths = write_apply_outputs(out, str(args.apply), info, results)
    print(apply_report(str(args.apply), info, results), end="")
    print(f"-> {paths['md']}, {paths['csv']}, {paths['json']}")
    return EXIT_OK


def cmd_detect(args: argparse.Namespace) -> int:
    """``sai-attack detect RUN_DIR [RUN_DIR ...] --out DIR``."""
    from sai_attack.detection import (
        DetectionOptions,
        detect_runs,
        table2_markdown,
        write_detection_outputs,
    )
    from sai_attack.runs import read_run

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
    if not _distributed_features(runs, options):
        return EXIT_OK  # a helper rank under torchrun: rank 0 trains and writes the outputs
    results, skipped = detect_runs(runs, options, save_dir=args.save_model)
    paths = write_detection_outputs(out, results, options, skipped, _versions())
    s = options.settings
    print(
        f"Detection accuracy (%), {s.features.upper()} {s.color} ({s.dim}-D) + {args.classifier}, "
        f"mean ± std over {args.splits} split(s), train fraction {args.train_fraction:g}; "
        "clean/adversarial pairs never straddle a split:"
    )
    print(table2_markdown(results), end="")
    for r in results:
        res = r.result
        print(
            f"  {r.run.name}: {r.label}, {res.n_train}/{res.n_test} train/test pairs, "
            f"P_FA {100 * res.p_fa:.1f}%, P_MD {100 * res.p_md:.1f}%, "
            f"features {r.extraction.computed} computed / {r.extraction.cached} cached"
        )
    for name, reason in skipped:
        print(f"  skipped {name}: {reason}")
    print(f"feature cache: {cache if cache is not None else 'disabled'}")
    if args.save_model:
        print(f"detectors saved to {args.save_model}/<run>.json + .npz")
    print(f"-> {paths['md']}, {paths['csv']}, {paths['json']}")
    return EXIT_SKIPPED if skipped else EXIT_OK


def cmd_texture(args: argparse.Namespace) -> int:
    """``sai-attack texture RUN_DIR [RUN_DIR ...]``."""
    from sai_attack.detection.texture import analyze_run, texture_markdown, write_texture_outputs
    from sai_attack.models import load_model
    from sai_attack.runtime import resolve_device

    device = str(resolve_device(args.device))
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

    p = sub.add_parser(
        "detect",
        help="steganalysis-based detection of a run's adversarial images (paper Table 2)",
        description="Train and test one steganalysis detector per run folder (Liu et al., CVPR "
        "2019, as used by Dong et al., CVPR 2020, Table 2): SPAM or SRM features of the 8-bit "
        "clean/ and images/ files, an FLD ensemble (or logistic regression), clean/adversarial "
        "pairs kept on one side of each random split. Writes DIR/detection.csv, detection.md "
        "(Table 2 layout) and detection.json. With --apply, applies a saved detector to run "
        "folders or image folders instead.",
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
        choices=FEATURE_SETS,
        default="spam",
        help="spam: SPAM-686 per channel (default, fast, Rust); srm: SRM-34671 per "
        "channel (slow, ~9 s per channel of a 224x224 image)",
    )
    p.add_argument(
        "--color",
        choices=COLOR_MODES,
        default="rgb",
        help="rgb: R, G, B feature vectors concatenated (default); gray: luminance only",
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
        "DIR/<run>.json + DIR/<run>.npz (JSON and numpy arrays, no pickle)",
    )
    model.add_argument(
        "--apply",
        metavar="MODEL",
        help="apply a saved detector (the .json written by --save-model) to the "
        "folders instead of training; writes DIR/predictions.csv",
    )
    p.set_defaults(func=cmd_detect)


def _register_texture(sub: argparse._SubParsersAction) -> None:
    from sai_attack.detection.texture import FOREGROUND_SOURCES

    t = sub.add_parser(
        "texture",
        help="HILL texture of the attention foreground vs the background (paper Section 3.2)",
        description="For each image of a run: the mean HILL cost (Li et al., ICIP 2014; larger "
        "= smoother) of the clean image's luminance over the attention foreground and over the "
        "background, and the share of the perturbation energy in each. The foreground is the "
        "attention map binarised at phi, from RUN_DIR/templates when saved, else computed with "
        "the run's model. Prints a table and writes texture.csv, texture_images.csv and "
        "texture.md into --out, or into each run folder.",
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
    t.set_defaults(func=cmd_texture, phi=None, model=None)


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``detect`` and ``texture`` subcommands."""
    _register_detect(sub)
    _register_texture(sub)
