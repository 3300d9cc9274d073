"""Grounding attributes in an image with the attribute detector (Gulshad et al., Figs. 6-7).

The attributes that explain a prediction (the selection of eqs. 16-17: the most
over-predicted attributes of a clean or an adversarial image) are *grounded*: each is shown
on the boxes of the image that carry it, according to the attribute detector
(:mod:`~advinterp_attributes.detector`), and the attributes that no box carries are listed
apart (grey in the figure).

Matching rule (:func:`ground`), for a selected attribute name and a detected box:

* the name is parsed by :func:`parse_attribute` into ``(part, group, value)``:
  ``"group:value"`` (the embedded world, AwA-style groups), CUB's
  ``"has_<part>_<group>::<value>"`` (``has_wing_color::blue`` -> part ``wing``, group
  ``color``, value ``blue``; ``has_size::small`` -> no part) or a bare name (an AwA2
  predicate: value only);
* the box carries the attribute when the detector's probability for it is ``>= threshold``
  (0.5), and, if the attribute names a part, the box's class name contains that part
  (``wing`` matches ``wing`` and ``left_wing``);
* an attribute of group ``part`` (the world's ``part:head``) is carried by the boxes of that
  part (class name = value), whatever the attribute scores;
* an attribute outside the detector's vocabulary that is not a part cannot be grounded
  (reason ``"not in the detector's vocabulary"``); one in it that no box carries:
  ``"no box carries it"``.

:func:`grounding_precision` scores groundings against true boxes: a grounded (attribute,
box) pair is right when a true box with IoU ``>= iou`` (0.5) carries the attribute (or is the
named part). :func:`draw_grounding` draws one image's grounding.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from advinterp.api import ParameterError

__all__ = ["parse_attribute", "Grounding", "ground", "grounding_precision", "draw_grounding"]

_CUB = re.compile(r"^has_(?:(?P<part>[a-z_]+?)_)?(?P<group>color|pattern|shape|size|length)::(?P<value>.+)$")


def parse_attribute(name: str) -> tuple[str | None, str | None, str]:
    """``(part, group, value)`` of an attribute name (module docstring).

    >>> parse_attribute("has_wing_color::blue")
    ('wing', 'color', 'blue')
    >>> parse_attribute("color:red")
    (None, 'color', 'red')
    >>> parse_attribute("black")
    (None, None, 'black')
    """
    if not isinstance(name, str) or not name.strip():
        raise ParameterError("parse_attribute", "name", name, "a non-empty attribute name such as 'color:red' "
                             "or CUB's 'has_wing_color::blue'")
    m = _CUB.match(name)
    if m:
        return m.group("part"), m.group("group"), m.group("value")
    if "::" in name:
        group, value = name.split("::", 1)
        return None, group, value
    if ":" in name:
        group, value = name.split(":", 1)
        return None, group, value
    return None, None, name


@dataclass(frozen=True)
class Grounding:
    """The grounding of ``attributes`` in one image's detections.

    Attributes:
        attributes: the selected attribute names, in the given order.
        boxes: per attribute, the indices of the detections that carry it (empty: not
            grounded).
        reasons: per attribute, ``""`` when grounded, else why not.
        detections: the image's detections (``boxes`` ``(n, 4)``, ``labels``, ``scores``,
            ``attributes`` ``(n, A)``, ``attribute_names``).
    """

    attributes: tuple[str, ...]
    boxes: tuple[tuple[int, ...], ...]
    reasons: tuple[str, ...]
    detections: Any = field(repr=False)

    @property
    def grounded(self) -> list[str]:
        return [a for a, b in zip(self.attributes, self.boxes) if b]

    @property
    def ungrounded(self) -> list[str]:
        return [a for a, b in zip(self.attributes, self.boxes) if not b]

    def rows(self) -> list[dict[str, Any]]:
        """One row per attribute: ``attribute, grounded, boxes`` (``label@x1,y1,x2,y2``), ``reason``."""
        d = self.detections
        out = []
        for a, idx, why in zip(self.attributes, self.boxes, self.reasons):
            out.append({"attribute": a, "grounded": bool(idx),
                        "boxes": "; ".join(f"{d.labels[j]}@{','.join(str(int(round(v))) for v in d.boxes[j])}"
                                           for j in idx), "reason": why})
        return out


def _part_matches(part: str, label: str) -> bool:
    return part == label or part in label.split("_") or label.endswith(part)


def ground(attributes: Sequence[str], detections: Any, threshold: float = 0.5) -> Grounding:
    """Ground ``attributes`` in one image's ``detections`` (a
    :class:`~advinterp_attributes.detector.Detections`) with the matching rule of the module
    docstring; ``threshold``: the attribute probability a box needs (0.5)."""
    if isinstance(attributes, str) or not all(isinstance(a, str) for a in attributes):
        raise ParameterError("ground", "attributes", attributes, "a list of attribute names")
    if not 0.0 <= float(threshold) <= 1.0:
        raise ParameterError("ground", "threshold", threshold, "a probability in [0, 1]")
    names = list(detections.attribute_names)
    col = {a: i for i, a in enumerate(names)}
    labels = list(detections.labels)
    probs = np.asarray(detections.attributes).reshape(len(labels), len(names))
    boxes, reasons = [], []
    for a in attributes:
        part, group, value = parse_attribute(a)
        if group == "part":  # "has a head": the head's own boxes
            hit = tuple(j for j, lab in enumerate(labels) if lab == value)
        elif a in col:
            hit = tuple(j for j, lab in enumerate(labels) if probs[j, col[a]] >= threshold
                        and (part is None or _part_matches(part, lab)))
        else:
            boxes.append(())
            reasons.append("not in the detector's vocabulary")
            continue
        boxes.append(hit)
        reasons.append("" if hit else "no box carries it")
    return Grounding(tuple(attributes), tuple(boxes), tuple(reasons), detections)


def grounding_precision(groundings: Sequence[Grounding], true_boxes: Sequence[Sequence[Any]],
                        iou: float = 0.5) -> dict[str, float]:
    """Precision of grounded (attribute, box) pairs against the true boxes of each image
    (objects with ``xyxy``, ``name``, ``attributes``, e.g. the embedded world's
    :class:`~advinterp.datasets.synthetic.Box`): a pair is right when a true box with IoU
    ``>= iou`` carries the attribute (or, for ``part:x``, is named ``x``).

    Returns:
        ``{"precision", "pairs", "right", "grounded_fraction"}`` (the last: grounded
        attributes / selected attributes).
    """
    from .detection_metrics import box_iou

    if len(groundings) != len(true_boxes):
        raise ParameterError("grounding_precision", "true_boxes", len(true_boxes),
                             f"one list of boxes per grounding ({len(groundings)})")
    pairs = right = selected = grounded = 0
    for g, truth in zip(groundings, true_boxes):
        tb = np.array([b.xyxy for b in truth], np.float64).reshape(-1, 4)
        selected += len(g.attributes)
        for a, idx in zip(g.attributes, g.boxes):
            grounded += bool(idx)
            _, group, value = parse_attribute(a)
            for j in idx:
                pairs += 1
                ov = box_iou(np.asarray(g.detections.boxes[j])[None], tb)[0] if len(tb) else np.zeros(0)
                ok = any(ov[k] >= iou and (a in truth[k].attributes or group == "part" and truth[k].name == value)
                         for k in range(len(truth)))
                right += ok
    return {"precision": right / pairs if pairs else 0.0, "pairs": float(pairs), "right": float(right),
            "grounded_fraction": grounded / selected if selected else 0.0}


def draw_grounding(ax: Any, image: np.ndarray, grounding: Grounding, title: str = "") -> None:
    """Draw ``image`` (``(H, W, 3)`` in [0, 1] or uint8) on a matplotlib ``ax`` with each
    grounded attribute's boxes in its own colour (legend) and the ungrounded attributes
    listed in grey under the image."""
    import matplotlib.patches as patches
    import matplotlib.pyplot as plt

    ax.imshow(image)
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=9)
    colours = plt.get_cmap("tab10")
    handles = []
    k = 0
    for a, idx in zip(grounding.attributes, grounding.boxes):
        if not idx:
            continue
        c = colours(k % 10)
        k += 1
        for j in idx:
            x1, y1, x2, y2 = grounding.detections.boxes[j]
            ax.add_patch(patches.Rectangle((x1 - 0.5, y1 - 0.5), x2 - x1, y2 - y1, fill=False, edgecolor=c,
                                           linewidth=1.5))
        handles.append(patches.Patch(edgecolor=c, facecolor="none", label=a))
    if handles:
        ax.legend(handles=handles, fontsize=6, loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
    if grounding.ungrounded:
        ax.text(0.0, -0.04, "not grounded: " + ", ".join(grounding.ungrounded), transform=ax.transAxes,
                fontsize=6, color="0.55", va="top", wrap=True)
