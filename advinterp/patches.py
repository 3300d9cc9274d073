"""Crop and paste of per-sample windows of cached feature maps (pure-PyTorch reference).

The incremental executor (:mod:`advinterp.incremental`) recomputes, for a batch of ablated
images, only a window of each feature map around the change. It needs two data movements,
one window per sample, at a different position for each sample:

* :func:`crop_patches` — gather the window ``[oy, oy + height) x [ox, ox + width)`` of cached
  map ``src[index[b]]`` for every sample ``b``; positions outside the map read ``fill`` (the
  zero padding of a convolution, ``-inf`` for a max pool);
* :func:`paste_patches` — copy cached map ``base[index[b]]`` with a patch written at
  ``(oy, ox)``, clipped to the map (the changed window put back into its map);
* :func:`crop_paste_patches` — both at once: the window of :func:`crop_patches` with each
  sample's patch written into it (the executor's region of a changed box: cached values plus
  the halo, the new values on the box).

They are the references of the ``advinterp-gridablate`` extension's ``crop`` / ``paste`` /
``crop_paste`` ops,
which equal them bit for bit (they only move values). Offsets may lie outside the map; a
window entirely outside reads ``fill`` only (crop) or writes nothing (paste). Outputs keep
``src``/``base``'s memory format (contiguous or channels-last).
"""
from __future__ import annotations

import numbers

import torch

from .exceptions import ParameterError

__all__ = ["crop_patches", "paste_patches", "crop_paste_patches"]


def _check_common(owner: str, maps: torch.Tensor, name: str, index: torch.Tensor, offsets: torch.Tensor) -> None:
    if not isinstance(maps, torch.Tensor) or maps.dim() != 4:
        raise ParameterError(owner, name, maps, "an (M, C, H, W) tensor of cached feature maps")
    if (not isinstance(index, torch.Tensor) or index.dim() != 1 or index.dtype != torch.int64):
        raise ParameterError(owner, "index", index, "an int64 (B,) tensor: the cached map of each sample",
                             "Use torch.zeros(B, dtype=torch.long) when every sample reads map 0.")
    if (not isinstance(offsets, torch.Tensor) or offsets.dim() != 2 or offsets.shape[1] != 2
            or offsets.dtype != torch.int64 or len(offsets) != len(index)):
        raise ParameterError(owner, "offsets", offsets,
                             f"an int64 ({len(index)}, 2) tensor of [oy, ox] window corners, one per sample")
    if len(index) and (int(index.min()) < 0 or int(index.max()) >= maps.shape[0]):
        raise ParameterError(owner, "index", index, f"map indices in [0, {maps.shape[0]})")


def _check_fill(owner: str, fill: float, dtype: torch.dtype) -> None:
    """``fill`` must be representable in ``dtype`` (finite within its range, or +-inf / nan):
    torch.full would otherwise round it to inf for one path and raise for another."""
    if isinstance(fill, bool) or not isinstance(fill, numbers.Real):
        raise ParameterError(owner, "fill", fill, "a number (float('-inf') for a max pool's padding)")
    f = float(fill)
    limit = torch.finfo(dtype).max
    if abs(f) > limit and f not in (float("inf"), float("-inf")):
        raise ParameterError(owner, "fill", fill, f"a value representable in {dtype} (|fill| <= {limit:g}) "
                             "or +-inf / nan", "Use float('-inf') for a max pool's padding.")


def _format(t: torch.Tensor) -> torch.memory_format:
    return (torch.channels_last if t.dim() == 4 and not t.is_contiguous()
            and t.is_contiguous(memory_format=torch.channels_last) else torch.contiguous_format)


def _grid(offsets: torch.Tensor, height: int, width: int, h_map: int, w_map: int, device):
    """Row/column coordinates ``(B, height)``/``(B, width)`` and their in-map masks."""
    off = offsets.to(device)
    ys = off[:, 0:1] + torch.arange(height, device=device)
    xs = off[:, 1:2] + torch.arange(width, device=device)
    return ys, xs, (ys >= 0) & (ys < h_map), (xs >= 0) & (xs < w_map)


def crop_patches(src: torch.Tensor, index: torch.Tensor, offsets: torch.Tensor, height: int, width: int,
                 fill: float = 0.0) -> torch.Tensor:
    """Windows of cached maps, one per sample.

    Args:
        src: ``(M, C, H, W)`` cached maps.
        index: ``(B,)`` int64: sample ``b`` reads map ``src[index[b]]``.
        offsets: ``(B, 2)`` int64 ``[oy, ox]``: top-left corner of sample ``b``'s window
            (any integers: the window may reach past the map).
        height, width: window size (``>= 0``).
        fill: value of positions outside the map (default 0); representable in ``src``'s
            dtype (finite within its range, or ``+-inf`` / ``nan``), else ParameterError.

    Returns:
        ``(B, C, height, width)``, ``src``'s dtype, device and memory format:
        ``out[b, c, i, j] = src[index[b], c, oy + i, ox + j]`` inside the map, ``fill`` outside.
    """
    owner = "crop_patches"
    _check_common(owner, src, "src", index, offsets)
    if height < 0 or width < 0:
        raise ParameterError(owner, "height/width", (height, width), "a window size >= 0")
    _check_fill(owner, fill, src.dtype)
    b = len(index)
    _, c, h_map, w_map = src.shape
    dev = src.device
    ys, xs, vy, vx = _grid(offsets, height, width, h_map, w_map, dev)
    idx = index.to(dev)
    g = src[idx[:, None, None], :, ys.clamp(0, max(h_map - 1, 0))[:, :, None],
            xs.clamp(0, max(w_map - 1, 0))[:, None, :]] if b and height and width and h_map and w_map else None
    if g is None:
        return src.new_full((b, c, height, width), fill).contiguous(memory_format=_format(src))
    g = g.permute(0, 3, 1, 2)  # (B, h, w, C) -> (B, C, h, w)
    valid = (vy[:, :, None] & vx[:, None, :])[:, None]
    out = torch.where(valid, g, torch.full((), fill, dtype=src.dtype, device=dev))
    return out.contiguous(memory_format=_format(src))


def paste_patches(base: torch.Tensor, index: torch.Tensor, patch: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    """Cached maps with one patch written into each, clipped to the map.

    Args:
        base: ``(M, C, H, W)`` cached maps.
        index: ``(B,)`` int64: sample ``b`` starts from ``base[index[b]]``.
        patch: ``(B, C, h, w)`` values to write, ``base``'s dtype and device.
        offsets: ``(B, 2)`` int64 ``[oy, ox]``: where ``patch[b, :, 0, 0]`` lands.

    Returns:
        ``(B, C, H, W)``, ``base``'s dtype, device and memory format: ``base[index[b]]`` with
        ``out[b, :, oy + i, ox + j] = patch[b, :, i, j]`` wherever that lies in the map.
    """
    owner = "paste_patches"
    _check_common(owner, base, "base", index, offsets)
    if (not isinstance(patch, torch.Tensor) or patch.dim() != 4 or len(patch) != len(index)
            or patch.shape[1] != base.shape[1]):
        raise ParameterError(owner, "patch", patch, f"a ({len(index)}, {base.shape[1]}, h, w) tensor")
    if patch.dtype != base.dtype or patch.device != base.device:
        raise ParameterError(owner, "patch", patch, f"base's dtype and device ({base.dtype}, {base.device})")
    dev = base.device
    out = base[index.to(dev)].contiguous(memory_format=_format(base))
    _, _, h, w = patch.shape
    if not (len(index) and h and w):
        return out
    ys, xs, vy, vx = _grid(offsets, h, w, base.shape[2], base.shape[3], dev)
    bb, ii, jj = (vy[:, :, None] & vx[:, None, :]).nonzero(as_tuple=True)
    out[bb, :, ys[bb, ii], xs[bb, jj]] = patch[bb, :, ii, jj]
    return out


def crop_paste_patches(src: torch.Tensor, index: torch.Tensor, offsets: torch.Tensor, height: int, width: int,
                       fill: float, patch: torch.Tensor, patch_offsets: torch.Tensor) -> torch.Tensor:
    """Windows of cached maps with one patch written into each: by definition
    ``paste_patches(crop_patches(src, index, offsets, height, width, fill), arange(B), patch,
    patch_offsets)``.

    Args:
        src, index, offsets, height, width, fill: the windows, as :func:`crop_patches`.
        patch: ``(B, C, h, w)`` values to write, ``src``'s dtype and device.
        patch_offsets: ``(B, 2)`` int64 ``[py, px]``: where ``patch[b, :, 0, 0]`` lands,
            relative to the corner of sample ``b``'s window (any integers: the part outside
            the window is dropped).

    Returns:
        ``(B, C, height, width)``, ``src``'s dtype, device and memory format:
        ``out[b, c, i, j] = patch[b, c, i - py, j - px]`` where that lies in patch ``b``, else
        ``src[index[b], c, oy + i, ox + j]`` inside the map, else ``fill``.
    """
    owner = "crop_paste_patches"
    _check_common(owner, src, "src", index, offsets)
    b, c = len(index), src.shape[1]
    if not isinstance(patch, torch.Tensor) or patch.dim() != 4 or len(patch) != b or patch.shape[1] != c:
        raise ParameterError(owner, "patch", patch, f"a ({b}, {c}, h, w) tensor")
    if patch.dtype != src.dtype or patch.device != src.device:
        raise ParameterError(owner, "patch", patch, f"src's dtype and device ({src.dtype}, {src.device})")
    if (not isinstance(patch_offsets, torch.Tensor) or patch_offsets.dtype != torch.int64
            or tuple(patch_offsets.shape) != (b, 2)):
        raise ParameterError(owner, "patch_offsets", patch_offsets,
                             f"an int64 ({b}, 2) tensor of [py, px] patch corners in the window, one per sample")
    window = crop_patches(src, index, offsets, height, width, fill)
    return paste_patches(window, torch.arange(b), patch, patch_offsets)
