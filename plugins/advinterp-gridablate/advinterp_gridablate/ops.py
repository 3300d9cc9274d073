"""The four ops, their fake (meta) kernels and autograd formulas, and checked Python wrappers.

* ``torch.ops.advinterp_gridablate.ablate(x_adv, x0, boxes, start, count)`` ->
  ``(N, count, C, H, W)``: ``out[n, j]`` is ``x_adv[n]`` with the pixels of
  ``boxes[start + j]`` taken from ``x0[n]`` (the image ``x' - delta_{G}`` of the PSE analysis),
  built on the fly: no per-grid mask is materialised.
* ``torch.ops.advinterp_gridablate.scatter_mean(scores, boxes, height, width)`` ->
  ``(N, height, width)``: each pixel gets the mean of ``scores[n, i]`` over the boxes ``i``
  covering it, 0 where none does (``advinterp.ablation.grid_scores_to_map`` is the reference).
* ``torch.ops.advinterp_gridablate.crop(src, index, offsets, height, width, fill)`` ->
  ``(B, C, height, width)``: one window per sample, ``src[index[b]]`` read from
  ``offsets[b] = [oy, ox]``, ``fill`` outside the map (``advinterp.patches.crop_patches``).
* ``torch.ops.advinterp_gridablate.paste(base, index, patch, offsets)`` -> ``(B, C, H, W)``:
  ``base[index[b]]`` with ``patch[b]`` written at ``offsets[b]``, clipped to the map
  (``advinterp.patches.paste_patches``).
* ``torch.ops.advinterp_gridablate.crop_paste(src, index, offsets, height, width, fill, patch,
  patch_offsets)`` -> ``(B, C, height, width)``: ``crop`` with ``patch[b]`` written at
  ``patch_offsets[b] = [py, px]`` (relative to the window's corner, clipped to the window) in
  one pass, each output element written once (``advinterp.patches.crop_paste_patches``).

``crop``, ``paste`` and ``crop_paste`` serve the incremental executor (:mod:`advinterp.incremental`), which
runs under ``torch.no_grad()``: they have no autograd formula, and their wrappers refuse inputs
that require grad while grad mode is on (the references are differentiable).

The schemas and kernels are in C++/CUDA (``csrc/``); this module registers the fake kernels
(shapes only, for ``torch.compile``/export) and the autograd formulas, which is why the
schemas name it (``set_python_module``). :func:`ablate`, :func:`scatter_mean`, :func:`crop`,
:func:`paste` and :func:`crop_paste` validate their inputs and raise :class:`advinterp.ParameterError` before
calling an op.
"""
from __future__ import annotations

import numbers
import operator

import torch

from advinterp.api import AdvinterpError, ParameterError

from . import _ext

__all__ = ["ablate", "scatter_mean", "crop", "paste", "crop_paste", "ExtensionUnavailableError", "SUPPORTED_DTYPES"]

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


def _window_format(maps: torch.Tensor) -> torch.memory_format:
    """Memory format of the maps of crop / paste and of their outputs (as ``advinterp.patches``):
    channels-last when ``maps`` is channels-last but not plainly contiguous, else contiguous."""
    return (torch.channels_last if not maps.is_contiguous() and maps.is_contiguous(memory_format=torch.channels_last)
            else torch.contiguous_format)


def _check_window_fake(name, maps, index, offsets):
    torch._check(maps.dim() == 4, lambda: f"{name} must be (M, C, H, W), got {tuple(maps.shape)}")
    torch._check(index.dim() == 1 and index.dtype == torch.int64, lambda: "index must be an int64 (B,) tensor")
    torch._check(offsets.dim() == 2 and offsets.shape[1] == 2 and offsets.dtype == torch.int64,
                 lambda: "offsets must be an int64 (B, 2) tensor")
    torch._check(offsets.shape[0] == index.shape[0], lambda: "offsets must have one row per index")


def _crop_fake(src, index, offsets, height, width, fill):
    _check_window_fake("crop: src", src, index, offsets)
    torch._check(height >= 0 and width >= 0, lambda: "crop: height and width must be >= 0")
    return torch.empty((index.shape[0], src.shape[1], height, width), dtype=src.dtype, device=src.device,
                       memory_format=_window_format(src))


def _paste_fake(base, index, patch, offsets):
    _check_window_fake("paste: base", base, index, offsets)
    torch._check(patch.dim() == 4 and patch.shape[0] == index.shape[0] and patch.shape[1] == base.shape[1],
                 lambda: "paste: patch must be (B, C, h, w)")
    torch._check(patch.dtype == base.dtype, lambda: "paste: patch must have base's dtype")
    m, c, h, w = base.shape
    return torch.empty((index.shape[0], c, h, w), dtype=base.dtype, device=base.device,
                       memory_format=_window_format(base))


def _crop_paste_fake(src, index, offsets, height, width, fill, patch, patch_offsets):
    _check_window_fake("crop_paste: src", src, index, offsets)
    torch._check(height >= 0 and width >= 0, lambda: "crop_paste: height and width must be >= 0")
    torch._check(patch.dim() == 4 and patch.shape[0] == index.shape[0] and patch.shape[1] == src.shape[1],
                 lambda: "crop_paste: patch must be (B, C, h, w)")
    torch._check(patch.dtype == src.dtype, lambda: "crop_paste: patch must have src's dtype")
    torch._check(patch_offsets.dim() == 2 and patch_offsets.shape[1] == 2 and patch_offsets.dtype == torch.int64,
                 lambda: "crop_paste: patch_offsets must be an int64 (B, 2) tensor")
    torch._check(patch_offsets.shape[0] == index.shape[0], lambda: "crop_paste: patch_offsets must have one row "
                 "per index")
    return torch.empty((index.shape[0], src.shape[1], height, width), dtype=src.dtype, device=src.device,
                       memory_format=_window_format(src))


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
    # (absent from a module built before they existed: the wrappers then ask for a rebuild)
    for _name, _fake in (("crop", _crop_fake), ("paste", _paste_fake), ("crop_paste", _crop_paste_fake)):
        if _ext.has_op(_name):
            torch.library.register_fake(f"{_ext.NAMESPACE}::{_name}", _fake)


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


# ---------------------------------------------------------------- crop / paste (windows)
_INDEX_HINT = "Use torch.zeros(B, dtype=torch.long) when every sample reads map 0."
_NO_GRAD_HINT = ("The compiled window ops have no gradient: call them under torch.no_grad() (as the incremental "
                 "executor does), or use the differentiable reference advinterp.patches.")


def _require_windows(owner: str, t: torch.Tensor, name: str, fused: bool = False) -> None:
    """Like :func:`_require`, for the crop / paste (``fused``: crop_paste) kernels."""
    _require(owner, t, name)
    types = _ext.STATE.fused_device_types() if fused else _ext.STATE.window_device_types()
    if t.device.type not in types:
        what = "crop_paste" if fused else "crop/paste"
        raise ExtensionUnavailableError(
            f"{owner}: the loaded advinterp-gridablate module has no {what} kernel for {t.device.type} "
            f"(built from older sources); rebuild with {_ext.REBUILD}")


def _int_tensor(owner: str, name: str, t, maps: torch.Tensor, maps_name: str, expected: str,
                hint: str | None = None) -> torch.Tensor:
    """``t`` as int64, checked to be an integer tensor on the CPU or on ``maps``'s device."""
    if (not isinstance(t, torch.Tensor) or t.dtype == torch.bool or t.is_floating_point() or t.is_complex()):
        raise ParameterError(owner, name, t, expected, hint)
    if t.device.type != "cpu" and t.device != maps.device:
        raise ParameterError(owner, name, t, f"a tensor on the CPU or on {maps_name}'s device ({maps.device})",
                             f"Keep {name} on the CPU (best: the op reads it on the host).")
    return t.long()


def _check_windows(owner: str, maps, maps_name: str, index, offsets,
                   fused: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """The checks shared by :func:`crop`, :func:`paste` and :func:`crop_paste`; returns
    ``(index, offsets)`` as int64."""
    if not isinstance(maps, torch.Tensor) or maps.dim() != 4:
        raise ParameterError(owner, maps_name, maps, "an (M, C, H, W) tensor of cached feature maps")
    if maps.dtype not in SUPPORTED_DTYPES:
        raise ParameterError(owner, maps_name, maps, "a float32, float64, float16 or bfloat16 tensor",
                             f"Convert it with {maps_name}.float().")
    _require_windows(owner, maps, maps_name, fused)
    index = _int_tensor(owner, "index", index, maps, maps_name, "an integer (B,) tensor: the cached map of each "
                        "sample", _INDEX_HINT)
    if index.dim() != 1:
        raise ParameterError(owner, "index", index, "an integer (B,) tensor: the cached map of each sample",
                             _INDEX_HINT)
    b = index.shape[0]
    expected = f"an integer ({b}, 2) tensor of [oy, ox] window corners, one row per sample"
    offsets = _int_tensor(owner, "offsets", offsets, maps, maps_name, expected)
    if offsets.shape != (b, 2):
        raise ParameterError(owner, "offsets", offsets, expected)
    m = maps.shape[0]
    if b:
        host = index.cpu()
        bad = (host < 0) | (host >= m)
        if bool(bad.any()):
            i = int(bad.nonzero()[0, 0])
            raise ParameterError(owner, f"index[{i}]", int(host[i]), f"a map index in [0, {m}) ({maps_name} holds "
                                 f"{m} maps)")
    return index, offsets


def _no_grad_inputs(owner: str, **tensors: torch.Tensor) -> None:
    if torch.is_grad_enabled():
        for name, t in tensors.items():
            if t.requires_grad:
                raise ParameterError(owner, name, t, "a tensor that does not require grad (or grad mode off)",
                                     _NO_GRAD_HINT)


def _check_crop_args(owner: str, src: torch.Tensor, height, width, fill) -> tuple[int, int, float]:
    """``(height, width, fill)`` of :func:`crop` / :func:`crop_paste`, checked."""
    height, width = _index(owner, "height", height), _index(owner, "width", width)
    if height < 0 or width < 0:
        raise ParameterError(owner, "height/width", (height, width), "a window size >= 0")
    if isinstance(fill, bool) or not isinstance(fill, numbers.Real):
        raise ParameterError(owner, "fill", fill, "a number (float('-inf') for a max pool's padding)")
    fill = float(fill)
    limit = torch.finfo(src.dtype).max
    if abs(fill) > limit and fill not in (float("inf"), float("-inf")):
        raise ParameterError(owner, "fill", fill, f"a value representable in {src.dtype} (|fill| <= {limit:g}) "
                             "or +-inf / nan", "Use float('-inf') for a max pool's padding.")
    return height, width, fill


def _check_patch(owner: str, maps: torch.Tensor, maps_name: str, b: int, patch) -> None:
    c = maps.shape[1]
    if not isinstance(patch, torch.Tensor) or patch.dim() != 4 or patch.shape[0] != b or patch.shape[1] != c:
        raise ParameterError(owner, "patch", patch, f"a ({b}, {c}, h, w) tensor: one patch per sample, "
                             f"{maps_name}'s channels")
    if patch.dtype != maps.dtype or patch.device != maps.device:
        raise ParameterError(owner, "patch", patch, f"{maps_name}'s dtype and device ({maps.dtype}, {maps.device})",
                             f"Convert it with patch.to({maps_name}).")


def crop(src: torch.Tensor, index: torch.Tensor, offsets: torch.Tensor, height: int, width: int,
         fill: float = 0.0) -> torch.Tensor:
    """Windows of cached maps, one per sample, ``fill`` outside the map.

    Bit for bit equal to :func:`advinterp.patches.crop_patches` (values are only moved).

    Args:
        src: ``(M, C, H, W)`` cached maps, float32/float64/float16/bfloat16, contiguous or
            channels-last (other strides are copied to contiguous first), on a device with a
            compiled kernel.
        index: ``(B,)`` integer (int64 best): sample ``b`` reads ``src[index[b]]``; on the CPU
            (best: no copy to check it) or on ``src``'s device. ``B = 0`` gives an empty batch.
        offsets: ``(B, 2)`` integer ``[oy, ox]``: top-left corner of each window, any integers
            (the window may reach past the map or lie wholly outside it).
        height, width: window size (``>= 0``).
        fill: value of positions outside the map (default 0; ``-inf`` for a max pool); must be
            representable in ``src``'s dtype (or be ``±inf`` / ``nan``).

    Returns:
        ``(B, C, height, width)``, ``src``'s dtype, device and memory format:
        ``out[b, c, i, j] = src[index[b], c, oy + i, ox + j]`` inside the map, ``fill`` outside.
        Not differentiable (no autograd formula: the incremental executor runs under no_grad).

    Raises:
        ParameterError: bad shapes, dtypes, devices, an index outside ``[0, M)``, a negative
            window size, an unrepresentable ``fill``, or inputs requiring grad in grad mode.
        ExtensionUnavailableError: the compiled modules (or their crop kernel) are not loaded.
    """
    owner = "advinterp_gridablate.crop"
    index, offsets = _check_windows(owner, src, "src", index, offsets)
    height, width, fill = _check_crop_args(owner, src, height, width, fill)
    _no_grad_inputs(owner, src=src)
    return torch.ops.advinterp_gridablate.crop(src, index, offsets, height, width, fill)


def paste(base: torch.Tensor, index: torch.Tensor, patch: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    """Cached maps with one patch written into each, clipped to the map.

    Bit for bit equal to :func:`advinterp.patches.paste_patches` (values are only moved).

    Args:
        base: ``(M, C, H, W)`` cached maps, float32/float64/float16/bfloat16, contiguous or
            channels-last (other strides are copied to contiguous first), on a device with a
            compiled kernel.
        index: ``(B,)`` integer: sample ``b`` starts from ``base[index[b]]``; on the CPU (best)
            or on ``base``'s device.
        patch: ``(B, C, h, w)`` values to write, ``base``'s dtype and device, any layout (it is
            converted to ``base``'s memory format).
        offsets: ``(B, 2)`` integer ``[oy, ox]``: where ``patch[b, :, 0, 0]`` lands (any
            integers: the part outside the map is dropped).

    Returns:
        ``(B, C, H, W)``, ``base``'s dtype, device and memory format: ``base[index[b]]`` with
        ``out[b, :, oy + i, ox + j] = patch[b, :, i, j]`` wherever that lies in the map.
        Not differentiable (no autograd formula: the incremental executor runs under no_grad).

    Raises:
        ParameterError: bad shapes, dtypes, devices, an index outside ``[0, M)``, or inputs
            requiring grad in grad mode.
        ExtensionUnavailableError: the compiled modules (or their paste kernel) are not loaded.
    """
    owner = "advinterp_gridablate.paste"
    index, offsets = _check_windows(owner, base, "base", index, offsets)
    _check_patch(owner, base, "base", index.shape[0], patch)
    _no_grad_inputs(owner, base=base, patch=patch)
    return torch.ops.advinterp_gridablate.paste(base, index, patch, offsets)


def crop_paste(src: torch.Tensor, index: torch.Tensor, offsets: torch.Tensor, height: int, width: int, fill: float,
               patch: torch.Tensor, patch_offsets: torch.Tensor) -> torch.Tensor:
    """:func:`crop`'s windows with one patch written into each, in one pass.

    Equal, bit for bit, to ``paste(crop(src, index, offsets, height, width, fill), arange(B),
    patch, patch_offsets)`` and to :func:`advinterp.patches.crop_paste_patches`, without the
    second full copy of the windows: each output element is written once (the incremental
    executor's region of a changed box: cached values around it, the new values on it).

    Args:
        src, index, offsets, height, width, fill: the windows, as :func:`crop`.
        patch: ``(B, C, h, w)`` values to write, ``src``'s dtype and device, any layout (it is
            converted to ``src``'s memory format).
        patch_offsets: ``(B, 2)`` integer ``[py, px]``: where ``patch[b, :, 0, 0]`` lands,
            relative to the corner of window ``b`` (any integers: the part outside the window is
            dropped); on the CPU (best) or on ``src``'s device.

    Returns:
        ``(B, C, height, width)``, ``src``'s dtype, device and memory format:
        ``out[b, c, i, j] = patch[b, c, i - py, j - px]`` where that lies in patch ``b``, else
        ``src[index[b], c, oy + i, ox + j]`` inside the map, else ``fill``. Not differentiable.

    Raises:
        ParameterError: as :func:`crop` and :func:`paste`, and a bad ``patch_offsets``.
        ExtensionUnavailableError: the compiled modules (or their crop_paste kernel) are not loaded.
    """
    owner = "advinterp_gridablate.crop_paste"
    index, offsets = _check_windows(owner, src, "src", index, offsets, fused=True)
    height, width, fill = _check_crop_args(owner, src, height, width, fill)
    b = index.shape[0]
    _check_patch(owner, src, "src", b, patch)
    expected = f"an integer ({b}, 2) tensor of [py, px] patch corners in the window, one row per sample"
    patch_offsets = _int_tensor(owner, "patch_offsets", patch_offsets, src, "src", expected)
    if patch_offsets.shape != (b, 2):
        raise ParameterError(owner, "patch_offsets", patch_offsets, expected)
    _no_grad_inputs(owner, src=src, patch=patch)
    return torch.ops.advinterp_gridablate.crop_paste(src, index, offsets, height, width, fill, patch, patch_offsets)
