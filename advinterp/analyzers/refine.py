"""Refined attacks, the Table A1 view (PSE paper, Appendix 3, eq. 11): named supports and
the ``refine`` analyzer.

An attack is run as usual, then re-run on the same images, labels and targets with
``delta = 0`` outside a support. Supports are *rules* registered by plugins
(``advinterp_register_supports``; ``advinterp.get_support(name)``): ``rule(model, batch,
**context)`` returns the ``(N, 1, H, W)`` bool support of the unrefined
:class:`~advinterp.AdversarialBatch` ``batch``. Built in (definitions in
:mod:`advinterp.supports`):

* ``"S1"`` = ``{s_i > beta}`` (:func:`s1`): the grids whose significance ``s_i`` (the ``pse``
  analysis of the unrefined examples) exceeds footnote 3's beta, i.e. the least significant
  grids holding 30 % of the cumulative ``s`` are dropped (:meth:`PSEResult.s1_mask`);
* ``"S2"`` = ``{B(x0, t0) > 0}`` (:func:`s2`): the discriminative region of the true class,
  the ``is`` analysis' ``region_x0_t0`` (CAM >= its 70 % quantile).

The ``refine`` analyzer (:class:`RefineAnalyzer`) reports ASR and the l0/l1/l2/linf
distortion of the original and of each refined attack (``attack_metrics``; l0 counts
entries) as a :class:`Refinement`; :func:`refine_attack` is the same computation for an
attack instance and clean images. The re-run is :func:`advinterp.attacks.refine.refine`, so
the attack must have ``supports_mask`` (``cw_l2``, ``ead``, ``str``, ``ifgsm``, ``fgsm``, ``pgd``).

Example::

    batch = advinterp.get_attack("cw_l2", targeted=True).generate(model, x, y, t)
    res = advinterp.get_analyzer("refine", supports=["S1", "S2"]).analyze(model, batch)
    print(res.table())
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch

from ..attacks.refine import refine
from ..components import Analyzer, Attack
from ..data import AdversarialBatch
from ..exceptions import ParameterError
from ..params import Param, validate
from ..results import Result, format_table
from ..supports import support_from_region
from .attack_metrics import NORMS, AttackMetrics, AttackMetricsAnalyzer
from .pse import PSEAnalyzer, PSEResult

__all__ = ["Refinement", "RefineAnalyzer", "refine_attack", "table_a1", "s1", "s2"]


@dataclass(frozen=True)
class Refinement(Result):
    """An attack with and without refinement (Table A1 of the PSE paper).

    Attributes:
        attack, model: names.
        original: :class:`AttackMetrics` of the unrefined attack.
        refined: ``{support name: AttackMetrics}`` of the attack re-run under each support.
        support_share: ``{support: (N,)}`` share of the pixels inside the support per image.
        batches: ``{"original" | support name: AdversarialBatch}`` the examples themselves.
        masks: ``{support: (N, 1, H, W) bool tensor}`` the support each refined run was
            confined to (empty in results saved before it was kept).
        grid_size: side of the PSE grids of S1 (the ``pse`` result or analyzer it came from;
            ``0`` = unknown: the PSE default :func:`~advinterp.analyzers.pse.default_grid_size`).
    """

    attack: str
    model: str
    original: AttackMetrics
    refined: dict = field(default_factory=dict)
    support_share: dict = field(default_factory=dict)
    batches: dict = field(default_factory=dict)
    masks: dict = field(default_factory=dict)
    grid_size: int = 0

    per_image = ("original", "refined", "support_share", "batches", "masks")

    def rows(self) -> list[dict[str, Any]]:
        """One row per support: mean l0..linf original vs refined (over the successful
        examples of each, ``attack_metrics``' convention), ASR original and refined, and the
        images each mean is taken over (``n_valid_original``, ``n_valid_refined``)."""
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
            row["n_valid_original"], row["n_valid_refined"] = self.original.n_valid, ref.n_valid
            rows.append(row)
        return rows


def table_a1(results: Sequence[Refinement]) -> str:
    """Several :class:`Refinement` results as one Table A1-style text table."""
    for r in results:
        if not isinstance(r, Refinement):
            raise ParameterError("table_a1", "results", r, "Refinement results (of refine_attack)")
    return format_table([row for r in results for row in r.rows()])


# ---------------------------------------------------------------------------- support rules
def s1(model: Any, batch: AdversarialBatch, *, pse: Any = None, fraction: float | None = None,
       **context: Any) -> torch.Tensor:
    """S1 = {s_i > beta}: the grids of high PSE significance (footnote 3's beta).

    ``pse``: the :class:`PSEResult` of ``batch``, a :class:`PSEAnalyzer` to run on it, or
    ``None`` (the ``pse`` analyzer with the paper's defaults). ``fraction``: the cumulative
    share of ``s`` dropped; ``None`` = the result's own (0.3 unless set on the analyzer).
    """
    if pse is None:
        pse = PSEAnalyzer()
    if isinstance(pse, PSEAnalyzer):
        pse = pse.analyze(model, batch)
    if not isinstance(pse, PSEResult):
        raise ParameterError("S1", "pse", pse, "None, a PSEAnalyzer or the PSEResult of the unrefined batch")
    n, _, h, w = batch.x0.shape
    if pse.n_images != n or tuple(pse.image_size) != (h, w):
        raise ParameterError("S1", "pse", pse, f"the pse result of the unrefined batch ({n} images {h}x{w})",
                             f"It holds {pse.n_images} images of {tuple(pse.image_size)}.")
    return pse.s1_mask(fraction)


def s2(model: Any, batch: AdversarialBatch, *, region: Any = None, quantile: float = 0.7, explainer: str = "cam",
       **context: Any) -> torch.Tensor:
    """S2 = {B(x0, t0) > 0}: the CAM region of the true class (the ``is`` analysis).

    ``region``: ``B(x0, t0)`` as an ``is`` result (``InterpretabilityScore``) or an
    ``(N, H, W)`` mask, or ``None`` to run the ``is`` analyzer (``explainer``, ``quantile``;
    CAM needs the advinterp-captum plugin) on ``batch``.
    """
    from .interpretability_score import InterpretabilityScore

    if region is None:
        from ..registry import get_analyzer

        region = get_analyzer("is", explainer=explainer, quantile=quantile).analyze(model, batch)
    if isinstance(region, InterpretabilityScore):
        region = region.region_x0_t0
    n, _, h, w = batch.x0.shape
    r = region.detach().cpu() if isinstance(region, torch.Tensor) else torch.as_tensor(np.asarray(region))
    mask = support_from_region(r, (h, w))
    if len(mask) != n:
        raise ParameterError("S2", "region", region, f"B(x0, t0) for the {n} images of the batch")
    return mask


# ---------------------------------------------------------------------------- the computation
def _check_attack(owner: str, name: str, attack: Any) -> Attack:
    if not isinstance(attack, Attack) or not getattr(attack, "supports_mask", False):
        raise ParameterError(owner, name, attack, "an Attack instance with supports_mask",
                             "Use cw_l2, ead, str, ifgsm, fgsm or pgd (advinterp.get_attack(...)).")
    return attack


def _rules(supports: Sequence[str]) -> dict[str, Callable[..., torch.Tensor]]:
    """The registered rules of ``supports`` (UnknownComponentError naming close names)."""
    from ..registry import get_support

    return {name: get_support(name) for name in supports}


def _refinement(owner: str, attack: Attack, model: Any, original: AdversarialBatch,
                rules: Mapping[str, Callable[..., torch.Tensor]], average_over: str,
                context: Mapping[str, Any]) -> Refinement:
    """Supports of ``original`` by ``rules``, ``attack`` re-run under each, and the metrics."""
    n, _, h, w = original.x0.shape
    masks = {}
    for name, rule in rules.items():
        mask = rule(model, original, **context)
        if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool or tuple(mask.shape) != (n, 1, h, w):
            raise ParameterError(owner, f"support {name!r}", mask, f"a bool tensor of shape ({n}, 1, {h}, {w})",
                                 "A support rule returns the (N, 1, H, W) bool support of the batch.")
        masks[name] = mask
    metrics = AttackMetricsAnalyzer(average_over=average_over)
    refined, shares, batches = {}, {}, {"original": original}
    for name, mask in masks.items():
        batch = refine(attack, model, original, mask)
        batches[name] = batch
        refined[name] = metrics.analyze(model, batch)
        shares[name] = mask.detach().cpu().float().flatten(1).mean(1).numpy()
    return Refinement(attack=original.attack or attack.name, model=model.name,
                      original=metrics.analyze(model, original), refined=refined, support_share=shares,
                      batches=batches, masks={k: m.detach().cpu() for k, m in masks.items()},
                      grid_size=_grid_size(context.get("pse"), h, w))


def _grid_size(pse: Any, height: int, width: int) -> int:
    """The side of the PSE grids S1 uses: a ``pse`` result's ``size``, a ``pse`` analyzer's
    (``None``: the default), or the default for ``height x width`` images."""
    from .pse import default_grid_size

    size = getattr(pse, "size", None)
    return int(size) if isinstance(size, (int, np.integer)) and size > 0 else default_grid_size(height, width)


def _support_names(v: Any) -> bool:
    return (isinstance(v, (list, tuple)) and len(v) > 0 and len(set(v)) == len(v)
            and all(isinstance(s, str) and s for s in v))


def _str_dict(v: Any) -> bool:
    return v is None or (isinstance(v, dict) and all(isinstance(k, str) for k in v))


class RefineAnalyzer(Analyzer):
    """Re-runs an attack with delta = 0 outside named supports (eq. 11); ASR, l0..linf vs unrefined (Table A1).

    Parameters:
        attack: registry name of an attack with ``supports_mask`` (``cw_l2``, ``ead``, ``ifgsm``,
            ``str``) run unrefined on ``batch.x0`` / ``batch.y_true`` / ``batch.y_target`` and
            then refined; ``None`` (default): ``batch`` is the unrefined run and its own attack
            (``batch.attack`` with ``batch.params``) is re-run.
        attack_params: the attack's parameters (dict) when ``attack`` is set, or ``None``.
        supports: registered support names (``advinterp.list_components("support")``),
            default ``["S1"]``; checked when analysing.
        average_over: norms averaged over ``"success"``-ful examples (default) or ``"all"``.

    Context (optional keywords of ``analyze``, passed to the support rules; only with
    ``attack=None``, as they describe ``batch``):
        pse: for S1, the :class:`PSEResult` of ``batch`` (or a :class:`PSEAnalyzer`).
        region: for S2, ``B(x0, t0)`` of ``batch`` (an ``is`` result or an ``(N, H, W)`` mask).

    Returns a :class:`Refinement`; ``rows()`` is the Table A1 view.
    """

    name = "refine"
    context_keys = ("pse", "region")
    shardable = True
    per_image_context = ("pse", "region")
    params = {
        "attack": Param(None, lambda v: v is None or (isinstance(v, str) and bool(v)),
                        "None or the registry name of an attack with supports_mask",
                        doc="attack to run and refine (None: re-run the batch's own attack)", invalid=("", 3)),
        "attack_params": Param(None, _str_dict, "None or a dict of the attack's parameters",
                               doc="parameters of attack", invalid=("cw_l2", [1])),
        "supports": Param(["S1"], _support_names, "a non-empty list of distinct registered support names",
                          doc="support rules to refine under (advinterp.list_components('support'))",
                          invalid=([], "S1", [1], ["S1", "S1"])),
        "average_over": Param.choice("success", ("success", "all"),
                                     doc="average the norms over successful images or all"),
    }
    conformance_params = {"attack": "cw_l2",
                          "attack_params": {"max_iter": 3, "binary_search_steps": 1, "learning_rate": 0.05}}

    def _check_params(self) -> None:
        if self.attack is None and self.attack_params is not None:
            raise ParameterError(type(self).__name__, "attack_params", self.attack_params, "None when attack is None",
                                 "The batch's own attack is re-run with batch.params; set attack= to choose one.")

    def _analyze(self, model, batch, **context):
        from ..registry import get_attack

        owner = f"{type(self).__name__}.analyze"
        rules = _rules(self.supports)
        if self.attack is None:
            if not batch.attack:
                raise ParameterError(owner, "batch.attack", batch.attack, "the registry name of the batch's attack",
                                     "Set attack= to run a named attack instead.")
            attack = _check_attack(owner, "batch.attack", get_attack(batch.attack, **batch.params))
            original = batch
        else:
            given = [k for k in self.context_keys if context.get(k) is not None]
            if given:
                raise ParameterError(owner, given[0], context[given[0]], f"no {given[0]}= context with attack=",
                                     f"It describes the given batch, not the new unrefined run of "
                                     f"{self.attack!r}; drop it, or leave attack=None to refine the batch itself.")
            attack = _check_attack(owner, "attack", get_attack(self.attack, **(self.attack_params or {})))
            target = batch.y_target if getattr(attack, "targeted", False) else None
            original = attack.generate(model, batch.x0, batch.y_true, target)
        return _refinement(owner, attack, model, original, rules, self.average_over, context)


def refine_attack(attack: Attack, model: Any, x: Any, y: Any = None, target: Any = None, *,
                  supports: Sequence[str] = ("S1",), pse: Any = None, region: Any = None,
                  average_over: str = "success") -> Refinement:
    """Run ``attack`` unrefined and refined under named supports (eq. 11) and compare them.

    The ``refine`` analyzer's computation for an attack instance.

    Args:
        attack: an attack instance with ``supports_mask`` (``cw_l2``, ``ead``, ``str``, ``ifgsm``, ...).
        model: :class:`~advinterp.ModelAdapter` or ``nn.Module``.
        x: ``(N, C, H, W)`` clean images (the attack is run on them with ``y``/``target``),
            or the :class:`AdversarialBatch` of an unrefined run of ``attack`` (reused as is;
            its ``x0``, ``y_true`` and ``y_target`` drive the refined runs).
        y, target: labels and targets as for ``attack.generate`` (ignored for a batch).
        supports: registered support names, e.g. ``"S1"``, ``"S2"`` (default ``("S1",)``).
        pse: for S1: the :class:`PSEResult` of the unrefined batch, a :class:`PSEAnalyzer` to
            run on it, or ``None`` (``PSEAnalyzer()`` with the paper's defaults).
        region: for S2: ``B(x0, t0)`` as an ``is`` result (``InterpretabilityScore``) or an
            ``(N, H, W)`` mask, or ``None`` to run the ``is`` analyzer (CAM, needs the
            advinterp-captum plugin) on the unrefined batch.
        average_over: norms averaged over ``"success"``-ful examples (default) or ``"all"``.

    Returns:
        A :class:`Refinement`; ``rows()`` is the Table A1 view.
    """
    from ..model import as_adapter

    owner = "refine_attack"
    _check_attack(owner, "attack", attack)
    if isinstance(supports, str):
        supports = (supports,)
    spec = {k: RefineAnalyzer.params[k] for k in ("supports", "average_over")}
    settings = validate(owner, spec, {"supports": list(supports), "average_over": average_over})
    rules = _rules(settings["supports"])
    if isinstance(x, AdversarialBatch):
        original = x
    else:
        original = attack.generate(model, x, y, target if getattr(attack, "targeted", False) else None)
    return _refinement(owner, attack, as_adapter(model), original, rules, average_over,
                       {"pse": pse, "region": region})
