"""Decoding a dissection's batches in worker processes, ahead of the forward and the tallies.

A dissection pass walks *global batches* (``batch_size`` consecutive items from item 0; a
shard forwards every global batch it touches whole, :mod:`~advinterp_dissect.probe`).
:func:`batch_loader` decodes them -- the PNG images, and for the tally pass the label PNGs
turned into per-pixel vocabulary columns (:func:`label_index`) -- in
``torch.utils.data.DataLoader`` worker processes, ``prefetch`` batches per worker ahead,
in pinned memory when the model is on a GPU, while the main process runs the forward and the
tallies of the previous batch (NetDissect-Lite decodes in a ``multiprocessing`` pool too).
The batches come back in order and equal to a serial decode (tests/test_dissect_loader.py).

Workers: ``None`` picks ``min(4, CPUs // 2)`` on machines with four CPUs or more, and none
on smaller ones or for a pass of fewer than three batches (starting processes would cost more
than it saves); ``0`` decodes in the main process. Errors raised while decoding (a missing PNG, an unknown label number) reach the
caller as the same :class:`~advinterp.api.DatasetFormatError` / ``ParameterError``.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import numpy as np
import torch

from advinterp.api import AdvinterpError, DatasetFormatError, ParameterError

__all__ = ["LabelIndex", "DecodedBatch", "batch_loader", "label_index", "label_tensor", "default_workers"]


@dataclass
class LabelIndex:
    """The labels of ``B`` images as vocabulary columns, ready for :func:`label_tensor`.

    Attributes:
        comp: ``(B, S, K)`` int64: ``1 + j`` where pixel ``s`` of image ``b`` carries label
            column ``present[j]`` in its ``k``-th segmentation layer, 0 for no label.
        present: ``(P,)`` int64 label columns present in the batch, increasing.
        scalar_b, scalar_j: image-level labels: image ``scalar_b[i]`` carries column
            ``present[scalar_j[i]]`` on every pixel.
        size: ``(sh, sw)`` of the label maps.
    """

    comp: torch.Tensor
    present: np.ndarray
    scalar_b: torch.Tensor
    scalar_j: torch.Tensor
    size: tuple[int, int]

    def pin_memory(self) -> "LabelIndex":
        return LabelIndex(self.comp.pin_memory(), self.present, self.scalar_b.pin_memory(),
                          self.scalar_j.pin_memory(), self.size)


@dataclass
class DecodedBatch:
    """Global batch ``t``: the ``(B, H, W, 3)`` uint8 images of all its items (None when
    only labels were asked for), and the :class:`LabelIndex` of the shard's own items when the
    pass needs labels."""

    t: int
    images: torch.Tensor | None
    labels: LabelIndex | None

    def pin_memory(self) -> "DecodedBatch":
        return DecodedBatch(self.t, None if self.images is None else self.images.pin_memory(),
                            None if self.labels is None else self.labels.pin_memory())


class _Failed:
    """An error raised in a worker, carried back to be raised again in the caller."""

    def __init__(self, error: BaseException):
        self.error = error


def label_index(items: Sequence[Any], ds: Any, categories: Sequence[str], col_of: np.ndarray) -> LabelIndex:
    """The labels of Broden ``items`` (each with ``pixel_labels`` / ``image_labels``) as
    vocabulary columns (``col_of``: label number -> column, -1 unlabelled or outside the
    categories, -2 a number missing from ``label.csv``)."""
    sizes = {tuple(it.pixel_labels[cat].shape[1:]) for it in items for cat in categories}
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
                scalars.append((b, num))
    K = max([len(s) for s in stacks], default=0)
    # (B, S, K) label numbers in the layout of ``comp`` (no transposed copy at the end)
    pix = np.zeros((len(items), S, max(K, 1)), np.result_type(np.int32, *[s.dtype for s in stacks]))
    for b, s in enumerate(stacks):
        pix[b, :, :len(s)] = s.T
    if pix.size and (pix.min() < 0 or pix.max() >= len(col_of)):
        bad = int(pix.max()) if pix.max() >= len(col_of) else int(pix.min())
        b = int(np.nonzero((pix == bad).any(axis=(1, 2)))[0][0])
        raise DatasetFormatError(f"{ds.image_path(items[b].index)}: a segmentation of this image holds label "
                                 f"number {bad}, which is not in {ds.root / 'label.csv'}. Fix the PNG or label.csv.")
    # the label numbers present (a count over the numbers, no sort of the pixels), their columns
    seen = np.flatnonzero(np.bincount(pix.ravel(), minlength=len(col_of))) if pix.size else np.zeros(0, np.int64)
    seen_cols = col_of[seen]
    if (seen_cols == -2).any():
        cols = col_of[pix]
        b = int(np.nonzero((cols == -2).any(axis=(1, 2)))[0][0])
        bad = sorted(set(pix[b][cols[b] == -2].tolist()))
        raise DatasetFormatError(f"{ds.image_path(items[b].index)}: a segmentation of this image holds label "
                                 f"number(s) {bad[:5]}, not in {ds.root / 'label.csv'}. Fix the PNG or label.csv.")
    scal = [(b, int(col_of[n]) if n < len(col_of) else -2) for b, n in scalars]
    scal = [(b, c) for b, c in scal if c >= 0]
    present = np.unique(np.concatenate([seen_cols[seen_cols >= 0].astype(np.int64),
                                        np.array([c for _, c in scal], np.int64)]))
    # label number -> 1 + position of its column in ``present`` (0: no label), then one gather
    lut = np.zeros(max(len(col_of), 1), np.int64)
    ok = seen_cols >= 0
    lut[seen[ok]] = np.searchsorted(present, seen_cols[ok]) + 1
    comp = lut[pix]
    return LabelIndex(torch.from_numpy(comp), present,
                      torch.tensor([b for b, _ in scal], dtype=torch.long),
                      torch.from_numpy(np.searchsorted(present, np.array([c for _, c in scal], np.int64)) + 1),
                      (int(sh), int(sw)))


def label_tensor(li: LabelIndex, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """``(B, S, P)`` 0/1 ``L[b, s, j] = 1`` iff pixel ``s`` of image ``b`` carries label
    column ``present[j]`` (image-level labels cover every pixel), built on ``device``."""
    index = li.comp.to(device, non_blocking=True)
    B, S, _ = index.shape
    L = torch.zeros(B, S, len(li.present) + 1, device=device, dtype=dtype)
    L.scatter_(2, index, 1.0)
    if len(li.scalar_b):
        L[li.scalar_b.to(device), :, li.scalar_j.to(device)] = 1.0
    return L[:, :, 1:]


class _Batches(torch.utils.data.Dataset):
    def __init__(self, src: Any, groups: list[tuple[int, list[int], list[int]]], labels: bool,
                 categories: Sequence[str], col_of: np.ndarray, images: bool = True):
        self.src, self.groups, self.labels, self.images = src, groups, labels, images
        self.categories, self.col_of = list(categories), col_of

    def __len__(self) -> int:
        return len(self.groups)

    def __getitem__(self, k: int):
        t, members, own = self.groups[k]
        try:
            if not self.images:
                items = [self.src.segmentation(i) for i in own]
                return DecodedBatch(t, None, label_index(items, self.src.ds, self.categories, self.col_of))
            got = {i: self.src[i] for i in own} if self.labels else {}
            images = [got[i].image if i in got else self.src.image(i) for i in members]
            shapes = {im.shape for im in images}
            if len(shapes) > 1:
                raise ParameterError("BrodenDataset", "resolution", self.src.ds.resolution,
                                     f"a common size, because images {members[0]}..{members[-1]} differ "
                                     f"in size ({sorted(shapes)}); e.g. BrodenDataset(root, resolution=224)")
            lab = (label_index([got[i] for i in own], self.src.ds, self.categories, self.col_of)
                   if self.labels else None)
            return DecodedBatch(t, torch.from_numpy(np.stack(images)), lab)
        except AdvinterpError as e:
            return _Failed(e)


def _as_is(batch):
    return batch


def default_workers(n_batches: int) -> int:
    """``min(4, CPUs // 2)`` worker processes on machines with at least four CPUs (the
    forward and the tallies keep two busy), none below that or for fewer than three batches
    (measured on two CPUs: one worker slows a dissection by a third)."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if n_batches < 3 or cpus < 4:
        return 0
    return min(4, cpus // 2)


def batch_loader(src: Any, groups: list[tuple[int, list[int], list[int]]], *, labels: bool = False,
                 images: bool = True, categories: Sequence[str] = (), col_of: np.ndarray | None = None,
                 workers: int | None = None, pin: bool = False, prefetch: int = 2) -> Iterator[DecodedBatch]:
    """Decode ``groups`` -- ``(t, members, own)``: global batch ``t``, all its item indices,
    the shard's own items among them -- in order, in ``workers`` processes (module docstring);
    ``images=False``: the own items' labels only."""
    workers = default_workers(len(groups)) if workers is None else int(workers)
    ds = _Batches(src, groups, labels, categories, col_of if col_of is not None else np.zeros(0, np.int64), images)
    kw = {"num_workers": workers, "pin_memory": pin, "collate_fn": _as_is, "batch_size": None}
    if workers:
        kw.update(prefetch_factor=prefetch, persistent_workers=False)
    for out in torch.utils.data.DataLoader(ds, **kw):
        if isinstance(out, _Failed):
            raise out.error
        yield out
