"""Top-1 label and confidence of clean and adversarial images before and after an intervention,
and the paper's "change statistics" row (Ding et al., Tables 2-3 and 8-13).

Shared by the interventions of ``002_...`` -- CAM-region pixel replacement (``cam_replacement``),
channel masking (``channel_masking``) and filter scaling (``filter_scaling``): each measures
:func:`top1` of the clean and the adversarial images with the model as it is, intervenes, measures
again, and keeps the four measurements in a :class:`Top1Change`.

Change statistics (the bottom row of the paper's tables): the mean over images of
``conf_after - conf_before`` (confidence of the top-1 class, in [0, 1]), over the images whose
top-1 label did not change; the images whose label changed are left out and counted.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..results import Result

__all__ = ["Top1Change", "top1", "change_statistics"]


def top1(model: Any, x: torch.Tensor, batch_size: int = 128) -> tuple[np.ndarray, np.ndarray]:
    """Top-1 label and its softmax probability of ``x`` ``(N, C, H, W)`` (pixels in [0, 1]) under
    ``model`` (a :class:`~advinterp.ModelAdapter`), in batches of ``batch_size``:
    ``(labels (N,) int64, confidence (N,) float64 in [0, 1])``."""
    labels, conf = [], []
    with torch.no_grad():
        for i in range(0, len(x), batch_size):
            p = torch.softmax(model(x[i:i + batch_size].to(model.device, model.dtype)).double(), 1)
            c, l = p.max(1)
            labels.append(l.cpu())
            conf.append(c.cpu())
    if not labels:
        return np.zeros(0, np.int64), np.zeros(0, np.float64)
    return torch.cat(labels).numpy().astype(np.int64), torch.cat(conf).numpy()


def change_statistics(label_before: np.ndarray, conf_before: np.ndarray, label_after: np.ndarray,
                      conf_after: np.ndarray) -> tuple[float, int]:
    """``(mean of conf_after - conf_before over the images whose label is unchanged, number of
    images whose label changed)``; the mean is ``nan`` when every label changed (or there are none)."""
    same = np.asarray(label_before) == np.asarray(label_after)
    d = (np.asarray(conf_after, np.float64) - np.asarray(conf_before, np.float64))[same]
    return (float(d.mean()) if len(d) else float("nan")), int((~same).sum())


@dataclass(frozen=True)
class Top1Change(Result):
    """Top-1 of clean (``x0``) and adversarial (``x'``) images before and after one intervention.

    Attributes (all ``(N,)`` arrays, one entry per pair): ``y_true``; ``clean_label_before``,
    ``clean_conf_before``, ``clean_label_after``, ``clean_conf_after``; the same four for ``adv_``.
    Confidences are softmax probabilities of the top-1 class, in [0, 1].
    """

    y_true: np.ndarray
    clean_label_before: np.ndarray
    clean_conf_before: np.ndarray
    clean_label_after: np.ndarray
    clean_conf_after: np.ndarray
    adv_label_before: np.ndarray
    adv_conf_before: np.ndarray
    adv_label_after: np.ndarray
    adv_conf_after: np.ndarray

    per_image = ("y_true", "clean_label_before", "clean_conf_before", "clean_label_after", "clean_conf_after",
                 "adv_label_before", "adv_conf_before", "adv_label_after", "adv_conf_after")

    @classmethod
    def measure(cls, model: Any, x0: torch.Tensor, x_adv: torch.Tensor, y_true: Any,
                before: tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]] | None = None,
                after_x0: torch.Tensor | None = None, after_xadv: torch.Tensor | None = None,
                batch_size: int = 128) -> "Top1Change":
        """Measure the "after" state now: :func:`top1` of ``after_x0`` / ``after_xadv`` (default
        ``x0`` / ``x_adv``) under ``model`` as it is; ``before``: the ``((labels, conf) clean,
        (labels, conf) adversarial)`` measured before the intervention (default: measured now on
        ``x0`` / ``x_adv``, for interventions on the images rather than the model)."""
        if before is None:
            before = (top1(model, x0, batch_size), top1(model, x_adv, batch_size))
        ca = top1(model, x0 if after_x0 is None else after_x0, batch_size)
        aa = top1(model, x_adv if after_xadv is None else after_xadv, batch_size)
        (cb, cbc), (ab, abc) = before
        return cls(np.asarray(torch.as_tensor(y_true).cpu().numpy(), np.int64), cb, cbc, ca[0], ca[1],
                   ab, abc, aa[0], aa[1])

    def statistics(self) -> dict[str, Any]:
        """The change statistics and accuracies: ``clean_change`` / ``adv_change`` (mean
        confidence change over label-unchanged images), ``clean_n_changed`` / ``adv_n_changed``
        (images whose label changed), ``clean_abs_change`` / ``adv_abs_change`` (mean ``|conf_after -
        conf_before|`` over the same images: the "jitter" of the paper's Sec. 4.2), ``clean_acc_before`` / ``_after`` and ``adv_acc_before`` /
        ``_after`` (top-1 equal to ``y_true``), and ``n``."""
        cc, cn = change_statistics(self.clean_label_before, self.clean_conf_before, self.clean_label_after,
                                   self.clean_conf_after)
        ac, an = change_statistics(self.adv_label_before, self.adv_conf_before, self.adv_label_after,
                                   self.adv_conf_after)
        n = len(self.y_true)
        same_c = np.asarray(self.clean_label_before) == np.asarray(self.clean_label_after)
        same_a = np.asarray(self.adv_label_before) == np.asarray(self.adv_label_after)

        def jitter(before: np.ndarray, after: np.ndarray, same: np.ndarray) -> float:
            d = np.abs(np.asarray(after, np.float64) - np.asarray(before, np.float64))[same]
            return float(d.mean()) if len(d) else float("nan")

        def acc(labels: np.ndarray) -> float:
            return float((np.asarray(labels) == self.y_true).mean()) if n else float("nan")

        return {"n": n, "clean_change": cc, "clean_n_changed": cn, "adv_change": ac, "adv_n_changed": an,
                "clean_abs_change": jitter(self.clean_conf_before, self.clean_conf_after, same_c),
                "adv_abs_change": jitter(self.adv_conf_before, self.adv_conf_after, same_a),
                "clean_acc_before": acc(self.clean_label_before), "clean_acc_after": acc(self.clean_label_after),
                "adv_acc_before": acc(self.adv_label_before), "adv_acc_after": acc(self.adv_label_after)}

    def rows(self, classes: Any = None) -> list[dict[str, Any]]:
        """The paper's table: per image a ``before`` and an ``after`` row with the clean and the
        adversarial top-1 label (a class name when ``classes`` is given) and confidence (%)."""
        def name(i: int) -> Any:
            return classes[int(i)] if classes is not None else int(i)

        out = []
        for i in range(len(self.y_true)):
            for when in ("before", "after"):
                out.append({"image": i, "class": name(self.y_true[i]), "when": when,
                            "clean_label": name(getattr(self, f"clean_label_{when}")[i]),
                            "clean_conf_%": 100 * float(getattr(self, f"clean_conf_{when}")[i]),
                            "adv_label": name(getattr(self, f"adv_label_{when}")[i]),
                            "adv_conf_%": 100 * float(getattr(self, f"adv_conf_{when}")[i])})
        return out
