"""Guards shared by the attacks: gradients whatever the caller's grad mode, and sane budgets.

* :func:`needs_grad` wraps an attack's ``_generate``: it runs with gradients enabled even
  when the caller is inside ``torch.no_grad()`` or ``torch.inference_mode()`` (tensors made
  under inference mode cannot enter autograd, so they are cloned outside it first).
* :func:`linf_eps_param` / :func:`check_linf_eps`: an l_inf bound in pixel units ([0, 1])
  cannot exceed 1; ``eps=8`` (a 0-255 habit) is refused with a hint (``8/255``).
* :func:`check_norm_budget`: an l_p bound larger than the largest l_p distance between two
  images in [0, 1] (``(C*H*W) ** (1/p)``) can never bind; refused at generate time.
"""
from __future__ import annotations

import math
import numbers
from typing import Any

import torch

from ..exceptions import ParameterError
from ..gradmode import autograd_ready, needs_grad
from ..params import Param

__all__ = ["needs_grad", "autograd_ready", "linf_eps_param", "check_linf_eps", "is_linf", "check_norm_budget"]

_LINF_EXPECTED = "a number <= 1 (pixels are in [0, 1])"


# ---------------------------------------------------------------------------- gradients
# ---------------------------------------------------------------------------- budgets
def _linf_hint(value: Any) -> str | None:
    if isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value) and value > 1:
        return f"Did you mean {value:g}/255 = {value / 255:.4f}?"
    return None


def check_linf_eps(owner: str, name: str, value: Any) -> None:
    """Raise :class:`ParameterError` for an l_inf bound above 1 (with the ``/255`` hint)."""
    hint = _linf_hint(value)
    if hint is not None:
        raise ParameterError(owner, name, value, _LINF_EXPECTED, hint)


class _LinfEps(Param):
    """A :class:`Param` whose out-of-range message suggests ``value/255``."""

    def validate(self, owner: str, name: str, value: Any) -> Any:
        check_linf_eps(owner, name, value)
        return super().validate(owner, name, value)


def linf_eps_param(default: float, low_open: bool = False, doc: str = "") -> Param:
    """An l_inf bound in pixel units: a finite number in [0, 1] (``(0, 1]`` when ``low_open``).

    Values above 1 get :func:`check_linf_eps`'s message; the others the usual
    ``expected a finite number >= 0.0``."""
    base = Param.number(default, low=0.0, high=1.0, low_open=low_open, doc=doc)
    lower = Param.number(default, low=0.0, low_open=low_open)
    return _LinfEps(default, base.check, lower.expected, doc, base.invalid + (8,))


def is_linf(norm: Any) -> bool:
    """ART's ``norm`` spellings of l_inf (``"inf"``, ``np.inf``)."""
    return norm == "inf" or norm == math.inf


def check_norm_budget(owner: str, eps: float, norm: Any, shape: tuple[int, ...]) -> None:
    """Refuse an l_p bound (finite ``p``) that can never bind on images of ``shape`` ``(N, C, H, W)``
    or ``(C, H, W)``: larger than ``(C*H*W) ** (1/p)``, the l_p distance between an all-0 and
    an all-1 image."""
    if is_linf(norm):
        return
    c, h, w = (int(s) for s in shape[-3:])
    bound = (c * h * w) ** (1.0 / float(norm))
    if eps > bound:
        raise ParameterError(owner, "eps", eps,
                             f"a number <= {bound:.4g} for norm={norm} on {c}x{h}x{w} images",
                             f"No two images in [0, 1] of this size are farther apart than {bound:.4g} in l{norm:g}, "
                             "so this bound never binds.")
