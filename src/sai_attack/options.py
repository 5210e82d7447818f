"""The one table of attack and run options: name, type, default, check and help of each.

Every default and every check of an option is written here and only here. The stages read it:
the attacks and the superpixel and attention code take their defaults and validate their
arguments with :func:`check`; :class:`~sai_attack.pipeline.AttackConfig` is built from it; the
command line (``cli/options.py``) turns each entry into an argument; ``bench``, ``run.json`` and
``summary.json`` use its names. Errors name the parameter (``delta must be ...``), never a
command-line flag: only the CLI knows the flags.

Options whose values are names (``method``, ``superpixel``, ...) take their choices from the
registry that owns those names: the registry's module calls :func:`register_choices` when it is
imported, so the registries stay the only lists of names and this module imports no other part
of the package.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

GROUPS = {
    "attack": "attack",
    "superpixels": "superpixels (the superpixel methods)",
    "attention": "attention (the superpixel methods)",
    "model": "model",
    "execution": "execution (does not change the results)",
}
"""Option groups and their headings in ``--help``."""


@dataclass(frozen=True)
class Option:
    """One option: its parameter name, type, default, range and help.

    Attributes:
        name: The parameter name (Python keyword, config field, key in the run record).
        type: ``float``, ``int``, ``str`` or ``bool``.
        default: The default value.
        help: One line for ``--help`` and the docs.
        group: A key of :data:`GROUPS`.
        low: Smallest allowed value, or None.
        high: Largest allowed value, or None.
        low_open: Whether ``low`` itself is excluded (``> low`` instead of ``>= low``).
        nullable: Whether None is allowed (it then means "not set", see ``help``).
        choices: Whether the value must be a name registered with :func:`register_choices`.
        flag: The command-line flag (default ``--name-with-dashes``).
        metavar: The CLI metavar.
        inverted: A boolean whose CLI flag sets it to False (``--pixel-mask`` clears
            ``align_mask``).
        fraction: The CLI also accepts fractions such as ``4/12``.
        exclusive: Options with the same key exclude each other on the command line.
        many: A string of space-separated words that the CLI takes as one or more arguments
            (``--eot resize:3 jpeg:55`` gives ``"resize:3 jpeg:55"``).
    """

    name: str
    type: type
    default: Any
    help: str
    group: str = "attack"
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    nullable: bool = False
    choices: bool = False
    flag: str | None = None
    metavar: str | None = None
    inverted: bool = False
    fraction: bool = False
    exclusive: str | None = None
    many: bool = False

    @property
    def cli_flag(self) -> str:
        """The command-line flag."""
        return self.flag or "--" + self.name.replace("_", "-")

    def names(self) -> tuple[str, ...]:
        """The registered choices (empty for options that are not names)."""
        return tuple(_CHOICES.get(self.name, ())) if self.choices else ()

    def range_text(self) -> str:
        """The allowed range in words, e.g. ``> 0`` or ``in [0, 1]``."""
        low, high = _bound(self.low), _bound(self.high)
        if self.low is not None and self.high is not None:
            return f"in {'(' if self.low_open else '['}{low}, {high}]"
        if self.low is not None:
            return f"{'>' if self.low_open else '>='} {low}"
        if self.high is not None:
            return f"<= {high}"
        return ""

    def check(self, value: Any) -> Any:
        """Validate ``value`` and return it as the option's type.

        Raises:
            ValueError: The value is of the wrong type, out of range or not a registered name.
        """
        if value is None:
            if self.nullable:
                return None
            raise ValueError(f"{self.name} must be set, got None")
        if self.type is bool:
            if not isinstance(value, bool):
                raise ValueError(f"{self.name} must be True or False, got {value!r}")
            return value
        if self.type is str:
            if not isinstance(value, str):
                raise ValueError(f"{self.name} must be a string, got {value!r}")
            if self.choices and value not in self.names():
                raise ValueError(
                    f"{self.name} {value!r} is unknown; choose one of {', '.join(self.names())}"
                )
            return value
        return self._check_number(value)

    def _check_number(self, value: Any) -> float | int:
        kind = "an integer" if self.type is int else "a finite number"
        bad = isinstance(value, bool) or not isinstance(value, (int, float))
        if self.type is int and not bad and not float(value).is_integer():
            bad = True
        if bad or not math.isfinite(value):
            raise ValueError(f"{self.name} must be {kind}, got {value!r}")
        converted = self.type(value)
        too_low = self.low is not None and (
            converted <= self.low if self.low_open else converted < self.low
        )
        if too_low or (self.high is not None and converted > self.high):
            raise ValueError(f"{self.name} must be {kind} {self.range_text()}, got {value!r}")
        return converted


def _bound(value: float | None) -> str:
    if value is None:
        return ""
    if isinstance(value, int) or (isinstance(value, float) and value.is_integer()):
        return str(int(value))
    return f"{value:g}"


def _table(*options: Option) -> dict[str, Option]:
    return {o.name: o for o in options}


OPTIONS: dict[str, Option] = _table(
    # -- the attack ---------------------------------------------------------------------------
    Option("method", str, "sai-fgm", "attack method: fgm/ifgm/mifgm are the pixel-wise "
           "baselines, sa-fgm/sai-fgm/m-sai-fgm their superpixel-guided attentional versions",
           choices=True),
    Option("delta", float, 4.0, "perturbation scale delta in 0-255 pixel units; the L2 budget "
           "is eps = delta*sqrt(N), N = C*H*W", low=0.0, low_open=True, high=255.0),
    Option("steps", int, 10, "iterations T; step alpha = eps/T (fgm and sa-fgm always take 1)",
           low=1, high=100_000, flag="--iters", metavar="T"),
    Option("loss", str, "ce", "ce: cross-entropy; cw: logit margin", choices=True),
    Option("fallback_loss", str, "auto", "re-attack the images the attack did not fool on "
           "their saved 8-bit files (still predicted as the attacked class, or not as their "
           "target) with this loss and budget within, and keep the re-attack where it succeeds "
           "(AutoAttack's pattern, Croce & Hein 2020); none: no re-attack; auto: cw under linf, "
           "none under l2 (the paper's attacks as published)", choices=True),
    Option("budget", str, None, "within: project into the ball, ||r|| <= eps; exact: rescale "
           "to ||r|| = eps (linf: every perturbed value at +-eps). Not set: the paper's "
           "protocol, within for fgm/ifgm/mifgm, exact for the superpixel methods",
           nullable=True, choices=True),
    Option("norm", str, "l2", "threat model: l2 (the paper; budget delta*sqrt(N)) or linf "
           "(budget delta per pixel, sign steps of delta/T, e.g. delta 8 = 8/255)",
           choices=True),
    Option("targeted", bool, False, "targeted attack towards the 'target' column of labels.csv"),
    Option("target_mode", str, "labels", "where targeted attacks get their targets: labels "
           "(the 'target' column of labels.csv), random (a seeded class other than the true "
           "one), least-likely (the lowest clean logit)", choices=True),
    Option("attack_prediction", bool, False,
           "attack the model's clean prediction instead of the label"),
    Option("space", str, None, "perturbation space instead of the method's own: pixels "
           "(every pixel free), superpixels (one value per superpixel, the paper's), or the "
           "controls with as many values but no image content: dct (the K lowest-frequency "
           "DCT basis functions) and gaussian (K Gaussian bumps on a regular grid)",
           nullable=True, choices=True),
    Option("mask", str, None, "where the perturbation may go, instead of the method's own: "
           "none, or attention (the binarised class activation map m*, see --phi)",
           nullable=True, choices=True),
    Option("optimizer", str, None, "update rule instead of the method's own: one-step, "
           "iterative, momentum (MI-FGSM), nesterov (NI-FGSM); e.g. sai-fgm with nesterov is "
           "NI-SAI-FGM", nullable=True, choices=True),
    Option("momentum", float, 1.0, "momentum decay mu of the momentum and nesterov update rules "
           "(mifgm, m-sai-fgm)", low=0.0, high=100.0),
    Option("random_start", bool, False, "start from a uniformly random point of the budget "
           "(PGD) instead of the clean image (pixel methods) or the paper's small random noise "
           "(superpixel methods)"),
    Option("seed", int, 0, "seed of the random initialisation; each image's seed is derived "
           "from it and the image name", low=0, high=2**63 - 1),
    Option("eot", str, None, "expectation over transformation against defenses: specs as "
           "for evaluate --defenses (resize:1..3 jpeg:30..90 avgpool:3,5 tvm bitdepth:3 "
           "median:3); each step's gradient is the mean over eot_samples draws of a defense (a "
           "spec at random, then one of its values) applied before the model: the true gradient "
           "of resize, pooling and median, a differentiable approximation of JPEG, BPDA "
           "(straight through) for the others", nullable=True, metavar="SPEC", many=True),
    Option("eot_samples", int, 1, "draws K of the random transforms (eot, input_diversity) "
           "averaged per step; each costs a forward and backward pass", low=1, high=1000,
           metavar="K"),
    Option("input_diversity", float, 0.0, "input diversity (DI, Xie et al. 2019): probability "
           "that an image is resized to a random size and padded before the model at each "
           "draw; 0: off", low=0.0, high=1.0, metavar="P"),
    Option("diversity_ratio", float, 1.1, "the largest size of input diversity, as a multiple "
           "of the image size", low=1.0, low_open=True, high=2.0),
    Option("translation_invariance", int, 0, "translation invariance (TI, Dong et al. 2019): "
           "odd size of the Gaussian kernel that smooths the pixel gradient; 0: off", low=0,
           high=255, metavar="KERNEL"),
    # -- superpixels --------------------------------------------------------------------------
    Option("superpixel", str, "slic", "template algorithm: slic (OpenCV ximgproc), lsc, seeds, "
           "slic-skimage (scikit-image's SLIC, slower), grid (square SxS blocks), slic-torch "
           "(SLIC in torch, batched on the attack device)", group="superpixels", choices=True),
    Option("superpixel_size", float, 5.0, "superpixel size S in pixels, K = H*W/S^2",
           group="superpixels", low=1.0, high=4096.0, metavar="S",
           exclusive="size"),
    Option("n_segments", int, None, "number of superpixels K (instead of superpixel_size)",
           group="superpixels", low=1, high=2**24, nullable=True, flag="--segments",
           metavar="K", exclusive="size"),
    Option("compactness", float, 20.0, "SLIC compactness", group="superpixels", low=0.0,
           low_open=True, high=10_000.0),
    Option("merge_beta", float, 0.0, "merge adjacent superpixels whose mean CIELAB colours "
           "differ by less than BETA (Delta E 76); 0 disables merging", group="superpixels",
           low=0.0, high=1000.0, metavar="BETA"),
    Option("grad_mode", str, "noise", "superpixel gradient: noise (w.r.t. the noise vector, the "
           "paper's method), mean or max of the pixel gradients (ablations)",
           group="superpixels", choices=True),
    Option("texture_weight", float, 0.0, "stego-aware superpixels: each superpixel's noise is "
           "scaled by (c_k / c_min)^-W, c_k its HILL texture cost (conseal; geometric mean over "
           "its pixels), so the perturbation goes to the textured regions steganalysis looks at "
           "least; 0: the paper's method", group="superpixels", low=0.0, high=100.0,
           metavar="W"),
    # -- attention ----------------------------------------------------------------------------
    Option("phi", float, 4.0 / 12.0, "binarisation threshold of the attention map, in [0, 1] "
           "(the CLI also takes fractions like 4/12); 0 disables attention",
           group="attention", low=0.0, high=1.0, fraction=True),
    Option("attention", str, "auto", "cam (exact, for GAP + linear models), gradcam (any "
           "model with a convolution), or auto: cam where the model supports it, else gradcam",
           group="attention", choices=True),
    Option("align_mask", bool, True, "--pixel-mask (align_mask=False) cuts the attention mask "
           "per pixel as in the paper's Eq. 2; by default whole superpixels are kept or dropped "
           "by their mean attention, so the perturbation is constant inside every superpixel",
           group="attention", inverted=True, flag="--pixel-mask"),
    # -- the model ----------------------------------------------------------------------------
    Option("model", str, "efficientnet-lite0", "white-box model: a built-in name, "
           "torchvision:<arch> / timm:<name> together with weights, or an ensemble of built-in "
           "names separated by commas (efficientnet-lite0,efficientnet-lite1: logits averaged)",
           group="model", metavar="NAME"),
    Option("weights", str, None, "model weights: a .pt/.pth state dict (loaded with "
           "torch.load(weights_only=True)) or .safetensors; required for torchvision:/timm: "
           "models, never downloaded", group="model", nullable=True, metavar="PATH"),
    Option("image_size", int, None, "attack resolution (default: the model's input size, 224 "
           "for models without one); images are resized on the shorter side and centre-cropped",
           group="model", low=8, high=4096, nullable=True),
    # -- execution ----------------------------------------------------------------------------
    Option("batch_size", int, 16, "images per batch; results do not depend on it",
           group="execution", low=1, high=65_536),
    Option("device", str, "cpu", "auto, cpu, cuda or cuda:N", group="execution"),
    Option("workers", int, 1, "worker processes that decode, resize and segment images in "
           "parallel with the model (0: in the main process)", group="execution", low=0,
           high=256),
    Option("limit", int, None, "attack only the first N images", group="execution", low=1,
           nullable=True, metavar="N"),
    Option("labels", str, None, "labels CSV with columns image,label[,target] (default: "
           "INPUT/labels.csv if present; without labels the clean prediction is the label)",
           group="execution", nullable=True, metavar="CSV"),
    Option("save_templates", bool, False, "also write templates/<stem>.npz with the superpixel "
           "labels, the mask and the attention map", group="execution"),
    Option("amp", bool, False, "mixed precision for the attack's forward/backward passes "
           "(float16 on CUDA, bfloat16 on CPU); clean and adversarial predictions stay in "
           "float32", group="execution"),
    Option("deterministic", bool, False, "deterministic kernels "
           "(torch.use_deterministic_algorithms); matters on GPU", group="execution"),
    Option("cache_dir", str, None, "keep superpixel templates, clean predictions and attention "
           "maps in this folder, keyed by image content and every setting they depend on, and "
           "reuse them in later runs (delta sweeps, reproduce, repeated runs); default: none",
           group="execution", nullable=True, metavar="DIR"),
    Option("memory_format", str, "auto", "memory layout of the network: channels_last (NHWC, "
           "faster convolutions on the CPU), contiguous (PyTorch's default, the exact results of "
           "earlier versions), or auto: channels_last for the built-in models on the CPU, else a "
           "short measurement of both; the layouts agree up to float rounding (8-bit pixels may "
           "round the other way)", group="execution", choices=True),
)  # fmt: skip
"""Every option by parameter name."""

_CHOICES: dict[str, tuple[str, ...]] = {}

RENAMED = {"iters": "steps", "segments": "n_segments"}
"""Names written by earlier versions (up to f20f404) and their current names."""


def register_choices(name: str, names: Iterable[str] | Mapping[str, object]) -> None:
    """Declare the valid values of option ``name`` (called by the registry that owns them)."""
    if name not in OPTIONS or not OPTIONS[name].choices:
        raise ValueError(f"option {name!r} does not take registered choices")
    _CHOICES[name] = tuple(names)


def default(name: str) -> Any:
    """The default of option ``name``."""
    return OPTIONS[name].default


def check(name: str, value: Any) -> Any:
    """Validate ``value`` for option ``name``; returns it as the option's type."""
    return OPTIONS[name].check(value)


def checker(name: str) -> Callable[[Any], Any]:
    """A one-argument validator for option ``name``."""
    return OPTIONS[name].check


def in_group(*groups: str) -> list[Option]:
    """The options of the given groups, in table order."""
    return [o for o in OPTIONS.values() if o.group in groups]
