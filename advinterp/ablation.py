"""Grid geometry and the grid-ablation backend interface (pure-PyTorch reference).

A *grid* G_i is a window of the image. Ablating grid i of an adversarial image x' puts
back the clean pixels there: ``x' - delta_{G_i}`` (``delta = x' - x0``). The PSE analysis
needs these images for every grid; a backend builds them in batches. The fastest one
available is chosen through the ``advinterp_grid_ablation_backend`` firstresult hook:
the compiled ``advinterp-gridablate`` plugin answers first where it is built, this
module's :class:`ReferenceGridAblation` (``trylast``) otherwise.
"""
from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch

from .exceptions import ParameterError
from .patches import crop_paste_patches, crop_patches, paste_patches

__all__ = ["grid_boxes", "GridAblationBackend", "ReferenceGridAblation", "grid_scores_to_map"]


def grid_boxes(height: int, width: int, size: int | tuple[int, int], stride: int | tuple[int, int],
               cover: bool = True) -> torch.Tensor:
    """Sliding-window grids over an ``height x width`` image.

    Args:
        size: window ``(h, w)`` (or one int for both).
        stride: step ``(sy, sx)`` (or one int); ``stride < size`` gives overlapping windows.
        cover: add a last row/column of windows flush with the bottom/right border when
            the stride does not land there, so every pixel is in some grid (default True).

    Returns:
        ``(m, 4)`` int64 tensor of ``[y0, x0, y1, x1]`` (end exclusive), row-major order.
    """
    sh, sw = (size, size) if isinstance(size, int) else size
    sy, sx = (stride, stride) if isinstance(stride, int) else stride
    for nm, v in (("size", sh), ("size", sw)):
        if not isinstance(v, int) or v < 1:
            raise ParameterError("grid_boxes", nm, size, "a positive window size")
    for v in (sy, sx):
        if not isinstance(v, int) or v < 1:
            raise ParameterError("grid_boxes", "stride", stride, "a positive integer stride")
    if sh > height or sw > width:
        raise ParameterError("grid_boxes", "size", size, f"a window no larger than the image ({height}x{width})")

    def starts(n, k, s):
        out = list(range(0, n - k + 1, s))
        if cover and out[-1] != n - k:
            out.append(n - k)
        return out

    ys, xs = starts(height, sh, sy), starts(width, sw, sx)
    boxes = [[y, x, y + sh, x + sw] for y in ys for x in xs]
    return torch.tensor(boxes, dtype=torch.long)


@runtime_checkable
class GridAblationBackend(Protocol):
    """What a grid-ablation backend provides.

    Required: ``name`` and :meth:`ablate`. Optional (not part of the runtime check, so
    third-party backends need not have them): the window methods of the incremental executor
    (:mod:`advinterp.incremental`), which looks them up with ``getattr(backend, "crop", None)``
    and falls back to :mod:`advinterp.patches` where they are missing:

    * ``crop(src, index, offsets, height, width, fill=0.0) -> Tensor``: ``(B, C, height, width)``
      windows of the ``(M, C, H, W)`` maps ``src[index[b]]`` at ``offsets[b] = [oy, ox]``,
      ``fill`` outside the map (semantics of :func:`advinterp.patches.crop_patches`);
    * ``paste(base, index, patch, offsets) -> Tensor``: ``(B, C, H, W)`` maps ``base[index[b]]``
      with ``patch[b]`` written at ``offsets[b]``, clipped to the map (semantics of
      :func:`advinterp.patches.paste_patches`);
    * ``crop_paste(src, index, offsets, height, width, fill, patch, patch_offsets) -> Tensor``:
      ``(B, C, height, width)``: ``crop`` with ``patch[b]`` written at ``patch_offsets[b]``
      (relative to the window's corner, clipped to it) in one pass (semantics of
      :func:`advinterp.patches.crop_paste_patches`); looked up with
      ``getattr(backend, "crop_paste", None)``, else the executor calls ``crop`` then ``paste``.

    All must equal the references bit for bit (they only move values) and keep the maps'
    memory format (contiguous or channels-last).
    """

    name: str

    def ablate(self, x_adv: torch.Tensor, x0: torch.Tensor, boxes: torch.Tensor, start: int,
               count: int) -> torch.Tensor:
        """Images for grids ``start .. start+count-1``: ``(N, count, C, H, W)``, where
        ``out[n, j]`` is ``x_adv[n]`` with the pixels of box ``start + j`` taken from ``x0[n]``."""


class ReferenceGridAblation:
    """The pure-PyTorch reference backend (any device), with the optional window methods
    :meth:`crop` / :meth:`paste` / :meth:`crop_paste` (delegating to :mod:`advinterp.patches`)."""

    name = "reference"

    def ablate(self, x_adv: torch.Tensor, x0: torch.Tensor, boxes: torch.Tensor, start: int,
               count: int) -> torch.Tensor:
        if x_adv.shape != x0.shape:
            raise ParameterError("ReferenceGridAblation.ablate", "x0", x0, f"the shape of x_adv {tuple(x_adv.shape)}")
        if not (0 <= start and count >= 0 and start + count <= len(boxes)):
            raise ParameterError("ReferenceGridAblation.ablate", "start/count", (start, count),
                                 f"a range inside [0, {len(boxes)})")
        out = x_adv.unsqueeze(1).repeat(1, count, 1, 1, 1)
        for j, (y0, x0_, y1, x1) in enumerate(boxes[start:start + count].tolist()):
            out[:, j, :, y0:y1, x0_:x1] = x0[:, :, y0:y1, x0_:x1]
        return out

    def crop(self, src: torch.Tensor, index: torch.Tensor, offsets: torch.Tensor, height: int, width: int,
             fill: float = 0.0) -> torch.Tensor:
        """``(B, C, height, width)`` windows of the ``(M, C, H, W)`` maps: ``src[index[b]]`` read
        from ``offsets[b] = [oy, ox]`` (int64 ``(B,)`` / ``(B, 2)``), ``fill`` (default 0) outside
        the map; ``src``'s dtype, device and memory format. See :func:`advinterp.patches.crop_patches`."""
        return crop_patches(src, index, offsets, height, width, fill)

    def paste(self, base: torch.Tensor, index: torch.Tensor, patch: torch.Tensor,
              offsets: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W)``: ``base[index[b]]`` with the ``(B, C, h, w)`` ``patch[b]`` written at
        ``offsets[b] = [oy, ox]``, clipped to the map; ``base``'s dtype, device and memory format.
        See :func:`advinterp.patches.paste_patches`."""
        return paste_patches(base, index, patch, offsets)

    def crop_paste(self, src: torch.Tensor, index: torch.Tensor, offsets: torch.Tensor, height: int, width: int,
                   fill: float, patch: torch.Tensor, patch_offsets: torch.Tensor) -> torch.Tensor:
        """``(B, C, height, width)``: :meth:`crop`'s windows with the ``(B, C, h, w)`` ``patch[b]``
        written at ``patch_offsets[b] = [py, px]`` (relative to the window's corner, clipped to
        the window). See :func:`advinterp.patches.crop_paste_patches`."""
        return crop_paste_patches(src, index, offsets, height, width, fill, patch, patch_offsets)


def grid_scores_to_map(scores: torch.Tensor, boxes: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Per-grid scores to a per-pixel map: each pixel gets the mean score of the grids
    covering it (0 where no grid covers it).

    The pure-PyTorch reference of the ``advinterp-gridablate`` plugin's ``scatter_mean``
    op (which matches it bit for bit): sums are accumulated in box order in float32 for
    half/bfloat16 scores (in the scores' dtype otherwise), divided by the number of covering
    grids, and cast back to the scores' dtype.

    Args:
        scores: ``(N, m)`` (or ``(m,)``) floating-point scores, one per box.
        boxes: ``(m, 4)`` integer ``[y0, x0, y1, x1]`` windows (end exclusive, from
            :func:`grid_boxes`), inside the ``height x width`` image.
        height, width: size of the map.

    Returns:
        ``(N, height, width)`` (``(height, width)`` for 1-D ``scores``), dtype and device of
        ``scores``.
    """
    owner = "grid_scores_to_map"
    if not isinstance(scores, torch.Tensor) or scores.dim() not in (1, 2) or not scores.is_floating_point():
        raise ParameterError(owner, "scores", scores, "a floating-point (N, m) or (m,) tensor")
    if not isinstance(height, int) or not isinstance(width, int) or height < 1 or width < 1:
        raise ParameterError(owner, "height/width", (height, width), "positive integers")
    if (not isinstance(boxes, torch.Tensor) or boxes.dim() != 2 or boxes.shape[1] != 4
            or boxes.is_floating_point() or boxes.dtype == torch.bool):
        raise ParameterError(owner, "boxes", boxes, "an integer (m, 4) tensor of [y0, x0, y1, x1] (see grid_boxes)")
    if boxes.shape[0] != scores.shape[-1]:
        raise ParameterError(owner, "scores", scores, f"one score per box ({boxes.shape[0]} boxes) in the last dim")
    box_list = boxes.tolist()
    for i, (y0, x0, y1, x1) in enumerate(box_list):
        if not (0 <= y0 <= y1 <= height and 0 <= x0 <= x1 <= width):
            raise ParameterError(owner, f"boxes[{i}]", [y0, x0, y1, x1],
                                 f"a window inside the {height}x{width} image (0 <= y0 <= y1 <= H, "
                                 "0 <= x0 <= x1 <= W)")
    squeeze = scores.dim() == 1
    s = scores.unsqueeze(0) if squeeze else scores
    acc_dtype = torch.float32 if s.dtype in (torch.float16, torch.bfloat16) else s.dtype
    s = s.to(acc_dtype)
    acc = torch.zeros(s.shape[0], height, width, dtype=acc_dtype, device=s.device)
    cov = torch.zeros(height, width, dtype=acc_dtype, device=s.device)
    for i, (y0, x0, y1, x1) in enumerate(box_list):
        acc[:, y0:y1, x0:x1] += s[:, i, None, None]
        cov[y0:y1, x0:x1] += 1
    out = torch.where(cov > 0, acc / cov.clamp(min=1), torch.zeros((), dtype=acc_dtype, device=s.device))
    out = out.to(scores.dtype)
    return out[0] if squeeze else out
