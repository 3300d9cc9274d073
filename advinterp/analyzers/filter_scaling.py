"""``filter_scaling``: multiply the convolution filters producing chosen output channels by a
factor and re-evaluate (Ding et al., Sec. 4.5, Tables 10-13: the filters of the first layer
whose feature maps are the most sensitive to the attack, and of the last block whose maps are
the least sensitive, enlarged by 1.8).

:func:`scaled_filters` is a reusable context manager: inside it ``weight[c]`` and ``bias[c]``
of each chosen ``nn.Conv2d`` are multiplied by ``factor`` (so output channel ``c`` of the conv
becomes ``factor`` times what it was); on exit, also when the body raises, the saved rows are
written back bit for bit.

The analyzer picks ``k`` output channels of the target convs, most (or least) different
between clean and adversarial feature maps by the mean per-channel RMSE of those convs' outputs
(context ``rmse``, a feature_rmse result covering them; or computed on the batch), scales their
filters and measures top-1 of clean and adversarial images before and after
(:class:`~advinterp.analyzers.confidence_change.Top1Change`).
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from ..components import Analyzer
from ..exceptions import IncompatibleModelError, ParameterError
from ..params import Param
from ..results import Result
from .channel_masking import group_channels
from .confidence_change import Top1Change, top1
from .feature_rmse import FeatureRMSE, is_channel_list, parse_channel, ranking_from

__all__ = ["scaled_filters", "FilterScalingAnalyzer", "FilterScaling", "target_convs"]


def _conv(owner: str, model: Any, layer: str) -> nn.Conv2d:
    """The ``nn.Conv2d`` called ``layer``; ``ParameterError`` naming the fix otherwise."""
    try:
        m = model.layer(layer)
    except IncompatibleModelError as e:
        raise ParameterError(owner, "layer", layer, "the name of an nn.Conv2d of the model", str(e)) from None
    if not isinstance(m, nn.Conv2d):
        convs = [n for n, c in model.module.named_modules() if isinstance(c, nn.Conv2d)]
        raise ParameterError(owner, "layer", layer, "the name of an nn.Conv2d of the model",
                             f"{layer!r} is a {type(m).__name__}; its convolutions are: "
                             f"{', '.join(convs[:8])}{' ...' if len(convs) > 8 else ''}.")
    return m


@contextlib.contextmanager
def scaled_filters(model: Any, channels: Mapping[str, Sequence[int]], factor: float) -> Iterator[Any]:
    """Multiply the filters of ``channels`` ``{conv layer: [output channels]}`` by ``factor`` inside the block.

    ``model``: a :class:`~advinterp.ModelAdapter` (or ``nn.Module``); each layer must be an
    ``nn.Conv2d``, each channel in ``[0, out_channels)`` (``ParameterError`` otherwise, before
    anything is changed). ``weight[c]`` ``(C_in / groups, kh, kw)`` and ``bias[c]`` (when the conv
    has one) are multiplied in place; the original rows are saved first and written back on exit,
    bit for bit, also when the block raises.
    """
    from ..model import as_adapter

    owner = "scaled_filters"
    if isinstance(factor, bool) or not isinstance(factor, (int, float)) or not math.isfinite(factor):
        raise ParameterError(owner, "factor", factor, "a finite number")
    adapter = as_adapter(model)
    plan = []
    for layer, chans in channels.items():
        conv = _conv(owner, adapter, layer)
        idx = sorted({int(c) for c in chans})
        bad = [c for c in idx if not 0 <= c < conv.out_channels]
        if bad:
            raise ParameterError(owner, "channels", f"{layer}:{bad[0]}", f"output channels in [0, {conv.out_channels})",
                                 f"{layer!r} has {conv.out_channels} output channels.")
        plan.append((conv, torch.tensor(idx, dtype=torch.long, device=conv.weight.device)))
    saved = []
    try:
        with torch.no_grad():
            for conv, idx in plan:
                saved.append((conv, idx, conv.weight[idx].clone(), None if conv.bias is None else conv.bias[idx].clone()))
                conv.weight[idx] = conv.weight[idx] * factor
                if conv.bias is not None:
                    conv.bias[idx] = conv.bias[idx] * factor
        yield adapter
    finally:
        with torch.no_grad():
            for conv, idx, w, b in reversed(saved):
                conv.weight[idx] = w
                if b is not None:
                    conv.bias[idx] = b


def target_convs(owner: str, model: Any, target: str) -> tuple[str, ...]:
    """The convs a ``target`` means: ``"first"``: the first ``nn.Conv2d`` run by forward;
    ``"last"``: every ``nn.Conv2d`` inside the last feature stage (``model.feature_layers()[-1]``,
    e.g. ResNet's ``layer4``; the stage itself when it is a conv), in forward order; else the
    name of one ``nn.Conv2d``."""
    if target not in ("first", "last"):
        _conv(owner, model, target)
        return (target,)
    convs = [n for n in model.leaf_layers() if isinstance(model.layer(n), nn.Conv2d)]
    if not convs:
        raise IncompatibleModelError(f"{model.name}: forward() runs no nn.Conv2d; filter_scaling needs one.")
    if target == "first":
        return (convs[0],)
    stage = model.feature_layers()[-1]
    inside = [n for n in convs if n == stage or n.startswith(stage + ".")]
    if not inside:
        raise IncompatibleModelError(f"{model.name}: the last feature stage {stage!r} holds no nn.Conv2d; pass "
                                     "target=<conv layer name>.")
    return tuple(inside)


@dataclass(frozen=True)
class FilterScaling(Result):
    """Result of ``filter_scaling``.

    Attributes:
        factor: the scale of the filters; ``target``, ``which``: the parameters (``"explicit"``
            for ``which`` when channels were given).
        layers: the convs considered (the ranking's layers).
        channels: the scaled output channels, ``"layer:channel"``, in ranking order.
        rmse: ``(k,)`` their mean RMSE in the ranking (``nan`` for explicit channels).
        source: ``"context"``, ``"batch"`` or ``"explicit"``: where the ranking came from.
        change: top-1 of clean and adversarial images before and after (Tables 10-13).
    """

    factor: float
    target: str
    which: str
    layers: tuple[str, ...]
    channels: tuple[str, ...]
    rmse: np.ndarray
    source: str
    change: Top1Change

    def statistics(self) -> dict[str, Any]:
        """:meth:`Top1Change.statistics` with ``target``, ``which``, ``factor`` and ``k``."""
        return {"target": self.target, "which": self.which, "factor": float(self.factor), "k": len(self.channels),
                **self.change.statistics()}

    def rows(self) -> list[dict[str, Any]]:
        """One row: :meth:`statistics`."""
        return [self.statistics()]


class FilterScalingAnalyzer(Analyzer):
    """Multiply the conv filters of the most (or least) attack-sensitive channels by a factor;
    top-1 and confidence of clean and adversarial images before/after (Tables 10-13).

    Parameters: ``factor`` (1.8), ``target`` (``"first"``: the first ``nn.Conv2d`` run;
    ``"last"``: the convs of the last feature stage; or a conv layer name), ``which``
    (``"most"`` | ``"least"``: the channels ranked by the RMSE of the target convs' outputs),
    ``k`` (10 channels), ``channels`` (None, or an explicit list of ``"conv layer:channel"``
    strings; ``target`` and ``which`` are then not used), ``batch_size`` (128 images per
    forward).

    Defaults: the paper's (a), the sensitive filters of the first layer; (b) is
    ``target="last", which="least"``.

    Context: ``rmse``: a :class:`~advinterp.analyzers.feature_rmse.FeatureRMSE` covering the
    target convs (feature_rmse's default layers include every conv); without it the RMSE of the
    target convs is computed on the batch.
    """

    name = "filter_scaling"
    context_keys = ("rmse",)
    params = {
        "factor": Param.number(1.8, doc="the scale of the chosen filters"),
        "target": Param("first", lambda v: isinstance(v, str) and bool(v),
                        '"first", "last" or the name of an nn.Conv2d layer', invalid=("", 1)),
        "which": Param.choice("most", ("most", "least")),
        "k": Param.integer(10, low=1),
        "channels": Param(None, is_channel_list, 'None or a non-empty list of "conv layer:channel" strings',
                          invalid=("conv1", ["conv1"], ["conv1:x"], [])),
        "batch_size": Param.integer(128, low=1),
    }
    conformance_params = {"k": 2, "batch_size": 3}

    def _ranking(self, owner: str, model: Any, batch: Any, layers: tuple[str, ...], rmse: Any) -> tuple[list, str]:
        if rmse is not None:
            if not isinstance(rmse, FeatureRMSE):
                raise ParameterError(owner, "rmse", type(rmse).__name__, "a FeatureRMSE (the result of a feature_rmse step)",
                                     'In a study: context = { rmse = "<feature_rmse step id>" }.')
            missing = [l for l in layers if l not in rmse.layers]
            if missing:
                raise ParameterError(owner, "rmse", f"a FeatureRMSE of layers {list(rmse.layers)[:6]}...",
                                     f"a FeatureRMSE covering the target convs {list(layers)}",
                                     f"Run feature_rmse with layers including {missing[0]!r} (its default does), "
                                     "or drop the context to compute it on this batch.")
        res, source = ranking_from(owner, model, batch, rmse, layers=layers)
        return res.ranking(layers), source

    def _analyze(self, model, batch, **context):
        owner = f"{type(self).__name__}.analyze"
        x0, xa = batch.x0.detach(), batch.x_adv.detach()
        if self.channels is not None:
            pairs = [parse_channel(owner, "channels", s) for s in self.channels]
            for layer in dict.fromkeys(l for l, _ in pairs):
                conv = _conv(owner, model, layer)
                bad = [c for l, c in pairs if l == layer and not c < conv.out_channels]
                if bad:
                    raise ParameterError(owner, "channels", f"{layer}:{bad[0]}",
                                         f"an output channel in [0, {conv.out_channels}) of {layer!r}",
                                         f"{layer!r} has {conv.out_channels} output channels.")
            layers = tuple(dict.fromkeys(l for l, _ in pairs))
            rmse = np.full(len(pairs), np.nan)
            source, which = "explicit", "explicit"
        else:
            layers = target_convs(owner, model, self.target)
            ranked, source = self._ranking(owner, model, batch, layers, context.get("rmse"))
            if self.which == "least":
                ranked = [e for e in reversed(ranked) if not np.isnan(e["rmse"])]
            chosen = ranked[:self.k]
            pairs = [(e["layer"], e["channel"]) for e in chosen]
            rmse = np.array([e["rmse"] for e in chosen], np.float64)
            which = self.which
        bs = self.batch_size
        before = (top1(model, x0, bs), top1(model, xa, bs))
        with scaled_filters(model, group_channels(pairs), float(self.factor)):
            change = Top1Change.measure(model, x0, xa, batch.y_true, before=before, batch_size=bs)
        return FilterScaling(float(self.factor), self.target, which, layers, tuple(f"{l}:{c}" for l, c in pairs),
                             rmse, source, change)
