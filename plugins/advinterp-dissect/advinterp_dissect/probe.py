"""``dissection``: network dissection as a registered, exactly sharded probe; :func:`dissect`.

The probe characterises the model on clean Broden data (definitions in
:mod:`advinterp_dissect.dissection`). Its sharded protocol (``passes = 3``; every shard
sees only its items, every partial result is a saveable :class:`~advinterp.results.Result`):

0. *ranges* -- per global batch (``batch_size`` consecutive items from item 0) that the
   shard touches, each unit's activation ``[min, max]``
   (:class:`RangePartial`). The shard that starts at item 0 also streams its own values into
   a :class:`~advinterp_dissect.quantile.StreamingQuantile`, so with one shard this pass
   *is* the quantile pass of the sequential algorithm. Merge: replay the ranges into a
   :class:`~advinterp_dissect.quantile.GridSchedule` per layer (the grids the sequential
   histogram went through).
1. *histograms* -- the other shards count their values on the scheduled grid of their batch
   and carry the counts to the final grid (:class:`SketchPartial`); merge: sum, then
   ``T_k`` = the quantile -- bit-identical to one sequential pass over all images.
2. *tallies* with ``T_k`` -- intersections, category-gated activations, truth and unit
   pixels (:class:`TallyPartial`): integer counts held in float64, merged by summation.

Exactness needs one more thing: a model's activations of an image may depend on the batch
they are computed in (CPU and GPU kernels choose their algorithm by batch size, and the last
bits differ: measured on ``synthetic-cnn`` on the CPU). So a shard forwards the *whole*
global batches it touches and keeps its own images' rows; shard sizes that are multiples of
``batch_size`` cost nothing extra, others recompute the boundary batches. The results are
then identical for any shard size, and identical to :func:`dissect` (one shard).

Example::

    import advinterp
    probe = advinterp.get_probe("dissection", layers=["layer1", "layer4"])
    d = probe.run(model, "/data/broden1_224")                 # or a BrodenDataset; None: the embedded world
    d = probe.run(model, "/data/broden1_224", shard_size=320)  # the same result, in shards
"""
from __future__ import annotations

import math
import shutil
import tempfile
import time
import weakref
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from advinterp.api import (AdvinterpError, ModelAdapter, Param, ParameterError, Probe, Result, Subset, as_adapter,
                           check_context, progress_bar)
from advinterp.datasets.broden import BrodenDataset, export_broden

from .dissection import (Dissection, LayerDissection, Vocabulary, _check_layers, _spatial, _vocabulary,
                         images_to_tensor, open_broden, threshold_as)
from .activations import ActivationFiles
from .loader import batch_loader, label_tensor
from .quantile import GridSchedule, QuantileState, StreamingQuantile
from .resize import resize_maps

__all__ = ["DissectionProbe", "dissect", "RangePartial", "SketchPartial", "TallyPartial", "LayerTally"]

_PASSES = ("ranges", "histograms", "tallies")
_MAX_ELEMENTS = 1 << 22


# ---------------------------------------------------------------------------- partial results
@dataclass(frozen=True)
class RangePartial(Result):
    """Pass 0 of a shard: per global batch it touches, each unit's activation range.

    Attributes:
        batches: ``(T_s,)`` int64 global batch indices.
        vmin, vmax: ``{layer: (T_s, U) float64}``.
        sketch: ``{layer: QuantileState}`` of the shard's own values when it starts at item 0
            (on the grid of its last batch), else ``{}``.
        sketch_end: items ``[0, sketch_end)`` are counted in ``sketch`` (0: none).
        stored: the shard wrote all its activations to the run's activation files.
    """

    batches: torch.Tensor
    vmin: dict[str, torch.Tensor]
    vmax: dict[str, torch.Tensor]
    sketch: dict[str, QuantileState]
    sketch_end: int
    stored: bool = False

    kind = "dissection_ranges"


@dataclass(frozen=True)
class SketchPartial(Result):
    """Pass 1 of a shard: ``{layer: QuantileState}`` of its values on the final grid (``{}``
    when it had nothing to count)."""

    sketch: dict[str, QuantileState]

    kind = "dissection_sketch"


@dataclass(frozen=True)
class LayerTally:
    """One layer's tallies over some images (see :class:`~advinterp_dissect.dissection.LayerDissection`)."""

    intersection: np.ndarray
    activation: np.ndarray
    truth: np.ndarray
    unit_pixels: np.ndarray
    activation_size: tuple[int, int]


@dataclass(frozen=True)
class TallyPartial(Result):
    """Pass 2 of a shard: ``{layer: LayerTally}``, the label size of its last batch and its
    number of images."""

    layers: dict[str, LayerTally]
    label_size: tuple[int, int] | None
    n_images: int

    kind = "dissection_tally"


# ---------------------------------------------------------------------------- the data
class _Broden:
    """The items a dissection reads -- a Broden dataset or a subset of one (a study's
    ``start``/``n`` selection) -- with the options of the run (not probe parameters)."""

    def __init__(self, ds: BrodenDataset, index: Sequence[int] | None = None, name: str | None = None,
                 thresholds: Mapping[str, Any] | None = None, max_elements: int = _MAX_ELEMENTS,
                 progress: bool | None = False, owner: str | None = None, workers: int | None = None,
                 save_activations: str | Path | None = None, cache: bool | None = None):
        self.ds, self.index = ds, None if index is None else [int(i) for i in index]
        self.name = str(ds.root) if name is None else name
        self.thresholds, self.max_elements, self.progress, self.owner = thresholds, max_elements, progress, owner
        self.workers, self.save_activations, self.cache = workers, save_activations, cache

    def __len__(self) -> int:
        return len(self.ds) if self.index is None else len(self.index)

    def _at(self, i: int) -> int:
        return int(i) if self.index is None else self.index[i]

    def __getitem__(self, i: int):
        return self.ds[self._at(i)]

    def image(self, i: int) -> np.ndarray:
        return self.ds.image(self._at(i))

    def segmentation(self, i: int):
        return self.ds.segmentation(self._at(i))


def _source(data: Any, resolution: Any, owner: str, progress: bool | None = False) -> _Broden:
    """``data`` (a :class:`_Broden`, BrodenDataset, Broden folder or a subset of a
    BrodenDataset with ``data``/``indices``) as a :class:`_Broden`."""
    if isinstance(data, _Broden):
        return data
    if isinstance(data, Subset) and isinstance(data.data, (BrodenDataset, _Broden)):
        inner = data.data.ds if isinstance(data.data, _Broden) else data.data
        index = data.indices if not isinstance(data.data, _Broden) else [data.data._at(i) for i in data.indices]
        return _Broden(open_broden(inner, resolution=resolution, owner=owner), index, progress=progress)
    if isinstance(data, (BrodenDataset, str, Path)):
        return _Broden(open_broden(data, resolution=resolution, owner=owner), progress=progress)
    raise ParameterError(owner, "data", data, "None, a BrodenDataset or the path of a Broden folder",
                         "Dissection reads Broden segmentations; export the embedded world with "
                         "advinterp.datasets.broden.export_broden(path).")


# ---------------------------------------------------------------------------- the probe's state
@dataclass
class _Plan:
    """What passes between the passes (picklable; never saved)."""

    layers: list[str]
    vocab: Vocabulary
    col_of: np.ndarray
    n: int
    dataset: str
    owner: str
    max_elements: int
    progress: bool | None
    root: str | None = None          # a Broden folder to open when a pass is given no data
    cleanup: str | None = None       # a temporary export to delete when done
    thresholds: dict[str, torch.Tensor] | None = None
    tolerance: dict[str, torch.Tensor] | None = None
    schedules: dict[str, GridSchedule] | None = None
    sketch: dict[str, QuantileState] | None = None   # items [0, sketch_end), on the final grid
    sketch_end: int = 0
    tally: TallyPartial | None = None
    store: ActivationFiles | None = None  # the activations on disk (exported, or a cache between passes)
    store_ready: bool = False             # pass 0 wrote every row: later passes read instead of forwarding
    store_optional: bool = True           # a cache (not save_activations): pass 0 may give it up when slow


# ---------------------------------------------------------------------------- parameters
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


class DissectionProbe(Probe):
    """Network dissection (A8, eq. 7): per-unit IoU with Broden concepts, detectors, tally.csv.

    Parameters: ``broden`` (None: the embedded world exported to Broden format,
    ``synthetic_n`` scenes of ``synthetic_size`` pixels, in a temporary folder; or a Broden
    folder), ``layers`` (None: ``model.feature_layers()``), ``quantile`` (0.005),
    ``iou_threshold`` (0.04), ``batch_size`` (32), ``bins`` (2048), ``categories`` (None:
    all), ``resolution`` (None), ``synthetic_n`` (200), ``synthetic_size`` (64).

    ``run(model, data=None, shard_size=None)``: ``data`` a
    :class:`~advinterp.datasets.broden.BrodenDataset` or Broden folder (overrides the
    ``broden`` parameter). No context. Sharded exactly (module docstring): any
    ``shard_size`` gives the result of :func:`dissect`.
    """

    name = "dissection"
    context_keys = ()
    needs_data = False
    feeds_model = False  # any image size the model accepts: feature maps are resized to the labels
    shardable = True
    passes = 3
    params = {
        "broden": Param(None, lambda v: v is None or (isinstance(v, (str, Path)) and str(v) != ""),
                        "None (the embedded world) or the path of a Broden folder", invalid=(3, "")),
        "layers": Param(None, _layers_ok, "None or a non-empty list of layer names", invalid=("layer4", [1], [])),
        "quantile": Param(0.005, _frac_ok, "a number in (0, 1)", doc="top quantile defining T_k",
                          invalid=(0, 1, "x")),
        "iou_threshold": Param.number(0.04, low=0.0, high=0.999, doc="detector threshold on max_c IoU(k, c)"),
        "batch_size": Param.integer(32, low=1, doc="images per forward pass (shard sizes: best a multiple)"),
        "bins": Param(2048, lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 2 and v % 2 == 0,
                      "an even integer >= 2", doc="streaming-quantile histogram bins", invalid=(3, 0, 2.0)),
        "categories": Param(None, _layers_ok, "None or a non-empty list of category names", invalid=("color", [])),
        "resolution": Param(None, _size_ok, "None, a positive int or an (h, w) pair", invalid=(0, (1, 2, 3), "x")),
        "synthetic_n": Param.integer(200, low=1, doc="scenes exported when broden is None"),
        "synthetic_size": Param.integer(64, low=24, doc="scene size when broden is None"),
    }
    conformance_params = {"synthetic_n": 8, "synthetic_size": 24, "bins": 64, "batch_size": 4}

    # ------------------------------------------------------------------ entry point
    def run(self, model: Any, data: Any = None, *, shard_size: int | None = None, progress: bool | None = None,
            **context: Any) -> Dissection:
        """Dissect ``model`` over ``data`` (a BrodenDataset or folder; None: the ``broden``
        parameter, else the embedded world exported to a temporary folder), in shards of
        ``shard_size`` items (None: one); ``progress`` bars (None: on a terminal)."""
        owner = f"{type(self).__name__}.run"
        check_context(self, owner, context)
        src = data if data is not None else self.broden
        if src is not None:
            if not isinstance(src, _Broden):
                src = _source(src, self.resolution, owner, progress)
            return super().run(model, src, shard_size=shard_size, **context)
        with tempfile.TemporaryDirectory(prefix="advinterp-broden-") as tmp:
            ds = open_broden(self._export(tmp), resolution=self.resolution, owner=owner)
            return super().run(model, _Broden(ds, name=self._embedded_name(), progress=progress),
                               shard_size=shard_size, **context)

    def default_data(self) -> "_Broden":
        """The ``broden`` parameter's dataset, else the embedded world exported in Broden
        format (``synthetic_n`` val scenes of ``synthetic_size`` px) to a temporary folder that
        lives as long as the returned dataset: what a study step without data shards."""
        owner = f"{type(self).__name__}.run"
        if self.broden is not None:
            return _source(self.broden, self.resolution, owner)
        from advinterp.datasets.broden import synthetic_broden

        ds = synthetic_broden(n=self.synthetic_n, split="val", size=self.synthetic_size)
        return _Broden(open_broden(ds, resolution=self.resolution, owner=owner), name=self._embedded_name())

    def _export(self, folder: str) -> Path:
        from advinterp.datasets.synthetic import SyntheticWorld

        return export_broden(folder, SyntheticWorld(size=self.synthetic_size), n=self.synthetic_n, split="val")

    def _embedded_name(self) -> str:
        # the temporary folder is gone afterwards: name the data by what it was
        return f"embedded world ({self.synthetic_n} val scenes of {self.synthetic_size}px, export_broden)"

    # ------------------------------------------------------------------ the sharded protocol
    def _start(self, model: ModelAdapter, data: Any, **context: Any) -> _Plan:
        owner = f"{type(self).__name__}.run"
        root = cleanup = None
        if data is None:  # the probe's own data (a study step without data): one shard per pass
            if self.broden is not None:
                root = str(self.broden)
                src = _source(root, self.resolution, owner)
            else:
                cleanup = tempfile.mkdtemp(prefix="advinterp-broden-")
                root = str(self._export(cleanup))
                src = _Broden(open_broden(root, resolution=self.resolution, owner=owner), name=self._embedded_name())
        else:
            src = _source(data, self.resolution, owner)
        owner = src.owner or owner
        if len(src) == 0:
            raise ParameterError(owner, "broden" if src.owner else "data", src.name, "a dataset with at least one image")
        ds = src.ds
        cats = list(ds.categories if self.categories is None else self.categories)
        if any(c not in ds.categories for c in cats):
            raise ParameterError(owner, "categories", self.categories, f"a non-empty subset of {ds.categories}")
        layers = _check_layers(model, self.layers, owner)
        vocab, col_of = _vocabulary(ds, cats)
        plan = _Plan(layers, vocab, col_of, len(src), src.name, owner, src.max_elements, src.progress, root, cleanup)
        plan.store = self._store(model, src, layers, plan)
        if src.thresholds is not None:
            given = {}
            for name in layers:
                if name not in src.thresholds:
                    raise ParameterError(owner, "thresholds", src.thresholds,
                                         f"a threshold vector for every layer ({name!r} missing)")
                given[name] = torch.as_tensor(np.asarray(src.thresholds[name], dtype=np.float64))
            plan = replace(plan, thresholds=given, tolerance={k: torch.zeros_like(v) for k, v in given.items()})
        return plan

    def _store(self, model: ModelAdapter, src: _Broden, layers: list[str], plan: _Plan) -> ActivationFiles | None:
        """The activation files: in ``save_activations`` when given; else a temporary cache
        when ``cache`` is not False, the thresholds are computed here (pass 0 forwards
        everything) and the files fit :data:`~advinterp_dissect.activations.CACHE_BYTES`."""
        if src.save_activations is None and (src.cache is False or src.thresholds is not None):
            return None
        acts = model.activations(images_to_tensor(src.image(0)[None], model.device, model.dtype), layers)
        shapes = {name: tuple(_spatial(acts, name, model).shape[1:]) for name in layers}
        meta = {"dataset": src.name, "model": model.name, "n": plan.n}
        if src.save_activations is not None:
            plan.store_optional = False
            return ActivationFiles.create(src.save_activations, shapes, plan.n, model.dtype, meta)
        nbytes = ActivationFiles.nbytes(shapes, plan.n, model.dtype)
        if not ActivationFiles.fits(tempfile.gettempdir(), nbytes):
            return None
        folder = tempfile.mkdtemp(prefix="advinterp-activations-")
        store = ActivationFiles.create(folder, shapes, plan.n, model.dtype, meta)
        weakref.finalize(store, shutil.rmtree, folder, True)  # gone with the run, also when it fails
        return store

    def _partial(self, model: ModelAdapter, data: Any, indices: list[int], state: _Plan, step: int,
                 **context: Any) -> Result:
        if data is None:  # the probe's own data: the engine cannot know its length, so all of it
            src, indices = _source(state.root, self.resolution, state.owner), list(range(state.n))
        else:
            src, indices = _source(data, self.resolution, state.owner), sorted(int(i) for i in indices)
        with torch.no_grad():
            if step == 0:
                return self._ranges(model, src, indices, state)
            if step == 1:
                return self._histograms(model, src, indices, state)
            return self._tallies(model, src, indices, state)

    def _merge(self, partials: list[Result], state: _Plan, step: int, **context: Any) -> _Plan:
        if step == 2:
            return replace(state, tally=_sum_tallies(([state.tally] if state.tally else []) + list(partials)))
        if state.thresholds is not None:  # before pass 2 only when given: no quantile passes
            return state
        if step == 0:
            return replace(self._schedule(partials, state),
                           store_ready=state.store is not None and all(p.stored for p in partials))
        sketches = {name: ([state.sketch[name]] if state.sketch else [])
                    + [p.sketch[name] for p in partials if name in p.sketch] for name in state.layers}
        merged = {name: StreamingQuantile.merge(parts) for name, parts in sketches.items()}
        return replace(state, schedules=None, sketch=None,
                       thresholds={k: sq.quantile(1.0 - self.quantile) for k, sq in merged.items()},
                       tolerance={k: sq.width.clone() for k, sq in merged.items()})

    def _finish(self, model: ModelAdapter, state: _Plan, **context: Any) -> Dissection:
        try:
            t = state.tally
            out = {}
            for name in state.layers:
                lt = t.layers[name]
                out[name] = LayerDissection(
                    layer=name, thresholds=state.thresholds[name].double().cpu().numpy(),
                    threshold_tolerance=state.tolerance[name].double().cpu().numpy(),
                    intersection=lt.intersection, activation=lt.activation, truth=lt.truth,
                    unit_pixels=lt.unit_pixels, vocabulary=state.vocab, n_images=state.n,
                    label_size=tuple(int(s) for s in t.label_size),
                    activation_size=tuple(int(s) for s in lt.activation_size))
            return Dissection(out, model=model.name, dataset=state.dataset, quantile=float(self.quantile),
                              iou_threshold=float(self.iou_threshold), n_images=state.n)
        finally:
            if state.cleanup:
                shutil.rmtree(state.cleanup, ignore_errors=True)

    # ------------------------------------------------------------------ the passes
    def _activations(self, model: ModelAdapter, src: _Broden, indices: list[int], state: _Plan, step: int,
                     labels: bool = False):
        """As :meth:`_forward`, reading the activations of the shard's own images from the
        store when pass 0 wrote them (then only label PNGs are decoded, and ``rows`` is all)."""
        bs = self.batch_size
        groups: dict[int, list[int]] = {}
        for i in indices:
            groups.setdefault(i // bs, []).append(i)
        if not state.store_ready:
            for t, acts, rows, extra in self._forward(model, src, indices, state, step, labels):
                if state.store is not None and not state.store_optional and step == 2:
                    # save_activations with given thresholds (no pass 0): the files are written here
                    for name, a in acts.items():
                        state.store.write(name, groups[t], a[rows])
                yield t, acts, rows, extra
            return
        plan = [(t, groups[t], groups[t]) for t in sorted(groups)]
        dev = model.device
        decoded = (batch_loader(src, plan, labels=True, images=False, categories=state.vocab.categories,
                                col_of=state.col_of, workers=src.workers, pin=dev.type == "cuda")
                   if labels else iter([None] * len(plan)))
        for (t, own, _), got in zip(plan, progress_bar(decoded, desc=f"dissection {step + 1}/3: {_PASSES[step]}",
                                                       total=len(plan), disable=None if state.progress is None
                                                       else not state.progress)):
            acts = {name: torch.from_numpy(state.store.read(name, own)).to(dev, non_blocking=True)
                    for name in state.layers}
            yield t, acts, slice(None), None if got is None else got.labels

    def _forward(self, model: ModelAdapter, src: _Broden, indices: list[int], state: _Plan, step: int,
                 labels: bool = False, own: bool = False):
        """Per global batch that ``indices`` touch, in order: ``(t, {layer: (B, U, h, w)}
        activations of the *whole* batch, rows of the shard's images in it, the
        :class:`~advinterp_dissect.loader.LabelIndex` of those images when ``labels``)``.
        Decoding runs ahead in worker processes (:mod:`~advinterp_dissect.loader`)."""
        bs = self.batch_size
        groups: dict[int, list[int]] = {}
        for i in indices:
            groups.setdefault(i // bs, []).append(i)
        plan = [(t, list(range(t * bs, min(state.n, t * bs + bs))), groups[t]) for t in sorted(groups)]
        dev = model.device
        batches = batch_loader(src, plan, labels=labels, categories=state.vocab.categories, col_of=state.col_of,
                               workers=src.workers, pin=dev.type == "cuda")
        for (t, members, own_items), got in zip(plan, progress_bar(batches, desc=f"dissection {step + 1}/3: {_PASSES[step]}",
                                                             total=len(plan), disable=None if state.progress is None
                                                             else not state.progress)):
            x = got.images.to(dev, non_blocking=True).permute(0, 3, 1, 2).to(model.dtype).div_(255.0)
            acts = model.activations(x, state.layers)
            rows = slice(None) if len(own_items) == len(members) else [i - members[0] for i in own_items]
            # the (channels-last) batch makes the convolutions channels-last, faster on CPUs (measured:
            # synthetic-cnn layer4 1.4x); the per-unit reductions below want NCHW maps (the same ops on
            # channels-last maps were 1.6x slower, and over transposed copies 30x)
            yield (t, {name: _spatial(acts, name, model).contiguous() for name in state.layers}, rows,
                   own_items if own else got.labels)

    def _ranges(self, model, src, indices, state) -> RangePartial:
        if state.thresholds is not None:
            return RangePartial(torch.zeros(0, dtype=torch.long), {}, {}, {}, 0)
        first = indices == list(range(len(indices)))  # the shard that starts at item 0 counts as it goes
        batches, lo, hi, sketch = [], {n: [] for n in state.layers}, {n: [] for n in state.layers}, {}
        storing = state.store is not None
        compute = write = 0.0  # seconds decoding + forwarding, seconds writing activations
        clock = time.perf_counter()
        for t, acts, rows, own in self._forward(model, src, indices, state, 0, own=True):
            compute += time.perf_counter() - clock
            batches.append(t)
            if storing and state.store_optional and any(
                    tuple(a.shape[1:]) != state.store.shapes[name] for name, a in acts.items()):
                storing = False  # images of another size than item 0: the cache cannot hold them
            if storing:
                w0 = time.perf_counter()
                for name, a in acts.items():
                    state.store.write(name, own, a[rows])
                write += time.perf_counter() - w0
                # a cache pays when writing and reading back cost less than decoding and forwarding
                # again: give it up (the last pass recomputes) when writing alone takes half of that
                if state.store_optional and write > 0.5 * compute:
                    storing = False
            for name, a in acts.items():
                U = a.shape[1]
                vmin, vmax = StreamingQuantile.range_of_maps(a, "dissection")
                lo[name].append(vmin.cpu())
                hi[name].append(vmax.cpu())
                if first:
                    sq = sketch.setdefault(name, StreamingQuantile(U, bins=self.bins, device=model.device))
                    sq.extend(vmin, vmax)
                    if isinstance(rows, slice):
                        sq.add_maps(a, vmin, vmax)
                    else:
                        sq.add_maps(a[rows])
            clock = time.perf_counter()
        return RangePartial(torch.tensor(batches, dtype=torch.long), {k: torch.stack(v) for k, v in lo.items() if v},
                            {k: torch.stack(v) for k, v in hi.items() if v}, {k: sq.state() for k, sq in sketch.items()},
                            len(indices) if first and sketch else 0, storing)

    def _schedule(self, partials: list[RangePartial], state: _Plan) -> _Plan:
        T = math.ceil(state.n / self.batch_size)
        schedules = {}
        for name in state.layers:
            parts = [p for p in partials if name in p.vmin]
            U = parts[0].vmin[name].shape[1]
            vmin = torch.full((T, U), math.nan, dtype=torch.float64)
            vmax = vmin.clone()
            for p in parts:
                vmin[p.batches], vmax[p.batches] = p.vmin[name], p.vmax[name]
            missing = torch.isnan(vmin[:, 0]).nonzero().flatten().tolist()
            if missing:
                raise AdvinterpError(f"dissection: no shard of the ranges pass covered the batches {missing[:5]} "
                                     f"(items from {missing[0] * self.batch_size}); were partial results lost?")
            schedules[name] = GridSchedule.replay(vmin, vmax, self.bins)
        first = [p for p in partials if p.sketch_end]
        sketch, end = None, 0
        if first:
            end = first[0].sketch_end
            last = (end - 1) // self.batch_size
            sketch = {name: schedules[name].advance(StreamingQuantile.from_state(first[0].sketch[name]), last).state()
                      for name in state.layers}
        return replace(state, schedules=schedules, sketch=sketch, sketch_end=end)

    def _histograms(self, model, src, indices, state) -> SketchPartial:
        own = [i for i in indices if i >= state.sketch_end]
        if state.schedules is None or not own:
            return SketchPartial({})
        sketch: dict[str, StreamingQuantile] = {}
        last: dict[str, int] = {}
        for t, acts, rows, _ in self._activations(model, src, own, state, 1):
            for name, a in acts.items():
                schedule = state.schedules[name]
                if name in sketch:
                    schedule.advance(sketch[name], last[name], t)
                else:
                    sketch[name] = schedule.sketch(t, model.device)
                last[name] = t
                sketch[name].add_maps(a[rows])
        return SketchPartial({name: state.schedules[name].advance(sq, last[name]).state()
                              for name, sq in sketch.items()})

    def _tallies(self, model, src, indices, state) -> TallyPartial:
        dev, dtype = model.device, model.dtype
        vocab = state.vocab
        G, C = len(vocab.categories), len(vocab)
        catmat = torch.zeros(C, G, device=dev, dtype=dtype)
        if C:
            catmat[torch.arange(C, device=dev), torch.from_numpy(vocab.category).to(dev)] = 1.0
        tallies: dict[str, dict[str, torch.Tensor]] = {}
        act_size: dict[str, tuple[int, int]] = {}
        label_size = None
        for _, acts, rows, li in self._activations(model, src, indices, state, 2, labels=True):
            L, label_size = label_tensor(li, dev, dtype), li.size
            S = L.shape[1]
            pres = torch.from_numpy(li.present).to(dev)
            cat_b = catmat[pres]                                           # (P, G)
            truth_b = L.sum((0, 1)).double()
            for name, a in acts.items():
                B, U = a.shape[:2]
                act_size[name] = tuple(a.shape[-2:])
                if state.thresholds[name].shape != (U,):
                    raise ParameterError(state.owner, "thresholds", state.thresholds[name],
                                         f"{U} thresholds for layer {name!r}")
                t = tallies.setdefault(name, {
                    "inter": torch.zeros(U, C, dtype=torch.float64, device=dev),
                    "act": torch.zeros(U, G, dtype=torch.float64, device=dev),
                    "truth": torch.zeros(C, dtype=torch.float64, device=dev),
                    "pixels": torch.zeros(U, dtype=torch.float64, device=dev)})
                t["truth"].index_add_(0, pres, truth_b)
                thr = threshold_as(state.thresholds[name].to(dev), a.dtype)
                _tally_batch(a[rows], thr, L, pres, cat_b, t, label_size, state.max_elements)
        return TallyPartial({name: LayerTally(t["inter"].cpu().numpy(), t["act"].cpu().numpy(), t["truth"].cpu().numpy(),
                                              t["pixels"].cpu().numpy(), act_size[name])
                             for name, t in tallies.items()},
                            None if label_size is None else tuple(int(s) for s in label_size), len(indices))


def _tally_batch(a: torch.Tensor, thr: torch.Tensor, L: torch.Tensor, pres: torch.Tensor, cat_b: torch.Tensor,
                 t: dict[str, torch.Tensor], label_size: tuple[int, int], max_elements: int,
                 dense: bool | None = None) -> None:
    """Add one batch's counts to the layer's tallies ``t``: ``a`` ``(b, U, h, w)`` maps of the
    shard's images, ``thr`` ``(U,)`` thresholds in ``a``'s dtype, ``L`` ``(b, S, P)`` labels
    of the ``P`` columns ``pres``, ``cat_b`` ``(P, G)`` their categories.

    Only (image, unit) pairs whose raw map exceeds ``T_k`` somewhere are resized and counted
    (NetDissect-Lite's skip; exact, since the resize never exceeds a map's maximum): about
    15 % of the pairs of a deep layer at the 0.005 quantile. On the CPU the active pairs are
    gathered (resized and thresholded together, then one image's pairs times its labels per
    product); on a GPU the batch stays
    dense (the skip as a mask) so that nothing waits for the host. ``dense``: force either
    path (None: by device); both give the same counts (tests/test_dissect_loader.py).
    """
    b, U = a.shape[:2]
    S = L.shape[1]
    dtype = L.dtype
    active = a.amax((2, 3)) > thr[None, :]                                # (b, U) NetDissect's skip
    if dense if dense is not None else a.device.type != "cpu":
        chunk = max(1, max_elements // max(1, b * S))
        for u0 in range(0, U, chunk):  # memory chunks of units, not one unit at a time
            u1 = min(U, u0 + chunk)
            up = resize_maps(a[:, u0:u1], label_size)
            M = ((up > thr[u0:u1, None, None]) & active[:, u0:u1, None, None]).flatten(2).to(dtype)  # (b, u, S)
            size = M.sum(2)                                                   # (b, u)
            inter = torch.bmm(M, L)                                           # (b, u, P)
            gate = torch.matmul(inter, cat_b) > 0                             # (b, u, G)
            t["act"][u0:u1] += (size.double()[..., None] * gate).sum(0)
            t["inter"][u0:u1].index_add_(1, pres, inter.double().sum(0))
            t["pixels"][u0:u1] += size.double().sum(0)
        return
    pairs = active.flatten().nonzero().flatten()                             # sorted by image, then unit
    if not len(pairs):
        return
    bi, ui = pairs // U, pairs % U
    bounds = [0] + torch.bincount(bi, minlength=b).cumsum(0).tolist()        # image i's pairs: bounds[i:i + 2]
    maps = a.reshape(b * U, *a.shape[2:])
    chunk = max(1, max_elements // max(1, S, L.shape[2]))
    inter_u = torch.zeros(U, L.shape[2], dtype=torch.float64, device=a.device)
    for s0 in range(0, len(pairs), chunk):  # memory chunks of active pairs, across images
        s1 = min(len(pairs), s0 + chunk)
        u = ui[s0:s1]
        up = resize_maps(maps.index_select(0, pairs[s0:s1])[None], label_size)[0]  # (n, sh, sw)
        M = (up > thr[u, None, None]).flatten(1).to(dtype)                          # (n, S)
        size = M.sum(1).double()                                                     # (n,)
        inter = torch.empty(s1 - s0, L.shape[2], dtype=dtype, device=a.device)      # (n, P)
        for img in range(int(bi[s0]), int(bi[s1 - 1]) + 1):                          # each image's labels
            i0, i1 = max(bounds[img], s0) - s0, min(bounds[img + 1], s1) - s0
            if i1 > i0:
                torch.mm(M[i0:i1], L[img], out=inter[i0:i1])
        gate = (inter @ cat_b) > 0                                                    # (n, G)
        t["act"].index_add_(0, u, size[:, None] * gate)
        inter_u.index_add_(0, u, inter.double())
        t["pixels"].index_add_(0, u, size)
    t["inter"].index_add_(1, pres, inter_u)


def _sum_tallies(parts: list[TallyPartial]) -> TallyPartial:
    """The tallies of consecutive shards (in order): counts add (integers in float64, exact);
    the sizes are the last shard's."""
    layers: dict[str, LayerTally] = {}
    label_size, n = None, 0
    for p in parts:
        n += p.n_images
        label_size = p.label_size if p.label_size is not None else label_size
        for name, lt in p.layers.items():
            if name in layers:
                acc = layers[name]
                lt = LayerTally(acc.intersection + lt.intersection, acc.activation + lt.activation,
                                acc.truth + lt.truth, acc.unit_pixels + lt.unit_pixels, lt.activation_size)
            layers[name] = lt
    return TallyPartial(layers, label_size, n)


# ---------------------------------------------------------------------------- the function
def dissect(model: Any, broden: Any, layers: Sequence[str] | str | None = None, *, quantile: float = 0.005,
            iou_threshold: float = 0.04, batch_size: int = 32, bins: int = 2048,
            categories: Sequence[str] | None = None, resolution: Any = None,
            thresholds: Mapping[str, Any] | None = None, progress: bool | None = None,
            max_elements: int = _MAX_ELEMENTS, shard_size: int | None = None,
            workers: int | None = None, save_activations: str | Path | None = None,
            cache: bool | None = None) -> Dissection:
    """Dissect ``layers`` of ``model`` over a Broden dataset (module docstrings; eq. 7).

    The :class:`DissectionProbe` with these parameters, run over ``broden``; the same
    result for every ``shard_size``.

    Args:
        model: :class:`~advinterp.ModelAdapter` (or ``nn.Module``); never changed.
        broden: a :class:`~advinterp.datasets.broden.BrodenDataset` or a Broden folder.
            Its images are fed to the model as they are (use ``resolution`` to resize).
        layers: layer names (default: ``model.feature_layers()``), each with a spatial
            ``(N, U, h, w)`` output.
        quantile: top quantile of each unit's activations defining ``T_k`` (default
            0.005, NetDissect's; the PSE paper's text says 5 %: pass 0.05).
        iou_threshold: detector threshold kept in the result for its summaries (0.04).
        batch_size: images per forward pass in every pass (default 32).
        bins: histogram bins of the streaming quantile (default 2048; tolerance = one bin).
        categories: concept categories to score (default: all of the dataset's).
        resolution: when ``broden`` is a path: resize images and labels to this size
            (int or ``(h, w)``, default None: as stored).
        thresholds: ``{layer: (U,) T_k}`` to skip the quantile passes (e.g. another
            dissection's :meth:`Dissection.thresholds`).
        progress: show progress bars (default: when on a terminal).
        max_elements: bound on ``batch * units_chunk * sh * sw`` per mask tensor (2**22).
        shard_size: items per shard (default None: one shard).
        workers: processes decoding images and label PNGs ahead of the forward (default
            None: ``min(4, CPUs // 2)`` with four CPUs or more, else none; 0: in this
            process). Results do not depend on it.
        save_activations: a folder to keep the tallied activations in, one ``<layer>.npy``
            ``(N, U, h, w)`` per layer (raw maps, dataset order) and ``activations.json``
            (:mod:`~advinterp_dissect.activations`; read with ``load_activations``).
        cache: keep the activations on disk between the first and the last pass (default
            None: when they fit ``CACHE_BYTES`` and the disk; False: recompute them). Results
            do not depend on it.

    Returns:
        :class:`Dissection`.
    """
    owner = "dissect"
    if isinstance(max_elements, bool) or not isinstance(max_elements, int) or max_elements < 1:
        raise ParameterError(owner, "max_elements", max_elements, "a positive integer")
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 0):
        raise ParameterError(owner, "workers", workers, "None or a non-negative integer")
    probe = DissectionProbe(layers=[layers] if isinstance(layers, str) else layers, quantile=quantile,
                            iou_threshold=iou_threshold, batch_size=batch_size, bins=bins,
                            categories=[categories] if isinstance(categories, str) else categories)
    src = _Broden(open_broden(broden, resolution=resolution, owner=owner), thresholds=thresholds,
                  max_elements=max_elements, progress=progress, owner=owner, workers=workers,
                  save_activations=save_activations, cache=cache)
    return probe.run(as_adapter(model), src, shard_size=shard_size)
