"""``cam_replacement``: set random pixels of the clean image's CAM region to fixed values, in the
clean and the adversarial image, and watch the top-1 (Ding et al., Sec. 4.2, Tables 2-3; the
CAMs of both predictions are Fig. 3).

For each pair ``(x0, x')``:

1. ``p0`` and ``p'``: the model's top-1 classes of ``x0`` and ``x'``; ``F(x0, p0)`` and
   ``F(x', p')``: the explainer's maps (CAM by default) of each image for its own prediction
   (Fig. 3: clean, CAM of its prediction, adversarial, CAM of its prediction).
2. The region: the pixels where ``F(x0, p0)`` is at least its ``1 - top`` quantile (the top
   20 % by default: the "red area" of the clean image's CAM).
3. ``k`` distinct pixels of the region drawn at random (seeded; all of them when the region
   is smaller), the same positions in both images.
4. For each value ``v`` (of 255): those pixels set to ``v / 255`` in every channel of ``x0`` and
   of ``x'``; top-1 label and confidence before and after
   (:class:`~advinterp.analyzers.confidence_change.Top1Change`), and the change statistics:
   the mean confidence change over the images whose label did not change (those that changed
   are counted).

The paper's reading: the clean image's confidence moves more than the adversarial image's
(``|clean change| > |adversarial change|``), since the adversarial prediction no longer rests
on the clean image's salient region.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np
import torch

from ..components import Analyzer, Explainer
from ..exceptions import ParameterError
from ..params import Param
from ..results import Result
from .confidence_change import Top1Change, top1

__all__ = ["CamReplacementAnalyzer", "CamReplacement", "region_pixels", "replace_pixels"]


def region_pixels(cam: torch.Tensor, top: float, k: int, generator: torch.Generator) -> tuple[torch.Tensor, int]:
    """``k`` distinct pixels drawn uniformly from the top-``top`` region of one map.

    Args:
        cam: ``(H, W)`` map; the region is ``cam >= quantile(cam, 1 - top)``.
        top: the fraction of the map's pixels in the region, in (0, 1].
        k: pixels to draw (all of the region when it is smaller).
        generator: the random generator (CPU).

    Returns:
        ``(positions (min(k, R), 2) int64 (row, col), R)`` with ``R`` the region's size.
    """
    h, w = cam.shape
    flat = cam.detach().double().flatten().cpu()
    nu = torch.quantile(flat, 1 - top) if top < 1 else flat.min()
    region = (flat >= nu).nonzero().flatten()
    r = len(region)
    pick = region[torch.randperm(r, generator=generator)[:k]]
    return torch.stack([pick // w, pick % w], 1), r


def replace_pixels(x: torch.Tensor, positions: torch.Tensor, value: float) -> torch.Tensor:
    """A copy of ``x`` ``(C, H, W)`` with the pixels ``positions`` ``(k, 2)`` set to ``value`` in
    every channel."""
    out = x.clone()
    if len(positions):
        out[:, positions[:, 0].to(x.device), positions[:, 1].to(x.device)] = value
    return out


@dataclass(frozen=True)
class CamReplacement(Result):
    """Result of ``cam_replacement`` (Tables 2-3 and Fig. 3 of Ding et al.).

    Attributes:
        values: the replacement values ``(V,)`` (of 255).
        changes: ``V`` :class:`Top1Change` s, one per value (before: the untouched pair).
        positions: ``(N, k, 2)`` the replaced pixels (row, col) per image; ``-1`` pads images
            whose region held fewer than ``k`` pixels.
        region_size: ``(N,)`` pixels in each clean image's region.
        pred_clean, pred_adv: ``(N,)`` top-1 of ``x0`` and ``x'``.
        cam_clean, cam_adv: ``(N, H, W)`` ``F(x0, p0)`` and ``F(x', p')`` (Fig. 3), each divided
            by its maximum ``|F|`` (zero maps stay zero).
        explainer, attack: names; ``top``, ``k``, ``seed``: the parameters.
    """

    values: tuple[int, ...]
    changes: tuple[Top1Change, ...]
    positions: np.ndarray
    region_size: np.ndarray
    pred_clean: np.ndarray
    pred_adv: np.ndarray
    cam_clean: np.ndarray
    cam_adv: np.ndarray
    explainer: str = ""
    attack: str = ""
    top: float = 0.2
    k: int = 100
    seed: int = 0

    def change(self, value: int) -> Top1Change:
        """The :class:`Top1Change` of replacement value ``value``."""
        if value not in self.values:
            raise ParameterError("CamReplacement.change", "value", value, f"one of {list(self.values)}")
        return self.changes[list(self.values).index(value)]

    def statistics(self) -> list[dict[str, Any]]:
        """The change-statistics row per value: ``value`` and
        :meth:`Top1Change.statistics` (signed and absolute mean confidence change of clean and
        adversarial images over the label-unchanged ones, labels changed, accuracies)."""
        return [{"value": int(v), **c.statistics()} for v, c in zip(self.values, self.changes)]

    def rows(self) -> list[dict[str, Any]]:
        """:meth:`statistics` with the attack and explainer."""
        return [{"attack": self.attack, "explainer": self.explainer, **r} for r in self.statistics()]

    def paper_rows(self, classes: Any = None, images: int | None = None) -> list[dict[str, Any]]:
        """The paper's table layout: per image and value a ``before`` and an ``after`` row with
        the clean and adversarial top-1 label and confidence (%), for the first ``images``
        images (all by default); the class names from ``classes`` when given."""
        out = []
        n = len(self.pred_clean) if images is None else min(int(images), len(self.pred_clean))
        tables = [c.take(slice(0, n)).rows(classes) for c in self.changes]
        for i in range(n):
            for v, rows in zip(self.values, tables):
                for r in rows[2 * i:2 * i + 2]:
                    out.append({"image": i, "class": r["class"], "value": int(v), "when": r["when"],
                                "clean_label": r["clean_label"], "clean_conf_%": r["clean_conf_%"],
                                "adv_label": r["adv_label"], "adv_conf_%": r["adv_conf_%"]})
        return out


def _check_values(v: Any) -> bool:
    return (isinstance(v, (list, tuple)) and len(v) > 0 and len(set(v)) == len(v)
            and all(isinstance(a, int) and not isinstance(a, bool) and 0 <= a <= 255 for a in v))


class CamReplacementAnalyzer(Analyzer):
    """Replace ``k`` random pixels of the clean image's CAM region (and the same pixels of the
    adversarial image) by fixed values; top-1 label and confidence before/after (Tables 2-3).

    Parameters: ``explainer`` (registry name, ``"cam"``), ``explainer_params`` (None or a dict),
    ``top`` (0.2: the region is the top 20 % of ``F(x0, p0)``), ``k`` (100 pixels), ``values``
    (``[0, 127, 200, 255]``, of 255), ``seed`` (0: the pixels drawn; the same seed draws the
    same pixels), ``batch_size`` (128 images per forward).

    Context: ``explainer``: an :class:`~advinterp.Explainer` instance or a registered name used
    instead of the parameter.
    """

    name = "cam_replacement"
    context_keys = ("explainer",)
    params = {
        "explainer": Param("cam", lambda v: isinstance(v, str) and bool(v), "a registered explainer name",
                           doc="registry name of the explainer giving the CAM", invalid=("", 3)),
        "explainer_params": Param(
            None, lambda v: v is None or (isinstance(v, dict) and all(isinstance(k, str) for k in v)),
            "None or a dict of the explainer's parameters", invalid=("cam", [1])),
        "top": Param(0.2, lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and 0 < v <= 1,
                     "a fraction in (0, 1]", doc="the region: the top fraction of the clean image's CAM",
                     invalid=(0, 1.5, "x")),
        "k": Param.integer(100, low=1),
        "values": Param([0, 127, 200, 255], _check_values, "a non-empty list of distinct integers in 0..255",
                        doc="the replacement values (of 255)", invalid=([], [256], [1, 1], "0")),
        "seed": Param.integer(0, low=0),
        "batch_size": Param.integer(128, low=1),
    }

    def _explainer(self, context: Mapping[str, Any]) -> Explainer:
        from ..registry import get_explainer

        exp = context.get("explainer")
        if exp is None or isinstance(exp, str):
            return get_explainer(exp or self.explainer, **(self.explainer_params or {}))
        if not isinstance(exp, Explainer):
            raise ParameterError(f"{type(self).__name__}.analyze", "explainer", exp,
                                 "an advinterp Explainer instance or a registered explainer name")
        return exp

    def _analyze(self, model, batch, **context):
        exp = self._explainer(context)
        x0, xa = batch.x0.detach(), batch.x_adv.detach()
        n, _, h, w = x0.shape
        bs = self.batch_size
        before = (top1(model, x0, bs), top1(model, xa, bs))
        p0, pa = torch.as_tensor(before[0][0]), torch.as_tensor(before[1][0])
        cam0 = torch.cat([exp.explain(model, x0[i:i + bs], p0[i:i + bs]).maps.cpu() for i in range(0, n, bs)]) \
            if n else torch.zeros(0, h, w)
        cama = torch.cat([exp.explain(model, xa[i:i + bs], pa[i:i + bs]).maps.cpu() for i in range(0, n, bs)]) \
            if n else torch.zeros(0, h, w)
        gen = torch.Generator().manual_seed(int(self.seed))
        positions = np.full((n, self.k, 2), -1, np.int64)
        region = np.zeros(n, np.int64)
        picks = []
        for i in range(n):
            pos, region[i] = region_pixels(cam0[i], float(self.top), int(self.k), gen)
            positions[i, :len(pos)] = pos.numpy()
            picks.append(pos)
        changes = []
        for v in self.values:
            level = float(v) / 255
            x0v = torch.stack([replace_pixels(x0[i], picks[i], level) for i in range(n)]) if n else x0
            xav = torch.stack([replace_pixels(xa[i], picks[i], level) for i in range(n)]) if n else xa
            changes.append(Top1Change.measure(model, x0, xa, batch.y_true, before=before, after_x0=x0v,
                                              after_xadv=xav, batch_size=bs))
        return CamReplacement(tuple(int(v) for v in self.values), tuple(changes), positions, region,
                              before[0][0], before[1][0], _unit(cam0).numpy(), _unit(cama).numpy(),
                              explainer=exp.name or type(exp).__name__, attack=batch.attack or "",
                              top=float(self.top), k=int(self.k), seed=int(self.seed))


def _unit(maps: torch.Tensor) -> torch.Tensor:
    """Each ``(H, W)`` map divided by its maximum ``|value|`` (zero maps unchanged), float32."""
    if not len(maps):
        return maps.float()
    peak = maps.abs().flatten(1).amax(1)
    return (maps / torch.where(peak > 0, peak, torch.ones_like(peak))[:, None, None]).float()
