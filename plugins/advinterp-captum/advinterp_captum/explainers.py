"""CAM, Grad-CAM and Grad-CAM++ at the cost of one forward pass per chunk of images.

Every explainer computes, per image ``n`` and its class ``c = target[n]``, a map at the
resolution of ``layer`` (``None``: ``model.cam_layer``); :meth:`advinterp.Explainer.explain`
upsamples it bilinearly to the input. Notation: ``A^k`` the layer's k-th channel,
``Y^c`` the logit of class c, ``g^k_ij = dY^c / dA^k_ij``.

* CAM (Zhou et al. 2016): ``M = sum_k w_k^c A^k`` with ``w`` the weights of the linear
  head that follows global average pooling of ``A`` (``model.classifier_weights()``).
* Grad-CAM (Selvaraju et al. 2017): ``M = relu(sum_k a_k A^k)``, ``a_k = mean_ij g^k_ij``,
  in the op order of ``captum.attr.LayerGradCam`` (mean over (h, w) keeping dims, product
  with ``A``, sum over channels keeping dims, ReLU). On a GAP + linear head
  ``g^k_ij = w_k^c / (h w)``, so Grad-CAM before the ReLU is exactly CAM / (h w) (Sec. 4 of
  the PSE paper).
* Grad-CAM++ (Chattopadhyay et al. 2018), the closed form on the logit (no exponential),
  as in pytorch-grad-cam's ``GradCAMPlusPlus``::

      alpha^k_ij = g^2 / (2 g^2 + sum_ab A^k_ab g^3 + eps)   (g = g^k_ij; 0 where g = 0 or
                                                               the denominator is 0)
      w_k = sum_ij alpha^k_ij relu(g^k_ij),   M = relu(sum_k w_k A^k)

  ``eps`` defaults to 0 (the paper's formula); pytorch-grad-cam adds ``eps = 1e-6`` to the
  denominator — pass ``eps=1e-6`` to reproduce it to float precision. Note the difference
  is not negligible: with a GAP head ``g = w / (h w)`` is often ~1e-3, so ``g^2`` ~ eps.

``relu=False`` returns the maps without the final ReLU (CAM never applies one unless
``relu=True``; CAM's default is ``relu=False``, the raw class activation map).

Passes. ``explain``, ``explain_many`` and ``explain_pair`` (several target vectors of the
same images) run ONE forward per chunk of ``batch_size`` images for every target vector and
every method, and nothing else (:func:`layer_forward`): a forward hook on the explained
layer replaces its output ``out`` by a leaf ``a = out.detach().requires_grad_()`` and hands
``a.clone()`` to the rest of the network (a clone, so that an in-place op after the layer
cannot write into ``a``). CAM reads ``a`` and needs no backward. Grad-CAM(++) take, per
target vector, ``torch.autograd.grad(logits.gather(1, t[:, None]).sum(), a)`` on the graph of
that one forward (``retain_graph`` until the last target): the parameters are frozen
(``preserved(freeze=True)``) and the input does not require grad, so no graph is recorded
below the layer and every backward runs only through the modules after it. The checks that
used to cost extra 1-image forwards (the layer's output is an ``(N, C, h, w)`` map; CAM's
head takes that many channels, ``classifier_weights(probe=False)``) run on the activation of
the first chunk, with the same errors. Batches of several images run channels-last
(``channels_last=True``, :meth:`advinterp.api.ModelAdapter.run_channels_last`: 25-30 %
faster CPU convolutions; a model whose forward needs channels-first strides falls back).

What is Captum's and what is not: Captum's layer attribution calls (``LayerActivation``,
``LayerGradCam``, ``compute_layer_gradients_and_eval``) run one forward + backward per
target vector and give no graph to differentiate again for another target, so all three
passes go around them (with them ``explain_pair`` cost two forwards of the ``2N`` stacked
images plus two 1-image probes per call): no Captum call remains at run time. What stays
Captum's is the Grad-CAM formula in ``LayerGradCam``'s op order (:func:`gradcam_map`), so
channels-first maps equal Captum's bit for bit, and Captum is the reference the tests
compare every method with (``LayerGradCam``, ``LayerActivation``,
``compute_layer_gradients_and_eval``). Channels-last rounds differently: within 4e-7 of the
raw map's peak on the shipped model, ~1e-5 on ResNet-18/50 (about Captum's own difference
between batch sizes, 5.7e-6); ``channels_last=False`` gives Captum's maps exactly.
"""
from __future__ import annotations

import warnings
from typing import Any, Sequence

import torch

from advinterp import Explainer, IncompatibleModelError, Param, ParameterError
from advinterp.api import ModelAdapter

__all__ = ["CaptumLayerExplainer", "CAM", "GradCAM", "GradCAMPlusPlus", "EXPLAINERS", "gradcam_map",
           "gradcampp_map", "layer_forward"]


def _layer_param() -> Param:
    return Param(None, lambda v: v is None or (isinstance(v, str) and v != ""),
                 "a layer name (str, see ModelAdapter.layer_names()) or None for the model's cam_layer",
                 "the explained layer; None: model.cam_layer", (3, ""))


class CaptumLayerExplainer(Explainer):
    """Base of the layer explainers: batching, layer resolution, one forward per chunk for
    every target vector (:func:`layer_forward`)."""

    params = {
        "layer": _layer_param(),
        "relu": Param.boolean(True, doc="apply the final ReLU (False: the raw map)"),
        "batch_size": Param.integer(64, low=1, doc="images per forward pass"),
        "channels_last": Param.boolean(True, doc="run batches of several images channels-last (faster CPU "
                                                 "convolutions; falls back to channels-first when the model "
                                                 "needs it)"),
    }
    conformance_params = {"batch_size": 3}  # 4 toy images: exercises the batching
    #: whether the maps need gradients of the logits w.r.t. the layer (False: CAM)
    needs_gradients = True

    def layer_name(self, model: ModelAdapter) -> str:
        """The explained layer's name (``self.layer`` or ``model.cam_layer``)."""
        name = self.layer if self.layer is not None else model.cam_layer
        model.layer(name)  # IncompatibleModelError naming close matches if it does not exist
        return name

    def _explain(self, model: ModelAdapter, x: torch.Tensor, target: torch.Tensor):
        name = self.layer_name(model)
        return self.layer_maps_multi(model, x, [target], name)[0], name

    def _explain_many(self, model: ModelAdapter, x: torch.Tensor, targets: Sequence[torch.Tensor]):
        """All target vectors from one forward per chunk (:meth:`layer_maps_multi`)."""
        name = self.layer_name(model)
        return self.layer_maps_multi(model, x, list(targets), name), name

    def layer_maps_multi(self, model: ModelAdapter, x: torch.Tensor, targets: Sequence[torch.Tensor],
                         layer: str) -> list[torch.Tensor]:
        """Layer-resolution maps ``(N, h, w)`` of ``x`` for each target vector in ``targets``
        (each ``(N,)``), in chunks of ``batch_size`` images, one forward per chunk (plus, for
        Grad-CAM(++), one backward through the modules after the layer per target vector).
        Call under ``model.preserved(freeze=True)``; ``x`` on the model's device, validated."""
        module = model.layer(layer)
        ctx = None
        outs: list[list[torch.Tensor]] = [[] for _ in targets]
        for i in range(0, len(x), self.batch_size):
            xb = x[i:i + self.batch_size]
            tb = [t[i:i + self.batch_size] for t in targets]
            a, logits, grads = layer_forward(model, module, xb, tb if self.needs_gradients else [],
                                             channels_last=self.channels_last)
            if i == 0:  # the checks that used to run probe forwards, on the real activation
                self._check_spatial(model, layer, a)
                ctx = self._prepare(model, layer)
                self._check_activation(model, layer, a, ctx)
            maps = self._maps(model, layer, a, logits if i == 0 else None, grads, tb, ctx)
            for o, m in zip(outs, maps):
                o.append(m.detach())
        if len(x) == 0:
            return [x.new_zeros((0, 0, 0)) for _ in targets]
        return [o[0] if len(o) == 1 else torch.cat(o) for o in outs]

    def _prepare(self, model: ModelAdapter, layer: str) -> Any:
        return None

    def _check_activation(self, model: ModelAdapter, layer: str, a: torch.Tensor, ctx: Any) -> None:
        """Method-specific checks of the first chunk's ``(N, K, h, w)`` activation (after
        :meth:`_check_spatial` and :meth:`_prepare`); default none."""

    def _check_spatial(self, model: ModelAdapter, layer: str, out: Any) -> None:
        """Raise :class:`ParameterError` (listing suitable layers) unless the layer's output
        ``out`` (captured in the real forward) is an ``(N, C, h, w)`` feature map."""
        if isinstance(out, torch.Tensor) and out.ndim == 4:
            return
        shape = (f"(N, {', '.join(str(d) for d in out.shape[1:])})" if isinstance(out, torch.Tensor)
                 else f"a {type(out).__name__}")
        try:
            layers = ", ".join(repr(n) for n in model.feature_layers())
            hint = f"Suitable layers (model.feature_layers()): {layers}."
        except IncompatibleModelError:
            hint = "Pick a convolutional stage, e.g. model.cam_layer."
        raise ParameterError(type(self).__name__, "layer", layer,
                             f"a layer whose output is a (N, C, h, w) feature map (its output is {shape})",
                             f"{type(self).__name__} weighs the channels of a spatial map. {hint}")

    def _maps(self, model, layer, a, logits, grads, targets, ctx) -> list[torch.Tensor]:  # pragma: no cover
        """``(N, h, w)`` maps of one chunk per target vector from the layer's activation ``a``
        ``(N, K, h, w)``, the ``logits`` (``None`` after the first chunk: checks run once) and
        ``grads`` (``dY^t / dA`` per target vector)."""
        raise NotImplementedError

    def _final(self, m: torch.Tensor) -> torch.Tensor:
        return torch.relu(m) if self.relu else m


def layer_forward(model: ModelAdapter, module: torch.nn.Module, x: torch.Tensor, targets: Sequence[torch.Tensor],
                  channels_last: bool = True) -> tuple[Any, torch.Tensor, list[torch.Tensor]]:
    """One forward of ``x`` and, per target vector, the gradient of its logits w.r.t. ``module``'s output.

    A forward hook on ``module`` replaces its output ``out`` by ``a.clone()`` with
    ``a = out.detach().requires_grad_()`` (if the module runs several times, the last call's
    output is ``a``, as Captum's layer hooks keep). Then ``torch.autograd.grad(
    logits.gather(1, t[:, None]).sum(), a, retain_graph=<not the last target>)`` per target:
    each backward runs through the modules after the layer only (call with frozen parameters,
    ``model.preserved(freeze=True)``; ``x`` is detached). No target vectors: no graph at all.

    Args:
        model: the adapter; ``module`` one of its layers.
        x: ``(N, C, H, W)`` pixels on the model's device.
        targets: ``(N,)`` int64 class vectors (may be empty).
        channels_last: run a batch of several images channels-last
            (:meth:`ModelAdapter.run_channels_last`, channels-first when the model needs it).

    Returns:
        ``(a, logits, grads)``: the layer's output (``(N, K, h, w)`` for a conv layer; whatever
        the module returned when it is not a tensor, with no gradients then), the ``(N, classes)``
        logits (detached) and one ``dY^t / dA`` per target vector, shaped like ``a``.
    """
    want_grad = len(targets) > 0
    seen: dict[str, Any] = {}

    def hook(_mod, _inp, out):
        if not isinstance(out, torch.Tensor):
            seen["a"] = out
            return None
        a = out.detach().requires_grad_(want_grad)
        seen["a"] = a
        return a.clone()

    def forward(xx: torch.Tensor) -> torch.Tensor:
        seen.clear()
        return model.logits(xx)

    x = x.detach()
    handle = module.register_forward_hook(hook)
    try:
        with torch.set_grad_enabled(want_grad):
            logits = model.run_channels_last(forward, x) if channels_last else forward(x)
    finally:
        handle.remove()
    if "a" not in seen:
        name = next((n for n, m in model.module.named_modules() if m is module), type(module).__name__)
        raise IncompatibleModelError(f"{model.name}: the explained layer {name!r} was not run by forward(); "
                                     "pass layer= a module the forward runs (see ModelAdapter.feature_layers()).")
    a = seen["a"]
    grads: list[torch.Tensor] = []
    if want_grad and isinstance(a, torch.Tensor) and a.ndim == 4 and logits.requires_grad:
        for i, t in enumerate(targets):
            (g,) = torch.autograd.grad(logits.gather(1, t[:, None]).sum(), a, retain_graph=i < len(targets) - 1,
                                       allow_unused=True)
            grads.append(torch.zeros_like(a) if g is None else g)  # None: the logits do not use this output
    elif want_grad and isinstance(a, torch.Tensor) and a.ndim == 4:  # logits independent of the layer
        grads = [torch.zeros_like(a) for _ in targets]
    return (a.detach() if isinstance(a, torch.Tensor) else a), logits.detach(), grads


class CAM(CaptumLayerExplainer):
    """CAM (Zhou et al. 2016): sum_k w_k^c A^k on the GAP + linear head, one forward for every target."""

    name = "cam"
    params = {**CaptumLayerExplainer.params,
              "relu": Param.boolean(False, doc="apply a ReLU to the map (default False: the raw CAM)")}
    needs_gradients = False

    def _prepare(self, model, layer):
        # raises IncompatibleModelError naming the head when it is not nn.Linear; the channel
        # count is checked on the first chunk's activation (no probe forward)
        w, b = model.classifier_weights(probe=False)
        return w, b

    def _check_activation(self, model, layer, a, ctx):
        w, _ = ctx
        if model.input_shape is not None and layer == model.cam_layer:
            model.check_classifier_features(a.shape[1])  # classifier_weights()'s error, as before
        if a.shape[1] != w.shape[1]:
            raise IncompatibleModelError(
                f"{model.name}: layer {layer!r} gives {tuple(a.shape[1:])} activations but the classifier "
                f"{model.classifier_name!r} takes {w.shape[1]} features; CAM needs GAP + one linear layer "
                "after the explained layer (use Grad-CAM, or pass layer=).")

    def _maps(self, model, layer, a, logits, grads, targets, ctx):
        w, b = ctx
        w = w.to(a.dtype)
        self._check_decomposition(model, layer, a, w, b, logits)
        return [self._final(torch.einsum("nkhw,nk->nhw", a, w[t])) for t in targets]

    def _check_decomposition(self, model, layer, a, w, b, logits) -> None:
        """CAM is exact iff logits = W GAP(A) + b; warn (once per call: checked on the first
        chunk, ``logits`` None on the others) when the model applies something between the
        layer and the pooling (e.g. a functional ReLU)."""
        if logits is None or a.numel() == 0:
            return
        gap = a.mean((2, 3))
        pred = gap @ w.T if b is None else torch.addmm(b.to(a.dtype), gap, w.T)
        dev, peak = torch.stack([(pred - logits).abs().max(), logits.abs().max()]).tolist()
        tol = 1e-4 * max(1.0, peak)
        if dev > tol:
            warnings.warn(
                f"CAM on {model.name}: the logits are not GAP + linear of layer {layer!r} "
                f"(max deviation {dev:.3g}): something runs between that layer and the pooling (e.g. a "
                "functional ReLU), so the map is not the exact decomposition of the logit. Pass layer= "
                "the module whose output is pooled.", RuntimeWarning, stacklevel=2)


class GradCAM(CaptumLayerExplainer):
    """Grad-CAM (Selvaraju et al. 2017) in captum.attr.LayerGradCam's op order, one forward for every target."""

    name = "gradcam"

    def _maps(self, model, layer, a, logits, grads, targets, ctx):
        return [gradcam_map(a, g, self.relu) for g in grads]


class GradCAMPlusPlus(CaptumLayerExplainer):
    """Grad-CAM++ (Chattopadhyay et al. 2018), closed form on the logit, one forward for every target."""

    name = "gradcampp"
    params = {**CaptumLayerExplainer.params,
              "eps": Param.number(0.0, low=0, doc="added to the alpha denominator (pytorch-grad-cam: 1e-6)")}

    def _maps(self, model, layer, a, logits, grads, targets, ctx):
        return [self._final(gradcampp_map(a, g, self.eps)) for g in grads]


def gradcam_map(a: torch.Tensor, g: torch.Tensor, relu: bool = True) -> torch.Tensor:
    """Grad-CAM map ``(N, h, w)`` from activations ``a`` and logit gradients ``g`` (both
    ``(N, K, h, w)``), in ``captum.attr.LayerGradCam``'s op order: ``mean`` of ``g`` over
    ``(h, w)`` (keepdim), times ``a``, ``sum`` over channels (keepdim), ReLU if ``relu``."""
    summed = torch.mean(g, dim=(2, 3), keepdim=True)
    m = torch.sum(summed * a, dim=1, keepdim=True)
    if relu:
        m = torch.nn.functional.relu(m)
    return m[:, 0]


def gradcampp_map(a: torch.Tensor, g: torch.Tensor, eps: float = 0.0) -> torch.Tensor:
    """Grad-CAM++ map ``(N, h, w)`` before the final ReLU from activations ``a`` and logit
    gradients ``g`` (both ``(N, K, h, w)``): ``sum_k w_k A^k`` with the closed-form alphas
    (module docstring), ``eps`` (default 0) added to the alpha denominator.

    Only ``g > 0`` contributes to ``w_k = sum_ij alpha relu(g)``, and there
    ``alpha relu(g) = g^3 / (2 g^2 + S_k g^3 + eps)`` (``S_k = sum_ab A^k_ab``), which for
    ``eps = 0`` is ``g / (2 + S_k g)``: 7 elementwise passes instead of 17 (the form with
    ``alpha`` spelled out, as pytorch-grad-cam writes it, agrees to float rounding; the tests
    keep it). A zero denominator gives 0, as before."""
    s = a.sum((2, 3), keepdim=True)
    if eps == 0:
        den = (g * s).add_(2)
        num = torch.relu(g)
    else:
        g3 = g * g * g
        den = (2 * g * g).add_(s * g3).add_(eps)
        num = torch.where(g > 0, g3, torch.zeros((), dtype=g.dtype, device=g.device))
    term = torch.where(den != 0, num / den, torch.zeros((), dtype=g.dtype, device=g.device))
    w = term.sum((2, 3))
    return torch.einsum("nkhw,nk->nhw", a, w)


EXPLAINERS = (CAM, GradCAM, GradCAMPlusPlus)
