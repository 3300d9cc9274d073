"""``fgsm``: the fast gradient sign method (Goodfellow et al., 2015; ART's
``FastGradientMethod`` with ``norm=inf``)."""
from __future__ import annotations

from ..components import Attack
from ..params import Param
from .guards import linf_eps_param, needs_grad
from .pgd_core import pgd_linf


class FGSM(Attack):
    """One signed-gradient step of size ``eps``, clipped to [0, 1]:
    ``x' = clip_[0,1](x + s * eps * sign(grad_x CE(x, y)))``, ``s = +1`` untargeted, ``-1``
    targeted (``y`` the target).

    Parameters (ART's ``FastGradientMethod`` names and defaults, ``norm=inf``): ``eps``
    (0.3), ``targeted`` (False). Pixel units ([0, 1]). Equal to ART's
    ``FastGradientMethod`` (tests/test_ifgsm.py).
    """

    name = "fgsm"
    params = {
        "eps": linf_eps_param(0.3, doc="l_inf step and bound in pixel units, at most 1"),
        "targeted": Param.boolean(False),
    }
    conformance_params = {"eps": 8 / 255}
    supports_mask = True

    @needs_grad
    def _generate(self, model, x, y, target, mask=None):
        if self.eps == 0:
            return x.detach().clone()
        return pgd_linf(model.logits, x, target if self.targeted else y, self.eps, self.eps, 1,
                        targeted=self.targeted, random_init=False, mask=mask)
