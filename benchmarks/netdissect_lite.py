"""A port of NetDissect-Lite's ``FeatureOperator`` (CSAILVision, 2018): the speed baseline for
:func:`advinterp_dissect.dissect`.

NetDissect-Lite (``feature_operation.py``, ``loader/data_loader.py``, ``settings.py``) cannot be
imported today (it needs the removed ``scipy.misc``), so this module re-implements its three
steps with the same structure and the same algorithm, step by step:

1. ``feature_extraction`` -- a ``multiprocessing.Pool`` prefetcher (NetDissect-Lite's
   ``SegmentationPrefetcher``: ``cpu_count()`` workers, ``map_async`` of one batch of item
   indices at a time, ``ahead`` batches in flight) decodes the images, batches of
   ``BATCH_SIZE`` (128) go through the *full* model forward with forward hooks on the
   requested layers, and every layer's output is stored in a float64 ``numpy.memmap``
   ``(N, U, h, w)`` in a temporary folder, together with the ``(N, U)`` per-image maxima
   (``maxfeatures``).
2. ``quantile_threshold`` -- NetDissect-Lite streams the features into its
   ``util/vecquantile.QuantileVector`` (a randomised sketch) and reads out the
   ``1 - QUANTILE`` quantile. This port uses instead the exact alternative that
   NetDissect-Lite keeps as a commented line in the same function,
   ``np.percentile(features, 100 * (1 - quantile))``, taken per unit over all (image,
   pixel) values of that unit; it is computed unit by unit over the memmap, so memory stays
   bounded by one unit's ``N * h * w`` float64 values. (The sketch is approximate and
   seeded; the exact percentile makes equality checks possible and is not slower in
   spirit: one pass over the features per unit.)
3. ``tally`` / ``tally_job`` -- a second prefetcher (``TALLY_BATCH_SIZE`` 16,
   ``TALLY_AHEAD`` 4) reads the label maps; for every image and every unit (a Python loop,
   as NetDissect-Lite) the unit's map is skipped when its maximum is ``<=`` the threshold,
   else resized to the label size with ``scipy.misc.imresize(map, (sh, sw), mode='F')``
   (reproduced with PIL: a float32 ``"F"`` image resized with ``Image.BILINEAR``),
   thresholded, and the labels under the active pixels are counted with ``np.bincount``.
   Then IoU, the per-category best labels and the ``tally.csv`` rows exactly as
   NetDissect-Lite's ``tally``. ``settings.PARALLEL`` is 1 in NetDissect-Lite ("experiments
   show that 1 is the fastest"), so its thread pool over image ranges is not ported.

As in NetDissect-Lite's ``main.py``, features are extracted once for all layers, then each
layer gets its own quantile and its own tally pass over the dataset.

Deliberate differences, none of which changes the algorithm:

* Data: Broden folders are read with :class:`advinterp.datasets.broden.BrodenDataset`
  (each pool worker opens it once, in the pool initializer). NetDissect-Lite drops index
  rows without any label of the selected categories; this reads every row. Its tally
  workers decode only the segmentations; ``BrodenDataset[i]`` also decodes the image
  (a small extra cost in the baseline's worker processes, not in its main loop).
* Input: NetDissect-Lite feeds BGR, mean-subtracted pixels divided by ``255 * 0.224``; this
  feeds the model adapter ``[0, 1]`` RGB pixels and lets it normalise (``adapter.logits``).
* Hooks: NetDissect-Lite appends hook outputs to one global list and pairs them with
  ``FEATURE_NAMES`` by position (a mismatch when the layers are not listed in execution
  order); this keys them by layer name. Its retry loop on NaN logits is not ported.
* An image-level label (``BrodenItem.image_labels``, e.g. ``scene``) is a "scalar" of
  NetDissect-Lite's ``tally_job``; pixel labels of a category are its ``(K, sh, sw)`` stack.

Example::

    import advinterp
    from netdissect_lite import netdissect_lite
    model = advinterp.get_model("synthetic-cnn")
    r = netdissect_lite(model, "/data/broden1_224", ["layer4"], tally_csv="out/tally_{layer}.csv")
    r["layer4"]["iou"].shape, r["layer4"]["seconds"]
"""
from __future__ import annotations

import csv
import multiprocessing
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from PIL import Image

from advinterp.datasets.broden import BrodenDataset

__all__ = ["netdissect_lite", "FeatureOperator", "SegmentationPrefetcher", "imresize_f",
           "primary_categories_per_index", "BATCH_SIZE", "TALLY_BATCH_SIZE", "TALLY_AHEAD", "QUANTILE"]

# NetDissect-Lite's settings.py (non-test mode)
QUANTILE = 0.005
BATCH_SIZE = 128
TALLY_BATCH_SIZE = 16
TALLY_AHEAD = 4


# ---------------------------------------------------------------------------- prefetching
_WORKER_DS: BrodenDataset | None = None


def _worker_init(root: str, categories: Sequence[str] | None) -> None:
    """Pool initializer: each worker process opens the Broden dataset once."""
    global _WORKER_DS
    _WORKER_DS = BrodenDataset(root, categories=categories)


def _prefetch_worker(job: tuple[int, tuple[str, ...]]) -> dict[str, Any]:
    """NetDissect-Lite's ``prefetch_worker``: one item as a dict with ``i``, ``sh``, ``sw``
    and, for the image pass (``categories == ('image',)``), ``image``; otherwise, for each
    category, ``(pixel label stack (K, sh, sw), [image-level label numbers])``."""
    j, categories = job
    ds = _WORKER_DS
    if tuple(categories) == ("image",):
        image = ds.image(j)
        return {"i": j, "image": image, "sh": image.shape[0], "sw": image.shape[1]}
    item = ds[j]
    rec: dict[str, Any] = {"i": j}
    sh = sw = None
    for cat in categories:
        stack = item.pixel_labels[cat]
        sh, sw = stack.shape[1:]
        rec[cat] = (stack, list(item.image_labels[cat]))
    if sh is None:  # no category: label size = image size
        sh, sw = item.image.shape[:2]
    rec["sh"], rec["sw"] = int(sh), int(sw)
    return rec


class SegmentationPrefetcher:
    """NetDissect-Lite's ``SegmentationPrefetcher`` (``once=True``, no split, no shuffling):
    a process pool of ``workers`` (default ``cpu_count()``) processes whose initializer
    opens the dataset; ``refill_tasks`` keeps ``ahead`` ``map_async`` batches of
    ``batch_size`` item indices in flight; :meth:`batches` yields lists of item dicts.

    Use as a context manager (or call :meth:`close`): the pool is closed and joined on a
    normal exit and terminated on an exception.
    """

    def __init__(self, root: str | Path, categories: Sequence[str], dataset_categories: Sequence[str] | None,
                 start: int = 0, end: int | None = None, batch_size: int = 4, ahead: int = 4,
                 workers: int | None = None, size: int | None = None):
        self.categories = tuple(categories)
        self.batch_size = int(batch_size)
        self.ahead = int(ahead)
        if end is None:
            end = size if size is not None else len(BrodenDataset(root, categories=dataset_categories))
        self.indexes = list(range(start, end))
        self.index = 0
        self.result_queue: list = []
        n_procs = workers or multiprocessing.cpu_count()
        self.pool = multiprocessing.Pool(processes=n_procs, initializer=_worker_init,
                                         initargs=(str(root), None if dataset_categories is None
                                                   else list(dataset_categories)))
        self._closed = False

    def next_job(self):
        if self.index < 0:
            return None
        j = self.indexes[self.index]
        self.index += 1
        if self.index >= len(self.indexes):
            self.index = -1  # once=True
        return (j, self.categories)

    def refill_tasks(self) -> None:
        while len(self.result_queue) < self.ahead:
            data = []
            while len(data) < self.batch_size:
                job = self.next_job() if self.indexes else None
                if job is None:
                    break
                data.append(job)
            if not data:
                return
            self.result_queue.append(self.pool.map_async(_prefetch_worker, data))

    def fetch_batch(self):
        self.refill_tasks()
        if not self.result_queue:
            return None
        return self.result_queue.pop(0).get(31536000)

    def batches(self):
        while True:
            batch = self.fetch_batch()
            if batch is None:
                return
            yield batch

    def close(self, terminate: bool = False) -> None:
        if self._closed:
            return
        self._closed = True
        self.result_queue.clear()
        if terminate:
            self.pool.terminate()
        else:
            self.pool.close()
        self.pool.join()

    def __enter__(self) -> "SegmentationPrefetcher":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close(terminate=exc_type is not None)


# ---------------------------------------------------------------------------- helpers
def imresize_f(feature_map: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``scipy.misc.imresize(feature_map, size, mode='F')`` (scipy < 1.3): the map as a
    float32 PIL ``"F"`` image resized to ``size = (rows, cols)`` with ``Image.BILINEAR``."""
    sh, sw = int(size[0]), int(size[1])
    img = Image.fromarray(np.asarray(feature_map, dtype=np.float32), mode="F")
    return np.asarray(img.resize((sw, sh), Image.BILINEAR))


def primary_categories_per_index(ds: BrodenDataset, categories: Sequence[str], n_labels: int) -> np.ndarray:
    """NetDissect-Lite's ``SegmentationData.primary_categories_per_index``: for every label
    number ``0 .. n_labels-1``, the index (in ``categories``) of the category maximising
    ``(coverage in that category if the category lists the label else 0, category index)``.

    So label 0, labels in no selected category *and labels whose coverage is 0 in every
    category listing them* go to the LAST category (the ``max`` over tuples breaks ties by
    the larger index). The coverages are those of the ``c_<category>.csv`` files (of
    ``label.csv``'s counts for a category without one, as ``ds.primary_categories``).
    """
    cov: list[dict[int, float]] = []
    for cat in categories:
        if cat in ds.codes:
            cov.append({c.number: float(c.coverage) for c in ds.codes[cat]})
        else:
            cov.append({lab.number: float(lab.categories[cat]) for lab in ds.labels if cat in lab.categories})
    out = np.zeros(n_labels, dtype=np.int64)
    for i in range(n_labels):
        out[i] = max((cov[ic].get(i, 0.0), ic) for ic in range(len(categories)))[1]
    return out


def _onehot(arr: np.ndarray) -> np.ndarray:
    """NetDissect-Lite's ``SegmentationData.onehot``: ``(L,) -> (L, max + 1)`` float64."""
    result = np.zeros(arr.shape + (int(np.amax(arr)) + 1,))
    result[np.arange(len(arr)), arr] = 1
    return result


def _as_float_pixels(images: np.ndarray, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """``(B, H, W, 3)`` uint8 -> ``(B, 3, H, W)`` float in [0, 1] on ``device``."""
    x = torch.from_numpy(np.ascontiguousarray(images)).to(device)
    return x.permute(0, 3, 1, 2).to(dtype).div_(255.0)


# ---------------------------------------------------------------------------- the operator
class FeatureOperator:
    """NetDissect-Lite's ``FeatureOperator`` over a Broden folder and a model adapter.

    Args:
        root: Broden folder.
        categories: categories to tally (default: the dataset's, in its order).
        batch_size: feature-extraction batch (NetDissect-Lite's ``BATCH_SIZE``, 128).
        workers: prefetch processes (default ``cpu_count()``).
        folder: where the memmaps go (default: a new temporary folder, removed by
            :meth:`cleanup`).
    """

    def __init__(self, root: str | Path, categories: Sequence[str] | None = None, batch_size: int = BATCH_SIZE,
                 workers: int | None = None, folder: str | Path | None = None):
        self.root = str(root)
        self.data = BrodenDataset(self.root, categories=categories)
        self.categories = list(self.data.categories)
        self.size = len(self.data)
        self.batch_size = int(batch_size)
        self.workers = workers
        self._own_folder = folder is None
        self.folder = Path(tempfile.mkdtemp(prefix="netdissect-lite-") if folder is None else folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        # NetDissect-Lite's dense label array: numbers 0 .. max (0 = unlabelled)
        self.n_labels = max([lab.number for lab in self.data.labels], default=0) + 1
        self._names = {lab.number: lab.name for lab in self.data.labels}
        self.primary = primary_categories_per_index(self.data, self.categories, self.n_labels)
        self.labelcat = _onehot(self.primary)
        if self.labelcat.shape[1] < len(self.categories):  # only if label 0 were absent; keep (L, G)
            self.labelcat = np.pad(self.labelcat, ((0, 0), (0, len(self.categories) - self.labelcat.shape[1])))

    def name(self, category: str | None, j: int) -> str:
        """``SegmentationData.name(None, j)``: the label's name ("" for 0 / unknown numbers)."""
        return self._names.get(int(j), "")

    def cleanup(self) -> None:
        """Remove the temporary memmap folder (NetDissect-Lite's ``settings.CLEAN``)."""
        if self._own_folder:
            shutil.rmtree(self.folder, ignore_errors=True)

    # ------------------------------------------------------------------ step 1
    def feature_extraction(self, adapter: Any, layers: Sequence[str]) -> tuple[dict, dict]:
        """``({layer: (N, U, h, w) float64 memmap}, {layer: (N, U) float64 memmap of maxima})``."""
        layers = list(layers)
        modules = {name: adapter.layer(name) for name in layers}
        features_blobs: dict[str, np.ndarray] = {}

        def make_hook(name):
            def hook_feature(module, inputs, output):
                out = output[0] if isinstance(output, (tuple, list)) else output
                features_blobs[name] = out.data.cpu().numpy()
            return hook_feature

        wholefeatures: dict[str, np.memmap] = {}
        maxfeatures: dict[str, np.memmap] = {}
        n = self.size
        handles = []
        with adapter.preserved():
            try:
                for name, m in modules.items():
                    handles.append(m.register_forward_hook(make_hook(name)))
                with SegmentationPrefetcher(self.root, ["image"], self.categories, batch_size=self.batch_size,
                                            ahead=4, workers=self.workers, size=n) as loader:
                    for batch_idx, batch in enumerate(loader.batches()):
                        features_blobs.clear()
                        images = np.stack([rec["image"] for rec in batch])
                        x = _as_float_pixels(images, adapter.device, adapter.dtype)
                        with torch.no_grad():
                            adapter.logits(x)
                        for name in layers:
                            if name not in features_blobs:
                                raise RuntimeError(f"layer {name!r} was not run by the model's forward()")
                            feat = features_blobs[name]
                            if name not in maxfeatures:
                                safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)
                                maxfeatures[name] = np.memmap(self.folder / f"{safe}_max.mmap", dtype=float,
                                                              mode="w+", shape=(n, feat.shape[1]))
                                if feat.ndim == 4:
                                    wholefeatures[name] = np.memmap(self.folder / f"{safe}.mmap", dtype=float,
                                                                    mode="w+", shape=(n,) + feat.shape[1:])
                            start = batch_idx * self.batch_size
                            end = min(start + self.batch_size, n)
                            if feat.ndim == 4:
                                wholefeatures[name][start:end] = feat
                                maxfeatures[name][start:end] = np.max(np.max(feat, 3), 2)
                            elif feat.ndim == 3:
                                maxfeatures[name][start:end] = np.max(feat, 2)
                            elif feat.ndim == 2:
                                maxfeatures[name][start:end] = feat
            finally:
                for h in handles:
                    h.remove()
        for name in layers:
            if name not in wholefeatures:  # non-spatial layers: NetDissect-Lite returns the maxima
                wholefeatures[name] = maxfeatures[name]
        return wholefeatures, maxfeatures

    # ------------------------------------------------------------------ step 2
    @staticmethod
    def quantile_threshold(features: np.ndarray, quantile: float = QUANTILE) -> np.ndarray:
        """``(U,)`` float64: per unit, ``np.percentile`` of all its (image, pixel) values at
        ``100 * (1 - quantile)`` (NetDissect-Lite's commented alternative to its sketch),
        one unit at a time over the memmap."""
        units = features.shape[1]
        out = np.empty(units, dtype=np.float64)
        for u in range(units):
            out[u] = np.percentile(np.asarray(features[:, u], dtype=np.float64).ravel(), 100 * (1 - quantile))
        return out

    # ------------------------------------------------------------------ step 3
    def tally_job(self, args) -> None:
        """NetDissect-Lite's ``tally_job``: accumulate into the arrays of ``args`` for items
        ``start .. end-1``."""
        features, threshold, tally_labels, tally_units, tally_units_cat, tally_both, start, end = args
        units = features.shape[1]
        categories = self.categories
        labelcat = self.labelcat
        # NetDissect-Lite's tally_cat is a local that is only assigned when an image has
        # pixel labels; on an image without any, the value of the previous unit (of this or
        # an earlier image) is reused -- and grown in place by ``+=`` for the scalars. That
        # quirk is kept. On the very first unit tallied it would be unbound
        # (UnboundLocalError in NetDissect-Lite); start it at zeros instead.
        tally_cat = np.zeros(labelcat.shape[1])
        with SegmentationPrefetcher(self.root, categories, categories, start=start, end=end,
                                    batch_size=TALLY_BATCH_SIZE, ahead=TALLY_AHEAD, workers=self.workers) as pd:
            for batch in pd.batches():
                for concept_map in batch:
                    img_index = concept_map["i"]
                    sh, sw = concept_map["sh"], concept_map["sw"]
                    scalars, pixels = [], []
                    for cat in categories:
                        stack, image_labels = concept_map[cat]
                        scalars += image_labels          # image-level labels: NetDissect's scalars
                        if len(stack):
                            pixels.append(stack)         # (K, sh, sw) label maps of the category
                    for scalar in scalars:
                        tally_labels[scalar] += sh * sw
                    if pixels:
                        pixels = np.concatenate(pixels)
                        tally_label = np.bincount(pixels.ravel())
                        if len(tally_label) > 0:
                            tally_label[0] = 0
                        tally_labels[:len(tally_label)] += tally_label

                    for unit_id in range(units):
                        feature_map = features[img_index][unit_id]
                        if feature_map.max() > threshold[unit_id]:
                            mask = imresize_f(feature_map, (sh, sw))
                            indexes = np.argwhere(mask > threshold[unit_id])

                            tally_units[unit_id] += len(indexes)
                            if len(pixels) > 0:
                                tally_bt = np.bincount(pixels[:, indexes[:, 0], indexes[:, 1]].ravel())
                                if len(tally_bt) > 0:
                                    tally_bt[0] = 0
                                tally_cat = np.dot(tally_bt[None, :], labelcat[:len(tally_bt), :])[0]
                                tally_both[unit_id, :len(tally_bt)] += tally_bt
                            for scalar in scalars:
                                tally_cat += labelcat[scalar]   # in place: also grows a stale tally_cat
                                tally_both[unit_id, scalar] += len(indexes)
                            tally_units_cat[unit_id] += len(indexes) * (tally_cat > 0)

    def tally(self, features: np.ndarray, threshold: np.ndarray, csvpath: str | Path | None = None) -> dict[str, Any]:
        """NetDissect-Lite's ``tally``: the tallies, IoU and ``tally.csv`` rows (written to
        ``csvpath`` when given)."""
        units = features.shape[1]
        labels = self.n_labels
        categories = self.categories
        tally_both = np.zeros((units, labels), dtype=np.float64)
        tally_units = np.zeros(units, dtype=np.float64)
        tally_units_cat = np.zeros((units, len(categories)), dtype=np.float64)
        tally_labels = np.zeros(labels, dtype=np.float64)

        # settings.PARALLEL == 1: one job over all images
        self.tally_job((features, threshold, tally_labels, tally_units, tally_units_cat, tally_both, 0, self.size))

        primary_categories = self.primary
        tally_units_cat = np.dot(tally_units_cat, self.labelcat.T)
        iou = tally_both / (tally_units_cat + tally_labels[np.newaxis, :] - tally_both + 1e-10)
        pciou = np.array([iou * (primary_categories[np.arange(iou.shape[1])] == ci)[np.newaxis, :]
                          for ci in range(len(categories))])
        label_pciou = pciou.argmax(axis=2)
        name_pciou = [[self.name(None, j) for j in label_pciou[ci]] for ci in range(len(label_pciou))]
        score_pciou = pciou[np.arange(pciou.shape[0])[:, np.newaxis], np.arange(pciou.shape[1])[np.newaxis, :],
                            label_pciou]
        bestcat_pciou = score_pciou.argsort(axis=0)[::-1]
        ordering = score_pciou.max(axis=0).argsort()[::-1]
        rets: list[dict[str, Any]] = [None] * len(ordering)
        for i, unit in enumerate(ordering):
            bestcat = bestcat_pciou[0, unit]
            data = {
                "unit": (unit + 1),
                "category": categories[bestcat],
                "label": name_pciou[bestcat][unit],
                "score": score_pciou[bestcat][unit],
            }
            for ci, cat in enumerate(categories):
                label = label_pciou[ci][unit]
                data.update({
                    "%s-label" % cat: name_pciou[ci][unit],
                    "%s-truth" % cat: tally_labels[label],
                    "%s-activation" % cat: tally_units_cat[unit, label],
                    "%s-intersect" % cat: tally_both[unit, label],
                    "%s-iou" % cat: score_pciou[ci][unit],
                })
            rets[i] = data

        if csvpath:
            csv_fields = sum([["%s-label" % cat, "%s-truth" % cat, "%s-activation" % cat, "%s-intersect" % cat,
                               "%s-iou" % cat] for cat in categories],
                             ["unit", "category", "label", "score"])
            Path(csvpath).parent.mkdir(parents=True, exist_ok=True)
            with open(csvpath, "w") as f:
                writer = csv.DictWriter(f, csv_fields)
                writer.writeheader()
                for row in rets:
                    writer.writerow(row)
        return {"iou": iou, "tally_both": tally_both, "tally_units_cat": tally_units_cat,
                "tally_labels": tally_labels, "tally_units": tally_units, "rows": rets,
                "label_pciou": label_pciou, "score_pciou": score_pciou}


# ---------------------------------------------------------------------------- entry point
def netdissect_lite(adapter: Any, broden_root: str | Path, layers: Sequence[str] | str, quantile: float = QUANTILE,
                    batch_size: int = BATCH_SIZE, thresholds: Mapping[str, Any] | None = None,
                    tally_csv: str | Path | None = None, workers: int | None = None,
                    categories: Sequence[str] | None = None) -> dict[str, dict[str, Any]]:
    """Run NetDissect-Lite's pipeline (``main.py``: features once, then per layer quantile
    and tally) on ``layers`` of ``adapter`` over the Broden folder ``broden_root``.

    Args:
        adapter: an :class:`advinterp.ModelAdapter` (e.g. ``advinterp.get_model(...)``).
        broden_root: Broden folder.
        layers: layer names (a string for one).
        quantile: top quantile defining the thresholds (0.005, NetDissect-Lite's).
        batch_size: images per forward pass in the feature pass (128, NetDissect-Lite's).
        thresholds: ``{layer: (U,)}`` to skip the quantile step (``seconds["quantile"]`` is 0).
        tally_csv: write each layer's ``tally.csv`` here; ``"{layer}"`` in the path is
            replaced by the layer name (required when several layers are dissected, else
            later layers would overwrite the file).
        workers: prefetch processes (default ``cpu_count()``, NetDissect-Lite's).
        categories: categories to tally (default: the dataset's).

    Returns:
        ``{layer: dict}`` with ``thresholds`` (U,), ``iou`` (U, L), ``tally_both`` (U, L),
        ``tally_units_cat`` (U, L; after the product with ``labelcat.T``), ``tally_labels``
        (L,), ``tally_units`` (U,) -- all float64, columns indexed by Broden label number
        (``L`` = largest label number + 1; column 0 = unlabelled) -- plus ``rows`` (the
        ``tally.csv`` rows), ``label_pciou``/``score_pciou`` (G, U), ``categories``,
        ``primary_categories`` (L,) and ``seconds`` ``{"features", "quantile", "tally"}``.
        ``seconds["features"]`` is the one shared feature pass over all layers (the same
        number in every layer's dict).
    """
    if isinstance(layers, str):
        layers = [layers]
    layers = list(dict.fromkeys(layers))
    if tally_csv is not None and len(layers) > 1 and "{layer}" not in str(tally_csv):
        raise ValueError("tally_csv must contain '{layer}' when several layers are dissected")
    fo = FeatureOperator(broden_root, categories=categories, batch_size=batch_size, workers=workers)
    try:
        t0 = time.perf_counter()
        features, _maxfeatures = fo.feature_extraction(adapter, layers)
        t_features = time.perf_counter() - t0
        out: dict[str, dict[str, Any]] = {}
        for layer in layers:
            feats = features[layer]
            if feats.ndim != 4:
                raise ValueError(f"layer {layer!r} has no spatial (N, U, h, w) output")
            t0 = time.perf_counter()
            if thresholds is None:
                thr = fo.quantile_threshold(feats, quantile)
            else:
                thr = np.asarray(thresholds[layer], dtype=np.float64)
                if thr.shape != (feats.shape[1],):
                    raise ValueError(f"thresholds[{layer!r}] must have shape ({feats.shape[1]},)")
            t_quantile = time.perf_counter() - t0 if thresholds is None else 0.0
            t0 = time.perf_counter()
            csvpath = None if tally_csv is None else str(tally_csv).replace("{layer}", layer)
            res = fo.tally(feats, thr, csvpath)
            t_tally = time.perf_counter() - t0
            out[layer] = {"thresholds": thr, **res, "categories": list(fo.categories),
                          "primary_categories": fo.primary.copy(), "activation_size": tuple(feats.shape[2:]),
                          "seconds": {"features": t_features, "quantile": t_quantile, "tally": t_tally}}
        del features, _maxfeatures
        return out
    finally:
        fo.cleanup()


if __name__ == "__main__":  # tiny demo on the embedded world
    import advinterp
    from advinterp.datasets.broden import export_broden
    from advinterp.datasets.synthetic import SyntheticWorld

    with tempfile.TemporaryDirectory() as tmp:
        root = export_broden(os.path.join(tmp, "broden"), SyntheticWorld(size=64), n=32, split="val")
        r = netdissect_lite(advinterp.get_model("synthetic-cnn"), root, ["layer4"], batch_size=16)
        for layer, d in r.items():
            print(layer, d["seconds"], d["rows"][0]["label"], float(d["rows"][0]["score"]))
