"""Transfer of an attack-to-explain perturbation to other models (capability C4).

The paper (Jalwana et al. 2020, Sec. 5.1 / Fig. 3) shows that the perturbation ``p`` computed
on one model carries the target's features: added to images of other classes it makes them
look like the target, and ``p`` alone, rescaled to [0, 1] for display, is itself recognised as
the target. This module measures that for any set of models:

* :func:`rescale` -- ``(p - min) / (max - min)`` per perturbation (all zeros when constant);
* :func:`transfer_confidence` -- per model, the mean target probability (softmax) and the
  top-1 = target rate of ``Clip(held_out + p)``, of ``p`` alone rescaled, and of the held-out
  images without ``p`` (the baseline);
* :class:`A2ETransfer` (registered analyzer ``a2e.transfer``) and its result
  :class:`A2ETransferResult` (one row per (image, model)).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np
import torch

from advinterp.api import (AdversarialBatch, Analyzer, ModelAdapter, Param, ParameterError, Result, as_adapter,
                           get_model)

__all__ = ["rescale", "resolve_models", "transfer_confidence", "A2ETransfer", "A2ETransferResult", "DEFAULT_MODELS"]

#: The registered models ``a2e.transfer`` classifies with by default.
DEFAULT_MODELS = ("synthetic-cnn", "synthetic-cnn-robust")
OWNER = "transfer_confidence"


def rescale(p: torch.Tensor) -> torch.Tensor:
    """``(p - min) / (max - min)`` of each perturbation (``(C,H,W)`` or ``(N,C,H,W)``, min and
    max over one perturbation), as the paper displays ``p``; a constant ``p`` gives zeros."""
    p = torch.as_tensor(p)
    if p.numel() == 0:
        return torch.zeros(p.shape, dtype=p.dtype if p.is_floating_point() else torch.float32)
    flat = p.reshape(1 if p.dim() == 3 else len(p), -1).double()
    lo, hi = flat.min(1, keepdim=True).values, flat.max(1, keepdim=True).values
    span = hi - lo
    out = torch.where(span > 0, (flat - lo) / torch.where(span > 0, span, torch.ones_like(span)),
                      torch.zeros_like(flat))
    return out.reshape(p.shape).to(p.dtype if p.is_floating_point() else torch.float32)


@torch.no_grad()
def _probs(model: ModelAdapter, x: torch.Tensor, target: int, batch_size: int) -> tuple[float, float]:
    """Mean target probability and top-1 = target rate of ``model`` on ``x`` (NaN if empty)."""
    if len(x) == 0:
        return float("nan"), float("nan")
    probs = []
    for s in range(0, len(x), batch_size):
        probs.append(torch.softmax(model.logits(x[s:s + batch_size].to(model.device, model.dtype)).double(), 1).cpu())
    pr = torch.cat(probs)
    return float(pr[:, target].mean()), float((pr.argmax(1) == target).double().mean())


def transfer_confidence(p: Any, target: Any, models: Mapping[str, Any], held_out: Any,
                        batch_size: int = 64) -> dict[str, dict[str, Any]]:
    """Each model's confidence in ``target`` for ``p`` added to held-out images and for ``p`` alone.

    Args:
        p: ``(C, H, W)`` one perturbation or ``(N, C, H, W)`` several (pixel units).
        target: the target class (int), or ``(N,)`` one per perturbation.
        models: ``{name: model}`` (``ModelAdapter`` or anything :func:`advinterp.api.as_adapter` takes).
        held_out: ``(M, C, H, W)`` images in [0, 1], none of the target class (the caller
            chooses them; ``M = 0`` gives NaN for the held-out numbers).
        batch_size: images per forward.

    Returns:
        ``{name: {"held_out": ..., "held_out_top1": ..., "alone": ..., "alone_top1": ...,
        "baseline": ..., "baseline_top1": ...}}``: the mean softmax probability of the target
        (and the fraction of images classified as the target) on ``Clip(held_out + p)``, on
        ``rescale(p)`` (one image) and on ``held_out`` itself. Floats for a 3-D ``p``,
        ``(N,)`` float64 arrays for a 4-D one. The models are run in eval mode and left as they were.
    """
    p = torch.as_tensor(p)
    if p.dim() not in (3, 4) or not p.is_floating_point() or not bool(torch.isfinite(p).all()):
        raise ParameterError(OWNER, "p", tuple(p.shape), "a finite float (C, H, W) or (N, C, H, W) perturbation")
    single = p.dim() == 3
    ps = p.unsqueeze(0) if single else p
    n = len(ps)
    t = torch.as_tensor(target).long().flatten()
    if len(t) == 1 and n != 1:
        t = t.expand(n)
    if len(t) != n:
        raise ParameterError(OWNER, "target", t.tolist(), f"an int or {n} targets (one per perturbation)")
    held = torch.as_tensor(held_out)
    if held.dim() != 4 or tuple(held.shape[1:]) != tuple(ps.shape[1:]):
        raise ParameterError(OWNER, "held_out", tuple(held.shape), f"(M, {', '.join(map(str, ps.shape[1:]))}) images")
    if len(held) and (not bool(torch.isfinite(held).all()) or float(held.min()) < 0 or float(held.max()) > 1):
        raise ParameterError(OWNER, "held_out", "pixels", "pixels in [0, 1] (no NaN)")
    if not isinstance(models, Mapping) or not models:
        raise ParameterError(OWNER, "models", models, "a non-empty {name: model} mapping")
    alone = rescale(ps)
    out: dict[str, dict[str, Any]] = {}
    for name, m in models.items():
        adapter = as_adapter(m)
        shape = tuple(int(s) for s in adapter.input_shape) if adapter.input_shape is not None else None
        if shape is not None and shape != tuple(ps.shape[1:]):
            raise ParameterError(OWNER, "models", name, f"a model taking {tuple(ps.shape[1:])} images",
                                 f"{name!r} takes {shape}.")
        nb = adapter.nb_classes
        if int(t.min()) < 0 or int(t.max()) >= nb:
            raise ParameterError(OWNER, "target", t.tolist(), f"classes in [0, {nb}) of model {name!r}")
        keys = ("held_out", "held_out_top1", "alone", "alone_top1", "baseline", "baseline_top1")
        vals = {k: np.full(n, np.nan) for k in keys}
        with adapter.preserved(freeze=True):
            for i in range(n):
                ti = int(t[i])
                vals["held_out"][i], vals["held_out_top1"][i] = _probs(
                    adapter, (held + ps[i].to(held.dtype)).clamp(0, 1), ti, batch_size)
                vals["alone"][i], vals["alone_top1"][i] = _probs(adapter, alone[i:i + 1], ti, batch_size)
                vals["baseline"][i], vals["baseline_top1"][i] = _probs(adapter, held, ti, batch_size)
        out[name] = {k: float(v[0]) for k, v in vals.items()} if single else vals
    return out


def resolve_models(owner: str, source: Any, include_source: bool, names: Any, user: Any) -> dict[str, Any]:
    """``{name: model}``: the analysed model as ``"source"`` (when ``include_source``), the
    registered models ``names``, then the user's ``{name: model}`` mapping (a context);
    names must be distinct and at least one model must result."""
    models: dict[str, Any] = {"source": source} if include_source else {}
    for name in names:
        if name in models:
            raise ParameterError(owner, "models", name, "distinct names ('source' is the analysed model)")
        models[name] = get_model(name)
    if user is not None:
        if not isinstance(user, Mapping) or not all(isinstance(k, str) for k in user):
            raise ParameterError(owner, "models (context)", user, "a {name: model} mapping")
        for name, m in user.items():
            if name in models:
                raise ParameterError(owner, "models (context)", name, "names not already used",
                                     f"{sorted(models)} are taken.")
            models[name] = m
    if not models:
        raise ParameterError(owner, "models", list(names), "at least one model",
                             "Name registered models, pass context models=..., or include_source=True.")
    return models


def held_out_index(y_true: torch.Tensor, target: int, i: int, limit: int = 0) -> torch.Tensor:
    """The batch's images other than ``i`` whose true label is not ``target`` (the first
    ``limit`` of them in batch order; ``0``: all)."""
    idx = [j for j in range(len(y_true)) if j != i and int(y_true[j]) != int(target)]
    if limit:
        idx = idx[:limit]
    return torch.tensor(idx, dtype=torch.long)


@dataclass(frozen=True)
class A2ETransferResult(Result):
    """``a2e.transfer`` on a batch: per image ``i`` (perturbation ``p_i = x_adv[i] - x0[i]``,
    target ``target[i]``) and per model ``k`` (``models[k]``).

    Attributes:
        models: the model names (the analysed model first as ``"source"`` when included).
        target: ``(N,)`` the targets.
        n_held_out: ``(N,)`` the number of held-out images of each perturbation.
        held_out, held_out_top1: ``(N, K)`` mean target probability / top-1 = target rate on
            ``Clip(held_out + p_i)``.
        alone, alone_top1: ``(N, K)`` the same on ``rescale(p_i)`` alone (one image).
        baseline, baseline_top1: ``(N, K)`` the same on the held-out images without ``p_i``.
        p_alone: ``(N, C, H, W)`` ``rescale(p_i)``, the images classified for "alone".
        l2: ``(N,)`` ``||p_i||_2``.
        attack: the batch's attack.
        params: the analyzer's settings.
    """

    models: tuple
    target: np.ndarray
    n_held_out: np.ndarray
    held_out: np.ndarray
    held_out_top1: np.ndarray
    alone: np.ndarray
    alone_top1: np.ndarray
    baseline: np.ndarray
    baseline_top1: np.ndarray
    p_alone: torch.Tensor
    l2: np.ndarray
    attack: str = ""
    params: dict = field(default_factory=dict)

    def rows(self) -> list[dict[str, Any]]:
        """One row per (image, model)."""
        return [{"image": i, "target": int(self.target[i]), "model": m, "n_held_out": int(self.n_held_out[i]),
                 "baseline": float(self.baseline[i, k]), "p_on_held_out": float(self.held_out[i, k]),
                 "p_on_held_out_top1": float(self.held_out_top1[i, k]), "p_alone": float(self.alone[i, k]),
                 "p_alone_top1": float(self.alone_top1[i, k])}
                for i in range(len(self.target)) for k, m in enumerate(self.models)]

    def summary_rows(self) -> list[dict[str, Any]]:
        """One row per model: the means over images (NaN-aware) of each quantity."""
        out = []
        for k, m in enumerate(self.models):
            def mean(a: np.ndarray) -> float:
                col = a[:, k] if a.size else np.zeros(0)
                col = col[np.isfinite(col)]
                return float(col.mean()) if col.size else float("nan")

            out.append({"model": m, "images": int(len(self.target)), "baseline": mean(self.baseline),
                        "p_on_held_out": mean(self.held_out), "p_on_held_out_top1": mean(self.held_out_top1),
                        "p_alone": mean(self.alone), "p_alone_top1": mean(self.alone_top1)})
        return out


def _models_ok(v: Any) -> bool:
    return isinstance(v, (list, tuple)) and all(isinstance(s, str) and s for s in v) and len(set(v)) == len(v)


class A2ETransfer(Analyzer):
    """Target confidence of other models for a batch's perturbations (C4; Jalwana et al. Fig. 3).

    For each image ``i`` of a targeted batch (``p_i = x_adv[i] - x0[i]``, the effective, clipped
    perturbation; ``t_i = batch.target[i]``) and each model: the mean target probability and
    top-1 = target rate on ``Clip(h + p_i)`` for the held-out images ``h``, on ``p_i`` alone
    rescaled to [0, 1], and on ``h`` without ``p_i`` (baseline) (:func:`transfer_confidence`).

    Held-out images: the batch's other images whose ``y_true`` differs from ``t_i`` (the first
    ``held_out`` of them in batch order; 0 = all). With the ``a2e`` attack's default
    ``distribution="batch"`` these are the images ``p_i`` was computed on (D̄); the ``held_out``
    images of a study's ``a2e`` step are therefore not unseen by the optimisation. For unseen
    images pass another batch through ``a2e.transfer``'s ``held_out_images`` context.

    Parameters: ``models`` (registered model names, default ``["synthetic-cnn",
    "synthetic-cnn-robust"]``), ``include_source`` (True: the analysed model too, as
    ``"source"``), ``held_out`` (0 = all), ``batch_size`` (64).

    Context: ``models``: ``{name: model}`` of the user's own models (added after the
    registered ones); ``held_out_images``: ``(M, C, H, W)`` images and ``held_out_labels``
    ``(M,)`` their labels, used instead of the batch's (those of the target class dropped).
    """

    name = "a2e.transfer"
    context_keys = ("models", "held_out_images", "held_out_labels")
    params = {
        "models": Param(list(DEFAULT_MODELS), _models_ok, "a list of distinct registered model names",
                        doc="registered models that classify the perturbations", invalid=("synthetic-cnn", [3])),
        "include_source": Param.boolean(True, doc="also classify with the analysed model (as 'source')"),
        "held_out": Param.integer(0, low=0, doc="held-out images per perturbation (0: all eligible)"),
        "batch_size": Param.integer(64, low=1, doc="images per forward"),
    }
    conformance_params = {"models": []}

    def _analyze(self, model: ModelAdapter, batch: AdversarialBatch, **context: Any) -> A2ETransferResult:
        owner = f"{type(self).__name__}.analyze"
        n = len(batch.x0)
        models = resolve_models(owner, model, self.include_source, self.models, context.get("models"))
        hx, hy = context.get("held_out_images"), context.get("held_out_labels")
        if (hx is None) != (hy is None):
            raise ParameterError(owner, "held_out_images", None, "held_out_images and held_out_labels together")
        if hx is not None:
            hx, hy = torch.as_tensor(hx), torch.as_tensor(hy).long().flatten()
            if hx.dim() != 4 or len(hx) != len(hy):
                raise ParameterError(owner, "held_out_images", tuple(hx.shape), "(M, C, H, W) with M labels")
        x0, xa = batch.x0.detach().cpu().float(), batch.x_adv.detach().cpu().float()
        k = len(models)
        if n == 0:
            z = np.zeros((0, k))
            return A2ETransferResult(models=tuple(models), target=np.zeros(0, dtype=np.int64),
                                     n_held_out=np.zeros(0, dtype=np.int64), held_out=z, held_out_top1=z, alone=z,
                                     alone_top1=z, baseline=z, baseline_top1=z, p_alone=torch.zeros(0, *x0.shape[1:]),
                                     l2=np.zeros(0), attack=batch.attack or "", params=self.get_params())
        target = batch.target.detach().cpu().long()
        y = batch.y_true.detach().cpu().long()
        p = xa - x0
        cols = {c: np.full((n, k), np.nan) for c in ("held_out", "held_out_top1", "alone", "alone_top1", "baseline",
                                                       "baseline_top1")}
        n_held = np.zeros(n, dtype=np.int64)
        for i in range(n):
            t = int(target[i])
            if hx is None:
                idx = held_out_index(y, t, i, int(self.held_out))
                held = x0[idx]
            else:
                idx = (hy != t).nonzero().flatten()
                if self.held_out:
                    idx = idx[:int(self.held_out)]
                held = hx[idx].cpu().float()
            n_held[i] = len(held)
            res = transfer_confidence(p[i], t, models, held, batch_size=int(self.batch_size))
            for j, name in enumerate(models):
                for c in cols:
                    cols[c][i, j] = res[name][c]
        return A2ETransferResult(models=tuple(models), target=target.numpy(), n_held_out=n_held, **cols,
                                 p_alone=rescale(p), l2=p.flatten(1).norm(dim=1).double().numpy(),
                                 attack=batch.attack or "", params=self.get_params())
