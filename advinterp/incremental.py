"""Exact incremental inference for grid ablation on a ``torch.fx``-traced CNN.

An ablated image ``x' - delta_G`` differs from ``x'`` only inside the window ``G``, so most of
every early feature map of it equals ``x'``'s. Incremental view maintenance for CNN inference
(Krypton; Nakandala, Kumar and Papakonstantinou, SIGMOD 2019) runs ``x'`` once, keeps every
feature map, and then recomputes, layer by layer, only the region that the window's change
reaches. :class:`IncrementalModel` does this for a batch of windows at once:

* **the changed box** of every node (one ``[y, x]`` corner per sample and one size for the
  batch) is propagated through the graph: a convolution or pool grows it by its kernel,
  stride, padding and dilation (:func:`conv_box`); an elementwise op keeps it; an ``add`` /
  ``mul`` / ``cat`` of two changed maps takes the union (:func:`union_box`); boxes are clamped
  into the map (a box only needs to *contain* the changed positions);
* **each conv / pool** is computed on the changed box plus its halo only: the halo is cropped
  from the cached map of ``x'`` (zero padding outside the map for convolutions, ``-inf`` for
  max pools), the sample's changed patch is pasted into it, and the layer runs with no
  padding on the stacked crops of the whole batch (``crop`` / ``paste``: the grid-ablation
  backend's ops, the ``advinterp-gridablate`` kernels where built, :mod:`advinterp.patches`
  otherwise);
* **global average pooling** is updated from the cached mean plus the change inside the box;
* **full computation** takes over from the first node whose box covers at least
  ``threshold`` of its map (default 0.6: the crops would then cost more than they save): the
  patch is pasted into a copy of the cached map (:meth:`materialize`) and every later node runs
  as in the model;
* an **unsupported op** reached by a changed map gets the full maps of its inputs and runs
  as in the model: the rest of the graph goes the full path, never a wrong answer
  (:attr:`IncrementalModel.fallbacks` names those nodes).

Supported on the incremental path (``SUPPORTED``): ``nn.Conv2d`` (``padding_mode="zeros"``,
numeric padding, any stride / dilation / groups), ``nn.MaxPool2d`` and ``nn.AvgPool2d``
(``ceil_mode=False``; average pools without padding), ``nn.BatchNorm2d`` in eval mode with
running statistics, ``nn.AdaptiveAvgPool2d`` to 1x1 (global pooling) or to the input's own
size (identity), the elementwise activations ``ReLU``, ``ReLU6``, ``LeakyReLU``, ``ELU``,
``GELU``, ``SiLU``, ``Sigmoid``, ``Tanh``, ``Hardswish``, ``Hardsigmoid`` (as modules, in
``torch.nn.functional``, ``torch.*`` or as tensor methods), ``Identity``, ``Dropout`` in eval
mode, ``+``, ``-``, ``*`` of two changed maps of the same shape or of a map and a number, and
``torch.cat`` along the channels. Everything else (``flatten``, ``Linear``, ...) runs on full
maps; for classifiers these come after global pooling, where the whole map has changed anyway.

Exactness: every recomputed value is the same arithmetic as the model's on the same inputs,
so the logits equal a full forward of the ablated images up to the float rounding of a
convolution run on a smaller input (about 1e-6 relative in float32). A changed position
always lies inside its node's box (:meth:`IncrementalModel.run` with ``keep=True`` returns
every node's box so tests can check it against brute force).
"""
from __future__ import annotations

import math
import operator
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from .exceptions import AdvinterpError, ParameterError
from .model import is_stride_error
from .patches import crop_patches, paste_patches

__all__ = ["IncrementalModel", "IncrementalCache", "IncrementalUnavailable", "RunInfo", "conv_box", "union_box",
           "spatial_fallbacks", "incremental_window_logits", "incremental_class_logits",
           "SUPPORTED", "trace_incremental"]


class IncrementalUnavailable(AdvinterpError):
    """The model cannot run incrementally at all (``torch.fx`` cannot trace it); the message
    says why. Callers (``pse``, ``occlusion``) then take the full path."""


# ------------------------------------------------------------------ op tables
_ELEMENTWISE_MODULES = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Sigmoid, nn.Tanh,
                        nn.Hardswish, nn.Hardsigmoid, nn.Identity)
_ELEMENTWISE_FUNCTIONS = {F.relu, F.relu6, F.leaky_relu, F.elu, F.gelu, F.silu, F.hardswish, F.hardsigmoid,
                          torch.relu, torch.sigmoid, torch.tanh, torch.sigmoid, F.sigmoid, F.tanh}
_ELEMENTWISE_METHODS = {"relu", "relu_", "sigmoid", "tanh", "contiguous", "clone"}
_BINARY = {operator.add, operator.sub, operator.mul, torch.add, torch.sub, torch.mul, operator.iadd,
           operator.imul, operator.isub}
_BINARY_METHODS = {"add", "add_", "sub", "mul", "mul_"}

SUPPORTED = ("Conv2d", "MaxPool2d", "AvgPool2d", "BatchNorm2d (eval)", "AdaptiveAvgPool2d (1x1 or identity)",
             "ReLU", "ReLU6", "LeakyReLU", "ELU", "GELU", "SiLU", "Sigmoid", "Tanh", "Hardswish", "Hardsigmoid",
             "Identity", "Dropout (eval)", "add / sub / mul", "cat (channels)")


def trace_incremental(module: nn.Module) -> torch.fx.GraphModule:
    """``torch.fx.symbolic_trace(module)``, raising :class:`IncrementalUnavailable` with the
    reason when it cannot be traced (data-dependent control flow, ``len(x)``, numpy on the
    input, ...). An exception of the model's own type (not a builtin or torch error) is the
    model's failure, not the tracer's: it propagates as the forward's would."""
    try:
        return torch.fx.symbolic_trace(module)
    except Exception as e:  # fx raises many types (TraceError, TypeError, RuntimeError, ...)
        if not type(e).__module__.split(".")[0] in ("builtins", "torch"):
            raise
        raise IncrementalUnavailable(f"torch.fx cannot trace {type(module).__name__}: {type(e).__name__}: {e}"
                                     ) from None


def _spatial_mean_dims(node) -> bool:
    """``x.mean((2, 3))`` / ``torch.mean(x, dim=(-2, -1), keepdim=...)``: a global average pool."""
    dims = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim")
    if not isinstance(dims, (list, tuple)) or node.kwargs.get("dtype") is not None:
        return False
    return sorted(int(d) % 4 if int(d) < 0 else int(d) for d in dims) == [2, 3]


def _is_inplace(node, module) -> bool:
    """Does the fx node overwrite its first input?"""
    if module is not None:
        return bool(getattr(module, "inplace", False))
    if node.kwargs.get("inplace"):
        return True
    if node.op == "call_method" and isinstance(node.target, str):
        return node.target.endswith("_") and not node.target.endswith("__")
    return node.op == "call_function" and node.target in (operator.iadd, operator.imul, operator.isub)


# ------------------------------------------------------------------ box arithmetic
def _pair(v) -> tuple[int, int]:
    return (int(v), int(v)) if isinstance(v, int) else (int(v[0]), int(v[1]))


def conv_box(start: torch.Tensor, size: int, kernel: int, stride: int, padding: int, dilation: int,
             n_out: int) -> tuple[torch.Tensor, int]:
    """The output box, along one axis, of a conv / pool whose input changed in
    ``[start, start + size)`` (``start``: ``(B,)`` int64, one corner per sample).

    Output position ``o`` reads inputs ``o*stride - padding + k*dilation``, ``k < kernel``, so
    the changed inputs reach ``o`` in ``[ceil((start + padding - (kernel-1)*dilation) / stride),
    floor((start + size - 1 + padding) / stride)]``, clipped to ``[0, n_out)``. Returns the
    ``(B,)`` corners and the common size (the largest over the batch, at least 1; a corner is
    moved back so that its box stays inside the map).
    """
    lo = torch.div(start + padding - (kernel - 1) * dilation + stride - 1, stride, rounding_mode="floor").clamp(min=0)
    hi = torch.div(start + size - 1 + padding, stride, rounding_mode="floor").clamp(max=n_out - 1)
    n = int(max(1, int((hi - lo + 1).max()) if len(start) else 1))
    n = min(n, n_out)
    return lo.clamp(max=n_out - n), n


def union_box(boxes: Sequence[tuple[torch.Tensor, int]], n_map: int) -> tuple[torch.Tensor, int]:
    """Per sample, the smallest ``[start, start + size)`` containing every box of ``boxes``
    (``[(starts (B,), size)]`` along one axis); one common size, clamped into ``[0, n_map)``."""
    lo = torch.stack([s for s, _ in boxes]).amin(0)
    hi = torch.stack([s + n for s, n in boxes]).amax(0)
    n = min(n_map, int((hi - lo).max()) if len(lo) else 1)
    return lo.clamp(max=n_map - n), n


# ------------------------------------------------------------------ states
@dataclass
class _Boxed:
    """A changed map known on a box: ``patch (B, C, h, w)`` at corners ``off (B, 2)``; the
    rest of sample ``b``'s map is the cached map ``cache[index[b]]``."""
    patch: torch.Tensor
    off: torch.Tensor  # int64 CPU


@dataclass
class _Full:
    value: Any


@dataclass
class IncrementalCache:
    """Every node's output on the reference images (``x'``): ``values[name]`` ``(M, ...)``;
    ``depends[name]``: the node's output depends on the input."""
    values: dict[str, Any]
    depends: dict[str, bool]
    output: Any
    n_images: int


@dataclass
class RunInfo:
    """What :meth:`IncrementalModel.run` did: ``boxes[name] = (h, w, H, W)`` for the nodes run
    on a box, ``full``: the nodes run on full maps after a changed map reached them,
    ``fallbacks``: the unsupported ones among them, ``flops_fraction``: multiply-adds of the
    convolutions and linear layers actually run / those of full forwards of the batch."""
    boxes: dict[str, tuple[int, int, int, int]] = field(default_factory=dict)
    full: list[str] = field(default_factory=list)
    fallbacks: list[str] = field(default_factory=list)
    states: dict[str, Any] = field(default_factory=dict)
    macs_run: float = 0.0
    macs_full: float = 0.0

    @property
    def flops_fraction(self) -> float:
        return self.macs_run / self.macs_full if self.macs_full else float("nan")


# ------------------------------------------------------------------ the executor
class IncrementalModel:
    """A traced model that evaluates batches of window-ablated images incrementally.

    Args:
        module: the ``nn.Module`` (in eval mode when run: callers hold
            :meth:`advinterp.ModelAdapter.preserved`); traced with ``torch.fx`` here
            (:class:`IncrementalUnavailable` if it cannot be).
        threshold: switch a node to full computation when its box covers at least this share
            of its map's area (default 0.6; 1.0 keeps boxes until they equal the map).
        backend: an object with ``crop(src, index, offsets, height, width, fill)`` and
            ``paste(base, index, patch, offsets)`` (the grid-ablation backend of the device,
            e.g. ``advinterp.registry.get_ablation_backend(device)``); ``None`` or a backend
            without them: the pure-PyTorch :mod:`advinterp.patches`.

    Use: ``cache = im.prepare(x_ref)`` once per reference batch ``x_ref (M, C, H, W)`` (model
    inputs, i.e. normalised), then ``im.run(cache, index, patch, offsets)`` for batches of
    changed windows; the output equals ``module`` on ``x_ref[index]`` with ``patch`` pasted at
    ``offsets``.
    """

    def __init__(self, module: nn.Module, threshold: float = 0.6, backend: Any = None):
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0 < threshold <= 1:
            raise ParameterError("IncrementalModel", "threshold", threshold, "a number in (0, 1]",
                                 "0.6 (default) switches to full maps once a box covers 60 % of its map.")
        self.module = module
        self.threshold = float(threshold)
        self.gm = trace_incremental(module)
        self.nodes = list(self.gm.graph.nodes)
        self._crop: Callable = getattr(backend, "crop", None) or crop_patches
        self._paste: Callable = getattr(backend, "paste", None) or paste_patches
        self._crop_paste: Callable | None = getattr(backend, "crop_paste", None)
        self.backend_name = str(getattr(backend, "name", "reference")) if getattr(backend, "crop", None) else "reference"
        self.unsupported = [n.name for n in self.nodes if n.op in ("call_module", "call_function", "call_method")
                            and self._kind(n) == "other"]
        self._check_inplace()

    # -------------------------------------------------------------- classification
    def _module(self, node) -> nn.Module:
        return self.gm.get_submodule(node.target)

    def _kind(self, node) -> str:
        """``conv`` / ``pool`` / ``elementwise`` / ``binary`` / ``cat`` / ``gap`` / ``other``."""
        if node.op == "call_module":
            m = self._module(node)
            if isinstance(m, nn.Conv2d):
                ok = m.padding_mode == "zeros" and not isinstance(m.padding, str)
                return "conv" if ok else "other"
            if isinstance(m, nn.MaxPool2d):
                return "pool" if not m.ceil_mode and not m.return_indices else "other"
            if isinstance(m, nn.AvgPool2d):
                return "pool" if not m.ceil_mode and _pair(m.padding) == (0, 0) and m.divisor_override is None \
                    else "other"
            if isinstance(m, nn.BatchNorm2d):
                return "elementwise" if not m.training and m.track_running_stats and m.running_mean is not None \
                    else "other"
            if isinstance(m, nn.Dropout):
                return "elementwise" if not m.training else "other"
            if isinstance(m, _ELEMENTWISE_MODULES):
                return "elementwise"
            if isinstance(m, nn.AdaptiveAvgPool2d):
                return "gap"
            return "other"
        if node.op == "call_function":
            if node.target in _ELEMENTWISE_FUNCTIONS or node.target is F.dropout:
                return "elementwise" if node.target is not F.dropout or not node.kwargs.get("training", False) \
                    else "other"
            if node.target in _BINARY:
                return "binary"
            if node.target is torch.cat:
                return "cat"
            if node.target is torch.mean and _spatial_mean_dims(node):
                return "gap"
            return "other"
        if node.op == "call_method":
            if node.target in _ELEMENTWISE_METHODS:
                return "elementwise"
            if node.target in _BINARY_METHODS:
                return "binary"
            if node.target == "mean" and _spatial_mean_dims(node):
                return "gap"
            return "other"
        return node.op

    # -------------------------------------------------------------- the reference pass
    @torch.no_grad()
    def prepare(self, x: torch.Tensor) -> IncrementalCache:
        """Run ``x`` ``(M, C, H, W)`` (the model's inputs) through the graph and keep every
        node's output (``(M, ...)``): the cache of :meth:`run`."""
        values: dict[str, Any] = {}
        depends: dict[str, bool] = {}
        out = None
        for node in self.nodes:
            if node.op == "placeholder":
                values[node.name], depends[node.name] = x, True
                continue
            if node.op == "output":
                out = torch.fx.node.map_arg(node.args[0], lambda n: values[n.name])
                break
            dep = any(depends.get(a.name, False) for a in node.all_input_nodes)
            args = torch.fx.node.map_arg(node.args, lambda n: values[n.name])
            kwargs = torch.fx.node.map_arg(node.kwargs, lambda n: values[n.name])
            values[node.name] = self._call(node, args, kwargs)
            depends[node.name] = dep
        return IncrementalCache(values, depends, out, len(x))

    def _call(self, node, args, kwargs):
        """The node as the model computes it, out of place: an in-place op (``ReLU(inplace=True)``,
        ``x.relu_()``, ``+=``) runs on a copy, so the cache keeps every node's own output and
        no patch is shared between two nodes (:meth:`_check_inplace` makes sure this equals the
        model's in-place semantics)."""
        if node.op == "get_attr":
            obj = self.gm
            for part in node.target.split("."):
                obj = getattr(obj, part)
            return obj
        if node.op == "call_module":
            m = self._module(node)
            if getattr(m, "inplace", False):
                if type(m) is nn.ReLU:
                    return torch.relu(args[0])
                args = (args[0].clone(), *args[1:])
            return m(*args, **kwargs)
        if _is_inplace(node, None) and isinstance(args[0], torch.Tensor):
            args = (args[0].clone(), *args[1:])
        if kwargs.get("inplace"):
            kwargs = {**kwargs, "inplace": False}
        if node.op == "call_function":
            return node.target(*args, **kwargs)
        if node.op == "call_method":
            return getattr(args[0], node.target)(*args[1:], **kwargs)
        raise AdvinterpError(f"unexpected fx node {node.op}")  # pragma: no cover

    def _check_inplace(self) -> None:
        """Out-of-place execution equals the model's only if no in-place op overwrites a value
        that another node also reads; raise :class:`IncrementalUnavailable` otherwise."""
        for node in self.nodes:
            module = self._module(node) if node.op == "call_module" else None
            if not _is_inplace(node, module) or not node.all_input_nodes:
                continue
            first = node.args[0] if isinstance(node.args[0], torch.fx.Node) else None
            if first is not None and len(first.users) > 1:
                others = sorted(u.name for u in first.users if u is not node)
                raise IncrementalUnavailable(
                    f"{node.name} overwrites {first.name} in place, which {', '.join(others)} also read; "
                    "the incremental executor runs ops out of place, so it would not reproduce the model here")

    # -------------------------------------------------------------- the incremental pass
    @torch.no_grad()
    def run(self, cache: IncrementalCache, index: torch.Tensor, patch: torch.Tensor, offsets: torch.Tensor,
            keep: bool = False, info: RunInfo | None = None) -> Any:
        """The model's output on ``B`` changed inputs.

        Args:
            cache: :meth:`prepare` of the reference inputs ``x_ref (M, C, H, W)``.
            index: ``(B,)`` int64: sample ``b`` is ``x_ref[index[b]]`` ...
            patch: ``(B, C, h, w)`` ... with this window written ...
            offsets: ``(B, 2)`` int64 ``[y, x]``: ... at this corner (the window lies inside
                the image).
            keep: keep every node's state in ``info.states`` (tests; costs memory).
            info: a :class:`RunInfo` to fill (boxes, full nodes, fallbacks, multiply-adds).

        Returns:
            The graph's output for the ``B`` samples (e.g. ``(B, K)`` logits).
        """
        index = index.to(torch.long).cpu()
        offsets = offsets.to(torch.long).cpu()
        idx_dev = index.to(patch.device)
        info = RunInfo() if info is None else info
        state: dict[str, Any] = {}
        x_name = None
        for node in self.nodes:
            name = node.name
            if node.op == "placeholder":
                x_name = name
                state[name] = self._boxed_or_full(cache, name, _Boxed(patch, offsets), index, idx_dev, info)
                continue
            if node.op == "output":
                out = torch.fx.node.map_arg(node.args[0], lambda n: self._full(cache, n.name, state, idx_dev))
                if keep:
                    info.states = state
                return out
            if not cache.depends.get(name, False):
                state[name] = None  # unchanged: the cached value, shared by every sample
                continue
            ins = [a.name for a in node.all_input_nodes if cache.depends.get(a.name, False)]
            boxed = [n for n in ins if isinstance(state[n], _Boxed)]
            kind = self._kind(node)
            self._count_macs(node, cache, info, len(index))
            if boxed:
                new = self._incremental(node, kind, cache, state, boxed, index, idx_dev, info)
                if new is not None:
                    state[name] = self._boxed_or_full(cache, name, new, index, idx_dev, info)
                    continue
                if kind == "other":
                    info.fallbacks.append(name)
            args = torch.fx.node.map_arg(node.args, lambda n: self._arg(cache, n.name, state, idx_dev))
            kwargs = torch.fx.node.map_arg(node.kwargs, lambda n: self._arg(cache, n.name, state, idx_dev))
            state[name] = _Full(self._call(node, args, kwargs))
            info.full.append(name)
            self._count_macs(node, cache, info, len(index), ran=1.0)
        raise AdvinterpError("the traced graph has no output node")  # pragma: no cover

    # -------------------------------------------------------------- helpers of run
    def _arg(self, cache, name, state, idx_dev):
        st = state.get(name)
        if st is None:
            return cache.values[name]
        return self._full(cache, name, state, idx_dev)

    def _full(self, cache, name, state, idx_dev):
        """The full ``(B, ...)`` value of node ``name`` (pasting a boxed patch into a copy of
        the cached map)."""
        st = state.get(name)
        if st is None:
            v = cache.values[name]
            return v[idx_dev] if cache.depends.get(name) and isinstance(v, torch.Tensor) else v
        if isinstance(st, _Full):
            return st.value
        v = self._paste(cache.values[name], idx_dev.cpu(), st.patch, st.off)
        state[name] = _Full(v)
        return v

    def _boxed_or_full(self, cache, name, new: "_Boxed | _Full", index, idx_dev, info) -> "_Boxed | _Full":
        """``new`` as it is, or as a full map once its box covers ``threshold`` of the map."""
        if isinstance(new, _Full):
            return new
        ref = cache.values[name]
        h, w = new.patch.shape[-2:]
        hm, wm = ref.shape[-2:]
        info.boxes[name] = (int(h), int(w), int(hm), int(wm))
        if h * w >= self.threshold * hm * wm:
            return _Full(self._paste(ref, index, new.patch, new.off))
        return new

    def _region(self, cache, name, st: _Boxed, index, off: torch.Tensor, h: int, w: int, fill: float):
        """The ``h x w`` window at corners ``off`` of each sample's current map of ``name``:
        the cached map with the sample's patch pasted in (``fill`` outside the map)."""
        if self._crop_paste is not None:  # one pass: each element of the region written once
            return self._crop_paste(cache.values[name], index, off, h, w, fill, st.patch, st.off - off)
        region = self._crop(cache.values[name], index, off, h, w, fill)
        return self._paste(region, torch.arange(len(index)), st.patch, st.off - off)

    def _incremental(self, node, kind, cache, state, boxed, index, idx_dev, info):
        """The node's new state computed on its box, or ``None`` when it must run on full maps."""
        ins = [a.name for a in node.all_input_nodes if cache.depends.get(a.name, False)]
        if kind == "elementwise":
            src = node.all_input_nodes[0].name
            st = state[src]
            if src not in boxed or len([a for a in node.all_input_nodes if cache.depends.get(a.name)]) != 1:
                return None
            args = torch.fx.node.map_arg(node.args, lambda n: st.patch if n.name == src else cache.values[n.name])
            kwargs = torch.fx.node.map_arg(node.kwargs, lambda n: cache.values[n.name])
            return _Boxed(self._call(node, args, kwargs), st.off)
        if kind in ("conv", "pool"):
            src = node.args[0].name if hasattr(node.args[0], "name") else None
            if src is None or src not in boxed:
                return None
            return self._conv_like(node, cache, state[src], src, index, info)
        if kind == "gap":
            src = node.args[0].name
            if src not in boxed or len(ins) != 1:
                return None
            ref_in, ref_out = cache.values[src], cache.values[node.name]
            st = state[src]
            if node.op == "call_module":
                m = self._module(node)
                if tuple(ref_out.shape[-2:]) == tuple(ref_in.shape[-2:]):  # to its own size: identity
                    return _Boxed(st.patch, st.off) if _pair(m.output_size) == tuple(ref_in.shape[-2:]) else None
                if ref_out.shape[-2:] != (1, 1):
                    return None
            h, w = st.patch.shape[-2:]
            old = self._crop(ref_in, index, st.off, h, w, 0.0)
            change = (st.patch - old).sum((2, 3), keepdim=True) / (ref_in.shape[-2] * ref_in.shape[-1])
            new = ref_out[idx_dev]
            return _Full(new + change.reshape(new.shape))
        if kind in ("binary", "cat"):
            return self._binary(node, kind, cache, state, boxed, index)
        return None

    def _conv_like(self, node, cache, st: _Boxed, src: str, index, info):
        m = self._module(node)
        ref_in, ref_out = cache.values[src], cache.values[node.name]
        k, s, p = _pair(m.kernel_size), _pair(m.stride if m.stride is not None else m.kernel_size), _pair(m.padding)
        d = _pair(getattr(m, "dilation", 1))
        h, w = st.patch.shape[-2:]
        oy, ny = conv_box(st.off[:, 0], h, k[0], s[0], p[0], d[0], ref_out.shape[-2])
        ox, nx = conv_box(st.off[:, 1], w, k[1], s[1], p[1], d[1], ref_out.shape[-1])
        r_off = torch.stack([oy * s[0] - p[0], ox * s[1] - p[1]], 1)
        rh, rw = (ny - 1) * s[0] + (k[0] - 1) * d[0] + 1, (nx - 1) * s[1] + (k[1] - 1) * d[1] + 1
        if isinstance(m, nn.MaxPool2d):
            region = self._region(cache, src, st, index, r_off, rh, rw, -math.inf)
            out = F.max_pool2d(region, m.kernel_size, m.stride, 0, m.dilation)
        elif isinstance(m, nn.AvgPool2d):
            region = self._region(cache, src, st, index, r_off, rh, rw, 0.0)
            out = F.avg_pool2d(region, m.kernel_size, m.stride, 0)
        else:
            region = self._region(cache, src, st, index, r_off, rh, rw, 0.0)
            out = F.conv2d(region, m.weight, m.bias, m.stride, 0, m.dilation, m.groups)
            info.macs_run += self._conv_macs(m, out)
        return _Boxed(out, torch.stack([oy, ox], 1))

    def _binary(self, node, kind, cache, state, boxed, index):
        """``a (+|-|*) b`` or ``cat([a, b, ...], 1)`` of changed maps on the union of their boxes."""
        if kind == "cat":
            seq = node.args[0]
            dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim", 0)
            if not isinstance(seq, (list, tuple)) or dim not in (1, -3):
                return None
            operands = list(seq)
        else:
            operands = list(node.args[:2])
            if node.kwargs or len(node.args) != 2:
                return None
        tensors = [a for a in operands if isinstance(a, torch.fx.Node)]
        if any(not cache.depends.get(a.name) for a in tensors):
            return None  # a constant tensor operand: broadcasting rules, not worth a special case
        if kind == "binary" and len(tensors) == 1:
            other = operands[1] if operands[0] is tensors[0] else operands[0]
            if not isinstance(other, (int, float)):
                return None
            st = state[tensors[0].name]
            if not isinstance(st, _Boxed):
                return None
            args = [st.patch if a is tensors[0] else a for a in operands]
            return _Boxed(self._call(node, tuple(args), {}), st.off)
        shapes = [tuple(cache.values[a.name].shape) for a in tensors]
        if kind == "binary" and shapes[0] != shapes[1]:
            return None
        if kind == "cat" and len({s[2:] for s in shapes}) != 1:
            return None
        hm, wm = shapes[0][-2:]
        sts = [state[a.name] for a in tensors]
        if any(isinstance(s, _Full) for s in sts):
            return None
        oy, ny = union_box([(s.off[:, 0], s.patch.shape[-2]) for s in sts], hm)
        ox, nx = union_box([(s.off[:, 1], s.patch.shape[-1]) for s in sts], wm)
        off = torch.stack([oy, ox], 1)
        parts = [self._region(cache, a.name, s, index, off, ny, nx, 0.0) for a, s in zip(tensors, sts)]
        if kind == "cat":
            return _Boxed(torch.cat(parts, 1), off)
        return _Boxed(self._call(node, tuple(parts), {}), off)

    # -------------------------------------------------------------- cost accounting
    def _count_macs(self, node, cache, info: RunInfo, b: int, ran: float = 0.0) -> None:
        """Count the multiply-adds of a full forward (``ran=0``) or of a node run in full (``ran=1``)."""
        if node.op != "call_module":
            return
        m = self._module(node)
        out = cache.values[node.name]
        if isinstance(m, (nn.Conv2d, nn.Linear)) and isinstance(out, torch.Tensor):
            macs = self._conv_macs(m, out) / max(1, len(out)) * b
            if ran:
                info.macs_run += macs
            else:
                info.macs_full += macs

    @staticmethod
    def _conv_macs(m: nn.Module, out: torch.Tensor) -> float:
        if isinstance(m, nn.Linear):
            return float(out.numel()) * m.in_features
        return float(out.numel()) * (m.in_channels // m.groups) * math.prod(_pair(m.kernel_size))


# ------------------------------------------------------------------ grid ablation on top of it
def spatial_fallbacks(im: IncrementalModel, cache: IncrementalCache) -> list[str]:
    """Nodes an ablated image's change reaches on a spatial map (``h x w > 1``) that the
    incremental path does not support: from the first of them on, the graph runs on full maps."""
    out = []
    for node in im.nodes:
        if node.op not in ("call_module", "call_function", "call_method") or im._kind(node) != "other":
            continue
        for a in node.all_input_nodes:
            v = cache.values.get(a.name)
            if cache.depends.get(a.name) and isinstance(v, torch.Tensor) and v.dim() == 4 and v.shape[-2:].numel() > 1:
                out.append(node.name)
                break
    return out


#: Windows per incremental pass on a CPU (at most ``max_batch``): see :func:`incremental_window_logits`.
CPU_CHUNK = 32


def incremental_window_logits(model: Any, x_ref: torch.Tensor, x_fill: torch.Tensor, boxes: torch.Tensor,
                              consume: Callable[[int, int, int, torch.Tensor], None],
                              consume_ref: Callable[[int, torch.Tensor], None], max_batch: int, backend: Any,
                              threshold: float = 0.6, strict: bool = True, inside: torch.Tensor | None = None,
                              report: dict | None = None, disable: bool | None = None, desc: str = "windows",
                              channels_last: bool = True) -> None:
    """Logits of every window-ablated image, incrementally: image ``i`` is ``x_ref[i]`` with the
    pixels of window ``j`` (``boxes[j]``, all the same size) taken from ``x_fill[i]``.

    Args:
        model: the :class:`~advinterp.ModelAdapter` (call under ``model.preserved()``).
        x_ref, x_fill: ``(N, C, H, W)`` pixels on the model's device and dtype.
        boxes: ``(m, 4)`` int64 ``[y0, x0, y1, x1]`` windows of one size, inside the image.
        consume: called as ``consume(i, j0, j1, logits)`` with the ``(j1 - j0, K)`` logits of
            image ``i``'s windows ``j0:j1``.
        consume_ref: called as ``consume_ref(i, logits)`` with the ``(1, K)`` logits of ``x_ref[i]``.
        max_batch: most windows per incremental pass (on a CPU at most ``CPU_CHUNK`` = 32:
            smaller chunks keep the layers run on full maps in cache).
        backend: the grid-ablation backend (its ``crop`` / ``paste``, if any).
        threshold: :class:`IncrementalModel`'s switch to full maps.
        strict: raise :class:`IncrementalUnavailable` when an op on a spatial map is unsupported
            (``False``: run those ops on full maps).
        inside: optional ``(m, h, w)`` bool: only these pixels of each window come from
            ``x_fill`` (windows clipped at the border), the others stay ``x_ref``'s.
        report: receives ``path``, ``flops_fraction``, ``fallbacks`` and ``note``.
        channels_last: keep the feature maps channels-last (default True: CPU convolutions run
            25-30 % faster; a model whose graph needs channels-first strides falls back).

    Per image: one forward of ``x_ref[i]`` that keeps every feature map
    (:meth:`IncrementalModel.prepare`), then the windows in chunks of ``max_batch``.

    Raises:
        IncrementalUnavailable: the model does not trace, the windows differ in size, the
            adapter's logits are not ``module(normalize(x))``, or (``strict``) an op on a
            spatial map is unsupported; the caller then runs full forwards.
    """
    from .progress import progress_bar

    report = {} if report is None else report
    hs, ws = (boxes[:, 2] - boxes[:, 0]).unique(), (boxes[:, 3] - boxes[:, 1]).unique()
    if len(hs) != 1 or len(ws) != 1:
        raise IncrementalUnavailable("the windows differ in size (the incremental path batches equal windows)")
    h, w = int(hs[0]), int(ws[0])
    im = IncrementalModel(model.module, threshold, backend)
    xr_n, xf_n = model.normalize(x_ref), model.normalize(x_fill)
    n, m = len(x_ref), len(boxes)
    # windows per pass: on a CPU small chunks keep the full-map layers (after the threshold) in
    # cache (ResNet-50: 32 windows run 1.15x faster than 128); a GPU takes max_batch
    chunk = max_batch if x_ref.device.type == "cuda" else min(max_batch, CPU_CHUNK)
    info = RunInfo()
    corners = boxes[:, :2].to(torch.long).cpu()
    keep = None if inside is None else inside.to(x_ref.device)[:, None]
    cl = channels_last and xr_n.dim() == 4 and getattr(model, "channels_last_ok", None) is not False
    layout = torch.channels_last if cl else torch.contiguous_format
    for i in progress_bar(range(n), desc=f"{desc} (incremental)", disable=disable):
        try:
            cache = im.prepare(xr_n[i:i + 1].contiguous(memory_format=layout))
        except RuntimeError as e:  # a .view on a channels-last map, say: run channels-first
            if layout is torch.contiguous_format or not is_stride_error(e):
                raise
            layout = torch.contiguous_format
            cache = im.prepare(xr_n[i:i + 1].contiguous())
        z = cache.output
        if i == 0:
            if not isinstance(z, torch.Tensor) or z.dim() != 2:
                raise IncrementalUnavailable(f"the traced module returns {type(z).__name__}, not (N, K) logits")
            ref = model.logits(x_ref[:1])
            if not torch.allclose(z, ref, rtol=1e-4, atol=1e-5 * max(1.0, float(ref.abs().max()))):
                raise IncrementalUnavailable("the adapter's logits are not module(normalize(x)) of the traced module")
            if strict:
                bad = spatial_fallbacks(im, cache)
                if bad:
                    raise IncrementalUnavailable(f"unsupported ops on spatial maps: {', '.join(bad[:5])}"
                                                 + (" ..." if len(bad) > 5 else ""))
        consume_ref(i, z)
        for j0 in range(0, m, chunk):
            j1 = min(m, j0 + chunk)
            zero = torch.zeros(j1 - j0, dtype=torch.long)
            patch = im._crop(xf_n[i:i + 1], zero, corners[j0:j1], h, w, 0.0)
            if keep is not None:
                patch = torch.where(keep[j0:j1], patch, im._crop(xr_n[i:i + 1], zero, corners[j0:j1], h, w, 0.0))
            patch = patch.contiguous(memory_format=layout)
            consume(i, j0, j1, im.run(cache, zero, patch, corners[j0:j1], info=info))
        del cache
    fallbacks = sorted(set(info.fallbacks))
    report.update(path="incremental", flops_fraction=info.flops_fraction, fallbacks=fallbacks,
                  note=(f"incremental ({im.backend_name} crop/paste), {100 * info.flops_fraction:.0f} % of the "
                        "full forwards' multiply-adds" + (f"; full maps from {', '.join(fallbacks)}" if fallbacks
                                                          else "")))


def incremental_class_logits(model: Any, x0: torch.Tensor, x_adv: torch.Tensor, boxes: torch.Tensor,
                             classes: torch.Tensor, ablated: torch.Tensor, adv: torch.Tensor, max_batch: int,
                             backend: Any, threshold: float = 0.6, strict: bool = True,
                             report: dict | None = None, disable: bool | None = None) -> None:
    """The incremental path of :func:`advinterp.analyzers.pse.ablated_class_logits`: fills
    ``ablated (N, m, k)`` with ``Z(x' - delta_Gi)[classes]`` and ``adv (N, k)`` with
    ``Z(x')[classes]`` (float64, CPU) for ``x0`` / ``x_adv`` ``(N, C, H, W)`` on the model's
    device and ``classes (N, k)`` there (:func:`incremental_window_logits` with the clean
    pixels as the fill; raises :class:`IncrementalUnavailable` as it does)."""
    def consume(i, j0, j1, z):
        ablated[i, j0:j1] = z[:, classes[i]].double().cpu()

    def consume_ref(i, z):
        adv[i] = z[0, classes[i]].double().cpu()

    incremental_window_logits(model, x_adv, x0, boxes, consume, consume_ref, max_batch, backend, threshold, strict,
                              report=report, disable=disable, desc="pse images")
