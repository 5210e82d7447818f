"""SA-FGM: the one-step superpixel-guided attentional FGM (Dong et al., CVPR 2020)."""

from __future__ import annotations

from sai_attack.attacks.saifgm import SAIFGM


class SAFGM(SAIFGM):
    """:class:`~sai_attack.attacks.saifgm.SAIFGM` with a single step of size eps.

    Preset: the superpixel space, the attention mask, the one-step rule. The ``steps``
    argument is ignored (always 1).
    """

    name = "sa-fgm"
    title = "SA-FGM"
    optimizer_name = "one-step"
