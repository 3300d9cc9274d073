"""AwA2 and LAD layouts: export/read round trips, hand-written fixtures in the release formats,
clear errors (file, line, column, fix) and registration as datasets ``awa2`` / ``lad``."""
from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

import advinterp
from advinterp.datasets.awa2 import DEFAULT_TEST_CLASSES, AwA2Dataset, export_awa2
from advinterp.datasets.lad import LADDataset, export_lad, lad_attribute_name
from advinterp.datasets.synthetic import ATTRIBUTES, CLASSES, SyntheticWorld
from advinterp.exceptions import DatasetFormatError, ParameterError
from advinterp.testing import check_dataset

K = 2  # images per class
C = len(CLASSES)


@pytest.fixture(scope="module")
def world():
    return SyntheticWorld(size=64, seed=0)


@pytest.fixture(scope="module")
def scenes(world):
    return world.generate(K * C, "test")  # the k-th image of class c is scene k * C + c


@pytest.fixture(scope="module")
def awa2(tmp_path_factory, world):
    return export_awa2(tmp_path_factory.mktemp("awa2") / "Animals_with_Attributes2", world, n_per_class=K)


@pytest.fixture(scope="module")
def lad(tmp_path_factory, world):
    return export_lad(tmp_path_factory.mktemp("lad") / "LAD", world, n_per_class=K)


def _pixels(x: torch.Tensor) -> np.ndarray:
    return x.permute(1, 2, 0).numpy() * 255.0


def _assert_images_round_trip(ds, scenes):
    """Each item is its scene within JPEG error, and much closer to it than to any other scene."""
    for i in range(len(ds)):
        x, y = ds[i]
        assert x.shape == (3, 64, 64) and x.dtype == torch.float32
        c, k = i // K, i % K
        assert y == c == int(scenes.labels[k * C + c])
        err = np.abs(_pixels(x) - scenes.images[k * C + c]).mean()
        other = np.abs(_pixels(x) - scenes.images[(k * C + c + 1) % (K * C)]).mean()
        assert err < 6.0, f"item {i}: mean abs error {err:.2f} / 255"
        assert other > 4 * err


# ---------------------------------------------------------------------------- AwA2
def test_awa2_export_writes_the_release_format(awa2):
    classes = (awa2 / "classes.txt").read_text().splitlines()
    assert classes[0] == "     1\ttabby" and classes[-1] == f"    {C}\t{CLASSES[-1]}"
    assert (awa2 / "predicates.txt").read_text().splitlines()[0] == "     1\tshape:disk"
    binary = (awa2 / "predicate-matrix-binary.txt").read_text().splitlines()
    assert len(binary) == C and binary[0] == "0 1 0 0 0 0 0 1 1 0 0 0 1 1 1 1"
    cont = (awa2 / "predicate-matrix-continuous.txt").read_text().splitlines()
    assert cont[0].split()[:2] == ["0.00", "100.00"]
    assert (awa2 / "testclasses.txt").read_text().split() == list(DEFAULT_TEST_CLASSES)
    assert len((awa2 / "trainclasses.txt").read_text().split()) == C - len(DEFAULT_TEST_CLASSES)
    assert sorted(p.name for p in (awa2 / "JPEGImages" / "tabby").iterdir()) == ["tabby_10001.jpg", "tabby_10002.jpg"]


def test_awa2_round_trip(awa2, world, scenes):
    ds = AwA2Dataset(awa2.parent, size=64)  # the parent of Animals_with_Attributes2 is accepted
    assert ds.root == awa2 and len(ds) == K * C
    assert ds.class_names == list(CLASSES) and ds.classes == list(CLASSES)
    assert ds.attribute_names == list(ATTRIBUTES)
    np.testing.assert_array_equal(ds.class_attributes, world.class_attributes)
    np.testing.assert_array_equal(ds.predicate_matrix_continuous, 100.0 * world.class_attributes)
    np.testing.assert_array_equal(ds.labels, np.repeat(np.arange(C), K))
    _assert_images_round_trip(ds, scenes)
    cont = AwA2Dataset(awa2, size=64, attributes="continuous")
    np.testing.assert_array_equal(cont.class_attributes, world.class_attributes)


def test_awa2_class_split_and_resize(awa2, world):
    test = AwA2Dataset(awa2, split="test", size=32)
    train = AwA2Dataset(awa2, split="train", size=None)
    assert test.classes == list(DEFAULT_TEST_CLASSES) and len(test) == K * len(DEFAULT_TEST_CLASSES)
    assert set(train.classes) == set(CLASSES) - set(DEFAULT_TEST_CLASSES)
    # labels stay global class indices: class_attributes[labels] are the items' attributes
    assert sorted(set(test.labels.tolist())) == sorted(CLASSES.index(c) for c in DEFAULT_TEST_CLASSES)
    np.testing.assert_array_equal(test.class_attributes[test.labels][0],
                                  world.class_attributes[CLASSES.index("cheetah")])
    x, y = test[-1]
    assert x.shape == (3, 32, 32) and 0 <= float(x.min()) and float(x.max()) <= 1 and y == CLASSES.index("tit")
    assert train[0][0].shape == (3, 64, 64)


def _solid_jpeg(path, rgb, size=(12, 8)):
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, rgb).save(path, "JPEG", quality=95)


def _awa2_fixture(root):
    """A three-class, four-predicate AwA2 written by hand as in the release: right-aligned ids and
    a tab, "+" in multi-word names, a trailing space, -1 for a missing continuous value."""
    root.mkdir(parents=True)
    (root / "classes.txt").write_text("     1\tantelope\n     2\tgrizzly+bear\n     3\tblue+whale \n")
    (root / "predicates.txt").write_text("     1\tblack\n     2\twhite\n     3\tstripes\n     4\tswims\n")
    (root / "predicate-matrix-binary.txt").write_text("0 1 0 0\n1 0 0 0\n0 0 0 1\n")
    (root / "predicate-matrix-continuous.txt").write_text(
        "   -1.00   39.25    0.00    1.25\n   55.50    2.00    0.00    0.00\n"
        "    0.00    0.00    0.00   88.75\n")
    (root / "trainclasses.txt").write_text("antelope\ngrizzly+bear\n")
    (root / "testclasses.txt").write_text("blue+whale\n")
    colours = {"antelope": (200, 30, 30), "grizzly+bear": (30, 200, 30), "blue+whale": (30, 30, 200)}
    for name, rgb in colours.items():
        _solid_jpeg(root / "JPEGImages" / name / f"{name}_10001.jpg", rgb)
    _solid_jpeg(root / "JPEGImages" / "antelope" / "antelope_10002.jpg", (250, 250, 250))
    (root / "JPEGImages" / "antelope" / "notes.txt").write_text("not an image")
    return root


def test_awa2_hand_written_fixture(tmp_path):
    root = _awa2_fixture(tmp_path / "Animals_with_Attributes2")
    ds = AwA2Dataset(root, size=None)
    assert ds.class_names == ["antelope", "grizzly+bear", "blue+whale"]
    assert ds.attribute_names == ["black", "white", "stripes", "swims"]
    np.testing.assert_array_equal(ds.class_attributes, [[0, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 1]])
    assert ds.predicate_matrix_binary.dtype == np.uint8
    assert ds.predicate_matrix_continuous[0, 0] == -1.0 and ds.predicate_matrix_continuous[2, 3] == 88.75
    cont = AwA2Dataset(root, attributes="continuous", size=None).class_attributes
    assert np.isnan(cont[0, 0]) and cont[0, 1] == pytest.approx(0.3925) and cont[1, 0] == pytest.approx(0.555)
    assert [p.name for p, _ in ds.samples] == ["antelope_10001.jpg", "antelope_10002.jpg",
                                               "grizzly+bear_10001.jpg", "blue+whale_10001.jpg"]
    assert ds.labels.tolist() == [0, 0, 1, 2]
    x, y = ds[3]
    assert x.shape == (3, 8, 12) and y == 2
    np.testing.assert_allclose(x.mean(dim=(1, 2)).numpy() * 255, [30, 30, 200], atol=3)
    test = AwA2Dataset(root, split="test", size=4)
    assert test.classes == ["blue+whale"] and test.labels.tolist() == [2] and test[0][0].shape == (3, 4, 4)


@pytest.mark.parametrize("file, text, phrases", [
    ("predicate-matrix-binary.txt", "0 1 0 0\n1 0 0\n0 0 0 1\n",
     ["predicate-matrix-binary.txt line 2", "expected 4 values", "found 3", "column 4 onward is missing", "ragged"]),
    ("predicate-matrix-binary.txt", "0 1 0 0\n1 0 0 0 1\n0 0 0 1\n", ["line 2", "column 5 onward is extra"]),
    ("predicate-matrix-binary.txt", "0 2 0 0\n1 0 0 0\n0 0 0 1\n", ["line 1, column 2", "'2' is not 0 or 1"]),
    ("predicate-matrix-binary.txt", "0 1 0 0\n1 0 0 0\n", ["expected 3 rows", "found 2", "'blue+whale'"]),
    ("predicate-matrix-continuous.txt", "  -1.00 39.25 0.00 1.25\n 55.50 x 0.00 0.00\n 0 0 0 88.75\n",
     ["predicate-matrix-continuous.txt line 2, column 2", "'x' is not a number"]),
    ("classes.txt", "     1\tantelope\n     3\tgrizzly+bear\n     3\tblue+whale\n",
     ["classes.txt line 2, column 1", "id 3 out of order", "expected 2"]),
    ("classes.txt", "     1\tantelope\n     2\n     3\tblue+whale\n", ["classes.txt line 2", "column 2"]),
    ("testclasses.txt", "blue+whale\nzebra\n", ["testclasses.txt line 2", "'zebra' is not in", "classes.txt"]),
])
def test_awa2_bad_rows_name_file_line_column_and_fix(tmp_path, file, text, phrases):
    root = _awa2_fixture(tmp_path / "Animals_with_Attributes2")
    (root / file).write_text(text)
    with pytest.raises(DatasetFormatError) as e:
        ds = AwA2Dataset(root, split="test", attributes="continuous" if "continuous" in file else "binary")
        ds.predicate_matrix_binary  # noqa: B018 - the binary matrix is read on first access
    msg = str(e.value)
    for p in phrases:
        assert p in msg, (p, msg)
    assert str(root / file) in msg and "re-download" in msg and "export_awa2()" in msg


def test_awa2_folders_and_files(tmp_path):
    root = _awa2_fixture(tmp_path / "Animals_with_Attributes2")
    (root / "JPEGImages" / "zebra").mkdir()
    with pytest.raises(DatasetFormatError, match=r"JPEGImages/zebra is a class folder not listed in .*classes.txt"):
        AwA2Dataset(root)
    (root / "JPEGImages" / "zebra").rmdir()
    shutil.rmtree(root / "JPEGImages" / "grizzly+bear")
    with pytest.raises(DatasetFormatError, match=r"grizzly\+bear is missing.*classes.txt line 2"):
        AwA2Dataset(root)
    AwA2Dataset(root, split="test")  # the missing class is not read
    (root / "predicates.txt").unlink()
    with pytest.raises(DatasetFormatError, match=r"predicates.txt is missing; expected lines `<id>\\t<predicate>`"):
        AwA2Dataset(root)
    with pytest.raises(DatasetFormatError, match="is not a folder"):
        AwA2Dataset(tmp_path / "nowhere")


def test_awa2_corrupt_image_and_parameters(tmp_path, awa2):
    root = _awa2_fixture(tmp_path / "Animals_with_Attributes2")
    (root / "JPEGImages" / "blue+whale" / "blue+whale_10001.jpg").write_bytes(b"not a jpeg")
    ds = AwA2Dataset(root)
    with pytest.raises(DatasetFormatError, match=r"blue\+whale_10001.jpg is unreadable"):
        ds[3]
    with pytest.raises(IndexError):
        ds[4]
    with pytest.raises(ParameterError, match="split"):
        AwA2Dataset(root, split="val")
    with pytest.raises(ParameterError, match="size"):
        AwA2Dataset(root, size=0)
    with pytest.raises(ParameterError, match="attributes"):
        AwA2Dataset(root, attributes="probabilistic")
    with pytest.raises(ParameterError, match="test_classes"):
        export_awa2(tmp_path / "x", test_classes=("zebra",))
    with pytest.raises(ParameterError, match="n_per_class"):
        export_awa2(tmp_path / "x", n_per_class=0)


# ---------------------------------------------------------------------------- LAD
def test_lad_export_writes_the_release_format(lad):
    ann = lad / "LAD_annotations"
    assert (ann / "label_list.txt").read_text().splitlines()[0] == "Label_A_01, tabby, tabby"
    assert (ann / "attribute_list.txt").read_text().splitlines()[0] == "Attr_A_001, shape: disk, shape: disk"
    per_class = (ann / "attributes_per_class.txt").read_text().splitlines()
    assert per_class[0] == "Label_A_01, [ 0.00 1.00 0.00 0.00 0.00 0.00 0.00 1.00 1.00 0.00 0.00 0.00 1.00 1.00 1.00 1.00 ]"
    first = (ann / "attributes.txt").read_text().splitlines()[0]
    assert first == "Label_A_01, A_tabby/tabby_0001.jpg, [ 0 1 0 0 0 0 0 1 1 0 0 0 1 1 1 1 ]"
    assert (lad / "LAD_images" / "A_tabby" / "tabby_0001.jpg").is_file()


def test_lad_round_trip(lad, world, scenes):
    ds = LADDataset(lad, size=64)
    assert len(ds) == K * C and ds.class_names == list(CLASSES) and ds.classes == list(CLASSES)
    assert ds.label_ids[0] == "Label_A_01" and ds.label_ids[-1] == f"Label_A_{C:02d}"
    assert ds.attribute_ids[-1] == f"Attr_A_{len(ATTRIBUTES):03d}"
    assert ds.attribute_names == [lad_attribute_name(a) for a in ATTRIBUTES]
    assert ds.super_classes == ["A"] * C
    np.testing.assert_array_equal(ds.class_attributes, world.class_attributes)
    np.testing.assert_array_equal(ds.image_attributes, world.class_attributes[ds.labels])
    np.testing.assert_array_equal(ds.labels, np.repeat(np.arange(C), K))
    _assert_images_round_trip(ds, scenes)


def _lad_fixture(root):
    """Two super-classes written by hand as in the release: animals (2 classes, 2 attributes) and
    fruits (1 class, 1 attribute); every vector spans all 3 attributes."""
    ann = root / "LAD_annotations"
    ann.mkdir(parents=True)
    (ann / "label_list.txt").write_text("Label_A_01, bear, 熊\nLabel_A_02, zebra, 斑马\nLabel_F_01, apple, 苹果\n",
                                        encoding="utf-8")
    (ann / "attribute_list.txt").write_text(
        "Attr_A_001, color: is brown, 颜色：是棕色的\nAttr_A_002, marking: has stripes, 花纹：有条纹\n"
        "Attr_F_001, taste: is sweet, 味道是甜的\n", encoding="utf-8")
    (ann / "attributes_per_class.txt").write_text(
        "Label_A_01, [ 0.90 0.00 0.00 ]\nLabel_A_02, [ 0.10 1.00 0.00 ]\nLabel_F_01, [ 0.00 0.00 0.75 ]\n")
    (ann / "attributes.txt").write_text(
        "Label_A_01, animals/A_bear/a1.jpg, [ 1 0 0 ]\n"
        "Label_F_01, fruits/F_apple/f1.jpg, [ 0 0 1 ]\n"
        "Label_A_02, animals/A_zebra/z1.jpg, [ 0 1 0 ]\n"
        "Label_A_01, animals/A_bear/a2.jpg, [ 0 0 0 ]\n")
    for rel, rgb in (("animals/A_bear/a1.jpg", (120, 80, 40)), ("animals/A_bear/a2.jpg", (110, 70, 30)),
                     ("animals/A_zebra/z1.jpg", (240, 240, 240)), ("fruits/F_apple/f1.jpg", (220, 20, 20))):
        _solid_jpeg(root / "LAD_images" / rel, rgb)
    return root


def test_lad_hand_written_fixture(tmp_path):
    root = _lad_fixture(tmp_path / "LAD")
    ds = LADDataset(root, size=None)
    assert ds.label_ids == ["Label_A_01", "Label_A_02", "Label_F_01"]
    assert ds.class_names == ["bear", "zebra", "apple"] and ds.super_classes == ["A", "A", "F"]
    assert ds.attribute_names == ["color: is brown", "marking: has stripes", "taste: is sweet"]
    np.testing.assert_allclose(ds.class_attributes, [[0.9, 0, 0], [0.1, 1, 0], [0, 0, 0.75]])
    assert ds.labels.tolist() == [0, 2, 1, 0]
    np.testing.assert_array_equal(ds.image_attributes, [[1, 0, 0], [0, 0, 1], [0, 1, 0], [0, 0, 0]])
    x, y = ds[1]
    assert y == 2 and x.shape == (3, 8, 12)
    np.testing.assert_allclose(x.mean(dim=(1, 2)).numpy() * 255, [220, 20, 20], atol=3)

    animals = LADDataset(root, super_class="A", size=5)
    assert animals.class_names == ["bear", "zebra"] and animals.attribute_ids == ["Attr_A_001", "Attr_A_002"]
    np.testing.assert_allclose(animals.class_attributes, [[0.9, 0], [0.1, 1]])
    assert animals.labels.tolist() == [0, 1, 0]
    np.testing.assert_array_equal(animals.image_attributes, [[1, 0], [0, 1], [0, 0]])
    assert [p.name for p, _ in animals.samples] == ["a1.jpg", "z1.jpg", "a2.jpg"]
    assert animals[2][0].shape == (3, 5, 5)
    fruits = LADDataset(root, super_class="F")
    assert fruits.class_names == ["apple"] and fruits.class_attributes.tolist() == [[0.75]] and len(fruits) == 1


@pytest.mark.parametrize("file, text, phrases", [
    ("attributes_per_class.txt", "Label_A_01, [ 0.90 0.00 0.00 ]\nLabel_A_02, [ 0.10 1.00 ]\nLabel_F_01, [ 0 0 1 ]\n",
     ["attributes_per_class.txt line 2, column 2", "expected 3 values", "found 2", "value 3 onward is missing", "ragged"]),
    ("attributes_per_class.txt", "Label_A_01, [ 0.90 0.00 0.00 ]\nLabel_A_02, 0.10 1.00 0.00\n",
     ["line 2, column 2", "expected a bracketed vector `[ v1 v2 ... ]`"]),
    ("attributes_per_class.txt", "Label_A_01, [ 0.90 0.00 0.00 ]\nLabel_A_02, [ 0.10 high 0.00 ]\n",
     ["line 2, column 2, value 2", "'high' is not a number"]),
    ("attributes_per_class.txt", "Label_A_01, [ 0.90 0.00 0.00 ]\nLabel_A_02, [ 0.10 1.00 0.00 ]\n",
     ["has no line for Label_F_01", "add `Label_F_01, [ ... ]`"]),
    ("attributes_per_class.txt", "Label_A_01, [ 1 0 0 ]\nLabel_A_01, [ 1 0 0 ]\n", ["line 2, column 1", "repeats line 1"]),
    ("attributes.txt", "Label_A_01, animals/A_bear/a1.jpg, [ 1 0 0 ]\nLabel_A_09, animals/x.jpg, [ 0 0 0 ]\n",
     ["attributes.txt line 2, column 1", "label 'Label_A_09' is not in", "label_list.txt"]),
    ("attributes.txt", "Label_A_01, animals/A_bear/a1.jpg, [ 1 0 0 ]\nLabel_A_01, [ 1 0 0 ]\n",
     ["attributes.txt line 2", "column 3 is missing"]),
    ("attributes.txt", "Label_A_01, animals/A_bear/a1.jpg, [ 1 0 ]\n", ["line 1, column 3", "value 3 onward is missing"]),
    ("attributes.txt", "Label_A_01, animals/A_bear/a1.jpg, [ 1 0 0.5 ]\n", ["line 1, column 3, value 3", "not 0 or 1"]),
    ("label_list.txt", "Label_A_01, bear, 熊\nA02, zebra, 斑马\n", ["label_list.txt line 2, column 1", "Label_<S>_<NN>"]),
    ("attribute_list.txt", "Attr_A_001, color: is brown, x\nAttr_A_001, marking: has stripes, y\n",
     ["attribute_list.txt line 2, column 1", "repeats line 1"]),
])
def test_lad_bad_rows_name_file_line_column_and_fix(tmp_path, file, text, phrases):
    root = _lad_fixture(tmp_path / "LAD")
    (root / "LAD_annotations" / file).write_text(text, encoding="utf-8")
    with pytest.raises(DatasetFormatError) as e:
        LADDataset(root)
    msg = str(e.value)
    for p in phrases:
        assert p in msg, (p, msg)
    assert str(root / "LAD_annotations" / file) in msg and "re-download" in msg and "export_lad()" in msg


def test_lad_missing_files_images_and_parameters(tmp_path):
    root = _lad_fixture(tmp_path / "LAD")
    (root / "LAD_images" / "animals" / "A_zebra" / "z1.jpg").unlink()
    ds = LADDataset(root)
    with pytest.raises(DatasetFormatError, match=r"z1.jpg is missing \(listed in .*attributes.txt line 3\)"):
        ds[2]
    with pytest.raises(ParameterError, match="super_class"):
        LADDataset(root, super_class="Z")
    with pytest.raises(ParameterError, match=r"present: A, F"):
        LADDataset(root, super_class="H")
    (root / "LAD_annotations" / "attribute_list.txt").unlink()
    with pytest.raises(DatasetFormatError, match=r"attribute_list.txt is missing; expected lines `<attribute id>"):
        LADDataset(root)
    shutil.rmtree(root / "LAD_annotations")
    with pytest.raises(DatasetFormatError, match="LAD_annotations is missing"):
        LADDataset(root)
    with pytest.raises(ParameterError, match="super_class"):
        export_lad(tmp_path / "y", super_class="Q")


# ---------------------------------------------------------------------------- registration
def test_registered_as_datasets(awa2, lad):
    names = {i.name for i in advinterp.list_components("dataset")}
    assert {"awa2", "lad"} <= names
    ds = advinterp.get_dataset("awa2", root=str(awa2), split="test", size=32)
    assert isinstance(ds, AwA2Dataset) and len(ds) == K * len(DEFAULT_TEST_CLASSES)
    ds = advinterp.get_dataset("lad", root=str(lad), size=32)
    assert isinstance(ds, LADDataset) and ds[0][0].shape == (3, 32, 32)
    registry = advinterp.get_registry()
    check_dataset(registry.info("dataset", "awa2").obj, root=str(awa2), size=32)
    check_dataset(registry.info("dataset", "lad").obj, root=str(lad), size=32)


def test_lad_per_image_vectors_spelt_as_floats(tmp_path):
    root = _lad_fixture(tmp_path / "LAD")
    (root / "LAD_annotations" / "attributes.txt").write_text(
        "Label_A_01, animals/A_bear/a1.jpg, [ 1.0 0.0 0 ]\nLabel_A_02, animals/A_zebra/z1.jpg, [0 1 1]\n")
    ds = LADDataset(root)
    np.testing.assert_array_equal(ds.image_attributes, [[1, 0, 0], [0, 1, 1]])
    assert ds.labels.tolist() == [0, 1]
