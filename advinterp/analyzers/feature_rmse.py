"""``feature_rmse``: per-channel RMSE between clean and adversarial feature maps (Ding et al.,
Sec. 4.4, eq. 4, Tables 4-7, Fig. 4).

For every channel ``c`` of every chosen layer ``l`` and pair ``(x0, x')``::

    RMSE_{l,c}(x0, x') = sqrt( mean_{i,j} (A_l(x0)[c, i, j] - A_l(x')[c, i, j])^2 )

(eq. 4 of the paper, taken per channel: ``H x W`` is the channel's spatial size), averaged over
the pairs. Channels are ranked globally (all layers together); the paper's finding is that the
most different channels sit in the first activation / pooling layers and the least different
ones in the last stage.

Streaming: one forward of ``cat([x0, x'])`` per batch of ``batch_size`` pairs with every layer
hooked at once; the hooks reduce each output to its ``(B, C)`` per-pair RMSE at the moment the
module returns it (so later in-place operations cannot alter it and no activation is kept),
and float64 sums are accumulated. Memory does not grow with the number of pairs; only the
first pair's maps are kept (for Fig. 4).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from ..components import Analyzer
from ..exceptions import IncompatibleModelError, ParameterError
from ..params import Param
from ..progress import progress_bar
from ..results import Result
from .activation_distance import valid_layers

__all__ = ["FeatureRMSEAnalyzer", "FeatureRMSE", "rmse_layers", "feature_rmse_sums", "parse_channel", "is_channel_list",
           "FEATURE_TYPES"]

#: The module types whose outputs the default ``layers`` take: convolutions, activations, pooling.
FEATURE_TYPES: tuple[type, ...] = (
    nn.modules.conv._ConvNd,
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU, nn.Mish,
    nn.Hardswish, nn.Hardsigmoid, nn.Hardtanh, nn.Sigmoid, nn.Tanh, nn.Softplus,
    nn.modules.pooling._MaxPoolNd, nn.modules.pooling._AvgPoolNd, nn.modules.pooling._AdaptiveAvgPoolNd,
    nn.modules.pooling._AdaptiveMaxPoolNd, nn.modules.pooling._LPPoolNd,
)


@dataclass(frozen=True)
class FeatureRMSE(Result):
    """Result of ``feature_rmse``.

    Attributes:
        layers: the ``L`` layer names, in forward order.
        channels: ``(L,)`` channel counts ``C_l``.
        rmse: per layer a ``(C_l,)`` float64 array: the mean over pairs of the per-channel RMSE
            (``nan`` when there are no pairs).
        n: pairs averaged.
        map_layers, map_channels: the ``n_maps`` most different channels (by the global
            ranking) whose maps of the first pair are kept (Fig. 4).
        maps_clean, maps_adv: their ``(h, w)`` float32 maps for the first pair's clean and
            adversarial image.
    """

    layers: tuple[str, ...]
    channels: tuple[int, ...]
    rmse: tuple[np.ndarray, ...]
    n: int
    map_layers: tuple[str, ...] = ()
    map_channels: tuple[int, ...] = ()
    maps_clean: tuple[np.ndarray, ...] = ()
    maps_adv: tuple[np.ndarray, ...] = ()

    def layer_rmse(self, layer: str) -> np.ndarray:
        """The ``(C,)`` mean RMSE of every channel of ``layer``."""
        if layer not in self.layers:
            raise ParameterError("FeatureRMSE.layer_rmse", "layer", layer, f"one of {list(self.layers)}",
                                 "Run feature_rmse with layers= including it.")
        return np.asarray(self.rmse[self.layers.index(layer)], np.float64)

    def ranking(self, layers: Sequence[str] | None = None) -> list[dict[str, Any]]:
        """Every channel (of ``layers``, default all), most different first: ``rank`` (1-based),
        ``layer``, ``layer_index`` (position in forward order), ``channel``, ``name``
        (``"layer:channel"``, the form ``channel_masking`` accepts; the paper writes
        ``activation_1_35``) and ``rmse``. Ties and ``nan`` keep forward order (``nan`` last)."""
        keep = set(self.layers if layers is None else layers)
        entries = [(li, l, c, float(v)) for li, (l, r) in enumerate(zip(self.layers, self.rmse)) if l in keep
                   for c, v in enumerate(np.asarray(r, np.float64))]
        order = sorted(range(len(entries)),
                       key=lambda i: (np.isnan(entries[i][3]), -entries[i][3] if not np.isnan(entries[i][3]) else 0, i))
        return [{"rank": r + 1, "layer": entries[i][1], "layer_index": entries[i][0], "channel": entries[i][2],
                 "name": f"{entries[i][1]}:{entries[i][2]}", "rmse": entries[i][3]} for r, i in enumerate(order)]

    def most(self, k: int = 10, layers: Sequence[str] | None = None) -> list[dict[str, Any]]:
        """The ``k`` most different channels (Tables 4 and 6)."""
        return self.ranking(layers)[:k]

    def least(self, k: int = 10, layers: Sequence[str] | None = None) -> list[dict[str, Any]]:
        """The ``k`` least different channels, least first (Tables 5 and 7); ``nan`` ones are skipped."""
        r = [e for e in self.ranking(layers) if not np.isnan(e["rmse"])]
        return list(reversed(r))[:k]

    def layer_means(self) -> list[dict[str, Any]]:
        """Per layer in forward order: ``layer``, ``index``, ``channels``, ``mean`` / ``max`` RMSE
        over its channels (the finding "RMSE is largest in the early layers")."""
        out = []
        for i, (l, c, r) in enumerate(zip(self.layers, self.channels, self.rmse)):
            r = np.asarray(r, np.float64)
            ok = r[np.isfinite(r)]
            out.append({"layer": l, "index": i, "channels": int(c),
                        "mean": float(ok.mean()) if len(ok) else float("nan"),
                        "max": float(ok.max()) if len(ok) else float("nan")})
        return out

    def rows(self) -> list[dict[str, Any]]:
        """:meth:`layer_means` with ``n``."""
        return [{"n": self.n, **r} for r in self.layer_means()]


# ---------------------------------------------------------------------------- layers
def _example(model: Any, x: torch.Tensor | None) -> torch.Tensor:
    """One input image ``(1, C, H, W)`` for a shape-discovery forward."""
    if x is not None and len(x):
        return x[:1].to(model.device, model.dtype)
    if model.input_shape is None:
        raise IncompatibleModelError(f"{model.name}: cannot find the layers' output shapes without images or "
                                     "input_shape; pass ModelAdapter(..., input_shape=(C, H, W)).")
    return torch.full((1, *model.input_shape), 0.5, device=model.device, dtype=model.dtype)


def rmse_layers(model: Any, layers: Any = None, x: torch.Tensor | None = None,
                owner: str = "feature_rmse") -> tuple[str, ...]:
    """The layers a ``layers`` parameter means on ``model`` (a ModelAdapter), in forward order.

    ``None``: every leaf (``model.leaf_layers()``) that is a convolution, activation or pooling
    module (:data:`FEATURE_TYPES`) with a 4-d ``(N, C, h, w)`` output; ``"all"``: every leaf
    with a 4-d output; a list: itself, each checked to exist and give a 4-d output
    (``ParameterError`` otherwise). ``x``: images whose first one is used to find the output
    shapes (default: a grey image of ``model.input_shape``).
    """
    ex = _example(model, x)
    if layers is None or layers == "all":
        leaves = model.leaf_layers()
        if layers is None:
            leaves = [n for n in leaves if isinstance(model.layer(n), FEATURE_TYPES)]
        with torch.no_grad():
            acts = model.activations(ex, leaves, truncate=False) if leaves else {}
        chosen = tuple(n for n in leaves if acts[n].ndim == 4)
        if not chosen:
            raise IncompatibleModelError(f"{model.name}: no {'convolution/activation/pooling ' if layers is None else ''}"
                                         "leaf layer with a 4-d (N, C, h, w) output; pass layers=[...] explicitly.")
        return chosen
    names = tuple(layers)
    if not names:
        raise ParameterError(owner, "layers", list(layers), "a non-empty list of layer names", 'Or None / "all".')
    for n in names:
        try:
            model.layer(n)
        except IncompatibleModelError as e:
            raise ParameterError(owner, "layers", n, "names of layers of the model", str(e)) from None
    with torch.no_grad():
        acts = model.activations(ex, list(dict.fromkeys(names)), truncate=False)
    flat = [n for n in names if acts[n].ndim != 4]
    if flat:
        raise ParameterError(owner, "layers", flat[0], "layers with a 4-d (N, C, h, w) output",
                             f"{flat[0]!r} gives shape {tuple(acts[flat[0]].shape)}; choose convolution, activation "
                             "or pooling layers (the default, layers=None, picks them).")
    return tuple(dict.fromkeys(names))


def parse_channel(owner: str, name: str, spec: Any) -> tuple[str, int]:
    """``"layer:channel"`` -> ``(layer, channel)``; ``ParameterError`` naming the form otherwise."""
    if not isinstance(spec, str) or ":" not in spec:
        raise ParameterError(owner, name, spec, 'channels as "layer:channel" strings, e.g. "layer1.conv:35"')
    layer, _, c = spec.rpartition(":")
    if not layer or not c.isdigit():
        raise ParameterError(owner, name, spec, 'channels as "layer:channel" strings, e.g. "layer1.conv:35"')
    return layer, int(c)


def is_channel_list(v: Any) -> bool:
    """What a ``channels`` parameter accepts: ``None`` or a non-empty list of ``"layer:channel"``
    strings (:func:`parse_channel`)."""
    if v is None:
        return True
    if not isinstance(v, (list, tuple)) or not v:
        return False
    try:
        for s in v:
            parse_channel("", "channels", s)
    except ParameterError:
        return False
    return True


# ---------------------------------------------------------------------------- streaming core
def feature_rmse_sums(model: Any, x0: torch.Tensor, x_adv: torch.Tensor, layers: Sequence[str],
                      batch_size: int = 32, keep_first: bool = False, desc: str = "feature_rmse"
                      ) -> tuple[dict[str, torch.Tensor], int, dict[str, tuple[torch.Tensor, torch.Tensor]]]:
    """Sum over pairs of the per-channel RMSE of ``layers``.

    One forward of ``cat([x0_b, x'_b])`` per batch of ``batch_size`` pairs with all layers
    hooked; each hook reduces the module's output ``(2B, C, h, w)`` to the ``(B, C)`` RMSE at
    once (a module run several times counts at its last call, like ``ModelAdapter.activations``).

    Returns:
        ``({layer: (C,) float64 sum on the model's device}, n pairs, first)`` where ``first`` is
        ``{layer: (clean (C, h, w), adversarial (C, h, w))}`` of the first pair when
        ``keep_first`` (else empty).
    """
    mods = {n: model.layer(n) for n in layers}
    sums: dict[str, torch.Tensor] = {}
    first: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    current: dict[str, torch.Tensor] = {}
    state = {"b": 0, "keep": False}

    def make_hook(name: str):
        def hook(_m, _i, o):
            o = o[0] if isinstance(o, (tuple, list)) else o
            b = state["b"]
            d = o[:b].detach() - o[b:].detach()
            current[name] = torch.mean(d.pow(2), dim=(2, 3), dtype=torch.float64).sqrt()
            if state["keep"]:
                first[name] = (o[0].detach().float().clone(), o[b].detach().float().clone())
        return hook

    n = 0
    dev = model.device
    handles = []
    try:
        for name, m in mods.items():
            handles.append(m.register_forward_hook(make_hook(name)))
        starts = range(0, len(x0), batch_size)
        for i in progress_bar(starts, desc=desc, total=len(starts)):
            a = x0[i:i + batch_size].to(dev, model.dtype)
            b = x_adv[i:i + batch_size].to(dev, model.dtype)
            state["b"], state["keep"] = len(a), keep_first and i == 0
            current.clear()
            with torch.no_grad():
                model.logits(torch.cat([a, b]))
            missing = [l for l in layers if l not in current]
            if missing:
                raise IncompatibleModelError(f"{model.name}: layers {missing} were not run by forward().")
            for l in layers:
                s = current[l].sum(0)
                sums[l] = sums[l] + s if l in sums else s
            n += len(a)
    finally:
        for h in handles:
            h.remove()
    return sums, n, first


def _channel_counts(model: Any, layers: Sequence[str], x: torch.Tensor | None) -> dict[str, int]:
    with torch.no_grad():
        acts = model.activations(_example(model, x), list(layers), truncate=False)
    return {l: int(acts[l].shape[1]) for l in layers}


class FeatureRMSEAnalyzer(Analyzer):
    """Per-channel RMSE between clean and adversarial feature maps, every chosen layer
    (Ding et al. eq. 4, Tables 4-7; the maps of Fig. 4).

    Parameters: ``layers`` (None: every convolution / activation / pooling leaf with a 4-d
    output, in forward order; ``"all"``: every leaf with a 4-d output; or a list of layer
    names), ``batch_size`` (32 pairs per forward of ``2 * batch_size`` images), ``n_maps`` (4:
    the clean and adversarial maps of the first pair kept for the ``n_maps`` most different
    channels; 0: none).

    A dataset-level statistic: every pair counts, whether the attack succeeded or not.
    """

    name = "feature_rmse"
    context_keys = ()
    params = {
        "layers": Param(None, valid_layers, 'None, "all" or a list of layer names', invalid=("layer4", [1])),
        "batch_size": Param.integer(32, low=1),
        "n_maps": Param.integer(4, low=0),
    }
    conformance_params = {"batch_size": 3, "n_maps": 2}

    def _analyze(self, model, batch, **context):
        x0, xa = batch.x0.detach(), batch.x_adv.detach()
        layers = rmse_layers(model, self.layers, x0)
        sums, n, first = feature_rmse_sums(model, x0, xa, layers, self.batch_size,
                                           keep_first=self.n_maps > 0)
        counts = _channel_counts(model, layers, x0) if n == 0 else {l: int(sums[l].shape[0]) for l in layers}
        rmse = tuple((sums[l] / n).cpu().numpy() if n else np.full(counts[l], np.nan) for l in layers)
        res = FeatureRMSE(layers, tuple(counts[l] for l in layers), rmse, n)
        if n and self.n_maps:
            top = res.most(self.n_maps)
            res = FeatureRMSE(res.layers, res.channels, res.rmse, n,
                              tuple(e["layer"] for e in top), tuple(e["channel"] for e in top),
                              tuple(first[e["layer"]][0][e["channel"]].cpu().numpy() for e in top),
                              tuple(first[e["layer"]][1][e["channel"]].cpu().numpy() for e in top))
        return res


def ranking_from(owner: str, model: Any, batch: Any, rmse: Any, layers: Any = None,
                 batch_size: int = 32) -> tuple[FeatureRMSE, str]:
    """A :class:`FeatureRMSE` for ranking channels: ``rmse`` (a context result) when given, else
    computed on ``batch`` with ``layers`` (None: feature_rmse's default). Returns ``(result,
    source)`` with ``source`` ``"context"`` or ``"batch"``. Refuses a context of another type and
    an empty batch (nothing to rank)."""
    if rmse is not None:
        if not isinstance(rmse, FeatureRMSE):
            raise ParameterError(owner, "rmse", type(rmse).__name__, "a FeatureRMSE (the result of a feature_rmse step)",
                                 'In a study: context = { rmse = "<feature_rmse step id>" }.')
        return rmse, "context"
    if not len(batch.x0):
        raise ParameterError(owner, "batch", "0 pairs", "at least one pair to rank the channels on",
                             "Pass a feature_rmse result as context rmse=, or explicit channels=.")
    return FeatureRMSEAnalyzer(layers=list(layers) if layers is not None else None, batch_size=batch_size,
                               n_maps=0)._analyze(model, batch), "batch"
