"""The dissection's fast paths equal the plain implementations they replace.

* PNG decoding: ``_read_png_fast`` (libpng through torchvision) gives the arrays PIL gives
  for every PNG mode the Broden reader accepts, and declines (PIL decodes) the others.
* ``label_index`` with its lookup table equals the sort-based construction it replaced.
* ``StreamingQuantile._count`` equals the straightforward histogram it optimises.
"""
import struct
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from advinterp.api import DatasetFormatError
from advinterp.datasets import broden as B


def _pil_only(path, rgb):
    orig = B._read_png_fast
    try:
        B._read_png_fast = lambda *a, **k: None
        return B._read_image_file(path, "image", rgb=rgb)
    finally:
        B._read_png_fast = orig


def _images(rng):
    h, w = 13, 17
    rgb = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    out = {
        "L": Image.fromarray(rgb[..., 0], "L"),
        "RGB": Image.fromarray(rgb, "RGB"),
        "RGBA": Image.fromarray(np.dstack([rgb, rgb[..., :1] ^ 0x33]), "RGBA"),
        "LA": Image.fromarray(np.dstack([rgb[..., 0], rgb[..., 1]]), "LA"),
        "I;16": Image.fromarray(rgb[..., 0].astype(np.uint16) * 257),
        "1": Image.fromarray(rgb[..., 0] > 127),
    }
    pal = Image.fromarray(rng.integers(0, 200, (h, w), dtype=np.uint8), "P")
    pal.putpalette(rng.integers(0, 256, 768, dtype=np.uint8).tolist())
    out["P"] = pal
    small = Image.fromarray(rng.integers(0, 4, (h, w), dtype=np.uint8), "P")
    small.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0, 1, 2, 3])
    out["P-4colours"] = small  # PIL may write it with fewer bits per pixel
    return out


def _with_chunk(data: bytes, kind: bytes, body: bytes) -> bytes:
    """``data`` with a chunk inserted after IHDR."""
    chunk = struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)
    return data[:33] + chunk + data[33:]


@pytest.mark.parametrize("rgb", [True, False])
def test_png_fast_equals_pil_every_mode(tmp_path, rgb):
    rng = np.random.default_rng(0)
    paths = []
    for name, im in _images(rng).items():
        p = tmp_path / f"{name.replace(';', '_')}.png"
        im.save(p)
        paths.append(p)
        if name in ("L", "RGB", "P"):
            t = tmp_path / f"{name}_transparent.png"
            im.save(t, transparency=3 if name != "RGB" else (1, 2, 3))
            paths.append(t)
    base = (tmp_path / "RGB.png").read_bytes()
    for kind, body in ((b"gAMA", struct.pack(">I", 45455)), (b"sBIT", b"\x05\x06\x05"),
                       (b"tEXt", b"Comment\x00hello"), (b"pHYs", struct.pack(">IIB", 2835, 2835, 1))):
        p = tmp_path / f"RGB_{kind.decode()}.png"
        p.write_bytes(_with_chunk(base, kind, body))
        paths.append(p)
    fast_used = 0
    for p in paths:
        if not rgb:  # segmentations: labels R + 256 G (or the grey values) as the PIL path gives them
            seg = B._read_segmentation_file(p, "here")
            want_seg = B.decode_segmentation(_pil_only(p, False))
            assert seg.dtype == want_seg.dtype and np.array_equal(seg, want_seg), p.name
        want = _pil_only(p, rgb)
        got = B._read_image_file(p, "image", rgb=rgb)
        assert got.dtype == want.dtype and got.shape == want.shape and np.array_equal(got, want), p.name
        fast_used += B._read_png_fast(p, rgb) is not None
    if B._png_decoder and B._png_decoder[0] is not None:
        assert fast_used >= 9  # L, RGB, RGBA, P, their transparent variants, text and pHYs at least


def test_png_fast_errors_unchanged(tmp_path):
    rng = np.random.default_rng(1)
    good = tmp_path / "good.png"
    Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(good)
    data = good.read_bytes()
    (tmp_path / "truncated.png").write_bytes(data[: len(data) // 2])
    (tmp_path / "corrupt.png").write_bytes(data[:40] + bytes(len(data) - 52) + data[-12:])
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "folder.png").mkdir()
    for name in ("truncated.png", "corrupt.png", "empty.png", "folder.png", "missing.png"):
        with pytest.raises(DatasetFormatError) as fast:
            B._read_image_file(tmp_path / name, "image")
        with pytest.raises(DatasetFormatError) as slow:
            _pil_only(tmp_path / name, True)
        assert str(fast.value) == str(slow.value)
        with pytest.raises(DatasetFormatError) as seg:
            B._read_segmentation_file(tmp_path / name, "here")
        assert str(tmp_path / name) in str(seg.value)
        assert B._read_png_fast(tmp_path / name, True) is None


def test_png_fast_on_broden_export(tmp_path):
    from advinterp.datasets.synthetic import SyntheticWorld

    root = B.export_broden(tmp_path / "b", SyntheticWorld(size=32), n=6, seg_size=16)
    for p in sorted((root / "images").rglob("*.png")):
        for rgb in (True, False):
            assert np.array_equal(B._read_image_file(p, "image", rgb=rgb), _pil_only(p, rgb))
        assert np.array_equal(B._read_segmentation_file(p, "here"), B.decode_segmentation(_pil_only(p, False)))


# ---------------------------------------------------------------------------- StreamingQuantile._count
def _count_reference(sq, a, vmin, vmax):
    """The plain implementation: one float64 pass, int64 indices, a bool sum for ``n_min``."""
    shape = [1, sq.units] + [1] * (a.ndim - 2)
    dims = [0] + list(range(2, a.ndim))
    at_min = (a == vmin.to(a.dtype).view(shape)).sum(dims)
    sq.n_min = torch.where(vmin < sq.min, at_min, torch.where(vmin == sq.min, sq.n_min + at_min, sq.n_min))
    sq.min, sq.max = torch.minimum(sq.min, vmin), torch.maximum(sq.max, vmax)
    offs = (torch.arange(sq.units) * sq.bins).view(shape)
    idx = a.to(torch.float64).sub(sq.lo.view(shape)).mul((1.0 / sq.width).view(shape))
    idx = idx.clamp(0, sq.bins - 1).long() + offs
    sq.counts.view(-1).add_(torch.bincount(idx.reshape(-1), minlength=sq.units * sq.bins))
    sq.count += a.shape[0] * (a[0].numel() // sq.units)
    return sq


@pytest.mark.parametrize("chunk", [1 << 19, 5], ids=["default", "tiny-chunks"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_count_equals_reference(monkeypatch, chunk, dtype):
    from advinterp_dissect import quantile as Q

    monkeypatch.setattr(Q, "_CHUNK", chunk)
    g = torch.Generator().manual_seed(3)
    U, bins = 7, 64
    fast, ref = Q.StreamingQuantile(U, bins), Q.StreamingQuantile(U, bins)
    for k in range(6):
        maps = torch.relu(torch.randn(5 + k, U, 9, 11, generator=g) * (1 + k) - 0.3 * k).to(dtype)
        maps[:, 2] = torch.round(maps[:, 2] * 4) / 4  # ties
        maps[0, 3, 0, 0] = -1.0 - k                     # a new minimum now and then
        if k == 4:
            maps = maps.contiguous(memory_format=torch.channels_last)
        vmin, vmax = Q.StreamingQuantile.range_of_maps(maps)
        fast.extend(vmin, vmax)
        ref.extend(vmin, vmax)
        fast.add_maps(maps, vmin, vmax)
        _count_reference(ref, maps, vmin, vmax)
        for f in ("counts", "n_min", "min", "max", "lo", "width"):
            assert torch.equal(getattr(fast, f), getattr(ref, f)), (k, f)
        assert fast.count == ref.count
    # the (units, n) path
    v = torch.randn(U, 300, generator=g).to(dtype)
    fast.update(v)
    vmin, vmax = Q.StreamingQuantile.range_of(v)
    ref.extend(vmin, vmax)
    _count_reference(ref, v.t(), vmin, vmax)
    assert torch.equal(fast.counts, ref.counts) and torch.equal(fast.n_min, ref.n_min)
    assert torch.equal(fast.quantile(0.995), ref.quantile(0.995))


# ---------------------------------------------------------------------------- label_index
def _label_index_reference(items, categories, col_of):
    """The sort-based construction (np.unique / searchsorted over every pixel's column)."""
    S = int(np.prod(items[0].pixel_labels[categories[0]].shape[1:]))
    stacks, scalars = [], []
    for b, it in enumerate(items):
        layers = [it.pixel_labels[c].reshape(-1, S) for c in categories if it.pixel_labels[c].shape[0]]
        stacks.append(np.concatenate(layers) if layers else np.zeros((0, S), np.int64))
        scalars += [(b, num) for cat in categories for num in it.image_labels[cat]]
    K = max([len(s) for s in stacks], default=0)
    pix = np.zeros((len(items), max(K, 1), S), np.int64)
    for b, s in enumerate(stacks):
        pix[b, :len(s)] = s
    cols = col_of[pix]
    scal = [(b, int(col_of[n]) if n < len(col_of) else -2) for b, n in scalars]
    scal = [(b, c) for b, c in scal if c >= 0]
    present = np.unique(np.concatenate([cols[cols >= 0].ravel(), np.array([c for _, c in scal], np.int64)]))
    comp = np.where(cols >= 0, np.searchsorted(present, np.maximum(cols, 0)) + 1, 0)
    return (np.ascontiguousarray(comp.transpose(0, 2, 1)), present, [b for b, _ in scal],
            (np.searchsorted(present, np.array([c for _, c in scal], np.int64)) + 1).tolist())


class _Item:
    def __init__(self, index, pixel_labels, image_labels):
        self.index, self.pixel_labels, self.image_labels = index, pixel_labels, image_labels


class _DS:
    root = __import__("pathlib").Path("/nowhere")

    def image_path(self, i):
        return self.root / f"{i}.png"


def _fixture(rng, n_numbers=60, B=5, size=(6, 7)):
    col_of = rng.integers(-1, 25, n_numbers).astype(np.int64)  # -1: unlabelled / other categories
    col_of[0] = -1
    cats = ["object", "part", "color"]
    items = []
    for b in range(B):
        pixel = {}
        for cat in cats:
            k = int(rng.integers(0, 3))
            maps = rng.integers(0, n_numbers, (k,) + size).astype(np.int32)
            maps[rng.random(maps.shape) < 0.3] = 0
            pixel[cat] = maps
        image = {cat: rng.integers(1, n_numbers + 3, int(rng.integers(0, 2))).tolist() for cat in cats}
        items.append(_Item(b, pixel, image))
    return items, cats, col_of


@pytest.mark.parametrize("seed", range(8))
def test_label_index_equals_reference(seed):
    from advinterp_dissect.loader import label_index, label_tensor

    rng = np.random.default_rng(seed)
    items, cats, col_of = _fixture(rng)
    if seed == 0:  # no pixel labels at all
        for it in items:
            for c in cats:
                it.pixel_labels[c] = it.pixel_labels[c][:0]
    li = label_index(items, _DS(), cats, col_of)
    comp, present, sb, sj = _label_index_reference(items, cats, col_of)
    assert li.comp.dtype == torch.int64 and li.comp.shape == comp.shape and np.array_equal(li.comp.numpy(), comp)
    assert li.present.dtype == present.dtype and np.array_equal(li.present, present)
    assert li.scalar_b.tolist() == sb and li.scalar_j.tolist() == sj
    L = label_tensor(li, torch.device("cpu"), torch.float32)
    assert L.shape == (len(items), comp.shape[1], len(present))


def test_label_index_errors():
    from advinterp_dissect.loader import label_index

    rng = np.random.default_rng(5)
    items, cats, col_of = _fixture(rng)
    col_of = np.append(col_of, -2)  # a number missing from label.csv, in image 2 only
    missing = len(col_of) - 1
    items[2].pixel_labels["object"] = np.full((1, 6, 7), missing, np.int32)
    with pytest.raises(DatasetFormatError, match=rf"2\.png.*label number\(s\) \[{missing}\]"):
        label_index(items, _DS(), cats, col_of)
    col_of[missing] = 1
    items[3].pixel_labels["part"] = np.full((1, 6, 7), len(col_of) + 4, np.int32)
    with pytest.raises(DatasetFormatError, match=rf"3\.png.*label number {len(col_of) + 4},"):
        label_index(items, _DS(), cats, col_of)
