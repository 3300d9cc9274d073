"""The embedded world: determinism, class definitions, masks consistent with boxes."""
import itertools

import numpy as np
import pytest

from advinterp.datasets.synthetic import (ATTRIBUTES, CATEGORIES, CLASSES, CONCEPTS, PIXEL_CATEGORIES,
                                          SyntheticDataset, SyntheticWorld)
from advinterp.exceptions import ParameterError


@pytest.fixture(scope="module")
def batch():
    return SyntheticWorld(seed=0).generate(120, "train")


def test_deterministic_and_order_independent():
    w = SyntheticWorld(seed=3)
    a = w.generate(10, "test", start=5)
    b = SyntheticWorld(seed=3).render(9, "test")
    assert np.array_equal(a.images[4], b.image)
    assert not np.array_equal(SyntheticWorld(seed=4).render(9, "test").image, b.image)
    assert not np.array_equal(w.render(9, "train").image, b.image)


def test_class_attribute_definitions():
    m = SyntheticWorld().class_attributes
    assert len(CLASSES) >= 10 and len(ATTRIBUTES) >= 12 and m.shape == (len(CLASSES), len(ATTRIBUTES))
    assert len({tuple(r) for r in m}) == len(CLASSES), "two classes share an attribute vector"
    groups = {a.split(":")[0] for a in ATTRIBUTES}
    for g in ("shape", "color", "texture"):  # exactly one value per exclusive group
        cols = [i for i, a in enumerate(ATTRIBUTES) if a.startswith(g + ":")]
        assert (m[:, cols].sum(1) == 1).all()
    assert {"shape", "color", "texture", "part", "size"} <= groups
    ham = {(i, j): int(np.abs(m[i] - m[j]).sum()) for i, j in itertools.combinations(range(len(m)), 2)}
    assert min(ham.values()) <= 2, "no fine-grained pair (classes sharing almost all attributes)"
    assert max(ham.values()) >= 7, "no pair of classes that share few attributes"


def test_balanced_labels_and_shapes(batch):
    assert batch.images.shape == (120, 64, 64, 3) and batch.images.dtype == np.uint8
    assert np.bincount(batch.labels, minlength=len(CLASSES)).tolist() == [10] * len(CLASSES)
    x, y = batch.tensors()
    assert x.shape == (120, 3, 64, 64) and 0 <= x.min() and x.max() <= 1 and y.dtype.is_floating_point is False


def test_masks_match_boxes_and_categories(batch):
    cat_of = {c.id: c.category for c in CONCEPTS}
    name_of = {c.id: c.name for c in CONCEPTS}
    for i in range(len(batch)):
        sc = batch[i]
        for cat in PIXEL_CATEGORIES:
            ids = np.unique(sc.masks[cat])
            assert all(cat_of[int(v)] == cat for v in ids if v), f"{cat} mask holds foreign concepts"
        assert (sc.masks["color"] > 0).all(), "every pixel has a colour"
        assert cat_of[sc.scene] == "scene"
        obj = sc.masks["object"] > 0
        # the object mask holds the background and exactly the concept of the scene's class
        obj_id = [c.id for c in CONCEPTS if c.category == "object" and c.name == CLASSES[sc.label]]
        assert len(obj_id) == 1 and obj_id[0] > 0
        assert set(np.unique(sc.masks["object"]).tolist()) == {0, obj_id[0]}
        h, w = sc.masks["object"].shape
        bx0, by0, bx1, by1 = sc.boxes[0].xyxy
        assert 0 <= bx0 < bx1 <= w and 0 <= by0 < by1 <= h
        ys, xs = np.nonzero(obj)
        assert sc.boxes[0].xyxy == (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
        assert sc.boxes[0].name == CLASSES[sc.label] and sc.boxes[0].category == "object"
        parts = {name_of[int(v)] for v in np.unique(sc.masks["part"]) if v}
        assert parts == {b.name for b in sc.boxes[1:]}
        attrs = set(sc.boxes[0].attributes)
        for p in ("head", "legs", "tail"):
            assert (f"part:{p}" in attrs) == (p in parts)
        assert (sc.masks["part"] > 0).sum() <= obj.sum() and not ((sc.masks["part"] > 0) & ~obj).any()


def test_object_colour_visible_in_pixels(batch):
    """The colour mask is grounded in the pixels: red-labelled pixels are redder than blue ones."""
    cid = {c.name: c.id for c in CONCEPTS if c.category == "color"}
    img = batch.images.astype(float)
    red = img[batch.masks["color"] == cid["red"]].mean(0)
    blue = img[batch.masks["color"] == cid["blue"]].mean(0)
    assert red[0] > red[2] + 40 and blue[2] > blue[0] + 40


def test_size_parameter_and_errors():
    for s in (32, 100):
        sc = SyntheticWorld(size=s).render(0)
        assert sc.image.shape == (s, s, 3) and sc.masks["object"].shape == (s, s) and sc.masks["object"].any()
    with pytest.raises(ParameterError, match="size"):
        SyntheticWorld(size=8)
    with pytest.raises(ParameterError, match="split"):
        SyntheticWorld().render(0, split="validation")
    with pytest.raises(ParameterError, match="n=-1"):
        SyntheticWorld().generate(-1)


def test_dataset_view():
    ds = SyntheticDataset(n=24, split="val")
    x, y = ds[13]
    assert x.shape == (3, 64, 64) and y == 13 % len(CLASSES) and len(ds) == 24
    assert set(CATEGORIES) == {"color", "object", "part", "scene", "texture"}
