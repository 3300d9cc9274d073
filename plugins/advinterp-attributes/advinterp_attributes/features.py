"""Image features theta(x) for SJE (Gulshad et al. 2020, Sec. 3.2 and Fig. 3: the CNN's pooled
features): the global average pool of one layer's output.

* :func:`features` -- ``(N, C)`` float32 pooled features of a model layer, computed in batches,
  the model left exactly as it was (eval mode, hooks and ``requires_grad`` restored by
  :meth:`advinterp.api.ModelAdapter.activations`).
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from advinterp.api import ParameterError, as_adapter, check_images

__all__ = ["features"]


def features(model: Any, images: torch.Tensor, layer: str | None = None, batch_size: int = 256) -> np.ndarray:
    """Global-average-pooled features of ``layer`` for ``images``.

    Args:
        model: any model :func:`advinterp.api.as_adapter` accepts (e.g.
            ``advinterp.get_model("synthetic-cnn")``).
        images: ``(N, C, H, W)`` pixels in [0, 1].
        layer: layer name (``ModelAdapter.layer_names()``); default the model's ``cam_layer``, the
            last spatial layer, whose global average pool feeds the linear classifier of a
            GAP + linear head (``layer4`` of the shipped ``synthetic-cnn``: 96 features, what
            its ``fc`` sees; a ResNet's ``layer4``: the paper's pooled ResNet features).
        batch_size: images per forward (default 256).

    Returns:
        ``(N, C)`` float32: the layer's output averaged over every dimension after the channel
        one (a ``(N, C)`` output is returned as it is).
    """
    owner = "features"
    adapter = as_adapter(model)
    x = check_images(owner, images, "images", adapter.input_shape)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ParameterError(owner, "batch_size", batch_size, "an integer >= 1")
    name = adapter.cam_layer if layer is None else layer
    adapter.layer(name)  # a clear error (close names) for an unknown layer
    out = []
    with torch.no_grad():
        for i in range(0, len(x), batch_size):
            a = adapter.activations(x[i:i + batch_size], [name])[name]
            a = a.flatten(2).mean(2) if a.dim() > 2 else a.reshape(len(a), -1)
            out.append(a.float().cpu())
    if not out:
        return np.zeros((0, 0), np.float32)
    return torch.cat(out).numpy()
