"""M-SAI-FGM: SAI-FGM with momentum (Dong et al., CVPR 2020, Eq. 5)."""

from __future__ import annotations

from sai_attack.attacks.saifgm import SAIFGM


class MSAIFGM(SAIFGM):
    """SAI-FGM whose noise update accumulates momentum (paper Eq. 5).

    Preset: the superpixel space, the attention mask, the momentum rule. The update is::

        g_{i+1} = mu * g_i + grad_n L / ||grad_n L||_1
        n_{i+1} = n_i + alpha * g_{i+1} / ||g_{i+1}||_2

    Args:
        model: The classifier.
        momentum: The decay factor mu (paper: 1.0).
        **kwargs: As :class:`~sai_attack.attacks.saifgm.SAIFGM`.
    """

    name = "m-sai-fgm"
    title = "M-SAI-FGM"
    optimizer_name = "momentum"
