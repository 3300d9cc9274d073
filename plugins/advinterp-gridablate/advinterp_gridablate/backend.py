"""The grid-ablation backend object the plugin hands to the core."""
from __future__ import annotations

import torch

from . import _ext, ops


class CompiledGridAblation:
    """The compiled backend for one device type (``name``: ``"gridablate-<device type>"``).

    Satisfies :class:`advinterp.ablation.GridAblationBackend`, including its optional window
    methods :meth:`crop` / :meth:`paste` / :meth:`crop_paste` (for the incremental executor);
    also offers :meth:`scatter_mean`. ``crop_paste`` is ``None`` where the loaded module has no
    kernel of it (built from older sources), so the executor falls back to ``crop`` + ``paste``.
    Get it through ``advinterp.registry.get_ablation_backend(device)`` (or
    :func:`advinterp_gridablate.backend_for`).
    """

    def __init__(self, device_type: str):
        self.device_type = device_type
        self.name = f"gridablate-{device_type}"
        if device_type not in _ext.STATE.fused_device_types():
            self.crop_paste = None  # (shadows the method: getattr(backend, "crop_paste", None) is None)

    def ablate(self, x_adv: torch.Tensor, x0: torch.Tensor, boxes: torch.Tensor, start: int,
               count: int) -> torch.Tensor:
        """``(N, count, C, H, W)``: ``out[n, j]`` is ``x_adv[n]`` with the pixels of
        ``boxes[start + j]`` taken from ``x0[n]`` (see :func:`advinterp_gridablate.ops.ablate`)."""
        return ops.ablate(x_adv, x0, boxes, start, count)

    def scatter_mean(self, scores: torch.Tensor, boxes: torch.Tensor, height: int, width: int) -> torch.Tensor:
        """``(N, height, width)`` mean of the ``(N, m)`` per-box scores over the boxes covering
        each pixel, 0 where none does (see :func:`advinterp_gridablate.ops.scatter_mean`)."""
        return ops.scatter_mean(scores, boxes, height, width)

    def crop(self, src: torch.Tensor, index: torch.Tensor, offsets: torch.Tensor, height: int, width: int,
             fill: float = 0.0) -> torch.Tensor:
        """``(B, C, height, width)``: the window of ``src[index[b]]`` at ``offsets[b] = [oy, ox]``,
        ``fill`` outside the map (see :func:`advinterp_gridablate.ops.crop`)."""
        return ops.crop(src, index, offsets, height, width, fill)

    def paste(self, base: torch.Tensor, index: torch.Tensor, patch: torch.Tensor,
              offsets: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W)``: ``base[index[b]]`` with ``patch[b]`` written at ``offsets[b]``,
        clipped to the map (see :func:`advinterp_gridablate.ops.paste`)."""
        return ops.paste(base, index, patch, offsets)

    def crop_paste(self, src: torch.Tensor, index: torch.Tensor, offsets: torch.Tensor, height: int, width: int,
                   fill: float, patch: torch.Tensor, patch_offsets: torch.Tensor) -> torch.Tensor:
        """``(B, C, height, width)``: :meth:`crop`'s windows with ``patch[b]`` written at
        ``patch_offsets[b]`` (relative to the window's corner, clipped to it), in one pass
        (see :func:`advinterp_gridablate.ops.crop_paste`)."""
        return ops.crop_paste(src, index, offsets, height, width, fill, patch, patch_offsets)

    def __repr__(self) -> str:
        return f"CompiledGridAblation(name={self.name!r})"


def backend_for(device: torch.device | str) -> CompiledGridAblation | None:
    """The compiled backend for ``device``, or ``None`` when no compiled kernel serves it
    (modules not built or not loaded, or a device type without kernels)."""
    device_type = torch.device(device).type
    if device_type in _ext.STATE.device_types():
        return CompiledGridAblation(device_type)
    return None
