"""FGM: the one-step L2 fast gradient method (Goodfellow et al., ICLR 2015)."""

from __future__ import annotations

from sai_attack.attacks.ifgm import IFGM


class FGM(IFGM):
    """One step of size eps along the L2-normalised gradient: ``x + eps * g / ||g||_2``.

    Preset: the pixel space, no mask, the one-step rule. With ``norm="linf"`` this is FGSM:
    ``x + eps * sign(g)``. The ``steps`` argument is ignored (always 1).
    """

    name = "fgm"
    title = "FGM"
    optimizer_name = "one-step"
