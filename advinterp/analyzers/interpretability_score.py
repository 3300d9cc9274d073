"""``is``: the CAM-based interpretability score of adversarial perturbations (PSE paper, Sec. 4).

For a map ``F(x, c)`` (an explainer's attribution at input resolution) the most
discriminative region is the Boolean map (eq. 5)::

    B(x, c) = F(x, c) >= nu,   nu = the ``quantile`` (0.7) quantile of F(x, c) per image

and the interpretability score of the perturbation ``delta`` w.r.t. ``(x, c)`` (eq. 6)::

    IS(delta) = ||B(x, c) o delta||_2 / ||delta||_2

with ``delta`` over all channels and ``B`` broadcast over them. IS is 1 when all of the
perturbation's energy lies inside the region and 0 when none does. The analyzer reports it
per image w.r.t. ``(x0, t0)`` (``t0`` = true label) and ``(x', t)`` (``t`` = target, or the
adversarial prediction of an untargeted attack) — Table 2 of the paper. Images with
``delta = 0`` have no perturbation to interpret: their IS is ``nan`` and the means skip them.

``region_x0_t0`` is ``B(x0, t0)``, the S2 support of refined attacks
(:func:`advinterp.supports.support_from_region` accepts it).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from ..components import Analyzer, Explainer, check_mask
from ..data import PairMaps
from ..exceptions import ParameterError
from ..params import Param
from ..stats import nanmean as _nanmean, standard_error
from ..results import Result, format_table

__all__ = ["InterpretabilityScore", "InterpretabilityScoreAnalyzer", "interpretability_score",
           "discriminative_region", "table2"]


# ---------------------------------------------------------------------------- pure functions
def discriminative_region(maps: Any, quantile: float = 0.7) -> torch.Tensor:
    """``B(x, c)`` of eq. (5): ``maps >= nu`` with ``nu`` the ``quantile`` quantile of each map.

    Args:
        maps: ``(N, H, W)`` attribution maps (tensor or array), one per image.
        quantile: in (0, 1); 0.7 keeps about the top 30% of the pixels when the values are
            distinct (``nu`` interpolates linearly between order statistics, as
            ``torch.quantile``). Ties at ``nu`` are kept, so a constant map gives the whole image.

    Returns:
        ``(N, H, W)`` bool tensor on the maps' device.
    """
    if isinstance(quantile, bool) or not isinstance(quantile, (int, float)) or not 0 < quantile < 1:
        raise ParameterError("discriminative_region", "quantile", quantile, "a number in (0, 1)")
    m = torch.as_tensor(maps)
    if m.ndim != 3:
        raise ParameterError("discriminative_region", "maps", maps, "maps of shape (N, H, W)")
    if not m.is_floating_point():
        m = m.double()
    if m.numel() == 0:
        return torch.zeros(m.shape, dtype=torch.bool, device=m.device)
    flat = m.flatten(1)
    nu = torch.quantile(flat.double(), quantile, dim=1, keepdim=True).to(flat.dtype)
    return (flat >= nu).reshape(m.shape)


def interpretability_score(region: Any, delta: Any) -> np.ndarray:
    """``IS(delta) = ||B o delta||_2 / ||delta||_2`` per image (eq. 6).

    Args:
        region: the Boolean region ``B``: ``(N, H, W)``, ``(N, 1, H, W)`` or ``(N, C, H, W)``,
            bool or 0/1 (a 2-d ``(H, W)`` mask applies to every image).
        delta: ``(N, C, H, W)`` perturbations (all channels count; ``B`` is broadcast over them).

    Returns:
        ``(N,)`` float64 array in [0, 1]; ``nan`` for images whose ``delta`` is exactly 0.
    """
    d = torch.as_tensor(delta)
    if d.ndim != 4:
        raise ParameterError("interpretability_score", "delta", delta, "perturbations of shape (N, C, H, W)")
    d = d.detach().double()
    b = check_mask("interpretability_score", region, tuple(d.shape), "region").to(d.device, d.dtype)
    num = (b * d).flatten(1).norm(dim=1)
    den = d.flatten(1).norm(dim=1)
    out = torch.where(den > 0, num / den.clamp_min(torch.finfo(d.dtype).tiny), torch.full_like(den, math.nan))
    return out.cpu().numpy()


# ---------------------------------------------------------------------------- result
@dataclass(frozen=True)
class InterpretabilityScore(Result):
    """IS per image of one attack on one model with one explainer (Table 2 of the PSE paper).

    Attributes:
        is_x0_t0: ``(N,)`` IS w.r.t. ``(x0, t0)``; ``nan`` where ``delta = 0``.
        is_xadv_t: ``(N,)`` IS w.r.t. ``(x', t)``; ``nan`` where ``delta = 0``.
        region_x0_t0: ``(N, H, W)`` bool, ``B(x0, t0)`` (the S2 support of refined attacks).
        region_xadv_t: ``(N, H, W)`` bool, ``B(x', t)``.
        attack, model, explainer: names.
        quantile: the quantile defining ``nu``.
        success: ``(N,)`` bool attack success, or ``None`` when the batch has none.
    """

    is_x0_t0: np.ndarray
    is_xadv_t: np.ndarray
    region_x0_t0: np.ndarray
    region_xadv_t: np.ndarray
    attack: str = ""
    model: str = ""
    explainer: str = ""
    quantile: float = 0.7
    success: np.ndarray | None = None

    per_image = ("is_x0_t0", "is_xadv_t", "region_x0_t0", "region_xadv_t", "success")

    def mean(self, which: str = "x0_t0", success_only: bool = True) -> float:
        """Mean IS w.r.t. ``"x0_t0"`` or ``"xadv_t"`` over images with ``delta != 0``, of the
        successful adversarial examples (``success_only``, default True as the paper; every
        pair with ``success_only=False`` or when the result has no ``success``)."""
        if which not in ("x0_t0", "xadv_t"):
            raise ParameterError("InterpretabilityScore.mean", "which", which, "'x0_t0' or 'xadv_t'")
        v = np.asarray(getattr(self, f"is_{which}"), dtype=np.float64)
        if success_only and self.success is not None:
            v = v[np.asarray(self.success, dtype=bool)]
        return _nanmean(v)

    def rows(self) -> list[dict[str, Any]]:
        """Table 2 view: one row (attack, model, explainer, mean IS w.r.t. (x0, t0) and (x', t))
        over the successful pairs (:func:`table2`)."""
        return table2([self])


def table2(results: Sequence[InterpretabilityScore], success_only: bool = True) -> list[dict[str, Any]]:
    """Aggregate several results into Table 2 rows, one per (attack, model, explainer).

    Results with the same key (e.g. several batches of one attack) are pooled image-wise.
    ``success_only`` (default True, the paper averages over adversarial examples) keeps the
    pairs whose attack succeeded; ``n_dropped`` counts the failed ones left out. ``se_is_*``:
    the standard error of each mean over images (:func:`advinterp.stats.standard_error`).
    Rows keep the order in which keys first appear. Render with
    :func:`advinterp.results.format_table`.
    """
    groups: dict[tuple[str, str, str], list[InterpretabilityScore]] = {}
    for r in results:
        if not isinstance(r, InterpretabilityScore):
            raise ParameterError("table2", "results", r, "InterpretabilityScore results")
        groups.setdefault((r.attack, r.model, r.explainer), []).append(r)
    rows = []
    for (attack, model, explainer), rs in groups.items():
        def pool(which):
            vals = []
            for r in rs:
                v = np.asarray(getattr(r, f"is_{which}"), dtype=np.float64)
                if success_only and r.success is not None:
                    v = v[np.asarray(r.success, dtype=bool)]
                vals.append(v)
            return np.concatenate(vals) if vals else np.zeros(0)

        a, b = pool("x0_t0"), pool("xadv_t")
        dropped = sum(int((~np.asarray(r.success, dtype=bool)).sum()) for r in rs
                      if success_only and r.success is not None)
        rows.append({"attack": attack, "model": model, "explainer": explainer, "n": len(a), "n_dropped": dropped,
                     "n_valid": int(np.isfinite(a).sum()), "is_x0_t0": _nanmean(a), "is_xadv_t": _nanmean(b),
                     "se_is_x0_t0": standard_error(a), "se_is_xadv_t": standard_error(b)})
    return rows


def table2_text(results: Sequence[InterpretabilityScore], success_only: bool = True) -> str:
    """:func:`table2` as aligned text."""
    return format_table(table2(results, success_only))


# ---------------------------------------------------------------------------- analyzer
def _check_quantile(v) -> bool:
    return not isinstance(v, bool) and isinstance(v, (int, float)) and math.isfinite(v) and 0 < v < 1


def _maps_of(value: Any, name: str) -> torch.Tensor:
    maps = getattr(value, "maps", value)  # an Attribution or a tensor
    t = torch.as_tensor(maps)
    if t.ndim != 3:
        raise ParameterError("InterpretabilityScoreAnalyzer.analyze", name, value, "maps of shape (N, H, W)")
    return t.detach()


class InterpretabilityScoreAnalyzer(Analyzer):
    """CAM-based interpretability score IS of delta w.r.t. (x0, t0) and (x', t) (Table 2).

    Parameters: ``explainer`` (registry name, default ``"cam"``), ``explainer_params`` (dict
    of its parameters, or None), ``quantile`` (0.7: ``nu`` is this quantile of each map).

    Context (optional keywords of ``analyze``):
        explainer: an :class:`~advinterp.Explainer` instance (or a registry name) used
            instead of the ``explainer`` parameter.
        maps: precomputed maps: a :class:`~advinterp.PairMaps` (from
            :meth:`Explainer.explain_pair <advinterp.Explainer.explain_pair>`; its ``method``
            names the explainer in the result) or a dict
            ``{"x0_t0": F(x0, t0), "xadv_t": F(x', t)}`` of ``(N, H, W)`` tensors at input
            resolution or :class:`~advinterp.Attribution`\\ s; no explainer is run then. Any
            positive per-image scaling (normalisation) leaves the regions unchanged.

    Without ``maps`` the explainer runs twice, ``explain(model, x0, t0)`` and
    ``explain(model, x', t)`` (two different image sets, one class each).
    """

    name = "is"
    context_keys = ("explainer", "maps")
    shardable = True
    warn_failed = True
    per_image_context = ("maps",)
    params = {
        "explainer": Param(
            "cam", lambda v: isinstance(v, str) and bool(v), "a registered explainer name",
            doc="registry name of the explainer giving F(x, c)", invalid=("", 3)),
        "explainer_params": Param(
            None, lambda v: v is None or (isinstance(v, dict) and all(isinstance(k, str) for k in v)),
            "None or a dict of the explainer's parameters", doc="parameters of the explainer",
            invalid=("cam", [1])),
        "quantile": Param(0.7, _check_quantile, "a number in (0, 1)",
                          doc="nu is this quantile of each map (eq. 5)", invalid=(0, 1, 1.5, "x")),
    }
    #: The conformance suite runs the default explainer (``cam`` of the captum plugin).
    conformance_context: dict[str, Any] = {}

    def _explainer(self, context: Mapping[str, Any]) -> Explainer:
        from ..registry import get_explainer

        exp = context.get("explainer")
        if exp is None:
            return get_explainer(self.explainer, **(self.explainer_params or {}))
        if isinstance(exp, str):
            return get_explainer(exp, **(self.explainer_params or {}))
        if not isinstance(exp, Explainer):
            raise ParameterError(f"{type(self).__name__}.analyze", "explainer", exp,
                                 "an advinterp Explainer instance or a registered explainer name")
        return exp

    def _analyze(self, model, batch, **context):
        owner = f"{type(self).__name__}.analyze"
        n, _, h, w = batch.x0.shape
        maps = context.get("maps")
        method = ""
        if isinstance(maps, PairMaps):
            method, maps = maps.method, maps.maps()
        if maps is not None:
            if not isinstance(maps, Mapping) or not {"x0_t0", "xadv_t"} <= set(maps):
                raise ParameterError(owner, "maps", maps, "a PairMaps or a dict with keys 'x0_t0' and 'xadv_t'")
            f0, fa = _maps_of(maps["x0_t0"], "maps"), _maps_of(maps["xadv_t"], "maps")
            given = context.get("explainer")
            explainer = str(method or getattr(maps["x0_t0"], "method", "") or getattr(given, "name", given)
                            or "precomputed")
        else:
            exp = self._explainer(context)
            f0 = exp.explain(model, batch.x0, batch.y_true).maps
            fa = exp.explain(model, batch.x_adv, batch.target).maps
            explainer = exp.name or type(exp).__name__
        for f in (f0, fa):
            if tuple(f.shape) != (n, h, w):
                raise ParameterError(owner, "maps", f, f"maps of shape ({n}, {h}, {w}) at input resolution")
        b0 = discriminative_region(f0.cpu(), self.quantile)
        ba = discriminative_region(fa.cpu(), self.quantile)
        delta = batch.delta.detach().cpu()
        success = None if batch.success is None else batch.success.detach().cpu().numpy().astype(bool)
        return InterpretabilityScore(
            is_x0_t0=interpretability_score(b0, delta), is_xadv_t=interpretability_score(ba, delta),
            region_x0_t0=b0.numpy(), region_xadv_t=ba.numpy(), attack=batch.attack, model=model.name,
            explainer=explainer, quantile=float(self.quantile), success=success)
