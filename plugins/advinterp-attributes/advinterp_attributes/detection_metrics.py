"""Detection metrics of the attribute detector: mAP at an IoU threshold, attribute accuracy.

* :func:`average_precision` -- PASCAL VOC's all-point interpolated AP per class (VOC2010+):
  detections of a class sorted by decreasing score; a detection is a true positive when its
  IoU with a not-yet-matched ground-truth box of the same class is ``>= iou`` (the best such
  box), else a false positive; AP = area under the precision envelope of the
  precision/recall curve. ``mAP`` = mean over classes with at least one ground-truth box.
* :func:`attribute_accuracy` -- for every ground-truth box found by a detection of its class
  (IoU ``>= iou``, the highest-scoring such detection), the detection's attribute
  probabilities thresholded at 0.5 against the box's 0/1 attributes: accuracy over all
  (box, attribute) entries, and exact match (every attribute right) over boxes.

Inputs are per image: detections ``{"boxes": (n, 4), "labels": n class names, "scores": (n,),
"attributes": (n, A)}`` (:class:`~advinterp_attributes.detector.Detections` works) and ground
truth ``{"boxes": (m, 4), "labels": m names, "attributes": (m, A)}``.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from advinterp.api import ParameterError

__all__ = ["box_iou", "average_precision", "attribute_accuracy"]


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``(n, m)`` IoU of xyxy boxes ``a`` ``(n, 4)`` and ``b`` ``(m, 4)`` (areas ``(x2 - x1)
    (y2 - y1)``, continuous coordinates)."""
    a = np.asarray(a, np.float64).reshape(-1, 4)
    b = np.asarray(b, np.float64).reshape(-1, 4)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(2)
    area = lambda x: np.clip(x[:, 2] - x[:, 0], 0, None) * np.clip(x[:, 3] - x[:, 1], 0, None)  # noqa: E731
    union = area(a)[:, None] + area(b)[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def _get(d: Any, key: str):
    return d[key] if isinstance(d, dict) else getattr(d, key)


def _check(detections: Sequence[Any], truth: Sequence[Any], iou: float, owner: str) -> None:
    if len(detections) != len(truth):
        raise ParameterError(owner, "detections", len(detections), f"one entry per image ({len(truth)} images)")
    if not 0 < float(iou) <= 1:
        raise ParameterError(owner, "iou", iou, "a number in (0, 1]")


def average_precision(detections: Sequence[Any], truth: Sequence[Any], iou: float = 0.5) -> dict[str, Any]:
    """VOC all-point AP per class at IoU ``iou`` (module docstring).

    Returns:
        ``{"ap": {class: AP}, "map": mean AP over classes with ground truth}``.
    """
    _check(detections, truth, iou, "average_precision")
    classes = sorted({str(c) for t in truth for c in _get(t, "labels")})
    ap = {}
    for c in classes:
        gt = [np.asarray(_get(t, "boxes"), np.float64).reshape(-1, 4)[[str(n) == c for n in _get(t, "labels")]]
              for t in truth]
        n_gt = sum(len(g) for g in gt)
        dets = []  # (score, image, box)
        for i, d in enumerate(detections):
            boxes = np.asarray(_get(d, "boxes"), np.float64).reshape(-1, 4)
            for j, (name, s) in enumerate(zip(_get(d, "labels"), np.asarray(_get(d, "scores")))):
                if str(name) == c:
                    dets.append((float(s), i, boxes[j]))
        dets.sort(key=lambda r: -r[0])
        used = [np.zeros(len(g), bool) for g in gt]
        tp = np.zeros(len(dets))
        for k, (_, i, box) in enumerate(dets):
            if len(gt[i]):
                ov = box_iou(box[None], gt[i])[0]
                ov[used[i]] = -1.0
                j = int(ov.argmax())
                if ov[j] >= iou:
                    used[i][j] = True
                    tp[k] = 1.0
        ctp, cfp = np.cumsum(tp), np.cumsum(1.0 - tp)
        recall = ctp / max(n_gt, 1)
        precision = ctp / np.maximum(ctp + cfp, 1e-12)
        mrec = np.concatenate([[0.0], recall, [1.0]])
        mpre = np.concatenate([[0.0], precision, [0.0]])
        for k in range(len(mpre) - 2, -1, -1):  # the precision envelope
            mpre[k] = max(mpre[k], mpre[k + 1])
        steps = np.flatnonzero(mrec[1:] != mrec[:-1])
        ap[c] = float(((mrec[steps + 1] - mrec[steps]) * mpre[steps + 1]).sum())
    return {"ap": ap, "map": float(np.mean(list(ap.values()))) if ap else 0.0}


def attribute_accuracy(detections: Sequence[Any], truth: Sequence[Any], iou: float = 0.5,
                       threshold: float = 0.5) -> dict[str, float]:
    """Attribute accuracy of the detections that find a ground-truth box (module docstring).

    Returns:
        ``{"accuracy": over (box, attribute) entries, "exact": over boxes, "found": boxes
        found / all boxes, "boxes": boxes found}``.
    """
    _check(detections, truth, iou, "attribute_accuracy")
    right = total = exact = found = n_boxes = 0
    for d, t in zip(detections, truth):
        gboxes = np.asarray(_get(t, "boxes"), np.float64).reshape(-1, 4)
        gnames = [str(n) for n in _get(t, "labels")]
        gatt = np.asarray(_get(t, "attributes"))
        dboxes = np.asarray(_get(d, "boxes"), np.float64).reshape(-1, 4)
        dnames = [str(n) for n in _get(d, "labels")]
        dscore = np.asarray(_get(d, "scores"), np.float64)
        datt = np.asarray(_get(d, "attributes"))
        ov = box_iou(gboxes, dboxes)
        n_boxes += len(gboxes)
        for g in range(len(gboxes)):
            ok = [j for j in range(len(dboxes)) if dnames[j] == gnames[g] and ov[g, j] >= iou]
            if not ok:
                continue
            j = max(ok, key=lambda k: dscore[k])
            pred = datt[j] >= threshold
            want = gatt[g] > 0.5
            found += 1
            right += int((pred == want).sum())
            total += len(want)
            exact += int((pred == want).all())
    return {"accuracy": right / total if total else 0.0, "exact": exact / found if found else 0.0,
            "found": found / n_boxes if n_boxes else 0.0, "boxes": float(found)}
