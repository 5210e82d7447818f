"""White-box and black-box success of every method under an L-infinity (or L2) budget.

Attacks the first N (default 32) images of a labelled folder that the white-box model classifies
correctly with the six methods and with torchattacks' ``PGD`` (no random start) and ``MIFGSM``
(decay 1) at the same budget and steps, all through the same pipeline as ``sai-attack attack``
(the torchattacks references are registered as methods, so their images are saved, checked and
evaluated exactly like the others), then evaluates every run on the white-box model and the
black-box targets and prints one Markdown table per delta. Also checks the L-infinity invariant
on the saved 8-bit files: the largest difference to the clean PNG, in levels.

Usage:
    python benchmarks/threat_models.py [DATA_DIR] [--n 32] [--norm linf] [--deltas 8 16]
        [--targets efficientnet-lite1 efficientnet-lite2 tflite:...] [--loss ce|cw]
        [--budget within|exact] [--out /tmp/sai-threat]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))
from attack_success import correctly_classified, subset_folder
from sai_attack.attacks import ATTACKS, Attack, AttackResult, register_attack
from sai_attack.evaluation import evaluate_folders
from sai_attack.models import DEFAULT_MODEL, load_model
from sai_attack.pipeline import AttackConfig, AttackRun, RunOptions
from sai_attack.runs import read_run

SHARED_MODELS = Path(__file__).resolve().parents[2] / "shared" / "models"
DEFAULT_TARGETS = [
    "efficientnet-lite1",
    "efficientnet-lite2",
    f"tflite:{SHARED_MODELS / 'mobilenet_v2_1.0_224_quant.tflite'}",
    f"tflite:{SHARED_MODELS / 'mobilenet_v1_0.75_192_quant.tflite'}",
]


class _Torchattacks(Attack):
    """A torchattacks attack run as a method of the pipeline (budget in this library's units)."""

    factory = "PGD"

    def _run(self, images, labels, targets, superpixels, attention, mask, seeds) -> AttackResult:
        import torchattacks

        eps = self.eps_for(images)
        kwargs = {"eps": eps, "alpha": eps / self.steps, "steps": self.steps}
        if self.factory == "PGD":
            kwargs["random_start"] = False
        if self.norm != "linf":
            raise ValueError("the torchattacks references here are L-infinity attacks")
        adv = getattr(torchattacks, self.factory)(self.model, **kwargs)(images, labels)
        return AttackResult(adv=adv, perturbation=adv - images, eps=eps)


class TorchattacksPGD(_Torchattacks):
    """torchattacks.PGD without random start (I-FGSM)."""

    name, title, factory = "ta-pgd", "torchattacks PGD", "PGD"


class TorchattacksMIFGSM(_Torchattacks):
    """torchattacks.MIFGSM, decay 1."""

    name, title, factory = "ta-mifgsm", "torchattacks MIFGSM", "MIFGSM"


def largest_level_change(run: Path) -> int:
    """The largest |adv - clean| over the saved 8-bit PNGs of a run folder, in levels."""
    worst = 0
    for path in sorted((run / "images").glob("*.png")):
        adv = np.asarray(Image.open(path), dtype=np.int16)
        clean = np.asarray(Image.open(run / "clean" / path.name), dtype=np.int16)
        worst = max(worst, int(np.abs(adv - clean).max()))
    return worst


def superpixel_invariants(run: Path) -> tuple[int, int] | None:
    """Checks on a superpixel run's saved 8-bit files and templates (None without templates).

    Returns:
        The largest spread (max - min, in levels) of ``adv - clean`` within one channel of one
        masked superpixel over the pixels not clipped at 0 or 255 (constant per superpixel up to
        one rounding level means <= 1), and the largest ``|adv - clean|`` outside the mask.
    """
    templates = sorted((run / "templates").glob("*.npz"))
    if not templates:
        return None
    spread, outside = 0, 0
    for path in templates:
        saved = np.load(path)
        labels, mask = saved["superpixels"], saved["mask"].astype(bool)
        adv = np.asarray(Image.open(run / "images" / f"{path.stem}.png"), dtype=np.int16)
        clean = np.asarray(Image.open(run / "clean" / f"{path.stem}.png"), dtype=np.int16)
        diff = adv - clean  # (H, W, 3)
        outside = max(outside, int(np.abs(diff[~mask]).max(initial=0)))
        free = (adv > 0) & (adv < 255)  # (H, W, 3): not clipped
        for c in range(3):
            inside = mask & free[..., c]
            lab, val = labels[inside], diff[..., c][inside]
            if lab.size == 0:
                continue
            order = np.argsort(lab, kind="stable")
            lab, val = lab[order], val[order]
            starts = np.flatnonzero(np.r_[True, lab[1:] != lab[:-1]])
            hi, lo = np.maximum.reduceat(val, starts), np.minimum.reduceat(val, starts)
            spread = max(spread, int((hi - lo).max()))
    return spread, outside


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data_dir", nargs="?", default="../shared/data/nips17-dev")
    parser.add_argument("--n", type=int, default=32)
    parser.add_argument("--norm", default="linf")
    parser.add_argument("--deltas", type=float, nargs="+", default=[8.0, 16.0])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--loss", default=None, help="attack loss (default: the library's)")
    parser.add_argument("--budget", default=None, help="budget protocol (default: the library's)")
    parser.add_argument("--fallback-loss", default=None,
                        help="re-attack loss of the missed images (default: the library's; "
                        "never for the torchattacks references)")  # fmt: skip
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--targets", nargs="+", default=DEFAULT_TARGETS)
    parser.add_argument("--methods", nargs="+", default=None)
    parser.add_argument("--out", default="/tmp/sai-threat-models")
    args = parser.parse_args()
    register_attack(TorchattacksPGD.name, TorchattacksPGD)
    register_attack(TorchattacksMIFGSM.name, TorchattacksMIFGSM)
    methods = args.methods or list(ATTACKS)
    out = Path(args.out)
    model = load_model(args.model)
    names = correctly_classified(model, Path(args.data_dir), args.n)
    subset = subset_folder(Path(args.data_dir), names, out / "inputs")
    for delta in args.deltas:
        folders = []
        for method in methods:
            folder = out / f"{args.norm}-{delta:g}" / method
            settings = {k: v for k, v in (("loss", args.loss), ("budget", args.budget),
                                          ("fallback_loss", args.fallback_loss)) if v}  # fmt: skip
            if method in (TorchattacksPGD.name, TorchattacksMIFGSM.name):
                settings["fallback_loss"] = "none"  # as a user runs them
            config = AttackConfig(
                method=method, model=args.model, delta=delta, norm=args.norm, steps=args.steps,
                **settings,
            )  # fmt: skip
            options = RunOptions(progress=False, save_templates=ATTACKS[method].uses_superpixels)
            AttackRun(subset, folder, config, options, model=model).run()
            folders.append(folder)
        evaluation = evaluate_folders(folders, models=[args.model, *args.targets])
        short = [t.name.split("/")[-1].removesuffix(".tflite") for t in evaluation.targets]
        print(f"\n{len(names)} images {args.model} classifies correctly, norm {args.norm}, "
              f"delta {delta:g}, T = {args.steps}; success % over the images each model "
              "classifies correctly (white-box model first)\n")  # fmt: skip
        print(f"| method | max level change | {' | '.join(short)} |")
        print(f"| --- | --- |{' --- |' * len(short)}")
        for folder, method in zip(folders, methods, strict=True):
            cells = []
            for target in evaluation.targets:
                row = evaluation.row(evaluation.runs[folders.index(folder)].name, target.name,
                                     "none")  # fmt: skip
                cells.append(f"{100 * row['success_rate']:.1f}")
            title = ATTACKS[method].title
            checks = superpixel_invariants(folder)
            extra = "" if checks is None else (f" (spread in a superpixel {checks[0]}, "
                                               f"outside the mask {checks[1]})")  # fmt: skip
            used = read_run(folder).record.summary.get("counts", {}).get("fallback", 0)
            extra += f" (fallback {used})" if used else ""
            print(f"| {title} | {largest_level_change(folder)}{extra} | {' | '.join(cells)} |",
                  flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
