"""The Fig. 5 analysis: d1 / d2 distributions for the four cases (Gulshad et al. 2020, Sec. 4.2,
eqs. 8-15; capability D4): registered analyzer ``attributes.distances``.

On an adversarial batch made on the model (``x0``, ``x_adv``):

* the standard model: SJE fitted on its pooled features of the training images predicts ``Z``
  (clean) and ``Z_adv``; the predictions (``predictions = "softmax"``: the model's, ``"sje"``:
  SJE's) decide which images are "correct when clean, wrong when adversarial";
* the adversarially trained model: a copy trained with eq. 2 at ``at_eps``
  (:func:`~advinterp_attributes.adversarial_training.alpha_adversarial_training`), or the
  registered model ``robust_model``; its own SJE. Case (b) (eqs. 12-13) feeds it the batch's
  adversarial images (those of the standard model; the images it gets right); case (d)
  (eqs. 14-15) attacks it itself, IFGSM at ``eps`` (the paper's x-hat with AT);
* :func:`~advinterp_attributes.figure5` gives the four cases (a: eqs. 8-9, b: 12-13, c: 10-11,
  d: 14-15) on the top ``fraction`` most-changing attributes, optionally on unit-norm rows
  (``normalize``, default True: SJE does not fix the scale of ``Z``; docs/attributes.md).

Training images and class attributes: as ``attributes.robustness`` (context ``train``,
``class_attributes``; else the embedded world).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from advinterp.api import AdversarialBatch, Analyzer, ModelAdapter, Param, Result, get_attack, get_model

from .adversarial_training import alpha_adversarial_training
from .distances import figure5
from .features import features
from .robustness import class_attribute_matrix, training_data

__all__ = ["AttributeDistanceAnalysis", "DistancesResult", "CASES"]

#: Fig. 5's panels and their equations.
CASES = {"a": "8-9", "b": "12-13", "c": "10-11", "d": "14-15"}


@dataclass(frozen=True)
class DistancesResult(Result):
    """``attributes.distances``: per Fig. 5 case (``"a"``..``"d"``) ``{"d1", "d2", "images",
    "attributes", "equations"}`` (arrays; cases without images have empty arrays).

    Attributes:
        cases: the per-case dicts. n: images; accuracy: ``{"clean", "adversarial", "at_clean",
        "at_adversarial"}`` of the predictions used. robust: which robust model.
    """

    cases: dict
    accuracy: dict
    n: int
    robust: str = ""
    attributes_from: str = ""
    trained_on: str = ""
    params: dict = field(default_factory=dict)

    def rows(self) -> list[dict[str, Any]]:
        """One row per case: images, mean d1 / d2 and the share with d1 < d2 (and d2 > d1's complement)."""
        out = []
        for k in sorted(self.cases):
            c = self.cases[k]
            d1, d2 = np.asarray(c["d1"]), np.asarray(c["d2"])
            out.append({"case": k, "equations": c["equations"], "images": int(len(d1)),
                        "mean_d1": float(d1.mean()) if len(d1) else float("nan"),
                        "mean_d2": float(d2.mean()) if len(d2) else float("nan"),
                        "d1_lt_d2": float(np.mean(d1 < d2)) if len(d1) else float("nan"),
                        "attributes": ",".join(str(int(a)) for a in c["attributes"])})
        return out


class AttributeDistanceAnalysis(Analyzer):
    """Fig. 5: d1 / d2 of the four cases (module docstring of
    :mod:`advinterp_attributes.distances_analysis`).

    Parameters: ``fraction`` (0.2), ``normalize`` (True), ``predictions`` ("softmax" / "sje"),
    ``robust_model`` ("" = train an eq.-2 copy; else a registered model name), ``at_eps`` (0.06),
    ``alpha`` (0.5), ``epochs`` (2), ``lr`` (5e-4), ``at_max_iter`` (5), ``eps`` (0.06: IFGSM on
    the robust model), ``max_iter`` (10), ``n_train`` (256), ``sje_epochs`` (50),
    ``dataset`` / ``dataset_params``, ``seed`` (0).

    Context: ``train`` (an ``AdversarialBatch``), ``class_attributes`` ``(C, E)``.
    """

    name = "attributes.distances"
    context_keys = ("train", "class_attributes")
    params = {
        "fraction": Param.number(0.2, low=0.0, high=1.0, doc="share of most-changing attributes"),
        "normalize": Param.boolean(True, doc="unit-norm Z and phi rows first"),
        "predictions": Param.choice("softmax", ("softmax", "sje"), doc="which predictions select the images"),
        "robust_model": Param("", lambda v: isinstance(v, str), "a registered model name or ''",
                              doc="'' = an eq.-2 adversarially trained copy", invalid=(3,)),
        "at_eps": Param.number(0.06, low=0.0, high=1.0, doc="PGD eps of adversarial training"),
        "alpha": Param.number(0.5, low=0.0, high=1.0, doc="eq. 2's clean weight"),
        "epochs": Param.integer(2, low=1, doc="adversarial-training epochs"),
        "lr": Param.number(5e-4, low=0.0, doc="adversarial-training learning rate"),
        "at_max_iter": Param.integer(5, low=1, doc="PGD iterations while training"),
        "eps": Param.number(0.06, low=0.0, high=1.0, doc="IFGSM eps on the robust model"),
        "max_iter": Param.integer(10, low=1, doc="IFGSM iterations on the robust model"),
        "n_train": Param.integer(256, low=1, doc="embedded-world training scenes"),
        "sje_epochs": Param.integer(50, low=1, doc="SJE epochs"),
        "dataset": Param("", lambda v: isinstance(v, str), "a registered dataset name or ''",
                         doc="dataset whose class_attributes SJE uses", invalid=(3,)),
        "dataset_params": Param({}, lambda v: isinstance(v, dict), "a table", doc="that dataset's parameters",
                                invalid=(3,)),
        "seed": Param.integer(0, low=0, doc="training order, PGD starts, SJE"),
    }
    conformance_params = {"epochs": 1, "at_max_iter": 1, "max_iter": 2, "sje_epochs": 2}

    def _analyze(self, model: ModelAdapter, batch: AdversarialBatch, **context: Any) -> DistancesResult:
        from .sje import SJE

        owner = f"{type(self).__name__}.analyze"
        phi, src = class_attribute_matrix(owner, model, context.get("class_attributes"), self.dataset,
                                          self.dataset_params)
        if phi is None:
            phi = np.eye(model.nb_classes)
        xt, yt, trained_on = training_data(model, batch, context.get("train"), int(self.n_train), int(self.seed))
        x0, xa = batch.x0.detach().cpu().float(), batch.x_adv.detach().cpu().float()
        y = batch.y_true.detach().cpu().long().numpy()
        if self.robust_model:
            robust, rname = get_model(self.robust_model), self.robust_model
        else:
            robust = alpha_adversarial_training(model, xt, yt, eps=float(self.at_eps), alpha=float(self.alpha),
                                                epochs=int(self.epochs), lr=float(self.lr),
                                                max_iter=int(self.at_max_iter), seed=int(self.seed))
            rname = f"eq. 2 copy (eps {float(self.at_eps):g}, alpha {float(self.alpha):g})"
        Z, P = {}, {}
        xra = get_attack("ifgsm", eps=float(self.eps), eps_step=float(self.eps) / 4,
                         max_iter=int(self.max_iter)).generate(robust, x0, torch.as_tensor(y)).x_adv.detach().cpu()
        for key, net, images in (("std", model, (x0, xa)), ("at", robust, (x0, xra, xa))):
            sje = SJE(phi, n_epochs=int(self.sje_epochs), random_state=int(self.seed)).fit(features(net, xt),
                                                                                         yt.numpy())
            for kind, im in zip(("clean", "adv", "transfer"), images):
                f = features(net, im) if len(im) else np.zeros((0, len(sje.coef_)), np.float32)
                Z[key, kind] = sje.predict_attributes(f) if len(im) else np.zeros((0, phi.shape[1]))
                if self.predictions == "sje":
                    P[key, kind] = sje.predict(f) if len(im) else np.zeros(0, np.int64)
                else:
                    P[key, kind] = net.predict(im).cpu().numpy() if len(im) else np.zeros(0, np.int64)
        res = figure5(y, phi, Z["std", "clean"], Z["std", "adv"], P["std", "clean"], P["std", "adv"],
                      Z["at", "clean"], Z["at", "adv"], P["at", "clean"], P["at", "adv"],
                      fraction=float(self.fraction), normalize=bool(self.normalize))
        res["b"] = figure5(y, phi, Z["std", "clean"], Z["std", "adv"], P["std", "clean"], P["std", "adv"],
                           Z_adv_at=Z["at", "transfer"], pred_adv_at=P["at", "transfer"], fraction=float(self.fraction),
                           normalize=bool(self.normalize))["b"]
        cases = {k: {"d1": d.d1, "d2": d.d2, "images": d.images.astype(np.int64),
                     "attributes": np.asarray(d.attributes, np.int64), "equations": d.equations}
                 for k, d in res.items()}
        acc = {name: float(np.mean(P[key] == y)) if len(y) else float("nan")
               for name, key in (("clean", ("std", "clean")), ("adversarial", ("std", "adv")),
                                 ("at_clean", ("at", "clean")), ("at_adversarial", ("at", "adv")),
                                 ("at_on_standard_adversarial", ("at", "transfer")))}
        return DistancesResult(cases=cases, accuracy=acc, n=len(y), robust=rname, attributes_from=src,
                               trained_on=trained_on, params=self.get_params())
