"""The LAD (Large-scale Attribute Dataset, Zhao et al. 2019) layout: export of the synthetic world and a reader.

Layout of the release (``LAD_annotations/`` and ``LAD_images/`` side by side; fields of a line
separated by ``", "``)::

    LAD_annotations/label_list.txt            <label id>, <English name>, <Chinese name>
                                              e.g. "Label_A_01, <name>, <name>"; ids Label_<S>_<NN>
    LAD_annotations/attribute_list.txt        <attribute id>, <English description>, <Chinese>
                                              e.g. "Attr_A_005, color: is brown, ..."; ids
                                              Attr_<S>_<NNN>; the line order is the order of the
                                              values in every attribute vector
    LAD_annotations/attributes_per_class.txt  <label id>, [ v1 v2 ... vK ]   (one per class)
    LAD_annotations/attributes.txt            <label id>, <image path>, [ a1 a2 ... aK ]  (one per
                                              image; 0/1 per attribute; the path relative to
                                              LAD_images/)
    LAD_images/...                            the images (JPEG)

``<S>`` is the super-class letter: A animals, F fruits, V vehicles, E electronics, H
hairstyles (359 attributes in all: 123 + 58 + 81 + 75 + 22, each owned by one super-class).

Verified against readers of the release (public zero-shot-learning and CLIP code reading
``LAD_annotations/*.txt`` and the AI Challenger ZSL 2018 baseline, the competition version of
the same files): the ``", "`` separator; the three fields of ``label_list.txt`` and
``attribute_list.txt``; ``Label_<S>_<NN>`` / ``Attr_<S>_<NNN>`` ids; the bracketed,
space-separated vectors ``[ ... ]`` (``"[ 0 1 ]".split()[1:-1]``); the ``label, path,
vector`` lines of ``attributes.txt`` with paths relative to ``LAD_images/``. Inferred, and
said so: the number format of the class-level vectors (:func:`export_lad` writes two
decimals), the folder layout inside ``LAD_images/`` (the reader follows the paths in
``attributes.txt``, whatever they are; :func:`export_lad` writes
``<S>_<class name>/<class name>_<NNNN>.jpg``); when the first listed image is not under
``LAD_images/`` but under the dataset root, all paths are taken relative to the root. Not read
or written: ``images.txt`` (bounding boxes; its column order could not be confirmed) and the
split files.

Example::

    root = export_lad("/tmp/lad_synth", n_per_class=10)
    ds = LADDataset(root, size=64)
    x, y = ds[0]                   # (3, 64, 64) float32 in [0, 1], class index
    ds.class_attributes            # (12, 16) float32 from attributes_per_class.txt
    ds.image_attributes            # (n, 16) uint8 from attributes.txt
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Sequence

import numpy as np

from ..exceptions import DatasetFormatError, ParameterError
from .awa2 import _check_export, _check_index, _load_tensor, _size, _text_lines
from .synthetic import ATTRIBUTES, CLASSES, SyntheticWorld

__all__ = ["LADDataset", "export_lad", "lad_attribute_name", "SUPER_CLASSES"]

#: LAD's super-class letters and names.
SUPER_CLASSES: dict[str, str] = {"A": "animals", "F": "fruits", "V": "vehicles", "E": "electronics",
                                 "H": "hairstyles"}

_HINT = "Fix the file, or re-download LAD (LAD_annotations, LAD_images) / re-export it with export_lad()."
_LABEL_ID = re.compile(r"Label_([A-Za-z])_(\d+)$")
_ATTR_ID = re.compile(r"Attr_([A-Za-z])_(\d+)$")


def lad_attribute_name(attribute: str) -> str:
    """Map a ``group:value`` attribute to LAD's ``group: description`` style:
    ``"shape:disk"`` -> ``"shape: disk"``."""
    group, _, value = attribute.partition(":")
    return f"{group}: {value}"


def _vector_text(values, fmt: str) -> str:
    return "[ " + " ".join(fmt.format(v) for v in values) + " ]"


# ---------------------------------------------------------------------------- export
def export_lad(root, world: SyntheticWorld | None = None, n_per_class: int = 10, split: str = "test",
               start: int = 0, super_class: str = "A", quality: int = 95) -> Path:
    """Render synthetic scenes and write them in the LAD layout under ``root``.

    The ``k``-th image of class ``c`` is ``world.render(start + k * n_classes + c, split,
    label=c)`` (with ``start = 0``: ``world.generate(n_per_class * n_classes, split)`` grouped by
    class), written as ``LAD_images/<S>_<class>/<class>_<k + 1:04d>.jpg`` (JPEG, ``quality``, no
    chroma subsampling: pixels come back within JPEG error). All classes go to one super-class
    ``super_class`` (the world has none): label ids ``Label_<S>_01`` ..., attribute ids
    ``Attr_<S>_001`` ... with descriptions ``group: value`` (:func:`lad_attribute_name`); the
    Chinese-name column repeats the English name. ``attributes_per_class.txt`` holds
    ``world.class_attributes`` (two decimals), ``attributes.txt`` one line per image with its
    class's 0/1 vector, class by class.

    Args:
        root: output folder (created if needed); existing files are replaced.
        world: the generator (default ``SyntheticWorld()``).
        n_per_class: images per class (default 10, >= 1).
        split: the world's split to render from (default ``"test"``).
        start: scene index offset (default 0).
        super_class: the super-class letter (default ``"A"``, animals; one of :data:`SUPER_CLASSES`).
        quality: JPEG quality, 1..100 (default 95).

    Returns:
        ``Path(root)``.
    """
    from PIL import Image

    owner = "export_lad"
    world = SyntheticWorld() if world is None else world
    _check_export(owner, n_per_class, start, quality)
    if super_class not in SUPER_CLASSES:
        raise ParameterError(owner, "super_class", super_class, f"one of {', '.join(SUPER_CLASSES)}")
    world._rng(split, 0)  # validates split
    root = Path(root)
    ann, images = root / "LAD_annotations", root / "LAD_images"
    ann.mkdir(parents=True, exist_ok=True)
    s, n_cls = super_class, len(CLASSES)
    label_ids = [f"Label_{s}_{c + 1:02d}" for c in range(n_cls)]
    mat = world.class_attributes
    image_lines = []
    for c, name in enumerate(CLASSES):
        folder = f"{s}_{name}"
        (images / folder).mkdir(parents=True, exist_ok=True)
        vector = _vector_text((int(v) for v in mat[c]), "{}")
        for k in range(n_per_class):
            scene = world.render(int(start) + k * n_cls + c, split, label=c)
            rel = f"{folder}/{name}_{k + 1:04d}.jpg"
            Image.fromarray(scene.image).save(images / rel, "JPEG", quality=int(quality), subsampling=0)
            image_lines.append(f"{label_ids[c]}, {rel}, {vector}")

    def write(rel: str, lines: Sequence[str]) -> None:
        (ann / rel).write_text("".join(line + "\n" for line in lines), encoding="utf-8")

    write("label_list.txt", [f"{label_ids[c]}, {name}, {name}" for c, name in enumerate(CLASSES)])
    write("attribute_list.txt", [f"Attr_{s}_{a + 1:03d}, {lad_attribute_name(n)}, {lad_attribute_name(n)}"
                                 for a, n in enumerate(ATTRIBUTES)])
    write("attributes_per_class.txt", [f"{label_ids[c]}, {_vector_text(mat[c], '{:.2f}')}" for c in range(n_cls)])
    write("attributes.txt", image_lines)
    return root


# ---------------------------------------------------------------------------- reader
def _fields(path: Path, n: int, line: str, count: int, expected: str) -> list[str]:
    """Split a line into ``count`` ``", "``-separated fields (the last keeps any further commas)."""
    parts = [p.strip() for p in line.split(",", count - 1)]
    if len(parts) < count or not all(parts):
        missing = next((k for k, p in enumerate(parts) if not p), len(parts)) + 1
        raise DatasetFormatError(f"{path} line {n}: expected `{expected}`, found {line!r}; column {missing} "
                                 f"is missing or empty. {_HINT}")
    return parts


def _vector(text: str, path: Path, n: int, column: int, n_values: int, what: str) -> np.ndarray:
    """Parse ``[ v1 v2 ... ]`` (column ``column`` of line ``n``) holding ``n_values`` numbers."""
    text = text.strip()
    if not (text.startswith("[") and text.endswith("]")):
        raise DatasetFormatError(f"{path} line {n}, column {column}: expected a bracketed vector "
                                 f"`[ v1 v2 ... ]` of {n_values} values (one per {what}), found "
                                 f"{text[:40]!r}{'...' if len(text) > 40 else ''}. {_HINT}")
    values = text[1:-1].split()
    if len(values) != n_values:
        where = (f"value {len(values) + 1} onward is missing" if len(values) < n_values
                 else f"value {n_values + 1} onward is extra")
        raise DatasetFormatError(f"{path} line {n}, column {column}: expected {n_values} values (one per "
                                 f"{what}), found {len(values)}; {where}. The row is ragged: {_HINT}")
    try:
        return np.fromiter(map(float, values), np.float64, len(values))
    except ValueError:
        for k, v in enumerate(values):
            try:
                float(v)
            except ValueError:
                raise DatasetFormatError(f"{path} line {n}, column {column}, value {k + 1}: {v!r} is not a "
                                         f"number. {_HINT}") from None
        raise  # pragma: no cover - numpy and float() agree


def _binary_vector(text: str, n_values: int) -> np.ndarray | None:
    """Fast path for ``[ 0 1 ... ]``: the ``n_values`` 0/1 values as float64, or None when the text
    is anything else (then :func:`_vector` parses it and names what is wrong)."""
    text = text.strip()
    if not (text.startswith("[") and text.endswith("]")):
        return None
    tokens = text[1:-1].split()
    joined = "".join(tokens)
    if len(tokens) != n_values or len(joined) != n_values or not joined.isascii():
        return None
    digits = np.frombuffer(joined.encode("ascii"), np.uint8) - ord("0")
    return digits.astype(np.float64) if (digits <= 1).all() else None


def _id_table(path: Path, pattern: re.Pattern, form: str, expected: str) -> list[tuple[int, str, str, str]]:
    """``[(line, id, super-class letter, English name)]`` of label_list.txt / attribute_list.txt."""
    out, seen = [], {}
    for n, line in _text_lines(path, expected, _HINT):
        key, name = _fields(path, n, line, 3, expected)[:2]
        m = pattern.match(key)
        if m is None:
            raise DatasetFormatError(f"{path} line {n}, column 1: {key!r} is not of the form {form}. {_HINT}")
        if key in seen:
            raise DatasetFormatError(f"{path} line {n}, column 1: {key} repeats line {seen[key]}. {_HINT}")
        seen[key] = n
        out.append((n, key, m.group(1).upper(), name))
    if not out:
        raise DatasetFormatError(f"{path} is empty; expected lines `{expected}`. {_HINT}")
    return out


class LADDataset:
    """LAD (Large-scale Attribute Dataset) on disk: labelled images with per-image and per-class attributes.

    Args:
        root: the folder holding ``LAD_annotations/`` and ``LAD_images/``.
        super_class: ``None`` (default: all classes and attributes) or a super-class letter
            (``"A"`` animals, ``"F"``, ``"V"``, ``"E"``, ``"H"``): only its classes, images and
            attributes -- how zero-shot learning on LAD is run.
        size: items are resized (shorter side, bilinear) and centre-cropped to ``size x size``
            (default 224); ``None`` or ``"original"``: as stored.

    Attributes:
        root, annotations, images_dir: the dataset, ``LAD_annotations`` and ``LAD_images`` folders.
        label_ids: ``["Label_A_01", ...]`` in ``label_list.txt`` order; label = index.
        class_names: the English class names.
        classes: the same as ``class_names`` (the name other datasets use).
        super_classes: each class's super-class letter.
        attribute_ids, attribute_names: ``"Attr_A_001"`` ... and their English descriptions.
        class_attributes: ``(n_classes, n_attributes)`` float32 from ``attributes_per_class.txt``.
        samples: ``[(path, label)]`` in ``attributes.txt`` order.
        labels: ``(n,)`` int64.
        image_attributes: ``(n, n_attributes)`` uint8 per-image 0/1 attributes.

    ``ds[i]`` is ``(x, y)``: ``x`` a ``(3, size, size)`` float32 tensor in [0, 1], ``y`` the int
    label. A missing or malformed file raises :class:`~advinterp.exceptions.DatasetFormatError`
    naming the file, line and column and how to fix it.
    """

    def __init__(self, root, super_class: str | None = None, size: int | str | None = 224):
        owner = "LADDataset"
        root = Path(root).expanduser()
        if not root.is_dir():
            raise DatasetFormatError(f"{root} is not a folder; expected the LAD folder holding LAD_annotations/ "
                                     f"(label_list.txt, attribute_list.txt, attributes_per_class.txt, "
                                     f"attributes.txt) and LAD_images/.")
        if super_class is not None and super_class not in SUPER_CLASSES:
            raise ParameterError(owner, "super_class", super_class, f"None or one of {', '.join(SUPER_CLASSES)}")
        self.root, self.super_class, self.size = root, super_class, _size(owner, size)
        ann = root / "LAD_annotations"
        if not ann.is_dir() and (root / "label_list.txt").is_file():
            ann = root  # the annotation files directly in root
        if not ann.is_dir():
            raise DatasetFormatError(f"{ann} is missing; expected the LAD_annotations folder of the release "
                                     f"inside {root}. {_HINT}")
        self.annotations, self.images_dir = ann, root / "LAD_images"

        labels = _id_table(ann / "label_list.txt", _LABEL_ID, "Label_<S>_<NN>",
                           "<label id>, <English name>, <Chinese name>")
        attrs = _id_table(ann / "attribute_list.txt", _ATTR_ID, "Attr_<S>_<NNN>",
                          "<attribute id>, <English description>, <Chinese description>")
        keep_cls = [k for k, row in enumerate(labels) if super_class is None or row[2] == super_class]
        if not keep_cls:
            present = sorted({row[2] for row in labels})
            raise ParameterError(owner, "super_class", super_class,
                                 f"a super-class with classes in {ann / 'label_list.txt'} "
                                 f"(present: {', '.join(present)})")
        keep_attr = [k for k, row in enumerate(attrs) if super_class is None or row[2] == super_class]
        self.label_ids = [labels[k][1] for k in keep_cls]
        self.class_names = [labels[k][3] for k in keep_cls]
        self.classes = list(self.class_names)
        self.super_classes = [labels[k][2] for k in keep_cls]
        self.attribute_ids = [attrs[k][1] for k in keep_attr]
        self.attribute_names = [attrs[k][3] for k in keep_attr]
        all_ids = {row[1]: k for k, row in enumerate(labels)}
        position = {labels[k][1]: j for j, k in enumerate(keep_cls)}
        n_attr = len(attrs)

        # class-level attributes
        path = ann / "attributes_per_class.txt"
        rows: dict[str, tuple[int, np.ndarray]] = {}
        for n, line in _text_lines(path, f"<label id>, [ {n_attr} values ]", _HINT):
            key, vec = _fields(path, n, line, 2, f"<label id>, [ {n_attr} values ]")
            if key not in all_ids:
                raise DatasetFormatError(f"{path} line {n}, column 1: label {key!r} is not in "
                                         f"{ann / 'label_list.txt'}. {_HINT}")
            if key in rows:
                raise DatasetFormatError(f"{path} line {n}, column 1: {key} repeats line {rows[key][0]}. {_HINT}")
            rows[key] = (n, _vector(vec, path, n, 2, n_attr, "attribute in attribute_list.txt"))
        missing = [k for k in self.label_ids if k not in rows]
        if missing:
            raise DatasetFormatError(f"{path} has no line for {missing[0]} ({len(missing)} class(es) of "
                                     f"{ann / 'label_list.txt'} missing); add `{missing[0]}, [ ... ]`. {_HINT}")
        full = np.stack([rows[k][1] for k in self.label_ids])
        self.class_attributes: np.ndarray = full[:, keep_attr].astype(np.float32)

        # images and per-image attributes
        path = ann / "attributes.txt"
        expected = f"<label id>, <image path>, [ {n_attr} values ]"
        self.samples: list[tuple[Path, int]] = []
        self._lines: list[int] = []
        image_attrs = []
        base: Path | None = None
        for n, line in _text_lines(path, expected, _HINT):
            key, rel, vec = _fields(path, n, line, 3, expected)
            if key not in all_ids:
                raise DatasetFormatError(f"{path} line {n}, column 1: label {key!r} is not in "
                                         f"{ann / 'label_list.txt'}. {_HINT}")
            if key not in position:
                continue  # another super-class
            values = _binary_vector(vec, n_attr)
            if values is None:  # not plain 0/1 tokens: parse for the error (or 0.0 / 1.0 spelt out)
                values = _vector(vec, path, n, 3, n_attr, "attribute in attribute_list.txt")
                bad = np.flatnonzero((values != 0) & (values != 1))
                if bad.size:
                    raise DatasetFormatError(f"{path} line {n}, column 3, value {bad[0] + 1}: "
                                             f"{vec.strip()[1:-1].split()[bad[0]]!r} is not 0 or 1. {_HINT}")
            if base is None:  # paths are relative to LAD_images/ (or, failing that, to the root)
                base = root if not (self.images_dir / rel).is_file() and (root / rel).is_file() else self.images_dir
            self.samples.append((base / rel, position[key]))
            self._lines.append(n)
            image_attrs.append(values[keep_attr].astype(np.uint8))
        if not self.samples:
            raise DatasetFormatError(f"{path} lists no images of the {len(self.label_ids)} class(es) read; "
                                     f"expected lines `{expected}`. {_HINT}")
        self.labels = np.array([label for _, label in self.samples], np.int64)
        self.image_attributes: np.ndarray = np.stack(image_attrs)

    @property
    def targets(self) -> list[int]:
        """The label of every item, in order."""
        return self.labels.tolist()

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i):
        i = _check_index("LADDataset", i, len(self))
        path, label = self.samples[i]
        where = f"{self.annotations / 'attributes.txt'} line {self._lines[i]}"
        return _load_tensor(path, self.size, where), label

    def __repr__(self) -> str:
        return (f"LADDataset({str(self.root)!r}, super_class={self.super_class!r}, size={self.size}, "
                f"classes={len(self.classes)}, images={len(self)})")
