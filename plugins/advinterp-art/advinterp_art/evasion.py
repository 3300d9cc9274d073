"""advinterp's native attacks as ART ``EvasionAttack`` s, for ART pipelines.

:func:`as_art_evasion_attack` turns any native advinterp :class:`~advinterp.Attack` class
(``pgd`` today; ``cw_l2``, ``ead``, ``str``… as soon as they are registered) into an ART
``EvasionAttack`` subclass with ART's calling conventions::

    from advinterp_art import PGDAttack               # = as_art_evasion_attack(PGD)
    attack = PGDAttack(classifier, eps=8/255, eps_step=2/255, max_iter=10)
    x_adv = attack.generate(x)                        # numpy in, numpy out
    AdversarialTrainer(classifier, attack).fit(x, y)  # drops into ART's defences

* parameters are advinterp's (``attack_params`` lists them); bad values raise advinterp's
  :class:`~advinterp.ParameterError` (a ``ValueError``, like ART's own checks);
  ``targeted`` defaults to False, as for every ART attack, even where the advinterp attack
  is targeted by default (``str``): pass ``targeted=True`` for targets in ``y``;
* ``generate(x, y=None, mask=None)``: ``x`` a numpy array ``(N, C, H, W)`` in [0, 1]; ``y``
  one-hot or class indices — the true labels (untargeted; ``None``: the estimator's
  predictions) or the targets (``targeted=True``, as in ART). Images already classified
  as their target are returned unchanged (advinterp refuses a target equal to the label).
  The output has ``x``'s dtype.
* the estimator must be an ART PyTorch classifier with ``clip_values=(0, 1)`` (it is
  adapted with :class:`advinterp.ModelAdapter`, which reads its preprocessing).
"""
from __future__ import annotations

import re
import threading
from typing import Any, ClassVar

import numpy as np
import torch
from art.attacks.attack import EvasionAttack
from art.estimators.classification.classifier import ClassifierMixin
from art.estimators.estimator import BaseEstimator, LossGradientsMixin

import advinterp
from advinterp import Attack, ParameterError
from advinterp.api import as_adapter, check_images, validate

from .adapters import ARTAttack

__all__ = ["AdvinterpEvasionAttack", "as_art_evasion_attack", "art_attack", "native_attacks", "evasion_class_name"]


class AdvinterpEvasionAttack(EvasionAttack):
    """Base class of the ART ``EvasionAttack`` s made by :func:`as_art_evasion_attack`.

    Class attributes: ``advinterp_attack`` (the wrapped advinterp attack class) and
    ``attack_params`` (its parameter names).
    """

    advinterp_attack: ClassVar[type[Attack]]
    attack_params: ClassVar[list[str]] = []
    _estimator_requirements = (BaseEstimator, LossGradientsMixin, ClassifierMixin)

    def __init__(self, estimator: Any, **params: Any):
        super().__init__(estimator=estimator)
        self._adapter = as_adapter(estimator)  # IncompatibleModelError for non-PyTorch estimators
        self._ready = False
        if "targeted" in self.advinterp_attack.params:
            # ART's convention: an EvasionAttack is untargeted unless targeted=True is passed
            # (``str`` is targeted by default in advinterp; ART's trainers refuse targeted attacks)
            params.setdefault("targeted", False)
        for k, v in validate(type(self).__name__, self.advinterp_attack.params, params).items():
            setattr(self, k, v)
        self._ready = True
        self._check_params()

    # ------------------------------------------------------------------ parameters
    @property
    def targeted(self) -> bool:
        """Whether ``y`` holds target labels (ART's convention)."""
        return self._targeted

    @targeted.setter
    def targeted(self, targeted: bool) -> None:
        self._targeted = targeted
        if getattr(self, "_ready", False):
            self._check_params()

    def get_params(self) -> dict[str, Any]:
        """The advinterp parameters, ``{name: value}``."""
        return {k: getattr(self, k) for k in self.attack_params}

    def set_params(self, **kwargs: Any) -> None:
        """ART's ``set_params``, validated by advinterp before anything changes."""
        validate(type(self).__name__, self.advinterp_attack.params, {**self.get_params(), **kwargs})
        self.advinterp_attack(**{**self.get_params(), **kwargs})  # cross-parameter checks
        self._ready = False
        try:
            for k, v in kwargs.items():
                setattr(self, k, v)
        finally:
            self._ready = True
        self._check_params()

    def _check_params(self) -> None:
        """Delegate to advinterp's validation (raises :class:`advinterp.ParameterError`)."""
        super()._check_params()
        if "targeted" not in self.attack_params and self._targeted:
            raise ParameterError(type(self).__name__, "targeted", self._targeted,
                                 f"False: {self.advinterp_attack.__name__} has no targeted variant")
        self._attack = self.advinterp_attack(**self.get_params())

    @property
    def attack(self) -> Attack:
        """The advinterp attack instance doing the work."""
        return self._attack

    # ------------------------------------------------------------------ generate
    def generate(self, x: np.ndarray, y: np.ndarray | None = None, **kwargs: Any) -> np.ndarray:
        """Adversarial examples of ``x`` (numpy ``(N, C, H, W)`` in [0, 1]) as a numpy array.

        Args:
            x: the images.
            y: one-hot ``(N, K)`` or indices ``(N,)``: true labels (untargeted; ``None``
                uses the estimator's predictions) or target labels (``targeted``; required).
            mask: optional, broadcastable to ``x``, 0/1: pixels where it is 0 are not
                perturbed (only for attacks with ``supports_mask``).
        """
        owner = f"{type(self).__name__}.generate"
        mask = kwargs.pop("mask", None)
        if kwargs:
            name = sorted(kwargs)[0]
            raise ParameterError(owner, name, kwargs[name], "no such argument (generate takes x, y and mask)")
        x_t = check_images(owner, x if isinstance(x, (np.ndarray, torch.Tensor)) else np.asarray(x))
        n, K = len(x_t), self._adapter.nb_classes
        labels = _labels(owner, y, n, K)
        if mask is not None:
            try:
                mask = np.ascontiguousarray(np.broadcast_to(np.asarray(mask), tuple(x_t.shape)))
            except ValueError:
                raise ParameterError(owner, "mask", mask, f"an array broadcastable to x's shape {tuple(x_t.shape)}") \
                    from None
        if not self.targeted:
            out = self._attack.generate(self._adapter, x_t, y=labels, mask=mask).x_adv
            return out.cpu().numpy()
        if labels is None:
            raise ParameterError(owner, "y", None, f"target labels, one-hot ({n}, {K}) or indices ({n},)",
                                 "A targeted attack reads its targets from y (ART's convention).")
        pred = self._adapter.predict(x_t.to(self._adapter.device, self._adapter.dtype)).cpu()
        todo = (pred != labels).numpy()
        out = x_t.detach().cpu().clone()
        if todo.any():
            idx = torch.from_numpy(np.flatnonzero(todo))
            batch = self._attack.generate(self._adapter, x_t[idx.to(x_t.device)], y=pred[idx], target=labels[idx],
                                          mask=None if mask is None else mask[todo])
            out[idx] = batch.x_adv.cpu()
        return out.numpy()


def _labels(owner: str, y: Any, n: int, nb_classes: int) -> torch.Tensor | None:
    """ART's labels (one-hot ``(N, K)`` or indices ``(N,)``) -> int64 indices."""
    if y is None:
        return None
    y = np.asarray(y)
    if y.ndim == 2:
        if y.shape != (n, nb_classes):
            raise ParameterError(owner, "y", y, f"one-hot labels of shape ({n}, {nb_classes}) or indices ({n},)")
        y = y.argmax(1)
    elif y.ndim == 1 and np.issubdtype(y.dtype, np.floating):
        if not np.all(np.isfinite(y)) or not np.all(y == np.round(y)):
            raise ParameterError(owner, "y", y, f"integer class indices of shape ({n},)")
        y = y.astype(np.int64)
    from advinterp.api import check_labels

    return check_labels(owner, torch.from_numpy(np.ascontiguousarray(y)), n, nb_classes, "y")


# ------------------------------------------------------------------------------ factory
_CLASSES: dict[type, type[AdvinterpEvasionAttack]] = {}
_LOCK = threading.Lock()


def evasion_class_name(attack_cls: type[Attack]) -> str:
    """``pgd`` -> ``PGDAttack``, ``cw_l2`` -> ``CWL2Attack``, ``mylab.patch`` -> ``MylabPatchAttack``."""
    parts = [p for p in re.split(r"[^0-9A-Za-z]+", attack_cls.name or "") if p]
    if not parts:
        return f"{attack_cls.__name__}Attack"
    return "".join(p.upper() if len(p) <= 3 else p[:1].upper() + p[1:] for p in parts) + "Attack"


def as_art_evasion_attack(attack_cls: type[Attack] | str) -> type[AdvinterpEvasionAttack]:
    """An ART ``EvasionAttack`` subclass running the native advinterp attack ``attack_cls``
    (a class or a registered attack name). The same class is returned on every call."""
    if isinstance(attack_cls, str):
        attack_cls = advinterp.get_registry().info("attack", attack_cls).obj
    if not (isinstance(attack_cls, type) and issubclass(attack_cls, Attack)):
        raise ParameterError("as_art_evasion_attack", "attack_cls", attack_cls,
                             "an advinterp Attack subclass or a registered attack name")
    if issubclass(attack_cls, ARTAttack):
        art_name = attack_cls.art_class_path.rsplit(".", 1)[-1]
        raise ParameterError("as_art_evasion_attack", "attack_cls", attack_cls.name or attack_cls.__name__,
                             "a native advinterp attack, not an ART adapter",
                             f"It already is ART's {art_name}: use that class in ART pipelines.")
    with _LOCK:
        cls = _CLASSES.get(attack_cls)
        if cls is None:
            name = evasion_class_name(attack_cls)
            doc = (f"advinterp's native ``{attack_cls.name or attack_cls.__name__}`` attack as an ART EvasionAttack "
                   f"(made by advinterp_art.as_art_evasion_attack).\n\n{attack_cls.__doc__ or ''}")
            cls = type(name, (AdvinterpEvasionAttack,), {
                "__doc__": doc, "__module__": "advinterp_art", "__qualname__": name,
                "advinterp_attack": attack_cls, "attack_params": list(attack_cls.params),
                "supports_mask": attack_cls.supports_mask,
            })
            _CLASSES[attack_cls] = cls
        return cls


def native_attacks() -> dict[str, type[Attack]]:
    """Registered attacks that are not ART adapters: ``{name: class}`` (``pgd``, and
    ``cw_l2``/``ead``/``str`` once registered)."""
    return {i.name: i.obj for i in advinterp.list_components("attack") if not issubclass(i.obj, ARTAttack)}


def art_attack(name: str, estimator: Any, **params: Any) -> AdvinterpEvasionAttack:
    """The registered native attack ``name`` as an ART ``EvasionAttack`` on ``estimator``:
    ``art_attack("pgd", classifier, eps=8/255)``."""
    return as_art_evasion_attack(name)(estimator, **params)
