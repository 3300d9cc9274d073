"""``accuracy``: top-1 accuracy of a model over a dataset, and under an attack's batch.

Clean accuracy is counted shard by shard (``correct``/``total`` merge by summation, so any
sharding gives the same number); with the context ``batch=`` (an attack's
:class:`~advinterp.AdversarialBatch`) the result also holds the accuracy on its adversarial
images, ``mean(y_adv == y_true)``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from ..components import Probe, load_items
from ..data import AdversarialBatch
from ..exceptions import ParameterError
from ..params import Param
from ..results import Result

__all__ = ["AccuracyProbe", "Accuracy", "AccuracyCount"]


@dataclass(frozen=True)
class AccuracyCount(Result):
    """Correct predictions among ``total`` items (one shard's partial result)."""

    correct: int
    total: int


@dataclass(frozen=True)
class Accuracy(Result):
    """Clean accuracy over a dataset, optionally under an attack.

    Attributes:
        model: the model's name; n, correct: items and correct predictions.
        clean_accuracy: ``correct / n`` (``nan`` for no items).
        attack: the attack of the context batch (``""`` without one).
        adv_n: images in that batch; adv_accuracy: ``mean(y_adv == y_true)`` on them.
        attack_params: the attack's parameters.
    """

    model: str
    n: int
    correct: int
    clean_accuracy: float
    attack: str = ""
    adv_n: int = 0
    adv_accuracy: float = float("nan")
    attack_params: dict = field(default_factory=dict)

    def rows(self) -> list[dict[str, Any]]:
        row: dict[str, Any] = {"model": self.model, "n": self.n, "clean_accuracy": self.clean_accuracy}
        if self.attack:
            row.update(attack=self.attack, adv_n=self.adv_n, adv_accuracy=self.adv_accuracy)
        return [row]


class AccuracyProbe(Probe):
    """Top-1 accuracy over a dataset, and on an attack's adversarial batch (context batch=)."""

    name = "accuracy"
    context_keys = ("batch",)
    shardable = True
    params = {"batch_size": Param.integer(256, low=1, doc="images per forward pass")}
    conformance_params = {"batch_size": 3}

    def _start(self, model, data, **context):
        return AccuracyCount(0, 0)

    def _partial(self, model, data, indices, state, step, **context):
        correct = 0
        for a in range(0, len(indices), self.batch_size):
            x, y = load_items(data, indices[a:a + self.batch_size], f"{type(self).__name__}.run")
            if y is None:
                raise ParameterError(f"{type(self).__name__}.run", "data", data, "a dataset with labels",
                                     "Accuracy needs (x, y) items; this dataset has images only.")
            correct += int((model.predict(x.to(model.device, model.dtype), self.batch_size).cpu() == y.cpu()).sum())
        return AccuracyCount(correct, len(indices))

    def _merge(self, partials, state, step, **context):
        return AccuracyCount(state.correct + sum(p.correct for p in partials),
                             state.total + sum(p.total for p in partials))

    def _finish(self, model, state, **context):
        batch = context.get("batch")
        acc = state.correct / state.total if state.total else math.nan
        if batch is None:
            return Accuracy(model.name, state.total, state.correct, acc)
        if not isinstance(batch, AdversarialBatch):
            raise ParameterError(f"{type(self).__name__}.run", "batch", batch, "an AdversarialBatch (an attack's)")
        y_adv = batch.y_adv if batch.y_adv is not None else model.predict(batch.x_adv)
        adv = float((y_adv.cpu() == batch.y_true.cpu()).float().mean()) if len(batch) else math.nan
        return Accuracy(model.name, state.total, state.correct, acc, batch.attack, len(batch), adv,
                        dict(batch.params))
