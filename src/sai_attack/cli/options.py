"""Argument types and the option groups shared by several commands."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable

from sai_attack import superpixels as sp
from sai_attack.attacks import ATTACKS, BUDGETS, DEFAULT_METHOD, GRAD_MODES, LOSSES
from sai_attack.attention import ATTENTION_METHODS
from sai_attack.models import DEFAULT_MODEL, MODELS


def positive_float(name: str) -> Callable[[str], float]:
    """An argparse type: a finite number > 0, errors naming the option ``name``."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be a number, got {text!r}") from None
        if not (math.isfinite(value) and value > 0):
            raise argparse.ArgumentTypeError(f"{name} must be > 0, got {text}")
        return value

    return parse


def fraction(text: str) -> float:
    """Parse phi: a number in [0, 1], or a fraction like ``4/12``."""
    try:
        if "/" in text:
            num, den = text.split("/", 1)
            value = float(num) / float(den)
        else:
            value = float(text)
    except (ValueError, ZeroDivisionError):
        raise argparse.ArgumentTypeError(
            f"--phi must be a number or a fraction, got {text!r}"
        ) from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"--phi must lie in [0, 1], got {text}")
    return value


def int_at_least(name: str, low: int) -> Callable[[str], int]:
    """An argparse type: an integer >= ``low``, errors naming the option ``name``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be an integer, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"{name} must be >= {low}, got {value}")
        return value

    return parse


def non_negative_float(name: str) -> Callable[[str], float]:
    """An argparse type: a finite number >= 0, errors naming the option ``name``."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be a number, got {text!r}") from None
        if not (math.isfinite(value) and value >= 0):
            raise argparse.ArgumentTypeError(f"{name} must be >= 0, got {text}")
        return value

    return parse


# --------------------------------------------------------------------------------------------
# Shared option groups
# --------------------------------------------------------------------------------------------


def add_model_options(parser: argparse.ArgumentParser) -> None:
    """``--model`` and ``--weights``."""
    parser.add_argument(
        "--model",
        default=DEFAULT_MODEL,
        metavar="NAME",
        help=f"white-box model: {', '.join(MODELS)} (default {DEFAULT_MODEL}), or "
        "torchvision:<arch> / timm:<name> together with --weights",
    )
    parser.add_argument(
        "--weights",
        metavar="PATH",
        help="model weights: a .pt/.pth state dict (loaded with torch.load(weights_only=True)) "
        "or .safetensors; required for torchvision:/timm: models, never downloaded",
    )


def add_execution_options(parser: argparse.ArgumentParser, batch_size: int = 16) -> None:
    """``--batch-size``, ``--device``, ``--workers``."""
    parser.add_argument(
        "--batch-size",
        type=int_at_least("--batch-size", 1),
        default=batch_size,
        help=f"images per batch (default {batch_size}); results do not depend on it",
    )
    parser.add_argument("--device", default="cpu", help="auto, cpu, cuda or cuda:N (default cpu)")
    parser.add_argument(
        "--workers",
        type=int_at_least("--workers", 0),
        default=1,
        help="worker processes that decode, resize and segment images in parallel with the "
        "model (default 1; 0 does it in the main process)",
    )


def add_attack_options(parser: argparse.ArgumentParser) -> None:
    """Every attack parameter."""
    g = parser.add_argument_group("attack")
    g.add_argument(
        "--method",
        choices=list(ATTACKS),
        default=DEFAULT_METHOD,
        help=f"attack method (default {DEFAULT_METHOD}): fgm/ifgm/mifgm are the pixel-wise "
        "baselines, sa-fgm/sai-fgm/m-sai-fgm their superpixel-guided attentional versions",
    )
    g.add_argument(
        "--delta",
        type=positive_float("--delta"),
        default=4.0,
        help="perturbation scale delta in 0-255 pixel units; the L2 budget is "
        "eps = delta*sqrt(N), N = C*H*W (default 4)",
    )
    g.add_argument(
        "--iters",
        type=int_at_least("--iters", 1),
        default=10,
        help="iterations T; step alpha = eps/T (default 10; fgm and sa-fgm always take 1)",
    )
    g.add_argument(
        "--loss",
        choices=list(LOSSES),
        default="ce",
        help="ce: cross-entropy (default); cw: logit margin",
    )
    g.add_argument(
        "--budget",
        choices=list(BUDGETS),
        default=None,
        help="within: project into the L2 ball, ||r|| <= eps; exact: rescale to ||r|| = eps. "
        "Default is the paper's protocol: within for fgm/ifgm/mifgm, exact for superpixel methods",
    )
    g.add_argument(
        "--targeted",
        action="store_true",
        help="targeted attack towards the 'target' column of labels.csv",
    )
    g.add_argument(
        "--attack-prediction",
        action="store_true",
        help="attack the model's clean prediction instead of the label",
    )
    g.add_argument(
        "--momentum",
        type=non_negative_float("--momentum"),
        default=1.0,
        help="momentum decay mu for mifgm and m-sai-fgm (default 1.0)",
    )
    g.add_argument("--seed", type=int_at_least("--seed", 0), default=0,
                   help="seed of the random initialisation; each image's seed is derived from "
                   "it and the image name (default 0)")  # fmt: skip

    s = parser.add_argument_group("superpixels (sa-fgm, sai-fgm, m-sai-fgm)")
    s.add_argument(
        "--superpixel",
        choices=list(sp.SUPERPIXEL_ALGORITHMS),
        default="slic",
        help="template algorithm: slic (default), lsc, seeds (OpenCV ximgproc), slic-skimage "
        "(scikit-image's SLIC, slower), grid (square SxS blocks)",
    )
    size = s.add_mutually_exclusive_group()
    size.add_argument(
        "--superpixel-size",
        type=positive_float("--superpixel-size"),
        default=sp.DEFAULT_SIZE,
        metavar="S",
        help=f"superpixel size S in pixels, K = H*W/S^2 (default {sp.DEFAULT_SIZE})",
    )
    size.add_argument(
        "--segments",
        type=int_at_least("--segments", 1),
        default=None,
        metavar="K",
        help="number of superpixels K (instead of --superpixel-size)",
    )
    s.add_argument(
        "--compactness",
        type=positive_float("--compactness"),
        default=sp.DEFAULT_COMPACTNESS,
        help=f"SLIC compactness (default {sp.DEFAULT_COMPACTNESS:g})",
    )
    s.add_argument(
        "--merge-beta",
        type=non_negative_float("--merge-beta"),
        default=0.0,
        metavar="BETA",
        help="merge adjacent superpixels whose mean CIELAB colours differ by less than BETA "
        "(Delta E 76); 0 disables merging (default 0)",
    )
    s.add_argument(
        "--grad-mode",
        choices=list(GRAD_MODES),
        default="noise",
        help="superpixel gradient: noise (w.r.t. the noise vector, the paper's method), "
        "mean or max of the pixel gradients (ablations)",
    )

    a = parser.add_argument_group("attention (sa-fgm, sai-fgm, m-sai-fgm)")
    a.add_argument(
        "--phi",
        type=fraction,
        default=4.0 / 12.0,
        help="binarisation threshold of the attention map, a number or fraction in [0, 1]; "
        "0 disables attention (default 4/12)",
    )
    a.add_argument(
        "--attention",
        choices=list(ATTENTION_METHODS),
        default="auto",
        help="cam (exact, GAP+linear models), gradcam, or auto (default)",
    )
    a.add_argument(
        "--pixel-mask",
        action="store_true",
        help="cut the attention mask per pixel as in the paper's Eq. 2, instead of keeping "
        "whole superpixels by their mean attention (the default keeps the perturbation "
        "constant inside every superpixel)",
    )


def add_precision_options(parser: argparse.ArgumentParser) -> None:
    """``--amp`` and ``--deterministic``."""
    parser.add_argument(
        "--amp",
        action="store_true",
        help="mixed precision for the attack's forward/backward passes (float16 on CUDA, "
        "bfloat16 on CPU); clean and adversarial predictions stay in float32",
    )
    parser.add_argument(
        "--deterministic",
        action="store_true",
        help="deterministic kernels (torch.use_deterministic_algorithms); matters on GPU",
    )
