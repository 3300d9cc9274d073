"""``pgd``: projected gradient descent under an l_inf or l2 bound (Madry et al., 2018)."""
from __future__ import annotations

import math
import numbers
from typing import Any

import torch

from ..components import Attack
from ..exceptions import ParameterError
from ..params import Param
from .guards import check_linf_eps, check_norm_budget, is_linf, needs_grad
from .pgd_core import pgd_l2, pgd_linf


def _norm_param() -> Param:
    """``norm``: ART's spellings of l_inf (``"inf"``, ``np.inf`` / ``float('inf')``) or ``2``."""
    def check(v: Any) -> bool:
        if isinstance(v, str):
            return v == "inf"
        if isinstance(v, bool) or not isinstance(v, numbers.Real):
            return False
        return v == math.inf or v == 2
    return Param("inf", check, '"inf", np.inf (float("inf")) or 2',
                 "norm of the bound: l_inf (signed-gradient steps) or l2 (normalised-gradient steps)",
                 ("l2", 1, None))


def _eps_param() -> Param:
    """``eps``: any finite number >= 0 here; :meth:`PGD._check_params` adds the norm's rule
    (l_inf: at most 1, with the ``/255`` hint; l2: > 0, any size)."""
    base = Param.number(0.3, low=0.0)
    return Param(0.3, base.check, base.expected,
                 "the bound in pixel units: l_inf at most 1 (8/255 for a 0-255 budget of 8); l2 > 0 (over "
                 "all C*H*W values, may exceed 1)", base.invalid + (8,))


class PGD(Attack):
    """Projected gradient descent, l_inf or l2 (native PyTorch; ART's names and defaults).

    Parameters: ``norm`` (``"inf"``; also ``np.inf`` or ``2``: ART's names), ``eps`` (0.3),
    ``eps_step`` (0.1), ``max_iter`` (100), ``targeted`` (False), ``num_random_init`` (0 or 1:
    start from a random point of the eps-ball), ``seed`` (0, the random start's seed). Pixel
    units ([0, 1]). ``norm="inf"``: :func:`~advinterp.attacks.pgd_core.pgd_linf` (signed
    gradient steps, ``eps`` at most 1); ``norm=2``:
    :func:`~advinterp.attacks.pgd_core.pgd_l2` (ART's l2 step: gradient normalised to unit l2
    norm, projection by rescaling; ``eps`` > 0, the l2 norm of ``delta`` over all ``C*H*W``
    values, so it may exceed 1, up to ``sqrt(C*H*W)``).
    """

    name = "pgd"
    params = {
        "norm": _norm_param(),
        "eps": _eps_param(),
        "eps_step": Param.number(0.1, low=0.0, low_open=True, doc="step size"),
        "max_iter": Param.integer(100, low=0, doc="number of steps"),
        "targeted": Param.boolean(False),
        "num_random_init": Param.integer(0, low=0, high=1, doc="1: uniform random start in the ball"),
        "seed": Param.integer(0, low=0, allow_none=True, doc="seed of the random start"),
    }
    conformance_params = {"eps": 8 / 255, "eps_step": 2 / 255, "max_iter": 3, "num_random_init": 1}
    supports_mask = True

    def _check_params(self) -> None:
        if is_linf(self.norm):
            check_linf_eps(type(self).__name__, "eps", self.eps)
        elif not self.eps > 0:
            raise ParameterError(type(self).__name__, "eps", self.eps, "a number > 0 for norm=2",
                                 "An l2 bound of 0 leaves the image unchanged; give the l2 radius of delta "
                                 "(e.g. 0.5 or 3.0: any size up to sqrt(C*H*W)).")

    @needs_grad
    def _generate(self, model, x, y, target, mask=None):
        g = torch.Generator().manual_seed(self.seed) if self.seed is not None else None
        if not is_linf(self.norm):
            check_norm_budget(type(self).__name__, self.eps, 2, tuple(x.shape))
            return pgd_l2(model.logits, x, target if self.targeted else y, self.eps, self.eps_step, self.max_iter,
                          targeted=self.targeted, random_init=bool(self.num_random_init), generator=g, mask=mask)
        return pgd_linf(model.logits, x, target if self.targeted else y, self.eps, self.eps_step, self.max_iter,
                        targeted=self.targeted, random_init=bool(self.num_random_init), generator=g, mask=mask)
