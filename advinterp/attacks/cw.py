"""``cw_l2``: the Carlini & Wagner (2017) L2 attack, batched and pure PyTorch.

ART's ``CarliniL2Method`` drives the model from numpy, one class gradient per distinct label
and a line search per step (ART issue 1060: slow). This version runs the original algorithm
on whole batches on the model's device:

* change of variables ``x_adv = (tanh(w) + 1) / 2`` (box constraint for free); with a support
  mask, ``x_adv = x + mask * ((tanh(w) + 1) / 2 - x)``;
* objective per image ``||x_adv - x||_2^2 + c * f(x_adv)`` with the margin loss
  :func:`cw_loss` (``f = max(max_{j != t} Z_j - Z_t, -kappa)`` targeted,
  ``max(Z_y - max_{j != y} Z_j, -kappa)`` untargeted), minimised over ``w`` by Adam;
* per-image binary search over ``c`` (:func:`update_const`), keeping the successful iterate
  (margin beyond ``kappa``, :func:`cw_success`) with the smallest L2 over all steps.

The functional core :func:`carlini_l2` works on any differentiable ``logits_fn``; the
registered :class:`CarliniL2` wraps it.
"""
from __future__ import annotations

from typing import Callable

import torch

from ..components import Attack
from ..params import Param
from .guards import needs_grad

__all__ = ["CarliniL2", "carlini_l2", "snap_to_clean", "cw_loss", "cw_success", "cw_objective", "to_tanh_space",
           "from_tanh_space", "update_const"]

#: Initial upper bound of the binary search over ``c`` ("infinity" in the original code).
C_UPPER = 1e10
_TANH_CLAMP = 1e-6


# ---------------------------------------------------------------------------- pieces
def _margin(logits: torch.Tensor, labels: torch.Tensor, targeted: bool) -> torch.Tensor:
    """``max_{j != l} Z_j - Z_l`` (targeted) or ``Z_l - max_{j != l} Z_j`` (untargeted)."""
    z_l = logits.gather(1, labels[:, None])[:, 0]
    other = logits.masked_fill(torch.nn.functional.one_hot(labels, logits.shape[1]).bool(),
                               float("-inf")).amax(1)
    return other - z_l if targeted else z_l - other


def cw_loss(logits: torch.Tensor, labels: torch.Tensor, confidence: float = 0.0,
            targeted: bool = False) -> torch.Tensor:
    """The C&W margin loss ``f`` per image, ``(N,)``.

    Targeted (``labels`` = targets t): ``max(max_{j != t} Z_j - Z_t, -confidence)``.
    Untargeted (``labels`` = true y): ``max(Z_y - max_{j != y} Z_j, -confidence)``.
    (ART writes it ``max(... + confidence, 0)``: the same up to the constant ``confidence``.)
    """
    return _margin(logits, labels, targeted).clamp_min(-float(confidence))


def cw_success(logits: torch.Tensor, labels: torch.Tensor, confidence: float = 0.0,
               targeted: bool = False) -> torch.Tensor:
    """``(N,)`` bool: adversarial with margin ``confidence`` (the original code's ``compare``):
    targeted ``Z_t - confidence > max_{j != t} Z_j``; untargeted
    ``max_{j != y} Z_j > Z_y + confidence``."""
    return _margin(logits, labels, targeted) < -float(confidence)


def to_tanh_space(x: torch.Tensor) -> torch.Tensor:
    """``w = arctanh(2 x - 1)`` with ``x`` clamped to ``[1e-6, 1 - 1e-6]`` (finite ``w``,
    non-zero gradient at saturated pixels)."""
    return torch.atanh(2 * x.clamp(_TANH_CLAMP, 1 - _TANH_CLAMP) - 1)


def from_tanh_space(w: torch.Tensor) -> torch.Tensor:
    """``(tanh(w) + 1) / 2``: pixels in [0, 1]."""
    return (torch.tanh(w) + 1) / 2


def _x_adv(w: torch.Tensor, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    img = from_tanh_space(w)
    return img if mask is None else x + mask * (img - x)


def cw_objective(logits_fn: Callable[[torch.Tensor], torch.Tensor], w: torch.Tensor, x: torch.Tensor,
                 labels: torch.Tensor, const: torch.Tensor | float, confidence: float = 0.0,
                 targeted: bool = False, mask: torch.Tensor | None = None):
    """The objective :func:`carlini_l2` minimises over ``w``, per image.

    Returns ``(loss, x_adv, logits, l2)``: ``loss = l2 + const * cw_loss(logits)`` ``(N,)``,
    with ``l2 = ||x_adv - x||_2^2`` and ``x_adv`` from ``w`` (masked if ``mask`` is given).
    """
    x_adv = _x_adv(w, x, mask)
    logits = logits_fn(x_adv)
    l2 = (x_adv - x).pow(2).flatten(1).sum(1)
    const = torch.as_tensor(const, dtype=l2.dtype, device=l2.device)
    return l2 + const * cw_loss(logits, labels, confidence, targeted), x_adv, logits, l2


def update_const(const: torch.Tensor, lower: torch.Tensor, upper: torch.Tensor,
                 success: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One binary-search update of ``c`` per image (Carlini & Wagner's reference code).

    Success: ``upper = min(upper, c)``, ``c = (lower + upper) / 2``. Failure:
    ``lower = max(lower, c)``, then ``c = (lower + upper) / 2`` if an upper bound is known
    (``upper < 1e9``), else ``c * 10``. Returns ``(c, lower, upper)``.
    """
    upper = torch.where(success, torch.minimum(upper, const), upper)
    lower = torch.where(success, lower, torch.maximum(lower, const))
    const = torch.where(success | (upper < 1e9), (lower + upper) / 2, const * 10)
    return const, lower, upper


def _expand(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return v.view(-1, *([1] * (like.ndim - 1)))


# ---------------------------------------------------------------------------- the attack
def carlini_l2(logits_fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, labels: torch.Tensor, *,
               targeted: bool = False, confidence: float = 1.0, learning_rate: float = 0.01,
               binary_search_steps: int = 10, max_iter: int = 10, initial_const: float = 0.01,
               batch_size: int = 128, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Carlini & Wagner L2 on a batch; returns ``x_adv`` (``x`` itself where no iterate
    was ever successful).

    Args:
        logits_fn: differentiable map from pixels in [0, 1] ``(N, C, H, W)`` to logits ``(N, K)``.
        x: clean pixels in [0, 1].
        labels: targets (``targeted``) or true labels, ``(N,)``.
        mask: ``None`` or a 0/1 tensor broadcastable to ``x`` per image (``(N, 1|C, H, W)``):
            the perturbation is 0 where it is 0.
        batch_size: images optimised together (chunks of ``x``).

    Each binary-search step restarts from ``x`` with a fresh Adam state, runs ``max_iter``
    Adam steps and evaluates every iterate (the last one included).
    """
    x = x.detach()
    out = x.clone()
    for i in range(0, len(x), batch_size):
        sl = slice(i, i + batch_size)
        out[sl] = _cw_batch(logits_fn, x[sl], labels[sl], None if mask is None else mask[sl], targeted,
                            float(confidence), float(learning_rate), int(binary_search_steps), int(max_iter),
                            float(initial_const))
    return out


def _cw_batch(logits_fn, x, labels, mask, targeted, confidence, lr, steps, max_iter, initial_const):
    n, dev, dt = len(x), x.device, x.dtype
    w0 = to_tanh_space(x)
    const = torch.full((n,), initial_const, device=dev, dtype=dt)
    lower = torch.zeros(n, device=dev, dtype=dt)
    upper = torch.full((n,), C_UPPER, device=dev, dtype=dt)
    best_l2 = torch.full((n,), float("inf"), device=dev, dtype=dt)
    best = x.clone()

    def record(x_adv, logits, l2):
        nonlocal best, best_l2
        ok = cw_success(logits, labels, confidence, targeted)
        better = ok & (l2 < best_l2)
        best_l2 = torch.where(better, l2, best_l2)
        best = torch.where(_expand(better, x), x_adv, best)
        return ok

    for _ in range(steps):
        w = w0.clone().requires_grad_(True)
        opt = torch.optim.Adam([w], lr=lr)
        succeeded = torch.zeros(n, dtype=torch.bool, device=dev)
        for _ in range(max_iter):
            with torch.enable_grad():
                loss, x_adv, logits, l2 = cw_objective(logits_fn, w, x, labels, const, confidence, targeted, mask)
                (grad,) = torch.autograd.grad(loss.sum(), w)
            with torch.no_grad():
                succeeded |= record(x_adv.detach(), logits.detach(), l2.detach())
            w.grad = grad
            opt.step()
        with torch.no_grad():  # the last iterate
            _, x_adv, logits, l2 = cw_objective(logits_fn, w.detach(), x, labels, const, confidence, targeted, mask)
            succeeded |= record(x_adv, logits, l2)
        const, lower, upper = update_const(const, lower, upper, succeeded)
    return snap_to_clean(best, x)


def snap_to_clean(x_adv: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``x_adv`` with the entries that differ from ``x`` only by the tanh round trip (the
    clamp to ``[1e-6, 1 - 1e-6]`` plus float rounding) set to exactly ``x``: an image the
    attack did not change (e.g. already misclassified) comes back as ``x`` itself, and l0
    counts only the entries the attack really moved."""
    tol = 2 * _TANH_CLAMP + 8 * torch.finfo(x.dtype).eps
    return torch.where((x_adv - x).abs() <= tol, x, x_adv)


class CarliniL2(Attack):
    """Carlini & Wagner (2017) L2 attack, batched native PyTorch (ART's parameter names).

    Parameters (ART ``CarliniL2Method`` names): ``confidence`` (kappa, default **1.0**, the
    PSE paper's setting; ART's default is 0), ``targeted`` (False), ``learning_rate`` (0.01,
    Adam on the tanh variable w), ``binary_search_steps`` (10), ``max_iter`` (10, Adam steps
    per binary-search step), ``initial_const`` (0.01, the first trade-off ``c``),
    ``batch_size`` (128 images optimised together).

    Minimises ``||x_adv - x||_2^2 + c * max(max_{j != t} Z_j - Z_t, -kappa)`` (targeted;
    untargeted ``max(Z_y - max_{j != y} Z_j, -kappa)``) over ``x_adv = (tanh(w) + 1) / 2``
    with Adam, binary search on ``c`` per image; returns the smallest-L2 iterate that was
    adversarial with margin kappa, or ``x`` itself for images never successful or not
    changed (entries moved by no more than the tanh round trip, ~1e-6, are exactly ``x``). Supports a
    mask (``delta = 0`` outside it). Unlike ART there is no line search (``max_halving`` /
    ``max_doubling``): Adam, as in the original paper.
    """

    name = "cw_l2"
    supports_mask = True
    params = {
        "confidence": Param.number(1.0, low=0.0, doc="kappa: margin of the adversarial logit (PSE paper: 1)"),
        "targeted": Param.boolean(False),
        "learning_rate": Param.number(0.01, low=0.0, low_open=True, doc="Adam step size on w"),
        "binary_search_steps": Param.integer(10, low=1, doc="binary-search steps over c"),
        "max_iter": Param.integer(10, low=1, doc="Adam steps per binary-search step"),
        "initial_const": Param.number(0.01, low=0.0, low_open=True, doc="initial trade-off constant c"),
        "batch_size": Param.integer(128, low=1, doc="images optimised together"),
    }
    conformance_params = {"max_iter": 3, "binary_search_steps": 2, "learning_rate": 0.05, "batch_size": 3}

    @needs_grad
    def _generate(self, model, x, y, target, mask=None):
        return carlini_l2(model.logits, x, target if self.targeted else y, targeted=self.targeted,
                          confidence=self.confidence, learning_rate=self.learning_rate,
                          binary_search_steps=self.binary_search_steps, max_iter=self.max_iter,
                          initial_const=self.initial_const, batch_size=self.batch_size, mask=mask)
