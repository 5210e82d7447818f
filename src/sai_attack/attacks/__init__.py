"""The attacks: composable parts, and the paper's six methods as presets of them.

``ATTACKS`` maps CLI names to preset classes; every attack follows
``adv = Attack(model, ...)(x, y)``. The parts combine freely:
``Attack(model, space=SuperpixelSpace(), mask=AttentionMask(), optimizer="nesterov",
norm="linf")``.
"""

from sai_attack import options
from sai_attack.attacks.base import LOSSES, Attack, AttackResult
from sai_attack.attacks.control_spaces import CONTROL_SPACES, DCTSpace, GaussianSpace
from sai_attack.attacks.fgm import FGM
from sai_attack.attacks.ifgm import IFGM
from sai_attack.attacks.masks import MASKS, AttentionMask, Mask
from sai_attack.attacks.mifgm import MIFGM
from sai_attack.attacks.msaifgm import MSAIFGM
from sai_attack.attacks.norms import BUDGETS, NORMS, delta_eff, epsilon, l2_norm
from sai_attack.attacks.optimizers import (
    OPTIMIZERS,
    Momentum,
    Nesterov,
    OneStep,
    Optimizer,
)
from sai_attack.attacks.safgm import SAFGM
from sai_attack.attacks.saifgm import SAIFGM
from sai_attack.attacks.spaces import GRAD_MODES, SPACES, PixelSpace, Space, SuperpixelSpace

ATTACKS: dict[str, type[Attack]] = {
    "fgm": FGM,
    "ifgm": IFGM,
    "mifgm": MIFGM,
    "sa-fgm": SAFGM,
    "sai-fgm": SAIFGM,
    "m-sai-fgm": MSAIFGM,
}
"""The paper's methods (presets) by CLI name."""
options.register_choices("method", ATTACKS)

SPACES.update(CONTROL_SPACES)  # the control experiment's spaces (dct, gaussian), by name
options.register_choices("space", SPACES)

METHOD_NAMES: dict[str, str] = {name: cls.title for name, cls in ATTACKS.items()}
"""Display names (the paper's) by CLI name."""

DEFAULT_METHOD = options.default("method")


def register_attack(name: str, cls: type[Attack]) -> None:
    """Add a user's attack class to ``ATTACKS`` so the pipeline, CLI options and reports know it.

    ``AttackConfig(method=name)`` and ``AttackRun`` then run it under the same protocol as the
    built-in methods (saved 8-bit images, the same checks and metrics).

    Raises:
        ValueError: ``name`` is already registered.
        TypeError: ``cls`` is not an :class:`Attack` subclass.
    """
    if not (isinstance(cls, type) and issubclass(cls, Attack)):
        raise TypeError(f"cls must be an Attack subclass, got {cls!r}")
    if name in ATTACKS:
        raise ValueError(f"method {name!r} is already registered")
    ATTACKS[name] = cls
    METHOD_NAMES[name] = cls.title
    options.register_choices("method", ATTACKS)


__all__ = [
    "ATTACKS",
    "BUDGETS",
    "CONTROL_SPACES",
    "DEFAULT_METHOD",
    "FGM",
    "GRAD_MODES",
    "IFGM",
    "LOSSES",
    "MASKS",
    "METHOD_NAMES",
    "MIFGM",
    "MSAIFGM",
    "NORMS",
    "OPTIMIZERS",
    "SAFGM",
    "SAIFGM",
    "SPACES",
    "Attack",
    "AttackResult",
    "AttentionMask",
    "DCTSpace",
    "GaussianSpace",
    "Mask",
    "Momentum",
    "Nesterov",
    "OneStep",
    "Optimizer",
    "PixelSpace",
    "Space",
    "SuperpixelSpace",
    "delta_eff",
    "epsilon",
    "l2_norm",
    "register_attack",
]
