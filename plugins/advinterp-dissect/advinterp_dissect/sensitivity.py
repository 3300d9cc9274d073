"""Unit masks ``M_k(x)`` of any images and the unit sensitivity of eq. (8) (A9).

With the thresholds ``T_k`` of a dissection, the binary segmentation of unit ``k`` on an
image ``x`` is ``M_k(x) = S_k(x) > T_k``, ``S_k`` the unit's map resized (:func:`~advinterp_dissect.resize.resize_maps`) to a
chosen size (default: the input resolution, as in the PSE paper). The sensitivity of ``k``
to adversarial perturbations is (eq. 8)::

    v(k) = E_(x, x') ||M_k(x) - M_k(x')||_2 = mean over pairs of sqrt(#pixels where the masks differ)

Example::

    from advinterp_dissect import dissect, unit_sensitivity
    d = dissect(model, broden_root, layers=["layer4"])
    v = unit_sensitivity(model, d, x0, x_adv)          # {"layer4": (U,) float64}
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
import torch

from advinterp.api import ParameterError, as_adapter, check_images

from .dissection import Dissection, _spatial, threshold_as
from .resize import resize_maps

__all__ = ["unit_masks", "unit_sensitivity"]


def _thresholds(dissection: Any, owner: str) -> dict[str, np.ndarray]:
    if isinstance(dissection, Dissection):
        return dissection.thresholds()
    if isinstance(dissection, Mapping) and all(isinstance(k, str) for k in dissection):
        return {k: np.asarray(v, dtype=np.float64) for k, v in dissection.items()}
    raise ParameterError(owner, "dissection", dissection, "a Dissection or a {layer: thresholds} dict")


def _layers(th: Mapping[str, np.ndarray], layers: Sequence[str] | str | None, owner: str) -> list[str]:
    if layers is None:
        return list(th)
    if isinstance(layers, str):
        layers = [layers]
    bad = [n for n in layers if n not in th]
    if bad or not layers:
        raise ParameterError(owner, "layers", layers, f"None or names among the dissected layers {list(th)}")
    return list(layers)


def _size(size: Any, x: torch.Tensor, owner: str) -> tuple[int, int]:
    if size is None:
        return tuple(int(s) for s in x.shape[-2:])
    if isinstance(size, int) and not isinstance(size, bool) and size > 0:
        return (size, size)
    if (isinstance(size, (tuple, list)) and len(size) == 2
            and all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in size)):
        return (int(size[0]), int(size[1]))
    raise ParameterError(owner, "size", size, "None (the input size), a positive int or an (h, w) pair")


def _masks(model, thresholds: Mapping[str, np.ndarray], x: torch.Tensor, layers: list[str],
           size: tuple[int, int]) -> dict[str, torch.Tensor]:
    """``{layer: (B, U, h, w) bool}`` for one batch already on the model's device."""
    acts = model.activations(x, layers)
    out = {}
    for name in layers:
        a = _spatial(acts, name, model)
        T = torch.as_tensor(thresholds[name], dtype=torch.float64, device=a.device)
        if T.shape != (a.shape[1],):
            raise ParameterError("unit_masks", "dissection", None,
                                 f"{a.shape[1]} thresholds for layer {name!r} (found {tuple(T.shape)}); "
                                 "was the dissection made on this model?")
        up = resize_maps(a, size)
        out[name] = up > threshold_as(T, up.dtype)[:, None, None]
    return out


def unit_masks(model: Any, dissection: Any, x: Any, layers: Sequence[str] | str | None = None,
               size: Any = None, batch_size: int = 64) -> dict[str, torch.Tensor]:
    """``M_k(x)`` for every unit of ``layers``.

    Args:
        model: :class:`~advinterp.ModelAdapter` (or ``nn.Module``); never changed.
        dissection: a :class:`~advinterp_dissect.dissection.Dissection` (its thresholds),
            or ``{layer: (U,) thresholds}``.
        x: ``(N, C, H, W)`` pixels in [0, 1].
        layers: default: every layer of ``dissection``.
        size: mask size, int or ``(h, w)`` (default: the input's ``(H, W)``).
        batch_size: images per forward pass (64).

    Returns:
        ``{layer: (N, U, h, w) bool}`` on ``x``'s device.
    """
    owner = "unit_masks"
    adapter = as_adapter(model)
    x = check_images(owner, x)
    th = _thresholds(dissection, owner)
    names = _layers(th, layers, owner)
    hw = _size(size, x, owner)
    parts: dict[str, list[torch.Tensor]] = {n: [] for n in names}
    with adapter.preserved(freeze=True), torch.no_grad():
        for i in range(0, len(x), batch_size):
            m = _masks(adapter, th, x[i:i + batch_size].to(adapter.device, adapter.dtype), names, hw)
            for n in names:
                parts[n].append(m[n].to(x.device))
    return {n: torch.cat(v) if v else torch.zeros(0, dtype=torch.bool) for n, v in parts.items()}


def unit_sensitivity(model: Any, dissection: Any, x0: Any, x_adv: Any, layers: Sequence[str] | str | None = None,
                     size: Any = None, batch_size: int = 64) -> dict[str, np.ndarray]:
    """``v(k) = mean over pairs ||M_k(x0) - M_k(x_adv)||_2`` (eq. 8) for every unit.

    Args:
        model, dissection, layers, size, batch_size: as :func:`unit_masks`.
        x0: ``(N, C, H, W)`` clean pixels in [0, 1].
        x_adv: ``(N, C, H, W)`` their adversarial versions (any attack).

    Returns:
        ``{layer: (U,) float64}``; the masks are compared at ``size`` (default the input's),
        so ``v(k)`` is in ``[0, sqrt(h w)]``.
    """
    owner = "unit_sensitivity"
    adapter = as_adapter(model)
    x0 = check_images(owner, x0, "x0")
    x_adv = check_images(owner, x_adv, "x_adv")
    if x0.shape != x_adv.shape:
        raise ParameterError(owner, "x_adv", x_adv, f"the shape of x0 {tuple(x0.shape)}")
    if len(x0) == 0:
        raise ParameterError(owner, "x0", x0, "at least one image pair")
    th = _thresholds(dissection, owner)
    names = _layers(th, layers, owner)
    hw = _size(size, x0, owner)
    total: dict[str, torch.Tensor] = {}
    with adapter.preserved(freeze=True), torch.no_grad():
        for i in range(0, len(x0), batch_size):
            a = x0[i:i + batch_size].to(adapter.device, adapter.dtype)
            b = x_adv[i:i + batch_size].to(adapter.device, adapter.dtype)
            m = _masks(adapter, th, torch.cat([a, b]), names, hw)       # one forward for both
            n = len(a)
            for name in names:
                diff = (m[name][:n] != m[name][n:]).flatten(2).sum(2).double().sqrt()   # (n, U)
                total[name] = total.get(name, 0) + diff.sum(0)
    return {name: (total[name] / len(x0)).cpu().numpy() for name in names}
