"""The CUB-200-2011 dataset layout: export of the synthetic world and a lazy reader.

Layout of ``CUB_200_2011/`` (all ids 1-based, fields separated by spaces)::

    images.txt                        <image_id> <image_name>        (relative to images/)
    classes.txt                       <class_id> <class_name>        e.g. 1 001.Black_footed_Albatross
    image_class_labels.txt            <image_id> <class_id>
    train_test_split.txt              <image_id> <is_training_image>
    bounding_boxes.txt                <image_id> <x> <y> <width> <height>
    attributes/image_attribute_labels.txt            <image_id> <attribute_id> <is_present> <certainty_id> <time>
    attributes/class_attribute_labels_continuous.txt one row per class, one value (0-100) per attribute
    attributes/certainties.txt        <certainty_id> <name>          (1 not visible .. 4 definitely)
    parts/parts.txt                   <part_id> <part name>
    parts/part_locs.txt               <image_id> <part_id> <x> <y> <visible>
    attributes.txt                    <attribute_id> <name>          e.g. 1 has_bill_shape::curved_(up_or_down)

In the official archive ``attributes.txt`` lies next to the ``CUB_200_2011`` folder;
:func:`export_cub` writes it inside the root and :class:`CUBDataset` looks in both places
(and in ``attributes/``).

Example::

    root = export_cub("/tmp/cub_synth", n_per_class=10)
    train = CUBDataset(root, split="train")
    image, label = train[0]                 # (64, 64, 3) uint8, 0-based class index
    train.class_attributes                  # (12, 16) float in [0, 1]
"""
from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Sequence

import numpy as np

from ..exceptions import DatasetFormatError, ParameterError
from .broden import _read_image_file
from .synthetic import ATTRIBUTES, CLASSES, SyntheticWorld

__all__ = ["CUB_PARTS", "CUBDataset", "cub_attribute_name", "export_cub"]

#: Part names of the synthetic world, in ``parts/parts.txt`` order (ids 1, 2, 3).
CUB_PARTS: tuple[str, ...] = ("head", "legs", "tail")

_HINT = "Fix it, or re-download CUB_200_2011 / re-export it with export_cub()."
_CERTAINTIES = ("not visible", "guessing", "probably", "definitely")


def cub_attribute_name(attribute: str) -> str:
    """Map a ``group:value`` attribute to CUB's style: ``"shape:disk"`` -> ``"has_shape::disk"``."""
    group, _, value = attribute.partition(":")
    return f"has_{group}::{value}"


def _fmt(x: float) -> str:
    return repr(float(x))


# ---------------------------------------------------------------------------- export
def export_cub(root, world: SyntheticWorld | None = None, n_per_class: int = 10,
               train_fraction: float = 0.5, start: int = 0) -> Path:
    """Render synthetic scenes and write them in the CUB-200-2011 layout under ``root``.

    Each class ``c`` gets ``n_per_class`` images: the first
    ``n_train = floor(train_fraction * n_per_class + 0.5)`` are training images
    (``is_training_image = 1``), rendered from the world's ``"train"`` split, the rest
    test images from its ``"test"`` split. The ``k``-th image of class ``c`` in a split is
    ``world.render(start + k * n_classes + c, split, label=c)`` -- with ``start = 0`` the
    training images are exactly ``world.generate(n_train * n_classes, "train")``, grouped by
    class. Image ids run class by class (training images first), like CUB.

    Written: images as ``images/<NNN>.<class>/<class>_<split>_<scene index:06d>.png``
    (PNG, exact round trip); class folders ``001.tabby`` ...; attribute names
    ``has_<group>::<value>`` (:func:`cub_attribute_name`); per-image attributes = the class
    attribute vector (certainty 4 "definitely", time 0); class-level continuous values =
    ``100 * world.class_attributes``; the bounding box = the object box as
    ``x y width height``; part locations = the centre of each part box (visible 1), or
    ``0 0`` with visible 0 for a part the image lacks. Part ids: 1 head, 2 legs, 3 tail.

    Args:
        root: output folder (created if needed); existing files are replaced.
        world: the generator (default ``SyntheticWorld()``).
        n_per_class: images per class (default 10, >= 1).
        train_fraction: fraction of each class used for training (default 0.5, in [0, 1]).
        start: scene index offset (default 0).

    Returns:
        ``Path(root)``.
    """
    from PIL import Image

    world = SyntheticWorld() if world is None else world
    if not isinstance(n_per_class, (int, np.integer)) or isinstance(n_per_class, bool) or n_per_class < 1:
        raise ParameterError("export_cub", "n_per_class", n_per_class, "a positive integer")
    if not isinstance(train_fraction, (int, float)) or not 0.0 <= float(train_fraction) <= 1.0:
        raise ParameterError("export_cub", "train_fraction", train_fraction, "a float in [0, 1]")
    if not isinstance(start, (int, np.integer)) or isinstance(start, bool) or start < 0:
        raise ParameterError("export_cub", "start", start, "a non-negative integer")
    root = Path(root)
    for sub in ("images", "attributes", "parts"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    n_cls, n_attr = len(CLASSES), len(ATTRIBUTES)
    n_train = int(np.floor(float(train_fraction) * n_per_class + 0.5))
    class_attr = world.class_attributes

    images, labels, splits, boxes, attrs, parts = [], [], [], [], [], []
    img_id = 0
    for c, cname in enumerate(CLASSES):
        folder = f"{c + 1:03d}.{cname}"
        (root / "images" / folder).mkdir(exist_ok=True)
        for k in range(n_per_class):
            split, kk = ("train", k) if k < n_train else ("test", k - n_train)
            index = int(start) + kk * n_cls + c
            sc = world.render(index, split, label=c)
            img_id += 1
            name = f"{folder}/{cname}_{split}_{index:06d}.png"
            Image.fromarray(sc.image).save(root / "images" / name)
            images.append(f"{img_id} {name}")
            labels.append(f"{img_id} {c + 1}")
            splits.append(f"{img_id} {int(split == 'train')}")
            obj = next(b for b in sc.boxes if b.category == "object")
            x1, y1, x2, y2 = obj.xyxy
            boxes.append(f"{img_id} {_fmt(x1)} {_fmt(y1)} {_fmt(x2 - x1)} {_fmt(y2 - y1)}")
            for a in range(n_attr):
                attrs.append(f"{img_id} {a + 1} {int(class_attr[c, a])} 4 0")
            part_boxes = {b.name: b.xyxy for b in sc.boxes if b.category == "part"}
            for p, pname in enumerate(CUB_PARTS):
                if pname in part_boxes:
                    px1, py1, px2, py2 = part_boxes[pname]
                    parts.append(f"{img_id} {p + 1} {_fmt((px1 + px2) / 2)} {_fmt((py1 + py2) / 2)} 1")
                else:
                    parts.append(f"{img_id} {p + 1} 0.0 0.0 0")

    def write(rel: str, lines: Sequence[str]) -> None:
        (root / rel).write_text("".join(line + "\n" for line in lines), encoding="utf-8")

    write("images.txt", images)
    write("classes.txt", [f"{c + 1} {c + 1:03d}.{name}" for c, name in enumerate(CLASSES)])
    write("image_class_labels.txt", labels)
    write("train_test_split.txt", splits)
    write("bounding_boxes.txt", boxes)
    write("attributes.txt", [f"{a + 1} {cub_attribute_name(name)}" for a, name in enumerate(ATTRIBUTES)])
    write("attributes/image_attribute_labels.txt", attrs)
    write("attributes/class_attribute_labels_continuous.txt",
          [" ".join(_fmt(100.0 * v) for v in row) for row in class_attr])
    write("attributes/certainties.txt", [f"{k + 1} {name}" for k, name in enumerate(_CERTAINTIES)])
    write("parts/parts.txt", [f"{p + 1} {name}" for p, name in enumerate(CUB_PARTS)])
    write("parts/part_locs.txt", parts)
    return root


# ---------------------------------------------------------------------------- reading helpers
def _lines(path: Path, fields: str, min_fields: int, max_split: int = -1, max_fields: int | None = None):
    """Yield ``(line number, fields)`` of the non-blank lines of ``path``; each must have at
    least ``min_fields`` (and at most ``max_fields``) whitespace-separated fields."""
    if not path.is_file():
        raise DatasetFormatError(f"{path} is missing; expected lines `{fields}`. {_HINT}")
    try:
        with open(path, encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                parts = line.split(None, max_split) if max_split >= 0 else line.split()
                if len(parts) < min_fields or (max_fields is not None and len(parts) > max_fields):
                    raise DatasetFormatError(
                        f"{path} line {n}: expected `{fields}`, found {line.rstrip()!r}. {_HINT}")
                yield n, parts
    except UnicodeDecodeError as e:
        raise DatasetFormatError(f"{path}: not a UTF-8 text file ({e}). {_HINT}") from e


def _int(text: str, path: Path, n: int, what: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise DatasetFormatError(f"{path} line {n}: {what} {text!r} is not an integer. {_HINT}") from None


def _float(text: str, path: Path, n: int, what: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise DatasetFormatError(f"{path} line {n}: {what} {text!r} is not a number. {_HINT}") from None


def _id_table(path: Path, fields: str) -> dict[int, tuple[int, str]]:
    """``{id: (line, name)}`` of an ``<id> <name>`` file (names may contain spaces)."""
    out: dict[int, tuple[int, str]] = {}
    for n, (i, name) in _lines(path, fields, 2, max_split=1):
        key = _int(i, path, n, "id")
        if key in out:
            raise DatasetFormatError(f"{path} line {n}: id {key} repeats line {out[key][0]}. {_HINT}")
        out[key] = (n, name.strip())
    return out


# ---------------------------------------------------------------------------- dataset
class CUBDataset:
    """A CUB-200-2011 dataset on disk (the official release or :func:`export_cub` output).

    The image list, labels and split are read up front; attributes, boxes and parts on
    first access; images only when an item is accessed.

    Args:
        root: the ``CUB_200_2011`` folder (holding ``images.txt``); its parent is accepted too.
        split: ``"train"`` (``is_training_image = 1``), ``"test"`` or None for all images
            (default None).

    Attributes (arrays are aligned with the dataset's items, ordered by image id):
        root: the ``CUB_200_2011`` folder.
        classes: class names without the ``NNN.`` prefix (``"Black_footed_Albatross"``).
        class_dirs: the names as in ``classes.txt`` (``"001.Black_footed_Albatross"``).
        image_ids: ``(n,)`` int64 CUB image ids (1-based).
        labels: ``(n,)`` int64 0-based class indices.
        is_training: ``(n,)`` bool ``is_training_image`` flags.
        paths: the ``n`` image paths.
        attribute_names: attribute names (``"has_shape::disk"``).
        class_attributes: ``(n_classes, n_attributes)`` float64 in [0, 1] (continuous / 100).
        image_attributes: ``(n, n_attributes)`` uint8 0/1 ``is_present``.
        image_attribute_certainty: ``(n, n_attributes)`` uint8 certainty ids (0 = no line).
        certainties: ``{certainty id: name}``.
        boxes: ``(n, 4)`` float64 ``x, y, width, height``.
        part_names: part names, index = part id - 1.
        parts: ``(n, n_parts, 3)`` float64 ``x, y, visible`` per part.

    ``ds[i]`` is ``(image, label)``: ``(H, W, 3)`` uint8 RGB and the 0-based class index.
    Any missing or malformed file raises :class:`~advinterp.exceptions.DatasetFormatError`
    naming the file and line.
    """

    def __init__(self, root, split: str | None = None):
        root = Path(root)
        if not (root / "images.txt").is_file() and (root / "CUB_200_2011" / "images.txt").is_file():
            root = root / "CUB_200_2011"
        if not root.is_dir():
            raise DatasetFormatError(f"{root} is not a folder; expected the CUB_200_2011 folder "
                                     f"holding images.txt, classes.txt and images/.")
        if split not in (None, "train", "test"):
            raise ParameterError("CUBDataset", "split", split, "'train', 'test' or None")
        self.root, self.split = root, split

        classes = _id_table(root / "classes.txt", "<class_id> <class_name>")
        self._class_ids = sorted(classes)
        self._class_pos = {cid: k for k, cid in enumerate(self._class_ids)}
        self.class_dirs: list[str] = [classes[c][1] for c in self._class_ids]
        self.classes: list[str] = [d.split(".", 1)[1] if "." in d and d.split(".", 1)[0].isdigit() else d
                                   for d in self.class_dirs]

        images = _id_table(root / "images.txt", "<image_id> <image_name>")
        labels = self._per_image(root / "image_class_labels.txt", "<image_id> <class_id>", images)
        flags = self._per_image(root / "train_test_split.txt", "<image_id> <is_training_image>", images)
        ids = sorted(images)
        lab_path, flag_path = root / "image_class_labels.txt", root / "train_test_split.txt"
        all_labels, all_train = [], []
        for i in ids:
            n, text = labels[i]
            cid = _int(text, lab_path, n, "class id")
            if cid not in self._class_pos:
                raise DatasetFormatError(f"{lab_path} line {n}: class id {cid} is not in "
                                         f"{root / 'classes.txt'}. {_HINT}")
            all_labels.append(self._class_pos[cid])
            n, text = flags[i]
            flag = _int(text, flag_path, n, "is_training_image")
            if flag not in (0, 1):
                raise DatasetFormatError(f"{flag_path} line {n}: is_training_image must be 0 or 1, "
                                         f"found {flag}. {_HINT}")
            all_train.append(bool(flag))
        all_train_arr = np.array(all_train, bool)
        keep = (np.ones(len(ids), bool) if split is None
                else all_train_arr if split == "train" else ~all_train_arr)
        self._keep = keep
        self._all_ids = np.array(ids, np.int64)
        self._row_of = {i: k for k, i in enumerate(ids)}  # image id -> row among all images
        self.image_ids: np.ndarray = self._all_ids[keep]
        self.labels: np.ndarray = np.array(all_labels, np.int64)[keep]
        self.is_training: np.ndarray = all_train_arr[keep]
        self._image_lines = [images[int(i)][0] for i in self.image_ids]
        self.paths: list[Path] = [root / "images" / images[int(i)][1] for i in self.image_ids]

    def _per_image(self, path: Path, fields: str, images) -> dict[int, tuple[int, str]]:
        """``{image id: (line, value)}`` of a ``<image_id> <value>`` file covering every image."""
        out: dict[int, tuple[int, str]] = {}
        for n, parts in _lines(path, fields, 2, max_fields=2):
            i = _int(parts[0], path, n, "image id")
            if i not in images:
                raise DatasetFormatError(f"{path} line {n}: image id {i} is not in "
                                         f"{self.root / 'images.txt'}. {_HINT}")
            out[i] = (n, parts[1])
        missing = [i for i in images if i not in out]
        if missing:
            raise DatasetFormatError(f"{path} has no line for image id {missing[0]} "
                                     f"({len(missing)} image(s) missing). {_HINT}")
        return out

    def _image_row(self, text: str, path: Path, n: int) -> int:
        i = _int(text, path, n, "image id")
        if i not in self._row_of:
            raise DatasetFormatError(f"{path} line {n}: image id {i} is not in "
                                     f"{self.root / 'images.txt'}. {_HINT}")
        return self._row_of[i]

    # -- attributes
    @cached_property
    def attribute_names(self) -> list[str]:
        places = [self.root / "attributes.txt", self.root.parent / "attributes.txt",
                  self.root / "attributes" / "attributes.txt"]
        path = next((p for p in places if p.is_file()), None)
        if path is None:
            raise DatasetFormatError(
                f"attributes.txt is missing; looked in {', '.join(str(p) for p in places)}. In the "
                f"official release it sits next to the CUB_200_2011 folder. {_HINT}")
        table = _id_table(path, "<attribute_id> <name>")
        if sorted(table) != list(range(1, len(table) + 1)):
            raise DatasetFormatError(f"{path}: attribute ids must be 1..{len(table)} without gaps. {_HINT}")
        return [table[k][1] for k in range(1, len(table) + 1)]

    @cached_property
    def class_attributes(self) -> np.ndarray:
        path = self.root / "attributes" / "class_attribute_labels_continuous.txt"
        n_attr = len(self.attribute_names)
        rows = []
        for n, parts in _lines(path, "<value 0-100> x n_attributes", 1):
            if len(parts) != n_attr:
                raise DatasetFormatError(f"{path} line {n}: expected {n_attr} values (one per attribute), "
                                         f"found {len(parts)}. {_HINT}")
            rows.append([_float(v, path, n, "value") for v in parts])
        if len(rows) != len(self.classes):
            raise DatasetFormatError(f"{path}: expected {len(self.classes)} rows (one per class), "
                                     f"found {len(rows)}. {_HINT}")
        return np.array(rows, np.float64).reshape(len(rows), n_attr) / 100.0

    @cached_property
    def _image_attribute_table(self) -> tuple[np.ndarray, np.ndarray]:
        path = self.root / "attributes" / "image_attribute_labels.txt"
        n_attr = len(self.attribute_names)
        present = np.zeros((len(self._all_ids), n_attr), np.uint8)
        certainty = np.zeros((len(self._all_ids), n_attr), np.uint8)
        # The official file has a few lines with extra trailing fields: tolerated.
        for n, parts in _lines(path, "<image_id> <attribute_id> <is_present> <certainty_id> <time>", 5):
            row = self._image_row(parts[0], path, n)
            a = _int(parts[1], path, n, "attribute id")
            if not 1 <= a <= n_attr:
                raise DatasetFormatError(f"{path} line {n}: attribute id {a} is not in 1..{n_attr}. {_HINT}")
            p = _int(parts[2], path, n, "is_present")
            if p not in (0, 1):
                raise DatasetFormatError(f"{path} line {n}: is_present must be 0 or 1, found {p}. {_HINT}")
            present[row, a - 1] = p
            certainty[row, a - 1] = _int(parts[3], path, n, "certainty id")
        return present[self._keep], certainty[self._keep]

    @property
    def image_attributes(self) -> np.ndarray:
        return self._image_attribute_table[0]

    @property
    def image_attribute_certainty(self) -> np.ndarray:
        return self._image_attribute_table[1]

    @cached_property
    def certainties(self) -> dict[int, str]:
        table = _id_table(self.root / "attributes" / "certainties.txt", "<certainty_id> <name>")
        return {k: v[1] for k, v in sorted(table.items())}

    # -- boxes and parts
    @cached_property
    def boxes(self) -> np.ndarray:
        path = self.root / "bounding_boxes.txt"
        out = np.full((len(self._all_ids), 4), np.nan)
        for n, parts in _lines(path, "<image_id> <x> <y> <width> <height>", 5, max_fields=5):
            out[self._image_row(parts[0], path, n)] = [_float(v, path, n, "coordinate") for v in parts[1:]]
        missing = np.isnan(out[:, 0])
        if missing.any():
            raise DatasetFormatError(f"{path} has no line for image id {int(self._all_ids[missing][0])}. {_HINT}")
        return out[self._keep]

    @cached_property
    def part_names(self) -> list[str]:
        path = self.root / "parts" / "parts.txt"
        table = _id_table(path, "<part_id> <part name>")
        if sorted(table) != list(range(1, len(table) + 1)):
            raise DatasetFormatError(f"{path}: part ids must be 1..{len(table)} without gaps. {_HINT}")
        return [table[k][1] for k in range(1, len(table) + 1)]

    @cached_property
    def parts(self) -> np.ndarray:
        path = self.root / "parts" / "part_locs.txt"
        n_parts = len(self.part_names)
        out = np.zeros((len(self._all_ids), n_parts, 3))
        for n, fields in _lines(path, "<image_id> <part_id> <x> <y> <visible>", 5, max_fields=5):
            row = self._image_row(fields[0], path, n)
            p = _int(fields[1], path, n, "part id")
            if not 1 <= p <= n_parts:
                raise DatasetFormatError(f"{path} line {n}: part id {p} is not in 1..{n_parts}. {_HINT}")
            out[row, p - 1] = (_float(fields[2], path, n, "x"), _float(fields[3], path, n, "y"),
                               _int(fields[4], path, n, "visible"))
        return out[self._keep]

    # -- items
    def __len__(self) -> int:
        return len(self.image_ids)

    def __getitem__(self, i: int) -> tuple[np.ndarray, int]:
        n = len(self)
        if not isinstance(i, (int, np.integer)):
            raise TypeError(f"CUBDataset indices must be integers, not {type(i).__name__}")
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(f"CUBDataset index {i} out of range for {n} items")
        where = f"{self.root / 'images.txt'} line {self._image_lines[i]}"
        return _read_image_file(self.paths[i], "image", where), int(self.labels[i])

    def __iter__(self):
        for i in range(len(self)):
            yield self[i]

    def __repr__(self) -> str:
        return f"CUBDataset({str(self.root)!r}, split={self.split!r}, n={len(self)}, classes={len(self.classes)})"
