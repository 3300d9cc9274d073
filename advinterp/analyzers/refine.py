"""Refined attacks, the Table A1 view (PSE paper, Appendix 3, eq. 11).

An attack is run as usual, then re-run on the same images, labels and targets with
``delta = 0`` outside a support:

* ``"S1"`` = ``{s_i > beta}``: the grids whose significance ``s_i`` (the ``pse`` analysis of
  the unrefined examples) exceeds footnote 3's beta, i.e. the least significant grids
  holding 30 % of the cumulative ``s`` are dropped (:meth:`PSEResult.s1_mask`);
* ``"S2"`` = ``{B(x0, t0) > 0}``: the discriminative region of the true class, the ``is``
  analysis' ``region_x0_t0`` (CAM >= its 70 % quantile).

:func:`refine_attack` reports ASR and the l0/l1/l2/linf distortion of the original and of
each refined attack (``attack_metrics``; l0 counts entries). The re-run uses
:func:`advinterp.attacks.refine.refine`, so the attack must have ``supports_mask``
(``cw_l2``, ``ead``, ``str``).

Example::

    cw = advinterp.get_attack("cw_l2", targeted=True)
    res = refine_attack(cw, model, x, y, t, supports=("S1", "S2"))
    print(res.table())
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import torch

from ..attacks.refine import refine, support_from_region
from ..components import Attack
from ..data import AdversarialBatch
from ..exceptions import ParameterError
from ..results import Result, format_table
from .attack_metrics import NORMS, AttackMetrics, AttackMetricsAnalyzer
from .pse import PSEAnalyzer, PSEResult

__all__ = ["Refinement", "refine_attack", "table_a1", "SUPPORTS"]

#: The supports of eq. (11).
SUPPORTS = ("S1", "S2")


@dataclass(frozen=True)
class Refinement(Result):
    """An attack with and without refinement (Table A1 of the PSE paper).

    Attributes:
        attack, model: names.
        original: :class:`AttackMetrics` of the unrefined attack.
        refined: ``{"S1" | "S2": AttackMetrics}`` of the attack re-run under each support.
        support_share: ``{support: (N,)}`` share of the pixels inside the support per image.
        batches: ``{"original" | "S1" | "S2": AdversarialBatch}`` the examples themselves.
    """

    attack: str
    model: str
    original: AttackMetrics
    refined: dict = field(default_factory=dict)
    support_share: dict = field(default_factory=dict)
    batches: dict = field(default_factory=dict)

    def rows(self) -> list[dict[str, Any]]:
        """One row per support: mean l0..linf original vs refined (over the successful
        examples of each, ``attack_metrics``' convention), ASR original and refined."""
        rows = []
        for name, ref in self.refined.items():
            row: dict[str, Any] = {"attack": self.attack, "model": self.model, "support": name,
                                   "n": len(ref.success),
                                   "support_share": float(np.mean(self.support_share[name]))
                                   if len(self.support_share.get(name, ())) else float("nan")}
            for k in NORMS:
                row[f"{k}_original"] = self.original.mean(k)
                row[f"{k}_refined"] = ref.mean(k)
            row["asr_original"] = self.original.asr
            row["asr_refined"] = ref.asr
            rows.append(row)
        return rows


def table_a1(results: Sequence[Refinement]) -> str:
    """Several :class:`Refinement` results as one Table A1-style text table."""
    for r in results:
        if not isinstance(r, Refinement):
            raise ParameterError("table_a1", "results", r, "Refinement results (of refine_attack)")
    return format_table([row for r in results for row in r.rows()])


def _s1(pse: Any, model: Any, original: AdversarialBatch) -> torch.Tensor:
    if pse is None:
        pse = PSEAnalyzer()
    if isinstance(pse, PSEAnalyzer):
        pse = pse.analyze(model, original)
    if not isinstance(pse, PSEResult):
        raise ParameterError("refine_attack", "pse", pse, "None, a PSEAnalyzer or the PSEResult of the unrefined batch")
    n, _, h, w = original.x0.shape
    if pse.n_images != n or tuple(pse.image_size) != (h, w):
        raise ParameterError("refine_attack", "pse", pse, f"the pse result of the unrefined batch ({n} images {h}x{w})",
                             f"It holds {pse.n_images} images of {tuple(pse.image_size)}.")
    return pse.s1_mask()


def _s2(region: Any, model: Any, original: AdversarialBatch) -> torch.Tensor:
    from .interpretability_score import InterpretabilityScore

    if region is None:
        from ..registry import get_analyzer

        region = get_analyzer("is").analyze(model, original)
    if isinstance(region, InterpretabilityScore):
        region = region.region_x0_t0
    n, _, h, w = original.x0.shape
    mask = support_from_region(torch.as_tensor(np.asarray(region)), (h, w))
    if len(mask) != n:
        raise ParameterError("refine_attack", "region", region, f"B(x0, t0) for the {n} images of the batch")
    return mask


def refine_attack(attack: Attack, model: Any, x: Any, y: Any = None, target: Any = None, *,
                  supports: Sequence[str] = ("S1",), pse: Any = None, region: Any = None,
                  average_over: str = "success") -> Refinement:
    """Run ``attack`` unrefined and refined under S1 and/or S2 (eq. 11) and compare them.

    Args:
        attack: an attack instance with ``supports_mask`` (``cw_l2``, ``ead``, ``str``).
        model: :class:`~advinterp.ModelAdapter` or ``nn.Module``.
        x: ``(N, C, H, W)`` clean images (the attack is run on them with ``y``/``target``),
            or the :class:`AdversarialBatch` of an unrefined run of ``attack`` (reused as is;
            its ``x0``, ``y_true`` and ``y_target`` drive the refined runs).
        y, target: labels and targets as for ``attack.generate`` (ignored for a batch).
        supports: which of ``"S1"``, ``"S2"`` to run (default ``("S1",)``).
        pse: for S1: the :class:`PSEResult` of the unrefined batch, a :class:`PSEAnalyzer` to
            run on it, or ``None`` (``PSEAnalyzer()`` with the paper's defaults).
        region: for S2: ``B(x0, t0)`` as an ``is`` result (``InterpretabilityScore``) or an
            ``(N, H, W)`` mask, or ``None`` to run the ``is`` analyzer (CAM, needs the
            advinterp-captum plugin) on the unrefined batch.
        average_over: norms averaged over ``"success"``-ful examples (default) or ``"all"``.

    Returns:
        A :class:`Refinement`; ``rows()`` is the Table A1 view.
    """
    owner = "refine_attack"
    if not isinstance(attack, Attack) or not getattr(attack, "supports_mask", False):
        raise ParameterError(owner, "attack", attack, "an Attack instance with supports_mask",
                             "Use cw_l2, ead or str (advinterp.get_attack(...)).")
    if isinstance(supports, str):
        supports = (supports,)
    supports = tuple(supports)
    bad = [s for s in supports if s not in SUPPORTS]
    if bad or not supports:
        raise ParameterError(owner, "supports", supports, "a non-empty selection of 'S1', 'S2'")
    if isinstance(x, AdversarialBatch):
        original = x
    else:
        original = attack.generate(model, x, y, target if getattr(attack, "targeted", False) else None)
    from ..model import as_adapter

    model = as_adapter(model)
    metrics = AttackMetricsAnalyzer(average_over=average_over)
    masks = {}
    for name in supports:
        masks[name] = _s1(pse, model, original) if name == "S1" else _s2(region, model, original)
    refined, shares, batches = {}, {}, {"original": original}
    for name, mask in masks.items():
        batch = refine(attack, model, original, mask)
        batches[name] = batch
        refined[name] = metrics.analyze(model, batch)
        shares[name] = mask.float().flatten(1).mean(1).numpy()
    return Refinement(attack=original.attack or attack.name, model=model.name,
                      original=metrics.analyze(model, original), refined=refined, support_share=shares,
                      batches=batches)
