"""Structured joint embedding (SJE; Akata et al., CVPR 2015) as used by Gulshad et al. (2020),
Sec. 3.2, eqs. 3-6: a scikit-learn classifier that maps image features into attribute space.

Compatibility (eq. 3)::

    F(x, y; W) = theta(x)^T W phi(y)          theta(x): (D,) features, phi(y): (E,) attributes, W: (D, E)

Structured ranking loss with the 0/1 label cost ``Delta(y_n, y) = [y != y_n]`` (eqs. 4-5), the
standard SJE hinge::

    L(W) = 1/N sum_n max_y { 0, Delta(y_n, y) + F(x_n, y; W) - F(x_n, y_n; W) }

The seed text's eq. 5 writes ``Delta + F(x_n, y_n) - F(x_n, y)``, i.e. the two compatibility terms
swapped: minimising that would rank the correct class *below* the others. We implement the hinge of
the SJE paper (Akata et al. 2015, eq. 2), which is what the update of eq. 6 descends.

SGD (eq. 6; the SJE paper's Sec. 3.3): for a sample ``n``, ``y* = argmax_y [Delta(y_n, y) +
F(x_n, y; W)]`` (ties: the lowest class index); if ``y* != y_n``::

    W <- W + eta * theta(x_n) [phi(y_n) - phi(y*)]^T

Mini-batching (:func:`sje_step`): a batch ``B`` computes ``y*`` for all its samples with the same
``W`` (one ``(B, D) @ (D, E) @ (E, C)`` product) and applies the **sum** of their eq.-6 updates::

    W <- W + eta * sum_{n in B, y*_n != y_n} theta(x_n) [phi(y_n) - phi(y*_n)]^T

This is exactly the per-sample SGD except that the samples of one batch all see the ``W`` of the
batch's start (a Jacobi instead of a Gauss-Seidel sweep); the learning rate keeps its per-sample
meaning (the sum, not the mean). With ``batch_size=1`` it *is* the per-sample algorithm: same
sample order (one ``RandomState.permutation`` per epoch), same updates
(``tests/test_attributes_sje.py`` checks the weights against a per-sample Python loop).
"""
from __future__ import annotations

from numbers import Integral, Real
from typing import Any, Sequence

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils import check_random_state
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_array, check_is_fitted, validate_data

from advinterp.api import ParameterError

__all__ = ["SJE", "sje_loss", "sje_step", "PREDICT_MODES"]

#: ``predict`` modes: argmax of the compatibility F, or the class whose attribute vector is nearest
#: (Euclidean) to the predicted attributes Z = theta(x)^T W (the paper's Sec. 3.2 and 4).
PREDICT_MODES = ("nearest", "compatibility")


#: Rows per product in :func:`sje_loss`. A multi-threaded BLAS product of a few hundred rows can
#: cost milliseconds of thread start-up on a busy machine (measured: 16 ms for 512 x 96 @ 96 x 16 on
#: two shared CPUs vs 0.03 ms for 256 rows).
_BLOCK = 256


def _scores(W: np.ndarray, X: np.ndarray, off: np.ndarray, phi: np.ndarray, out: np.ndarray | None = None
            ) -> np.ndarray:
    """``Delta + F`` for a batch, ``(B, C)``; ``off``: ``1 - onehot(y_n)``, ``(B, C)``.

    Adding ``off`` keeps the true class's score exact (as a per-sample loop's ``delta + scores``
    with ``delta[y_n] = 0`` does). Written into ``out`` when given."""
    s = np.matmul(X @ W, phi.T, out=out)
    s += off
    return s


def _hinge_sum(s: np.ndarray, onehot: np.ndarray) -> float:
    """``sum_n max_y (Delta + F) - F(y_n)`` from :func:`_scores`' output (``Delta(y_n, y_n) = 0``)."""
    return float(s.max(axis=1).sum() - (s * onehot).sum())


def sje_loss(W: np.ndarray, X: np.ndarray, y_idx: np.ndarray, phi: np.ndarray) -> float:
    """The SJE ranking loss (eq. 4 with the standard hinge; see the module docstring).

    Args:
        W: ``(D, E)`` weights; X: ``(N, D)`` features; y_idx: ``(N,)`` row indices of the true
        classes in ``phi``; phi: ``(C, E)`` class-attribute matrix.

    Returns:
        ``1/N sum_n max_y [Delta(y_n, y) + F(x_n, y) - F(x_n, y_n)]`` (>= 0; 0 for ``N = 0``).
    """
    X, y_idx = np.asarray(X, dtype=np.float64), np.asarray(y_idx, dtype=np.intp)
    if len(X) == 0:
        return 0.0
    W, phi = np.asarray(W, dtype=np.float64), np.asarray(phi, dtype=np.float64)
    eye = np.eye(len(phi))
    total = 0.0
    for i in range(0, len(X), _BLOCK):  # row blocks: small products stay single-threaded in BLAS
        oh = eye[y_idx[i:i + _BLOCK]]
        total += _hinge_sum(_scores(W, X[i:i + _BLOCK], 1.0 - oh, phi), oh)
    return total / len(X)


def sje_step(W: np.ndarray, X: np.ndarray, y_idx: np.ndarray, phi: np.ndarray, learning_rate: float) -> int:
    """One mini-batch SGD step, **in place** on ``W`` (float64): the summed eq.-6 updates of the
    batch's samples whose ``y* != y_n``, all computed with the ``W`` given (module docstring).

    Args: as :func:`sje_loss`, plus ``learning_rate`` (eta). Returns the number of updating samples.
    """
    X, y_idx = np.asarray(X, dtype=np.float64), np.asarray(y_idx, dtype=np.intp)
    return _step(W, X, y_idx, 1.0 - np.eye(len(phi))[y_idx], phi, learning_rate)


def _step(W: np.ndarray, X: np.ndarray, y_idx: np.ndarray, off: np.ndarray, phi: np.ndarray, lr: float,
          out: np.ndarray | None = None) -> int:
    """:func:`sje_step` given ``off = 1 - onehot(y_n)``; the batch's ``Delta + F`` (before the
    update) is written into ``out`` when given (``fit`` takes the epoch's loss from it)."""
    y_star = _scores(W, X, off, phi, out).argmax(axis=1)
    bad = y_star != y_idx
    n = int(np.count_nonzero(bad))
    if n:
        W += lr * (X[bad].T @ (phi[y_idx[bad]] - phi[y_star[bad]]))
    return n


def _number(owner: str, name: str, value: Any, low: float, integer: bool, inclusive: bool = False) -> None:
    kind = Integral if integer else Real
    ok = isinstance(value, kind) and not isinstance(value, bool) and (value >= low if inclusive else value > low)
    if not ok:
        what = "an integer" if integer else "a number"
        raise ParameterError(owner, name, value, f"{what} {'>=' if inclusive else '>'} {low}")


class SJE(ClassifierMixin, BaseEstimator):
    """Structured joint embedding classifier (eqs. 3-6; module docstring for the loss and SGD).

    Args:
        class_attributes: ``(C, E)`` class-attribute matrix, row ``c`` = ``phi`` of class ``c``
            (binary or continuous). ``None`` (default): one-hot class embeddings over the labels
            seen in ``fit`` (``phi = I``; SJE is then a multiclass ranking perceptron/SVM) -- this
            default is what lets the estimator run scikit-learn's generic checks.
        classes: the label of each row of ``class_attributes`` (length ``C``, distinct). ``None``
            (default): labels must be the integers ``0 .. C-1`` (label ``c`` = row ``c``). Every
            row is a candidate class in ``fit`` and ``predict``, including classes absent from
            ``y`` (zero-shot). Ignored when ``class_attributes`` is None.
        learning_rate: eta of eq. 6 (default 0.01), constant.
        n_epochs: passes over the training set (default 50).
        batch_size: samples per SGD step (default 64; 1 = the paper's per-sample SGD exactly).
        init_scale: ``W0`` entries are drawn from ``N(0, init_scale^2 / D)`` (default 1.0;
            0 = zeros).
        predict_mode: ``"nearest"`` (default, the paper's Sec. 4: the class whose attribute vector
            ``phi(y)`` is nearest in Euclidean distance to ``Z = theta(x)^T W``) or
            ``"compatibility"`` (argmax_y ``F(x, y; W)``, the SJE paper's rule). They agree when
            all rows of ``class_attributes`` have the same norm (e.g. one-hot).
        shuffle: a new random sample order each epoch (default True); False = the data order.
        random_state: seed (int), ``RandomState`` or None, for ``W0`` and the sample orders (default 0).

    Attributes (after ``fit``):
        classes_: ``(C,)`` labels, row order of ``class_attributes_``.
        class_attributes_: ``(C, E)`` float64 phi used.
        coef_: ``(D, E)`` float64 ``W``.
        n_features_in_: ``D``. n_iter_: epochs run.
        loss_curve_: ``(n_epochs,)`` the epoch's online training loss: each sample's eq.-4 hinge
            when its batch was visited (before that batch's update), averaged over the epoch -- the
            scores the step computes anyway; ``sje_loss(coef_, ...)`` is the exact loss at the end.
        n_updates_: ``(n_epochs,)`` samples with ``y* != y_n`` in each epoch.
    """

    def __init__(self, class_attributes: Any = None, classes: Sequence[Any] | None = None,
                 learning_rate: float = 0.01, n_epochs: int = 50, batch_size: int = 64, init_scale: float = 1.0,
                 predict_mode: str = "nearest", shuffle: bool = True, random_state: Any = 0):
        self.class_attributes = class_attributes
        self.classes = classes
        self.learning_rate = learning_rate
        self.n_epochs = n_epochs
        self.batch_size = batch_size
        self.init_scale = init_scale
        self.predict_mode = predict_mode
        self.shuffle = shuffle
        self.random_state = random_state

    # ----------------------------------------------------------------- validation
    def _check_params(self) -> None:
        own = "SJE"
        _number(own, "learning_rate", self.learning_rate, 0, integer=False)
        _number(own, "n_epochs", self.n_epochs, 0, integer=True, inclusive=True)
        _number(own, "batch_size", self.batch_size, 0, integer=True)
        _number(own, "init_scale", self.init_scale, 0, integer=False, inclusive=True)
        if self.predict_mode not in PREDICT_MODES:
            raise ParameterError(own, "predict_mode", self.predict_mode, f"one of {PREDICT_MODES}")

    def _label_rows(self, y: np.ndarray) -> np.ndarray:
        """Set ``classes_`` / ``class_attributes_``; return the row index of every label."""
        own = "SJE"
        if self.class_attributes is None:
            self.classes_, y_idx = np.unique(y, return_inverse=True)
            self.class_attributes_ = np.eye(len(self.classes_))
            return y_idx
        try:
            phi = check_array(self.class_attributes, dtype=np.float64, ensure_2d=True, ensure_min_samples=1)
        except (ValueError, TypeError) as err:
            raise ParameterError(own, "class_attributes", self.class_attributes,
                                 "a finite (n_classes, n_attributes) matrix", str(err)) from None
        n_rows = len(phi)
        if self.classes is None:
            classes = np.arange(n_rows)
            if not np.issubdtype(np.asarray(y).dtype, np.integer):
                raise ParameterError(own, "y", f"labels of dtype {np.asarray(y).dtype}",
                                     f"integer labels 0..{n_rows - 1} (the rows of class_attributes)",
                                     "Pass classes=[label of row 0, label of row 1, ...] for other labels.")
        else:
            classes = np.asarray(self.classes)
            if classes.ndim != 1 or len(classes) != n_rows or len(np.unique(classes)) != n_rows:
                raise ParameterError(own, "classes", self.classes,
                                     f"{n_rows} distinct labels, one per row of class_attributes "
                                     f"(it has {n_rows} rows)")
        row = {c: i for i, c in enumerate(classes.tolist())}
        y_idx = np.fromiter((row.get(v, -1) for v in np.asarray(y).tolist()), dtype=np.intp, count=len(y))
        if (y_idx < 0).any():
            bad = sorted({v for v, i in zip(np.asarray(y).tolist(), y_idx) if i < 0}, key=repr)
            where = f"0..{n_rows - 1}" if self.classes is None else "classes"
            raise ParameterError(own, "y", bad[:10],
                                 f"labels in {where}: class_attributes has {n_rows} rows (one per class)",
                                 "Give one row of class_attributes per class (and classes= for its labels).")
        self.classes_ = classes
        self.class_attributes_ = phi
        return y_idx

    # ----------------------------------------------------------------- fit / predict
    def fit(self, X: Any, y: Any) -> "SJE":
        """Learn ``W`` by SGD on the ranking loss (module docstring).

        Args:
            X: ``(N, D)`` features theta(x) (e.g. :func:`advinterp_attributes.features`).
            y: ``(N,)`` labels (see ``class_attributes`` / ``classes``).
        """
        self._check_params()
        X, y = validate_data(self, X, y, dtype=np.float64)
        check_classification_targets(y)
        y_idx = self._label_rows(y)
        phi = self.class_attributes_
        rng = check_random_state(self.random_state)
        n, d = X.shape
        W = rng.standard_normal((d, phi.shape[1])) * (float(self.init_scale) / np.sqrt(d))
        bs, lr, eye = int(self.batch_size), float(self.learning_rate), np.eye(len(phi))
        losses, updates = [], []
        for _ in range(int(self.n_epochs)):
            Xe, ye = (X, y_idx)
            if self.shuffle:
                order = rng.permutation(n)
                Xe, ye = X[order], y_idx[order]  # one gather per epoch; the batches are views
            oh = eye[ye]
            off, S = 1.0 - oh, np.empty((n, len(phi)))  # S: every sample's Delta + F when visited
            count = 0
            for start in range(0, n, bs):
                stop = start + bs
                count += _step(W, Xe[start:stop], ye[start:stop], off[start:stop], phi, lr, S[start:stop])
            total = _hinge_sum(S, oh)
            updates.append(count)
            losses.append(total / n)
        self.coef_ = W
        self.n_iter_ = int(self.n_epochs)
        self.loss_curve_ = np.asarray(losses, dtype=np.float64)
        self.n_updates_ = np.asarray(updates, dtype=np.int64)
        return self

    def _X(self, X: Any) -> np.ndarray:
        check_is_fitted(self)
        return validate_data(self, X, dtype=np.float64, reset=False)

    def predict_attributes(self, X: Any) -> np.ndarray:
        """``Z = theta(x)^T W``: ``(N, E)`` predicted attributes (the paper's Z)."""
        return self._X(X) @ self.coef_

    def compatibility(self, X: Any) -> np.ndarray:
        """``F(x, y; W)`` for every class: ``(N, C)``, columns in ``classes_`` order.

        (Not called ``decision_function``: scikit-learn expects a 1-d one for two classes.)"""
        return self.predict_attributes(X) @ self.class_attributes_.T

    def predict(self, X: Any) -> np.ndarray:
        """``(N,)`` labels by ``predict_mode`` (ties: the first class in ``classes_``)."""
        if self.predict_mode not in PREDICT_MODES:
            raise ParameterError("SJE", "predict_mode", self.predict_mode, f"one of {PREDICT_MODES}")
        Z = self.predict_attributes(X)
        phi = self.class_attributes_
        if self.predict_mode == "compatibility":
            best = (Z @ phi.T).argmax(axis=1)
        else:  # argmin ||Z - phi(y)||^2 = argmin (||phi(y)||^2 - 2 Z.phi(y))
            best = ((phi * phi).sum(axis=1)[None, :] - 2.0 * (Z @ phi.T)).argmin(axis=1)
        return self.classes_[best]
