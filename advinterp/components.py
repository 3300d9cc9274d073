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

from typing import Any, ClassVar, Mapping

import torch

from .data import AdversarialBatch, Attribution
from .exceptions import ParameterError
from .model import ModelAdapter, as_adapter
from .params import Param, validate
from .results import Result

__all__ = ["Component", "Attack", "Explainer", "Analyzer", "check_images", "check_labels", "check_mask"]


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
        for k, v in values.items():
            setattr(self, k, v)
        self._check_params()

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
def check_images(owner: str, x: Any, name: str = "x") -> torch.Tensor:
    """Return ``x`` as a float tensor ``(N, C, H, W)`` in [0, 1] or raise ParameterError.

    Accepts torch tensors and numpy arrays (NCHW).
    """
    if not isinstance(x, torch.Tensor):
        try:
            import numpy as np

            if isinstance(x, np.ndarray):
                x = torch.from_numpy(np.ascontiguousarray(x))
        except ImportError:  # pragma: no cover
            pass
    if not isinstance(x, torch.Tensor):
        raise ParameterError(owner, name, x, "a torch.Tensor or numpy array of shape (N, C, H, W)")
    if x.ndim != 4:
        raise ParameterError(owner, name, x, "a batch of images of shape (N, C, H, W)",
                             "For a single image use x.unsqueeze(0); channels-last data must be permuted.")
    if not x.is_floating_point():
        raise ParameterError(owner, name, x, "floating-point pixels in [0, 1]",
                             "Convert uint8 images with x.float() / 255.")
    if x.numel() and (x.min() < 0 or x.max() > 1 or not torch.isfinite(x).all()):
        lo, hi = float(x.min()), float(x.max())
        raise ParameterError(owner, name, x, f"pixels in [0, 1] (found range [{lo:.3g}, {hi:.3g}])",
                             "Pass un-normalised pixels; normalisation belongs in the ModelAdapter (mean=, std=).")
    return x


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
    if mask.ndim == 2:
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
                ``supports_mask`` (the optimisation attacks); the result is projected so
                that ``delta`` is exactly 0 outside the mask.

        Returns:
            :class:`AdversarialBatch` on ``x``'s device and dtype; ``success`` is the
            adversarial prediction equal to ``target`` (targeted) or different from ``y``.
        """
        owner = f"{type(self).__name__}.generate"
        adapter = as_adapter(model)
        x_in = check_images(owner, x)
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
                                     "Use an optimisation attack with supports_mask (cw_l2, ead, str).")
            if self.supports_mask:
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
    """

    kind = "explainer"

    def explain(self, model: Any, x: Any, target: Any) -> Attribution:
        """Maps of ``x`` for class ``target`` (``(N,)`` tensor or an int for all images)."""
        owner = f"{type(self).__name__}.explain"
        adapter = as_adapter(model)
        x_in = check_images(owner, x)
        with adapter.preserved(freeze=True):
            xm = x_in.to(adapter.device, adapter.dtype)
            t = check_labels(owner, target, len(xm), adapter.nb_classes, "target").to(adapter.device)
            layer_maps, layer = self._explain(adapter, xm, t)
        layer_maps = layer_maps.detach()
        maps = torch.nn.functional.interpolate(layer_maps[:, None], size=tuple(x_in.shape[-2:]),
                                               mode="bilinear", align_corners=False)[:, 0]
        return Attribution(maps=maps.to(x_in.device, x_in.dtype), layer_maps=layer_maps.to(x_in.device, x_in.dtype),
                           target=t.to(x_in.device), method=self.name or type(self).__name__, layer=layer)

    def _explain(self, model: ModelAdapter, x: torch.Tensor, target: torch.Tensor):  # pragma: no cover
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

    def analyze(self, model: Any, batch: AdversarialBatch, **context: Any) -> Result:
        owner = f"{type(self).__name__}.analyze"
        if self.context_keys is not None:
            unknown = sorted(set(context) - set(self.context_keys))
            if unknown:
                accepted = ", ".join(f"{k}=" for k in self.context_keys)
                raise ParameterError(owner, unknown[0], context[unknown[0]], "no such context keyword",
                                     f"Accepted: {accepted}." if accepted else
                                     f"{self.name or type(self).__name__} takes no context; set its parameters instead.")
        if not isinstance(batch, AdversarialBatch):
            raise ParameterError(owner, "batch", batch, "an advinterp.AdversarialBatch",
                                 "Build one with an attack's generate() or AdversarialBatch.from_pair(x0, x_adv, y).")
        adapter = as_adapter(model)
        check_images(owner, batch.x0, "batch.x0")
        check_images(owner, batch.x_adv, "batch.x_adv")
        with adapter.preserved(freeze=True):
            return self._analyze(adapter, batch, **context)

    def _analyze(self, model: ModelAdapter, batch: AdversarialBatch, **context: Any) -> Result:  # pragma: no cover
        raise NotImplementedError
