"""CUB-200-2011 layout: export/read round trip and errors."""
from __future__ import annotations

import shutil

import numpy as np
import pytest

from advinterp.datasets.cub import CUB_PARTS, CUBDataset, cub_attribute_name, export_cub
from advinterp.datasets.synthetic import ATTRIBUTES, CLASSES, SyntheticWorld
from advinterp.exceptions import DatasetFormatError, ParameterError

K = 4  # images per class: 2 train, 2 test
C = len(CLASSES)


@pytest.fixture(scope="module")
def world():
    return SyntheticWorld(size=64, seed=0)


@pytest.fixture(scope="module")
def exported(tmp_path_factory, world):
    return export_cub(tmp_path_factory.mktemp("cub") / "CUB_200_2011", world, n_per_class=K)


def _copy(exported, tmp_path):
    return shutil.copytree(exported, tmp_path / "CUB_200_2011")


def test_vocabulary(exported, world):
    ds = CUBDataset(exported)
    assert ds.classes == list(CLASSES)
    assert ds.class_dirs[0] == "001.tabby" and ds.class_dirs[-1] == f"{C:03d}.{CLASSES[-1]}"
    assert ds.attribute_names == [cub_attribute_name(a) for a in ATTRIBUTES]
    assert ds.attribute_names[0] == "has_shape::disk"
    np.testing.assert_array_equal(ds.class_attributes, world.class_attributes)
    assert ds.certainties == {1: "not visible", 2: "guessing", 3: "probably", 4: "definitely"}
    assert ds.part_names == list(CUB_PARTS)
    first = (exported / "images.txt").read_text().splitlines()[0]
    assert first == "1 001.tabby/tabby_train_000000.png"


def test_round_trip_splits_labels_images_boxes(exported, world):
    full = CUBDataset(exported)
    train, test = CUBDataset(exported, split="train"), CUBDataset(exported, split="test")
    assert len(full) == K * C and len(train) == len(test) == K * C // 2
    assert train.is_training.all() and not test.is_training.any()
    assert full.image_ids.tolist() == list(range(1, K * C + 1))
    np.testing.assert_array_equal(np.bincount(full.labels), np.full(C, K))
    np.testing.assert_array_equal(full.image_attributes, world.class_attributes[full.labels])
    assert (full.image_attribute_certainty == 4).all()

    for ds, split in ((train, "train"), (test, "test")):
        gen = world.generate(2 * C, split)  # k-th image of class c is scene k * C + c
        for i in range(len(ds)):
            image, label = ds[i]
            c, k = i // 2, i % 2
            assert label == c == int(gen.labels[k * C + c])
            np.testing.assert_array_equal(image, gen.images[k * C + c])
            x1, y1, x2, y2 = gen.boxes[k * C + c][0].xyxy
            np.testing.assert_array_equal(ds.boxes[i], [x1, y1, x2 - x1, y2 - y1])
            parts = {b.name: b.xyxy for b in gen.boxes[k * C + c] if b.category == "part"}
            for p, name in enumerate(CUB_PARTS):
                if name in parts:
                    px1, py1, px2, py2 = parts[name]
                    np.testing.assert_array_equal(ds.parts[i, p], [(px1 + px2) / 2, (py1 + py2) / 2, 1])
                else:
                    np.testing.assert_array_equal(ds.parts[i, p], [0, 0, 0])
    assert list(iter(train))[3][1] == 1


def test_attributes_file_next_to_folder_and_parent_root(exported, tmp_path):
    root = _copy(exported, tmp_path)
    (root / "attributes.txt").rename(tmp_path / "attributes.txt")  # official placement
    ds = CUBDataset(tmp_path)  # the parent of CUB_200_2011 is accepted
    assert ds.root == root
    assert ds.attribute_names[1] == "has_shape::block"
    (tmp_path / "attributes.txt").unlink()
    with pytest.raises(DatasetFormatError, match="attributes.txt is missing"):
        CUBDataset(root).attribute_names


def test_export_parameters(tmp_path):
    with pytest.raises(ParameterError):
        export_cub(tmp_path, n_per_class=0)
    with pytest.raises(ParameterError):
        export_cub(tmp_path, train_fraction=1.5)
    with pytest.raises(ParameterError):
        CUBDataset(tmp_path, split="val")


def test_malformed_line(exported, tmp_path):
    root = _copy(exported, tmp_path)
    path = root / "image_class_labels.txt"
    lines = path.read_text().splitlines()
    lines[4] = "5 x"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DatasetFormatError) as e:
        CUBDataset(root)
    msg = str(e.value)
    assert str(path) in msg and "line 5" in msg and "'x'" in msg


def test_short_box_line_and_bad_attribute(exported, tmp_path):
    root = _copy(exported, tmp_path)
    path = root / "bounding_boxes.txt"
    lines = path.read_text().splitlines()
    lines[2] = "3 1.0 2.0"
    path.write_text("\n".join(lines) + "\n")
    ds = CUBDataset(root)  # boxes are read on first access
    with pytest.raises(DatasetFormatError, match=r"bounding_boxes\.txt line 3: expected"):
        ds.boxes
    path = root / "attributes" / "image_attribute_labels.txt"
    lines = path.read_text().splitlines()
    lines[0] = "1 99 1 4 0"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DatasetFormatError, match=r"image_attribute_labels\.txt line 1: attribute id 99"):
        ds.image_attributes


def test_missing_files_and_corrupt_image(exported, tmp_path):
    root = _copy(exported, tmp_path)
    name = (root / "images.txt").read_text().split()[1]
    (root / "images" / name).write_bytes(b"garbage")
    ds = CUBDataset(root)
    with pytest.raises(DatasetFormatError) as e:
        ds[0]
    assert str(root / "images" / name) in str(e.value) and "images.txt line 1" in str(e.value)
    (root / "train_test_split.txt").unlink()
    with pytest.raises(DatasetFormatError, match=r"train_test_split\.txt is missing"):
        CUBDataset(root)
