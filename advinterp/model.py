"""``ModelAdapter``: one view of a classifier for every analysis.

Inputs are always float ``(N, C, H, W)`` pixels in [0, 1]; normalisation (``mean``/``std``)
happens inside the adapter. Layers are reached by their dotted name in
``module.named_modules()`` — any module tree works, not only ``nn.Sequential``.

Every analysis runs under :meth:`ModelAdapter.preserved`, which puts the module in eval
mode and, on exit — also on exceptions — restores each submodule's ``training`` flag, every
parameter's ``requires_grad``, removes hooks added meanwhile, and (``weights=True``)
restores parameters and buffers.
"""
from __future__ import annotations

import contextlib
import difflib
import hashlib
import re
import warnings
from typing import Any, Callable, Iterator, Sequence

import torch
from torch import nn

from .exceptions import AdvinterpError, IncompatibleModelError, MissingDependencyError, ParameterError

__all__ = ["ModelAdapter", "as_adapter", "channels_last", "model_fingerprint"]

#: the messages of errors a channels-last input can cause (``x.view(...)`` on non-contiguous strides)
_STRIDE_ERROR = re.compile(r"stride|contiguous|memory.format|channels.last", re.IGNORECASE)


def is_stride_error(e: BaseException) -> bool:
    """Whether ``e`` is an error a channels-last input can cause in a forward written for
    channels-first strides (its message mentions strides, contiguity or the memory format:
    ``x.view(len(x), -1)`` on a channels-last map, say); the channels-first retry of
    :meth:`ModelAdapter.run_channels_last` and of :mod:`advinterp.incremental` is for these only."""
    return bool(_STRIDE_ERROR.search(str(e)))

_HOOK_DICTS = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks",
               "_state_dict_hooks", "_load_state_dict_pre_hooks")


def channels_last(x: torch.Tensor) -> torch.Tensor:
    """``x`` in channels-last memory order when it is a 4-D batch of more than one image.

    The values (and shape ``(N, C, H, W)``) are unchanged, only the strides: a CNN's
    convolutions then run channels-last, 25-30 % faster on CPUs for ResNet-18/50, VGG-11
    and the shipped ``synthetic-cnn`` (batches of 16-64; logits differ by ~5e-7 relative).
    One image, or a tensor that is not 4-D, is returned as it is. A model whose forward
    needs channels-first strides (``x.view(len(x), -1)``) fails on it: run it through
    :meth:`ModelAdapter.run_channels_last`, which falls back to channels-first.

    Args:
        x: a tensor, usually ``(N, C, H, W)`` pixels.

    Returns:
        ``x.contiguous(memory_format=torch.channels_last)`` or ``x`` itself.
    """
    return x.contiguous(memory_format=torch.channels_last) if x.ndim == 4 and len(x) > 1 else x


def _is_art_estimator(obj: Any) -> bool:
    return any(c.__module__.startswith("art.") for c in type(obj).__mro__)


class ModelAdapter:
    """Wrap an ``nn.Module`` (or an ART ``PyTorchClassifier``) for advinterp.

    Args:
        model: the classifier; it maps *normalised* inputs to logits.
        mean, std: per-channel normalisation applied to [0, 1] pixels before ``model``
            (sequences of length C, or None for none).
        nb_classes: number of classes (inferred from the last ``nn.Linear`` if omitted).
        input_shape: ``(C, H, W)`` of one input (used for layer discovery and ART).
        cam_layer: name of the last spatial feature layer (auto-detected when omitted).
        classifier: name of the linear head (auto-detected: the last ``nn.Linear`` run).
        name: a display name.

    ART classifiers: ``mean``/``std``, ``nb_classes`` and ``input_shape`` are read from
    the estimator (its ``preprocessing``); its ``clip_values`` must be ``(0, 1)``.
    """

    def __init__(self, model: Any, mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                 nb_classes: int | None = None, input_shape: Sequence[int] | None = None,
                 cam_layer: str | None = None, classifier: str | None = None, name: str | None = None):
        self.art_estimator = None
        if _is_art_estimator(model):
            self.art_estimator = model
            module = getattr(model, "model", None)
            if not isinstance(module, nn.Module):
                raise IncompatibleModelError(
                    f"ModelAdapter: the ART estimator {type(model).__name__} holds no torch module; "
                    "wrap an art.estimators.classification.PyTorchClassifier.")
            if getattr(model, "channels_first", True) is False:
                raise IncompatibleModelError(
                    f"ModelAdapter: the ART {type(model).__name__} has channels_first=False (input_shape="
                    f"{tuple(model.input_shape)}), but advinterp passes (N, C, H, W) batches. Rebuild it with "
                    "PyTorchClassifier(..., input_shape=(C, H, W), channels_first=True) over a module that takes "
                    "channels-first input.")
            clip = getattr(model, "clip_values", None)
            if clip is not None and (float(clip[0]) != 0.0 or float(clip[1]) != 1.0):
                raise IncompatibleModelError(
                    f"ModelAdapter: ART clip_values={tuple(clip)}; advinterp uses pixels in [0, 1]. "
                    "Rebuild the PyTorchClassifier with clip_values=(0, 1) and preprocessing=(mean, std).")
            pre = getattr(model, "preprocessing", None)
            if mean is None and pre is not None and hasattr(pre, "mean"):
                mean, std = pre.mean, pre.std
            nb_classes = nb_classes or model.nb_classes
            input_shape = input_shape or tuple(model.input_shape)
            # ART's PyTorchClassifier wraps the user's module in ModelWrapper(._model)
            module = getattr(module, "_model", module)
            model = module
        if not isinstance(model, nn.Module):
            raise ParameterError("ModelAdapter", "model", model,
                                 "a torch.nn.Module or an ART PyTorchClassifier")
        self.module: nn.Module = model
        self.name = name or type(model).__name__
        self.input_shape = tuple(int(s) for s in input_shape) if input_shape is not None else None
        self._mean = None if mean is None else torch.as_tensor(mean, dtype=torch.float32).reshape(1, -1, 1, 1)
        self._std = None if std is None else torch.as_tensor(std, dtype=torch.float32).reshape(1, -1, 1, 1)
        if (self._mean is None) != (self._std is None):
            raise ParameterError("ModelAdapter", "std" if self._std is None else "mean", None,
                                 "mean and std given together (or neither)")
        if self._std is not None and (self._std <= 0).any():
            raise ParameterError("ModelAdapter", "std", std, "strictly positive values")
        self._classifier_name = classifier
        self._cam_layer = cam_layer
        self._nb_classes = int(nb_classes) if nb_classes is not None else None
        if classifier is not None:
            self.layer(classifier)
        if cam_layer is not None:
            self.layer(cam_layer)

    # ----------------------------------------------------------------- basic properties
    @property
    def device(self) -> torch.device:
        for t in self.module.parameters():
            return t.device
        for t in self.module.buffers():
            return t.device
        return torch.device("cpu")

    @property
    def dtype(self) -> torch.dtype:
        for t in self.module.parameters():
            if t.is_floating_point():
                return t.dtype
        return torch.float32

    @property
    def mean(self) -> tuple[float, ...] | None:
        return None if self._mean is None else tuple(self._mean.flatten().tolist())

    @property
    def std(self) -> tuple[float, ...] | None:
        return None if self._std is None else tuple(self._std.flatten().tolist())

    @property
    def nb_classes(self) -> int:
        """Number of classes (from the constructor, else the classifier's ``out_features``)."""
        if self._nb_classes is None:
            head = self.layer(self.classifier_name)
            self._nb_classes = int(head.out_features)
        return self._nb_classes

    def to(self, device: str | torch.device) -> "ModelAdapter":
        """Move the wrapped module (this *does* change it: the user asked) and return self."""
        self.module.to(device)
        return self

    # ----------------------------------------------------------------- forward
    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """Pixels in [0, 1] -> the model's input space."""
        if self._mean is None:
            return x
        c = self._mean.shape[1]
        if x.ndim == 4 and x.shape[1] != c and c > 1:
            hint = (f" It looks channels-last (N, H, W, C) = {tuple(x.shape)}: pass x.permute(0, 3, 1, 2)."
                    if x.shape[-1] == c else "")
            raise ParameterError(f"{self.name}.normalize", "x", x,
                                 f"channels-first pixels (N, {c}, H, W) for this adapter's {c}-channel mean/std",
                                 f"Got {x.shape[1]} channels.{hint}")
        return (x - self._mean.to(x.device, x.dtype)) / self._std.to(x.device, x.dtype)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, K)`` logits of pixels ``x`` ``(N, C, H, W)`` in [0, 1], on the model's device.

        Differentiable w.r.t. ``x``. Always runs in eval mode: if any submodule is in
        training mode it is switched to eval for this call and restored afterwards.
        """
        x = x.to(self.device)
        if any(m.training for m in self.module.modules()):
            with self.preserved():  # never run the user's model in training mode
                return self.module(self.normalize(x))
        return self.module(self.normalize(x))

    __call__ = logits

    def run_channels_last(self, fn: Callable[[torch.Tensor], Any], x: torch.Tensor) -> Any:
        """``fn(channels_last(x))``, falling back to ``fn(x)`` (channels-first) when the
        model's forward cannot take channels-last strides.

        ``fn`` is a forward of this adapter's model on a batch like ``x`` (e.g. ``self.logits``,
        or a closure that also reads hooked activations); it may be called twice, so it must
        reset any state it keeps. If the channels-last call raises an error about strides or
        contiguity (its message mentions ``stride``, ``contiguous`` or the memory format: a
        ``.view`` on the input, say) and the channels-first call succeeds, the adapter remembers
        that (``channels_last_ok`` becomes False) and every later call runs channels-first at
        once; if both raise, the channels-first error is raised. Any other error (an
        :class:`AdvinterpError`, a failure of the model's own) propagates at once, not retried.
        One image or a non-4-D ``x`` runs as it is.

        Args:
            fn: called with a tensor of ``x``'s shape and values.
            x: ``(N, C, H, W)`` pixels in [0, 1].

        Returns:
            What ``fn`` returns.
        """
        xl = channels_last(x) if self.channels_last_ok is not False else x
        if xl is x or xl.data_ptr() == x.data_ptr():
            return fn(x)
        try:
            out = fn(xl)
        except AdvinterpError:
            raise
        except Exception as e:  # noqa: BLE001
            if not is_stride_error(e):
                raise  # the model's own failure (not about strides): never retried, never hidden
            out = fn(x)
            self.__dict__["_channels_last_ok"] = False
            return out
        self.__dict__.setdefault("_channels_last_ok", True)
        return out

    @property
    def channels_last_ok(self) -> bool | None:
        """Whether the model's forward took a channels-last batch (:meth:`run_channels_last`):
        ``None`` not tried yet, ``True`` it did, ``False`` it raised and channels-first is used."""
        return self.__dict__.get("_channels_last_ok")

    def logits_channels_last(self, x: torch.Tensor) -> torch.Tensor:
        """:meth:`logits` of ``x`` run on a channels-last copy of the batch (faster CNN
        convolutions on CPUs; same values to float rounding), channels-first when the model
        cannot take it (:meth:`run_channels_last`). Differentiable w.r.t. ``x``; ``(N, K)``."""
        return self.run_channels_last(self.logits, x)

    @torch.no_grad()
    def predict(self, x: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
        """``(N,)`` argmax predictions, computed in eval mode in batches."""
        with self.preserved():
            outs = [self.logits(x[i:i + batch_size]).argmax(1) for i in range(0, len(x), batch_size)]
        return torch.cat(outs) if outs else torch.empty(0, dtype=torch.long, device=self.device)

    @torch.no_grad()
    def accuracy(self, x: torch.Tensor, y: torch.Tensor, batch_size: int = 256) -> float:
        """Top-1 accuracy of :meth:`predict` against ``y``."""
        return float((self.predict(x, batch_size).cpu() == y.cpu()).float().mean()) if len(x) else float("nan")

    # ----------------------------------------------------------------- layers
    def layer_names(self) -> list[str]:
        """Dotted names of every submodule (``named_modules`` order, root excluded)."""
        return [n for n, _ in self.module.named_modules() if n]

    def layer(self, name: str) -> nn.Module:
        """The submodule called ``name`` (e.g. ``"layer4"``, ``"layer4.1.conv2"``)."""
        modules = dict(self.module.named_modules())
        if name not in modules or not name:
            close = difflib.get_close_matches(str(name), list(modules), n=5, cutoff=0.4)
            hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
            top = [n for n in modules if n and "." not in n]
            raise IncompatibleModelError(
                f"{self.name} has no layer {name!r}.{hint} Top-level layers: {', '.join(top)}. "
                "See ModelAdapter.layer_names() for all of them.")
        return modules[name]

    def activations(self, x: torch.Tensor, layers: Sequence[str], with_logits: bool = False,
                    detach: bool = True, truncate: bool = True, copy: bool = False) -> dict[str, torch.Tensor]:
        """Outputs of several layers from one forward pass.

        The forward stops as soon as every requested layer has produced its output
        (``truncate``): asking for ``layer1`` of a ResNet runs the stem and ``layer1``, not the
        network. This works for any module tree, without rewriting it: a forward hook on the
        last requested layer to run ends the pass. A module called several times in one
        forward (a shared ReLU) gives its *last* output, as a full forward would: the first
        call for a given set of layers and input size runs the whole network and counts the
        calls; later calls stop after that many. The forward runs whole (and a
        ``RuntimeWarning`` says so, once per model) when ``with_logits`` is set, when
        ``truncate=False``, or when the model's code swallowed the stop.

        Args:
            x: ``(N, C, H, W)`` pixels in [0, 1].
            layers: layer names.
            with_logits: also return the logits under the key ``"logits"`` (a full forward).
            detach: detach the activations (default); set False to backpropagate through them.
            truncate: stop the forward after the last requested layer (default True).
            copy: store a copy of each output (default False). Needed when a later module
                works in place (``nn.ReLU(inplace=True)`` after a BatchNorm): without it the
                BatchNorm's stored output would be the ReLU's.

        Returns:
            ``{name: tensor}`` (the layer's output; the first element if it returns a tuple).
        """
        if isinstance(layers, str):
            layers = [layers]
        mods = {n: self.layer(n) for n in layers}
        out: dict[str, torch.Tensor] = {}
        calls = {n: 0 for n in mods}
        plans = self.__dict__.setdefault("_stop_plans", {})
        key = (tuple(mods), tuple(x.shape[1:]))
        want = plans.get(key) if truncate and not with_logits else None
        state = {"stopped": False, "done": False}
        handles = []

        def make_hook(n):
            def hook(_m, _i, o):
                if state["done"]:
                    return
                o = o[0] if isinstance(o, (tuple, list)) else o
                o = o.detach() if detach else o
                out[n] = o.clone() if copy else o
                calls[n] += 1
                if want is not None and all(calls[k] >= want[k] for k in want):
                    state["done"] = True
                    raise _StopForward
            return hook

        logits = None
        try:
            for n, m in mods.items():
                handles.append(m.register_forward_hook(make_hook(n)))
            with self.preserved():
                try:
                    logits = self.logits(x)
                except _StopForward:
                    state["stopped"] = True
        finally:
            for h in handles:
                h.remove()
        missing = [n for n in layers if n not in out]
        if missing:
            raise IncompatibleModelError(f"{self.name}: layers {missing} were not run by forward().")
        if truncate and not with_logits:
            if want is None:
                plans[key] = dict(calls)  # the full forward's call counts: later calls stop after them
            elif not state["stopped"] and not self.__dict__.get("_stop_warned"):
                self.__dict__["_stop_warned"] = True
                warnings.warn(f"{self.name}: the forward could not be stopped after {list(mods)} (the model's "
                              "code caught the stop); it runs whole, with the same activations.",
                              RuntimeWarning, stacklevel=2)
        if with_logits:
            out["logits"] = logits.detach() if detach else logits
        return out

    def _trace(self) -> list[tuple[str, nn.Module, torch.Tensor]]:
        """Run one dummy forward and return (name, module, output) in execution order."""
        if self.input_shape is None:
            raise IncompatibleModelError(
                f"{self.name}: cannot discover the CAM layer/classifier without input_shape; "
                "pass ModelAdapter(..., input_shape=(C, H, W)) or cam_layer=/classifier= explicitly.")
        order: list[tuple[str, nn.Module, torch.Tensor]] = []
        handles = []
        try:
            for n, m in self.module.named_modules():
                if n:
                    handles.append(m.register_forward_hook(
                        lambda mod, i, o, n=n: order.append((n, mod, o)) if isinstance(o, torch.Tensor) else None))
            with torch.no_grad(), self.preserved():
                self.logits(torch.full((1, *self.input_shape), 0.5, device=self.device, dtype=self.dtype))
        finally:
            for h in handles:
                h.remove()
        return order

    def feature_layers(self) -> list[str]:
        """Outermost stages with spatial ``(N, C, h, w)`` outputs, in execution order.

        Containers (modules with children, e.g. ResNet's ``layer1..4``) are preferred; a
        model made only of leaf modules gives its spatial leaves. Needs ``input_shape``.
        """
        order = [(n, m) for n, m, o in self._trace() if o.ndim == 4]
        if not order:
            raise IncompatibleModelError(f"{self.name}: no layer with a spatial (N, C, h, w) output.")
        depth = min(n.count(".") for n, _ in order)  # shallowest modules actually run
        top = [(n, m) for n, m in order if n.count(".") == depth]
        stages = [n for n, m in top if any(True for _ in m.children())]
        return list(dict.fromkeys(stages or [n for n, _ in top]))

    def leaf_layers(self) -> list[str]:
        """Every leaf module (one without children) whose output is a tensor, in the order of
        one forward (a module called several times counts at its first call). Any module tree;
        needs ``input_shape``. These are "all layers" of the network (Fig. A8 of the PSE paper).
        """
        order = [n for n, m, _ in self._trace() if not any(True for _ in m.children())]
        if not order:
            raise IncompatibleModelError(f"{self.name}: no leaf module with a tensor output was run by forward().")
        return list(dict.fromkeys(order))

    @property
    def classifier_name(self) -> str:
        """Name of the linear classification head (the last ``nn.Linear`` run)."""
        if self._classifier_name is None:
            linears = [n for n, m in self.module.named_modules() if isinstance(m, nn.Linear)]
            if not linears:
                raise IncompatibleModelError(f"{self.name} has no nn.Linear classifier head.")
            if self.input_shape is not None:
                run = [n for n, m, _ in self._trace() if isinstance(m, nn.Linear)]
                linears = run or linears
            self._classifier_name = linears[-1]
        return self._classifier_name

    @property
    def cam_layer(self) -> str:
        """Name of the last spatial feature layer (the outermost module producing it)."""
        if self._cam_layer is None:
            order = self._trace()
            spatial = [(n, o) for n, _, o in order if o.ndim == 4 and o.shape[-1] * o.shape[-2] > 1]
            if not spatial:
                raise IncompatibleModelError(f"{self.name}: no layer with a spatial (N, C, h, w) output.")
            last = spatial[-1][1]
            same = [n for n, o in spatial if o is last]
            self._cam_layer = min(same, key=lambda n: (n.count("."), len(n)))
        return self._cam_layer

    def classifier_weights(self, probe: bool = True) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(W, b)`` of the linear head: ``W`` is ``(K, C)`` with C the CAM layer's channels.

        Args:
            probe: (default True) check the CAM layer's channel count against the head with
                a one-image dummy forward (when ``input_shape`` is known). ``False`` skips that
                forward: a caller that runs the model anyway checks the activation it captured
                with :meth:`check_classifier_features`.

        Raises :class:`IncompatibleModelError` if the head is not an ``nn.Linear`` fed by
        global average pooling of the CAM layer (CAM needs that head).
        """
        head = self.layer(self.classifier_name)
        if not isinstance(head, nn.Linear):
            raise IncompatibleModelError(
                f"{self.name}: classifier {self.classifier_name!r} is a {type(head).__name__}, not nn.Linear; "
                "CAM needs a global-average-pooling + linear head (use Grad-CAM instead).")
        if probe and self.input_shape is not None:
            acts = self.activations(torch.full((1, *self.input_shape), 0.5, device=self.device, dtype=self.dtype),
                                    [self.cam_layer])[self.cam_layer]
            self.check_classifier_features(acts.shape[1])
        return head.weight.detach(), None if head.bias is None else head.bias.detach()

    def check_classifier_features(self, channels: int) -> None:
        """Raise :class:`IncompatibleModelError` unless the CAM layer's ``channels`` equal the
        linear head's ``in_features`` (the check :meth:`classifier_weights` runs)."""
        head = self.layer(self.classifier_name)
        if channels != head.in_features:
            raise IncompatibleModelError(
                f"{self.name}: the CAM layer {self.cam_layer!r} has {channels} channels but the "
                f"classifier {self.classifier_name!r} takes {head.in_features} features; CAM needs "
                "GAP + one linear layer after it (use Grad-CAM, or pass cam_layer=/classifier=).")

    # ----------------------------------------------------------------- state protection
    @contextlib.contextmanager
    def preserved(self, freeze: bool = False, weights: bool = False) -> Iterator["ModelAdapter"]:
        """Run a block in eval mode and leave the module exactly as it was.

        Args:
            freeze: set ``requires_grad=False`` on all parameters inside (attacks and
                explainers need gradients w.r.t. inputs only).
            weights: snapshot parameters and buffers and restore them on exit (for
                analyses that edit weights: masking, scaling).

        Restored on exit, also when the block raises: every submodule's ``training`` flag,
        every parameter's ``requires_grad`` and ``.grad``, hooks registered meanwhile
        (removed), and with ``weights=True`` the values of parameters and buffers.
        """
        modules = list(self.module.modules())
        modes = [m.training for m in modules]
        params = list(self.module.parameters())
        flags = [p.requires_grad for p in params]
        grads = [p.grad for p in params]
        hooks = [{d: set(getattr(m, d, {}).keys()) for d in _HOOK_DICTS} for m in modules]
        global_hooks = {d: set(getattr(nn.modules.module, d, {}).keys())
                        for d in ("_global_forward_hooks", "_global_forward_pre_hooks", "_global_backward_hooks")}
        snapshot = {k: v.detach().clone() for k, v in self.module.state_dict(keep_vars=True).items()} if weights else None
        try:
            self.module.eval()
            if freeze:
                for p in params:
                    p.requires_grad_(False)
            yield self
        finally:
            for m, mode in zip(modules, modes):
                m.training = mode
            for p, f, g in zip(params, flags, grads):
                p.requires_grad_(f)
                p.grad = g
            for m, before in zip(modules, hooks):
                for d, keys in before.items():
                    reg = getattr(m, d, None)
                    if reg is not None:
                        for k in [k for k in reg if k not in keys]:
                            del reg[k]
            for d, keys in global_hooks.items():
                reg = getattr(nn.modules.module, d, None)
                if reg is not None:
                    for k in [k for k in reg if k not in keys]:
                        del reg[k]
            if snapshot is not None:
                with torch.no_grad():
                    for k, v in self.module.state_dict(keep_vars=True).items():
                        if v.shape != snapshot[k].shape:
                            v.data = snapshot[k].clone()
                        else:
                            v.copy_(snapshot[k])

    # ----------------------------------------------------------------- interop
    def as_module(self) -> nn.Module:
        """An ``nn.Module`` taking ``(N, C, H, W)`` pixels in [0, 1] and returning this adapter's
        logits (normalisation included), for libraries that want a plain module
        (pytorch-grad-cam, torchcam, ...). The wrapped module is its ``net`` attribute, so a
        layer ``"layer4"`` of the adapter is ``"net.layer4"`` there; weights are shared."""
        return _PixelModule(self)

    def to_art(self, loss: nn.Module | None = None, optimizer: Any = None, **kwargs: Any):
        """An ART ``PyTorchClassifier`` over the same module (weights shared, not copied).

        ``clip_values=(0, 1)``; this adapter's ``mean``/``std`` become ART's
        ``preprocessing``. Needs ``adversarial-robustness-toolbox``.
        """
        if self.art_estimator is not None and loss is None and optimizer is None and not kwargs:
            return self.art_estimator
        try:
            from art.estimators.classification import PyTorchClassifier
        except ImportError as e:
            raise MissingDependencyError("adversarial-robustness-toolbox", "ModelAdapter.to_art()",
                                         "pip install adversarial-robustness-toolbox "
                                         "(or pip install -e plugins/advinterp-art)") from e
        if self.input_shape is None:
            raise IncompatibleModelError(f"{self.name}: to_art() needs input_shape; pass ModelAdapter(..., input_shape=(C, H, W)).")
        pre = None if self._mean is None else (self._mean.flatten().numpy(), self._std.flatten().numpy())
        device_type = "gpu" if self.device.type == "cuda" else "cpu"
        return PyTorchClassifier(model=self.module, loss=loss or nn.CrossEntropyLoss(), optimizer=optimizer,
                                 input_shape=self.input_shape, nb_classes=self.nb_classes, clip_values=(0.0, 1.0),
                                 preprocessing=pre, device_type=device_type, **kwargs)

    def __repr__(self) -> str:
        return (f"ModelAdapter({self.name}, nb_classes={self._nb_classes}, input_shape={self.input_shape}, "
                f"device={self.device})")


class _PixelModule(nn.Module):
    """See :meth:`ModelAdapter.as_module`."""

    def __init__(self, adapter: ModelAdapter):
        super().__init__()
        self.net = adapter.module
        self._adapter = adapter  # not a submodule: the adapter is not an nn.Module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._adapter.logits(x)


class _StopForward(BaseException):
    """Ends a truncated forward (:meth:`ModelAdapter.activations`); a ``BaseException`` so
    that a model's ``except Exception`` does not swallow it."""


def as_adapter(model: Any) -> ModelAdapter:
    """Return ``model`` if it is an adapter, else wrap it (``nn.Module`` or ART estimator)."""
    if isinstance(model, ModelAdapter):
        return model
    return ModelAdapter(model)


def model_fingerprint(model: Any) -> dict[str, Any]:
    """Everything an analysis must not change, in comparable form.

    Returns ``{"weights": sha256 of parameters and buffers, "modes": training flags,
    "requires_grad": flags, "grads": per parameter ``None`` (no .grad) or the sha256 of its
    .grad values, "hooks": hook counts}``.
    """
    module = model.module if isinstance(model, ModelAdapter) else model

    def raw(v: torch.Tensor) -> bytes:
        return v.detach().cpu().reshape(-1).contiguous().view(torch.uint8).numpy().tobytes() if v.numel() else b""

    h = hashlib.sha256()
    for k, v in module.state_dict(keep_vars=True).items():
        h.update(k.encode())
        h.update(raw(v))
    mods = list(module.named_modules())
    return {
        "weights": h.hexdigest(),
        "modes": tuple((n, m.training) for n, m in mods),
        "requires_grad": tuple((n, p.requires_grad) for n, p in module.named_parameters()),
        "grads": tuple((n, None if p.grad is None else hashlib.sha256(raw(p.grad)).hexdigest())
                       for n, p in module.named_parameters()),
        "hooks": tuple((n, tuple(len(getattr(m, d, {})) for d in _HOOK_DICTS)) for n, m in mods),
    }
