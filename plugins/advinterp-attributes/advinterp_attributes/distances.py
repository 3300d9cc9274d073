"""Attribute distances d1 / d2 (Gulshad et al. 2020, Sec. 4.2, eqs. 8-15, Fig. 5; capability D4).

Notation: ``Z`` = SJE's predicted attributes ``theta(x)^T W`` of clean images, ``Z_adv`` (the
paper's Z-hat) of adversarial ones, ``^AT`` with the adversarially trained model's features;
``phi(y_n)`` the true class's attribute vector, ``phi(y)`` the wrongly predicted class's. Every
distance is Euclidean, taken on the top ``fraction`` (default 20 %) **most-changing attributes**:
the columns ranked by ``mean_n |Z_a[n] - Z_b[n]|`` over the analysed images (one global ranking,
:func:`top_changing_attributes`).

Two formulas cover the four panels of Fig. 5:

* :func:`prediction_distances` -- predicted vs predicted, against ground truth vs ground truth:
  ``d1 = ||Z_correct - Z_wrong||``, ``d2 = ||phi(y_n) - phi(y)||``.
  Eqs. 8-9 (Fig. 5a): ``Z_correct = Z`` (clean), ``Z_wrong = Z_adv``.
  Eqs. 12-13 (Fig. 5b): ``Z_correct = Z_adv^AT``, ``Z_wrong = Z_adv``.
* :func:`class_distances` -- a wrong prediction against the wrong and the true class:
  ``d1 = ||Z_wrong - phi(y)||``, ``d2 = ||Z_wrong - phi(y_n)||``.
  Eqs. 10-11 (Fig. 5c): ``Z_wrong = Z_adv``; eqs. 14-15 (Fig. 5d): ``Z_wrong = Z_adv^AT``.
  (Eq. 11 writes ``Z-hat_{n,n}``; from its text it is ``Z-hat_{n,y}``, the adversarial image's.)

:func:`figure5` computes the four cases from the four Z arrays and the four prediction arrays,
with the image sets of :func:`select_images`.

Labels are class indices: rows of the class-attribute matrix.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from advinterp.api import ParameterError

from ._checks import attribute_indices, l2_rows, labels, matrix

__all__ = ["AttributeDistances", "top_changing_attributes", "select_images", "prediction_distances",
           "class_distances", "figure5", "attribute_indices", "DEFAULT_FRACTION"]

#: The paper's share of most-changing attributes (Sec. 4.2: "top 20 %").
DEFAULT_FRACTION = 0.2


@dataclass(frozen=True)
class AttributeDistances:
    """d1 and d2 per analysed image.

    Attributes:
        d1, d2: ``(M,)`` float64 distances (the equations named in ``equations``).
        images: ``(M,)`` indices of the analysed images in the input arrays.
        attributes: ``(K,)`` attribute columns the distances use, most-changing first.
        equations: which equations (e.g. ``"8-9"``), ``""`` when called directly.
    """

    d1: np.ndarray
    d2: np.ndarray
    images: np.ndarray
    attributes: np.ndarray
    equations: str = ""

    @property
    def fraction_d1_smaller(self) -> float:
        """Share of images with ``d1 < d2`` (NaN for none)."""
        return float(np.mean(self.d1 < self.d2)) if len(self.d1) else float("nan")


def _fraction(owner: str, fraction: Any) -> float:
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float, np.floating)) or not 0 < fraction <= 1:
        raise ParameterError(owner, "fraction", fraction, "a number in (0, 1]")
    return float(fraction)


def top_changing_attributes(Z_a: Any, Z_b: Any, fraction: float = DEFAULT_FRACTION) -> np.ndarray:
    """The ``ceil(fraction * E)`` attributes whose predicted value changes most between ``Z_a``
    and ``Z_b`` (``(N, E)`` each, same images in the same order), ranked by ``mean_n |Z_a - Z_b|``
    (descending; ties: lower column first). Returns ``(K,)`` column indices, most-changing first.

    ``ceil`` keeps at least the fraction (16 attributes at 20 % -> 4; AwA's 85 -> 17)."""
    owner = "top_changing_attributes"
    f = _fraction(owner, fraction)
    a = matrix(owner, "Z_a", Z_a)
    b = matrix(owner, "Z_b", Z_b, width=a.shape[1], rows=len(a))
    if len(a) == 0:
        raise ParameterError(owner, "Z_a", "0 images", "at least one image to rank the attributes on")
    change = np.abs(a - b).mean(axis=0)
    k = min(a.shape[1], max(1, math.ceil(f * a.shape[1] - 1e-9)))
    return np.argsort(-change, kind="stable")[:k]


def select_images(y: Any, pred_correct: Any, pred_wrong: Any) -> np.ndarray:
    """Indices of the images with ``pred_correct == y`` and ``pred_wrong != y`` (the paper's
    "correctly classified when clean, misclassified when adversarial"), ascending."""
    y = np.asarray(y)
    a, b = np.asarray(pred_correct), np.asarray(pred_wrong)
    if not (y.shape == a.shape == b.shape) or y.ndim != 1:
        raise ParameterError("select_images", "pred_correct/pred_wrong", f"shapes {a.shape}, {b.shape}",
                             f"the shape of y {y.shape}, 1-d")
    return np.flatnonzero((a == y) & (b != y))


def _setup(owner, class_attributes, arrays, y, y_wrong, images, attributes, vocabulary, normalize=False):
    phi = matrix(owner, "class_attributes", class_attributes)
    n_cls, width = phi.shape
    first = matrix(owner, arrays[0][0], arrays[0][1], width=width)
    n = len(first)
    mats = [first] + [matrix(owner, name, v, width=width, rows=n) for name, v in arrays[1:]]
    yi = labels(owner, "y", y, n, n_cls)
    yw = labels(owner, "y_wrong", y_wrong, n, n_cls)
    if images is None:
        idx = np.arange(n)
    else:
        idx = np.asarray(images)
        if idx.dtype == bool:
            if idx.shape != (n,):
                raise ParameterError(owner, "images", f"a mask of shape {idx.shape}", f"a ({n},) mask or indices")
            idx = np.flatnonzero(idx)
        elif idx.ndim != 1 or (len(idx) and (not np.issubdtype(idx.dtype, np.integer) or idx.min() < 0
                                             or idx.max() >= n)):
            raise ParameterError(owner, "images", images, f"image indices in 0..{n - 1} or a ({n},) bool mask")
    attrs = attribute_indices(attributes, width, vocabulary, owner)
    if not isinstance(normalize, (bool, np.bool_)):
        raise ParameterError(owner, "normalize", normalize, "True or False")
    if normalize:  # over all E attributes, before the most-changing ones are chosen
        phi, mats = l2_rows(phi), [l2_rows(m) for m in mats]
    return phi, [m[idx] for m in mats], yi[idx], yw[idx], idx.astype(np.intp), attrs


def prediction_distances(Z_correct: Any, Z_wrong: Any, y: Any, y_wrong: Any, class_attributes: Any,
                         fraction: float = DEFAULT_FRACTION, attributes: Sequence[Any] | None = None,
                         images: Any = None, vocabulary: Sequence[str] | None = None,
                         normalize: bool = False) -> AttributeDistances:
    """Eqs. 8-9 / 12-13: ``d1 = ||Z_correct - Z_wrong||``, ``d2 = ||phi(y) - phi(y_wrong)||``.

    Args:
        Z_correct, Z_wrong: ``(N, E)`` predicted attributes of the correctly / wrongly classified
            version of each image (eqs. 8-9: clean Z and adversarial Z-hat; eqs. 12-13: Z-hat^AT
            and Z-hat).
        y: ``(N,)`` true classes; y_wrong: ``(N,)`` the wrong predicted classes (rows of
            ``class_attributes``).
        class_attributes: ``(C, E)`` phi.
        fraction: share of most-changing attributes (default 0.2), ranked on ``|Z_correct -
            Z_wrong|`` over the analysed images; ignored when ``attributes`` is given.
        attributes: explicit attribute columns (indices, or names with ``vocabulary``).
        images: indices or a bool mask of the images to analyse (default all; see
            :func:`select_images`).
        normalize: divide every predicted attribute vector and every class-attribute vector by
            its Euclidean norm (over all attributes) first (default False: the paper's plain
            Euclidean distances). SJE's ranking loss fixes the *order* of compatibilities, not
            the scale of ``Z = theta^T W``, so raw ``Z`` and the 0/1 ``phi`` can be on very
            different scales (docs/attributes.md measures it); normalised, d1 and d2 compare
            directions on the unit sphere.
    """
    owner = "prediction_distances"
    f = _fraction(owner, fraction)
    phi, (zc, zw), yi, yw, idx, attrs = _setup(owner, class_attributes, [("Z_correct", Z_correct),
                                                                         ("Z_wrong", Z_wrong)],
                                               y, y_wrong, images, attributes, vocabulary, normalize)
    if attrs is None:
        attrs = top_changing_attributes(zc, zw, f) if len(zc) else np.empty(0, np.intp)
    d1 = np.linalg.norm(zc[:, attrs] - zw[:, attrs], axis=1)
    d2 = np.linalg.norm(phi[yi][:, attrs] - phi[yw][:, attrs], axis=1)
    return AttributeDistances(d1, d2, idx, attrs)


def class_distances(Z_wrong: Any, y: Any, y_wrong: Any, class_attributes: Any, Z_clean: Any = None,
                    fraction: float = DEFAULT_FRACTION, attributes: Sequence[Any] | None = None,
                    images: Any = None, vocabulary: Sequence[str] | None = None,
                    normalize: bool = False) -> AttributeDistances:
    """Eqs. 10-11 / 14-15: ``d1 = ||Z_wrong - phi(y_wrong)||``, ``d2 = ||Z_wrong - phi(y)||``.

    Args:
        Z_wrong: ``(N, E)`` predicted attributes of the misclassified adversarial images (Z-hat;
            Z-hat^AT for eqs. 14-15).
        y, y_wrong, class_attributes, fraction, attributes, images, vocabulary: as
            :func:`prediction_distances`.
        Z_clean: ``(N, E)`` predicted attributes of the same images when clean (same model), for
            the most-changing ranking ``|Z_clean - Z_wrong|``; needed unless ``attributes`` is given.
        normalize: as :func:`prediction_distances`.
    """
    owner = "class_distances"
    f = _fraction(owner, fraction)
    if Z_clean is None and attributes is None:
        raise ParameterError(owner, "Z_clean", None, "the clean images' predicted attributes (to rank the "
                             "most-changing attributes)", "Or pass attributes= explicitly.")
    arrays = [("Z_wrong", Z_wrong)] + ([] if Z_clean is None else [("Z_clean", Z_clean)])
    phi, mats, yi, yw, idx, attrs = _setup(owner, class_attributes, arrays, y, y_wrong, images, attributes,
                                           vocabulary, normalize)
    zw = mats[0]
    if attrs is None:
        attrs = top_changing_attributes(mats[1], zw, f) if len(zw) else np.empty(0, np.intp)
    d1 = np.linalg.norm(zw[:, attrs] - phi[yw][:, attrs], axis=1)
    d2 = np.linalg.norm(zw[:, attrs] - phi[yi][:, attrs], axis=1)
    return AttributeDistances(d1, d2, idx, attrs)


def figure5(y: Any, class_attributes: Any, Z: Any, Z_adv: Any, pred: Any, pred_adv: Any,
            Z_at: Any = None, Z_adv_at: Any = None, pred_at: Any = None, pred_adv_at: Any = None,
            fraction: float = DEFAULT_FRACTION, normalize: bool = False) -> dict[str, AttributeDistances]:
    """The four cases of Fig. 5 (those whose inputs are given).

    Args:
        y: ``(N,)`` true classes; class_attributes: ``(C, E)``.
        Z, Z_adv, pred, pred_adv: the standard model's predicted attributes and predicted classes
            for the clean and adversarial images (the predictions may be SJE's or the softmax's).
        Z_at, Z_adv_at, pred_at, pred_adv_at: the same with the adversarially trained model.
        fraction: share of most-changing attributes, ranked per case on that case's images.
        normalize: as :func:`prediction_distances`.

    Returns:
        ``{"a": eqs. 8-9, "c": eqs. 10-11}`` on the images clean-correct and adversarial-wrong
        (standard model); ``"b"``: eqs. 12-13 (``Z_adv_at`` vs ``Z_adv``) on the images
        clean-correct and adversarial-wrong with the standard model and adversarial-correct with
        the robust one (needs ``Z_adv_at``, ``pred_adv_at``); ``"d"``: eqs. 14-15 on the images
        clean-correct and adversarial-wrong with the robust model (needs all four ``*_at``).
    """
    out = {}
    std = select_images(y, pred, pred_adv)
    pa = np.asarray(pred_adv)
    out["a"] = _tag(prediction_distances(Z, Z_adv, y, pa, class_attributes, fraction, images=std,
                                         normalize=normalize), "8-9")
    out["c"] = _tag(class_distances(Z_adv, y, pa, class_attributes, Z_clean=Z, fraction=fraction, images=std,
                                    normalize=normalize),
                    "10-11")
    if Z_adv_at is not None and pred_adv_at is not None:
        both = std[np.asarray(pred_adv_at)[std] == np.asarray(y)[std]]
        out["b"] = _tag(prediction_distances(Z_adv_at, Z_adv, y, pa, class_attributes, fraction, images=both,
                                             normalize=normalize),
                        "12-13")
    if Z_at is not None and Z_adv_at is not None and pred_at is not None and pred_adv_at is not None:
        rob = select_images(y, pred_at, pred_adv_at)
        out["d"] = _tag(class_distances(Z_adv_at, y, np.asarray(pred_adv_at), class_attributes, Z_clean=Z_at,
                                        fraction=fraction, images=rob, normalize=normalize), "14-15")
    return out


def _tag(d: AttributeDistances, equations: str) -> AttributeDistances:
    return AttributeDistances(d.d1, d.d2, d.images, d.attributes, equations)
