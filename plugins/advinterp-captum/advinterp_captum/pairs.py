"""The four maps of an adversarial pair: F(x0, t0), F(x', t0), F(x0, t), F(x', t).

``t0`` is the true class (``batch.y_true``), ``t`` the adversarial class (``batch.target``:
the attack's target, or the adversarial prediction of an untargeted attack), ``x'`` the
adversarial image. Fig. 3 of the PSE paper shows them side by side, normalised to a common
maximum per image.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from advinterp import AdversarialBatch, Explainer, ParameterError, Result
from advinterp.components import check_images, check_labels
from advinterp.model import as_adapter

__all__ = ["PairMaps", "explain_pair"]

KEYS = ("x0_t0", "xadv_t0", "x0_t", "xadv_t")


@dataclass(frozen=True)
class PairMaps(Result):
    """Maps of the clean and adversarial images for the true and the adversarial class.

    Attributes:
        x0_t0, xadv_t0, x0_t, xadv_t: ``(N, H, W)`` maps at input resolution:
            F(x0, t0), F(x', t0), F(x0, t), F(x', t).
        layer_maps: ``{key: (N, h, w)}`` the same four at the layer's resolution (divided by
            the same ``scale``, so ``maps`` is still the bilinear upsampling of ``layer_maps``).
        scale: ``(N,)`` the per-image divisor applied (ones when not normalised): the raw
            maps are ``x0_t0 * scale[:, None, None]`` etc.
        t0, t: ``(N,)`` the true and the adversarial classes.
        method, layer: the explainer's name and the explained layer.
        normalized: whether the maps were divided by their common per-image maximum.
    """

    x0_t0: torch.Tensor
    xadv_t0: torch.Tensor
    x0_t: torch.Tensor
    xadv_t: torch.Tensor
    layer_maps: dict[str, torch.Tensor] = field(default_factory=dict)
    scale: torch.Tensor | None = None
    t0: torch.Tensor | None = None
    t: torch.Tensor | None = None
    method: str = ""
    layer: str = ""
    normalized: bool = True

    kind = "pair_maps"

    def maps(self) -> dict[str, torch.Tensor]:
        """``{key: (N, H, W)}`` for the four keys ``x0_t0, xadv_t0, x0_t, xadv_t``."""
        return {k: getattr(self, k) for k in KEYS}

    def __len__(self) -> int:
        return len(self.x0_t0)

    def rows(self) -> list[dict[str, Any]]:
        return [{"method": self.method, "layer": self.layer, "n": len(self),
                 "map_size": "x".join(map(str, self.x0_t0.shape[1:])), "normalized": self.normalized,
                 **{f"mean_{k}": float(v.mean()) if v.numel() else float("nan") for k, v in self.maps().items()}}]


def explain_pair(explainer: Explainer, model: Any, batch: AdversarialBatch, normalize: bool = True) -> PairMaps:
    """F(x0, t0), F(x', t0), F(x0, t), F(x', t) of ``batch`` with ``explainer``.

    The plugin's explainers share passes: CAM runs one forward over ``[x0; x']`` and reads
    both classes' maps from it; Grad-CAM / Grad-CAM++ run one forward+backward over the
    stacked ``[x0; x']`` per class (two in all, in chunks of ``batch_size`` images). Any other
    :class:`advinterp.Explainer` is called four times.

    Args:
        explainer: an explainer instance (e.g. ``advinterp.get_explainer("gradcam")``).
        model: :class:`~advinterp.ModelAdapter` or ``nn.Module``.
        batch: the adversarial batch; ``t = batch.target``, ``t0 = batch.y_true``.
        normalize: divide the four maps of each image by their common maximum of ``|map|``
            (at input resolution), so the largest value over the four is 1 (for non-negative
            maps; all-zero images are left at 0).

    Returns:
        :class:`PairMaps` on ``batch.x0``'s device and dtype.
    """
    owner = "explain_pair"
    if not isinstance(explainer, Explainer):
        raise ParameterError(owner, "explainer", explainer, "an advinterp.Explainer instance",
                             "Use advinterp.get_explainer('gradcam').")
    if not isinstance(batch, AdversarialBatch):
        raise ParameterError(owner, "batch", batch, "an advinterp.AdversarialBatch",
                             "Build one with an attack's generate() or AdversarialBatch.from_pair(x0, x_adv, y).")
    adapter = as_adapter(model)
    x0 = check_images(owner, batch.x0, "batch.x0")
    xa = check_images(owner, batch.x_adv, "batch.x_adv")
    n = len(x0)
    t0 = check_labels(owner, batch.y_true, n, adapter.nb_classes, "batch.y_true")
    t = check_labels(owner, batch.target, n, adapter.nb_classes, "batch.target")
    dev, dtype = x0.device, x0.dtype
    size = tuple(x0.shape[-2:])

    from .explainers import CaptumLayerExplainer

    if isinstance(explainer, CaptumLayerExplainer):
        with adapter.preserved(freeze=True):
            x = torch.cat([x0, xa]).to(adapter.device, adapter.dtype)
            tt0 = torch.cat([t0, t0]).to(adapter.device)
            tt = torch.cat([t, t]).to(adapter.device)
            layer = explainer.layer_name(adapter)
            m_t0, m_t = explainer.layer_maps_multi(adapter, x, [tt0, tt], layer)
        layer_maps = {"x0_t0": m_t0[:n], "xadv_t0": m_t0[n:], "x0_t": m_t[:n], "xadv_t": m_t[n:]}
        method = explainer.name or type(explainer).__name__
    else:
        attrs = {"x0_t0": explainer.explain(adapter, x0, t0), "xadv_t0": explainer.explain(adapter, xa, t0),
                 "x0_t": explainer.explain(adapter, x0, t), "xadv_t": explainer.explain(adapter, xa, t)}
        layer_maps = {k: a.layer_maps for k, a in attrs.items()}
        layer, method = attrs["x0_t0"].layer, attrs["x0_t0"].method

    layer_maps = {k: v.detach().to(dev, dtype) for k, v in layer_maps.items()}
    maps = {k: torch.nn.functional.interpolate(v[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]
            for k, v in layer_maps.items()}
    scale = torch.ones(n, device=dev, dtype=dtype)
    if normalize and n:
        peak = torch.stack([m.abs().flatten(1).amax(1) for m in maps.values()]).amax(0)
        scale = torch.where(peak > 0, peak, torch.ones_like(peak))
        maps = {k: v / scale[:, None, None] for k, v in maps.items()}
        layer_maps = {k: v / scale[:, None, None] for k, v in layer_maps.items()}
    return PairMaps(**maps, layer_maps=layer_maps, scale=scale, t0=t0.to(dev), t=t.to(dev), method=method,
                    layer=layer, normalized=bool(normalize))
