"""Projected gradient descent under an l_inf bound (Madry et al., 2018), pure PyTorch.

This is the functional core; :class:`advinterp.attacks.pgd.PGD` is the registered
``Attack`` around it. Kept separate so training scripts can call it on a raw
``logits_fn`` without an adapter.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F


def pgd_linf(logits_fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, y: torch.Tensor,
             eps: float, eps_step: float, max_iter: int, targeted: bool = False,
             random_init: bool = True, generator: torch.Generator | None = None,
             mask: torch.Tensor | None = None) -> torch.Tensor:
    """Return ``x_adv`` with ``||x_adv - x||_inf <= eps`` and pixels in [0, 1].

    Args:
        logits_fn: maps ``(N, C, H, W)`` pixels in [0, 1] to ``(N, K)`` logits.
        x: ``(N, C, H, W)`` clean pixels in [0, 1].
        y: ``(N,)`` labels: the true labels (untargeted: cross-entropy is increased) or the
            targets (``targeted=True``: cross-entropy is decreased).
        eps, eps_step: the bound and the step size, in pixel units.
        max_iter: number of signed-gradient steps.
        random_init: start from a uniform point of the eps-ball.
        generator: torch generator for the random start (reproducibility).
        mask: ``None`` or a 0/1 tensor broadcastable to ``x`` (``(N, 1 or C, H, W)``): the
            support of a refined attack (eq. 11 of the PSE paper); ``delta`` is kept 0 where
            it is 0 -- the random start and every step are projected onto it, as onto the
            eps-ball, so the iterates are those of the attack restricted to the support.
    """
    x = x.detach()
    if random_init and eps > 0:
        noise = torch.rand(x.shape, generator=generator, device="cpu" if generator is None else generator.device,
                           dtype=x.dtype).to(x.device)
        x_adv = (x + (2 * noise - 1) * eps).clamp_(0, 1)
        if mask is not None:
            x_adv = x + (x_adv - x) * mask
    else:
        x_adv = x.clone()
    sign = -1.0 if targeted else 1.0
    for _ in range(int(max_iter)):
        x_adv.requires_grad_(True)
        loss = F.cross_entropy(logits_fn(x_adv), y, reduction="sum")
        (grad,) = torch.autograd.grad(loss, x_adv)
        with torch.no_grad():
            x_adv = x_adv + sign * eps_step * grad.sign()
            x_adv = torch.min(torch.max(x_adv, x - eps), x + eps).clamp_(0, 1)
            if mask is not None:
                x_adv = x + (x_adv - x) * mask
    return x_adv.detach()
