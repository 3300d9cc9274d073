"""``dissection``: network dissection of named layers over a Broden dataset (A8; eq. 7).

For every unit ``k`` of a layer (a channel of its ``(N, U, h, w)`` output) and every concept
label ``c`` of the selected Broden categories::

    S_k(x)  = the activation map of k resized to the label resolution (sh, sw) as PIL's bilinear
              resize (NetDissect-Lite's imresize; antialiased when shrinking: resize.py)
    T_k     = the dataset-level top-`quantile` (default 0.005) threshold of k's activations
    M_k(x)  = S_k(x) > T_k                                    (strict, as NetDissect)
    IoU(k, c) = sum_x |M_k(x) & L_c(x)| / sum_x |M_k(x) | L_c(x)|

with NetDissect's union convention: on image ``x`` the active pixels of ``k`` enter the
union of every concept of a category ``g`` only when at least one of them carries a label
of ``g`` (pixel-level categories), or when ``x`` has an image-level label of ``g`` (e.g.
``scene``, which labels every pixel of the image). So, over the dataset::

    union(k, c) = activation[k, g(c)] + truth[c] - intersection[k, c]
    activation[k, g] = sum_x |M_k(x)| [M_k(x) touches a label of category g in x]
    truth[c] = sum_x |L_c(x)|,  intersection[k, c] = sum_x |M_k(x) & L_c(x)|

and ``IoU = intersection / (union + 1e-10)`` (NetDissect-Lite's ``tally``). The gate is
recomputed on every image (NetDissect-Lite reuses a stale per-image value on images with
no pixel-level label at all; this does not). A pixel with the same label in several PNGs
of a cell counts once (eq. 7's set semantics; NetDissect-Lite's ``bincount`` counts it once
per PNG). Each label belongs to its *primary* category,
:meth:`~advinterp.datasets.broden.BrodenDataset.primary_categories` (NetDissect's rule).
``IoU(k) = mean_c IoU(k, c)`` over all labels of the selected categories; ``k`` is a concept
detector when ``max_c IoU(k, c) > iou_threshold`` (0.04).

Two passes over the data, as NetDissect: (1) the thresholds, by
:class:`~advinterp_dissect.quantile.StreamingQuantile` (fixed memory; NetDissect takes the
quantile of the raw, not upsampled, activations and so does this), (2) the tallies; run by
:func:`~advinterp_dissect.probe.dissect` and the ``dissection`` probe
(:class:`~advinterp_dissect.probe.DissectionProbe`), which cuts them into shards exactly. The
tallies are accumulated on the model's device with batched matrix products (one-hot label
tensors of the labels present in the batch, ``bmm`` with the unit masks): no Python loop
over units or labels. Memory per step is about ``batch_size * sh * sw * (units_chunk +
labels in the batch)`` floats; units are processed in chunks of at most ``max_elements /
(batch_size * sh * sw)``.

Example::

    from advinterp_dissect import dissect
    d = dissect(model, "/data/broden1_224", layers=["layer3", "layer4"])
    d["layer4"].detector_counts()          # {"object": 12, "part": 3, ...}
    d.write_tallies("out/")                # out/tally_layer4.csv, NetDissect-Lite's columns
"""
from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from advinterp.datasets.broden import BrodenDataset
from advinterp.api import IncompatibleModelError, ModelAdapter, ParameterError, Result

__all__ = ["Vocabulary", "LayerDissection", "Dissection", "open_broden", "TALLY_FIELDS", "images_to_tensor",
           "threshold_as"]

#: The fixed leading columns of NetDissect-Lite's ``tally.csv``; then, per category ``cat``
#: (in dataset order): ``cat-label, cat-truth, cat-activation, cat-intersect, cat-iou``.
TALLY_FIELDS: tuple[str, ...] = ("unit", "category", "label", "score")
_PER_CATEGORY: tuple[str, ...] = ("label", "truth", "activation", "intersect", "iou")


# ---------------------------------------------------------------------------- results
@dataclass(frozen=True)
class Vocabulary:
    """The concepts a dissection scores: ``C`` labels of ``G`` categories.

    Attributes:
        labels: ``(C,)`` int64 Broden label numbers, increasing.
        names: ``C`` label names.
        category: ``(C,)`` int64 index of each label's primary category in ``categories``.
        categories: ``G`` category names, in the dataset's order.
    """

    labels: np.ndarray
    names: tuple[str, ...]
    category: np.ndarray
    categories: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.labels)

    def index(self, name: str, category: str | None = None) -> int:
        """Column of the label called ``name`` (in ``category`` if given)."""
        for i, n in enumerate(self.names):
            if n == name and (category is None or self.categories[int(self.category[i])] == category):
                return i
        raise ParameterError("Vocabulary.index", "name", name, "a label name of the dissection's vocabulary")


@dataclass(frozen=True)
class LayerDissection:
    """The tallies of one layer (NetDissect-Lite's ``tally_*`` arrays) and what follows.

    Attributes:
        layer: layer name.
        thresholds: ``(U,)`` float64 ``T_k``.
        threshold_tolerance: ``(U,)`` float64 bound on ``|T_k - exact quantile|`` (the
            streaming histogram's bin width; 0 when the thresholds were given).
        intersection: ``(U, C)`` float64 ``sum_x |M_k & L_c|``.
        activation: ``(U, G)`` float64 ``sum_x |M_k|`` over images where ``M_k`` touches
            category ``g`` (the union's unit term).
        truth: ``(C,)`` float64 ``sum_x |L_c|``.
        unit_pixels: ``(U,)`` float64 ``sum_x |M_k|`` over all images.
        vocabulary: the concepts (:class:`Vocabulary`).
        n_images: images tallied.
        label_size: ``(sh, sw)`` of the masks.
        activation_size: ``(h, w)`` of the layer's maps.
    """

    layer: str
    thresholds: np.ndarray
    threshold_tolerance: np.ndarray
    intersection: np.ndarray
    activation: np.ndarray
    truth: np.ndarray
    unit_pixels: np.ndarray
    vocabulary: Vocabulary
    n_images: int
    label_size: tuple[int, int]
    activation_size: tuple[int, int]

    @property
    def units(self) -> int:
        return len(self.thresholds)

    def iou_by_label(self) -> np.ndarray:
        """``(U, max label number + 1)`` IoUs indexed by Broden label number, as
        NetDissect-Lite's ``iou`` array (0 for numbers outside the vocabulary, e.g. 0);
        :meth:`iou` is indexed by vocabulary column (``vocabulary.labels[j]`` is the number
        of column ``j``)."""
        labels = self.vocabulary.labels
        out = np.zeros((self.units, int(labels.max()) + 1 if len(labels) else 1))
        out[:, labels] = self.iou()
        return out

    def union(self) -> np.ndarray:
        """``(U, C)`` ``activation[k, g(c)] + truth[c] - intersection[k, c]``."""
        return self.activation[:, self.vocabulary.category] + self.truth[None, :] - self.intersection

    def iou(self) -> np.ndarray:
        """``(U, C)`` ``IoU(k, c) = intersection / (union + 1e-10)`` (eq. 7)."""
        return self.intersection / (self.union() + 1e-10)

    def unit_iou(self) -> np.ndarray:
        """``(U,)`` ``IoU(k) = mean_c IoU(k, c)`` over the ``C`` labels of the vocabulary."""
        return self.iou().mean(1) if len(self.vocabulary) else np.zeros(self.units)

    def best_per_category(self) -> tuple[np.ndarray, np.ndarray]:
        """Each unit's top concept within every category (NetDissect's ``label_pciou`` and
        ``score_pciou``): ``(G, U)`` label columns (the category's first label when all its
        IoUs are 0; -1 for a category without labels) and ``(G, U)`` IoUs."""
        iou = self.iou()
        G = len(self.vocabulary.categories)
        best = np.zeros((G, self.units), np.int64)
        score = np.zeros((G, self.units))
        for g in range(G):  # categories, not units or labels
            cols = np.flatnonzero(self.vocabulary.category == g)
            if len(cols):
                j = iou[:, cols].argmax(1)
                best[g], score[g] = cols[j], iou[np.arange(self.units), cols[j]]
            else:
                best[g] = -1
        return best, score

    def best(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Each unit's top concept, NetDissect's way: ``(label column (U,), category index
        (U,), IoU (U,))``; the category is the one with the highest per-category best IoU
        (ties: the later category)."""
        best, score = self.best_per_category()
        cat = score.argsort(axis=0, kind="stable")[::-1][0]
        u = np.arange(self.units)
        return best[cat, u], cat, score[cat, u]

    def detectors(self, iou_threshold: float = 0.04) -> np.ndarray:
        """``(U,)`` bool: ``max_c IoU(k, c) > iou_threshold``."""
        return self.best()[2] > iou_threshold

    def detector_counts(self, iou_threshold: float = 0.04, units: Sequence[int] | None = None) -> dict[str, int]:
        """``{category: number of detectors whose top concept is in it}`` (every category,
        zeros included), among ``units`` (default: all units)."""
        _, cat, score = self.best()
        sel = np.arange(self.units) if units is None else np.asarray(units, dtype=np.int64)
        det = sel[score[sel] > iou_threshold]
        counts = np.bincount(cat[det], minlength=len(self.vocabulary.categories))
        return {c: int(n) for c, n in zip(self.vocabulary.categories, counts)}

    def top_units(self, k: int = 10, iou_threshold: float = 0.04) -> list[dict[str, Any]]:
        """The ``k`` units of highest top-concept IoU: ``unit, label, category, iou,
        detector, unit_iou, threshold`` (units numbered from 0)."""
        col, cat, score = self.best()
        order = np.argsort(-score, kind="stable")[:k]
        uiou = self.unit_iou()
        return [{"layer": self.layer, "unit": int(u), "label": self.vocabulary.names[col[u]],
                 "category": self.vocabulary.categories[cat[u]], "iou": float(score[u]),
                 "detector": bool(score[u] > iou_threshold), "unit_iou": float(uiou[u]),
                 "threshold": float(self.thresholds[u])} for u in order]

    def tally_rows(self) -> list[dict[str, Any]]:
        """NetDissect-Lite's ``tally.csv`` rows, value for value: units (numbered from 1) by
        decreasing score, with ``unit, category, label, score`` then per category
        ``cat-label, cat-truth, cat-activation, cat-intersect, cat-iou``.

        As NetDissect-Lite, a category in which the unit's IoU is 0 for every label names
        its Broden label 0: an empty label, truth 0, intersect 0, IoU 0, and as activation
        the unit's category-gated activation count of the *last* category (label 0's primary
        category under NetDissect's rule); ties in the unit order and the best category are
        broken by numpy's default ``argsort``, as there. :meth:`best_per_category` keeps the
        readable choice (the category's first label) for the library's own views.
        """
        best, score = self.best_per_category()
        cats = self.vocabulary.categories
        names = self.vocabulary.names
        G = len(cats)
        bestcat = score.argsort(axis=0)[::-1][0]            # NetDissect's bestcat_pciou[0]
        ordering = score.max(axis=0).argsort()[::-1]        # NetDissect's ordering
        act = self.activation[:, self.vocabulary.category]  # NetDissect's tally_units_cat . labelcat.T
        rows = []
        for unit in ordering:
            def cell(ci: int) -> tuple[str, float, float, float, float]:
                lab = best[ci, unit]
                if lab < 0 or score[ci, unit] == 0:  # NetDissect-Lite's argmax lands on label 0
                    return "", 0.0, float(self.activation[unit, G - 1]) if G else 0.0, 0.0, 0.0
                return (names[lab], float(self.truth[lab]), float(act[unit, lab]),
                        float(self.intersection[unit, lab]), float(score[ci, unit]))

            g = bestcat[unit]
            row: dict[str, Any] = {"unit": int(unit) + 1, "category": cats[g], "label": cell(g)[0],
                                   "score": float(score[g, unit])}
            for ci, cat in enumerate(cats):
                label, truth, activation, intersect, iou = cell(ci)
                row.update({f"{cat}-label": label, f"{cat}-truth": truth, f"{cat}-activation": activation,
                            f"{cat}-intersect": intersect, f"{cat}-iou": iou})
            rows.append(row)
        return rows

    def tally_fields(self) -> list[str]:
        """The ``tally.csv`` header (NetDissect-Lite's ``csv_fields``)."""
        return list(TALLY_FIELDS) + [f"{cat}-{k}" for cat in self.vocabulary.categories for k in _PER_CATEGORY]

    def write_tally(self, path: str | Path) -> Path:
        """Write :meth:`tally_rows` as NetDissect-Lite does (``csv.DictWriter``, excel dialect)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w", newline="") as f:
            writer = csv.DictWriter(f, self.tally_fields())
            writer.writeheader()
            for row in self.tally_rows():
                writer.writerow(row)
        return path


@dataclass(frozen=True)
class Dissection(Result):
    """Network dissection of several layers of one model over one Broden dataset.

    Attributes:
        layers: ``{layer name: LayerDissection}`` in the order dissected.
        model: the model's name.
        dataset: the Broden root.
        quantile: the top quantile defining ``T_k``.
        iou_threshold: the detector threshold used by :meth:`rows`.
        n_images: images in the dataset.
    """

    layers: dict[str, LayerDissection]
    model: str = ""
    dataset: str = ""
    quantile: float = 0.005
    iou_threshold: float = 0.04
    n_images: int = 0

    kind = "dissection"

    def __getitem__(self, layer: str) -> LayerDissection:
        if layer not in self.layers:
            raise ParameterError("Dissection", "layer", layer, f"one of the dissected layers {list(self.layers)}")
        return self.layers[layer]

    def thresholds(self) -> dict[str, np.ndarray]:
        """``{layer: (U,) T_k}`` (reusable as ``dissect(..., thresholds=...)``)."""
        return {k: v.thresholds for k, v in self.layers.items()}

    def rows(self) -> list[dict[str, Any]]:
        """One row per layer: units, detectors (``max IoU > iou_threshold``) per category,
        mean unit IoU and the best unit."""
        out = []
        for name, ld in self.layers.items():
            counts = ld.detector_counts(self.iou_threshold)
            top = ld.top_units(1, self.iou_threshold)
            out.append({"layer": name, "units": ld.units, "detectors": int(sum(counts.values())),
                        **{f"det_{c}": n for c, n in counts.items()},
                        "mean_unit_iou": float(ld.unit_iou().mean()) if ld.units else 0.0,
                        "best": f"unit {top[0]['unit']}: {top[0]['label']} ({top[0]['category']}) "
                                f"{top[0]['iou']:.3f}" if top else ""})
        return out

    def write_tallies(self, folder: str | Path) -> dict[str, Path]:
        """Write ``folder/tally_<layer>.csv`` for every layer (NetDissect-Lite's format;
        NetDissect-Lite names it ``tally.csv`` in a per-run folder). One layer's file:
        ``d[layer].write_tally(path)``."""
        folder = Path(folder)
        return {k: v.write_tally(folder / f"tally_{_safe(k)}.csv") for k, v in self.layers.items()}

    def write_tally(self, folder: str | Path) -> dict[str, Path]:
        """Deprecated name of :meth:`write_tallies` (``LayerDissection.write_tally`` takes a
        file path; this one a folder)."""
        import warnings

        warnings.warn("Dissection.write_tally(folder) is now write_tallies(folder); LayerDissection.write_tally(path) "
                      "writes one layer's file", DeprecationWarning, stacklevel=2)
        return self.write_tallies(folder)


def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)


# ---------------------------------------------------------------------------- helpers
def open_broden(broden: Any, categories: Sequence[str] | None = None, resolution: Any = None,
                owner: str = "dissect") -> BrodenDataset:
    """A :class:`BrodenDataset` from a dataset (returned as is) or a folder path."""
    if isinstance(broden, BrodenDataset):
        if resolution is not None:
            raise ParameterError(owner, "resolution", resolution, "None when a BrodenDataset is given",
                                 "Open it with BrodenDataset(root, resolution=...) instead.")
        return broden
    if isinstance(broden, (str, Path)):
        return BrodenDataset(broden, resolution=resolution)
    raise ParameterError(owner, "broden", broden, "a BrodenDataset or the path of a Broden folder",
                         "Export the embedded world with advinterp.datasets.broden.export_broden(path).")


def images_to_tensor(images: np.ndarray, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """``(B, H, W, 3)`` uint8 -> ``(B, 3, H, W)`` pixels in [0, 1]."""
    return torch.from_numpy(np.array(images, copy=True)).to(device).permute(0, 3, 1, 2).to(dtype).div_(255.0)


def _vocabulary(ds: BrodenDataset, categories: Sequence[str]) -> tuple[Vocabulary, np.ndarray]:
    """The vocabulary and ``col_of``: label number -> column (-1 unlabelled or outside
    the categories, -2 unknown number)."""
    primary = ds.primary_categories(categories)
    labels = np.array(sorted(primary), dtype=np.int64)
    cats = tuple(categories)
    vocab = Vocabulary(labels, tuple(ds.label(int(n)).name for n in labels),
                       np.array([cats.index(primary[int(n)]) for n in labels], dtype=np.int64), cats)
    top = max([lab.number for lab in ds.labels], default=0)
    col_of = np.full(top + 1, -2, np.int64)
    col_of[[lab.number for lab in ds.labels]] = -1
    col_of[0] = -1
    col_of[labels] = np.arange(len(labels))
    return vocab, col_of


def threshold_as(t: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``t`` (float64) in ``dtype``, rounded *down*: for values ``v`` of ``dtype``,
    ``v > threshold_as(t, dtype)`` equals ``v > t`` evaluated exactly (no representable
    value lies between the two), so masks can be computed without float64 copies."""
    t = t.double()
    if dtype == torch.float64:
        return t
    r = t.to(dtype)
    above = r.double() > t
    return torch.where(above, torch.nextafter(r, torch.full_like(r, -math.inf)), r)


def _check_layers(model: ModelAdapter, layers: Any, owner: str) -> list[str]:
    if layers is None:
        return list(model.feature_layers())
    if isinstance(layers, str):
        layers = [layers]
    if not isinstance(layers, (list, tuple)) or not layers or not all(isinstance(n, str) for n in layers):
        raise ParameterError(owner, "layers", layers, "None or a non-empty list of layer names")
    for n in layers:
        model.layer(n)
    return list(dict.fromkeys(layers))


def _spatial(acts: dict[str, torch.Tensor], layer: str, model: ModelAdapter) -> torch.Tensor:
    a = acts[layer]
    if a.ndim != 4:
        raise IncompatibleModelError(f"{model.name}: layer {layer!r} outputs shape {tuple(a.shape)}; dissection "
                                     "needs spatial (N, units, h, w) activation maps (a convolutional layer).")
    return a
