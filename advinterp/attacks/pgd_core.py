"""Projected gradient descent under an l_inf or l2 bound (Madry et al., 2018), pure PyTorch.

This is the functional core; :class:`advinterp.attacks.pgd.PGD` is the registered
``Attack`` around it. Kept separate so training scripts can call it on a raw
``logits_fn`` without an adapter.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F


def _loss_gradient(logits_fn: Callable[[torch.Tensor], torch.Tensor], x_adv: torch.Tensor,
                   y: torch.Tensor) -> torch.Tensor:
    """Gradient of the summed cross-entropy to ``y`` w.r.t. the iterate ``x_adv`` (one step of
    either PGD)."""
    x_adv = x_adv.detach().requires_grad_(True)
    loss = F.cross_entropy(logits_fn(x_adv), y, reduction="sum")
    (grad,) = torch.autograd.grad(loss, x_adv)
    return grad


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
        grad = _loss_gradient(logits_fn, x_adv, y)
        with torch.no_grad():
            x_adv = x_adv + sign * eps_step * grad.sign()
            x_adv = torch.min(torch.max(x_adv, x - eps), x + eps).clamp_(0, 1)
            if mask is not None:
                x_adv = x + (x_adv - x) * mask
    return x_adv.detach()


def pgd_l2(logits_fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, y: torch.Tensor,
           eps: float, eps_step: float, max_iter: int, targeted: bool = False,
           random_init: bool = True, generator: torch.Generator | None = None,
           mask: torch.Tensor | None = None) -> torch.Tensor:
    """Return ``x_adv`` with ``||x_adv - x||_2 <= eps`` (per image) and pixels in [0, 1].

    Each step is ART's ``ProjectedGradientDescentPyTorch(norm=2)`` step: the gradient of the
    cross-entropy (summed over the batch; the per-image direction is unchanged by the
    reduction) is normalised per image to unit l2 norm (a zero gradient gives no step),
    ``x_adv += +-eps_step * g / ||g||_2``, clipped to [0, 1], then ``delta = x_adv - x`` is
    projected onto the l2 ball by rescaling (``delta * min(1, eps / ||delta||_2)``).

    Args:
        logits_fn, x, y, targeted, generator: as in :func:`pgd_linf`.
        eps: the l2 bound of ``delta`` per image (pixel units, over all ``C*H*W`` values).
        eps_step: the l2 length of each step.
        max_iter: number of steps.
        random_init: start from a point drawn uniformly in the l2 ball of radius ``eps``
            (Gaussian direction, radius ``eps * U ** (1 / d)``, ``d = C*H*W``; ART's
            ``random_sphere``), times the mask, clipped to [0, 1].
        mask: ``None`` or a 0/1 tensor broadcastable to ``x``: the gradient is zeroed outside
            the support before normalisation (as ART does), so ``delta`` stays 0 there.
    """
    x = x.detach()
    n = x.shape[0]
    if random_init and eps > 0:
        d = x[0].numel()
        dev = "cpu" if generator is None else generator.device
        direction = torch.randn((n, d), generator=generator, device=dev, dtype=x.dtype)
        direction = direction / direction.norm(dim=1, keepdim=True).clamp_min(1e-12)
        radius = eps * torch.rand((n, 1), generator=generator, device=dev, dtype=x.dtype) ** (1.0 / d)
        delta = (direction * radius).view_as(x).to(x.device)
        if mask is not None:
            delta = delta * mask
        x_adv = (x + delta).clamp_(0, 1)
    else:
        x_adv = x.clone()
    sign = -1.0 if targeted else 1.0
    for _ in range(int(max_iter)):
        grad = _loss_gradient(logits_fn, x_adv, y)
        with torch.no_grad():
            if mask is not None:
                grad = grad * mask
            g2 = grad.flatten(1)
            gn = g2.norm(dim=1, keepdim=True)
            step = torch.where(gn > 0, g2 / gn.clamp_min(1e-30), torch.zeros_like(g2)).view_as(x)
            x_adv = (x_adv + sign * eps_step * step).clamp_(0, 1)
            delta = (x_adv - x).flatten(1)
            dn = delta.norm(dim=1, keepdim=True)
            scale = torch.where(dn > eps, eps / dn.clamp_min(1e-30), torch.ones_like(dn))
            x_adv = (x + (delta * scale).view_as(x)).clamp_(0, 1)
            if mask is not None:
                x_adv = x + (x_adv - x) * mask
    return x_adv.detach()
