"""advinterp-attributes: d1 / d2 (eqs. 8-15), the most-changing attributes and the selection of
eqs. 16-17, against hand computations on toy vectors; bad inputs."""
import math

import numpy as np
import pytest

from advinterp.api import ParameterError
from advinterp_attributes import (attribute_indices, class_distances, figure5, prediction_distances, select_adversarial,
                                  select_clean, select_images, top_changing_attributes, top_k_attributes)

# Two images, four attributes, three classes.
Z = np.array([[1.0, 0.0, 0.0, 2.0], [0.0, 1.0, 1.0, 0.0]])       # clean predicted attributes
ZA = np.array([[0.0, 0.0, 0.0, 2.0], [0.0, 1.0, 0.0, 3.0]])      # adversarial (Z-hat)
PHI = np.array([[1.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 1.0], [1.0, 1.0, 1.0, 1.0]])
Y = np.array([0, 1])        # true classes
YW = np.array([1, 2])       # the wrong classes the adversarial images went to
VOCAB = ["red", "blue", "head", "tail"]
# mean |Z - ZA| per attribute: (0.5, 0, 0.5, 1.5) -> ranking 3, then 0 and 2 tied (lower first): 3, 0, 2, 1


def test_most_changing_attributes_by_hand():
    np.testing.assert_array_equal(top_changing_attributes(Z, ZA, 0.5), [3, 0])
    np.testing.assert_array_equal(top_changing_attributes(Z, ZA, 0.2), [3])       # ceil(0.8) = 1
    np.testing.assert_array_equal(top_changing_attributes(Z, ZA, 0.75), [3, 0, 2])
    np.testing.assert_array_equal(top_changing_attributes(Z, ZA, 1.0), [3, 0, 2, 1])


def test_prediction_distances_eqs_8_9_by_hand():
    d = prediction_distances(Z, ZA, Y, YW, PHI, fraction=0.5)  # on attributes 3, 0
    np.testing.assert_array_equal(d.attributes, [3, 0])
    # d1 = ||Z - ZA||: image 0 (0, 1) -> 1; image 1 (-3, 0) -> 3
    np.testing.assert_allclose(d.d1, [1.0, 3.0])
    # d2 = ||phi(y) - phi(y_wrong)||: image 0 phi0 - phi1 on (3, 0) = (-1, 1) -> sqrt 2; image 1 (0, -1) -> 1
    np.testing.assert_allclose(d.d2, [math.sqrt(2), 1.0])
    assert d.fraction_d1_smaller == 0.5
    # explicit attributes by name, and an image subset
    e = prediction_distances(Z, ZA, Y, YW, PHI, attributes=["tail"], vocabulary=VOCAB, images=[1])
    np.testing.assert_allclose(e.d1, [3.0])
    np.testing.assert_allclose(e.d2, [0.0])
    np.testing.assert_array_equal(e.images, [1])


def test_class_distances_eqs_10_11_by_hand():
    d = class_distances(ZA, Y, YW, PHI, Z_clean=Z, fraction=0.5)  # attributes 3, 0
    # d1 = ||ZA - phi(y_wrong)||: image 0 (2, 0) - phi1 (1, 0) -> 1; image 1 (3, 0) - phi2 (1, 1) -> sqrt 5
    np.testing.assert_allclose(d.d1, [1.0, math.sqrt(5)])
    # d2 = ||ZA - phi(y)||: image 0 (2, 0) - phi0 (0, 1) -> sqrt 5; image 1 (3, 0) - phi1 (1, 0) -> 2
    np.testing.assert_allclose(d.d2, [math.sqrt(5), 2.0])


def test_normalised_distances_by_hand_and_scale_free():
    # image 0 on attribute "tail" (3): ZA0 / ||ZA0|| = (0, 0, 0, 1); phi1 / ||phi1|| = (0, .71, 0, .71); phi0 = e0
    d = class_distances(ZA, Y, YW, PHI, attributes=[3], normalize=True)
    np.testing.assert_allclose(d.d1[0], 1 - 1 / math.sqrt(2))
    np.testing.assert_allclose(d.d2[0], 1.0)
    a = prediction_distances(Z, ZA, Y, YW, PHI, fraction=0.5, normalize=True)
    b = prediction_distances(10 * Z, 3 * ZA, Y, YW, PHI, fraction=0.5, normalize=True)
    np.testing.assert_allclose(a.d1, b.d1)
    assert not np.allclose(prediction_distances(10 * Z, 3 * ZA, Y, YW, PHI, fraction=0.5).d1, a.d1)
    np.testing.assert_array_equal(select_clean(7 * Z, YW, PHI, k=2, normalize=True),
                                  select_clean(Z, YW, PHI, k=2, normalize=True))


def test_figure5_cases_and_image_sets():
    y = np.array([0, 1, 2])
    Z3, ZA3 = np.vstack([Z, [0, 0, 1, 1]]), np.vstack([ZA, [1, 1, 1, 1]])
    pred, pred_adv = np.array([0, 1, 0]), np.array([1, 2, 0])  # image 2 is wrong when clean: left out
    pred_adv_at = np.array([0, 0, 2])                            # robust model: image 0 right, image 1 wrong
    out = figure5(y, PHI, Z3, ZA3, pred, pred_adv, Z_adv_at=ZA3 * 0.5, pred_adv_at=pred_adv_at, fraction=0.5)
    assert set(out) == {"a", "b", "c"}
    np.testing.assert_array_equal(out["a"].images, [0, 1])
    np.testing.assert_allclose(out["a"].d1, [1.0, 3.0])          # as eqs. 8-9 above
    assert out["a"].equations == "8-9" and out["c"].equations == "10-11"
    np.testing.assert_array_equal(out["b"].images, [0])
    # eqs. 12-13 on image 0: |0.5 ZA - ZA| = 0.5 ZA = (0, 0, 0, 1): attributes 3, 0 at 50 %
    b = out["b"]
    np.testing.assert_array_equal(b.attributes, [3, 0])
    np.testing.assert_allclose(b.d1, [1.0])
    np.testing.assert_allclose(b.d2, [math.sqrt(2)])
    d = figure5(y, PHI, Z3, ZA3, pred, pred_adv, Z3, ZA3, pred, pred_adv, fraction=0.5)["d"]  # same model twice: = c
    np.testing.assert_allclose(d.d1, out["c"].d1)
    np.testing.assert_array_equal(select_images(y, pred, pred_adv), [0, 1])


def test_selection_eqs_16_17_by_hand():
    # eq. 16: Z - phi(y_wrong): image 0 (1, -1, 0, 1) -> 0, 3 (tie: lower first); image 1 (-1, 0, 0, -1) -> 1, 2
    np.testing.assert_array_equal(select_clean(Z, YW, PHI, k=2), [[0, 3], [1, 2]])
    # eq. 17: ZA - phi(y): image 0 (-1, 0, 0, 2) -> 3, 1; image 1 (0, 0, 0, 2) -> 3, 0
    np.testing.assert_array_equal(select_adversarial(ZA, Y, PHI, k=2), [[3, 1], [3, 0]])
    # among candidate attributes only (e.g. the most-changing ones), by name
    np.testing.assert_array_equal(select_adversarial(ZA, Y, PHI, k=2, attributes=["red", "blue"], vocabulary=VOCAB),
                                  [[1, 0], [0, 1]])
    np.testing.assert_array_equal(top_k_attributes(np.array([[0.1, 0.5, 0.3]]), 3), [[1, 2, 0]])


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ParameterError, match="'tial'.*Did you mean 'tail'"):
        attribute_indices(["tial"], 4, VOCAB)
    with pytest.raises(ParameterError, match="attribute indices in 0..3"):
        select_clean(Z, YW, PHI, k=1, attributes=[4])
    with pytest.raises(ParameterError, match="k=5"):
        select_clean(Z, YW, PHI, k=5)
    with pytest.raises(ParameterError, match="4 columns"):
        prediction_distances(Z[:, :3], ZA[:, :3], Y, YW, PHI)
    with pytest.raises(ParameterError, match="class indices in 0..2"):
        prediction_distances(Z, ZA, Y, np.array([1, 3]), PHI)
    with pytest.raises(ParameterError, match="fraction"):
        top_changing_attributes(Z, ZA, 0.0)
    with pytest.raises(ParameterError, match="Z_clean"):
        class_distances(ZA, Y, YW, PHI)
    with pytest.raises(ParameterError, match="names with vocabulary"):
        top_k_attributes(Z, 1, attributes=["red"])
