"""Grounding the selected attributes of clean and adversarial images (Gulshad et al. 2020,
Sec. 4.3, Figs. 6-7; capability D6): registered analyzer ``attributes.grounding``.

For the first ``n_images`` images of an adversarial batch that the attack flipped (the model
right on ``x0``, wrong on ``x_adv``):

1. SJE (fitted on the model's pooled features of the training images, as in
   :mod:`.robustness`) predicts ``Z`` (clean) and ``Z-hat`` (adversarial);
2. the ``top_k`` attributes of eq. 16 for the clean image (``Z - phi(y_adv)``, what it shows
   more than the class its adversarial version went to) and of eq. 17 for the adversarial one
   (``Z-hat - phi(y)``) (:func:`~advinterp_attributes.select_clean`,
   :func:`~advinterp_attributes.select_adversarial`; ``normalize=True`` by default, because
   SJE does not fix the scale of ``Z``);
3. each selection is grounded in its image with the attribute detector
   (:func:`~advinterp_attributes.grounding.ground`);
4. on the embedded world, grounding precision against the true boxes
   (:func:`~advinterp_attributes.grounding.grounding_precision`): the true boxes are those of
   the context ``boxes`` (one list per batch image), else of the world scene whose rendering
   equals the batch image (scene ``i`` of ``world_split`` for batch image ``i``, checked pixel
   by pixel; images without a match are left out of the precision).

Detector: ``detector = ""`` loads the shipped one (``weights/attribute_detector.pt``); when it
is not there an **untrained** detector of the world's vocabulary is used and the result says
so (``detector_source``); a path loads a checkpoint of ``AttributeDetector.save``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from advinterp.api import AdversarialBatch, Analyzer, ModelAdapter, Param, ParameterError, Result

from .features import features
from .robustness import class_attribute_matrix, training_data
from .selection import select_adversarial, select_clean

__all__ = ["AttributeGrounding", "GroundingResult", "load_detector", "to_grounding"]

SIDES = ("clean", "adversarial")


def load_detector(path: str = "") -> tuple[Any, str]:
    """``(detector, source)``: the shipped detector, an untrained one when it is missing, or a checkpoint."""
    from .detector import SHIPPED_WEIGHTS, AttributeDetector, load_attribute_detector, world_vocabulary

    if path:
        return load_attribute_detector(path), path
    if SHIPPED_WEIGHTS.is_file():
        return load_attribute_detector(), "shipped"
    with torch.random.fork_rng(devices=[]):  # the same untrained weights every time, the global RNG untouched
        torch.manual_seed(0)
        return AttributeDetector.build(*world_vocabulary()), "untrained (shipped weights missing)"


def _pack(g: Any) -> dict[str, Any]:
    d = g.detections
    return {"attributes": list(g.attributes), "boxes": [list(map(int, b)) for b in g.boxes],
            "reasons": list(g.reasons), "det_boxes": np.asarray(d.boxes, np.float32).reshape(-1, 4),
            "det_labels": list(d.labels), "det_scores": np.asarray(d.scores, np.float32),
            "det_attributes": np.asarray(d.attributes, np.float32).reshape(len(d.labels), len(d.attribute_names)),
            "attribute_names": list(d.attribute_names)}


def to_grounding(packed: dict[str, Any]) -> Any:
    """A :class:`~advinterp_attributes.grounding.Grounding` from a result's stored dict."""
    from .detector import Detections
    from .grounding import Grounding

    det = Detections(np.asarray(packed["det_boxes"]), tuple(packed["det_labels"]), np.asarray(packed["det_scores"]),
                     np.asarray(packed["det_attributes"]), tuple(packed["attribute_names"]))
    return Grounding(tuple(packed["attributes"]), tuple(tuple(b) for b in packed["boxes"]),
                     tuple(packed["reasons"]), det)


@dataclass(frozen=True)
class GroundingResult(Result):
    """``attributes.grounding`` on a batch.

    Attributes:
        images: ``(K,)`` batch indices of the analysed (flipped) images.
        y, y_adv: ``(K,)`` true and adversarial predicted classes.
        x0, x_adv: ``(K, C, H, W)`` the images.
        groundings: ``K`` dicts ``{"clean": ..., "adversarial": ...}``, each a stored grounding
            (:func:`to_grounding` rebuilds it).
        precision: ``{"clean": {...}, "adversarial": {...}, "all": {...}}`` of
            ``grounding_precision`` (empty when no true boxes were found); n_true: images with true boxes.
        detector_source, attributes_from, trained_on: provenance; params: the settings.
    """

    images: np.ndarray
    y: np.ndarray
    y_adv: np.ndarray
    x0: torch.Tensor
    x_adv: torch.Tensor
    groundings: list
    precision: dict
    n_true: int = 0
    n_flipped: int = 0
    detector_source: str = ""
    attributes_from: str = ""
    trained_on: str = ""
    params: dict = field(default_factory=dict)

    def rows(self) -> list[dict[str, Any]]:
        """One row per (image, side, selected attribute)."""
        out = []
        for i, g in enumerate(self.groundings):
            for side in SIDES:
                for r in to_grounding(g[side]).rows():
                    out.append({"image": int(self.images[i]), "y": int(self.y[i]), "y_adv": int(self.y_adv[i]),
                                "side": side, **r})
        return out

    def precision_rows(self) -> list[dict[str, Any]]:
        return [{"side": k, **v} for k, v in self.precision.items()]


def _true_boxes(batch_x: torch.Tensor, idx: np.ndarray, context_boxes: Any, split: str, seed: int) -> list:
    if context_boxes is not None:
        if len(context_boxes) != len(batch_x):
            raise ParameterError("AttributeGrounding.analyze", "boxes (context)", len(context_boxes),
                                 f"one list of boxes per batch image ({len(batch_x)})")
        return [context_boxes[int(i)] for i in idx]
    from advinterp.datasets.synthetic import SyntheticWorld

    if tuple(batch_x.shape[1:]) != (3, 64, 64):
        return [None] * len(idx)
    world = SyntheticWorld(size=64, seed=seed)
    out = []
    for i in idx:
        scene = world.render(int(i), split)
        img = torch.from_numpy(scene.image).permute(2, 0, 1).float() / 255.0
        out.append(scene.boxes if float((img - batch_x[int(i)].cpu().float()).abs().max()) < 0.5 / 255 else None)
    return out


class AttributeGrounding(Analyzer):
    """Figs. 6-7: the selected attributes of flipped images, clean and adversarial, grounded
    with the attribute detector (module docstring of :mod:`advinterp_attributes.grounding_analysis`).

    Parameters: ``n_images`` (4), ``top_k`` (3), ``normalize`` (True), ``detector`` ("" = the
    shipped one), ``score_threshold`` (0.5, boxes), ``attribute_threshold`` (0.5),
    ``n_train`` (256), ``sje_epochs`` (50), ``dataset`` / ``dataset_params`` (class attributes and
    ``attribute_names`` of a registered dataset), ``world_split`` ("test"), ``seed`` (0).

    Context: ``train`` (an ``AdversarialBatch`` training SJE), ``class_attributes`` ``(C, E)``,
    ``attribute_names`` (``E`` names), ``boxes`` (per batch image, the true boxes).
    """

    name = "attributes.grounding"
    context_keys = ("train", "class_attributes", "attribute_names", "boxes")
    params = {
        "n_images": Param.integer(4, low=1, doc="flipped images analysed (the first ones)"),
        "top_k": Param.integer(3, low=1, doc="selected attributes per image (eqs. 16-17)"),
        "normalize": Param.boolean(True, doc="unit-norm Z and phi rows before selecting"),
        "detector": Param("", lambda v: isinstance(v, str), "a checkpoint path or ''", doc="'' = the shipped detector",
                          invalid=(3,)),
        "score_threshold": Param.number(0.5, low=0.0, high=1.0, doc="detection score threshold"),
        "attribute_threshold": Param.number(0.5, low=0.0, high=1.0, doc="attribute probability a box needs"),
        "n_train": Param.integer(256, low=1, doc="embedded-world training scenes for SJE"),
        "sje_epochs": Param.integer(50, low=1, doc="SJE epochs"),
        "dataset": Param("", lambda v: isinstance(v, str), "a registered dataset name or ''",
                         doc="dataset whose class_attributes SJE uses ('' = the embedded world)", invalid=(3,)),
        "dataset_params": Param({}, lambda v: isinstance(v, dict), "a table", doc="that dataset's parameters",
                                invalid=(3,)),
        "world_split": Param.choice("test", ("train", "val", "test"), doc="world split the batch was drawn from"),
        "seed": Param.integer(0, low=0, doc="SJE and world seed"),
    }
    conformance_params = {"n_images": 2, "sje_epochs": 2, "top_k": 2}

    def _analyze(self, model: ModelAdapter, batch: AdversarialBatch, **context: Any) -> GroundingResult:
        from .grounding import ground, grounding_precision

        owner = f"{type(self).__name__}.analyze"
        phi, src = class_attribute_matrix(owner, model, context.get("class_attributes"), self.dataset,
                                          self.dataset_params)
        names = context.get("attribute_names")
        if names is None and self.dataset:
            from advinterp.api import get_dataset

            names = getattr(get_dataset(self.dataset, **self.dataset_params), "attribute_names", None)
        if names is None and src == "embedded world":
            from advinterp.datasets.synthetic import ATTRIBUTES

            names = ATTRIBUTES
        if phi is None:
            phi = np.eye(model.nb_classes)
            names = names or [f"class:{c}" for c in range(model.nb_classes)]
        names = [str(a) for a in (names if names is not None else [f"attribute:{j}" for j in range(phi.shape[1])])]
        if len(names) != phi.shape[1]:
            raise ParameterError(owner, "attribute_names", len(names), f"{phi.shape[1]} names (one per attribute)")
        x0, xa = batch.x0.detach().cpu().float(), batch.x_adv.detach().cpu().float()
        y = batch.y_true.detach().cpu().long()
        pred, pred_adv = model.predict(x0).cpu(), model.predict(xa).cpu()
        flipped = np.flatnonzero(((pred == y) & (pred_adv != y)).numpy())
        idx = flipped[:int(self.n_images)]
        empty = GroundingResult(images=idx, y=y.numpy()[idx], y_adv=pred_adv.numpy()[idx], x0=x0[idx], x_adv=xa[idx],
                                groundings=[], precision={}, n_flipped=len(flipped), attributes_from=src,
                                params=self.get_params())
        if not len(idx):
            return empty
        from .sje import SJE

        xt, yt, trained_on = training_data(model, batch, context.get("train"), int(self.n_train), int(self.seed))
        sje = SJE(phi, n_epochs=int(self.sje_epochs), random_state=int(self.seed)).fit(features(model, xt), yt.numpy())
        Z = sje.predict_attributes(features(model, x0[idx]))
        Za = sje.predict_attributes(features(model, xa[idx]))
        k = min(int(self.top_k), phi.shape[1])
        yi, ya = y.numpy()[idx], pred_adv.numpy()[idx]
        sel = {"clean": select_clean(Z, ya, phi, k, normalize=bool(self.normalize)),
               "adversarial": select_adversarial(Za, yi, phi, k, normalize=bool(self.normalize))}
        detector, dsrc = load_detector(self.detector)
        dets = {"clean": detector.detect(x0[idx], float(self.score_threshold)),
                "adversarial": detector.detect(xa[idx], float(self.score_threshold))}
        gr = {s: [ground([names[j] for j in sel[s][i]], dets[s][i], float(self.attribute_threshold))
                  for i in range(len(idx))] for s in SIDES}
        truth = _true_boxes(x0, idx, context.get("boxes"), self.world_split, int(self.seed))
        have = [i for i, t in enumerate(truth) if t is not None]
        precision: dict[str, Any] = {}
        if have:
            for s in SIDES:
                precision[s] = grounding_precision([gr[s][i] for i in have], [truth[i] for i in have])
            precision["all"] = grounding_precision([gr[s][i] for s in SIDES for i in have],
                                                   [truth[i] for s in SIDES for i in have])
        return GroundingResult(images=idx, y=yi, y_adv=ya, x0=x0[idx], x_adv=xa[idx],
                               groundings=[{s: _pack(gr[s][i]) for s in SIDES} for i in range(len(idx))],
                               precision=precision, n_true=len(have), n_flipped=len(flipped), detector_source=dsrc,
                               attributes_from=src, trained_on=trained_on, params=self.get_params())
