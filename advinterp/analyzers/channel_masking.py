"""``channel_masking``: zero the feature-map channels that differ most between clean and
adversarial images and re-evaluate (Ding et al., Sec. 4.5, Tables 8-9; the "neuron masking"
defence: robustness gained vs clean accuracy lost).

:func:`masked_channels` is a reusable context manager: inside it the outputs of the chosen
layers have the chosen channels set to zero, through forward hooks that return a masked copy
(the module's own output tensor is not written); the hooks are removed on exit, also when the
body raises.

The analyzer ranks channels by the mean per-channel RMSE of a ``feature_rmse`` result (context
``rmse``; without it, computed on the batch with feature_rmse's defaults), masks the top ``k``
(or explicit ``channels``) and measures top-1 label and confidence of the clean and the
adversarial images before and after (:class:`~advinterp.analyzers.confidence_change.Top1Change`,
the paper's tables and change statistics). It also sweeps the masked fraction of the ranked
channels (most different first) and records clean and adversarial accuracy per fraction.
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
import torch

from ..components import Analyzer
from ..exceptions import IncompatibleModelError, ParameterError
from ..params import Param
from ..progress import progress_bar
from ..results import Result
from .confidence_change import Top1Change, top1
from .feature_rmse import is_channel_list, parse_channel, ranking_from

__all__ = ["masked_channels", "ChannelMaskingAnalyzer", "ChannelMasking", "group_channels"]


def group_channels(pairs: Sequence[tuple[str, int]]) -> dict[str, list[int]]:
    """``[(layer, channel), ...]`` -> ``{layer: [channels]}`` (first-seen order, no repeats)."""
    out: dict[str, list[int]] = {}
    for layer, c in pairs:
        lst = out.setdefault(layer, [])
        if int(c) not in lst:
            lst.append(int(c))
    return out


@contextlib.contextmanager
def masked_channels(model: Any, channels: Mapping[str, Sequence[int]]) -> Iterator[Any]:
    """Zero ``channels`` ``{layer name: [channel indices]}`` of the layers' outputs inside the block.

    ``model``: a :class:`~advinterp.ModelAdapter` (or ``nn.Module``). Each layer gets a forward
    hook returning a copy of its ``(N, C, ...)`` output with those channels (dim 1) set to zero
    (every call of the module, when it runs several times); the module's own output, weights
    and buffers are not written. Hooks are removed on exit, also on exceptions. A channel
    outside ``[0, C)`` raises :class:`ParameterError` at the first forward.
    """
    from ..model import as_adapter

    adapter = as_adapter(model)
    mods = {}
    for layer, chans in channels.items():
        try:
            mods[layer] = (adapter.layer(layer), sorted({int(c) for c in chans}))
        except IncompatibleModelError as e:
            raise ParameterError("masked_channels", "channels", layer, "names of layers of the model", str(e)) from None

    def make_hook(layer: str, idx: list[int]):
        def hook(_m, _i, o):
            t = o[0] if isinstance(o, (tuple, list)) else o
            if t.ndim < 2 or (idx and idx[-1] >= t.shape[1]) or (idx and idx[0] < 0):
                raise ParameterError("masked_channels", "channels", f"{layer}:{idx[-1] if idx else ''}",
                                     f"channels in [0, {t.shape[1] if t.ndim >= 2 else 0}) of a (N, C, ...) output",
                                     f"{layer!r} gives shape {tuple(t.shape)}.")
            keep = torch.ones(t.shape[1], dtype=t.dtype, device=t.device)
            keep[idx] = 0
            masked = t * keep.view(1, -1, *([1] * (t.ndim - 2)))
            if isinstance(o, tuple):
                return (masked, *o[1:])
            if isinstance(o, list):
                return [masked, *o[1:]]
            return masked
        return hook

    handles = []
    try:
        for layer, (m, idx) in mods.items():
            handles.append(m.register_forward_hook(make_hook(layer, idx)))
        yield adapter
    finally:
        for h in handles:
            h.remove()


@dataclass(frozen=True)
class ChannelMasking(Result):
    """Result of ``channel_masking``.

    Attributes:
        channels: the masked channels of :attr:`change`, ``"layer:channel"``, most different first.
        change: top-1 of clean and adversarial images before and after masking them (Tables 8-9).
        fractions: ``(F,)`` masked fractions of the ranked channels in the sweep.
        n_masked: ``(F,)`` channels masked per fraction (``round(fraction * n_ranked)``).
        clean_accuracy, adv_accuracy: ``(F,)`` top-1 accuracy (against ``y_true``) of the clean and
            adversarial images with that many channels masked (``nan`` for no images).
        n_ranked: channels in the ranking (all channels of the ranked layers).
        source: where the ranking came from: ``"context"`` (a feature_rmse step), ``"batch"``
            (computed on the batch), ``"explicit"`` (``channels`` given, no sweep ranking needed).
        rmse: ``(len(channels),)`` the ranking's mean RMSE of each masked channel (``nan`` when
            not ranked).
    """

    channels: tuple[str, ...]
    change: Top1Change
    fractions: tuple[float, ...]
    n_masked: tuple[int, ...]
    clean_accuracy: np.ndarray
    adv_accuracy: np.ndarray
    n_ranked: int
    source: str
    rmse: np.ndarray

    def statistics(self) -> dict[str, Any]:
        """:meth:`Top1Change.statistics` of the mask with ``k`` (channels masked)."""
        return {"k": len(self.channels), **self.change.statistics()}

    def sweep_rows(self) -> list[dict[str, Any]]:
        """Per fraction: ``fraction``, ``n_masked``, ``clean_acc``, ``adv_acc`` and the changes
        against fraction 0 (or the first fraction): ``clean_cost`` (accuracy lost) and
        ``adv_gain`` (adversarial accuracy gained)."""
        base_c = float(self.clean_accuracy[0]) if len(self.fractions) else float("nan")
        base_a = float(self.adv_accuracy[0]) if len(self.fractions) else float("nan")
        return [{"fraction": float(f), "n_masked": int(k), "clean_acc": float(c), "adv_acc": float(a),
                 "clean_cost": base_c - float(c), "adv_gain": float(a) - base_a}
                for f, k, c, a in zip(self.fractions, self.n_masked, self.clean_accuracy, self.adv_accuracy)]

    def rows(self) -> list[dict[str, Any]]:
        """One row: :meth:`statistics` with the ranking's source."""
        return [{"source": self.source, **self.statistics()}]


def _valid_fractions(v: Any) -> bool:
    return isinstance(v, (list, tuple)) and all(
        isinstance(f, (int, float)) and not isinstance(f, bool) and math.isfinite(f) and 0 <= f <= 1 for f in v)


def check_channels_in(owner: str, model: Any, pairs: Sequence[tuple[str, int]], counts: Mapping[str, int]) -> None:
    """Refuse a channel outside ``[0, counts[layer])`` naming it and the layer's channel count."""
    for layer, c in pairs:
        if not 0 <= c < counts[layer]:
            raise ParameterError(owner, "channels", f"{layer}:{c}", f"a channel in [0, {counts[layer]}) of {layer!r}",
                                 f"{layer!r} of {model.name} has {counts[layer]} channels.")


def layer_channel_counts(model: Any, layers: Sequence[str], x: torch.Tensor | None) -> dict[str, int]:
    """``{layer: C}`` from one forward of the first image of ``x`` (or a grey ``input_shape`` image)."""
    from .feature_rmse import _channel_counts

    return _channel_counts(model, list(dict.fromkeys(layers)), x)


class ChannelMaskingAnalyzer(Analyzer):
    """Mask (zero) the channels most different between clean and adversarial feature maps;
    top-1 before/after (Tables 8-9) and accuracy vs masked fraction (neuron-masking defence).

    Parameters: ``channels`` (None: the top ``k`` of the ranking; or an explicit list of
    ``"layer:channel"`` strings, e.g. ``["layer1.conv:35"]``), ``k`` (10), ``fractions`` (the
    sweep: masked fractions of the ranked channels, most different first, default
    ``[0, 0.01, 0.02, 0.05, 0.1, 0.2]``; ``[]``: no sweep), ``batch_size`` (128 images per
    forward; the ranking computed on the batch uses feature_rmse's default of 32 pairs).

    Context: ``rmse``: a :class:`~advinterp.analyzers.feature_rmse.FeatureRMSE` (a feature_rmse
    step) ranking the channels; without it the ranking is computed on the batch itself.
    """

    name = "channel_masking"
    context_keys = ("rmse",)
    params = {
        "channels": Param(None, is_channel_list, 'None or a non-empty list of "layer:channel" strings',
                          invalid=("layer1", ["layer1"], ["layer1:x"], [])),
        "k": Param.integer(10, low=1),
        "fractions": Param([0, 0.01, 0.02, 0.05, 0.1, 0.2], _valid_fractions,
                           "a list of fractions in [0, 1]", invalid=([1.5], "0.1", [-0.1])),
        "batch_size": Param.integer(128, low=1),
    }
    conformance_params = {"k": 2, "fractions": [0, 0.5], "batch_size": 3}

    def _analyze(self, model, batch, **context):
        owner = f"{type(self).__name__}.analyze"
        x0, xa = batch.x0.detach(), batch.x_adv.detach()
        y = batch.y_true
        ranked: list[dict[str, Any]] = []
        source = "explicit"
        if self.channels is None or self.fractions:
            res, source = ranking_from(owner, model, batch, context.get("rmse"))
            ranked = res.ranking()
        if self.channels is not None:
            pairs = [parse_channel(owner, "channels", s) for s in self.channels]
            source = "explicit"
            for layer in dict.fromkeys(l for l, _ in pairs):
                try:
                    model.layer(layer)
                except IncompatibleModelError as e:
                    raise ParameterError(owner, "channels", layer, "names of layers of the model", str(e)) from None
            check_channels_in(owner, model, pairs, layer_channel_counts(model, [l for l, _ in pairs], x0))
        else:
            pairs = [(e["layer"], e["channel"]) for e in ranked[:self.k]]
        score = {(e["layer"], e["channel"]): e["rmse"] for e in ranked}
        rmse = np.array([score.get(p, float("nan")) for p in pairs], np.float64)

        bs = self.batch_size
        before = (top1(model, x0, bs), top1(model, xa, bs))
        with masked_channels(model, group_channels(pairs)):
            change = Top1Change.measure(model, x0, xa, y, before=before, batch_size=bs)

        y_np = np.asarray(torch.as_tensor(y).cpu().numpy(), np.int64)

        def acc(labels: np.ndarray) -> float:
            return float((labels == y_np).mean()) if len(y_np) else float("nan")

        fractions = tuple(float(f) for f in self.fractions)
        n_masked = tuple(int(round(f * len(ranked))) for f in fractions)
        clean, adv = [], []
        for k in progress_bar(n_masked, desc="channel_masking sweep", total=len(n_masked)):
            chosen = group_channels([(e["layer"], e["channel"]) for e in ranked[:k]])
            with masked_channels(model, chosen):
                clean.append(acc(top1(model, x0, bs)[0]))
                adv.append(acc(top1(model, xa, bs)[0]))
        return ChannelMasking(tuple(f"{l}:{c}" for l, c in pairs), change, fractions, n_masked,
                              np.asarray(clean, np.float64), np.asarray(adv, np.float64), len(ranked), source, rmse)
