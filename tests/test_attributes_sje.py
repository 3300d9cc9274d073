"""advinterp-attributes: the SJE estimator (Gulshad et al. 2020, eqs. 3-6) and the pooled features.

Hand computations on a 3-class toy problem (loss, one mini-batch step), ``batch_size=1`` equal to
a per-sample Python SGD loop, scikit-learn's estimator checks, >= 90 % test accuracy on the
shipped model's features of the embedded world, and bad inputs."""
import numpy as np
import pytest
import torch

pytest.importorskip("sklearn")

from sklearn.utils.estimator_checks import parametrize_with_checks  # noqa: E402

import advinterp  # noqa: E402
from advinterp.api import IncompatibleModelError, ParameterError  # noqa: E402
from advinterp.datasets.synthetic import ATTRIBUTES, SyntheticWorld  # noqa: E402
from advinterp.testing import assert_model_unchanged  # noqa: E402
from advinterp_attributes import SJE, features, sje_loss, sje_step  # noqa: E402

# ------------------------------------------------------------------ the 3-class toy problem
PHI = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])  # phi(0), phi(1), phi(2)
W0 = np.eye(2)
X = np.array([[2.0, 1.0], [0.0, 1.0], [3.0, 0.0], [2.0, 2.0]])
Y = np.array([1, 2, 0, 2])
# By hand, F(x, y) = x^T W0 phi(y) and Delta + F (Delta = 1 off the true class):
#   x1 = (2, 1), y=1: F = (2, 1, 3), Delta+F = (3, 1, 4) -> y* = 2, loss 4 - 1 = 3
#   x2 = (0, 1), y=2: F = (0, 1, 1), Delta+F = (1, 2, 1) -> y* = 1, loss 2 - 1 = 1
#   x3 = (3, 0), y=0: F = (3, 0, 3), Delta+F = (3, 1, 4) -> y* = 2, loss 4 - 3 = 1
#   x4 = (2, 2), y=2: F = (2, 2, 4), Delta+F = (3, 3, 4) -> y* = 2 = y_n, loss 0, no update
HAND_LOSS = (3 + 1 + 1 + 0) / 4
# One step, eta = 0.1, summed eq.-6 updates eta * x (phi(y_n) - phi(y*))^T:
#   x1 (phi1 - phi2) = (2, 1)^T (-1, 0) = [[-2, 0], [-1, 0]]
#   x2 (phi2 - phi1) = (0, 1)^T ( 1, 0) = [[ 0, 0], [ 1, 0]]
#   x3 (phi0 - phi2) = (3, 0)^T ( 0,-1) = [[ 0,-3], [ 0, 0]]
#   sum = [[-2, -3], [0, 0]]  ->  W1 = W0 + 0.1 * sum
HAND_W1 = np.array([[0.8, -0.3], [0.0, 1.0]])


def test_loss_equals_the_hand_computation():
    assert sje_loss(W0, X, Y, PHI) == pytest.approx(HAND_LOSS)
    assert sje_loss(W0, X[3:], Y[3:], PHI) == 0.0  # the satisfied sample alone


def test_one_sgd_step_equals_the_hand_computation():
    W = W0.copy()
    assert sje_step(W, X, Y, PHI, 0.1) == 3  # three samples with y* != y_n
    np.testing.assert_allclose(W, HAND_W1, atol=1e-12)
    # the step lowers the loss on this batch (the standard hinge, not the seed's swapped eq. 5)
    assert sje_loss(W, X, Y, PHI) < HAND_LOSS


def test_the_estimator_runs_the_hand_step():
    """One epoch, one batch of all samples in data order, W0 = 0: sje_step from zeros."""
    sje = SJE(PHI, learning_rate=0.1, n_epochs=1, batch_size=len(X), shuffle=False, init_scale=0.0).fit(X, Y)
    W = np.zeros((2, 2))
    sje_step(W, X, Y, PHI, 0.1)
    np.testing.assert_allclose(sje.coef_, W, atol=1e-12)
    # from zeros every F is 0 and y* is the first class != y_n: 1, 0, 1, 0
    np.testing.assert_allclose(W, 0.1 * (X[:, :, None] * (PHI[Y] - PHI[[0, 0, 1, 0]])[:, None, :]).sum(0))
    # the epoch's online loss: each sample's hinge before its batch's update (from zeros: 1 each)
    assert sje.loss_curve_[0] == pytest.approx(sje_loss(np.zeros((2, 2)), X, Y, PHI)) == 1.0
    assert list(sje.n_updates_) == [4]


def per_sample_sgd(X, y_idx, phi, lr, epochs, seed, init_scale=1.0):
    """The paper's SGD, one Python iteration per sample (the reference)."""
    rng = np.random.RandomState(seed)
    d = X.shape[1]
    W = rng.standard_normal((d, phi.shape[1])) * (init_scale / np.sqrt(d))
    for _ in range(epochs):
        for n in rng.permutation(len(X)):
            scores = X[n] @ W @ phi.T
            delta = np.ones(len(phi))
            delta[y_idx[n]] = 0.0
            y_star = int(np.argmax(delta + scores))
            if y_star != y_idx[n]:
                W = W + lr * np.outer(X[n], phi[y_idx[n]] - phi[y_star])
    return W


def _blobs(n=120, seed=3):
    rng = np.random.RandomState(seed)
    y = rng.randint(0, 3, n)
    centres = np.array([[2.0, 0, 0, 1], [0, 2.0, 0, 1], [0, 0, 2.0, 1]])
    return centres[y] + rng.normal(0, 0.8, (n, 4)), y


def test_batch_size_1_is_the_per_sample_sgd():
    Xb, yb = _blobs()
    phi = np.array([[1.0, 0.0, 0.5], [0.0, 1.0, 0.5], [1.0, 1.0, 0.0]])
    sje = SJE(phi, learning_rate=0.05, n_epochs=4, batch_size=1, random_state=7).fit(Xb, yb)
    ref = per_sample_sgd(Xb, yb, phi, 0.05, 4, 7)
    np.testing.assert_allclose(sje.coef_, ref, rtol=0, atol=1e-12)
    # larger batches are a different (Jacobi) schedule: not the same weights, still a good fit
    big = SJE(phi, learning_rate=0.05, n_epochs=4, batch_size=32, random_state=7).fit(Xb, yb)
    assert not np.allclose(big.coef_, ref)
    assert big.score(Xb, yb) > 0.8 and sje.score(Xb, yb) > 0.8


def test_predict_modes_and_outputs():
    Xb, yb = _blobs()
    phi = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [3.0, 3.0, 3.0]])  # unequal norms
    sje = SJE(phi, learning_rate=0.05, n_epochs=5, predict_mode="compatibility").fit(Xb, yb)
    Z = sje.predict_attributes(Xb)
    assert Z.shape == (len(Xb), 3)
    F = sje.compatibility(Xb)
    np.testing.assert_allclose(F, Z @ phi.T)
    np.testing.assert_array_equal(sje.predict(Xb), F.argmax(1))
    sje.set_params(predict_mode="nearest")
    dist = ((Z[:, None, :] - phi[None]) ** 2).sum(-1)
    np.testing.assert_array_equal(sje.predict(Xb), dist.argmin(1))


def test_classes_map_labels_to_rows_and_unseen_rows_are_candidates():
    Xb, yb = _blobs()
    names = np.array(["cat", "dog", "owl"])
    phi = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    sje = SJE(phi, classes=["owl", "cat", "dog"], n_epochs=5).fit(Xb, names[yb])
    assert list(sje.classes_) == ["owl", "cat", "dog"]
    assert set(sje.predict(Xb)) <= {"owl", "cat", "dog"}
    assert sje.score(Xb, names[yb]) > 0.8
    # a 4th class absent from y is still a row, hence a candidate (zero-shot)
    phi4 = np.vstack([phi, [[1.0, 1.0, 1.0]]])
    assert list(SJE(phi4, n_epochs=1).fit(Xb, yb).classes_) == [0, 1, 2, 3]


@parametrize_with_checks([SJE(), SJE(predict_mode="compatibility", batch_size=1, n_epochs=5)])
def test_sklearn_estimator_checks(estimator, check):
    """Every check of scikit-learn's suite applies with the default one-hot class embedding
    (``class_attributes=None``); none is excluded. (With a class-attribute matrix the labels must
    match its rows, which the generic checks' arbitrary labels cannot.)"""
    check(estimator)


# ------------------------------------------------------------------ the embedded world
@pytest.fixture(scope="module")
def world_features():
    model = advinterp.get_model("synthetic-cnn")
    world = SyntheticWorld(size=64, seed=0)
    xtr, ytr = world.generate(300, "train").tensors()
    xte, yte = world.generate(200, "test").tensors()
    return model, world, features(model, xtr), ytr.numpy(), features(model, xte), yte.numpy()


def test_sje_reaches_90_percent_on_the_shipped_models_features(world_features):
    _, world, Xtr, ytr, Xte, yte = world_features
    assert Xtr.shape == (300, 96) and Xtr.dtype == np.float32
    sje = SJE(world.class_attributes, learning_rate=0.01, n_epochs=50).fit(Xtr, ytr)
    acc = sje.score(Xte, yte)
    assert acc >= 0.9, acc
    assert sje.predict_attributes(Xte).shape == (200, len(ATTRIBUTES))
    assert sje.loss_curve_[-1] < sje.loss_curve_[0]
    assert sje_loss(sje.coef_, Xtr, ytr, world.class_attributes) <= sje.loss_curve_[0]


def test_features_are_the_pooled_layer_and_leave_the_model_unchanged(world_features):
    model = world_features[0]
    x = torch.rand(5, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    f = assert_model_unchanged(model, lambda: features(model, x, batch_size=2))
    with torch.no_grad():
        ref = model.activations(x, ["layer4"])["layer4"].mean((2, 3)).numpy()
    np.testing.assert_allclose(f, ref, rtol=1e-5, atol=1e-6)
    g = features(model, x, layer="layer2")
    assert g.shape == (5, 48)
    with pytest.raises(IncompatibleModelError, match="layer"):
        features(model, x, layer="layer9")
    with pytest.raises(ParameterError, match="images"):
        features(model, x * 4)


# ------------------------------------------------------------------ bad inputs
def test_bad_inputs_raise_clear_errors():
    Xb, yb = _blobs()
    phi = np.eye(3)
    with pytest.raises(ParameterError, match=r"y=\[3\].*class_attributes has 3 rows"):
        SJE(phi).fit(Xb, np.where(yb == 2, 3, yb))  # 4 classes, 3 rows
    with pytest.raises(ParameterError, match="classes=.*3 distinct labels"):
        SJE(phi, classes=["a", "b"]).fit(Xb, yb)
    with pytest.raises(ParameterError, match="labels in classes"):
        SJE(phi, classes=["a", "b", "c"]).fit(Xb, yb)
    with pytest.raises(ParameterError, match="integer labels 0..2"):
        SJE(phi).fit(Xb, np.array(["a", "b", "c"])[yb])
    with pytest.raises(ParameterError, match="class_attributes"):
        SJE(np.array([[1.0, np.nan]] * 3)).fit(Xb, yb)
    sje = SJE(phi, n_epochs=1).fit(Xb, yb)
    with pytest.raises(ValueError, match="X has 5 features, but SJE is expecting 4 features"):
        sje.predict(np.zeros((2, 5)))
    for name, value in [("learning_rate", 0), ("n_epochs", -1), ("batch_size", 0), ("predict_mode", "cosine"),
                        ("init_scale", -1.0)]:
        with pytest.raises(ParameterError, match=name):
            SJE(phi, **{name: value}).fit(Xb, yb)
