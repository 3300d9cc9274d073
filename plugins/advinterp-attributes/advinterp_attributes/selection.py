"""Per-image attribute selection (Gulshad et al. 2020, Sec. 4.3, eqs. 16-17; capability D5).

For a clean image (or an adversarial one classified correctly thanks to adversarial training)::

    q = argmax_i ( Z_i - phi(y)_i )          (eq. 16; y: the class the adversarial image went to)

the attributes the image shows more than the wrong class has; for an adversarial image::

    p = argmax_i ( Z-hat_i - phi(y_n)_i )    (eq. 17; y_n: the true class)

the attributes it shows more than its true class has. The paper keeps the ``k`` best per image
(50 for CUB and AwA, 100 for LAD) and grounds them: :func:`top_k_attributes` returns them
ranked, optionally among a candidate set (e.g. the top-20 % most-changing attributes of
:func:`advinterp_attributes.top_changing_attributes`).

Labels are class indices: rows of the class-attribute matrix.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from advinterp.api import ParameterError

from ._checks import attribute_indices, l2_rows, labels, matrix

__all__ = ["top_k_attributes", "select_clean", "select_adversarial", "PAPER_K"]

#: The paper's k per dataset (Sec. 4.3).
PAPER_K = {"cub": 50, "awa": 50, "lad": 100}


def top_k_attributes(scores: Any, k: int, attributes: Sequence[Any] | None = None,
                     vocabulary: Sequence[str] | None = None) -> np.ndarray:
    """The ``k`` columns with the largest score per row, best first (ties: lower column first).

    Args:
        scores: ``(N, E)``.
        k: attributes per image, ``1 <= k <= `` the number of candidates.
        attributes: candidate columns (indices, or names with ``vocabulary``); default all.

    Returns:
        ``(N, k)`` int column indices (into the full ``E`` columns).
    """
    owner = "top_k_attributes"
    s = matrix(owner, "scores", scores)
    cand = attribute_indices(attributes, s.shape[1], vocabulary, owner)
    cand = np.arange(s.shape[1]) if cand is None else cand
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= len(cand):
        raise ParameterError(owner, "k", k, f"an integer in 1..{len(cand)} (the number of candidate attributes)")
    order = np.argsort(-s[:, cand], axis=1, kind="stable")[:, :int(k)]
    return cand[order]


def _select(owner, Z, y_ref, class_attributes, k, attributes, vocabulary, normalize):
    phi = matrix(owner, "class_attributes", class_attributes)
    z = matrix(owner, "Z", Z, width=phi.shape[1])
    if not isinstance(normalize, (bool, np.bool_)):
        raise ParameterError(owner, "normalize", normalize, "True or False")
    if normalize:
        phi, z = l2_rows(phi), l2_rows(z)
    yi = labels(owner, "y", y_ref, len(z), len(phi))
    try:
        return top_k_attributes(z - phi[yi], k, attributes, vocabulary)
    except ParameterError as err:
        raise ParameterError(owner, err.name, err.value, err.expected) from None


def select_clean(Z: Any, y_wrong: Any, class_attributes: Any, k: int, attributes: Sequence[Any] | None = None,
                 vocabulary: Sequence[str] | None = None, normalize: bool = False) -> np.ndarray:
    """Eq. 16: per image the ``k`` attributes maximising ``Z_i - phi(y_wrong)_i``.

    Args:
        Z: ``(N, E)`` predicted attributes of the clean images (or of the adversarial images with
            adversarial training, Z-hat^AT).
        y_wrong: ``(N,)`` the class each image's adversarial version was assigned (phi(y)).
        class_attributes: ``(C, E)``; k, attributes, vocabulary: as :func:`top_k_attributes`.
        normalize: divide each row of ``Z`` and of ``class_attributes`` by its Euclidean norm
            first (default False; see :func:`advinterp_attributes.prediction_distances`).

    Returns: ``(N, k)`` attribute indices, best first.
    """
    return _select("select_clean", Z, y_wrong, class_attributes, k, attributes, vocabulary, normalize)


def select_adversarial(Z_adv: Any, y: Any, class_attributes: Any, k: int, attributes: Sequence[Any] | None = None,
                       vocabulary: Sequence[str] | None = None, normalize: bool = False) -> np.ndarray:
    """Eq. 17: per image the ``k`` attributes maximising ``Z-hat_i - phi(y_n)_i``.

    Args:
        Z_adv: ``(N, E)`` predicted attributes of the adversarial images.
        y: ``(N,)`` true classes (phi(y_n)).
        class_attributes, k, attributes, vocabulary, normalize: as :func:`select_clean`.

    Returns: ``(N, k)`` attribute indices, best first.
    """
    return _select("select_adversarial", Z_adv, y, class_attributes, k, attributes, vocabulary, normalize)
