"""Refined (support-constrained) attacks, eq. (11) of the PSE paper.

Any attack with ``supports_mask`` (``cw_l2``, ``ead``, ``str``, ``ifgsm``, ``fgsm``, ``pgd``) is re-run with
``delta = 0`` outside a support: :func:`refine`. The supports themselves (S1, S2) are built
by :mod:`advinterp.supports` and registered as named rules for the ``refine`` analyzer
(:mod:`advinterp.analyzers.refine`).
"""
from __future__ import annotations

from typing import Any

from ..components import Attack, check_mask
from ..data import AdversarialBatch
from ..exceptions import ParameterError

__all__ = ["refine"]


def refine(attack: Attack, model: Any, batch: AdversarialBatch, support: Any) -> AdversarialBatch:
    """Re-run ``attack`` on ``batch.x0`` (same labels and targets) with ``delta = 0`` outside
    ``support`` (eq. 11). ``attack`` must have ``supports_mask``."""
    if not getattr(attack, "supports_mask", False):
        raise ParameterError("refine", "attack", attack, "an optimisation attack with supports_mask",
                             "Use cw_l2, ead, str, ifgsm, fgsm or pgd.")
    check_mask("refine", support, tuple(batch.x0.shape), "support")
    target = batch.y_target if getattr(attack, "targeted", False) else None
    return attack.generate(model, batch.x0, batch.y_true, target, mask=support)
