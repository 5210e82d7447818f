"""The attacks: pixel-wise baselines and their superpixel-guided attentional versions.

``ATTACKS`` maps CLI names to classes; every class follows ``adv = Attack(model, ...)(x, y)``.
"""

from sai_attack import options
from sai_attack.attacks.base import (
    BUDGETS,
    LOSSES,
    Attack,
    AttackResult,
    delta_eff,
    epsilon,
    l2_norm,
)
from sai_attack.attacks.fgm import FGM
from sai_attack.attacks.ifgm import IFGM
from sai_attack.attacks.mifgm import MIFGM
from sai_attack.attacks.msaifgm import MSAIFGM
from sai_attack.attacks.safgm import SAFGM
from sai_attack.attacks.saifgm import GRAD_MODES, SAIFGM

ATTACKS: dict[str, type[Attack]] = {
    "fgm": FGM,
    "ifgm": IFGM,
    "mifgm": MIFGM,
    "sa-fgm": SAFGM,
    "sai-fgm": SAIFGM,
    "m-sai-fgm": MSAIFGM,
}
"""Attack classes by CLI name."""
options.register_choices("method", ATTACKS)

METHOD_NAMES: dict[str, str] = {name: cls.title for name, cls in ATTACKS.items()}
"""Display names (the paper's) by CLI name."""

DEFAULT_METHOD = options.default("method")

__all__ = [
    "ATTACKS",
    "BUDGETS",
    "DEFAULT_METHOD",
    "FGM",
    "GRAD_MODES",
    "IFGM",
    "LOSSES",
    "METHOD_NAMES",
    "MIFGM",
    "MSAIFGM",
    "SAFGM",
    "SAIFGM",
    "Attack",
    "AttackResult",
    "delta_eff",
    "epsilon",
    "l2_norm",
]
