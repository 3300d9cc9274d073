"""CAM, Grad-CAM and Grad-CAM++ on Captum's layer attribution machinery.

Every explainer computes, per image ``n`` and its class ``c = target[n]``, a map at the
resolution of ``layer`` (``None``: ``model.cam_layer``); :meth:`advinterp.Explainer.explain`
upsamples it bilinearly to the input. ``explain_many`` and ``explain_pair`` (several classes
of the same images) share passes: CAM reads every class's map from one forward, Grad-CAM(++)
run one forward + backward per class. Notation: ``A^k`` the layer's k-th channel,
``Y^c`` the logit of class c, ``g^k_ij = dY^c / dA^k_ij``.

* CAM (Zhou et al. 2016): ``M = sum_k w_k^c A^k`` with ``w`` the weights of the linear
  head that follows global average pooling of ``A`` (``model.classifier_weights()``).
* Grad-CAM (Selvaraju et al. 2017): ``M = relu(sum_k a_k A^k)``, ``a_k = mean_ij g^k_ij``
  (``captum.attr.LayerGradCam``). On a GAP + linear head ``g^k_ij = w_k^c / (h w)``, so
  Grad-CAM before the ReLU is exactly CAM / (h w) (Sec. 4 of the PSE paper).
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
"""
from __future__ import annotations

import warnings
from typing import Any, Sequence

import torch

from advinterp import Explainer, IncompatibleModelError, Param, ParameterError
from advinterp.api import ModelAdapter

__all__ = ["CaptumLayerExplainer", "CAM", "GradCAM", "GradCAMPlusPlus", "EXPLAINERS"]


def _layer_param() -> Param:
    return Param(None, lambda v: v is None or (isinstance(v, str) and v != ""),
                 "a layer name (str, see ModelAdapter.layer_names()) or None for the model's cam_layer",
                 "the explained layer; None: model.cam_layer", (3, ""))


class CaptumLayerExplainer(Explainer):
    """Base of the Captum layer explainers: batching, layer resolution, several targets at once."""

    params = {
        "layer": _layer_param(),
        "relu": Param.boolean(True, doc="apply the final ReLU (False: the raw map)"),
        "batch_size": Param.integer(64, low=1, doc="images per forward/backward pass"),
    }
    conformance_params = {"batch_size": 3}  # 4 toy images: exercises the batching

    def layer_name(self, model: ModelAdapter) -> str:
        """The explained layer's name (``self.layer`` or ``model.cam_layer``)."""
        name = self.layer if self.layer is not None else model.cam_layer
        model.layer(name)  # IncompatibleModelError naming close matches if it does not exist
        return name

    def _explain(self, model: ModelAdapter, x: torch.Tensor, target: torch.Tensor):
        name = self.layer_name(model)
        return self.layer_maps_multi(model, x, [target], name)[0], name

    def _explain_many(self, model: ModelAdapter, x: torch.Tensor, targets: Sequence[torch.Tensor]):
        """All target vectors in shared passes (:meth:`layer_maps_multi`): CAM one forward per
        chunk for every target, Grad-CAM / Grad-CAM++ one forward + backward per target."""
        name = self.layer_name(model)
        return self.layer_maps_multi(model, x, list(targets), name), name

    def layer_maps_multi(self, model: ModelAdapter, x: torch.Tensor, targets: Sequence[torch.Tensor],
                         layer: str) -> list[torch.Tensor]:
        """Layer-resolution maps ``(N, h, w)`` of ``x`` for each target vector in ``targets``
        (each ``(N,)``), in batches of ``batch_size`` images. Call under
        ``model.preserved(freeze=True)``; ``x`` on the model's device, validated."""
        module = model.layer(layer)
        if len(x):
            self._check_spatial(model, module, layer, x[:1])
        ctx = self._prepare(model, layer)
        outs: list[list[torch.Tensor]] = [[] for _ in targets]
        for i in range(0, len(x), self.batch_size):
            xb = x[i:i + self.batch_size]
            maps = self._chunk(model, module, layer, xb, [t[i:i + self.batch_size] for t in targets], ctx)
            for o, m in zip(outs, maps):
                o.append(m.detach())
        if len(x) == 0:
            return [x.new_zeros((0, 0, 0)) for _ in targets]
        return [torch.cat(o) for o in outs]

    def _prepare(self, model: ModelAdapter, layer: str) -> Any:
        return None

    def _check_spatial(self, model: ModelAdapter, module: torch.nn.Module, layer: str, x1: torch.Tensor) -> None:
        """Raise :class:`ParameterError` (listing suitable layers) unless ``layer`` outputs a
        ``(N, C, h, w)`` feature map; ``x1``: one image (one forward pass)."""
        seen: dict[str, Any] = {}
        handle = module.register_forward_hook(lambda mod, inp, out: seen.setdefault("out", out))
        try:
            with torch.no_grad():
                model.logits(x1)
        finally:
            handle.remove()
        out = seen.get("out")
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

    def _chunk(self, model, module, layer, xb, targets, ctx) -> list[torch.Tensor]:  # pragma: no cover
        raise NotImplementedError

    def _final(self, m: torch.Tensor) -> torch.Tensor:
        return torch.relu(m) if self.relu else m


class CAM(CaptumLayerExplainer):
    """CAM (Zhou et al. 2016): sum_k w_k^c A^k on the GAP + linear head (Captum LayerActivation)."""

    name = "cam"
    params = {**CaptumLayerExplainer.params,
              "relu": Param.boolean(False, doc="apply a ReLU to the map (default False: the raw CAM)")}

    def _prepare(self, model, layer):
        # raises IncompatibleModelError naming the head/layer when it is not GAP + linear
        w, b = model.classifier_weights()
        return w, b

    def _chunk(self, model, module, layer, xb, targets, ctx):
        from captum.attr import LayerActivation

        w, b = ctx
        seen: dict[str, torch.Tensor] = {}

        def forward(inp):
            seen["logits"] = model.logits(inp)
            return seen["logits"]

        with torch.no_grad():
            a = LayerActivation(forward, module).attribute(xb)  # one forward for every target
        if a.ndim != 4 or a.shape[1] != w.shape[1]:
            raise IncompatibleModelError(
                f"{model.name}: layer {layer!r} gives {tuple(a.shape[1:])} activations but the classifier "
                f"{model.classifier_name!r} takes {w.shape[1]} features; CAM needs GAP + one linear layer "
                "after the explained layer (use Grad-CAM, or pass layer=).")
        w = w.to(a.dtype)
        self._check_decomposition(model, layer, a, w, b, seen.get("logits"))
        return [self._final(torch.einsum("nkhw,nk->nhw", a, w[t])) for t in targets]

    def _check_decomposition(self, model, layer, a, w, b, logits) -> None:
        """CAM is exact iff logits = W GAP(A) + b; warn (once per call) when the model
        applies something between the layer and the pooling (e.g. a functional ReLU)."""
        if logits is None or a.numel() == 0:
            return
        pred = a.mean((2, 3)) @ w.T + (0 if b is None else b.to(a.dtype))
        dev = float((pred - logits).abs().max())
        tol = 1e-4 * max(1.0, float(logits.abs().max()))
        if dev > tol:
            warnings.warn(
                f"CAM on {model.name}: the logits are not GAP + linear of layer {layer!r} "
                f"(max deviation {dev:.3g}): something runs between that layer and the pooling (e.g. a "
                "functional ReLU), so the map is not the exact decomposition of the logit. Pass layer= "
                "the module whose output is pooled.", RuntimeWarning, stacklevel=2)


class GradCAM(CaptumLayerExplainer):
    """Grad-CAM (Selvaraju et al. 2017) via captum.attr.LayerGradCam."""

    name = "gradcam"

    def _chunk(self, model, module, layer, xb, targets, ctx):
        from captum.attr import LayerGradCam

        lgc = LayerGradCam(model.logits, module)
        return [lgc.attribute(xb, target=t, relu_attributions=self.relu)[:, 0] for t in targets]


class GradCAMPlusPlus(CaptumLayerExplainer):
    """Grad-CAM++ (Chattopadhyay et al. 2018), closed form on the logit, from Captum layer gradients."""

    name = "gradcampp"
    params = {**CaptumLayerExplainer.params,
              "eps": Param.number(0.0, low=0, doc="added to the alpha denominator (pytorch-grad-cam: 1e-6)")}

    def _chunk(self, model, module, layer, xb, targets, ctx):
        from captum._utils.gradient import compute_layer_gradients_and_eval

        out = []
        for t in targets:
            grads, acts = compute_layer_gradients_and_eval(model.logits, module, xb, target_ind=t)
            out.append(self._final(gradcampp_map(acts[0].detach(), grads[0].detach(), self.eps)))
        return out


def gradcampp_map(a: torch.Tensor, g: torch.Tensor, eps: float = 0.0) -> torch.Tensor:
    """Grad-CAM++ map before the final ReLU from activations ``a`` and logit gradients ``g``
    (both ``(N, K, h, w)``): ``sum_k w_k A^k`` with the closed-form alphas (module docstring)."""
    g2 = g * g
    den = 2 * g2 + a.sum((2, 3), keepdim=True) * g2 * g + eps
    ok = (den != 0) & (g != 0)
    alpha = torch.where(ok, g2 / torch.where(ok, den, torch.ones_like(den)), torch.zeros_like(g))
    w = (alpha * torch.relu(g)).sum((2, 3))
    return torch.einsum("nkhw,nk->nhw", a, w)


EXPLAINERS = (CAM, GradCAM, GradCAMPlusPlus)
