"""``ead``: Elastic-net attack (Chen et al., 2018), batched and pure PyTorch.

EAD minimises ``c * f(x_adv) + ||x_adv - x||_2^2 + beta * ||x_adv - x||_1`` with FISTA: a
gradient step on the smooth part ``c * f + ||.||_2^2`` (``f`` = the C&W margin loss
:func:`~advinterp.attacks.cw.cw_loss`) at the slack point ``y``, then the projected
shrinkage-thresholding :func:`projected_shrinkage` (the proximal operator of
``beta * ||.||_1`` plus the [0, 1] box), then the momentum step
``y <- x_{k+1} + k / (k + 3) * (x_{k+1} - x_k)``. The step size decays as
``lr * (1 - k / max_iter) ** 0.5`` (the reference implementation's polynomial decay).
Per image, the binary search over ``c`` is the C&W one
(:func:`~advinterp.attacks.cw.update_const`) and the kept example is the successful iterate
with the smallest distance under ``decision_rule`` (``"EN"``: ``l2^2 + beta * l1``; ``"L1"``;
``"L2"``: ``l2^2``).

As in the reference code (and ART) the shrinkage threshold is ``beta`` itself, not
``step * beta``. Unlike ART's ``ElasticNet``, an iterate counts as successful only with the
``confidence`` margin (:func:`~advinterp.attacks.cw.cw_success`, the reference code's
``compare``), and the l2 gradient is kept once the margin is reached (ART zeroes the whole
gradient of such an image).
"""
from __future__ import annotations

from typing import Callable

import torch

from ..components import Attack
from ..params import Param
from .guards import needs_grad
from .cw import C_UPPER, _expand, cw_loss, cw_success, update_const

__all__ = ["ElasticNet", "elastic_net", "projected_shrinkage"]


def projected_shrinkage(z: torch.Tensor, x0: torch.Tensor, beta: float) -> torch.Tensor:
    """The element-wise projected shrinkage-thresholding ``S_beta`` of EAD (eq. 6):

    ``min(z - beta, 1)`` where ``z - x0 > beta``; ``x0`` where ``|z - x0| <= beta``;
    ``max(z + beta, 0)`` where ``z - x0 < -beta``.
    """
    d = z - x0
    return torch.where(d > beta, (z - beta).clamp_max(1.0),
                       torch.where(d < -beta, (z + beta).clamp_min(0.0), x0))


def _distances(x_adv: torch.Tensor, x: torch.Tensor, beta: float):
    d = (x_adv - x).flatten(1)
    l1 = d.abs().sum(1)
    l2 = d.pow(2).sum(1)
    return l1, l2, l2 + beta * l1


def elastic_net(logits_fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, labels: torch.Tensor, *,
                targeted: bool = False, confidence: float = 1.0, learning_rate: float = 0.01,
                binary_search_steps: int = 9, max_iter: int = 100, beta: float = 0.001,
                initial_const: float = 0.001, decision_rule: str = "EN", batch_size: int = 128,
                mask: torch.Tensor | None = None) -> torch.Tensor:
    """EAD on a batch; returns ``x_adv`` (``x`` itself where no iterate was successful).

    Args as :func:`~advinterp.attacks.cw.carlini_l2`; ``beta`` weighs the L1 term and
    ``decision_rule`` picks the distance used to keep the best iterate. ``mask``: the
    update is multiplied by it, so ``delta`` stays exactly 0 where it is 0.
    """
    if decision_rule not in ("EN", "L1", "L2"):
        raise ValueError(f"decision_rule must be 'EN', 'L1' or 'L2', not {decision_rule!r}")
    x = x.detach()
    out = x.clone()
    for i in range(0, len(x), batch_size):
        sl = slice(i, i + batch_size)
        out[sl] = _ead_batch(logits_fn, x[sl], labels[sl], None if mask is None else mask[sl], targeted,
                             float(confidence), float(learning_rate), int(binary_search_steps), int(max_iter),
                             float(beta), float(initial_const), decision_rule)
    return out


def _ead_batch(logits_fn, x, labels, mask, targeted, confidence, lr, steps, max_iter, beta, initial_const, rule):
    n, dev, dt = len(x), x.device, x.dtype
    const = torch.full((n,), initial_const, device=dev, dtype=dt)
    lower = torch.zeros(n, device=dev, dtype=dt)
    upper = torch.full((n,), C_UPPER, device=dev, dtype=dt)
    best_dist = torch.full((n,), float("inf"), device=dev, dtype=dt)
    best = x.clone()
    pick = {"L1": 0, "L2": 1, "EN": 2}[rule]
    for _ in range(steps):
        cur, slack = x.clone(), x.clone()
        succeeded = torch.zeros(n, dtype=torch.bool, device=dev)
        for k in range(max_iter):
            step = lr * (1 - k / max_iter) ** 0.5
            with torch.enable_grad():
                s = slack.requires_grad_(True)
                smooth = const * cw_loss(logits_fn(s), labels, confidence, targeted) + \
                    (s - x).pow(2).flatten(1).sum(1)
                (grad,) = torch.autograd.grad(smooth.sum(), s)
            with torch.no_grad():
                upd = step * grad if mask is None else step * grad * mask
                nxt = projected_shrinkage(slack.detach() - upd, x, beta)
                slack = nxt + (k / (k + 3)) * (nxt - cur)
                cur = nxt
                ok = cw_success(logits_fn(cur), labels, confidence, targeted)
                dist = _distances(cur, x, beta)[pick]
                better = ok & (dist < best_dist)
                best_dist = torch.where(better, dist, best_dist)
                best = torch.where(_expand(better, x), cur, best)
                succeeded |= ok
        const, lower, upper = update_const(const, lower, upper, succeeded)
    return best


class ElasticNet(Attack):
    """Elastic-net attack EAD (Chen et al., 2018), batched native PyTorch (ART's names).

    Parameters (ART ``ElasticNet`` names): ``confidence`` (kappa, default **1.0**, the PSE
    paper's setting; ART's default is 0), ``targeted`` (False), ``learning_rate`` (0.01,
    initial FISTA step, decayed as ``(1 - k / max_iter) ** 0.5``), ``binary_search_steps``
    (9), ``max_iter`` (100), ``beta`` (0.001, the L1 weight), ``initial_const`` (0.001),
    ``batch_size`` (128), ``decision_rule`` (``"EN"``, ``"L1"`` or ``"L2"``: the distance
    that picks the best successful iterate).

    FISTA with projected shrinkage onto [0, 1]; binary search over ``c`` per image; returns
    ``x`` itself for images never adversarial with margin kappa. Supports a mask (the
    update is multiplied by it: ``delta = 0`` outside). Sparser than ``cw_l2`` (smaller L0/L1).
    """

    name = "ead"
    supports_mask = True
    params = {
        "confidence": Param.number(1.0, low=0.0, doc="kappa: margin of the adversarial logit (PSE paper: 1)"),
        "targeted": Param.boolean(False),
        "learning_rate": Param.number(0.01, low=0.0, low_open=True, doc="initial FISTA step size"),
        "binary_search_steps": Param.integer(9, low=1, doc="binary-search steps over c"),
        "max_iter": Param.integer(100, low=1, doc="FISTA iterations per binary-search step"),
        "beta": Param.number(0.001, low=0.0, doc="weight of the L1 term (shrinkage threshold)"),
        "initial_const": Param.number(0.001, low=0.0, low_open=True, doc="initial trade-off constant c"),
        "batch_size": Param.integer(128, low=1, doc="images optimised together"),
        "decision_rule": Param.choice("EN", ("EN", "L1", "L2"), doc="distance that selects the best iterate"),
    }
    conformance_params = {"max_iter": 3, "binary_search_steps": 2, "learning_rate": 0.05, "initial_const": 1.0,
                          "batch_size": 3}

    @needs_grad
    def _generate(self, model, x, y, target, mask=None):
        return elastic_net(model.logits, x, target if self.targeted else y, targeted=self.targeted,
                           confidence=self.confidence, learning_rate=self.learning_rate,
                           binary_search_steps=self.binary_search_steps, max_iter=self.max_iter, beta=self.beta,
                           initial_const=self.initial_const, decision_rule=self.decision_rule,
                           batch_size=self.batch_size, mask=mask)
