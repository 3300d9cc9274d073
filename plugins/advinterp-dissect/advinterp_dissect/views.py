"""Detector views (A10, Fig. 8 of the PSE paper): the input segmented by ``M_k(x)`` and ``M_k(x')``.

For chosen units (a layer and a unit index each) and clean/adversarial image pairs, the
views hold both masks at input resolution together with the unit's top concept
("label-category"), so a figure can show how the representation of a concept detector
changes under attack (:func:`advinterp_dissect.viz.plot_detector_views`).

Registered analyzer ``detector_views`` (:class:`DetectorViewsAnalyzer`): on a
clean/adversarial batch, with the context ``dissection=`` (required) and ``sensitivity=``
(optional, the ``unit_sensitivity`` result), the views of ``per_layer`` detectors per layer
on the ``n_images`` pairs where they fire most.

Example::

    views = detector_views(model, dissection, x0, x_adv, per_layer=2)      # top detectors of every layer
    views = detector_views(model, dissection, x0, x_adv, units={"layer4": [3, 17]})
    views = advinterp.get_analyzer("detector_views").analyze(model, batch, dissection=d)
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from advinterp.api import Analyzer, Param, ParameterError, Result, check_images

from .analysis import SensitivityAnalysis
from .dissection import Dissection
from .sensitivity import unit_masks
from .significance import top_sensitive

__all__ = ["DetectorViews", "DetectorViewsAnalyzer", "detector_views", "choose_units", "choose_images"]


@dataclass(frozen=True)
class DetectorViews(Result):
    """Masks of ``K`` units on ``N`` clean/adversarial pairs (a :class:`~advinterp.results.Result`).

    Attributes:
        layers: ``K`` layer names.
        units: ``(K,)`` int64 unit indices.
        labels, categories: ``K`` names of each unit's top concept.
        ious: ``(K,)`` its IoU.
        x0, x_adv: ``(N, H, W, 3)`` float32 images in [0, 1].
        masks_x0, masks_adv: ``(K, N, H, W)`` bool ``M_k(x)`` and ``M_k(x')``.
    """

    layers: tuple[str, ...]
    units: np.ndarray
    labels: tuple[str, ...]
    categories: tuple[str, ...]
    ious: np.ndarray
    x0: np.ndarray
    x_adv: np.ndarray
    masks_x0: np.ndarray
    masks_adv: np.ndarray

    kind = "detector_views"

    def __len__(self) -> int:
        return len(self.units)

    def segmented(self, k: int, i: int, adversarial: bool = False, dim: float = 0.2) -> np.ndarray:
        """``(H, W, 3)`` image ``i`` with the pixels outside unit ``k``'s mask darkened to
        ``dim`` of their value (the Fig. 8 rendering)."""
        img = (self.x_adv if adversarial else self.x0)[i]
        m = (self.masks_adv if adversarial else self.masks_x0)[k, i]
        return np.where(m[..., None], img, img * dim)

    def rows(self) -> list[dict[str, Any]]:
        """Per unit: its concept, the mean mask area on clean and adversarial images and the
        mean IoU between ``M_k(x)`` and ``M_k(x')``."""
        out = []
        for k in range(len(self)):
            a, b = self.masks_x0[k], self.masks_adv[k]
            inter = (a & b).reshape(len(a), -1).sum(1)
            union = (a | b).reshape(len(a), -1).sum(1)
            agree = np.where(union > 0, inter / np.maximum(union, 1), 1.0)
            out.append({"layer": self.layers[k], "unit": int(self.units[k]), "concept": self.labels[k],
                        "category": self.categories[k], "iou": float(self.ious[k]),
                        "area_x0": float(a.mean()), "area_adv": float(b.mean()),
                        "mask_agreement": float(agree.mean())})
        return out


def choose_units(dissection: Dissection, per_layer: int = 2, layers: Sequence[str] | None = None,
                 sensitivity: Mapping[str, Any] | None = None) -> dict[str, list[int]]:
    """``per_layer`` units of each layer: concept detectors (``max IoU > iou_threshold``)
    ranked by sensitivity when ``sensitivity`` (``{layer: (U,) v}``) is given, else by IoU;
    layers without enough detectors are filled with their highest-IoU units."""
    names = list(dissection.layers) if layers is None else list(layers)
    out = {}
    for name in names:
        ld = dissection[name]
        score = ld.best()[2]
        det = score > dissection.iou_threshold
        rank = (top_sensitive(sensitivity[name], ld.units) if sensitivity is not None and name in sensitivity
                else np.argsort(-score, kind="stable"))
        chosen = [int(u) for u in rank if det[u]][:per_layer]
        chosen += [int(u) for u in np.argsort(-score, kind="stable") if int(u) not in chosen][:per_layer - len(chosen)]
        out[name] = chosen
    return out


def choose_images(model: Any, dissection: Dissection, x: Any, units: Mapping[str, Sequence[int]], n: int = 2,
                  batch_size: int = 64) -> np.ndarray:
    """Indices of the ``n`` images of ``x`` on which the most of ``units`` fire (non-empty
    ``M_k(x)``; ties: the larger mean mask fraction), so that a Fig. 8 view shows something."""
    names = [k for k in units if len(units[k])]
    if not names:
        raise ParameterError("choose_images", "units", units, "a non-empty {layer: [unit, ...]} dict")
    masks = unit_masks(model, dissection, x, names, size=dissection[names[0]].activation_size,
                       batch_size=batch_size)
    fires = sum(masks[k][:, list(units[k])].flatten(2).any(2).sum(1).double() for k in names)
    area = sum(masks[k][:, list(units[k])].flatten(2).double().mean((1, 2)) for k in names)
    order = np.lexsort((-area.cpu().numpy(), -fires.cpu().numpy()))
    return order[:n]


def detector_views(model: Any, dissection: Dissection, x0: Any, x_adv: Any,
                   units: Mapping[str, Sequence[int]] | None = None, per_layer: int = 2,
                   sensitivity: Mapping[str, Any] | None = None, batch_size: int = 64) -> DetectorViews:
    """Masks ``M_k(x)`` and ``M_k(x')`` of chosen units at input resolution (Fig. 8).

    Args:
        model: :class:`~advinterp.ModelAdapter` (or ``nn.Module``); never changed.
        dissection: the model's :class:`~advinterp_dissect.dissection.Dissection`.
        x0, x_adv: ``(N, C, H, W)`` clean and adversarial pixels in [0, 1] (keep N small:
            the masks are ``K x N x H x W``).
        units: ``{layer: [unit, ...]}`` (default: :func:`choose_units` with ``per_layer``
            and ``sensitivity``).
        per_layer: units per layer when ``units`` is None (2).
        sensitivity: ``{layer: (U,) v(k)}`` to rank detectors by sensitivity.
        batch_size: images per forward (64).

    Returns:
        :class:`DetectorViews`.
    """
    owner = "detector_views"
    if not isinstance(dissection, Dissection):
        raise ParameterError(owner, "dissection", dissection, "a Dissection (from dissect())")
    x0 = check_images(owner, x0, "x0")
    x_adv = check_images(owner, x_adv, "x_adv")
    if x0.shape != x_adv.shape:
        raise ParameterError(owner, "x_adv", x_adv, f"the shape of x0 {tuple(x0.shape)}")
    if units is None:
        units = choose_units(dissection, per_layer, sensitivity=sensitivity)
    if not isinstance(units, Mapping) or not units:
        raise ParameterError(owner, "units", units, "a non-empty {layer: [unit, ...]} dict")
    for name, us in units.items():
        ld = dissection[name]
        if not all(isinstance(u, (int, np.integer)) and 0 <= int(u) < ld.units for u in us):
            raise ParameterError(owner, "units", units, f"unit indices in [0, {ld.units}) for layer {name!r}")
    names = [n for n in units if len(units[n])]
    m0 = unit_masks(model, dissection, x0, names, batch_size=batch_size)
    ma = unit_masks(model, dissection, x_adv, names, batch_size=batch_size)
    layers, idx, labels, cats, ious, k0, ka = [], [], [], [], [], [], []
    for name in names:
        col, cat, score = dissection[name].best()
        voc = dissection[name].vocabulary
        for u in units[name]:
            u = int(u)
            layers.append(name)
            idx.append(u)
            labels.append(voc.names[col[u]])
            cats.append(voc.categories[cat[u]])
            ious.append(float(score[u]))
            k0.append(m0[name][:, u].cpu())
            ka.append(ma[name][:, u].cpu())

    def hwc(x: torch.Tensor) -> np.ndarray:
        return x.detach().cpu().float().permute(0, 2, 3, 1).numpy()

    shape = (0, len(x0)) + tuple(x0.shape[-2:])
    return DetectorViews(layers=tuple(layers), units=np.array(idx, dtype=np.int64), labels=tuple(labels),
                         categories=tuple(cats), ious=np.array(ious), x0=hwc(x0), x_adv=hwc(x_adv),
                         masks_x0=torch.stack(k0).numpy() if k0 else np.zeros(shape, bool),
                         masks_adv=torch.stack(ka).numpy() if ka else np.zeros(shape, bool))


@functools.lru_cache(maxsize=1)
def _toy_dissection() -> Dissection:
    """A dissection of :func:`advinterp.testing.toy_model` (the conformance checks' context)."""
    from advinterp.testing import toy_model

    from .probe import DissectionProbe

    return DissectionProbe(synthetic_n=4, synthetic_size=24, bins=64, batch_size=4).run(toy_model(), progress=False)


class DetectorViewsAnalyzer(Analyzer):
    """Detector views (A10, Fig. 8): inputs segmented by M_k(x) and M_k(x') for concept detectors.

    Parameters: ``per_layer`` (2) detectors per dissected layer (:func:`choose_units`:
    ranked by sensitivity when given, else by IoU), ``n_images`` (2) pairs of the batch, those
    on which the chosen units fire most (:func:`choose_images`).

    Context: ``dissection=`` (required) the model's
    :class:`~advinterp_dissect.dissection.Dissection` (the ``dissection`` probe's result);
    ``sensitivity=`` (optional) the ``unit_sensitivity`` result
    (:class:`~advinterp_dissect.analysis.SensitivityAnalysis`) or ``{layer: (U,) v(k)}``.
    """

    name = "detector_views"
    context_keys = ("dissection", "sensitivity")
    params = {
        "per_layer": Param.integer(2, low=1, doc="detectors shown per dissected layer"),
        "n_images": Param.integer(2, low=1, doc="clean/adversarial pairs shown"),
    }

    @property
    def conformance_context(self) -> dict[str, Any]:
        return {"dissection": _toy_dissection()}

    def _analyze(self, model, batch, **context):
        owner = f"{type(self).__name__}.analyze"
        d, sens = context.get("dissection"), context.get("sensitivity")
        if not isinstance(d, Dissection):
            raise ParameterError(owner, "dissection", d, "the model's Dissection (the dissection probe's result)",
                                 "Pass context dissection=..., e.g. dissection = \"<dissection step>\" in a study.")
        if isinstance(sens, SensitivityAnalysis):
            sens = {k: v.sensitivity for k, v in sens.layers.items()}
        elif sens is not None and not isinstance(sens, Mapping):
            raise ParameterError(owner, "sensitivity", sens, "None, a SensitivityAnalysis or {layer: (U,) v(k)}")
        if len(batch) == 0:
            raise ParameterError(owner, "batch", batch, "at least one clean/adversarial pair")
        units = choose_units(d, self.per_layer, sensitivity=sens)
        pick = torch.as_tensor(choose_images(model, d, batch.x0, units, n=self.n_images))
        return detector_views(model, d, batch.x0[pick], batch.x_adv[pick], units=units)
