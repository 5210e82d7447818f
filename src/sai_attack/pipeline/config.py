"""The settings of an attack run, built from the option table.

:class:`AttackConfig` has one field per attack, superpixel, attention and model option of
:data:`sai_attack.options.OPTIONS` and :class:`RunOptions` one per execution option; both are
generated from the table, so a new option is added in one place. Construction validates every
field with the table's check (before any work is done).
"""

from __future__ import annotations

import os
from dataclasses import asdict, field, make_dataclass, replace
from typing import Any

import torch

from sai_attack import options
from sai_attack import superpixels as sp
from sai_attack.attacks import ATTACKS, MASKS, SPACES, Attack
from sai_attack.attacks.masks import make_mask
from sai_attack.attacks.spaces import make_space
from sai_attack.attacks.transforms import (
    DefenseSampler,
    InputDiversity,
    InputTransform,
    TranslationInvariance,
)
from sai_attack.defenses import expand_defense_spec

CONFIG_GROUPS = ("attack", "superpixels", "attention", "model")
"""Option groups that shape the results: the fields of :class:`AttackConfig`."""

COMMON_PARAMETERS = (
    "delta", "steps", "loss", "targeted", "budget", "seed", "norm", "optimizer", "momentum",
    "random_start", "eot_samples",
)  # fmt: skip
"""Parameters every attack takes."""


def _fields(groups: tuple[str, ...]) -> list[tuple[str, Any, Any]]:
    return [(o.name, o.type | None if o.nullable else o.type, field(default=o.default))
            for o in options.in_group(*groups)]  # fmt: skip


def _check_all(self: Any, groups: tuple[str, ...]) -> None:
    for option in options.in_group(*groups):
        setattr(self, option.name, option.check(getattr(self, option.name)))


def _config_post_init(self: Any) -> None:
    if self.n_segments is not None and self.superpixel_size is None:
        # dataclasses.replace() re-validates a config whose count already replaced the size
        self.superpixel_size = options.default("superpixel_size")
    _check_all(self, CONFIG_GROUPS)
    if self.n_segments is not None:
        self.superpixel_size = None  # the count replaces the size
    if self.budget is None:
        self.budget = ATTACKS[self.method].default_budget
    if self.fallback_loss == "auto":
        self.fallback_loss = "cw" if self.norm == "linf" else "none"
    if self.texture_weight and not SPACES[_space_name(self)].uses_superpixels:
        raise ValueError(
            f"texture_weight {self.texture_weight:g} needs a superpixel space, got space "
            f"{_space_name(self)!r}"
        )
    _transforms(self)  # a bad eot spec or TI kernel fails here, before any work


def _eot_groups(spec: str) -> list[list]:
    groups = []
    for word in spec.split():
        try:
            groups.append(expand_defense_spec(word))
        except ValueError as exc:
            raise ValueError(f"eot {word!r}: {exc}") from None
    return groups


def _transforms(self: Any) -> list[InputTransform]:
    """The attack's transform chain: TI (smooths the whole gradient), EoT, then DI."""
    chain: list[InputTransform] = []
    if self.translation_invariance:
        chain.append(TranslationInvariance(self.translation_invariance))
    if self.eot and self.eot.split():
        chain.append(DefenseSampler(_eot_groups(self.eot), " ".join(self.eot.split())))
    if self.input_diversity > 0:
        chain.append(InputDiversity(self.input_diversity, self.diversity_ratio))
    return chain


def _attack_class(self: Any) -> type[Attack]:
    return ATTACKS[self.method]


def _superpixel_config(self: Any) -> sp.SuperpixelConfig:
    return sp.SuperpixelConfig(
        self.superpixel, self.superpixel_size, self.n_segments, self.compactness, self.merge_beta
    )


def _space_name(self: Any) -> str:
    return self.space or ATTACKS[self.method].space_name


def _uses_attention(self: Any) -> bool:
    return MASKS[self.mask or ATTACKS[self.method].mask_name].uses_attention and self.phi > 0


def _build_attack(self: Any, model: torch.nn.Module) -> Attack:
    kwargs = {name: getattr(self, name) for name in COMMON_PARAMETERS}
    kwargs["space"] = make_space(
        _space_name(self), self.superpixel_config(), self.grad_mode,
        texture_weight=self.texture_weight,
    )  # fmt: skip
    kwargs["mask"] = make_mask(
        self.mask or ATTACKS[self.method].mask_name, self.phi, self.attention, self.align_mask
    )
    kwargs["transforms"] = _transforms(self)
    return ATTACKS[self.method](model, **kwargs)


def _fallback(self: Any) -> Any | None:
    """The settings of the fallback attack (loss ``fallback_loss``, budget within), or None.

    The re-attack projects into the ball instead of rescaling onto its surface: under L-infinity
    the superpixel methods' ``exact`` protocol keeps every attended superpixel at +-delta, which
    is the constraint the margin loss needs to drop to fool the last images.
    """
    if self.fallback_loss == "none" or (
        self.fallback_loss == self.loss and self.budget == "within"
    ):
        return None  # the re-attack would repeat the attack
    return replace(self, loss=self.fallback_loss, budget="within", fallback_loss="none")


def _record(self: Any) -> dict[str, Any]:
    return asdict(self)


AttackConfig = make_dataclass(
    "AttackConfig",
    _fields(CONFIG_GROUPS),
    namespace={
        "__doc__": "Every parameter of an attack run (one field per option of the table, same "
        "name and default), validated on construction. ``budget`` is resolved to the method's "
        "protocol when not given.",
        "__post_init__": _config_post_init,
        "attack_class": property(_attack_class, doc="The attack class of ``method``."),
        "uses_superpixels": property(
            lambda self: SPACES[_space_name(self)].uses_superpixels,
            doc="Whether the run's perturbation space needs superpixel templates.",
        ),
        "uses_attention": property(
            _uses_attention, doc="Whether the run's mask needs attention maps (phi > 0)."
        ),
        "superpixel_config": _superpixel_config,
        "build_attack": _build_attack,
        "fallback": _fallback,
        "record": _record,
    },
)
AttackConfig.__module__ = __name__


def _amp_dtype(self: Any, device: torch.device) -> torch.dtype | None:
    if not self.amp:
        return None
    return torch.float16 if device.type == "cuda" else torch.bfloat16


def _apply_determinism(self: Any) -> None:
    if self.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False


RunOptions = make_dataclass(
    "RunOptions",
    [*_fields(("execution",)), ("progress", bool | None, field(default=None))],
    namespace={
        "__doc__": "How a run executes (does not change its results): one field per execution "
        "option of the table, plus ``progress`` (None: a progress bar when stderr is a "
        "terminal).",
        "__post_init__": lambda self: _check_all(self, ("execution",)),
        "amp_dtype": _amp_dtype,
        "apply_determinism": _apply_determinism,
    },
)
RunOptions.__module__ = __name__
