"""``pgd``: projected gradient descent under an l_inf bound (Madry et al., 2018)."""
from __future__ import annotations

import torch

from ..components import Attack
from ..params import Param
from .guards import linf_eps_param, needs_grad
from .pgd_core import pgd_linf


class PGD(Attack):
    """Projected gradient descent, l_inf (native PyTorch; ART's names and defaults).

    Parameters: ``eps`` (0.3), ``eps_step`` (0.1), ``max_iter`` (100), ``targeted`` (False),
    ``num_random_init`` (0 or 1: start from a random point of the eps-ball), ``seed`` (0,
    the random start's seed). Pixel units ([0, 1]).
    """

    name = "pgd"
    params = {
        "eps": linf_eps_param(0.3, doc="l_inf bound in pixel units, at most 1 (8/255 for a 0-255 budget of 8)"),
        "eps_step": Param.number(0.1, low=0.0, low_open=True, doc="step size"),
        "max_iter": Param.integer(100, low=0, doc="number of steps"),
        "targeted": Param.boolean(False),
        "num_random_init": Param.integer(0, low=0, high=1, doc="1: uniform random start in the ball"),
        "seed": Param.integer(0, low=0, allow_none=True, doc="seed of the random start"),
    }
    conformance_params = {"eps": 8 / 255, "eps_step": 2 / 255, "max_iter": 3, "num_random_init": 1}
    supports_mask = True

    @needs_grad
    def _generate(self, model, x, y, target, mask=None):
        g = torch.Generator().manual_seed(self.seed) if self.seed is not None else None
        return pgd_linf(model.logits, x, target if self.targeted else y, self.eps, self.eps_step, self.max_iter,
                        targeted=self.targeted, random_init=bool(self.num_random_init), generator=g, mask=mask)
