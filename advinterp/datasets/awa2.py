"""The Animals with Attributes 2 (AwA2) layout: export of the synthetic world and a reader.

Layout of ``Animals_with_Attributes2/`` (the folder inside ``AwA2-data.zip``)::

    classes.txt                      "<id>\\t<class name>" per line; the id right-aligned in 6
                                     characters ("     1\\tantelope"), ids 1..n in order;
                                     multi-word names use "+" ("grizzly+bear"); a name may
                                     carry a trailing space ("blue+whale ")
    predicates.txt                   "<id>\\t<predicate>" the same way ("     1\\tblack")
    predicate-matrix-binary.txt      one row per class (classes.txt order), one 0/1 per
                                     predicate (predicates.txt order), single spaces
    predicate-matrix-continuous.txt  the same rows of numbers with two decimals separated by
                                     runs of spaces; 0..100, -1 marks a missing value (the
                                     binary matrix thresholds it at the overall mean)
    trainclasses.txt, testclasses.txt  the proposed class split: one class name per line
    JPEGImages/<class name>/<class name>_<number>.jpg   e.g. JPEGImages/antelope/antelope_10001.jpg

Verified against copies of the released files (``classes.txt``, ``predicates.txt``,
``predicate-matrix-binary.txt``, ``trainclasses.txt``, the README's description of the
continuous matrix) and readers of the release. Inferred: the exact column width of the
continuous matrix (:func:`export_awa2` writes each value as ``%7.2f`` joined by single
spaces; the reader accepts any whitespace).

Example::

    root = export_awa2("/tmp/awa2_synth", n_per_class=10)
    test = AwA2Dataset(root, split="test", size=64)   # the classes of testclasses.txt
    x, y = test[0]                                    # (3, 64, 64) float32 in [0, 1], class index
    test.class_attributes                             # (12, 16) float32, rows in classes.txt order
"""
from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Sequence

import numpy as np

from ..exceptions import DatasetFormatError, ParameterError
from .synthetic import ATTRIBUTES, CLASSES, SyntheticWorld

__all__ = ["AwA2Dataset", "export_awa2", "DEFAULT_TEST_CLASSES", "IMAGE_EXTENSIONS"]

#: File endings read as images (any case). The release holds ``.jpg`` files only.
IMAGE_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg", ".png")

#: Classes :func:`export_awa2` lists in ``testclasses.txt``: one class of each of the
#: world's fine-grained pairs (tabby/cheetah, kite/finch, jay/tit), unseen in training.
DEFAULT_TEST_CLASSES: tuple[str, ...] = ("cheetah", "finch", "tit")

_HINT = ("Fix the file, or re-download Animals_with_Attributes2 (AwA2-data.zip) / re-export it "
         "with export_awa2().")


# ---------------------------------------------------------------------------- text helpers
# (shared with advinterp.datasets.lad)
def _text_lines(path: Path, expected: str, hint: str) -> list[tuple[int, str]]:
    """``(line number, text without the line break)`` of the non-blank lines of ``path``."""
    if not path.is_file():
        raise DatasetFormatError(f"{path} is missing; expected lines `{expected}`. {hint}")
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise DatasetFormatError(f"{path} line {line}: not UTF-8 text ({e.reason} at byte {e.start}). "
                                 f"{hint}") from None
    text = text.lstrip("\ufeff")
    return [(n, line.rstrip("\r\n")) for n, line in enumerate(text.split("\n"), 1) if line.strip()]


def _number(text: str, path: Path, line: int, column: int, hint: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise DatasetFormatError(f"{path} line {line}, column {column}: {text!r} is not a number. "
                                 f"{hint}") from None


def _row(fields: Sequence[str], n_cols: int, path: Path, line: int, what: str, hint: str,
         first_column: int = 1) -> list[float]:
    """Parse one matrix row of ``n_cols`` numbers (columns counted from ``first_column``)."""
    if len(fields) != n_cols:
        if len(fields) < n_cols:
            where = f"column {first_column + len(fields)} onward is missing"
        else:
            where = f"column {first_column + n_cols} onward is extra"
        raise DatasetFormatError(f"{path} line {line}: expected {n_cols} values (one per {what}), "
                                 f"found {len(fields)}; {where}. The row is ragged: {hint}")
    return [_number(v, path, line, first_column + k, hint) for k, v in enumerate(fields)]


def _size(owner: str, size) -> int | None:
    if size is None or size == "original":
        return None
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1:
        raise ParameterError(owner, "size", size, "a positive integer, None or 'original'")
    return int(size)


def _load_tensor(path: Path, size: int | None, where: str):
    """Read ``path`` as a ``(3, H, W)`` float32 tensor in [0, 1]; with ``size``, the shorter side
    is resized to ``size`` (bilinear, antialiased) and the centre ``size x size`` cropped."""
    import torch

    from .broden import _read_image_file

    arr = _read_image_file(path, "image", where)
    if size is not None and arr.shape[:2] != (size, size):
        from PIL import Image

        h, w = arr.shape[:2]
        scale = size / min(h, w)
        new_w, new_h = max(size, round(w * scale)), max(size, round(h * scale))
        im = Image.fromarray(arr)
        if (new_w, new_h) != (w, h):
            im = im.resize((new_w, new_h), getattr(Image, "Resampling", Image).BILINEAR)
        left, top = (new_w - size) // 2, (new_h - size) // 2
        arr = np.asarray(im.crop((left, top, left + size, top + size)), dtype=np.uint8)
    arr = np.array(arr, dtype=np.uint8, copy=True) if not arr.flags.writeable else np.ascontiguousarray(arr)
    return torch.from_numpy(arr).permute(2, 0, 1).float().div_(255.0).contiguous()


def _check_index(owner: str, i, n: int) -> int:
    if isinstance(i, bool) or not isinstance(i, (int, np.integer)):
        raise TypeError(f"{owner} indices must be integers, not {type(i).__name__}")
    i = int(i) + (n if i < 0 else 0)
    if not 0 <= i < n:
        raise IndexError(f"{owner} index {i} out of range for {n} items")
    return i


# ---------------------------------------------------------------------------- export
def _check_export(owner: str, n_per_class, start, quality) -> None:
    """The exporters' shared arguments: ``n_per_class >= 1``, ``start >= 0``, JPEG ``quality``
    in 1..100 (integers)."""
    if isinstance(n_per_class, bool) or not isinstance(n_per_class, (int, np.integer)) or n_per_class < 1:
        raise ParameterError(owner, "n_per_class", n_per_class, "a positive integer")
    if isinstance(start, bool) or not isinstance(start, (int, np.integer)) or start < 0:
        raise ParameterError(owner, "start", start, "a non-negative integer")
    if isinstance(quality, bool) or not isinstance(quality, (int, np.integer)) or not 1 <= quality <= 100:
        raise ParameterError(owner, "quality", quality, "an integer in 1..100")


def export_awa2(root, world: SyntheticWorld | None = None, n_per_class: int = 10, split: str = "test",
                start: int = 0, test_classes: Sequence[str] = DEFAULT_TEST_CLASSES, quality: int = 95) -> Path:
    """Render synthetic scenes and write them in the AwA2 layout under ``root``.

    The ``k``-th image of class ``c`` is ``world.render(start + k * n_classes + c, split,
    label=c)`` (with ``start = 0``: ``world.generate(n_per_class * n_classes, split)`` grouped by
    class), written as ``JPEGImages/<class>/<class>_<10001 + k>.jpg`` -- JPEG like the release
    (``quality``, no chroma subsampling), so pixels come back within JPEG error, not exactly.

    Written as well: ``classes.txt`` (the world's class names), ``predicates.txt`` (its
    ``group:value`` attributes, e.g. ``shape:disk``), ``predicate-matrix-binary.txt``
    (``world.class_attributes``), ``predicate-matrix-continuous.txt`` (100 x the binary
    matrix), ``trainclasses.txt`` / ``testclasses.txt`` (``test_classes``, the rest train;
    both in classes.txt order).

    Args:
        root: output folder (created if needed); existing files are replaced.
        world: the generator (default ``SyntheticWorld()``).
        n_per_class: images per class (default 10, >= 1).
        split: the world's split to render from (default ``"test"``).
        start: scene index offset (default 0).
        test_classes: class names for ``testclasses.txt`` (default :data:`DEFAULT_TEST_CLASSES`).
        quality: JPEG quality, 1..100 (default 95).

    Returns:
        ``Path(root)``.
    """
    from PIL import Image

    owner = "export_awa2"
    world = SyntheticWorld() if world is None else world
    _check_export(owner, n_per_class, start, quality)
    test = [str(c) for c in test_classes]
    unknown = [c for c in test if c not in CLASSES]
    if unknown or len(set(test)) != len(test):
        raise ParameterError(owner, "test_classes", test_classes,
                             f"distinct class names of the synthetic world ({', '.join(CLASSES)})")
    world._rng(split, 0)  # validates split
    root = Path(root)
    (root / "JPEGImages").mkdir(parents=True, exist_ok=True)
    n_cls = len(CLASSES)
    for c, name in enumerate(CLASSES):
        folder = root / "JPEGImages" / name
        folder.mkdir(exist_ok=True)
        for k in range(n_per_class):
            scene = world.render(int(start) + k * n_cls + c, split, label=c)
            Image.fromarray(scene.image).save(folder / f"{name}_{10001 + k}.jpg", "JPEG",
                                              quality=int(quality), subsampling=0)

    def write(rel: str, lines: Sequence[str]) -> None:
        (root / rel).write_text("".join(line + "\n" for line in lines), encoding="utf-8")

    mat = world.class_attributes
    write("classes.txt", [f"{i + 1:6d}\t{name}" for i, name in enumerate(CLASSES)])
    write("predicates.txt", [f"{i + 1:6d}\t{name}" for i, name in enumerate(ATTRIBUTES)])
    write("predicate-matrix-binary.txt", [" ".join(str(int(v)) for v in row) for row in mat])
    write("predicate-matrix-continuous.txt", [" ".join(f"{100.0 * float(v):7.2f}" for v in row) for row in mat])
    write("trainclasses.txt", [c for c in CLASSES if c not in test])
    write("testclasses.txt", [c for c in CLASSES if c in test])
    return root


# ---------------------------------------------------------------------------- reader
def _id_names(path: Path, expected: str) -> list[tuple[int, str]]:
    """``[(line, name)]`` of an ``<id>\\t<name>`` file whose ids run 1..n in order."""
    out: list[tuple[int, str]] = []
    for n, line in _text_lines(path, expected, _HINT):
        parts = line.split(None, 1)
        if len(parts) != 2 or not parts[1].strip():
            raise DatasetFormatError(f"{path} line {n}: expected `{expected}`, found {line!r}; column 2 "
                                     f"(the name) is missing. {_HINT}")
        try:
            key = int(parts[0])
        except ValueError:
            raise DatasetFormatError(f"{path} line {n}, column 1: id {parts[0]!r} is not an integer. "
                                     f"{_HINT}") from None
        if key != len(out) + 1:
            raise DatasetFormatError(f"{path} line {n}, column 1: id {key} out of order; expected "
                                     f"{len(out) + 1} (ids run 1..n, one per line). {_HINT}")
        out.append((n, parts[1].strip()))
    if not out:
        raise DatasetFormatError(f"{path} is empty; expected lines `{expected}`. {_HINT}")
    return out


class AwA2Dataset:
    """Animals with Attributes 2 (AwA2) on disk: images of class folders with a class-attribute matrix.

    Args:
        root: the ``Animals_with_Attributes2`` folder (holding ``classes.txt``); its parent
            is accepted too.
        split: ``None`` (default: every class), ``"train"`` or ``"test"`` -- the classes of
            ``trainclasses.txt`` / ``testclasses.txt`` (the proposed zero-shot split).
        size: items are resized (shorter side, bilinear) and centre-cropped to ``size x size``
            (default 224); ``None`` or ``"original"``: as stored.
        attributes: ``class_attributes`` from ``"binary"`` (default,
            ``predicate-matrix-binary.txt``) or ``"continuous"``
            (``predicate-matrix-continuous.txt`` / 100, missing values -1 as NaN).

    Attributes:
        root: the ``Animals_with_Attributes2`` folder.
        class_names: the names of ``classes.txt`` (``"grizzly+bear"``, stripped), label = index.
        attribute_names: the predicates of ``predicates.txt``.
        class_attributes: ``(n_classes, n_attributes)`` float32, rows in ``classes.txt`` order.
        predicate_matrix_binary: ``(n_classes, n_attributes)`` uint8.
        predicate_matrix_continuous: ``(n_classes, n_attributes)`` float64 as in the file (0..100, -1).
        classes: the class names of the split, in ``classes.txt`` order.
        samples: ``[(path, label)]`` class by class, files sorted by name.
        labels: ``(n,)`` int64 class indices (into ``class_names``: a test class keeps its
            global index, so ``class_attributes[labels]`` are the items' attributes).

    ``ds[i]`` is ``(x, y)``: ``x`` a ``(3, size, size)`` float32 tensor in [0, 1], ``y`` the int
    label. A missing or malformed file raises :class:`~advinterp.exceptions.DatasetFormatError`
    naming the file, line and column and how to fix it.
    """

    def __init__(self, root, split: str | None = None, size: int | str | None = 224,
                 attributes: str = "binary"):
        owner = "AwA2Dataset"
        root = Path(root).expanduser()
        if not (root / "classes.txt").is_file() and (root / "Animals_with_Attributes2" / "classes.txt").is_file():
            root = root / "Animals_with_Attributes2"
        if not root.is_dir():
            raise DatasetFormatError(f"{root} is not a folder; expected the Animals_with_Attributes2 folder "
                                     f"holding classes.txt, predicates.txt, predicate-matrix-*.txt and "
                                     f"JPEGImages/.")
        if split not in (None, "train", "test"):
            raise ParameterError(owner, "split", split, "'train', 'test' or None")
        if attributes not in ("binary", "continuous"):
            raise ParameterError(owner, "attributes", attributes, "'binary' or 'continuous'")
        self.root, self.split, self.size = root, split, _size(owner, size)
        self.attributes = attributes
        self._class_lines = _id_names(root / "classes.txt", "<id>\\t<class name>")
        self.class_names: list[str] = [name for _, name in self._class_lines]
        self.attribute_names: list[str] = [name for _, name in _id_names(root / "predicates.txt",
                                                                         "<id>\\t<predicate>")]
        self.class_attributes: np.ndarray = (
            self.predicate_matrix_binary.astype(np.float32) if attributes == "binary"
            else np.where(self.predicate_matrix_continuous < 0, np.nan,
                          self.predicate_matrix_continuous / 100.0).astype(np.float32))
        index = {name: i for i, name in enumerate(self.class_names)}
        if len(index) != len(self.class_names):
            seen: dict[str, int] = {}
            for n, name in self._class_lines:
                if name in seen:
                    raise DatasetFormatError(f"{root / 'classes.txt'} line {n}, column 2: class {name!r} "
                                             f"repeats line {seen[name]}. {_HINT}")
                seen[name] = n
        keep = (list(range(len(self.class_names))) if split is None
                else [index[c] for c in self._split_classes(f"{split}classes.txt", index)])
        self.classes: list[str] = [self.class_names[i] for i in keep]
        self.samples: list[tuple[Path, int]] = self._scan(index, keep)
        if not self.samples:
            raise DatasetFormatError(f"{root / 'JPEGImages'} holds no images of the {len(keep)} class(es) read "
                                     f"(.jpg, .jpeg or .png files in JPEGImages/<class>/). {_HINT}")
        self.labels = np.array([label for _, label in self.samples], np.int64)

    # -- annotations
    def _matrix(self, name: str, binary: bool) -> np.ndarray:
        path = self.root / name
        n_cls, n_attr = len(self.class_names), len(self.attribute_names)
        rows = []
        for n, line in _text_lines(path, f"{n_attr} {'0/1 values' if binary else 'numbers'} per line", _HINT):
            if len(rows) == n_cls:
                raise DatasetFormatError(f"{path} line {n}: one row too many; expected {n_cls} rows "
                                         f"(one per class in classes.txt). {_HINT}")
            row = _row(line.split(), n_attr, path, n, "predicate in predicates.txt", _HINT)
            if binary:
                bad = next((k for k, v in enumerate(row) if v not in (0.0, 1.0)), None)
                if bad is not None:
                    raise DatasetFormatError(f"{path} line {n}, column {bad + 1}: {line.split()[bad]!r} "
                                             f"is not 0 or 1. {_HINT}")
            rows.append(row)
        if len(rows) != n_cls:
            raise DatasetFormatError(f"{path}: expected {n_cls} rows (one per class in classes.txt), found "
                                     f"{len(rows)}; the rows of {self.class_names[len(rows)]!r} onward are "
                                     f"missing. {_HINT}")
        return np.array(rows, np.float64).reshape(n_cls, n_attr)

    @cached_property
    def predicate_matrix_binary(self) -> np.ndarray:
        return self._matrix("predicate-matrix-binary.txt", binary=True).astype(np.uint8)

    @cached_property
    def predicate_matrix_continuous(self) -> np.ndarray:
        return self._matrix("predicate-matrix-continuous.txt", binary=False)

    def _split_classes(self, name: str, index: dict[str, int]) -> list[str]:
        path = self.root / name
        names: dict[str, int] = {}
        for n, line in _text_lines(path, "<class name> (one per line)", _HINT):
            cname = line.strip()
            if cname not in index:
                raise DatasetFormatError(f"{path} line {n}: class {cname!r} is not in "
                                         f"{self.root / 'classes.txt'}. {_HINT}")
            if cname in names:
                raise DatasetFormatError(f"{path} line {n}: class {cname!r} repeats line {names[cname]}. {_HINT}")
            names[cname] = n
        return sorted(names, key=index.__getitem__)

    # -- images
    def _scan(self, index: dict[str, int], keep: list[int]) -> list[tuple[Path, int]]:
        images = self.root / "JPEGImages"
        if not images.is_dir():
            raise DatasetFormatError(f"{images} is missing; expected one folder of images per class of "
                                     f"{self.root / 'classes.txt'} (JPEGImages/<class>/<class>_<number>.jpg). "
                                     f"{_HINT}")
        folders = sorted(p.name for p in images.iterdir() if p.is_dir() and not p.name.startswith("."))
        for f in folders:
            if f not in index:
                raise DatasetFormatError(f"{images / f} is a class folder not listed in "
                                         f"{self.root / 'classes.txt'}; add the class to classes.txt (and a row "
                                         f"to each predicate matrix) or remove the folder. {_HINT}")
        samples: list[tuple[Path, int]] = []
        for label in keep:
            folder = images / self.class_names[label]
            if not folder.is_dir():
                raise DatasetFormatError(f"{folder} is missing: class {self.class_names[label]!r} "
                                         f"({self.root / 'classes.txt'} line {self._class_lines[label][0]}) has "
                                         f"no image folder. {_HINT}")
            samples.extend((p, label) for p in sorted(folder.iterdir())
                           if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
        return samples

    # -- items
    @property
    def targets(self) -> list[int]:
        """The label of every item, in order."""
        return self.labels.tolist()

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i):
        i = _check_index("AwA2Dataset", i, len(self))
        path, label = self.samples[i]
        return _load_tensor(path, self.size, f"{self.root / 'JPEGImages'} (class {self.class_names[label]!r})"), label

    def __repr__(self) -> str:
        return (f"AwA2Dataset({str(self.root)!r}, split={self.split!r}, size={self.size}, "
                f"classes={len(self.classes)}, images={len(self)})")
