"""Softmax vs SJE accuracy under attack, with and without adversarial training (Gulshad et al.
2020, Sec. 4.1, Fig. 4; capabilities D1 and D3).

For each ``eps`` of a grid (default 0.01, 0.025, 0.06, 0.12, l_inf) and each mode (IFGSM
untargeted, IFGSM targeted to a random class != y), :class:`Robustness` (registered analyzer
``attributes.robustness``) measures on the batch's clean images ``x0`` / ``y_true``:

* ``softmax_clean`` / ``softmax_adv``: the model's accuracy on ``x0`` and on ``x_hat`` = IFGSM
  on the model (the core's native ``ifgsm`` through :func:`advinterp.api.get_attack`);
* ``sje_clean`` / ``sje_adv``: SJE (:class:`~advinterp_attributes.SJE`, fitted on the model's
  pooled features of the training images) on the features of ``x0`` and of the **same**
  ``x_hat`` (the attack transferred from the softmax model, as in the paper);
* ``at_softmax_clean`` / ``at_softmax_adv``, ``at_sje_clean`` / ``at_sje_adv``: the same with the
  adversarially trained copy (eq. 2, :func:`~advinterp_attributes.adversarial_training.alpha_adversarial_training`,
  PGD at ``at_eps``, default the attack's own eps: one copy per eps) -- ``x_hat`` made on the
  trained copy, SJE refitted on its features.

The batch's ``x_adv`` is not used (the analyzer runs its own attacks over the grid); the
user's model is never trained (a deep copy is).

Training images (SJE and adversarial training): the context ``train`` (an
``AdversarialBatch``: its ``x0`` / ``y_true``, e.g. an attack step on the training split, or a
pairs data id), else the embedded world's train split (``n_train`` scenes, when the model
takes ``(3, 64, 64)`` images of the world's 12 classes), else the batch's own clean images
(the result says which: ``trained_on``). Class attributes: the context ``class_attributes``
(``(C, E)``), else the registered dataset ``dataset`` (its ``class_attributes``), else the
embedded world's matrix for a 12-class model, else one-hot rows (SJE is then a ranking
perceptron).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from advinterp.api import AdversarialBatch, Analyzer, ModelAdapter, Param, ParameterError, Result, get_attack

from .adversarial_training import alpha_adversarial_training
from .features import features

__all__ = ["Robustness", "RobustnessResult", "COLUMNS", "DEFAULT_EPS", "training_data", "class_attribute_matrix"]

#: The paper's grid of l_inf budgets, plus 0.025.
DEFAULT_EPS = (0.01, 0.025, 0.06, 0.12)
#: The accuracies measured per (mode, eps), in this order.
COLUMNS = ("softmax_clean", "softmax_adv", "sje_clean", "sje_adv", "at_softmax_clean", "at_softmax_adv",
           "at_sje_clean", "at_sje_adv")
MODES = ("untargeted", "targeted")
WORLD_SHAPE = (3, 64, 64)


def _eps_ok(v: Any) -> bool:
    return (isinstance(v, (list, tuple)) and len(v) > 0
            and all(not isinstance(e, bool) and isinstance(e, (int, float)) and 0 < e <= 1 for e in v))


def _modes_ok(v: Any) -> bool:
    return isinstance(v, (list, tuple)) and len(v) > 0 and all(m in MODES for m in v) and len(set(v)) == len(v)


def _at_eps_ok(v: Any) -> bool:
    return v is None or (not isinstance(v, bool) and isinstance(v, (int, float)) and 0 < v <= 1)


def class_attribute_matrix(owner: str, model: ModelAdapter, context_value: Any = None, dataset: str = "",
                           dataset_params: dict | None = None) -> tuple[np.ndarray | None, str]:
    """``(phi, source)``: the ``(C, E)`` class-attribute matrix the SJE uses (module docstring;
    ``None`` = one-hot) and where it came from."""
    n_cls = model.nb_classes
    if context_value is not None:
        phi = np.asarray(context_value, np.float64)
        src = "context"
    elif dataset:
        from advinterp.api import get_dataset

        ds = get_dataset(dataset, **(dataset_params or {}))
        if not hasattr(ds, "class_attributes"):
            raise ParameterError(owner, "dataset", dataset, "a dataset with class_attributes (cub, awa2, lad, ...)")
        phi, src = np.asarray(ds.class_attributes, np.float64), f"dataset {dataset}"
    else:
        from advinterp.datasets.synthetic import CLASSES, SyntheticWorld

        if n_cls != len(CLASSES):
            return None, "one-hot"
        phi, src = np.asarray(SyntheticWorld().class_attributes, np.float64), "embedded world"
    if phi.ndim != 2 or len(phi) != n_cls or not np.isfinite(phi).all():
        raise ParameterError(owner, "class_attributes", f"shape {phi.shape}",
                             f"a finite (C, E) matrix with C = {n_cls} rows (one per class of the model)")
    return phi, src


def training_data(model: ModelAdapter, batch: AdversarialBatch, train: Any, n_train: int,
                  seed: int) -> tuple[torch.Tensor, torch.Tensor, str]:
    """``(x, y, trained_on)``: the training images of the SJE and of adversarial training
    (module docstring)."""
    if train is not None:
        if not isinstance(train, AdversarialBatch):
            raise ParameterError("Robustness.analyze", "train (context)", train,
                                 "an AdversarialBatch (its x0 / y_true train), e.g. a step on the training split")
        return train.x0.detach().cpu().float(), train.y_true.detach().cpu().long(), "context"
    from advinterp.datasets.synthetic import CLASSES, SyntheticWorld

    shape = tuple(model.input_shape) if model.input_shape is not None else tuple(batch.x0.shape[1:])
    if shape == WORLD_SHAPE and model.nb_classes == len(CLASSES):
        x, y = SyntheticWorld(size=64, seed=seed).generate(int(n_train), "train").tensors()
        return x, y, f"embedded world train split ({int(n_train)})"
    return batch.x0.detach().cpu().float(), batch.y_true.detach().cpu().long(), "the batch's clean images"


@dataclass(frozen=True)
class RobustnessResult(Result):
    """Fig. 4's accuracies.

    Attributes:
        eps: ``(E,)`` the budgets; modes: the attack modes.
        accuracy: ``(M, E, 8)`` accuracy per mode, eps and column of :data:`COLUMNS`.
        n: images evaluated; n_train: training images; trained_on / attributes_from: sources.
        at_eps: ``(E,)`` the PGD eps of each adversarially trained copy.
        params: the analyzer's settings.
    """

    eps: np.ndarray
    modes: tuple
    accuracy: np.ndarray
    at_eps: np.ndarray
    n: int
    n_train: int
    trained_on: str = ""
    attributes_from: str = ""
    params: dict = field(default_factory=dict)

    def rows(self) -> list[dict[str, Any]]:
        """One row per (mode, eps): the eight accuracies and SJE's advantage under attack."""
        out = []
        for m, mode in enumerate(self.modes):
            for e, eps in enumerate(self.eps):
                acc = {c: float(self.accuracy[m, e, k]) for k, c in enumerate(COLUMNS)}
                out.append({"mode": mode, "eps": float(eps), **acc,
                            "sje_minus_softmax_adv": acc["sje_adv"] - acc["softmax_adv"],
                            "at_eps": float(self.at_eps[e])})
        return out


def _accuracy(pred: Any, y: torch.Tensor) -> float:
    p = torch.as_tensor(np.asarray(pred)).long().flatten()
    return float((p == y).double().mean()) if len(y) else float("nan")


class Robustness(Analyzer):
    """Fig. 4 analogue: softmax and SJE accuracy vs eps, clean / adversarial, with and without
    eq.-2 adversarial training (module docstring of :mod:`advinterp_attributes.robustness`).

    Parameters: ``eps`` (grid, default ``[0.01, 0.025, 0.06, 0.12]``), ``modes``
    (``["untargeted", "targeted"]``), ``max_iter`` (IFGSM iterations, 10), ``step_fraction``
    (IFGSM step = fraction * eps, 0.25), ``adversarial_training`` (True), ``at_eps`` (None: the
    attack's eps, one copy per eps; a number: one copy for all), ``alpha`` (0.5), ``epochs``
    (2), ``lr`` (5e-4), ``at_max_iter`` (PGD iterations while training, 5), ``n_train`` (256),
    ``sje_epochs`` (50), ``dataset`` / ``dataset_params`` (class attributes of a registered
    dataset; "" = the embedded world), ``seed`` (0).

    Context: ``train`` (an ``AdversarialBatch`` whose ``x0`` / ``y_true`` train SJE and the
    adversarial training), ``class_attributes`` (``(C, E)``).
    """

    name = "attributes.robustness"
    context_keys = ("train", "class_attributes")
    params = {
        "eps": Param(list(DEFAULT_EPS), _eps_ok, "a non-empty list of l_inf budgets in (0, 1]",
                     doc="the l_inf eps grid", invalid=([], [0.0], "0.1")),
        "modes": Param(list(MODES), _modes_ok, "a non-empty list of 'untargeted' / 'targeted'",
                       doc="IFGSM untargeted and/or targeted (random target != y)", invalid=(["both"], [])),
        "max_iter": Param.integer(10, low=1, doc="IFGSM iterations"),
        "step_fraction": Param.number(0.25, low=0.0, high=1.0, doc="IFGSM step as a fraction of eps"),
        "adversarial_training": Param.boolean(True, doc="also train eq.-2 copies (the at_* columns; NaN if False)"),
        "at_eps": Param(None, _at_eps_ok, "None (the attack's eps) or a number in (0, 1]",
                        doc="PGD eps of adversarial training (None: one copy per eps of the grid)", invalid=(0.0, 2)),
        "alpha": Param.number(0.5, low=0.0, high=1.0, doc="eq. 2's weight of the clean loss"),
        "epochs": Param.integer(2, low=1, doc="adversarial-training epochs"),
        "lr": Param.number(5e-4, low=0.0, doc="adversarial-training Adam learning rate"),
        "at_max_iter": Param.integer(5, low=1, doc="PGD iterations during adversarial training"),
        "n_train": Param.integer(256, low=1, doc="embedded-world training scenes (without context train)"),
        "sje_epochs": Param.integer(50, low=1, doc="SJE epochs"),
        "dataset": Param("", lambda v: isinstance(v, str), "a registered dataset name or ''",
                         doc="registered dataset whose class_attributes SJE uses ('' = the embedded world)",
                         invalid=(3,)),
        "dataset_params": Param({}, lambda v: isinstance(v, dict), "a table of the dataset's parameters",
                                doc="parameters of that dataset", invalid=(3,)),
        "seed": Param.integer(0, low=0, doc="targets, PGD starts, training order"),
    }
    conformance_params = {"eps": [0.05], "modes": ["untargeted"], "max_iter": 2, "epochs": 1, "at_max_iter": 1,
                          "sje_epochs": 2, "adversarial_training": True}

    def _sje(self, phi: np.ndarray | None, model: ModelAdapter, x: torch.Tensor, y: torch.Tensor):
        from .sje import SJE

        return SJE(phi, n_epochs=int(self.sje_epochs), random_state=int(self.seed)).fit(features(model, x), y.numpy())

    def _measure(self, model: ModelAdapter, sje: Any, x: torch.Tensor, y: torch.Tensor, eps: float, mode: str,
                 target: torch.Tensor) -> tuple[float, float, float, float]:
        attack = get_attack("ifgsm", eps=float(eps), eps_step=float(eps) * float(self.step_fraction),
                            max_iter=int(self.max_iter), targeted=mode == "targeted")
        xa = attack.generate(model, x, y, target if mode == "targeted" else None).x_adv.detach().cpu().float()
        return (_accuracy(model.predict(x).cpu(), y), _accuracy(model.predict(xa).cpu(), y),
                _accuracy(sje.predict(features(model, x)), y), _accuracy(sje.predict(features(model, xa)), y))

    def _analyze(self, model: ModelAdapter, batch: AdversarialBatch, **context: Any) -> RobustnessResult:
        owner = f"{type(self).__name__}.analyze"
        phi, src = class_attribute_matrix(owner, model, context.get("class_attributes"), self.dataset,
                                          self.dataset_params)
        xt, yt, trained_on = training_data(model, batch, context.get("train"), int(self.n_train), int(self.seed))
        x, y = batch.x0.detach().cpu().float(), batch.y_true.detach().cpu().long()
        eps = np.asarray(self.eps, np.float64)
        modes = tuple(self.modes)
        at_eps = eps.copy() if self.at_eps is None else np.full(len(eps), float(self.at_eps))
        acc = np.full((len(modes), len(eps), len(COLUMNS)), np.nan)
        gen = torch.Generator().manual_seed(int(self.seed))
        n_cls = model.nb_classes
        target = (y + torch.randint(1, n_cls, y.shape, generator=gen)) % n_cls if n_cls > 1 else y
        sje = self._sje(phi, model, xt, yt) if len(x) else None
        at_models: dict[float, tuple[ModelAdapter, Any]] = {}
        for e, ep in enumerate(eps):
            if not len(x):
                break
            if self.adversarial_training and float(at_eps[e]) not in at_models:
                robust = alpha_adversarial_training(model, xt, yt, eps=float(at_eps[e]), alpha=float(self.alpha),
                                                    epochs=int(self.epochs), lr=float(self.lr),
                                                    max_iter=int(self.at_max_iter), seed=int(self.seed))
                at_models[float(at_eps[e])] = (robust, self._sje(phi, robust, xt, yt))
            for m, mode in enumerate(modes):
                acc[m, e, :4] = self._measure(model, sje, x, y, ep, mode, target)
                if self.adversarial_training:
                    robust, rsje = at_models[float(at_eps[e])]
                    acc[m, e, 4:] = self._measure(robust, rsje, x, y, ep, mode, target)
        return RobustnessResult(eps=eps, modes=modes, accuracy=acc, at_eps=at_eps, n=len(x), n_train=len(xt),
                                trained_on=trained_on, attributes_from=src, params=self.get_params())
