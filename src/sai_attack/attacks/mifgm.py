"""MI-FGM: momentum iterative fast gradient method in L2 (Dong et al., CVPR 2018)."""

from __future__ import annotations

from sai_attack.attacks.ifgm import IFGM


class MIFGM(IFGM):
    """I-FGM with momentum: ``g_{i+1} = mu g_i + grad / ||grad||_1``, step along ``g / ||g||_2``.

    Preset: the pixel space, no mask, the momentum rule.

    Args:
        model: The classifier.
        momentum: The decay factor mu (paper: 1.0).
        **kwargs: As :class:`~sai_attack.attacks.base.Attack`.
    """

    name = "mifgm"
    title = "MI-FGM"
    optimizer_name = "momentum"
