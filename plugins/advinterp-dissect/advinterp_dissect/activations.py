"""The activations a dissection tallies, in ``.npy`` files: exported, and reused between passes.

A dissection forwards the whole dataset in its first pass (the thresholds) and needs the same
activations again in its last (the tallies). :class:`ActivationFiles` keeps them on disk, one
``<layer>.npy`` per layer of shape ``(N, U, h, w)`` (the layer's raw, unresized maps, in the
model's dtype, rows in dataset order), so the last pass reads them back instead of decoding
the images and running the model again (NetDissect-Lite keeps them in a memmap for the same
reason). The files are written and read with positional I/O, row block by row block, never
mapped: the process's memory stays flat in the number of images, and shards -- in other
processes too -- write their own rows of the same files.

``dissect(..., save_activations=folder)`` keeps them in ``folder`` (with an
``activations.json`` naming the layers, files, shapes, dataset and thresholds' quantile) for
comparisons with other tools; :func:`load_activations` opens one as a read-only memmap.
Without it, a dissection keeps them in a temporary folder when they fit the budget
(:data:`CACHE_BYTES`, and twice their size free on disk), deleted when the dissection ends,
and otherwise recomputes them.

The cached maps equal the recomputed ones bit for bit (the first pass forwards whole global
batches, as the last would), so the results do not depend on whether a cache was used.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from advinterp.api import ParameterError

__all__ = ["ActivationFiles", "load_activations", "CACHE_BYTES"]

#: Largest total size of the activations a dissection caches on disk without being asked to.
CACHE_BYTES = 4 << 30


def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)


def _np_dtype(dtype: torch.dtype) -> np.dtype:
    return np.dtype(torch.empty(0, dtype=dtype).numpy().dtype)


class ActivationFiles:
    """``{layer: <folder>/<layer>.npy (N, U, h, w)}`` written and read by rows.

    Create with :meth:`create` (writes the headers and sizes the files); the object is
    picklable (paths and offsets only), so a copy in another process reads and writes the
    same files.
    """

    def __init__(self, folder: str | Path, shapes: dict[str, tuple[int, ...]], n: int, dtype: np.dtype,
                 offsets: dict[str, int]):
        self.folder, self.shapes, self.n, self.dtype = Path(folder), dict(shapes), int(n), np.dtype(dtype)
        self.offsets = dict(offsets)

    # ------------------------------------------------------------------ creation
    @classmethod
    def create(cls, folder: str | Path, shapes: dict[str, Sequence[int]], n: int, dtype: torch.dtype,
               meta: dict[str, Any] | None = None) -> "ActivationFiles":
        """Empty files for ``n`` rows of every layer's ``(U, h, w)`` maps under ``folder``."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        npd = _np_dtype(dtype)
        offsets = {}
        for layer, shape in shapes.items():
            path = folder / f"{_safe(layer)}.npy"
            mm = np.lib.format.open_memmap(path, mode="w+", dtype=npd, shape=(int(n), *map(int, shape)))
            offsets[layer] = int(mm.offset)
            del mm  # only the header is written; the rest is a sparse file until the rows arrive
        files = cls(folder, {k: tuple(int(s) for s in v) for k, v in shapes.items()}, n, npd, offsets)
        manifest = {"layers": {k: {"file": f"{_safe(k)}.npy", "shape": [int(n), *map(int, v)]}
                               for k, v in shapes.items()},
                    "dtype": npd.str, "rows": "dataset order (item i of the dissected data is row i)",
                    "maps": "raw layer outputs (N, units, h, w), before resizing to the labels", **(meta or {})}
        (folder / "activations.json").write_text(json.dumps(manifest, indent=2, default=str))
        return files

    @staticmethod
    def nbytes(shapes: dict[str, Sequence[int]], n: int, dtype: torch.dtype) -> int:
        """Total size of the files for ``n`` rows."""
        item = _np_dtype(dtype).itemsize
        return sum(int(n) * int(np.prod(s)) * item for s in shapes.values())

    @staticmethod
    def fits(folder: str | Path, nbytes: int, budget: int = CACHE_BYTES) -> bool:
        """Whether ``nbytes`` is within ``budget`` and twice that is free under ``folder``."""
        try:
            free = shutil.disk_usage(folder).free
        except OSError:
            return False
        return nbytes <= budget and 2 * nbytes <= free

    # ------------------------------------------------------------------ rows
    def _row_bytes(self, layer: str) -> int:
        return int(np.prod(self.shapes[layer])) * self.dtype.itemsize

    def write(self, layer: str, rows: Sequence[int], maps: torch.Tensor) -> None:
        """Write ``maps`` ``(len(rows), U, h, w)`` as rows ``rows`` (item indices) of ``layer``."""
        if tuple(maps.shape[1:]) != self.shapes[layer] or len(maps) != len(rows):
            raise ParameterError("ActivationFiles.write", "maps", maps,
                                 f"{len(rows)} maps of shape {self.shapes[layer]} for layer {layer!r}",
                                 "Images of different sizes give maps of different sizes; open the Broden "
                                 "dataset with resolution= to give them one.")
        arr = np.ascontiguousarray(maps.detach().cpu().numpy(), dtype=self.dtype)
        rb = self._row_bytes(layer)
        path = self.folder / f"{_safe(layer)}.npy"
        fd = os.open(path, os.O_WRONLY)
        try:
            for start, stop, at in _runs(rows):
                view = memoryview(arr[at:at + stop - start].reshape(-1)).cast("B")  # no copy
                done = 0
                while done < len(view):  # pwrite may write less than asked
                    done += os.pwrite(fd, view[done:], self.offsets[layer] + start * rb + done)
        finally:
            os.close(fd)

    def read(self, layer: str, rows: Sequence[int]) -> np.ndarray:
        """Rows ``rows`` (item indices) of ``layer``: ``(len(rows), U, h, w)``."""
        rb = self._row_bytes(layer)
        out = np.empty((len(rows), *self.shapes[layer]), self.dtype)
        flat = out.reshape(len(rows), -1)
        with open(self.folder / f"{_safe(layer)}.npy", "rb", buffering=0) as f:
            for start, stop, at in _runs(rows):
                f.seek(self.offsets[layer] + start * rb)
                view = memoryview(flat[at:at + stop - start]).cast("B")
                got = f.readinto(view)
                if got != (stop - start) * rb:
                    raise ParameterError("ActivationFiles.read", "rows", list(rows)[:5],
                                         f"rows written before they are read ({f.name} is short)")
        return out


def _runs(rows: Sequence[int]):
    """Consecutive runs of ``rows``: ``(first, last + 1, position in rows)``."""
    rows = [int(r) for r in rows]
    i = 0
    while i < len(rows):
        j = i
        while j + 1 < len(rows) and rows[j + 1] == rows[j] + 1:
            j += 1
        yield rows[i], rows[j] + 1, i
        i = j + 1


def load_activations(folder: str | Path, layer: str) -> np.ndarray:
    """The ``(N, U, h, w)`` activations of ``layer`` saved by ``dissect(...,
    save_activations=folder)``, as a read-only memmap."""
    folder = Path(folder)
    manifest = folder / "activations.json"
    if not manifest.is_file():
        raise ParameterError("load_activations", "folder", str(folder),
                             "a folder written by dissect(..., save_activations=folder) (it has no activations.json)")
    layers = json.loads(manifest.read_text())["layers"]
    if layer not in layers:
        raise ParameterError("load_activations", "layer", layer, f"one of the saved layers {sorted(layers)}")
    return np.load(folder / layers[layer]["file"], mmap_mode="r")
