"""``ifgsm``: the iterative fast gradient sign method (Kurakin et al., 2017; ART's
``BasicIterativeMethod``), the first of the PSE paper's four attacks."""
from __future__ import annotations

from ..components import Attack
from .guards import linf_eps_param, needs_grad
from .pgd import PGD
from .pgd_core import pgd_linf


class IFGSM(Attack):
    """Iterative FGSM / BIM, l_inf: ``max_iter`` signed-gradient steps of ``eps_step`` from
    the clean image (no random start), each projected onto the ``eps``-ball and [0, 1].

    ``x_{i+1} = clip_[0,1](clip_{x, eps}(x_i + s * eps_step * sign(grad_x CE(x_i, y))))`` with
    ``s = +1`` untargeted (``y`` the true label), ``-1`` targeted (``y`` the target).

    Parameters (ART's ``BasicIterativeMethod`` names and defaults): ``eps`` (0.3),
    ``eps_step`` (0.1), ``max_iter`` (100), ``targeted`` (False). Pixel units ([0, 1]).
    Equal to ART's ``BasicIterativeMethod`` (tests/test_ifgsm.py).
    """

    name = "ifgsm"
    # PGD's l_inf parameters without its random start (IFGSM starts from the clean image)
    params = {"eps": linf_eps_param(0.3, doc="l_inf bound in pixel units, at most 1 (8/255 for a 0-255 budget of 8)"),
              **{k: PGD.params[k] for k in ("eps_step", "max_iter", "targeted")}}
    conformance_params = {"eps": 8 / 255, "eps_step": 2 / 255, "max_iter": 3}
    #: refinable (Table A1 refines IFGSM too): every step is projected onto the support
    supports_mask = True

    @needs_grad
    def _generate(self, model, x, y, target, mask=None):
        return pgd_linf(model.logits, x, target if self.targeted else y, self.eps, self.eps_step, self.max_iter,
                        targeted=self.targeted, random_init=False, mask=mask)
