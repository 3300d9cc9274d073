"""The two ops, their fake (meta) kernels and autograd formulas, and checked Python wrappers.

* ``torch.ops.advinterp_gridablate.ablate(x_adv, x0, boxes, start, count)`` ->
  ``(N, count, C, H, W)``: ``out[n, j]`` is ``x_adv[n]`` with the pixels of
  ``boxes[start + j]`` taken from ``x0[n]`` (the image ``x' - delta_{G}`` of the PSE analysis),
  built on the fly: no per-grid mask is materialised.
* ``torch.ops.advinterp_gridablate.scatter_mean(scores, boxes, height, width)`` ->
  ``(N, height, width)``: each pixel gets the mean of ``scores[n, i]`` over the boxes ``i``
  covering it, 0 where none does (``advinterp.ablation.grid_scores_to_map`` is the reference).

The schemas and kernels are in C++/CUDA (``csrc/``); this module registers the fake kernels
(shapes only, for ``torch.compile``/export) and the autograd formulas, which is why the
schemas name it (``set_python_module``). :func:`ablate` and :func:`scatter_mean` validate
their inputs and raise :class:`advinterp.ParameterError` before calling an op.
"""
from __future__ import annotations

import operator

import torch

from advinterp.api import AdvinterpError, ParameterError

from . import _ext

__all__ = ["ablate", "scatter_mean", "ExtensionUnavailableError", "SUPPORTED_DTYPES"]

SUPPORTED_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)
_BOXES_HINT = "Make boxes with advinterp.ablation.grid_boxes(height, width, size, stride)."


class ExtensionUnavailableError(AdvinterpError, ImportError):
    """The compiled modules of advinterp-gridablate are not loaded (the message says why).

    ``hint``: the command that rebuilds them.
    """

    hint = _ext.REBUILD


# ------------------------------------------------------------------ fake kernels, autograd
def _box_masks(boxes: torch.Tensor, height, width, device) -> torch.Tensor:
    """``(k, height, width)`` bool masks of ``(k, 4)`` boxes (used by the backward formulas only)."""
    b = boxes.to(device)
    ys = torch.arange(height, device=device)
    xs = torch.arange(width, device=device)
    in_y = (ys[None, :] >= b[:, 0:1]) & (ys[None, :] < b[:, 2:3])
    in_x = (xs[None, :] >= b[:, 1:2]) & (xs[None, :] < b[:, 3:4])
    return in_y[:, :, None] & in_x[:, None, :]


def _ablate_fake(x_adv, x0, boxes, start, count):
    torch._check(x_adv.dim() == 4, lambda: f"ablate: x_adv must be (N, C, H, W), got {tuple(x_adv.shape)}")
    torch._check(x0.shape == x_adv.shape, lambda: "ablate: x0 and x_adv must have the same shape")
    torch._check(x0.dtype == x_adv.dtype, lambda: "ablate: x0 and x_adv must have the same dtype")
    torch._check(boxes.dim() == 2 and boxes.shape[1] == 4, lambda: "ablate: boxes must be (m, 4)")
    torch._check(boxes.dtype == torch.int64, lambda: "ablate: boxes must be int64")
    torch._check(start >= 0 and count >= 0, lambda: "ablate: start and count must be >= 0")
    torch._check(start + count <= boxes.shape[0], lambda: "ablate: start + count must be <= len(boxes)")
    n, c, h, w = x_adv.shape
    return x_adv.new_empty((n, count, c, h, w))


def _scatter_fake(scores, boxes, height, width):
    torch._check(scores.dim() == 2, lambda: "scatter_mean: scores must be (N, m)")
    torch._check(boxes.dim() == 2 and boxes.shape[1] == 4, lambda: "scatter_mean: boxes must be (m, 4)")
    torch._check(boxes.dtype == torch.int64, lambda: "scatter_mean: boxes must be int64")
    torch._check(scores.shape[1] == boxes.shape[0], lambda: "scatter_mean: one score per box")
    torch._check(height >= 1 and width >= 1, lambda: "scatter_mean: height and width must be positive")
    return scores.new_empty((scores.shape[0], height, width))


def _ablate_setup(ctx, inputs, output):
    x_adv, x0, boxes, start, count = inputs
    ctx.save_for_backward(boxes)
    ctx.start, ctx.count = start, count


def _ablate_backward(ctx, grad):
    """``d out[n, j] / d x0[n]`` is 1 inside box ``start + j``, ``d / d x_adv[n]`` 1 outside."""
    (boxes,) = ctx.saved_tensors
    h, w = grad.shape[-2:]
    inside = _box_masks(boxes[ctx.start:ctx.start + ctx.count], h, w, grad.device)[None, :, None]
    g_adv = torch.where(inside, 0, grad).sum(1) if ctx.needs_input_grad[0] else None
    g_x0 = torch.where(inside, grad, 0).sum(1) if ctx.needs_input_grad[1] else None
    return g_adv, g_x0, None, None, None


def _scatter_setup(ctx, inputs, output):
    scores, boxes, height, width = inputs
    ctx.save_for_backward(boxes)


def _scatter_backward(ctx, grad):
    """``d out[n, p] / d scores[n, i]`` is ``1 / cover[p]`` for the pixels ``p`` of box ``i``."""
    (boxes,) = ctx.saved_tensors
    h, w = grad.shape[-2:]
    masks = _box_masks(boxes, h, w, grad.device)
    cover = masks.sum(0)
    g = torch.where(cover > 0, grad / cover.clamp(min=1).to(grad.dtype), 0)
    return torch.einsum("nhw,mhw->nm", g, masks.to(grad.dtype)), None, None, None


if _ext.STATE.available:
    torch.library.register_fake(f"{_ext.NAMESPACE}::ablate", _ablate_fake)
    torch.library.register_fake(f"{_ext.NAMESPACE}::scatter_mean", _scatter_fake)
    torch.library.register_autograd(f"{_ext.NAMESPACE}::ablate", _ablate_backward, setup_context=_ablate_setup)
    torch.library.register_autograd(f"{_ext.NAMESPACE}::scatter_mean", _scatter_backward,
                                    setup_context=_scatter_setup)


# ------------------------------------------------------------------------------ wrappers
def _require(owner: str, t: torch.Tensor, name: str) -> None:
    state = _ext.STATE
    if not state.available:
        raise ExtensionUnavailableError(f"{owner}: advinterp-gridablate's compiled kernels are {state}")
    types = state.device_types()
    if t.device.type not in types:
        hint = ("advinterp.registry.get_ablation_backend(device) falls back to the pure-PyTorch reference "
                "where no kernel is compiled.")
        if t.device.type == "cuda":
            hint = f"The CUDA kernels are not loaded: {state.cuda_reason}. " + hint
        raise ParameterError(owner, name, t, f"a tensor on a device with a compiled kernel ({', '.join(types)})",
                             hint)


def _index(owner: str, name: str, value) -> int:
    if isinstance(value, bool):
        raise ParameterError(owner, name, value, "an integer")
    try:
        return operator.index(value)
    except TypeError:
        raise ParameterError(owner, name, value, "an integer") from None


def _check_boxes(owner: str, boxes, height: int, width: int, start: int, count: int) -> torch.Tensor:
    """``boxes`` as int64, with rows ``start .. start+count-1`` checked to lie in the image."""
    if (not isinstance(boxes, torch.Tensor) or boxes.dim() != 2 or boxes.shape[1] != 4
            or boxes.dtype == torch.bool or boxes.is_floating_point() or boxes.is_complex()):
        raise ParameterError(owner, "boxes", boxes, "an integer (m, 4) tensor of [y0, x0, y1, x1] windows (end "
                             "exclusive)", _BOXES_HINT)
    boxes = boxes.long()
    used = boxes[start:start + count].cpu()
    y0, x0, y1, x1 = used.unbind(1)
    bad = (y0 < 0) | (y0 > y1) | (y1 > height) | (x0 < 0) | (x0 > x1) | (x1 > width)
    if bool(bad.any()):
        i = int(bad.nonzero()[0, 0])
        raise ParameterError(owner, f"boxes[{start + i}]", used[i].tolist(),
                             f"a window inside the {height}x{width} image (0 <= y0 <= y1 <= {height}, "
                             f"0 <= x0 <= x1 <= {width})", _BOXES_HINT)
    return boxes


def ablate(x_adv: torch.Tensor, x0: torch.Tensor, boxes: torch.Tensor, start: int = 0,
           count: int | None = None) -> torch.Tensor:
    """Grid-ablated images: ``x_adv`` with the pixels of each box put back from ``x0``.

    Args:
        x_adv: ``(N, C, H, W)`` adversarial images, float32/float64/float16/bfloat16, on a
            device with a compiled kernel (``advinterp_gridablate.status().device_types()``).
        x0: ``(N, C, H, W)`` clean images, same dtype and device.
        boxes: ``(m, 4)`` integer ``[y0, x0, y1, x1]`` windows (end exclusive), e.g. from
            :func:`advinterp.ablation.grid_boxes`; on the CPU (best) or on the images' device.
        start: first box (default 0).
        count: number of boxes from ``start`` (default: all the rest).

    Returns:
        ``(N, count, C, H, W)`` contiguous, dtype/device of ``x_adv``; ``out[n, j]`` is
        ``x_adv[n]`` with the pixels of ``boxes[start + j]`` taken from ``x0[n]``.
        Differentiable in ``x_adv`` and ``x0``.

    Raises:
        ParameterError: bad shapes, dtypes, devices, boxes outside the image, or a
            ``start``/``count`` range outside ``[0, m]``.
        ExtensionUnavailableError: the compiled modules are not loaded.
    """
    owner = "advinterp_gridablate.ablate"
    if not isinstance(x_adv, torch.Tensor) or x_adv.dim() != 4:
        raise ParameterError(owner, "x_adv", x_adv, "an (N, C, H, W) tensor")
    if x_adv.dtype not in SUPPORTED_DTYPES:
        raise ParameterError(owner, "x_adv", x_adv, "a float32, float64, float16 or bfloat16 tensor",
                             "Convert it with x_adv.float().")
    if not isinstance(x0, torch.Tensor) or x0.shape != x_adv.shape:
        raise ParameterError(owner, "x0", x0, f"the shape of x_adv {tuple(x_adv.shape)}",
                             "Pass the clean images x_adv was made from (AdversarialBatch.x0).")
    if x0.dtype != x_adv.dtype or x0.device != x_adv.device:
        raise ParameterError(owner, "x0", x0, f"the dtype and device of x_adv ({x_adv.dtype}, {x_adv.device})",
                             "Convert it with x0.to(x_adv).")
    _require(owner, x_adv, "x_adv")
    if not isinstance(boxes, torch.Tensor) or boxes.dim() != 2:
        raise ParameterError(owner, "boxes", boxes, "an integer (m, 4) tensor of [y0, x0, y1, x1] windows",
                             _BOXES_HINT)
    m = boxes.shape[0]
    start = _index(owner, "start", start)
    if not 0 <= start <= m:
        raise ParameterError(owner, "start", start, f"a box index in [0, {m}] (there are {m} boxes)")
    count = m - start if count is None else _index(owner, "count", count)
    if not 0 <= count <= m - start:
        raise ParameterError(owner, "count", count, f"0 <= count <= {m - start} (= {m} boxes - start {start})",
                             "Ablate the boxes in chunks: start in range(0, m, chunk), count=min(chunk, m - start).")
    h, w = x_adv.shape[-2:]
    boxes = _check_boxes(owner, boxes, h, w, start, count)
    if boxes.device != x_adv.device:
        boxes = boxes.cpu()
    return torch.ops.advinterp_gridablate.ablate(x_adv, x0, boxes, start, count)


def scatter_mean(scores: torch.Tensor, boxes: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Per-grid scores to a per-pixel map, averaging where boxes overlap (0 where none covers).

    Bit for bit equal to :func:`advinterp.ablation.grid_scores_to_map` (sums in box order, in
    float32 for half/bfloat16 scores).

    Args:
        scores: ``(N, m)`` (or ``(m,)``) float32/float64/float16/bfloat16 scores, one per box.
        boxes: ``(m, 4)`` integer ``[y0, x0, y1, x1]`` windows inside the image.
        height, width: size of the map.

    Returns:
        ``(N, height, width)`` (``(height, width)`` for 1-D scores), dtype/device of ``scores``.
        Differentiable in ``scores``.
    """
    owner = "advinterp_gridablate.scatter_mean"
    if not isinstance(scores, torch.Tensor) or scores.dim() not in (1, 2):
        raise ParameterError(owner, "scores", scores, "an (N, m) or (m,) tensor of per-box scores")
    if scores.dtype not in SUPPORTED_DTYPES:
        raise ParameterError(owner, "scores", scores, "a float32, float64, float16 or bfloat16 tensor",
                             "Convert it with scores.float().")
    _require(owner, scores, "scores")
    height, width = _index(owner, "height", height), _index(owner, "width", width)
    if height < 1 or width < 1:
        raise ParameterError(owner, "height/width", (height, width), "positive integers")
    if not isinstance(boxes, torch.Tensor) or boxes.dim() != 2:
        raise ParameterError(owner, "boxes", boxes, "an integer (m, 4) tensor of [y0, x0, y1, x1] windows",
                             _BOXES_HINT)
    if boxes.shape[0] != scores.shape[-1]:
        raise ParameterError(owner, "scores", scores, f"one score per box ({boxes.shape[0]} boxes) in the last dim")
    boxes = _check_boxes(owner, boxes, height, width, 0, boxes.shape[0])
    if boxes.device != scores.device:
        boxes = boxes.cpu()
    squeeze = scores.dim() == 1
    out = torch.ops.advinterp_gridablate.scatter_mean(scores[None] if squeeze else scores, boxes, height, width)
    return out[0] if squeeze else out
