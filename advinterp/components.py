"""The three component interfaces: :class:`Attack`, :class:`Explainer`, :class:`Analyzer`.

Components follow the scikit-learn convention: ``__init__`` takes keyword parameters only,
declared in the class attribute ``params`` (see :mod:`advinterp.params`), stores each as an
attribute of the same name and validates them all in one place. ``get_params`` /
``set_params`` / ``repr`` work on every component.

Subclasses implement the protected method of their kind; the public method is a template
that validates inputs, adapts the model (``nn.Module`` or ART estimator ->
:class:`~advinterp.model.ModelAdapter`) and runs under
:meth:`ModelAdapter.preserved`, so a component can never leave the user's model changed.
"""
from __future__ import annotations

import warnings
from typing import Any, ClassVar, Mapping, Sequence

import numpy as np
import torch

from .data import AdversarialBatch, Attribution, PairMaps
from .exceptions import ParameterError
from .gradmode import autograd_ready
from .model import ModelAdapter, as_adapter
from .params import Param, validate
from .results import Result

__all__ = ["Component", "Attack", "Explainer", "Analyzer", "Probe", "check_images", "check_image_shape",
           "check_labels", "check_mask", "check_batch_labels",
           "check_context", "as_dataset", "load_items", "load_labels", "Subset"]


class Component:
    """Base class of every registered component.

    Class attributes:
        name: registry name (namespaced for plugins, e.g. ``"art.pgd"``).
        kind: ``"attack"``, ``"explainer"`` or ``"analyzer"``.
        params: ``{name: Param}`` declared parameters with defaults.
        conformance_params: cheap parameter values for :mod:`advinterp.testing`.
    """

    name: ClassVar[str] = ""
    kind: ClassVar[str] = ""
    params: ClassVar[Mapping[str, Param]] = {}
    conformance_params: ClassVar[Mapping[str, Any]] = {}

    def __init__(self, **params: Any):
        self._set(validate(type(self).__name__, self.params, params))

    def _set(self, values: Mapping[str, Any]) -> None:
        missing = object()
        old = {k: getattr(self, k, missing) for k in values}
        for k, v in values.items():
            setattr(self, k, v)
        try:
            self._check_params()
        except BaseException:  # a refused combination leaves the component as it was
            for k, v in old.items():
                if v is missing:
                    delattr(self, k)
                else:
                    setattr(self, k, v)
            raise

    def _check_params(self) -> None:
        """Cross-parameter checks (override; raise :class:`ParameterError`)."""

    def get_params(self) -> dict[str, Any]:
        """The current parameter values, ``{name: value}`` in declaration order."""
        return {k: getattr(self, k) for k in self.params}

    def set_params(self, **params: Any) -> "Component":
        """Update parameters (validated like ``__init__``) and return ``self``."""
        merged = {**self.get_params(), **params}
        self._set(validate(type(self).__name__, self.params, merged))
        return self

    def __repr__(self) -> str:
        changed = {k: v for k, v in self.get_params().items() if _differs(v, self.params[k].default)}
        inner = ", ".join(f"{k}={v!r}" for k, v in changed.items())
        return f"{type(self).__name__}({inner})"

    @classmethod
    def describe(cls) -> str:
        """First line of the class docstring."""
        doc = (cls.__doc__ or "").strip().splitlines()
        return doc[0] if doc else ""


def _differs(a: Any, b: Any) -> bool:
    try:
        return bool(a != b)
    except Exception:  # tensors etc.
        return a is not b


# ---------------------------------------------------------------------------- validation
def check_images(owner: str, x: Any, name: str = "x", input_shape: Sequence[int] | None = None) -> torch.Tensor:
    """Return ``x`` as a float tensor ``(N, C, H, W)`` in [0, 1] or raise ParameterError.

    Accepts torch tensors and numpy arrays (NCHW). With ``input_shape`` (the model's
    declared ``(C, H, W)``, e.g. ``ModelAdapter.input_shape``) each image must have that
    shape; channels-last ``(N, H, W, C)`` batches are named as such with the permute to apply.
    """
    if not isinstance(x, torch.Tensor):
        if isinstance(x, np.ndarray):
            x = torch.from_numpy(np.ascontiguousarray(x))
    if not isinstance(x, torch.Tensor):
        raise ParameterError(owner, name, x, "a torch.Tensor or numpy array of shape (N, C, H, W)")
    if x.ndim != 4:
        raise ParameterError(owner, name, x, "a batch of images of shape (N, C, H, W)",
                             "For a single image use x.unsqueeze(0); channels-last data must be permuted.")
    if input_shape is not None:
        check_image_shape(owner, x, tuple(int(s) for s in input_shape), name)
    if not x.is_floating_point():
        raise ParameterError(owner, name, x, "floating-point pixels in [0, 1]",
                             "Convert uint8 images with x.float() / 255.")
    if x.numel():
        lo, hi = torch.aminmax(x)  # one pass; NaN propagates, so 0 <= lo <= hi <= 1 means all is well
        if bool((lo >= 0) & (hi <= 1)):
            return x
        finite = torch.isfinite(x).flatten(1).all(1)
        if not finite.all():
            bad = (~finite).nonzero().flatten()
            raise ParameterError(owner, name, x, "finite pixels in [0, 1]",
                                 f"The input contains NaN or inf in {len(bad)} of {len(x)} images "
                                 f"(first: image {int(bad[0])}).")
        if x.min() < 0 or x.max() > 1:
            lo, hi = float(x.min()), float(x.max())
            raise ParameterError(owner, name, x, f"pixels in [0, 1] (found range [{lo:.3g}, {hi:.3g}])",
                                 "Pass un-normalised pixels; normalisation belongs in the ModelAdapter (mean=, std=).")
    return x


def check_image_shape(owner: str, x: torch.Tensor, input_shape: tuple[int, ...], name: str = "x") -> None:
    """Refuse a 4-d batch whose images are not ``input_shape`` ``(C, H, W)``; a channels-last
    ``(N, H, W, C)`` batch gets the permute that fixes it."""
    got = tuple(int(s) for s in x.shape[1:])
    if len(input_shape) != 3 or got == input_shape:
        return
    c, h, w = input_shape
    if got == (h, w, c):
        raise ParameterError(owner, name, x, f"channels-first images of shape (N, {c}, {h}, {w})",
                             f"This batch is channels-last (N, H, W, C) = {tuple(x.shape)}; "
                             f"pass {name}.permute(0, 3, 1, 2) (a numpy array: {name}.transpose(0, 3, 1, 2)).")
    raise ParameterError(owner, name, x, f"images of the model's input_shape (C, H, W) = {input_shape}",
                         f"Got images of shape {got}; resize or convert them (channels and size) to {input_shape}, "
                         "or declare the model's input_shape accordingly.")


def check_labels(owner: str, y: Any, n: int, nb_classes: int | None, name: str = "y") -> torch.Tensor:
    """Return ``y`` as an int64 tensor of shape ``(n,)`` with values in ``[0, nb_classes)``."""
    if isinstance(y, int):
        y = torch.full((n,), y, dtype=torch.long)
    if not isinstance(y, torch.Tensor):
        try:
            y = torch.as_tensor(y)
        except Exception:
            raise ParameterError(owner, name, y, f"an integer tensor of shape ({n},)") from None
    if y.is_floating_point() or y.dtype == torch.bool:
        raise ParameterError(owner, name, y, f"integer class indices of shape ({n},)")
    if y.ndim == 2 and nb_classes is not None and y.shape[1] == nb_classes:  # one-hot
        y = y.argmax(1)
    if tuple(y.shape) != (n,):
        raise ParameterError(owner, name, y, f"shape ({n},), one label per image")
    y = y.long()
    if nb_classes is not None and n and (y.min() < 0 or y.max() >= nb_classes):
        raise ParameterError(owner, name, y, f"class indices in [0, {nb_classes})",
                             f"Found values in [{int(y.min())}, {int(y.max())}].")
    return y


def check_mask(owner: str, mask: Any, shape: tuple[int, int, int, int], name: str = "mask") -> torch.Tensor:
    """Return a support mask as a 0/1 float tensor ``(N, 1 or C, H, W)`` for images of
    ``shape`` = ``(N, C, H, W)``; accepts ``(H, W)``, ``(N, H, W)``, ``(N, 1, H, W)`` and
    ``(N, C, H, W)`` tensors or arrays, bool or 0/1 valued."""
    n, c, h, w = shape
    if not isinstance(mask, torch.Tensor):
        try:
            mask = torch.as_tensor(mask)
        except Exception:
            raise ParameterError(owner, name, mask, "a tensor or array of 0/1 values") from None
    expected = f"a 0/1 mask of shape ({h}, {w}), ({n}, {h}, {w}), ({n}, 1, {h}, {w}) or ({n}, {c}, {h}, {w})"
    if mask.ndim == 2 and tuple(mask.shape) == (h, w):
        mask = mask[None, None].expand(n, 1, h, w)
    elif mask.ndim == 3:
        mask = mask[:, None]
    if mask.ndim != 4 or mask.shape[0] != n or mask.shape[1] not in (1, c) or tuple(mask.shape[2:]) != (h, w):
        raise ParameterError(owner, name, mask, expected)
    m = mask.float()
    if not ((m == 0) | (m == 1)).all():
        raise ParameterError(owner, name, mask, expected, "Threshold a soft map first, e.g. mask = cam >= nu.")
    return m


# ---------------------------------------------------------------------------- interfaces
class Attack(Component):
    """Generates adversarial examples: ``generate(model, x, y=None, target=None)``.

    Parameters common to every attack: ``targeted`` (default False). Subclasses implement
    ``_generate(model, x, y, target) -> x_adv`` on a :class:`ModelAdapter`, with ``x``
    already validated and on the model's device; ``target`` is given iff ``targeted``.
    """

    kind = "attack"
    #: True for attacks whose optimisation can be restricted to a support mask (eq. 11).
    supports_mask: ClassVar[bool] = False
    #: True when each image is attacked independently of the others, so a study may cut the
    #: images into shards (False for universal perturbations, which need the whole set).
    shardable: ClassVar[bool] = True

    def generate(self, model: Any, x: Any, y: Any = None, target: Any = None,
                 mask: Any = None) -> AdversarialBatch:
        """Attack ``x``.

        Args:
            model: :class:`ModelAdapter`, ``nn.Module`` or ART PyTorch classifier.
            x: ``(N, C, H, W)`` pixels in [0, 1] (tensor or numpy array).
            y: ``(N,)`` true labels; ``None`` uses the model's clean predictions.
            target: ``(N,)`` target labels, required iff the attack is targeted; must
                differ from ``y``.
            mask: optional support (refined attacks, eq. 11 of the PSE paper): pixels where
                it is 0 are never perturbed. Shape ``(H, W)``, ``(N, H, W)``,
                ``(N, 1, H, W)`` or ``(N, C, H, W)``, bool or 0/1. Only for attacks with
                ``supports_mask`` (cw_l2, ead, str and the l_inf gradient attacks); the result is projected so
                that ``delta`` is exactly 0 outside the mask.

        Returns:
            :class:`AdversarialBatch` on ``x``'s device and dtype; ``success`` is the
            adversarial prediction equal to ``target`` (targeted) or different from ``y``.
        """
        owner = f"{type(self).__name__}.generate"
        adapter = as_adapter(model)
        x_in = check_images(owner, x, input_shape=adapter.input_shape)
        dev, dtype = x_in.device, x_in.dtype
        targeted = bool(getattr(self, "targeted", False))
        with adapter.preserved(freeze=True):
            xm = x_in.to(adapter.device, adapter.dtype)
            if y is None:
                y_t = adapter.predict(xm)
            else:
                y_t = check_labels(owner, y, len(xm), adapter.nb_classes, "y").to(adapter.device)
            if targeted:
                if target is None:
                    raise ParameterError(owner, "target", None, f"target labels of shape ({len(xm)},)",
                                         f"{type(self).__name__} is targeted; pass target=... or use targeted=False.")
                t = check_labels(owner, target, len(xm), adapter.nb_classes, "target").to(adapter.device)
                if (t == y_t).any():
                    bad = int((t == y_t).nonzero()[0, 0])
                    raise ParameterError(owner, "target", int(t[bad]),
                                         f"a class different from the true label (image {bad} has y={int(y_t[bad])})",
                                         "Draw targets with advinterp.data.random_targets(y, nb_classes).")
            else:
                if target is not None:
                    raise ParameterError(owner, "target", target, "None for an untargeted attack",
                                         "Create the attack with targeted=True to use targets.")
                t = None
            if mask is not None and not self.supports_mask:
                raise ParameterError(owner, "mask", mask, f"None: {type(self).__name__} cannot be restricted to a support",
                                     "Use an attack with supports_mask (cw_l2, ead, str, ifgsm, fgsm, pgd).")
            if len(xm) == 0:  # nothing to attack: an empty batch of the right shapes
                if mask is not None and self.supports_mask:
                    check_mask(owner, mask, tuple(xm.shape))
                x_adv = xm.clone()
            elif self.supports_mask:
                m = None if mask is None else check_mask(owner, mask, tuple(xm.shape)).to(xm.device, xm.dtype)
                x_adv = self._generate(adapter, xm, y_t, t, mask=m).detach()
                if m is not None:  # delta is exactly zero outside the support
                    x_adv = xm + (x_adv - xm) * m
            else:
                x_adv = self._generate(adapter, xm, y_t, t).detach()
            pred = adapter.predict(x_adv)
        success = (pred == t) if targeted else (pred != y_t)
        return AdversarialBatch(
            x0=x_in.detach(), x_adv=x_adv.to(dev, dtype), y_true=y_t.to(dev),
            y_target=None if t is None else t.to(dev), success=success.to(dev), y_adv=pred.to(dev),
            attack=self.name or type(self).__name__, params=self.get_params(),
        )

    def _generate(self, model: ModelAdapter, x: torch.Tensor, y: torch.Tensor,
                  target: torch.Tensor | None, **kw: Any) -> torch.Tensor:  # pragma: no cover - abstract
        """Return ``x_adv``. Attacks with ``supports_mask`` also receive ``mask``: ``None`` or
        a 0/1 float tensor ``(N, 1 or C, H, W)`` on ``x``'s device."""
        raise NotImplementedError


class Explainer(Component):
    """Produces attribution maps: ``explain(model, x, target) -> Attribution``.

    Subclasses implement ``_explain(model, x, target) -> (maps_at_layer, layer_name)``
    returning ``(N, h, w)``; the base class upsamples them to the input (bilinear).
    Explainers that can share passes between several target classes of the same images
    (one forward for CAM, say) also override ``_explain_many``; :meth:`explain`,
    :meth:`explain_many` and :meth:`explain_pair` all go through it.
    """

    kind = "explainer"

    def explain(self, model: Any, x: Any, target: Any) -> Attribution:
        """Maps of ``x`` for class ``target``.

        Args:
            model: :class:`ModelAdapter`, ``nn.Module`` or ART PyTorch classifier.
            x: ``(N, C, H, W)`` pixels in [0, 1] (tensor or numpy array).
            target: ``(N,)`` class per image, or an int for all images.

        Returns:
            :class:`Attribution` with ``maps`` ``(N, H, W)`` (bilinear upsampling of
            ``layer_maps`` ``(N, h, w)``) on ``x``'s device and dtype.
        """
        return self._explain_checked(f"{type(self).__name__}.explain", model, x, [target], ("target",))[0]

    def explain_many(self, model: Any, x: Any, targets: Any) -> list[Attribution]:
        """Maps of the same images ``x`` for several target vectors, sharing passes where
        the explainer can (``_explain_many``); equal to ``[explain(model, x, t) for t in targets]``.

        Args:
            model: :class:`ModelAdapter`, ``nn.Module`` or ART PyTorch classifier.
            x: ``(N, C, H, W)`` pixels in [0, 1] (tensor or numpy array).
            targets: a list or tuple of ``K`` target vectors, each ``(N,)`` or an int.

        Returns:
            ``K`` :class:`Attribution`\\ s, one per target vector, in order (``[]`` for ``K = 0``).
        """
        owner = f"{type(self).__name__}.explain_many"
        if not isinstance(targets, (list, tuple)):
            raise ParameterError(owner, "targets", targets, "a list or tuple of target vectors, each (N,) or an int",
                                 "For one target vector use explain(model, x, target).")
        return self._explain_checked(owner, model, x, targets, tuple(f"targets[{i}]" for i in range(len(targets))))

    def explain_pair(self, model: Any, batch: AdversarialBatch, normalize: bool = True) -> PairMaps:
        """F(x0, t0), F(x', t0), F(x0, t), F(x', t) of an adversarial batch (Fig. 3 of the PSE paper).

        One ``_explain_many`` call on the stacked ``[x0; x']`` (``2N`` images) with the two
        target vectors ``[t0; t0]`` and ``[t; t]``, so an explainer that shares passes
        between classes shares them here (the Captum CAM: one forward in all).

        Args:
            model: :class:`ModelAdapter`, ``nn.Module`` or ART PyTorch classifier.
            batch: the :class:`AdversarialBatch`; ``t0 = batch.y_true``, ``t = batch.target``
                (the attack's target, or the adversarial prediction of an untargeted attack).
            normalize: (default True) divide the four maps of each image by their common
                maximum of ``|map|`` at input resolution, so the largest value over the four is
                1 (for non-negative maps; all-zero images are left at 0).

        Returns:
            :class:`PairMaps`: four ``(N, H, W)`` maps, ``layer_maps`` ``{key: (N, h, w)}``,
            ``scale`` ``(N,)`` (the divisor; ones when not normalised), on ``batch.x0``'s
            device and dtype.
        """
        owner = f"{type(self).__name__}.explain_pair"
        if not isinstance(batch, AdversarialBatch):
            raise ParameterError(owner, "batch", batch, "an advinterp.AdversarialBatch",
                                 "Build one with an attack's generate() or AdversarialBatch.from_pair(x0, x_adv, y).")
        adapter = as_adapter(model)
        x0 = check_images(owner, batch.x0, "batch.x0", adapter.input_shape)
        xa = check_images(owner, batch.x_adv, "batch.x_adv", adapter.input_shape)
        n = len(x0)
        t0 = check_labels(owner, batch.y_true, n, adapter.nb_classes, "batch.y_true")
        t = check_labels(owner, batch.target, n, adapter.nb_classes, "batch.target")
        x = torch.cat([x0, xa])
        (lm_t0, lm_t), layer = self._layer_maps(adapter, x, [torch.cat([t0, t0]), torch.cat([t, t])])
        # the four maps as one (4, N, ...) stack: one upsampling, one peak, one division (a few
        # ops in all, not a few per map: the explainers cost about two forwards, this is the rest)
        keys = ("x0_t0", "xadv_t0", "x0_t", "xadv_t")
        lm4 = torch.stack([lm_t0[:n], lm_t0[n:], lm_t[:n], lm_t[n:]])
        up, lm4 = self._upsample(lm4.flatten(0, 1), x0)
        up, lm4 = up.view(4, n, *up.shape[1:]), lm4.view(4, n, *lm4.shape[1:])
        scale = torch.ones(n, device=x0.device, dtype=x0.dtype)
        if normalize and n:
            peak = up.abs().flatten(2).amax(2).amax(0)
            scale = torch.where(peak > 0, peak, torch.ones_like(peak))
            up, lm4 = up / scale[:, None, None], lm4 / scale[:, None, None]
        maps, layer_maps = dict(zip(keys, up.unbind(0))), dict(zip(keys, lm4.unbind(0)))
        return PairMaps(**maps, layer_maps=layer_maps, scale=scale, t0=t0.to(x0.device), t=t.to(x0.device),
                        method=self._method(), layer=layer, normalized=bool(normalize))

    # ------------------------------------------------------------------ shared internals
    def _method(self) -> str:
        return self.name or type(self).__name__

    def _explain_checked(self, owner: str, model: Any, x: Any, targets: Any, names: tuple[str, ...]
                         ) -> list[Attribution]:
        """Validate ``x`` and each target vector (``names`` in the errors), explain, upsample."""
        adapter = as_adapter(model)
        x_in = check_images(owner, x, input_shape=adapter.input_shape)
        ts = [check_labels(owner, t, len(x_in), adapter.nb_classes, name) for t, name in zip(targets, names)]
        if not ts:
            return []
        layer_maps, layer = self._layer_maps(adapter, x_in, ts)
        out = []
        for lm, t in zip(layer_maps, ts):
            maps, lm = self._upsample(lm, x_in)
            out.append(Attribution(maps=maps, layer_maps=lm, target=t.to(x_in.device), method=self._method(),
                                   layer=layer))
        return out

    def _layer_maps(self, adapter: ModelAdapter, x: torch.Tensor, targets: list[torch.Tensor]
                    ) -> tuple[list[torch.Tensor], str]:
        """``_explain_many`` on validated ``x`` / targets, on the model's device, under
        ``adapter.preserved(freeze=True)``; the maps come back detached."""
        # gradient explainers work from torch.no_grad() / inference_mode() too
        with adapter.preserved(freeze=True), torch.inference_mode(False), torch.enable_grad():
            xm = autograd_ready(x).to(adapter.device, adapter.dtype)
            ts = [autograd_ready(t).to(adapter.device) for t in targets]
            if len(xm) == 0:  # no images: explain one grey image for the layer's size and name, keep none
                grey = torch.full((1, *xm.shape[1:]), 0.5, device=xm.device, dtype=xm.dtype)
                with warnings.catch_warnings():  # nor the warnings about an image nobody passed
                    warnings.simplefilter("ignore")
                    layer_maps, layer = self._explain_many(adapter, grey, [t.new_zeros(1) for t in ts])
                layer_maps = [m[:0] for m in layer_maps]
            else:
                layer_maps, layer = self._explain_many(adapter, xm, ts)
        return [m.detach() for m in layer_maps], layer

    @staticmethod
    def _upsample(layer_maps: torch.Tensor, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(maps (N, H, W), layer_maps (N, h, w))`` on ``like``'s device and dtype, ``maps``
        the bilinear upsampling (``align_corners=False``) of ``layer_maps`` to ``like``'s size."""
        maps = torch.nn.functional.interpolate(layer_maps[:, None], size=tuple(like.shape[-2:]),
                                               mode="bilinear", align_corners=False)[:, 0]
        return maps.to(like.device, like.dtype), layer_maps.to(like.device, like.dtype)

    # ------------------------------------------------------------------ to implement
    def _explain_many(self, model: ModelAdapter, x: torch.Tensor, targets: list[torch.Tensor]
                      ) -> tuple[list[torch.Tensor], str]:
        """Layer maps of ``x`` for each target vector: ``([(N, h, w)] * len(targets), layer_name)``.

        ``x`` is validated and on the model's device; each target is an ``(N,)`` int64 tensor
        there; called under ``model.preserved(freeze=True)``. Default: ``_explain`` once per
        target vector. Override to share passes between the targets.
        """
        maps, layer = [], ""
        for t in targets:
            m, layer = self._explain(model, x, t)
            maps.append(m)
        return maps, layer

    def _explain(self, model: ModelAdapter, x: torch.Tensor, target: torch.Tensor):  # pragma: no cover
        """``(maps (N, h, w), layer_name)`` of ``x`` for the ``(N,)`` classes ``target``."""
        raise NotImplementedError


class Analyzer(Component):
    """Analyses an :class:`AdversarialBatch`: ``analyze(model, batch, **context) -> Result``.

    Subclasses implement ``_analyze(model, batch, **context)``; the base class adapts the
    model and runs it under :meth:`ModelAdapter.preserved`.
    """

    kind = "analyzer"
    #: The context keywords ``analyze`` accepts: any other keyword raises ParameterError
    #: naming it and listing these (``()``: no context). ``None`` (default): not checked.
    context_keys: ClassVar[tuple[str, ...] | None] = None
    #: True when the result of a batch is the image-wise merge of the results of its parts
    #: (its result type declares ``per_image``): a study may then cut the batch into shards.
    shardable: ClassVar[bool] = False
    #: Context keywords holding one entry per image of the batch (sliced with the shard).
    per_image_context: ClassVar[tuple[str, ...]] = ()
    #: True for analyses that mean nothing on failed pairs (pse, is): ``analyze`` then warns
    #: once with the number of pairs whose ``success`` is False.
    warn_failed: ClassVar[bool] = False
    #: False for analyses that never run the model on the batch's images (``attack_metrics``
    #: of a batch with ``success``): ``analyze`` then does not hold them to ``input_shape``.
    feeds_model: ClassVar[bool] = True

    def analyze(self, model: Any, batch: AdversarialBatch, **context: Any) -> Result:
        owner = f"{type(self).__name__}.analyze"
        check_context(self, owner, context)
        if not isinstance(batch, AdversarialBatch):
            raise ParameterError(owner, "batch", batch, "an advinterp.AdversarialBatch",
                                 "Build one with an attack's generate() or AdversarialBatch.from_pair(x0, x_adv, y).")
        adapter = as_adapter(model)
        shape = adapter.input_shape if self.feeds_model else None
        check_images(owner, batch.x0, "batch.x0", shape)
        check_images(owner, batch.x_adv, "batch.x_adv", shape)
        check_batch_labels(owner, batch, _nb_classes_or_none(adapter))
        if self.warn_failed:
            warn_failed_pairs(owner, batch)
        with adapter.preserved(freeze=True):
            return self._analyze(adapter, batch, **context)

    def _analyze(self, model: ModelAdapter, batch: AdversarialBatch, **context: Any) -> Result:  # pragma: no cover
        raise NotImplementedError


def _nb_classes_or_none(adapter: ModelAdapter) -> int | None:
    """The adapter's class count, or ``None`` when it cannot tell (no linear head)."""
    try:
        return adapter.nb_classes
    except Exception:  # IncompatibleModelError: labels are then checked for shape only
        return None


def check_batch_labels(owner: str, batch: AdversarialBatch, nb_classes: int | None) -> None:
    """Refuse an :class:`AdversarialBatch` whose labels are out of ``[0, nb_classes)`` or whose
    ``y_target`` equals ``y_true`` for some image (as :meth:`Attack.generate` does)."""
    n = len(batch.x0)
    y = check_labels(owner, batch.y_true, n, nb_classes, "batch.y_true")
    if batch.y_target is not None or batch.y_adv is not None:
        check_labels(owner, batch.target, n, nb_classes, "batch.target")
    if batch.y_target is not None:
        same = (batch.y_target.to(y.device).long() == y).nonzero().flatten()
        if len(same):
            bad = int(same[0])
            raise ParameterError(owner, "batch.y_target", int(batch.y_target[bad]),
                                 f"a class different from the true label (image {bad} has y_true={int(y[bad])})",
                                 f"{len(same)} of {n} images have y_target == y_true; draw targets with "
                                 "advinterp.data.random_targets(y, nb_classes).")


def warn_failed_pairs(owner: str, batch: AdversarialBatch) -> int:
    """Warn once (``UserWarning``) when some pairs of ``batch`` record ``success=False``;
    return their number (0 when none failed or the batch has no ``success``)."""
    if batch.success is None or not len(batch.success):
        return 0
    failed = int((~batch.success.bool()).sum())
    if failed:
        warnings.warn(f"{owner}: the attack failed on {failed} of {len(batch.success)} pairs "
                      f"(success=False); their results describe no adversarial example and may be NaN "
                      "(n_valid counts the images that entered the means).", UserWarning, stacklevel=3)
    return failed


def check_context(component: Component, owner: str, context: Mapping[str, Any]) -> None:
    """Refuse context keywords outside ``component.context_keys`` (``None``: not checked)."""
    keys = getattr(component, "context_keys", None)
    if keys is None:
        return
    unknown = sorted(set(context) - set(keys))
    if unknown:
        accepted = ", ".join(f"{k}=" for k in keys)
        raise ParameterError(owner, unknown[0], context[unknown[0]], "no such context keyword",
                             f"Accepted: {accepted}." if accepted else
                             f"{component.name or type(component).__name__} takes no context; set its parameters "
                             "instead.")


class Probe(Component):
    """A model-level analysis over a dataset: ``run(model, data, **context) -> Result``.

    Probes characterise the model itself on (clean) data -- accuracy, network dissection --
    where analyzers look at an :class:`AdversarialBatch`. ``data`` is a map-style dataset
    whose items are ``(x, y)`` (``x`` a ``(C, H, W)`` float tensor in [0, 1]; ``y`` may be
    ``None``), or ``None`` for probes that bring their own data (e.g. dissection's Broden
    folder parameter).

    Implement either ``_run(model, data, **context)`` (one pass, one piece), or the sharded
    protocol, which lets a study save partial results and resume, and an engine run shards
    in parallel; ``run`` then goes through the same protocol in process::

        shardable = True
        passes = 1                                   # passes over the data
        def _start(self, model, data, **context):    # -> state before pass 0 (any picklable)
        def _partial(self, model, data, indices, state, step, **context) -> Result
        def _merge(self, partials, state, step, **context):   # -> state after pass `step`
        def _finish(self, model, state, **context) -> Result

    ``_partial`` sees only the items ``indices`` (a list of ints) of pass ``step`` and must
    return a :class:`~advinterp.results.Result` (it is saved to disk); ``_merge`` combines
    the partials of one pass *exactly*, in index order, whatever the shard boundaries.
    """

    kind = "probe"
    #: Context keywords ``run`` accepts (``None``: not checked; see :class:`Analyzer`).
    context_keys: ClassVar[tuple[str, ...] | None] = None
    #: Whether the probe implements the sharded protocol.
    shardable: ClassVar[bool] = False
    #: Passes over the data (sharded protocol).
    passes: ClassVar[int] = 1
    #: Whether ``run`` needs ``data`` (``False``: the probe brings its own, e.g. a Broden path).
    needs_data: ClassVar[bool] = True
    #: Whether the items go to the model as they are (then they must have the model's
    #: ``input_shape``); ``False`` for probes that resize or only read the data.
    feeds_model: ClassVar[bool] = True

    def run(self, model: Any, data: Any = None, *, shard_size: int | None = None, **context: Any) -> Result:
        """Run the probe on ``model`` over ``data``.

        Args:
            model: :class:`ModelAdapter`, ``nn.Module`` or ART PyTorch classifier.
            data: a map-style dataset of ``(x, y)`` items, an ``(x, y)`` pair of tensors, or
                ``None`` for probes with ``needs_data = False``.
            shard_size: items per shard for sharded probes (``None``: all at once).
            **context: the probe's context keywords (``context_keys``).
        """
        owner = f"{type(self).__name__}.run"
        check_context(self, owner, context)
        if shard_size is not None and (isinstance(shard_size, bool) or not isinstance(shard_size, int)
                                       or shard_size < 1):
            raise ParameterError(owner, "shard_size", shard_size, "a positive integer or None")
        adapter = as_adapter(model)
        data = as_dataset(owner, data, required=self.needs_data,
                          input_shape=adapter.input_shape if self.feeds_model else None)
        with adapter.preserved(freeze=True):
            if not self.shardable:
                return self._run(adapter, data, **context)
            n = len(data) if data is not None else 0
            size = max(1, n) if shard_size is None else int(shard_size)
            shards = [list(range(i, min(n, i + size))) for i in range(0, n, size)] or [[]]
            state = self._start(adapter, data, **context)
            for step in range(self.passes):
                parts = [self._partial(adapter, data, idx, state, step, **context) for idx in shards]
                state = self._merge(parts, state, step, **context)
            return self._finish(adapter, state, **context)

    def default_data(self) -> Any:
        """The data of a probe with ``needs_data = False`` when it is given none (e.g. a
        dissection's ``broden`` parameter, or the embedded world exported in Broden format):
        a dataset a study cuts into shards like any other, or ``None`` (default: ``_run`` /
        ``_start`` handle ``data=None`` themselves, in one piece)."""
        return None

    def _run(self, model: ModelAdapter, data: Any, **context: Any) -> Result:  # pragma: no cover - abstract
        raise NotImplementedError

    def _start(self, model: ModelAdapter, data: Any, **context: Any) -> Any:
        return None

    def _partial(self, model: ModelAdapter, data: Any, indices: list[int], state: Any, step: int,
                 **context: Any) -> Result:  # pragma: no cover - abstract
        raise NotImplementedError

    def _merge(self, partials: list[Result], state: Any, step: int, **context: Any) -> Any:  # pragma: no cover
        raise NotImplementedError

    def _finish(self, model: ModelAdapter, state: Any, **context: Any) -> Result:  # pragma: no cover - abstract
        raise NotImplementedError


class Subset:
    """Items ``indices`` of a dataset, itself a dataset (a study step's ``start``/``n``).

    Attributes ``data`` (the whole dataset) and ``indices`` let a component reach the
    original (e.g. a Broden dataset's segmentations); ``image(i)`` and ``targets`` are
    forwarded when the dataset has them, so :func:`load_items` stays fast.
    """

    def __init__(self, data: Any, indices: Sequence[int]):
        self.data, self.indices = data, [int(i) for i in indices]
        if callable(getattr(data, "image", None)):
            self.image = lambda i: data.image(self.indices[i])

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> Any:
        return self.data[self.indices[i]]

    @property
    def targets(self):
        t = getattr(self.data, "targets", None)
        return None if t is None else [t[i] for i in self.indices]


class _TensorPairDataset:
    """``(x, y)`` tensors as a map-style dataset (``y`` may be ``None``)."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor | None):
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int):
        return self.x[i], (None if self.y is None else int(self.y[i]))


def as_dataset(owner: str, data: Any, required: bool = True, input_shape: Sequence[int] | None = None) -> Any:
    """``data`` as a map-style dataset of ``(x, y)`` items: datasets pass through, an
    ``(x, y)`` tensor pair (or ``x`` alone) is wrapped after :func:`check_images`.

    With ``input_shape`` (the model's ``(C, H, W)``) the images must have that shape: every
    image of a tensor pair, the first item of a dataset (decoding one item, not all).
    """
    if data is None:
        if required:
            raise ParameterError(owner, "data", None, "a dataset of (x, y) items or an (x, y) pair of tensors")
        return None
    if isinstance(data, (tuple, list)) and len(data) == 2 and isinstance(data[0], torch.Tensor):
        x = check_images(owner, data[0], "data[0]", input_shape)
        y = None if data[1] is None else check_labels(owner, data[1], len(x), None, "data[1]")
        return _TensorPairDataset(x, y)
    if isinstance(data, torch.Tensor):
        return _TensorPairDataset(check_images(owner, data, "data", input_shape), None)
    if not (hasattr(data, "__len__") and hasattr(data, "__getitem__")):
        raise ParameterError(owner, "data", data, "a map-style dataset (len and [i]) of (x, y) items or an (x, y) pair")
    if input_shape is not None and len(data) > 0:
        first, _ = load_items(data, [0], owner)
        check_image_shape(owner, first, tuple(int(s) for s in input_shape), "data[0]")
    return data


def load_items(data: Any, indices: Sequence[int], owner: str = "load_items") -> tuple[torch.Tensor, torch.Tensor | None]:
    """Stack items ``indices`` of a dataset: ``(x (n, C, H, W), y (n,) or None)``.

    Uses the dataset's ``tensors()`` (all items at once, e.g. the synthetic world) when it
    has one; else ``data.image(i)`` when the dataset offers image-only access (a Broden
    dataset: ``(H, W, 3)`` uint8, no labels); else ``data[i]`` item by item.
    """
    idx = [int(i) for i in indices]
    if isinstance(data, _TensorPairDataset):
        return data.x[idx], (None if data.y is None else data.y[idx])
    if callable(getattr(data, "tensors", None)):
        x_all, y_all = data.tensors()
        return x_all[idx], (None if y_all is None else torch.as_tensor(y_all)[idx])
    if callable(getattr(data, "image", None)):
        imgs = []
        for i in idx:
            im = data.image(i)  # a copy: Broden's arrays are read-only views of the decoded file
            imgs.append(im if isinstance(im, torch.Tensor) else torch.from_numpy(np.array(im)))
        if not imgs:
            return torch.zeros(0), None
        x = torch.stack(imgs)
        if x.dtype == torch.uint8 and x.ndim == 4 and x.shape[-1] in (1, 3):
            x = x.permute(0, 3, 1, 2).float() / 255
        return check_images(owner, x.contiguous(), "data"), None
    xs, ys = [], []
    for i in idx:
        item = data[i]
        x, y = (item if isinstance(item, (tuple, list)) else (item, None))[:2]
        xs.append(torch.as_tensor(x))
        ys.append(y)
    if not xs:
        return torch.zeros(0), None
    x = torch.stack(xs)
    y = None if any(v is None for v in ys) else torch.as_tensor([int(v) for v in ys], dtype=torch.long)
    return check_images(owner, x, "data"), y


def load_labels(data: Any, indices: Sequence[int]) -> torch.Tensor | None:
    """Labels of items ``indices`` without decoding images where the dataset allows it
    (``tensors()``, a ``targets`` list); ``None`` for datasets without labels."""
    idx = [int(i) for i in indices]
    if isinstance(data, _TensorPairDataset) or callable(getattr(data, "tensors", None)):
        return load_items(data, idx)[1]
    if callable(getattr(data, "image", None)):
        return None
    targets = getattr(data, "targets", None)
    if targets is not None:
        return torch.as_tensor([int(targets[i]) for i in idx], dtype=torch.long)
    return load_items(data, idx)[1]
