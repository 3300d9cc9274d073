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

__all__ = ["grid_boxes", "GridAblationBackend", "ReferenceGridAblation", "get_ablation_backend"]


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
    """What a grid-ablation backend provides."""

    name: str

    def ablate(self, x_adv: torch.Tensor, x0: torch.Tensor, boxes: torch.Tensor, start: int,
               count: int) -> torch.Tensor:
        """Images for grids ``start .. start+count-1``: ``(N, count, C, H, W)``, where
        ``out[n, j]`` is ``x_adv[n]`` with the pixels of box ``start + j`` taken from ``x0[n]``."""


class ReferenceGridAblation:
    """The pure-PyTorch reference backend (any device)."""

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


def get_ablation_backend(device: torch.device | str = "cpu") -> GridAblationBackend:
    """The backend the plugins choose for ``device`` (firstresult hook)."""
    from .registry import get_registry

    return get_registry().pm.hook.advinterp_grid_ablation_backend(device=torch.device(device))
