"""I-FGM: iterative fast gradient method in L2 (Kurakin et al., 2016)."""

from __future__ import annotations

import torch

from sai_attack.attacks.base import Attack, AttackResult, apply_budget, project


class IFGM(Attack):
    """Iterative L2 fast gradient method, the paper's pixel-wise baseline.

    ``x_{i+1} = clip(x + Proj_eps(x_i - x + alpha * g / ||g||_2))`` with ``alpha = eps / T``,
    starting from the clean image. Default budget protocol: ``within``. With ``norm="linf"``
    (I-FGSM): ``x_{i+1} = clip(x + clamp(x_i - x + alpha * sign(g), -eps, eps))``.

    Example:
        >>> atk = IFGM(model, delta=4, steps=10)  # doctest: +SKIP
        >>> adv = atk(images, labels)  # doctest: +SKIP
    """

    name = "ifgm"
    title = "I-FGM"

    def _run(self, images, labels, targets, superpixels, attention, mask, seeds) -> AttackResult:
        eps = self.eps_for(images)
        alpha = eps / self.steps
        r = torch.zeros_like(images)
        state: dict = {}
        for _ in range(self.steps):
            x_adv = (images + r).clamp(0, 1).requires_grad_(True)
            with torch.enable_grad():
                (grad,) = torch.autograd.grad(self.objective(x_adv, labels, targets), x_adv)
            if mask is not None:
                grad = grad * mask
            step = alpha * self.direction(grad, state)
            r = project(x_adv.detach() - images + step, eps, self.norm)
        if self.budget == "exact":
            r = apply_budget(r, eps, "exact", self.norm)
        adv = (images + r).clamp(0, 1)
        return AttackResult(adv=adv, perturbation=adv - images, eps=eps, mask=mask)
