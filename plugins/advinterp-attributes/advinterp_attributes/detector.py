"""A Faster R-CNN with an attribute head (bottom-up attention style) for grounding attributes.

Gulshad et al. ground the attributes that explain a (mis)classification in the image with
the Faster R-CNN of bottom-up attention (Anderson et al., 2018): a detector whose box head
also predicts, for every detected box, scores for a vocabulary of attributes. This module
builds that detector from torchvision's :class:`~torchvision.models.detection.FasterRCNN`:

* backbone: any module with an ``out_channels`` attribute returning one feature map (default
  :class:`TinyBackbone`, four 3x3 conv-BN-ReLU blocks, stride 4, 32 channels: enough for the
  embedded world's 64-px scenes, a few hundred kB of weights); anchors of sizes
  ``(8, 16, 32, 48)`` px and aspect ratios ``(0.5, 1, 2)``; RoIAlign 7x7 on the one map; a
  two-layer MLP box head of width 128 -- all parameters of :func:`build_detector`;
* :class:`AttributeRoIHeads`: torchvision's ``RoIHeads`` plus a linear attribute predictor on
  the box head's features. Training: the attribute loss is the binary cross-entropy of the
  *positive* sampled proposals against the attributes of the ground-truth box each is
  matched to (``targets[i]["attributes"]``, ``(n_boxes, A)`` 0/1), weighted by
  ``attribute_weight`` (1) and added to torchvision's classifier and box losses as
  ``loss_attributes``. Inference: the final boxes (after NMS) are pooled again and their
  attribute probabilities (sigmoid) returned as ``"attributes"`` ``(n, A)`` next to
  ``boxes`` / ``labels`` / ``scores``.

:class:`AttributeDetector` wraps the torchvision model with its class and attribute names,
runs it on pixels in [0, 1] without changing the wrapped model's mode, and saves / loads
``weights_only``-loadable checkpoints. :func:`load_attribute_detector` loads the shipped one
(trained on the embedded world by ``scripts/train_attribute_detector.py``; its held-out
numbers are in the checkpoint's ``meta`` and in docs/attributes.md) or a user's file; a user
may also wrap a torchvision detection model of their own (:meth:`AttributeDetector.from_model`).

Example::

    from advinterp_attributes.detector import load_attribute_detector
    det = load_attribute_detector()                      # the shipped detector
    out = det.detect(x)                                  # x (N, 3, H, W) in [0, 1]
    out[0].boxes, out[0].labels, out[0].attributes       # (n, 4), n names, (n, A) probabilities
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torchvision.models.detection.roi_heads import RoIHeads, fastrcnn_loss

from advinterp.api import ParameterError

__all__ = ["TinyBackbone", "AttributeRoIHeads", "build_detector", "AttributeDetector", "Detections",
           "load_attribute_detector", "scene_targets", "world_vocabulary", "SHIPPED_WEIGHTS"]

#: The shipped checkpoint (``scripts/train_attribute_detector.py``).
SHIPPED_WEIGHTS = Path(__file__).resolve().parent / "weights" / "attribute_detector.pt"


class TinyBackbone(nn.Sequential):
    """Four 3x3 conv-BN-ReLU blocks, the first two with stride 2: one ``(N, width, H/4,
    W/4)`` map (``out_channels = width``, default 32)."""

    def __init__(self, width: int = 32):
        def block(cin: int, cout: int, stride: int) -> list[nn.Module]:
            return [nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]

        super().__init__(*block(3, width // 2, 2), *block(width // 2, width, 2), *block(width, width, 1),
                         *block(width, width, 1))
        self.out_channels = width


class AttributeRoIHeads(RoIHeads):
    """torchvision's ``RoIHeads`` (box branch only) plus ``attribute_predictor``:
    ``Linear(box head width, A)``. Training losses ``loss_classifier``, ``loss_box_reg``,
    ``loss_attributes``; detections carry ``"attributes"`` ``(n, A)`` probabilities (module
    docstring)."""

    def __init__(self, *args: Any, n_attributes: int, attribute_weight: float = 1.0, **kw: Any):
        super().__init__(*args, **kw)
        self.attribute_predictor = nn.Linear(self.box_predictor.cls_score.in_features, n_attributes)
        self.attribute_weight = float(attribute_weight)

    def attribute_loss(self, attr_logits: torch.Tensor, labels: list[torch.Tensor],
                       matched_idxs: list[torch.Tensor], targets: list[dict[str, torch.Tensor]]) -> torch.Tensor:
        """Mean BCE of the positive proposals' attribute logits against the attributes of the
        ground-truth box each is matched to (0 when the batch has no positive proposal)."""
        rows, want, offset = [], [], 0
        for img, (lab, idx) in enumerate(zip(labels, matched_idxs)):
            pos = torch.where(lab > 0)[0]
            rows.append(pos + offset)
            want.append(targets[img]["attributes"][idx[pos]].to(attr_logits.dtype))
            offset += len(lab)
        rows_t = torch.cat(rows)
        if not len(rows_t):
            return attr_logits.sum() * 0.0
        return F.binary_cross_entropy_with_logits(attr_logits[rows_t], torch.cat(want))

    def forward(self, features, proposals, image_shapes, targets=None):
        if self.training:
            if targets is None or any("attributes" not in t for t in targets):
                raise ParameterError("AttributeRoIHeads", "targets", None,
                                     "training targets with 'boxes', 'labels' and 'attributes' ((n, A) 0/1)")
            proposals, matched_idxs, labels, regression_targets = self.select_training_samples(proposals, targets)
        box_features = self.box_head(self.box_roi_pool(features, proposals, image_shapes))
        class_logits, box_regression = self.box_predictor(box_features)
        if self.training:
            loss_classifier, loss_box_reg = fastrcnn_loss(class_logits, box_regression, labels, regression_targets)
            attr = self.attribute_loss(self.attribute_predictor(box_features), labels, matched_idxs, targets)
            return [], {"loss_classifier": loss_classifier, "loss_box_reg": loss_box_reg,
                        "loss_attributes": self.attribute_weight * attr}
        boxes, scores, labels = self.postprocess_detections(class_logits, box_regression, proposals, image_shapes)
        # bottom-up attention: the attributes of each *final* box, from its own pooled features
        feats = self.box_head(self.box_roi_pool(features, boxes, image_shapes))
        attrs = torch.sigmoid(self.attribute_predictor(feats)).split([len(b) for b in boxes])
        return [{"boxes": b, "labels": lab, "scores": s, "attributes": a}
                for b, lab, s, a in zip(boxes, labels, scores, attrs)], {}


#: :func:`build_detector`'s defaults (stored in checkpoints as ``config``).
DEFAULT_CONFIG: dict[str, Any] = {
    "width": 32, "anchor_sizes": [8, 16, 32, 48], "aspect_ratios": [0.5, 1.0, 2.0], "representation": 128,
    "min_size": 64, "max_size": 64, "box_score_thresh": 0.05, "box_detections_per_img": 20,
    "attribute_weight": 1.0, "rpn_pre_nms_top_n": 300, "rpn_post_nms_top_n": 100, "rpn_batch_size_per_image": 64,
    "box_batch_size_per_image": 64,
}


def build_detector(n_classes: int, n_attributes: int, backbone: nn.Module | None = None,
                   **config: Any) -> nn.Module:
    """A torchvision ``FasterRCNN`` for ``n_classes`` object classes (+ background) whose
    ROI heads are :class:`AttributeRoIHeads` for ``n_attributes`` attributes.

    Args:
        n_classes: object classes, background excluded (labels ``1..n_classes``).
        n_attributes: attribute vocabulary size ``A``.
        backbone: a module with ``out_channels`` returning one ``(N, C, h, w)`` map (default
            :class:`TinyBackbone` of ``width``).
        **config: overrides of :data:`DEFAULT_CONFIG` (``width``, ``anchor_sizes`` px,
            ``aspect_ratios``, ``representation`` (box head width), ``min_size`` /
            ``max_size`` (torchvision's resize; 64 keeps the embedded world's size),
            ``box_score_thresh``, ``box_detections_per_img``, ``attribute_weight``; the RPN's
            ``rpn_pre_nms_top_n`` / ``rpn_post_nms_top_n`` proposals (300 / 100, training and
            test: a 64-px scene holds at most four boxes) and ``rpn_batch_size_per_image``
            (64), the ROI heads' ``box_batch_size_per_image`` (64)).
    """
    from torchvision.models.detection import FasterRCNN
    from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
    from torchvision.models.detection.rpn import AnchorGenerator
    from torchvision.ops import MultiScaleRoIAlign

    unknown = sorted(set(config) - set(DEFAULT_CONFIG))
    if unknown:
        raise ParameterError("build_detector", unknown[0], config[unknown[0]], f"one of {sorted(DEFAULT_CONFIG)}")
    for name, v in (("n_classes", n_classes), ("n_attributes", n_attributes)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ParameterError("build_detector", name, v, "a positive integer")
    c = {**DEFAULT_CONFIG, **config}
    backbone = TinyBackbone(int(c["width"])) if backbone is None else backbone
    if not hasattr(backbone, "out_channels"):
        raise ParameterError("build_detector", "backbone", type(backbone).__name__,
                             "a module with an out_channels attribute (torchvision's detection convention)")
    anchors = AnchorGenerator(sizes=(tuple(int(s) for s in c["anchor_sizes"]),),
                              aspect_ratios=(tuple(float(a) for a in c["aspect_ratios"]),))
    pool = MultiScaleRoIAlign(featmap_names=["0"], output_size=7, sampling_ratio=2)
    rep = int(c["representation"])
    model = FasterRCNN(backbone, num_classes=None, rpn_anchor_generator=anchors, box_roi_pool=pool,
                       box_head=TwoMLPHead(backbone.out_channels * 49, rep),
                       box_predictor=FastRCNNPredictor(rep, n_classes + 1),
                       min_size=int(c["min_size"]), max_size=int(c["max_size"]),
                       box_score_thresh=float(c["box_score_thresh"]),
                       box_detections_per_img=int(c["box_detections_per_img"]),
                       rpn_pre_nms_top_n_train=int(c["rpn_pre_nms_top_n"]),
                       rpn_pre_nms_top_n_test=int(c["rpn_pre_nms_top_n"]),
                       rpn_post_nms_top_n_train=int(c["rpn_post_nms_top_n"]),
                       rpn_post_nms_top_n_test=int(c["rpn_post_nms_top_n"]),
                       rpn_batch_size_per_image=int(c["rpn_batch_size_per_image"]))
    rh = model.roi_heads
    model.roi_heads = AttributeRoIHeads(rh.box_roi_pool, rh.box_head, rh.box_predictor,
                          fg_iou_thresh=0.5, bg_iou_thresh=0.5,
                                   batch_size_per_image=int(c["box_batch_size_per_image"]), positive_fraction=0.25,
                          bbox_reg_weights=None, score_thresh=rh.score_thresh, nms_thresh=rh.nms_thresh,
                          detections_per_img=rh.detections_per_img, n_attributes=n_attributes,
                          attribute_weight=float(c["attribute_weight"]))
    return model


# ---------------------------------------------------------------------------- the embedded world
def world_vocabulary() -> tuple[tuple[str, ...], tuple[str, ...]]:
    """``(classes, attributes)`` of the embedded world's boxes: the object classes then the
    part names; the class attributes (``ATTRIBUTES``) then the part colours that are not
    among them (``color:black``, ...), in the world's palette order."""
    from advinterp.datasets.synthetic import ATTRIBUTES, CLASSES

    parts = ("head", "legs", "tail")
    palette = ("red", "green", "blue", "yellow", "black", "brown", "olive", "grey", "lightblue")
    extra = tuple(f"color:{c}" for c in palette if f"color:{c}" not in ATTRIBUTES)
    return tuple(CLASSES) + parts, tuple(ATTRIBUTES) + extra


def scene_targets(boxes: Sequence[Any], classes: Sequence[str], attributes: Sequence[str]) -> dict[str, torch.Tensor]:
    """torchvision detection targets of one scene's boxes (the embedded world's
    :class:`~advinterp.datasets.synthetic.Box`, or anything with ``xyxy``, ``name`` and
    ``attributes``): ``boxes`` ``(n, 4)`` float, ``labels`` ``(n,)`` int64 (``1 +`` index in
    ``classes``), ``attributes`` ``(n, A)`` float 0/1."""
    cidx = {c: i + 1 for i, c in enumerate(classes)}
    aidx = {a: i for i, a in enumerate(attributes)}
    xyxy, labels = [], []
    att = torch.zeros(len(boxes), len(attributes))
    for j, b in enumerate(boxes):
        if b.name not in cidx:
            raise ParameterError("scene_targets", "boxes", b.name, f"box names among the classes {list(classes)}")
        xyxy.append([float(v) for v in b.xyxy])
        labels.append(cidx[b.name])
        for a in b.attributes:
            if a not in aidx:
                raise ParameterError("scene_targets", "attributes", a, "attributes of the vocabulary",
                                     "Build the detector with every attribute the boxes carry.")
            att[j, aidx[a]] = 1.0
    return {"boxes": torch.tensor(xyxy, dtype=torch.float32).reshape(-1, 4),
            "labels": torch.tensor(labels, dtype=torch.int64), "attributes": att}


# ---------------------------------------------------------------------------- the wrapper
@dataclass(frozen=True)
class Detections:
    """The detections of one image.

    Attributes:
        boxes: ``(n, 4)`` float xyxy in the input's pixels.
        labels: ``n`` class names.
        scores: ``(n,)`` detection confidences.
        attributes: ``(n, A)`` attribute probabilities (vocabulary ``attribute_names``).
        attribute_names: the ``A`` attribute names.
    """

    boxes: np.ndarray
    labels: tuple[str, ...]
    scores: np.ndarray
    attributes: np.ndarray
    attribute_names: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.labels)


class AttributeDetector:
    """A detection model with an attribute head, its class names and attribute names.

    Args:
        model: a torchvision detection model whose eval-mode output dicts carry ``boxes``,
            ``labels``, ``scores`` and ``attributes`` (:func:`build_detector`'s model).
        classes: names of labels ``1..n`` (label 0 is the background).
        attributes: names of the ``A`` attribute columns.
        meta: free-form metadata (training recipe, held-out numbers).
    """

    def __init__(self, model: nn.Module, classes: Sequence[str], attributes: Sequence[str],
                 config: dict[str, Any] | None = None, meta: dict[str, Any] | None = None):
        self.model, self.classes, self.attributes = model, tuple(classes), tuple(attributes)
        self.config = dict(config or {})
        self.meta = dict(meta or {})

    @classmethod
    def build(cls, classes: Sequence[str], attributes: Sequence[str], **config: Any) -> "AttributeDetector":
        """A new (untrained) detector for these names (:func:`build_detector`)."""
        return cls(build_detector(len(classes), len(attributes), **config), classes, attributes,
                   {**DEFAULT_CONFIG, **config})

    @classmethod
    def from_model(cls, model: nn.Module, classes: Sequence[str], attributes: Sequence[str]) -> "AttributeDetector":
        """Wrap a user's detection model (its outputs must carry ``attributes``)."""
        return cls(model, classes, attributes)

    def detect(self, x: torch.Tensor, score_threshold: float = 0.5, batch_size: int = 32) -> list[Detections]:
        """Detections of ``x`` ``(N, 3, H, W)`` pixels in [0, 1] with ``score >=
        score_threshold``; the model runs in eval mode without gradients and gets its mode
        back afterwards (also on errors)."""
        if not isinstance(x, torch.Tensor) or x.ndim != 4 or x.shape[1] != 3:
            raise ParameterError("AttributeDetector.detect", "x", getattr(x, "shape", type(x).__name__),
                                 "an (N, 3, H, W) tensor of pixels in [0, 1]")
        if not 0.0 <= float(score_threshold) <= 1.0:
            raise ParameterError("AttributeDetector.detect", "score_threshold", score_threshold, "a number in [0, 1]")
        was = self.model.training
        dev = next(self.model.parameters()).device
        out: list[Detections] = []
        try:
            self.model.eval()
            with torch.no_grad():
                for b in range(0, len(x), batch_size):
                    for d in self.model(list(x[b:b + batch_size].to(dev))):
                        keep = d["scores"] >= score_threshold
                        out.append(Detections(d["boxes"][keep].cpu().numpy(),
                                              tuple(self.classes[int(j) - 1] for j in d["labels"][keep]),
                                              d["scores"][keep].cpu().numpy(), d["attributes"][keep].cpu().numpy(),
                                              self.attributes))
        finally:
            self.model.train(was)
        return out

    def save(self, path: str | Path) -> Path:
        """Write ``{"state_dict", "classes", "attributes", "config", "meta"}`` (loadable with
        ``torch.load(..., weights_only=True)``)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"state_dict": self.model.state_dict(), "classes": list(self.classes),
                    "attributes": list(self.attributes), "config": self.config, "meta": self.meta}, path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> "AttributeDetector":
        """A detector saved by :meth:`save` (``weights_only=True``)."""
        path = Path(path)
        if not path.is_file():
            raise ParameterError("AttributeDetector.load", "path", str(path), "an existing checkpoint file",
                                 "Train one with scripts/train_attribute_detector.py, or pass None for the shipped one.")
        ck = torch.load(path, map_location="cpu", weights_only=True)
        missing = [k for k in ("state_dict", "classes", "attributes", "config") if k not in ck]
        if missing:
            raise ParameterError("AttributeDetector.load", "path", str(path),
                                 f"a checkpoint written by AttributeDetector.save (missing {missing})")
        det = cls.build(ck["classes"], ck["attributes"], **ck["config"])
        det.model.load_state_dict(ck["state_dict"])
        det.model.eval()
        det.meta = dict(ck.get("meta", {}))
        return det


def load_attribute_detector(path: str | Path | None = None) -> AttributeDetector:
    """The shipped detector of the embedded world (``path=None``) or a checkpoint of
    :meth:`AttributeDetector.save`."""
    return AttributeDetector.load(SHIPPED_WEIGHTS if path is None else path)
