"""I-FGM: iterative fast gradient method in L2 (Kurakin et al., 2016)."""

from __future__ import annotations

from sai_attack.attacks.base import Attack


class IFGM(Attack):
    """Iterative L2 fast gradient method, the paper's pixel-wise baseline.

    Preset: the pixel space, no mask, the iterative rule.
    ``x_{i+1} = clip(x + Proj_eps(x_i - x + alpha * g / ||g||_2))`` with ``alpha = eps / T``,
    starting from the clean image. Default budget protocol: ``within``. With ``norm="linf"``
    (I-FGSM): ``x_{i+1} = clip(x + clamp(x_i - x + alpha * sign(g), -eps, eps))``; with
    ``random_start=True`` as well, this is PGD (Madry et al., ICLR 2018).

    Example:
        >>> atk = IFGM(model, delta=4, steps=10)  # doctest: +SKIP
        >>> adv = atk(images, labels)  # doctest: +SKIP
    """

    name = "ifgm"
    title = "I-FGM"
