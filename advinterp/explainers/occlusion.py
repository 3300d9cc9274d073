"""``occlusion``: Captum ``Occlusion``'s attribution, all targets from one pass, incremental.

Occlusion (Zeiler and Fergus 2014; ``captum.attr.Occlusion``) slides a ``size x size`` window
over the image with step ``stride``, replaces the window by a baseline, and gives every pixel
the mean, over the windows covering it, of the drop of the target's logit::

    M[p] = mean_{j : p in W_j} ( Z(x)[t] - Z(x with W_j := baseline)[t] )

The windows are Captum's: corners ``k * stride`` for ``k = 0 .. ceil((H - size) / stride)``
along each axis, the last one clipped at the border when the stride does not land on it
(:func:`occlusion_windows`), so the maps equal Captum's with
``sliding_window_shapes=(C, size, size)``, ``strides=(C, stride, stride)`` and the same
baseline (any channel of Captum's ``(N, C, H, W)`` attribution: it is constant over them).

Cost: where the model traces with ``torch.fx`` (``incremental=None``, the default), one forward
of ``x`` that keeps every feature map, then each occluded image recomputes only the region its
window reaches (:mod:`advinterp.incremental`); else one full forward per occluded image. Either
way every target class is read from the same logits: ``explain_many`` / ``explain_pair`` cost
no more passes than ``explain``. Captum's ``Occlusion`` runs all windows once per target.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import torch

from ..ablation import ReferenceGridAblation, grid_scores_to_map
from ..components import Explainer
from ..exceptions import ParameterError
from ..params import Param
from ..progress import progress_bar
from ..registry import get_ablation_backend

__all__ = ["Occlusion", "occlusion_windows", "occlusion_logits"]


def occlusion_windows(height: int, width: int, size: int, stride: int) -> torch.Tensor:
    """Captum ``Occlusion``'s windows on an ``height x width`` image: corners ``k * stride``,
    ``k = 0 .. ceil((n - size) / stride)``, clipped at the border.

    Returns:
        ``(m, 4)`` int64 ``[y0, x0, y1, x1]`` (end exclusive), row-major.
    """
    def starts(n):
        return [k * stride for k in range(math.ceil((n - size) / stride) + 1)]

    return torch.tensor([[y, x, min(y + size, height), min(x + size, width)]
                         for y in starts(height) for x in starts(width)], dtype=torch.long).reshape(-1, 4)


@torch.no_grad()
def occlusion_logits(model: Any, x: torch.Tensor, baseline: torch.Tensor, size: int, stride: int,
                     max_batch: int = 256, incremental: bool | None = None, threshold: float = 0.6,
                     backend: Any = None, report: dict | None = None,
                     progress: bool | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Logits of ``x`` and of every occluded copy of it.

    Args:
        model: a :class:`~advinterp.ModelAdapter`; call under ``model.preserved()``.
        x: ``(N, C, H, W)`` pixels on the model's device and dtype.
        baseline: ``(N, C, H, W)`` the pixels a window takes (same device and dtype).
        size, stride: the window side and step (``stride <= size``).
        max_batch: most images (or windows) per pass (256).
        incremental: ``None`` (auto), ``True`` or ``False``: as in
            :func:`advinterp.analyzers.pse.ablated_class_logits`.
        threshold: the incremental path's switch to full maps (0.6).
        backend: grid-ablation backend; ``None``: the plugins' choice for the model's device.
        report: receives ``path`` (``"incremental"`` / ``"full"``) and ``note``.

    Returns:
        ``(windows (m, 4) int64 CPU, logits (N, K) of x, occluded (N, m, K))`` on the model's device.
    """
    from ..incremental import IncrementalUnavailable, incremental_window_logits

    n, _, h, w = x.shape
    boxes = occlusion_windows(h, w, size, stride)
    m = len(boxes)
    report = {} if report is None else report
    backend = get_ablation_backend(x.device) if backend is None else backend
    disable = None if progress is None else not progress
    ref: list[torch.Tensor] = [None] * n  # type: ignore[list-item]
    occ: list[list[torch.Tensor]] = [[] for _ in range(n)]
    if incremental is not False and n and m:
        flush = boxes.clone()
        flush[:, 0] = flush[:, 0].clamp(max=h - size)
        flush[:, 1] = flush[:, 1].clamp(max=w - size)
        flush[:, 2], flush[:, 3] = flush[:, 0] + size, flush[:, 1] + size
        ys = torch.arange(size)
        inside = (((flush[:, 0:1] + ys) >= boxes[:, 0:1])[:, :, None]
                  & ((flush[:, 1:2] + ys) >= boxes[:, 1:2])[:, None, :])
        try:
            incremental_window_logits(model, x, baseline, flush, lambda i, j0, j1, z: occ[i].append(z),
                                      lambda i, z: ref.__setitem__(i, z), max_batch, backend, threshold,
                                      strict=incremental is None, inside=None if bool(inside.all()) else inside,
                                      report=report, disable=disable, desc="occlusion")
            return boxes, torch.cat(ref), torch.stack([torch.cat(o) for o in occ])
        except IncrementalUnavailable as e:
            report.update(path="full", note=str(e))
            occ = [[] for _ in range(n)]
    report.setdefault("path", "full")
    logits = torch.cat([model.logits(x[i:i + max_batch]) for i in range(0, n, max_batch)]) if n else None
    for i in progress_bar(range(n), desc="occlusion", disable=disable):
        for j0 in range(0, m, max_batch):
            c = min(m, j0 + max_batch) - j0
            imgs = backend.ablate(x[i:i + 1], baseline[i:i + 1], boxes, j0, c)[0]
            occ[i].append(model.logits(imgs))
    if logits is None:
        return boxes, x.new_zeros((0, 0)), x.new_zeros((0, m, 0))
    return boxes, logits, torch.stack([torch.cat(o) for o in occ])


class Occlusion(Explainer):
    """Occlusion maps (``captum.attr.Occlusion``'s semantics), every target from one pass.

    Parameters:
        size: window side in pixels (None: the PSE grid, 13/299 of the image side, >= 2).
        stride: window step, ``<= size`` (None: ``size``).
        baseline: the pixel value a window takes, in [0, 1] (0.0: black, Captum's default
            baseline of 0 in pixel space).
        max_batch: most images (or windows) per pass (256).
        incremental: ``None`` (default): exact incremental inference where the model traces and
            its ops are supported; ``True`` / ``False``: force it on (unsupported ops on full
            maps) / off.
        full_threshold: incremental path: full maps once a changed box covers this share of
            its map (0.6).

    ``explain(model, x, target)`` returns maps ``(N, H, W)`` at the input's resolution
    (``layer_maps`` are the same maps, ``layer="input"``); :attr:`last_path` says which path
    the last call ran (``"incremental"`` / ``"full"``) and :attr:`last_note` why.
    """

    name = "occlusion"
    params = {
        "size": Param.integer(None, low=1, allow_none=True, doc="window side (None: 13/299 of the image side)"),
        "stride": Param.integer(None, low=1, allow_none=True, doc="window step (None: = size)"),
        "baseline": Param.number(0.0, low=0.0, high=1.0, doc="pixel value of an occluded window"),
        "max_batch": Param.integer(256, low=1, doc="most images per pass"),
        "incremental": Param(None, lambda v: v is None or isinstance(v, bool), "True, False or None (auto)",
                             "exact incremental inference (None: when the model traces)", ("yes", 1)),
        "full_threshold": Param.number(0.6, low=0, high=1, low_open=True,
                                       doc="incremental path: full maps once a box covers this share of its map"),
    }
    conformance_params = {"size": 4, "max_batch": 16}

    def _check_params(self) -> None:
        if self.size is not None and self.stride is not None and self.stride > self.size:
            raise ParameterError(type(self).__name__, "stride", self.stride, f"a stride no larger than size ({self.size})",
                                 "A larger stride leaves pixels in no window (Captum refuses it too).")

    def _explain_many(self, model, x: torch.Tensor, targets: Sequence[torch.Tensor]):
        from ..analyzers.pse import default_grid_size

        h, w = x.shape[-2:]
        size = default_grid_size(h, w) if self.size is None else int(self.size)
        if size > min(h, w):
            raise ParameterError(type(self).__name__, "size", size, f"a window no larger than the image ({h}x{w})")
        stride = size if self.stride is None else int(self.stride)
        if stride > size:
            raise ParameterError(type(self).__name__, "stride", stride, f"a stride no larger than size ({size})")
        report: dict = {}
        with torch.no_grad():
            boxes, z, occ = occlusion_logits(model, x, torch.full_like(x, float(self.baseline)), size, stride,
                                             int(self.max_batch), self.incremental, float(self.full_threshold),
                                             report=report)
        self.last_path, self.last_note = report.get("path", "full"), report.get("note", "")
        maps = []
        for t in targets:
            drop = (z.gather(1, t[:, None]) - occ.gather(2, t[:, None, None].expand(-1, occ.shape[1], 1))[..., 0])
            maps.append(grid_scores_to_map(drop, boxes.to(drop.device), int(h), int(w)) if len(x)
                        else x.new_zeros((0, h, w)))
        return maps, "input"
