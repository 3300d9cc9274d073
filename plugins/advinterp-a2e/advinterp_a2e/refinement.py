"""Algorithm 2 of Jalwana et al. (CVPR 2020): perturbation refinement, and the ``a2e``
support rule built on it.

Line by line, for a perturbation ``p`` ``(N, C, H, W)`` and its seed images ``d``:

2. ``Omega = K~(p)``: the output ``(N, C', h, w)`` of the convolutional base, the layer
   ``layer`` (``None``: the layer feeding global pooling, ``model.cam_layer``). ``p`` enters
   the network as a perturbation of the network's input, ``p / std`` (``input_space=
   "normalized"``, default: the model's normalisation without its mean shift) or as if it were
   an image (``"pixels"``: ``(p - mean) / std``).
3. ``a = mean_c Omega^c``  ``(N, h, w)``.
4. ``tau = Otsu(a)`` per image (``skimage.filters.threshold_otsu``).
5. ``a <- lambda * [a > tau]`` (``lambda = 5``).
6. ``f = upsample(a)`` to ``(H, W)``, bicubic (``align_corners=False``); bicubic overshoot is
   clamped to ``[0, lambda]`` (``clamp_filter=True``) so the filter never flips the sign of ``p``.
7. ``p <- Clip(p * f)``: clipped so that ``d + p`` stays in [0, 1] (``p`` in ``[-d, 1 - d]``).

An image whose ``a`` is constant has no Otsu split (``a > tau`` is empty); its ``p`` is left
unchanged and its mask is all False.

The support rule ``a2e`` (``advinterp_register_supports``): the Otsu region of an
adversarial batch's perturbation ``x_adv - x0``, ``upsample([a > tau]) >= 0.5`` (bicubic), as
an ``(N, 1, H, W)`` bool mask -- the region Algorithm 2 keeps.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from advinterp.api import ModelAdapter, ParameterError, as_adapter

__all__ = ["channel_mean_activation", "otsu_mask", "refine_perturbation", "a2e_support"]


def channel_mean_activation(model: ModelAdapter, p: torch.Tensor, layer: str | None = None,
                            input_space: str = "normalized") -> torch.Tensor:
    """Lines 2-3: ``a`` ``(N, h, w)``, the channel mean of the convolutional base applied to ``p``."""
    adapter = as_adapter(model)
    layer = adapter.cam_layer if layer is None else layer
    if input_space not in ("normalized", "pixels"):
        raise ParameterError("refine_perturbation", "input_space", input_space, "'normalized' or 'pixels'")
    x = p.to(adapter.device, adapter.dtype)
    if input_space == "normalized" and adapter.mean is not None:
        # normalize(x) = (x - mean) / std, so feeding p + mean gives p / std
        x = x + torch.tensor(adapter.mean, device=x.device, dtype=x.dtype).view(1, -1, 1, 1)
    with torch.no_grad():
        omega = adapter.activations(x, [layer])[layer]
    if omega.ndim != 4:
        raise ParameterError("refine_perturbation", "layer", layer, "a layer with a spatial (N, C, h, w) output",
                             f"It gives shape {tuple(omega.shape)}; use the last convolutional stage.")
    return omega.float().mean(1)


def otsu_mask(a: torch.Tensor) -> torch.Tensor:
    """Lines 4-5 without lambda: ``[a > Otsu(a)]`` per image, ``(N, h, w)`` bool (all False for a
    constant ``a``). The threshold is ``skimage.filters.threshold_otsu``."""
    from skimage.filters import threshold_otsu

    out = torch.zeros(a.shape, dtype=torch.bool)
    for i, ai in enumerate(a.detach().cpu().double().numpy()):
        if not np.isfinite(ai).all() or ai.max() == ai.min():
            continue
        out[i] = torch.from_numpy(ai > threshold_otsu(ai))
    return out


def _upsample(mask: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    return F.interpolate(mask.float()[:, None], size=size, mode="bicubic", align_corners=False)


def refine_perturbation(model: Any, p: torch.Tensor, seed_images: torch.Tensor, *, layer: str | None = None,
                        scale: float = 5.0, input_space: str = "normalized", clamp_filter: bool = True
                        ) -> tuple[torch.Tensor, torch.Tensor]:
    """Algorithm 2 on ``p`` ``(N, C, H, W)`` for seeds ``seed_images`` ``(N, C, H, W)``.

    Returns ``(p_refined, mask)``: the refined perturbation (``seed + p_refined`` in [0, 1]) and
    the ``(N, h, w)`` bool Otsu mask ``[a > tau]``. Images with a constant ``a`` keep their ``p``.
    """
    if not (float(scale) > 0):
        raise ParameterError("refine_perturbation", "scale", scale, "a number > 0", "The paper uses lambda = 5.")
    a = channel_mean_activation(model, p, layer, input_space)
    mask = otsu_mask(a)
    f = _upsample(mask, tuple(p.shape[-2:])).to(p.device, p.dtype) * float(scale)   # lines 5-6
    if clamp_filter:
        f = f.clamp(0, float(scale))
    d = seed_images.to(p.device, p.dtype)
    refined = torch.maximum(torch.minimum(p * f, 1 - d), -d)                         # line 7
    flat = ~mask.flatten(1).any(1)  # no Otsu split: leave p as it was
    if flat.any():
        refined[flat.to(p.device)] = p[flat.to(p.device)]
    return refined, mask


def a2e_support(model: Any, batch: Any, *, layer: str | None = None, input_space: str = "normalized",
                **context: Any) -> torch.Tensor:
    """Support ``a2e``: the Otsu region of Algorithm 2 for the perturbation ``x_adv - x0`` of an
    :class:`~advinterp.AdversarialBatch`, ``(N, 1, H, W)`` bool (bicubic upsample >= 0.5).

    ``layer``: the convolutional base's output (``None``: ``model.cam_layer``)."""
    adapter = as_adapter(model)
    n, _, h, w = batch.x0.shape
    if n == 0:
        return torch.zeros(0, 1, h, w, dtype=torch.bool)
    with adapter.preserved(freeze=True):
        a = channel_mean_activation(adapter, (batch.x_adv - batch.x0).float(), layer, input_space)
    mask = otsu_mask(a)
    return (_upsample(mask, (h, w)) >= 0.5).cpu()
