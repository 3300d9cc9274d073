"""The paper's qualitative claim, measured: is ``p`` alone recognised as the target?

Jalwana et al. (2020) show the refined attack-to-explain perturbation ``p`` rescaled to
[0, 1] (Figs. 1-3): it looks like the target class, unlike the perturbation of a
single-image attack. This module measures that: for each image ``i`` of a targeted batch
(``p_i = x_adv[i] - x0[i]``, target ``t_i``) it computes, on the single image ``x0[i]``,
targeted baseline perturbations of the same l2 norm ``||p_i||_2`` (default: l2 PGD with
``eps = ||p_i||_2`` and C&W-l2 with its minimal perturbation scaled up to ``||p_i||_2``), and
classifies every perturbation *alone*, rescaled to [0, 1] as the paper displays it
(:func:`~advinterp_a2e.transfer.rescale`), with several models.

* :func:`match_l2` -- a perturbation scaled to a given l2 norm with ``x0 + delta`` kept in
  [0, 1] (scale, clip, repeat);
* :func:`alone_confidence` -- per model, the target probability and top-1 = target of each
  rescaled perturbation;
* :class:`A2ESaliency` (registered analyzer ``a2e.saliency``) and its result
  :class:`A2ESaliencyResult` (rates per method and model, the ratio a2e / baseline).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np
import torch

from advinterp.api import (AdversarialBatch, Analyzer, ModelAdapter, Param, ParameterError, Result,
                           UnknownComponentError, as_adapter, get_attack)

from .transfer import DEFAULT_MODELS, rescale, resolve_models

__all__ = ["match_l2", "alone_confidence", "A2ESaliency", "A2ESaliencyResult", "DEFAULT_BASELINES",
           "BASELINE_DEFAULTS"]

#: The single-image attacks ``a2e.saliency`` compares with by default.
DEFAULT_BASELINES = ("pgd", "cw_l2")
#: Settings of the default baselines (``baseline_params`` goes on top, per name). PGD: l2,
#: 50 steps of ``step_fraction * eps``, no random start; C&W: no margin (the minimal
#: perturbation), 5 binary-search steps of 50 Adam steps at rate 0.05.
BASELINE_DEFAULTS: dict[str, dict[str, Any]] = {
    "pgd": {"norm": 2, "max_iter": 50, "num_random_init": 0},
    "cw_l2": {"confidence": 0.0, "binary_search_steps": 5, "max_iter": 50, "learning_rate": 0.05},
}
OWNER = "a2e.saliency"


def match_l2(delta: torch.Tensor, x0: torch.Tensor, l2: Any, max_steps: int = 50, rtol: float = 1e-6) -> torch.Tensor:
    """``delta`` (``(N, C, H, W)``) scaled to l2 norm ``l2`` (a float or ``(N,)``) per image,
    with ``x0 + delta`` kept in [0, 1].

    Scaling and clipping alternate: ``delta <- Clip(x0 + delta * l2 / ||delta||) - x0`` until
    the norm is within ``rtol`` of ``l2`` (at most ``max_steps`` times). Clipping only shrinks
    a perturbation, so the norm approaches ``l2`` from below where the clipped pixels force it
    and equals it otherwise; a norm that cannot be reached (too many pixels at the box) is left
    as close as ``max_steps`` got. A zero ``delta`` stays zero (no direction to scale)."""
    d = torch.as_tensor(delta).detach().double().clone()
    x = torch.as_tensor(x0).detach().double()
    if d.dim() != 4 or tuple(d.shape) != tuple(x.shape):
        raise ParameterError("match_l2", "delta", tuple(d.shape), f"(N, C, H, W) like x0 {tuple(x.shape)}")
    want = torch.as_tensor(l2, dtype=torch.float64).flatten()
    if len(want) == 1:
        want = want.expand(len(d))
    if len(want) != len(d) or not bool(torch.isfinite(want).all()) or bool((want < 0).any()):
        raise ParameterError("match_l2", "l2", want.tolist(), f"a norm >= 0 or {len(d)} of them")
    want = want.reshape(-1, 1, 1, 1)
    for _ in range(int(max_steps)):
        norm = d.flatten(1).norm(dim=1).reshape(-1, 1, 1, 1)
        if bool(((norm - want).abs() <= rtol * want.clamp_min(1e-12)).all()):
            break
        scale = torch.where(norm > 0, want / norm.clamp_min(1e-300), torch.ones_like(norm))
        d = (x + d * scale).clamp(0, 1) - x
    return d.to(torch.as_tensor(delta).dtype if torch.as_tensor(delta).is_floating_point() else torch.float32)


@torch.no_grad()
def alone_confidence(deltas: Any, target: Any, models: Mapping[str, Any],
                     batch_size: int = 64) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Each model's target probability and top-1 = target for each perturbation alone,
    rescaled to [0, 1] (:func:`~advinterp_a2e.transfer.rescale`).

    Args:
        deltas: ``(N, C, H, W)`` perturbations (pixel units).
        target: ``(N,)`` the target of each (or one int).
        models: ``{name: model}``.

    Returns:
        ``{name: (prob, top1)}``, two ``(N,)`` float64 arrays (softmax probability of the
        target; 1.0 where the target is the top-1 class, else 0.0). Models left as they were.
    """
    d = torch.as_tensor(deltas)
    if d.dim() != 4 or not d.is_floating_point() or not bool(torch.isfinite(d).all()):
        raise ParameterError("alone_confidence", "deltas", tuple(d.shape), "finite float (N, C, H, W) perturbations")
    t = torch.as_tensor(target).long().flatten()
    if len(t) == 1 and len(d) != 1:
        t = t.expand(len(d))
    if len(t) != len(d):
        raise ParameterError("alone_confidence", "target", t.tolist(), f"an int or {len(d)} targets")
    if not isinstance(models, Mapping) or not models:
        raise ParameterError("alone_confidence", "models", models, "a non-empty {name: model} mapping")
    imgs = rescale(d).float()
    out = {}
    for name, m in models.items():
        adapter = as_adapter(m)
        shape = tuple(int(s) for s in adapter.input_shape) if adapter.input_shape is not None else None
        if shape is not None and shape != tuple(d.shape[1:]):
            raise ParameterError("alone_confidence", "models", name, f"a model taking {tuple(d.shape[1:])} images",
                                 f"{name!r} takes {shape}.")
        if len(t) and (int(t.min()) < 0 or int(t.max()) >= adapter.nb_classes):
            raise ParameterError("alone_confidence", "target", t.tolist(), f"classes of model {name!r}")
        probs = []
        with adapter.preserved(freeze=True):
            for s in range(0, len(imgs), batch_size):
                z = adapter.logits(imgs[s:s + batch_size].to(adapter.device, adapter.dtype))
                probs.append(torch.softmax(z.double(), 1).cpu())
        pr = torch.cat(probs) if probs else torch.zeros(0, 1, dtype=torch.float64)
        idx = torch.arange(len(t))
        prob = pr[idx, t].numpy() if len(t) else np.zeros(0)
        top1 = (pr.argmax(1) == t).double().numpy() if len(t) else np.zeros(0)
        out[name] = (prob, top1)
    return out


def _ratio(a: float, b: float) -> float:
    """``a / b``; ``inf`` for ``b = 0 < a``, NaN for ``0 / 0`` or a NaN."""
    if not (math.isfinite(a) and math.isfinite(b)):
        return float("nan")
    if b == 0:
        return float("inf") if a > 0 else float("nan")
    return a / b


@dataclass(frozen=True)
class A2ESaliencyResult(Result):
    """``a2e.saliency`` on a batch: per image ``i``, method ``j`` (``methods[0]`` is the batch's
    own perturbation, ``"a2e"`` normally; then the baselines) and model ``k``.

    Attributes:
        methods: ``("a2e", *baselines)`` (the first is the batch's attack name, or ``"batch"``).
        models: the model names (``"source"``: the analysed model, when included).
        target: ``(N,)`` the targets.
        l2: ``(N,)`` ``||p_i||_2``, the budget every baseline gets.
        norms: ``(N, M)`` the l2 norm of each method's perturbation (column 0 = ``l2``).
        success: ``(N, M)`` 1.0 when ``x0[i] + delta`` is classified as the target by the
            analysed model (the attack worked), else 0.0; NaN for a skipped image.
        prob, top1: ``(N, M, K)`` target probability / top-1 = target of the perturbation
            alone, rescaled to [0, 1], by model ``k``; NaN for a skipped image and for a zero
            perturbation (a baseline attack that failed).
        x0: ``(N, C, H, W)`` the clean images; ``alone``: ``(N, M, C, H, W)`` the rescaled
            perturbations (the classified images).
        attack: the batch's attack; ``baseline_params``: each baseline's settings (``eps``
            and ``eps_step`` set per image are not listed); ``params``: the analyzer's.
    """

    methods: tuple
    models: tuple
    target: np.ndarray
    l2: np.ndarray
    norms: np.ndarray
    success: np.ndarray
    prob: np.ndarray
    top1: np.ndarray
    x0: torch.Tensor
    alone: torch.Tensor
    attack: str = ""
    baseline_params: dict = field(default_factory=dict)
    params: dict = field(default_factory=dict)

    def rows(self) -> list[dict[str, Any]]:
        """One row per (image, method, model)."""
        return [{"image": i, "target": int(self.target[i]), "method": meth, "model": mod,
                 "l2": float(self.norms[i, j]), "attack_success": float(self.success[i, j]),
                 "alone_target_prob": float(self.prob[i, j, k]), "alone_top1_is_target": float(self.top1[i, j, k])}
                for i in range(len(self.target)) for j, meth in enumerate(self.methods)
                for k, mod in enumerate(self.models)]

    def _mean(self, a: np.ndarray) -> float:
        a = a[np.isfinite(a)]
        return float(a.mean()) if a.size else float("nan")

    def summary_rows(self) -> list[dict[str, Any]]:
        """One row per (method, model): images counted, target rate of p alone (top-1 =
        target, and the count), mean target probability, mean l2, attack success rate."""
        out = []
        for j, meth in enumerate(self.methods):
            for k, mod in enumerate(self.models):
                col = self.top1[:, j, k] if self.top1.size else np.zeros(0)
                ok = col[np.isfinite(col)]
                out.append({"method": meth, "model": mod, "images": int(ok.size), "target_top1": int(ok.sum()),
                            "target_rate": self._mean(col),
                            "mean_target_prob": self._mean(self.prob[:, j, k] if self.prob.size else np.zeros(0)),
                            "mean_l2": self._mean(self.norms[:, j] if self.norms.size else np.zeros(0)),
                            "attack_success": self._mean(self.success[:, j] if self.success.size else np.zeros(0))})
        return out

    def ratio_rows(self) -> list[dict[str, Any]]:
        """One row per (model, baseline): the target rate and mean target probability of the
        batch's perturbation (``p``: a2e normally) over the baseline's ("by how much"); ``inf`` where the
        baseline's is 0 and a2e's is not, NaN where both are 0."""
        summ = {(r["method"], r["model"]): r for r in self.summary_rows()}
        out = []
        first = self.methods[0] if self.methods else ""
        for mod in self.models:
            a = summ[(first, mod)]
            for meth in self.methods[1:]:
                b = summ[(meth, mod)]
                out.append({"model": mod, "p": first, "baseline": meth, "p_rate": a["target_rate"],
                            "baseline_rate": b["target_rate"], "rate_ratio": _ratio(a["target_rate"], b["target_rate"]),
                            "p_prob": a["mean_target_prob"], "baseline_prob": b["mean_target_prob"],
                            "prob_ratio": _ratio(a["mean_target_prob"], b["mean_target_prob"])})
        return out


def _names_ok(v: Any) -> bool:
    return isinstance(v, (list, tuple)) and all(isinstance(s, str) and s for s in v) and len(set(v)) == len(v)


def _bparams_ok(v: Any) -> bool:
    return v is None or (isinstance(v, dict) and all(isinstance(k, str) and isinstance(p, dict)
                                                     and all(isinstance(q, str) for q in p) for k, p in v.items()))


class A2ESaliency(Analyzer):
    """Is the batch's perturbation alone, rescaled, recognised as the target -- more often than
    a single-image attack's of the same l2 norm? (Jalwana et al. 2020's qualitative claim.)

    For each image ``i`` (``p_i = x_adv[i] - x0[i]``, target ``t_i = batch.target[i]``; images
    whose target is their true label are skipped, NaN) and each baseline attack (registered
    names, default ``["pgd", "cw_l2"]``), a targeted attack of the single image ``x0[i]``:

    * an attack with an ``eps`` parameter (``pgd``) runs once per image with
      ``eps = ||p_i||_2`` and, unless ``baseline_params`` sets it,
      ``eps_step = step_fraction * eps``; one without (``cw_l2``) runs once on all the images
      (each image is attacked on its own: the batch only shares the forwards);
    * every baseline's ``delta = x_adv - x0`` is then brought to ``||p_i||_2`` with
      :func:`match_l2` (``match_norm=True``): C&W's minimal perturbation scaled up (clipped so
      ``x0 + delta`` stays in [0, 1], repeated), PGD's usually already on the sphere (a no-op).
      A failed C&W (no successful iterate: ``delta = 0``) has no perturbation to show: its
      ``prob`` / ``top1`` are NaN and the rates count the other images (``images`` in
      :meth:`A2ESaliencyResult.summary_rows`; a uniform image would be classified as whatever
      the model makes of a constant input).

    Every perturbation (the batch's and the baselines') is classified alone, rescaled to
    [0, 1], by each model (:func:`alone_confidence`): the analysed model as ``"source"`` when
    ``include_source`` and the registered ``models``. The result gives the target rate (top-1 =
    target) and mean target probability per method and model, and a2e / baseline ratios.

    Parameters: ``baselines`` (``["pgd", "cw_l2"]``), ``baseline_params`` (None: per baseline
    name a dict of its parameters over :data:`BASELINE_DEFAULTS`; ``targeted`` is always True),
    ``step_fraction`` (0.1), ``match_norm`` (True), ``models`` (``["synthetic-cnn",
    "synthetic-cnn-robust"]``), ``include_source`` (True), ``images`` (0: all; k: the first k),
    ``batch_size`` (64). Context ``models``: ``{name: model}`` added after the registered ones.
    """

    name = "a2e.saliency"
    context_keys = ("models",)
    params = {
        "baselines": Param(list(DEFAULT_BASELINES), _names_ok, "a list of distinct registered attack names",
                           doc="single-image targeted attacks to compare with", invalid=("pgd", [3], ["pgd", "pgd"])),
        "baseline_params": Param(None, _bparams_ok, "None or {attack name: {parameter: value}}",
                                 doc="settings of the baselines over the defaults", invalid=(3, {"pgd": 3})),
        "step_fraction": Param.number(0.1, low=0.0, high=1.0, low_open=True,
                                      doc="eps_step = step_fraction * eps for baselines with eps_step"),
        "match_norm": Param.boolean(True, doc="bring every baseline delta to ||p_i||_2 (match_l2)"),
        "models": Param(list(DEFAULT_MODELS), _names_ok, "a list of distinct registered model names",
                        doc="registered models that classify the perturbations", invalid=("synthetic-cnn", [3])),
        "include_source": Param.boolean(True, doc="also classify with the analysed model (as 'source')"),
        "images": Param.integer(0, low=0, doc="analyse the first `images` pairs only (0: all)"),
        "batch_size": Param.integer(64, low=1, doc="images per forward"),
    }
    conformance_params = {"models": [], "baseline_params": {
        "pgd": {"max_iter": 3}, "cw_l2": {"max_iter": 3, "binary_search_steps": 2, "learning_rate": 0.05}}}

    def _check_params(self) -> None:
        for b in (self.baseline_params or {}):
            if b not in self.baselines:
                raise ParameterError(type(self).__name__, "baseline_params", b,
                                     f"settings of the baselines ({', '.join(self.baselines)})")

    def _baseline(self, name: str) -> tuple[type, dict[str, Any]]:
        try:
            cls = type(get_attack(name))
        except UnknownComponentError:
            raise ParameterError(f"{type(self).__name__}.analyze", "baselines", name, "registered attack names",
                                 "`advinterp list` shows the attacks.") from None
        settings = {**BASELINE_DEFAULTS.get(name, {}), **(self.baseline_params or {}).get(name, {})}
        settings.pop("eps", None)
        if "targeted" not in cls.params:
            raise ParameterError(f"{type(self).__name__}.analyze", "baselines", name, "targeted attacks")
        unknown = sorted(set(settings) - set(cls.params))
        if unknown:
            raise ParameterError(f"{type(self).__name__}.analyze", "baseline_params", {name: unknown},
                                 f"parameters of {name} ({', '.join(sorted(cls.params))})")
        settings["targeted"] = True
        cls(**settings)  # validate the settings before any work
        return cls, settings

    def _models(self, model: ModelAdapter, context: Mapping[str, Any]) -> dict[str, Any]:
        return resolve_models(f"{type(self).__name__}.analyze", model, self.include_source, self.models,
                              context.get("models"))

    def _analyze(self, model: ModelAdapter, batch: AdversarialBatch, **context: Any) -> A2ESaliencyResult:
        baselines = {b: self._baseline(b) for b in self.baselines}
        models = self._models(model, context)
        x0 = batch.x0.detach()
        xa = batch.x_adv.detach()
        n = len(x0) if not self.images else min(len(x0), int(self.images))
        first = batch.attack or "batch"
        if first in self.baselines:  # e.g. a pgd batch compared with pgd
            first = f"{first} (batch)"
        methods = (first, *self.baselines)
        m, k = len(methods), len(models)
        target = batch.target.detach().long()[:n] if n else torch.zeros(0, dtype=torch.long)
        y = batch.y_true.detach().long()[:n]
        x0, xa = x0[:n], xa[:n]
        p = (xa - x0).double()
        l2 = p.flatten(1).norm(dim=1) if n else torch.zeros(0, dtype=torch.float64)
        deltas = torch.zeros(n, m, *x0.shape[1:], dtype=torch.float64)
        deltas[:, 0] = p
        valid = (target != y).cpu()
        todo = [i for i in range(n) if bool(valid[i]) and float(l2[i]) > 0]
        for j, (bname, (cls, settings)) in enumerate(baselines.items(), start=1):
            if not todo:
                break
            if "eps" in cls.params:  # one attack per image: its own budget eps = ||p_i||
                groups = [[i] for i in todo]
            else:  # no budget parameter: one call (the attack treats the images independently)
                groups = [todo]
            for idx in groups:
                s = dict(settings)
                if "eps" in cls.params:
                    s["eps"] = float(l2[idx[0]])
                    if "eps_step" in cls.params and "eps_step" not in (self.baseline_params or {}).get(bname, {}):
                        s["eps_step"] = float(self.step_fraction) * float(l2[idx[0]])
                ii = torch.tensor(idx, dtype=torch.long)
                out = cls(**s).generate(model, x0[ii.to(x0.device)], y[ii.to(y.device)], target[ii.to(target.device)])
                d = (out.x_adv.detach() - x0[ii.to(x0.device)]).double()
                if self.match_norm:
                    d = match_l2(d, x0[ii.to(x0.device)].double(), l2[ii.to(l2.device)])
                deltas[ii, j] = d.cpu()
        norms = deltas.flatten(2).norm(dim=2).numpy() if n else np.zeros((0, m))
        success = np.full((n, m), np.nan)
        prob = np.full((n, m, k), np.nan)
        top1 = np.full((n, m, k), np.nan)
        vi = valid.nonzero().flatten()
        if len(vi):
            with torch.no_grad():
                adv = (x0[vi].double().cpu()[:, None] + deltas[vi]).clamp(0, 1).flatten(0, 1)
                preds = []
                for s in range(0, len(adv), int(self.batch_size)):
                    preds.append(model.logits(adv[s:s + int(self.batch_size)].to(model.device, model.dtype))
                                 .argmax(1).cpu())
                pred = torch.cat(preds).reshape(len(vi), m)
                success[vi.numpy()] = (pred == target[vi].cpu()[:, None]).double().numpy()
            flat = deltas[vi].flatten(0, 1).float()
            tt = target[vi].cpu().repeat_interleave(m)
            res = alone_confidence(flat, tt, models, batch_size=int(self.batch_size))
            zero = torch.as_tensor(norms[vi.numpy()] == 0)  # no perturbation (a failed C&W): nothing to classify
            for kk, name in enumerate(models):
                pr, t1 = res[name]
                prob[vi.numpy(), :, kk] = np.where(zero.numpy(), np.nan, pr.reshape(len(vi), m))
                top1[vi.numpy(), :, kk] = np.where(zero.numpy(), np.nan, t1.reshape(len(vi), m))
        bparams = {b: dict(s) for b, (_, s) in baselines.items()}
        return A2ESaliencyResult(methods=methods, models=tuple(models), target=target.cpu().numpy(),
                                 l2=l2.cpu().numpy(), norms=norms, success=success, prob=prob, top1=top1,
                                 x0=x0.detach().cpu().float(),
                                 alone=rescale(deltas.flatten(0, 1)).reshape(deltas.shape).float() if n else
                                 torch.zeros(0, m, *x0.shape[1:]),
                                 attack=batch.attack or "", baseline_params=bparams, params=self.get_params())
