"""``activation_distance``: per-layer distance of activations, clean vs adversarial (A11).

For each layer l and image n: ``d[n, l] = ||A_l(x0_n) - A_l(x'_n)||_2`` and the relative
distance ``d[n, l] / ||A_l(x0_n)||_2`` (Fig. A8 of the PSE paper averages these per layer).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..components import Analyzer
from ..params import Param
from ..results import Result


@dataclass(frozen=True)
class ActivationDistanceResult(Result):
    """Attributes: ``layers`` (L names); ``distance`` and ``relative`` ``(N, L)`` arrays."""

    layers: tuple[str, ...]
    distance: np.ndarray
    relative: np.ndarray

    per_image = ("distance", "relative")

    def mean(self) -> dict[str, float]:
        """Mean distance per layer over the images where it is finite (``nan`` for none)."""
        return {l: _finite_stat(self.distance[:, i], np.mean) for i, l in enumerate(self.layers)}

    def rows(self) -> list[dict[str, Any]]:
        """One row per layer: ``n`` images, ``n_valid`` with a finite distance, and the mean /
        std distance and mean relative distance over those."""
        return [{"layer": l, "n": len(self.distance), "n_valid": int(np.isfinite(self.distance[:, i]).sum()),
                 "distance": _finite_stat(self.distance[:, i], np.mean),
                 "distance_std": _finite_stat(self.distance[:, i], np.std),
                 "relative": _finite_stat(self.relative[:, i], np.mean)} for i, l in enumerate(self.layers)]


def _finite_stat(v: np.ndarray, stat: Any) -> float:
    """``stat`` of the finite entries of ``v``, ``nan`` when there are none."""
    v = np.asarray(v, dtype=np.float64)
    v = v[np.isfinite(v)]
    return float(stat(v)) if len(v) else float("nan")


def valid_layers(v: Any) -> bool:
    """What a ``layers`` parameter accepts: ``None``, ``"all"`` or a list of layer names."""
    return v is None or v == "all" or (isinstance(v, (list, tuple)) and all(isinstance(s, str) for s in v))


def resolve_layers(model: Any, layers: Any) -> tuple[str, ...]:
    """The layer names a ``layers`` parameter means on ``model``: ``None`` -> the feature
    stages (``model.feature_layers()``), ``"all"`` -> every leaf layer (``model.leaf_layers()``),
    a list -> itself."""
    if layers is None:
        return tuple(model.feature_layers())
    if layers == "all":
        return tuple(model.leaf_layers())
    return tuple(layers)


class ActivationDistance(Analyzer):
    """Per-layer Euclidean distance between clean and adversarial activations.

    Parameters: ``layers`` (None: the model's feature stages, see
    ``ModelAdapter.feature_layers``; ``"all"``: every leaf module with a tensor output, in
    forward order, see ``ModelAdapter.leaf_layers`` -- the x-axis of the paper's Fig. A8; or a
    list of layer names), ``batch_size`` (128).
    """

    name = "activation_distance"
    shardable = True
    params = {
        "layers": Param(None, lambda v: valid_layers(v), 'None, "all" or a list of layer names',
                        invalid=("layer4", [1])),
        "batch_size": Param.integer(128, low=1),
    }

    def _analyze(self, model, batch, **context):
        layers = resolve_layers(model, self.layers)
        dist, rel = [], []
        dev = model.device
        for i in range(0, len(batch), self.batch_size):
            x0 = batch.x0[i:i + self.batch_size].to(dev, model.dtype)
            xa = batch.x_adv[i:i + self.batch_size].to(dev, model.dtype)
            with torch.no_grad():
                a = model.activations(torch.cat([x0, xa]), layers, copy=self.layers == "all")
            n = len(x0)
            d = torch.stack([(a[l][:n] - a[l][n:]).flatten(1).norm(dim=1) for l in layers], 1)
            c = torch.stack([a[l][:n].flatten(1).norm(dim=1) for l in layers], 1)
            dist.append(d.cpu())
            rel.append((d / c.clamp_min(1e-12)).cpu())
        shape = (0, len(layers))
        return ActivationDistanceResult(layers, torch.cat(dist).numpy() if dist else np.zeros(shape),
                                        torch.cat(rel).numpy() if rel else np.zeros(shape))
