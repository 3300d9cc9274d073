"""``dissection``: network dissection of named layers over a Broden dataset (A8; eq. 7).

For every unit ``k`` of a layer (a channel of its ``(N, U, h, w)`` output) and every concept
label ``c`` of the selected Broden categories::

    S_k(x)  = the activation map of k, upsampled bilinearly to the label resolution (sh, sw)
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
quantile of the raw, not upsampled, activations and so does this), (2) the tallies. The
tallies are accumulated on the model's device with batched matrix products (one-hot label
tensors of the labels present in the batch, ``bmm`` with the unit masks): no Python loop
over units or labels. Memory per step is about ``batch_size * sh * sw * (units_chunk +
labels in the batch)`` floats; units are processed in chunks of at most ``max_elements /
(batch_size * sh * sw)``.

Example::

    from advinterp_dissect import dissect
    d = dissect(model, "/data/broden1_224", layers=["layer3", "layer4"])
    d["layer4"].detector_counts()          # {"object": 12, "part": 3, ...}
    d.write_tally("out/")                  # out/tally_layer4.csv, NetDissect-Lite's columns
"""
from __future__ import annotations

import csv
import dataclasses
import math
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from advinterp.components import Analyzer
from advinterp.datasets.broden import BrodenDataset, export_broden
from advinterp.exceptions import DatasetFormatError, IncompatibleModelError, ParameterError
from advinterp.model import ModelAdapter, as_adapter
from advinterp.params import Param
from advinterp.progress import progress_bar
from advinterp.results import Result

from .quantile import StreamingQuantile

__all__ = ["Vocabulary", "LayerDissection", "Dissection", "DissectionAnalyzer", "dissect", "open_broden",
           "TALLY_FIELDS", "images_to_tensor", "threshold_as"]

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
        """NetDissect-Lite's ``tally.csv`` rows: units (numbered from 1) by decreasing
        score, with ``unit, category, label, score`` then per category ``cat-label,
        cat-truth, cat-activation, cat-intersect, cat-iou``."""
        best, score = self.best_per_category()
        cats = self.vocabulary.categories
        names = self.vocabulary.names
        bestcat = score.argsort(axis=0, kind="stable")[::-1][0]
        ordering = score.max(axis=0).argsort(kind="stable")[::-1]
        act = self.activation[:, self.vocabulary.category]  # NetDissect's tally_units_cat . labelcat.T
        rows = []
        for unit in ordering:
            g = bestcat[unit]
            row: dict[str, Any] = {"unit": int(unit) + 1, "category": cats[g],
                                   "label": names[best[g, unit]] if best[g, unit] >= 0 else "",
                                   "score": float(score[g, unit])}
            for ci, cat in enumerate(cats):
                lab = best[ci, unit]
                if lab < 0:
                    row.update({f"{cat}-label": "", f"{cat}-truth": 0.0, f"{cat}-activation": 0.0,
                                f"{cat}-intersect": 0.0, f"{cat}-iou": 0.0})
                    continue
                row.update({f"{cat}-label": names[lab], f"{cat}-truth": float(self.truth[lab]),
                            f"{cat}-activation": float(act[unit, lab]),
                            f"{cat}-intersect": float(self.intersection[unit, lab]),
                            f"{cat}-iou": float(score[ci, unit])})
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

    def write_tally(self, folder: str | Path) -> dict[str, Path]:
        """Write ``folder/tally_<layer>.csv`` for every layer (NetDissect-Lite's format;
        NetDissect-Lite names it ``tally.csv`` in a per-run folder)."""
        folder = Path(folder)
        return {k: v.write_tally(folder / f"tally_{_safe(k)}.csv") for k, v in self.layers.items()}


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


def _label_batch(items, ds: BrodenDataset, categories: Sequence[str], col_of: np.ndarray,
                 device: torch.device, dtype: torch.dtype) -> tuple[torch.Tensor, np.ndarray, tuple[int, int]]:
    """``(L, present, (sh, sw))``: ``L`` ``(B, sh*sw, P)`` 0/1 with ``L[b, p, j] = 1`` iff
    pixel ``p`` of image ``b`` carries label column ``present[j]`` (image-level labels
    cover every pixel)."""
    sizes = set()
    for it in items:
        for cat in categories:
            sizes.add(tuple(it.pixel_labels[cat].shape[1:]))
    if len(sizes) != 1:
        raise ParameterError("dissect", "resolution", None,
                             f"a common label size: images {items[0].index}..{items[-1].index} have label maps "
                             f"of sizes {sorted(sizes)}; open the dataset with BrodenDataset(root, resolution=...)")
    sh, sw = sizes.pop()
    S = sh * sw
    stacks, scalars = [], []
    for b, it in enumerate(items):
        layers = [it.pixel_labels[c].reshape(-1, S) for c in categories if it.pixel_labels[c].shape[0]]
        stacks.append(np.concatenate(layers) if layers else np.zeros((0, S), np.int64))
        for cat in categories:
            for num in it.image_labels[cat]:
                scalars.append((b, num, cat))
    K = max([len(s) for s in stacks], default=0)
    pix = np.zeros((len(items), max(K, 1), S), np.int64)
    for b, s in enumerate(stacks):
        pix[b, :len(s)] = s
    if pix.size and (pix.min() < 0 or pix.max() >= len(col_of)):
        bad = int(pix.max()) if pix.max() >= len(col_of) else int(pix.min())
        b = int(np.nonzero((pix == bad).any(axis=(1, 2)))[0][0])
        raise DatasetFormatError(f"{ds.image_path(items[b].index)}: a segmentation of this image holds label "
                                 f"number {bad}, which is not in {ds.root / 'label.csv'}. Fix the PNG or label.csv.")
    cols = col_of[pix]
    if (cols == -2).any():
        b = int(np.nonzero((cols == -2).any(axis=(1, 2)))[0][0])
        bad = sorted(set(pix[b][cols[b] == -2].tolist()))
        raise DatasetFormatError(f"{ds.image_path(items[b].index)}: a segmentation of this image holds label "
                                 f"number(s) {bad[:5]}, not in {ds.root / 'label.csv'}. Fix the PNG or label.csv.")
    scal = [(b, int(col_of[n]) if n < len(col_of) else -2) for b, n, _ in scalars]
    scal = [(b, c) for b, c in scal if c >= 0]
    present = np.unique(np.concatenate([cols[cols >= 0].ravel(), np.array([c for _, c in scal], np.int64)]))
    comp = np.where(cols >= 0, np.searchsorted(present, np.maximum(cols, 0)) + 1, 0)  # 0 = no label
    index = torch.from_numpy(comp).to(device).permute(0, 2, 1)                      # (B, S, K)
    L = torch.zeros(len(items), S, len(present) + 1, device=device, dtype=dtype)
    L.scatter_(2, index, 1.0)
    if scal:
        bb = torch.tensor([b for b, _ in scal], device=device)
        jj = torch.from_numpy(np.searchsorted(present, [c for _, c in scal]) + 1).to(device)
        L[bb, :, jj] = 1.0
    return L[:, :, 1:], present, (sh, sw)


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


# ---------------------------------------------------------------------------- the algorithm
def dissect(model: Any, broden: Any, layers: Sequence[str] | str | None = None, *, quantile: float = 0.005,
            iou_threshold: float = 0.04, batch_size: int = 32, bins: int = 2048,
            categories: Sequence[str] | None = None, resolution: Any = None,
            thresholds: Mapping[str, Any] | None = None, progress: bool | None = None,
            max_elements: int = 1 << 22) -> Dissection:
    """Dissect ``layers`` of ``model`` over a Broden dataset (module docstring; eq. 7).

    Args:
        model: :class:`~advinterp.ModelAdapter` (or ``nn.Module``); never changed.
        broden: a :class:`~advinterp.datasets.broden.BrodenDataset` or a Broden folder.
            Its images are fed to the model as they are (use ``resolution`` to resize).
        layers: layer names (default: ``model.feature_layers()``), each with a spatial
            ``(N, U, h, w)`` output.
        quantile: top quantile of each unit's activations defining ``T_k`` (default
            0.005, NetDissect's; the PSE paper's text says 5 %: pass 0.05).
        iou_threshold: detector threshold kept in the result for its summaries (0.04).
        batch_size: images per step in both passes (default 32).
        bins: histogram bins of the streaming quantile (default 2048; tolerance = one bin).
        categories: concept categories to score (default: all of the dataset's).
        resolution: when ``broden`` is a path: resize images and labels to this size
            (int or ``(h, w)``, default None: as stored).
        thresholds: ``{layer: (U,) T_k}`` to skip the quantile pass (e.g. another
            dissection's :meth:`Dissection.thresholds`).
        progress: show progress bars (default: when on a terminal).
        max_elements: bound on ``batch * units_chunk * sh * sw`` per mask tensor (2**22).

    Returns:
        :class:`Dissection`.
    """
    owner = "dissect"
    adapter = as_adapter(model)
    if isinstance(quantile, bool) or not isinstance(quantile, (int, float)) or not 0 < quantile < 1:
        raise ParameterError(owner, "quantile", quantile, "a number in (0, 1)")
    if isinstance(iou_threshold, bool) or not isinstance(iou_threshold, (int, float)) or not 0 <= iou_threshold < 1:
        raise ParameterError(owner, "iou_threshold", iou_threshold, "a number in [0, 1)")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ParameterError(owner, "batch_size", batch_size, "a positive integer")
    if isinstance(max_elements, bool) or not isinstance(max_elements, int) or max_elements < 1:
        raise ParameterError(owner, "max_elements", max_elements, "a positive integer")
    ds = open_broden(broden, resolution=resolution, owner=owner)
    if len(ds) == 0:
        raise ParameterError(owner, "broden", broden, "a dataset with at least one image")
    cats = list(ds.categories if categories is None else ([categories] if isinstance(categories, str)
                                                           else categories))
    if not cats or any(c not in ds.categories for c in cats):
        raise ParameterError(owner, "categories", categories, f"a non-empty subset of {ds.categories}")
    layers = _check_layers(adapter, layers, owner)
    vocab, col_of = _vocabulary(ds, cats)
    dev, dtype = adapter.device, adapter.dtype
    n_batches = math.ceil(len(ds) / batch_size)

    with adapter.preserved(freeze=True), torch.no_grad():
        # ---- pass 1: per-unit thresholds
        T: dict[str, torch.Tensor] = {}
        tol: dict[str, torch.Tensor] = {}
        act_size: dict[str, tuple[int, int]] = {}
        if thresholds is not None:
            for name in layers:
                if name not in thresholds:
                    raise ParameterError(owner, "thresholds", thresholds, f"a threshold vector for every layer ({name!r} missing)")
                T[name] = torch.as_tensor(np.asarray(thresholds[name], dtype=np.float64)).to(dev)
                tol[name] = torch.zeros_like(T[name])
        else:
            sketches: dict[str, StreamingQuantile] = {}
            for images in progress_bar(ds.image_batches(batch_size), desc="dissection 1/2: quantiles",
                                          total=n_batches, disable=None if progress is None else not progress):
                acts = adapter.activations(images_to_tensor(images, dev, dtype), layers)
                for name in layers:
                    a = _spatial(acts, name, adapter)
                    if name not in sketches:
                        sketches[name] = StreamingQuantile(a.shape[1], bins=bins, device=dev)
                    sketches[name].update(a.transpose(0, 1).reshape(a.shape[1], -1))
            for name, sq in sketches.items():
                T[name], tol[name] = sq.quantile(1.0 - quantile), sq.width.clone()

        # ---- pass 2: tallies
        G, C = len(cats), len(vocab)
        catmat = torch.zeros(C, G, device=dev, dtype=dtype)
        if C:
            catmat[torch.arange(C, device=dev), torch.from_numpy(vocab.category).to(dev)] = 1.0
        tallies: dict[str, dict[str, torch.Tensor]] = {}
        label_size = None
        for images, items in progress_bar(ds.batches(batch_size), desc="dissection 2/2: IoU",
                                          total=n_batches, disable=None if progress is None else not progress):
            acts = adapter.activations(images_to_tensor(images, dev, dtype), layers)
            L, present, label_size = _label_batch(items, ds, cats, col_of, dev, dtype)
            B, S, P = L.shape
            pres = torch.from_numpy(present).to(dev)
            cat_b = catmat[pres]                                           # (P, G)
            truth_b = L.sum((0, 1)).double()
            for name in layers:
                a = _spatial(acts, name, adapter)
                U = a.shape[1]
                act_size[name] = tuple(a.shape[-2:])
                if T[name].shape != (U,):
                    raise ParameterError(owner, "thresholds", thresholds, f"{U} thresholds for layer {name!r}")
                t = tallies.setdefault(name, {
                    "inter": torch.zeros(U, C, dtype=torch.float64, device=dev),
                    "act": torch.zeros(U, G, dtype=torch.float64, device=dev),
                    "truth": torch.zeros(C, dtype=torch.float64, device=dev),
                    "pixels": torch.zeros(U, dtype=torch.float64, device=dev)})
                t["truth"].index_add_(0, pres, truth_b)
                thr = threshold_as(T[name], a.dtype)[:, None, None]
                chunk = max(1, max_elements // max(1, B * S))
                for u0 in range(0, U, chunk):  # memory chunks of units, not one unit at a time
                    u1 = min(U, u0 + chunk)
                    up = (a[:, u0:u1] if tuple(a.shape[-2:]) == label_size else
                          F.interpolate(a[:, u0:u1], size=label_size, mode="bilinear", align_corners=False))
                    M = (up > thr[u0:u1]).flatten(2).to(dtype)                   # (B, u, S)
                    size = M.sum(2)                                               # (B, u)
                    inter = torch.bmm(M, L)                                       # (B, u, P)
                    gate = torch.matmul(inter, cat_b) > 0                         # (B, u, G)
                    t["act"][u0:u1] += (size.double()[..., None] * gate).sum(0)
                    t["inter"][u0:u1].index_add_(1, pres, inter.double().sum(0))
                    t["pixels"][u0:u1] += size.double().sum(0)

    out = {}
    for name in layers:
        t = tallies[name]
        out[name] = LayerDissection(
            layer=name, thresholds=T[name].double().cpu().numpy(), threshold_tolerance=tol[name].double().cpu().numpy(),
            intersection=t["inter"].cpu().numpy(), activation=t["act"].cpu().numpy(), truth=t["truth"].cpu().numpy(),
            unit_pixels=t["pixels"].cpu().numpy(), vocabulary=vocab, n_images=len(ds),
            label_size=tuple(int(s) for s in label_size), activation_size=tuple(int(s) for s in act_size[name]))
    return Dissection(out, model=adapter.name, dataset=str(ds.root), quantile=float(quantile),
                      iou_threshold=float(iou_threshold), n_images=len(ds))


# ---------------------------------------------------------------------------- analyzer
def _layers_ok(v) -> bool:
    return v is None or (isinstance(v, (list, tuple)) and len(v) > 0 and all(isinstance(s, str) and s for s in v))


def _frac_ok(v) -> bool:
    return not isinstance(v, bool) and isinstance(v, (int, float)) and math.isfinite(v) and 0 < v < 1


def _size_ok(v) -> bool:
    if v is None:
        return True
    if isinstance(v, int) and not isinstance(v, bool):
        return v > 0
    return (isinstance(v, (list, tuple)) and len(v) == 2
            and all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in v))


class DissectionAnalyzer(Analyzer):
    """Network dissection (A8, eq. 7): per-unit IoU with Broden concepts, detectors, tally.csv.

    Parameters: ``broden`` (None: the embedded world exported to Broden format,
    ``synthetic_n`` scenes of ``synthetic_size`` pixels, in a temporary folder; or a Broden
    folder), ``layers`` (None: ``model.feature_layers()``), ``quantile`` (0.005),
    ``iou_threshold`` (0.04), ``batch_size`` (32), ``bins`` (2048), ``categories`` (None:
    all), ``resolution`` (None), ``synthetic_n`` (200), ``synthetic_size`` (64).

    Context (optional keywords of ``analyze``): ``broden=`` a
    :class:`~advinterp.datasets.broden.BrodenDataset` or folder, instead of the parameter.

    Dissection characterises the model's units on the (clean) Broden data, so the
    adversarial ``batch`` is only validated; the ``unit_sensitivity`` analyzer uses it.
    """

    name = "dissection"
    context_keys = ("broden",)
    params = {
        "broden": Param(None, lambda v: v is None or (isinstance(v, (str, Path)) and str(v) != ""),
                        "None (the embedded world) or the path of a Broden folder", invalid=(3, "")),
        "layers": Param(None, _layers_ok, "None or a non-empty list of layer names", invalid=("layer4", [1], [])),
        "quantile": Param(0.005, _frac_ok, "a number in (0, 1)", doc="top quantile defining T_k",
                          invalid=(0, 1, "x")),
        "iou_threshold": Param.number(0.04, low=0.0, high=0.999, doc="detector threshold on max_c IoU(k, c)"),
        "batch_size": Param.integer(32, low=1),
        "bins": Param(2048, lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 2 and v % 2 == 0,
                      "an even integer >= 2", doc="streaming-quantile histogram bins", invalid=(3, 0, 2.0)),
        "categories": Param(None, _layers_ok, "None or a non-empty list of category names", invalid=("color", [])),
        "resolution": Param(None, _size_ok, "None, a positive int or an (h, w) pair", invalid=(0, (1, 2, 3), "x")),
        "synthetic_n": Param.integer(200, low=1, doc="scenes exported when broden is None"),
        "synthetic_size": Param.integer(64, low=24, doc="scene size when broden is None"),
    }
    conformance_params = {"synthetic_n": 8, "synthetic_size": 24, "bins": 64, "batch_size": 4}
    conformance_context: dict[str, Any] = {}

    def run(self, model: Any, broden: Any = None, progress: bool | None = None) -> Dissection:
        """Dissect ``model`` with this analyzer's parameters (``broden`` overrides the
        parameter); the embedded world is exported to a temporary folder when neither is
        given."""
        adapter = as_adapter(model)
        src = broden if broden is not None else self.broden
        kw = dict(layers=self.layers, quantile=self.quantile, iou_threshold=self.iou_threshold,
                  batch_size=self.batch_size, bins=self.bins, categories=self.categories, progress=progress)
        if src is not None:
            return dissect(adapter, src, resolution=self.resolution, **kw)
        from advinterp.datasets.synthetic import SyntheticWorld

        with tempfile.TemporaryDirectory(prefix="advinterp-broden-") as tmp:
            root = export_broden(tmp, SyntheticWorld(size=self.synthetic_size), n=self.synthetic_n, split="val")
            d = dissect(adapter, root, resolution=self.resolution, **kw)
        # the temporary folder is gone: name the data by what it was
        return dataclasses.replace(d, dataset=f"embedded world ({self.synthetic_n} val scenes of "
                                               f"{self.synthetic_size}px, export_broden)")

    def _analyze(self, model, batch, **context):
        return self.run(model, context.get("broden"))
