"""``activation_maps``: channel-mean activation maps, clean vs adversarial (Fig. 9 / A9).

For the first ``n_images`` pairs of a batch and each chosen layer ``l`` with a spatial output
``A_l`` of shape ``(N, C_l, H_l, W_l)``: the mean over channels of ``A_l(x0)`` and of
``A_l(x')``, two ``(N, H_l, W_l)`` float32 maps. The PSE paper (Xu et al., Fig. 9 and A9)
shows them for a natural and a robust model, clean and adversarial input, layer by layer.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..components import Analyzer
from ..exceptions import ParameterError
from ..params import Param
from ..results import Result
from .activation_distance import resolve_layers, valid_layers


@dataclass(frozen=True)
class ActivationMapsResult(Result):
    """Attributes: ``layers`` (L names, forward order); ``clean`` and ``adv``
    ``{layer: (N, H_l, W_l) float32 array}`` (channel means of the clean and adversarial
    activations); ``y_true`` ``(N,)`` labels and ``y_adv`` ``(N,)`` adversarial predictions
    (``-1`` where the batch did not record them)."""

    layers: tuple[str, ...]
    clean: dict[str, np.ndarray]
    adv: dict[str, np.ndarray]
    y_true: np.ndarray
    y_adv: np.ndarray

    per_image = ("clean", "adv", "y_true", "y_adv")

    def __len__(self) -> int:
        return len(self.y_true)

    def rows(self) -> list[dict[str, Any]]:
        """One row per layer: ``n`` images, the map size, the mean clean and adversarial map
        values and the mean absolute difference of the two maps."""
        out = []
        for l in self.layers:
            c, a = np.asarray(self.clean[l], np.float64), np.asarray(self.adv[l], np.float64)
            nan = float("nan")
            out.append({"layer": l, "n": len(c), "height": int(c.shape[1]), "width": int(c.shape[2]),
                        "clean_mean": float(c.mean()) if c.size else nan,
                        "adv_mean": float(a.mean()) if a.size else nan,
                        "abs_diff": float(np.abs(c - a).mean()) if c.size else nan})
        return out


class ActivationMaps(Analyzer):
    """Channel-mean activation maps of the first images of a batch, clean and adversarial.

    Parameters: ``n_images`` (4: the first images of the batch; the figure of the paper
    shows a few examples), ``layers`` (None: the model's feature stages, see
    ``ModelAdapter.feature_layers``; ``"all"``: every leaf layer with a spatial output, in
    forward order; or a list of layer names, each with an ``(N, C, H, W)`` output).
    """

    name = "activation_maps"
    shardable = False  # "the first n_images of the batch" is not image-wise
    params = {
        "n_images": Param.integer(4, low=1),
        "layers": Param(None, valid_layers, 'None, "all" or a list of layer names', invalid=("layer4", [1])),
    }

    def _analyze(self, model, batch, **context):
        layers = resolve_layers(model, self.layers)
        n = min(self.n_images, len(batch))
        x0 = batch.x0[:n].to(model.device, model.dtype)
        xa = batch.x_adv[:n].to(model.device, model.dtype)
        with torch.no_grad():
            acts = model.activations(torch.cat([x0, xa]), layers, copy=True)
        if self.layers == "all":
            layers = tuple(l for l in layers if acts[l].ndim == 4)
        else:
            flat = [f"{l} {tuple(acts[l].shape[1:])}" for l in layers if acts[l].ndim != 4]
            if flat:
                raise ParameterError(f"{type(self).__name__}.analyze", "layers", list(layers),
                                     "layers with spatial (N, C, H, W) outputs",
                                     f"Not spatial: {', '.join(flat)}.")
        clean = {l: acts[l][:n].float().mean(1).cpu().numpy() for l in layers}
        adv = {l: acts[l][n:].float().mean(1).cpu().numpy() for l in layers}
        y_adv = batch.y_adv[:n] if batch.y_adv is not None else torch.full((n,), -1)
        return ActivationMapsResult(layers, clean, adv, batch.y_true[:n].cpu().long().numpy(),
                                    y_adv.cpu().long().numpy())
