"""A straightforward reference of :func:`~advinterp_dissect.probe.dissect`: NetDissect-Lite's
algorithm with a Python loop over images and units (the test oracle and the benchmark's baseline).

Differences from :func:`dissect` are only in *how*, not *what*:

* pass 1 keeps every activation of every image (memory grows with the dataset, as
  NetDissect-Lite's ``wholefeatures`` memmap) and takes the exact quantile with
  ``numpy.quantile`` (linear interpolation, NetDissect's ``np.percentile``);
* pass 2 walks the images one at a time and, for each unit, resizes its map with PIL
  (NetDissect-Lite's ``imresize(mode='F')``), thresholds
  it and counts labels under the active pixels with ``numpy.bincount`` (NetDissect-Lite's
  ``tally_job``), with the per-image category gate recomputed on every image.

Given the same thresholds it must produce the same tallies as :func:`dissect` (the tests
check it); it is slow by design.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
import torch

from advinterp.api import as_adapter

from .dissection import (Dissection, LayerDissection, _check_layers, _spatial, _vocabulary, images_to_tensor,
                         open_broden)

__all__ = ["dissect_reference"]


def _imresize(fmap: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """NetDissect-Lite's ``scipy.misc.imresize(fmap, size, mode='F')``: a float32 PIL image
    resized with ``Image.BILINEAR`` (independent of :func:`~advinterp_dissect.resize.resize_maps`)."""
    from PIL import Image

    if fmap.shape == tuple(size):
        return fmap
    return np.asarray(Image.fromarray(np.ascontiguousarray(fmap, dtype=np.float32), mode="F")
                      .resize((size[1], size[0]), Image.BILINEAR))


def _pixel_sets(stack: np.ndarray) -> np.ndarray:
    """``(K, n)`` label numbers per pixel -> the same with repeats within a pixel zeroed,
    so that each (pixel, label) pair counts once."""
    if len(stack) < 2:
        return stack
    s = np.sort(stack, axis=0)
    s[1:][s[1:] == s[:-1]] = 0
    return s


def dissect_reference(model: Any, broden: Any, layers: Sequence[str] | str | None = None, *,
                      quantile: float = 0.005, iou_threshold: float = 0.04,
                      categories: Sequence[str] | None = None, resolution: Any = None,
                      thresholds: Mapping[str, Any] | None = None) -> Dissection:
    """Same arguments and result as :func:`~advinterp_dissect.probe.dissect` (no
    batching, no progress bars); thresholds are exact unless given."""
    adapter = as_adapter(model)
    ds = open_broden(broden, resolution=resolution, owner="dissect_reference")
    cats = list(ds.categories if categories is None else categories)
    layers = _check_layers(adapter, layers, "dissect_reference")
    vocab, col_of = _vocabulary(ds, cats)
    C, G = len(vocab), len(cats)
    labelcat = np.zeros((C, G))
    labelcat[np.arange(C), vocab.category] = 1
    dev, dtype = adapter.device, adapter.dtype

    def features(i: int, image: np.ndarray | None = None) -> dict[str, np.ndarray]:
        x = images_to_tensor((ds.image(i) if image is None else image)[None], dev, dtype)
        acts = adapter.activations(x, layers)
        return {n: _spatial(acts, n, adapter)[0].cpu().numpy() for n in layers}

    with adapter.preserved(freeze=True), torch.no_grad():
        # pass 1: every activation kept, exact quantile
        if thresholds is None:
            whole = {n: [] for n in layers}
            for i in range(len(ds)):
                for n, f in features(i).items():
                    whole[n].append(f)
            T = {}
            for n in layers:
                allf = np.stack(whole[n]).astype(np.float64)                 # (N, U, h, w)
                T[n] = np.quantile(allf.transpose(1, 0, 2, 3).reshape(allf.shape[1], -1), 1 - quantile, axis=1)
            del whole
        else:
            T = {n: np.asarray(thresholds[n], dtype=np.float64) for n in layers}

        # pass 2: per image, per unit
        tallies = {}
        label_size = None
        act_size = {}
        for i in range(len(ds)):
            item = ds[i]
            feats = features(i, item.image)
            stacks = [item.pixel_labels[c] for c in cats if item.pixel_labels[c].shape[0]]
            sh, sw = item.pixel_labels[cats[0]].shape[1:]
            label_size = (sh, sw)
            pixels = (_pixel_sets(col_of[np.concatenate(stacks).reshape(-1, sh * sw)] + 1)
                      if stacks else np.zeros((0, sh * sw), np.int64))           # column + 1, 0 = none
            pixels = np.where(pixels < 0, 0, pixels)
            scalars = [int(col_of[n]) for c in cats for n in item.image_labels[c] if col_of[n] >= 0]
            truth_img = np.zeros(C + 1)
            if len(pixels):
                tl = np.bincount(pixels.ravel(), minlength=C + 1)
                tl[0] = 0
                truth_img += tl
            for s in scalars:
                truth_img[s + 1] += sh * sw
            for n in layers:
                fmap = feats[n]
                U = fmap.shape[0]
                act_size[n] = fmap.shape[1:]
                t = tallies.setdefault(n, {"inter": np.zeros((U, C)), "act": np.zeros((U, G)),
                                           "truth": np.zeros(C), "pixels": np.zeros(U)})
                t["truth"] += truth_img[1:]
                for unit in range(U):
                    if not fmap[unit].max() > T[n][unit]:
                        continue
                    up = _imresize(fmap[unit], (sh, sw))
                    idx = np.flatnonzero(up > T[n][unit])
                    t["pixels"][unit] += len(idx)
                    tally_cat = np.zeros(G)
                    if len(pixels):
                        bt = np.bincount(pixels[:, idx].ravel(), minlength=C + 1)[1:]
                        t["inter"][unit] += bt
                        tally_cat += bt @ labelcat
                    for s in scalars:
                        t["inter"][unit, s] += len(idx)
                        tally_cat += labelcat[s]
                    t["act"][unit] += len(idx) * (tally_cat > 0)

    out = {n: LayerDissection(layer=n, thresholds=np.asarray(T[n], np.float64),
                              threshold_tolerance=np.zeros(len(T[n])), intersection=tallies[n]["inter"],
                              activation=tallies[n]["act"], truth=tallies[n]["truth"], unit_pixels=tallies[n]["pixels"],
                              vocabulary=vocab, n_images=len(ds), label_size=tuple(int(s) for s in label_size),
                              activation_size=tuple(int(s) for s in act_size[n]))
           for n in layers}
    return Dissection(out, model=adapter.name, dataset=str(ds.root), quantile=float(quantile),
                      iou_threshold=float(iou_threshold), n_images=len(ds))
