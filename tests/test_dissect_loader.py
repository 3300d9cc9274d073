"""advinterp-dissect's data path: the parallel batch loader (loader.py), the activation files
(activations.py), StreamingQuantile.add_maps and the picklable errors that carry a worker's
failure to the caller.

Every check compares against an independent, serial computation: batches decoded by hand,
activations computed by hand with ``model.activations``, ``StreamingQuantile.add`` on the
transposed maps, and dissections run without workers / cache / shards.
"""
from __future__ import annotations

import json
import pickle
import shutil

import numpy as np
import pytest
import torch

import advinterp
from advinterp.datasets.broden import BrodenDataset, export_broden
from advinterp.datasets.synthetic import SyntheticWorld
from advinterp.exceptions import (AdvinterpError, DatasetFormatError, MissingDependencyError, ParameterError,
                                  ResultFileError, UnknownComponentError)
from advinterp_dissect import dissect
from advinterp_dissect import activations as act_mod
from advinterp_dissect import loader as loader_mod
from advinterp_dissect import probe as probe_mod
from advinterp_dissect import quantile as quantile_mod
from advinterp_dissect.activations import ActivationFiles, load_activations
from advinterp_dissect.dissection import _vocabulary
from advinterp_dissect.loader import DecodedBatch, LabelIndex, batch_loader, default_workers, label_index, label_tensor
from advinterp_dissect.probe import _Broden
from advinterp_dissect.quantile import StreamingQuantile

N = 22           # images of the export
BS = 4           # dissect batch size: global batches of 4, ..., 4, 2
LAYERS = ["layer1", "layer4"]
TALLIES = ("intersection", "activation", "truth", "unit_pixels", "thresholds", "threshold_tolerance")
MISSING = "synthetic/val_000006_object.png"  # the label PNG deleted from the broken copy


# ---------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return export_broden(tmp_path_factory.mktemp("ld") / "b", SyntheticWorld(size=32), n=N, split="val")


@pytest.fixture(scope="module")
def ds(root):
    return BrodenDataset(root)


@pytest.fixture(scope="module")
def broken_root(root, tmp_path_factory):
    """A copy of the export with one label PNG (of item 6, in global batch 1) deleted."""
    copy = tmp_path_factory.mktemp("ld_broken") / "b"
    shutil.copytree(root, copy)
    (copy / "images" / MISSING).unlink()
    return copy


@pytest.fixture(scope="module")
def model():
    return advinterp.get_model("synthetic-cnn")


@pytest.fixture(scope="module")
def vocab(ds):
    cats = list(ds.categories)
    _, col_of = _vocabulary(ds, cats)
    return cats, col_of


@pytest.fixture(scope="module")
def baseline(model, root):
    """The reference dissection: no workers, no cache, one shard."""
    return dissect(model, root, LAYERS, batch_size=BS, workers=0, cache=False, progress=False)


# six global batches of 4 (the last of 2); the shard's own items are all, a tail, one,
# a non-contiguous pair, a contiguous pair and all of the short last batch
GROUPS = [(0, [0, 1, 2, 3], [0, 1, 2, 3]),
          (1, [4, 5, 6, 7], [6, 7]),
          (2, [8, 9, 10, 11], [9]),
          (3, [12, 13, 14, 15], [12, 15]),
          (4, [16, 17, 18, 19], [17, 18]),
          (5, [20, 21], [20, 21])]


def _assert_same_labels(a: LabelIndex, b: LabelIndex) -> None:
    assert torch.equal(a.comp, b.comp)
    np.testing.assert_array_equal(a.present, b.present)
    assert torch.equal(a.scalar_b, b.scalar_b) and torch.equal(a.scalar_j, b.scalar_j)
    assert a.size == b.size


def _assert_same_batches(got: list[DecodedBatch], ref: list[DecodedBatch]) -> None:
    assert [g.t for g in got] == [r.t for r in ref]
    for g, r in zip(got, ref):
        if r.images is None:
            assert g.images is None
        else:
            assert g.images.dtype == torch.uint8 and torch.equal(g.images, r.images)
        if r.labels is None:
            assert g.labels is None
        else:
            _assert_same_labels(g.labels, r.labels)


def _serial(ds, groups, cats, col_of, labels, images, at=lambda i: i):
    """The batches decoded by hand, one item after the other, in this process."""
    out = []
    for t, members, own in groups:
        ims = torch.from_numpy(np.stack([ds.image(at(i)) for i in members])) if images else None
        li = label_index([ds[at(i)] for i in own], ds, cats, col_of) if labels else None
        out.append(DecodedBatch(t, ims, li))
    return out


# ---------------------------------------------------------------------------- 1. the loader
@pytest.mark.parametrize("labels,images", [(False, True), (True, True), (True, False)],
                         ids=["images", "images+labels", "labels-only"])
def test_parallel_loader_gives_the_serial_batches_in_order(ds, vocab, labels, images):
    cats, col_of = vocab
    src = _Broden(ds)
    kw = dict(labels=labels, images=images, categories=cats, col_of=col_of)
    par = list(batch_loader(src, GROUPS, workers=2, prefetch=1, **kw))
    ser = list(batch_loader(src, GROUPS, workers=0, **kw))
    ref = _serial(ds, GROUPS, cats, col_of, labels, images)
    _assert_same_batches(par, ser)
    _assert_same_batches(par, ref)
    for g, (t, members, own) in zip(par, GROUPS):
        if images:
            assert tuple(g.images.shape) == (len(members), 32, 32, 3)
        if labels:
            assert g.labels.comp.shape[0] == len(own)


def test_loader_follows_a_subsets_index(ds, vocab):
    """``_Broden`` over a reordered subset: item ``i`` of the loader is item ``index[i]`` of the dataset."""
    cats, col_of = vocab
    index = [N - 1 - i for i in range(N)]
    src = _Broden(ds, index)
    par = list(batch_loader(src, GROUPS, labels=True, categories=cats, col_of=col_of, workers=2))
    _assert_same_batches(par, _serial(ds, GROUPS, cats, col_of, True, True, at=lambda i: index[i]))


def test_label_tensor_marks_exactly_the_labels_of_each_pixel(ds, vocab):
    """label_tensor(label_index(...)) against a dense (B, S, vocabulary) table built by hand."""
    cats, col_of = vocab
    own = [3, 6, 7, 12]
    items = [ds[i] for i in own]
    li = label_index(items, ds, cats, col_of)
    C = int(col_of.max()) + 1
    sh, sw = li.size
    dense = np.zeros((len(items), sh * sw, C), np.float32)
    for b, it in enumerate(items):
        for c in cats:
            for layer in it.pixel_labels[c]:
                cols = col_of[layer.reshape(-1)]
                s = np.nonzero(cols >= 0)[0]
                dense[b, s, cols[s]] = 1
            for num in it.image_labels[c]:
                if num < len(col_of) and col_of[num] >= 0:
                    dense[b, :, col_of[num]] = 1
    assert dense.sum() > 0 and len(li.scalar_b) > 0  # pixel and image-level labels both present
    L = label_tensor(li, torch.device("cpu"), torch.float32).numpy()
    np.testing.assert_array_equal(L, dense[:, :, li.present])
    outside = np.setdiff1d(np.arange(C), li.present)
    assert not dense[:, :, outside].any()


def test_default_workers(monkeypatch):
    monkeypatch.setattr(loader_mod.os, "sched_getaffinity", lambda pid: set(range(16)), raising=False)
    assert default_workers(10) == 4 and default_workers(3) == 4 and default_workers(2) == 0
    monkeypatch.setattr(loader_mod.os, "sched_getaffinity", lambda pid: set(range(4)), raising=False)
    assert default_workers(10) == 2
    monkeypatch.setattr(loader_mod.os, "sched_getaffinity", lambda pid: set(range(3)), raising=False)
    assert default_workers(10) == 0


# ---------------------------------------------------------------------------- 2. errors from workers
@pytest.mark.parametrize("workers", [0, 2])
@pytest.mark.parametrize("images", [True, False], ids=["images+labels", "labels-only"])
def test_a_missing_label_png_raises_dataset_format_error(broken_root, vocab, workers, images):
    cats, col_of = vocab
    src = _Broden(BrodenDataset(broken_root))
    got = []
    with pytest.raises(DatasetFormatError, match="val_000006_object.png") as info:
        for b in batch_loader(src, GROUPS, labels=True, images=images, categories=cats, col_of=col_of,
                              workers=workers):
            got.append(b.t)
    assert type(info.value) is DatasetFormatError
    assert "is missing" in str(info.value)
    assert got == [0]  # batch 0 arrived in order; batch 1 (item 6) fails
    # images alone do not read the labels: no error
    assert [b.t for b in batch_loader(src, GROUPS, workers=workers)] == [t for t, _, _ in GROUPS]


def test_a_missing_label_png_fails_a_dissection_with_workers(model, broken_root):
    for workers, cache in ((2, None), (2, False), (0, False)):
        with pytest.raises(DatasetFormatError, match="val_000006_object.png"):
            dissect(model, broken_root, LAYERS, batch_size=BS, workers=workers, cache=cache, progress=False)


def test_a_missing_image_png_raises_from_a_worker(model, root, tmp_path):
    copy = tmp_path / "b"
    shutil.copytree(root, copy)
    (copy / "images" / "synthetic" / "val_000013.png").unlink()
    with pytest.raises(DatasetFormatError, match="val_000013.png"):
        list(batch_loader(_Broden(BrodenDataset(copy)), GROUPS, workers=2))
    with pytest.raises(DatasetFormatError, match="val_000013.png"):
        dissect(model, copy, LAYERS, batch_size=BS, workers=2, progress=False)


def test_a_parameter_error_from_a_worker_keeps_its_type_and_attributes(root, tmp_path):
    """Images of two sizes in one batch: the worker's ParameterError (a constructor of five
    arguments, so unpicklable without AdvinterpError.__reduce__) reaches the caller whole."""
    from PIL import Image

    copy = tmp_path / "b"
    shutil.copytree(root, copy)
    png = copy / "images" / "synthetic" / "val_000009.png"
    with Image.open(png) as im:
        im.convert("RGB").resize((16, 16)).save(png)
    index = (copy / "index.csv").read_text().splitlines()
    row = next(k for k, line in enumerate(index) if line.startswith("synthetic/val_000009.png,"))
    cells = index[row].split(",")
    cells[2:4] = ["16", "16"]  # ih, iw
    index[row] = ",".join(cells)
    (copy / "index.csv").write_text("\n".join(index) + "\n")
    src = _Broden(BrodenDataset(copy))
    for workers in (0, 2):
        with pytest.raises(ParameterError, match=r"images 8\.\.11 differ in size") as info:
            list(batch_loader(src, GROUPS, workers=workers))
        assert type(info.value) is ParameterError
        assert (info.value.owner, info.value.name, info.value.value) == ("BrodenDataset", "resolution", None)


# ---------------------------------------------------------------------------- 3. identical results
def _assert_same_dissection(a, b):
    for name in LAYERS:
        for f in TALLIES:
            np.testing.assert_array_equal(getattr(a[name], f), getattr(b[name], f), err_msg=f"{name} {f}")
        assert a[name].label_size == b[name].label_size and a[name].activation_size == b[name].activation_size
    assert a.n_images == b.n_images == N


@pytest.fixture
def reads(monkeypatch):
    """Counts the rows read back from activation files (0: every pass forwarded the model)."""
    seen = []
    orig = ActivationFiles.read

    def spy(self, layer, rows):
        seen.append(len(rows))
        return orig(self, layer, rows)

    monkeypatch.setattr(act_mod.ActivationFiles, "read", spy)
    return seen


def test_the_baseline_is_not_trivial(baseline):
    for name in LAYERS:
        assert baseline[name].intersection.sum() > 0 and baseline[name].unit_pixels.sum() > 0
        assert np.isfinite(baseline[name].thresholds).all()


def test_workers_do_not_change_the_result(model, root, baseline, reads):
    _assert_same_dissection(dissect(model, root, LAYERS, batch_size=BS, workers=2, cache=False, progress=False),
                            baseline)
    assert reads == []


def test_saved_activations_give_the_result_of_recomputing_them(model, root, baseline, reads, tmp_path):
    d = dissect(model, root, LAYERS, batch_size=BS, workers=0, save_activations=tmp_path / "acts", progress=False)
    _assert_same_dissection(d, baseline)
    assert sum(reads) == N * len(LAYERS)  # the tally pass read every row of every layer back


class _Clock:
    """A stand-in for probe.py's ``time`` (its cache cost test): time stands still unless a test
    moves it, whatever the machine's load."""

    def __init__(self):
        self.now = 0.0

    def perf_counter(self):
        return self.now


def test_the_automatic_cache_gives_the_result_of_recomputing(model, root, baseline, reads, monkeypatch):
    monkeypatch.setattr(probe_mod, "time", _Clock())  # writing costs nothing: the cache is kept
    d = dissect(model, root, LAYERS, batch_size=BS, workers=2, cache=None, progress=False)
    _assert_same_dissection(d, baseline)
    assert sum(reads) == N * len(LAYERS)  # the tally pass read the cache instead of forwarding


def test_a_slow_cache_is_given_up_with_the_same_result(model, root, baseline, reads, monkeypatch):
    slow = _Clock()
    orig = ActivationFiles.write

    def write(self, layer, rows, maps):  # every write takes as long as a forward and more
        slow.now += 100.0
        return orig(self, layer, rows, maps)

    monkeypatch.setattr(probe_mod, "time", slow)
    monkeypatch.setattr(act_mod.ActivationFiles, "write", write)
    d = dissect(model, root, LAYERS, batch_size=BS, workers=0, cache=None, progress=False)
    _assert_same_dissection(d, baseline)
    assert reads == []  # given up after the first batch: the tally pass forwarded again


def test_shards_with_the_cache_equal_one_shard(model, root, baseline, reads, tmp_path):
    # shard_size 7 is not a multiple of the batch size: shards share their boundary batches
    for kw in (dict(cache=None), dict(save_activations=tmp_path / "acts")):
        reads.clear()
        d = dissect(model, root, LAYERS, batch_size=BS, workers=0, shard_size=7, progress=False, **kw)
        _assert_same_dissection(d, baseline)
    # save_activations: every row read back by the tally pass, and the rows of the shards after the
    # first (items 7.., whose values the first shard's sketch lacks) by the histogram pass
    assert sum(reads) == (N + N - 7) * len(LAYERS)
    np.testing.assert_array_equal(load_activations(tmp_path / "acts", "layer4"),
                                  _reference_activations(model, BrodenDataset(root), "layer4", BS))


# ---------------------------------------------------------------------------- 4. save_activations
def _reference_activations(model, ds, layer, batch_size):
    """``layer``'s maps of every item, forwarded by hand in the global batches of ``dissect``."""
    out = []
    with torch.no_grad():
        for b in range(0, len(ds), batch_size):
            imgs = [ds.image(i) for i in range(b, min(len(ds), b + batch_size))]
            x = torch.from_numpy(np.stack(imgs)).permute(0, 3, 1, 2).float().div(255)
            out.append(model.activations(x, [layer])[layer].contiguous())
    return torch.cat(out).numpy()


def test_saved_activations_equal_the_models_maps(model, root, ds, tmp_path):
    folder = tmp_path / "acts"
    dissect(model, root, LAYERS, batch_size=BS, workers=2, save_activations=folder, progress=False)
    manifest = json.loads((folder / "activations.json").read_text())
    assert sorted(manifest["layers"]) == sorted(LAYERS)
    for name in LAYERS:
        saved = load_activations(folder, name)
        ref = _reference_activations(model, ds, name, BS)
        assert saved.shape == ref.shape and saved.dtype == ref.dtype == np.float32
        assert manifest["layers"][name]["shape"] == list(ref.shape)
        assert (folder / manifest["layers"][name]["file"]).is_file()
        np.testing.assert_array_equal(saved, ref)  # bit for bit: the same batch composition
        assert np.abs(saved).sum() > 0
        with pytest.raises(ValueError):  # read-only memmap
            saved[0, 0, 0, 0] = 1.0
    assert manifest["dtype"] == np.dtype(np.float32).str and manifest["n"] == N


def test_load_activations_errors(tmp_path):
    with pytest.raises(ParameterError, match=r"save_activations=folder.*activations\.json"):
        load_activations(tmp_path, "layer4")
    ActivationFiles.create(tmp_path / "a", {"layer1": (2, 3, 3)}, 4, torch.float32)
    with pytest.raises(ParameterError, match=r"layer='layer4'.*\['layer1'\]"):
        load_activations(tmp_path / "a", "layer4")


def test_saved_activations_with_given_thresholds(model, root, ds, baseline, tmp_path):
    folder = tmp_path / "acts"
    d = dissect(model, root, LAYERS, batch_size=BS, workers=0, save_activations=folder, progress=False,
                thresholds=baseline.thresholds())
    for name in LAYERS:
        np.testing.assert_array_equal(d[name].intersection, baseline[name].intersection)
    np.testing.assert_array_equal(load_activations(folder, "layer4"),
                                  _reference_activations(model, ds, "layer4", BS))


# ---------------------------------------------------------------------------- 5. add_maps
def _random_batches(seed):
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(6):
        m = torch.randn(3 + i % 2, 5, 4, 3, generator=g) * (1 + i)
        m[:, 1] = torch.relu(m[:, 1])              # ReLU zeros: ties at the minimum in every batch
        m[:, 2] = torch.round(m[:, 2])             # ties elsewhere
        m[:, 3] = m[:, 3] - 3.0 * (i == 4)         # a new, lower minimum late (n_min restarts)
        m[:, 4] = 0.5 if i < 2 else m[:, 4]        # a constant start (tiny first width, many doublings)
        out.append(m)
    return out


def _state(sq):
    s = sq.state()
    return s.counts, s.lo, s.width, s.min, s.max, s.n_min, s.count, s.started


def _assert_same_state(a, b):
    for x, y, f in zip(_state(a), _state(b), ("counts", "lo", "width", "min", "max", "n_min", "count", "started")):
        if isinstance(x, torch.Tensor):
            assert x.dtype == y.dtype and torch.equal(x, y), f
        else:
            assert x == y, f


@pytest.mark.parametrize("chunk", [1 << 23, 7], ids=["one-chunk", "many-chunks"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_add_maps_counts_as_add_on_the_transposed_values(monkeypatch, chunk, dtype):
    monkeypatch.setattr(quantile_mod, "_CHUNK", chunk)
    U, bins = 5, 16
    a, b, c = StreamingQuantile(U, bins), StreamingQuantile(U, bins), StreamingQuantile(U, bins)
    for k, maps in enumerate(_random_batches(0)):
        maps = maps.to(dtype)
        if k == 3:
            maps = maps.contiguous(memory_format=torch.channels_last)  # strides do not matter
        flat = maps.transpose(0, 1).reshape(U, -1)
        vmin, vmax = StreamingQuantile.range_of_maps(maps)
        rmin, rmax = StreamingQuantile.range_of(flat)
        assert vmin.dtype == rmin.dtype == torch.float64
        assert torch.equal(vmin, rmin) and torch.equal(vmax, rmax)
        for sq in (a, b, c):
            sq.extend(vmin, vmax)
        a.add(flat)
        b.add_maps(maps)
        c.add_maps(maps, vmin, vmax)
    assert a.count == sum(m.shape[0] * 12 for m in _random_batches(0))
    assert int(a.n_min[1]) > 0 and bool((a.width > a.width.min()).any())
    _assert_same_state(b, a)
    _assert_same_state(c, a)
    for p in (0.0, 0.3, 0.995, 1.0):
        assert torch.equal(b.quantile(p), a.quantile(p))


def test_add_maps_on_1d_maps_and_rows():
    """(B, U, L) maps, and a subset of rows (as a shard's own images of a batch)."""
    g = torch.Generator().manual_seed(3)
    U = 4
    a, b = StreamingQuantile(U, 8), StreamingQuantile(U, 8)
    for _ in range(3):
        maps = torch.relu(torch.randn(6, U, 10, generator=g))
        rows = [0, 2, 5]
        vmin, vmax = StreamingQuantile.range_of_maps(maps[rows])
        a.extend(vmin, vmax)
        b.extend(vmin, vmax)
        a.add(maps[rows].transpose(0, 1).reshape(U, -1))
        b.add_maps(maps[rows])
    _assert_same_state(b, a)


def test_add_maps_and_range_of_maps_errors():
    sq = StreamingQuantile(3, 8)
    with pytest.raises(ParameterError, match="extend"):
        sq.add_maps(torch.zeros(2, 3, 2, 2))
    sq.extend(torch.zeros(3, dtype=torch.float64), torch.ones(3, dtype=torch.float64))
    with pytest.raises(ParameterError, match=r"\(B, 3, \.\.\.\)"):
        sq.add_maps(torch.zeros(2, 4, 2, 2))
    bad = torch.zeros(2, 3, 2, 2)
    bad[1, 2, 0, 1] = float("nan")
    with pytest.raises(ParameterError, match="finite"):
        StreamingQuantile.range_of_maps(bad)
    sq.add_maps(torch.zeros(0, 3, 2, 2))  # empty: nothing counted
    assert sq.count == 0


# ---------------------------------------------------------------------------- 6. ActivationFiles
def test_activation_files_rows_round_trip_in_any_order(tmp_path):
    g = torch.Generator().manual_seed(5)
    shapes = {"layer1": (3, 2, 2), "block.0/conv": (2, 4, 3)}
    n = 12
    files = ActivationFiles.create(tmp_path / "f", shapes, n, torch.float32, {"dataset": "x"})
    full = {k: torch.randn(n, *s, generator=g) for k, s in shapes.items()}
    order = [[7, 8, 2, 3, 4], [11], [0, 5, 1], [10, 9, 6]]   # runs, a lone row, descending rows
    for name in shapes:
        for rows in order:
            files.write(name, rows, full[name][rows])
    clone = pickle.loads(pickle.dumps(files))  # as another process reopens them
    for name in shapes:
        for rows in ([5, 6, 7, 8], [11, 0, 3, 2, 1], list(range(n)), [4]):
            np.testing.assert_array_equal(clone.read(name, rows), full[name][rows].numpy())
        on_disk = load_activations(tmp_path / "f", name)
        assert on_disk.shape == (n, *shapes[name])  # a valid .npy, rows in item order
        np.testing.assert_array_equal(on_disk, full[name].numpy())
    manifest = json.loads((tmp_path / "f" / "activations.json").read_text())
    assert manifest["dataset"] == "x" and manifest["layers"]["block.0/conv"]["file"] == "block.0_conv.npy"


def test_activation_files_are_sized_at_creation_and_a_short_file_raises(tmp_path):
    shapes = {"l": (2, 3, 3)}
    files = ActivationFiles.create(tmp_path, shapes, 6, torch.float64)
    path = tmp_path / "l.npy"
    row = 2 * 3 * 3 * 8
    assert path.stat().st_size == files.offsets["l"] + 6 * row  # "sizes the files"
    assert ActivationFiles.nbytes(shapes, 6, torch.float64) == 6 * row
    maps = torch.arange(2 * row // 8, dtype=torch.float64).reshape(2, 2, 3, 3)
    files.write("l", [1, 2], maps)
    np.testing.assert_array_equal(files.read("l", [1, 2]), maps.numpy())
    with open(path, "r+b") as f:  # a short file: the rows from 3 on are not there
        f.truncate(files.offsets["l"] + 3 * row)
    np.testing.assert_array_equal(files.read("l", [2, 1]), maps.numpy()[[1, 0]])
    with pytest.raises(ParameterError, match=r"l\.npy is short"):
        files.read("l", [2, 3])
    with pytest.raises(ParameterError, match=r"short"):
        files.read("l", [5])


def test_activation_files_fit_the_budget(tmp_path):
    assert ActivationFiles.fits(tmp_path, 1000, budget=1000)
    assert not ActivationFiles.fits(tmp_path, 1001, budget=1000)
    assert not ActivationFiles.fits(tmp_path / "missing" / "folder", 10)


# ---------------------------------------------------------------------------- 7. picklable errors
def _round_trip(e):
    back = pickle.loads(pickle.dumps(e))
    assert type(back) is type(e) and str(back) == str(e) and back.args == e.args
    assert isinstance(back, AdvinterpError)
    return back


def test_errors_round_trip_through_pickle():
    e = _round_trip(ParameterError("owner", "name", [1, 2], "something else", hint="Do this."))
    assert (e.owner, e.name, e.value, e.expected) == ("owner", "name", [1, 2], "something else")
    assert isinstance(e, ValueError) and str(e).endswith("Do this.")
    e = _round_trip(DatasetFormatError("/data/x.png is missing"))
    assert isinstance(e, ValueError)
    e = _round_trip(UnknownComponentError("model", "synthetc-cnn", ["synthetic-cnn", "resnet18"],
                                          {"plugin": "no torch"}))
    assert (e.kind, e.name, e.known) == ("model", "synthetc-cnn", ["resnet18", "synthetic-cnn"])
    assert isinstance(e, KeyError) and "Did you mean 'synthetic-cnn'" in str(e)
    e = _round_trip(MissingDependencyError("pkg", "feature"))
    assert (e.package, e.feature) == ("pkg", "feature")
    e = _round_trip(ResultFileError("truncated", path="/r.json"))
    assert (e.path, e.reason) == ("/r.json", "truncated")
    with pytest.raises(UnknownComponentError):  # and they can be raised again
        raise pickle.loads(pickle.dumps(UnknownComponentError("probe", "x", [])))


# ---------------------------------------------------------------------------- the two tally paths
@pytest.mark.parametrize("label_size", [(12, 12), (6, 10), (5, 4)], ids=["enlarge", "mixed", "shrink"])
def test_dense_and_gathered_tallies_count_the_same(label_size):
    """The GPU path (dense, NetDissect's skip as a mask) and the CPU path (active pairs
    gathered) of one batch give identical tallies; forcing the dense path on the CPU here,
    and a skip that matters (most (image, unit) pairs below T_k)."""
    from advinterp_dissect.probe import _tally_batch

    g = torch.Generator().manual_seed(5)
    b, U, P, G = 5, 7, 6, 3
    a = torch.relu(torch.randn(b, U, 6, 6, generator=g)) * 0.2         # below T = 1 everywhere ...
    for _ in range(12):                                                 # ... but for a few peaks
        i, u, r, c = (int(torch.randint(0, n, (1,), generator=g)) for n in (b, U, 6, 6))
        a[i, u, r, c] = 4.0 + float(torch.rand(1, generator=g))
    a[0, 0, :2, :2] = 1.0                                               # ties at T: M is strict
    thr = torch.ones(U)
    S = label_size[0] * label_size[1]
    lab = torch.randint(0, P + 1, (b, S), generator=g)                     # 0 = no label
    L = torch.zeros(b, S, P + 1).scatter_(2, lab[..., None], 1.0)[:, :, 1:]
    pres = torch.tensor([0, 2, 3, 5, 6, 8])
    cat_b = torch.zeros(P, G)
    cat_b[torch.arange(P), torch.tensor([0, 0, 1, 1, 2, 2])] = 1.0
    active = (a.amax((2, 3)) > thr[None]).float().mean()
    assert 0 < active < 0.5
    out = []
    for dense in (True, False):
        t = {"inter": torch.zeros(U, 9, dtype=torch.float64), "act": torch.zeros(U, G, dtype=torch.float64),
             "truth": torch.zeros(9, dtype=torch.float64), "pixels": torch.zeros(U, dtype=torch.float64)}
        _tally_batch(a, thr, L, pres, cat_b, t, label_size, max_elements=50, dense=dense)  # tiny chunks
        out.append(t)
    for k in ("inter", "act", "pixels"):
        assert torch.equal(out[0][k], out[1][k]), k
    assert out[0]["pixels"].sum() > 0


def test_batches_of_different_image_sizes_are_not_cached_wrongly(tmp_path):
    """Item 0 fixes the cache's map shapes; a later global batch of another image size gives
    maps of another size: the cache is given up (results equal to no cache), an explicit
    save_activations refuses with the fix, and ActivationFiles.write checks shapes."""
    root = tmp_path / "mixed"
    export_broden(root, SyntheticWorld(size=32), n=4, split="val")
    first = (root / "index.csv").read_text().splitlines()
    export_broden(root, SyntheticWorld(size=24), n=4, split="val", start=4)   # rewrites index.csv
    second = (root / "index.csv").read_text().splitlines()
    (root / "index.csv").write_text("\n".join(first + second[1:]) + "\n")
    model = advinterp.get_model("synthetic-cnn")
    kw = dict(batch_size=4, workers=0, progress=False)
    plain = dissect(model, root, ["layer4"], cache=False, **kw)["layer4"]
    cached = dissect(model, root, ["layer4"], **kw)["layer4"]
    np.testing.assert_array_equal(cached.intersection, plain.intersection)
    np.testing.assert_array_equal(cached.unit_pixels, plain.unit_pixels)
    with pytest.raises(ParameterError, match="resolution="):
        dissect(model, root, ["layer4"], save_activations=tmp_path / "acts", **kw)
    files = ActivationFiles.create(tmp_path / "a", {"l": (2, 3, 3)}, 4, torch.float32)
    with pytest.raises(ParameterError, match=r"2 maps of shape \(2, 3, 3\)"):
        files.write("l", [0, 1], torch.zeros(2, 2, 4, 4))
