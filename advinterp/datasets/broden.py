"""The Broden dataset format (NetDissect / NetDissect-Lite compatible): export and streaming reader.

On-disk layout, as in the ``broden1_224`` / ``broden1_227`` / ``broden1_384`` releases::

    <root>/index.csv        image,split,ih,iw,sh,sw,color,object,part,material,scene,texture
    <root>/category.csv     name,first,last,count,frequency
    <root>/label.csv        number,name,category,frequency,coverage,syns
    <root>/c_<category>.csv code,number,name,frequency,coverage
    <root>/images/...       the images and the segmentation PNGs

``index.csv`` has one row per image. ``image`` is a path relative to ``<root>/images/``;
``ih, iw`` the image size and ``sh, sw`` the segmentation size (it may be smaller, e.g.
112 for the 224-pixel release). Each category column holds a ``;``-separated list: for a
pixel-level category, segmentation PNG file names (relative to ``images/``); for an
image-level category (``scene``), global label numbers; empty when there are none.
A segmentation PNG is RGB and encodes the label number of each pixel as ``R + 256 * G``
(0 = unlabelled); several PNGs of one cell may label the same pixel.

``label.csv`` numbers labels from 1 (0, "unlabelled", has no row). Its ``category``
column reads ``<category>(<n images>)``, several joined by ``;``; ``frequency`` is the
number of images containing the label and ``coverage`` the mean, over those images, of the
fraction of segmentation pixels it covers (1.0 for image-level labels).
``c_<category>.csv`` lists a category's labels with their 1-based ``code`` inside it;
``category.csv`` gives each category's first/last label number, its label count and the
number of images having any label of it.

Example::

    root = export_broden("/tmp/broden_synth", n=200, seg_size=32)
    ds = BrodenDataset(root, categories=["object", "part", "scene"])
    for images, items in ds.batches(64):          # images: (B, 64, 64, 3) uint8
        parts = items[0].pixel_labels["part"]     # (k, 32, 32) int32, one map per PNG
        scene = items[0].image_labels["scene"]    # [label number]
"""
from __future__ import annotations

import csv
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from ..exceptions import DatasetFormatError, ParameterError
from .synthetic import CATEGORIES, CONCEPTS, PIXEL_CATEGORIES, SyntheticWorld

__all__ = ["synthetic_broden", 
    "INDEX_COLUMNS",
    "BrodenCategory",
    "BrodenCode",
    "BrodenDataset",
    "BrodenItem",
    "BrodenLabel",
    "decode_segmentation",
    "encode_segmentation",
    "export_broden",
    "resize_nearest",
]

#: The fixed leading columns of ``index.csv``; every further column is a category.
_FIXED_COLUMNS: tuple[str, ...] = ("image", "split", "ih", "iw", "sh", "sw")
#: The full ``index.csv`` header written by :func:`export_broden` (Broden's, ``material`` included).
INDEX_COLUMNS: tuple[str, ...] = _FIXED_COLUMNS + (
    "color", "object", "part", "material", "scene", "texture")

_SEG_RE = re.compile(r"^\s*([^()]+?)\s*(?:\(\s*(\d+)\s*\))?\s*$")


# ---------------------------------------------------------------------------- records
@dataclass(frozen=True)
class BrodenLabel:
    """One row of ``label.csv``.

    Attributes:
        number: global label number (>= 1).
        name: label name.
        category: primary category (the one listing the most images; first on ties).
        frequency: number of images containing the label.
        coverage: mean fraction of segmentation pixels it covers in those images.
        categories: ``{category: n images}`` as parsed from the ``category`` column.
        syns: synonyms (``;``-separated in the file), usually empty.
    """

    number: int
    name: str
    category: str
    frequency: int
    coverage: float
    categories: dict = field(default_factory=dict, compare=False)
    syns: tuple[str, ...] = ()

    @property
    def id(self) -> int:
        """Alias of :attr:`number`, like :class:`~advinterp.datasets.synthetic.Concept.id`."""
        return self.number


@dataclass(frozen=True)
class BrodenCategory:
    """One row of ``category.csv``: label numbers ``first..last``, ``count`` labels, and
    ``frequency`` = number of images having any label of the category."""

    name: str
    first: int
    last: int
    count: int
    frequency: int


@dataclass(frozen=True)
class BrodenCode:
    """One row of ``c_<category>.csv``: 1-based ``code`` inside the category and the
    global label ``number``."""

    code: int
    number: int
    name: str
    frequency: int
    coverage: float


@dataclass
class BrodenItem:
    """One image of a Broden dataset, read from disk on demand.

    Attributes:
        image: ``(H, W, 3)`` uint8 RGB (``H, W`` = ``ih, iw``, or the dataset's ``resolution``).
        pixel_labels: ``{category: (k, sh, sw) int32}`` for every selected category: one
            label map per segmentation PNG of the cell (``k = 0`` when there is none).
            With a ``resolution``, maps have that size instead of ``sh, sw``.
        image_labels: ``{category: [label number, ...]}`` image-level labels for every
            selected category (empty list when none).
        path: the image file.
        index: position of the item in the dataset (0-based, after split filtering).
        split: the ``split`` column of its ``index.csv`` row.
    """

    image: np.ndarray
    pixel_labels: dict[str, np.ndarray]
    image_labels: dict[str, list[int]]
    path: Path
    index: int
    split: str = ""

    def label_map(self, category: str) -> np.ndarray:
        """One ``(sh, sw)`` int32 map of ``category``: at each pixel the label of the first
        PNG that labels it (0 where none does). Loses overlaps; use :attr:`pixel_labels`
        to keep them."""
        stack = self.pixel_labels[category]
        out = np.zeros(stack.shape[1:], np.int32)
        for layer in stack[::-1]:
            out = np.where(layer != 0, layer, out)
        return out


@dataclass(frozen=True)
class _Row:
    line: int
    image: str
    split: str
    ih: int
    iw: int
    sh: int
    sw: int
    pngs: dict            # category -> tuple of PNG names
    numbers: dict         # category -> tuple of label numbers


# ---------------------------------------------------------------------------- helpers
def encode_segmentation(labels: np.ndarray) -> np.ndarray:
    """Encode an ``(H, W)`` integer label map as Broden's ``(H, W, 3)`` uint8 RGB:
    ``R = label % 256``, ``G = label // 256``, ``B = 0``. Labels must be in ``[0, 65535]``."""
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ParameterError("encode_segmentation", "labels", labels, "a 2-D (H, W) integer array")
    if labels.size and (labels.min() < 0 or labels.max() > 65535):
        raise ParameterError("encode_segmentation", "labels", labels,
                             "label numbers in [0, 65535] (they are stored as R + 256*G)")
    lab = labels.astype(np.int64)
    rgb = np.zeros(labels.shape + (3,), np.uint8)
    rgb[..., 0] = lab % 256
    rgb[..., 1] = lab // 256
    return rgb


def decode_segmentation(rgb: np.ndarray) -> np.ndarray:
    """Decode a Broden segmentation ``(H, W, 3|4)`` uint8 array to ``(H, W)`` int32 labels
    ``R + 256 * G``. A 2-D array (greyscale/indexed PNG) is taken as the labels themselves."""
    rgb = np.asarray(rgb)
    if rgb.ndim == 2:
        return rgb.astype(np.int32)
    return rgb[..., 0].astype(np.int32) + 256 * rgb[..., 1].astype(np.int32)


def _size_pair(value, owner: str, name: str) -> tuple[int, int] | None:
    if value is None:
        return None
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool) and value > 0:
        return int(value), int(value)
    if (isinstance(value, (tuple, list)) and len(value) == 2
            and all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v > 0
                    for v in value)):
        return int(value[0]), int(value[1])
    raise ParameterError(owner, name, value, "None, a positive int, or a (height, width) pair")


def resize_nearest(labels: np.ndarray, size) -> np.ndarray:
    """Nearest-neighbour resize of the last two axes of ``labels`` to ``size`` (int or
    ``(h, w)``), sampling at pixel centres: output row ``i`` takes input row
    ``floor((i + 0.5) * H / h)`` (exact integer arithmetic). Halving keeps rows/cols
    ``1, 3, 5, ...``. Label values are never mixed."""
    h, w = _size_pair(size, "resize_nearest", "size")
    labels = np.asarray(labels)
    H, W = labels.shape[-2:]
    if (H, W) == (h, w):
        return labels
    rows = ((2 * np.arange(h) + 1) * H) // (2 * h)
    cols = ((2 * np.arange(w) + 1) * W) // (2 * w)
    return labels[..., rows[:, None], cols[None, :]]


def _resize_image(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    from PIL import Image

    if image.shape[:2] == size:
        return image
    return np.asarray(Image.fromarray(image).resize((size[1], size[0]), Image.BILINEAR))


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_IEND = b"\x00\x00\x00\x00IEND\xaeB`\x82"
#: Chunks before the first IDAT that neither decoder turns into pixel changes (gamma, colour
#: profiles, significant bits, ... send a PNG to PIL).
_PNG_PLAIN_CHUNKS = frozenset((b"IHDR", b"PLTE", b"tRNS", b"pHYs", b"tEXt", b"zTXt", b"iTXt", b"tIME"))
_png_decoder: list = []  # [decode function or None], set on first use


def _load_png_decoder():
    """torchvision's libpng decoder (``torch.ops.image.decode_png``), loaded without importing
    torchvision (whose import takes seconds), or None when unavailable or when it does not
    decode a reference PNG exactly as PIL does."""
    import importlib.util
    import io
    import os

    import torch
    from PIL import Image

    try:
        if not hasattr(torch.ops.image, "decode_png"):
            spec = importlib.util.find_spec("torchvision")
            folder = spec.submodule_search_locations[0] if spec and spec.submodule_search_locations else None
            names = sorted(f for f in os.listdir(folder) if f.startswith("image") and f.endswith((".so", ".pyd")))
            torch.ops.load_library(os.path.join(folder, names[0]))
        decode = torch.ops.image.decode_png
        ref = (np.arange(5 * 7 * 3, dtype=np.uint8).reshape(5, 7, 3) * 37) ^ 0x5A
        buf = io.BytesIO()
        Image.fromarray(ref).save(buf, format="PNG")
        out = decode(torch.frombuffer(bytearray(buf.getvalue()), dtype=torch.uint8), 0, False)
        if not np.array_equal(out.permute(1, 2, 0).numpy(), ref):
            return None
        return decode
    except Exception:  # no torchvision, another layout of it, or a changed operator: PIL decodes
        return None


def _decode_png(path: Path | str) -> tuple[np.ndarray, int] | None:
    """``((C, H, W) uint8 pixels, PNG colour type)`` of an 8-bit, non-interlaced greyscale,
    RGB, RGBA or paletted PNG (palettes expanded to RGB) decoded by libpng; None for anything
    else, or without torchvision."""
    import struct

    import torch

    try:  # straight into a writable buffer for torch.frombuffer (no file object, no copy)
        fd = os.open(path, os.O_RDONLY)
        try:
            data = bytearray(os.fstat(fd).st_size)
            if os.readv(fd, [data]) != len(data):
                return None
        finally:
            os.close(fd)
    except OSError:
        return None
    if len(data) < 45 or data[:8] != _PNG_SIGNATURE or data[12:16] != b"IHDR" or not data.endswith(_PNG_IEND):
        return None
    w, h, depth, ctype, _, _, interlace = struct.unpack_from(">IIBBBBB", data, 16)
    if depth != 8 or interlace or ctype not in (0, 2, 3, 6):
        return None
    pos = 8
    while True:  # the chunks before the pixels
        if pos + 8 > len(data):
            return None
        length, kind = struct.unpack_from(">I4s", data, pos)
        if kind == b"IDAT":
            break
        if kind not in _PNG_PLAIN_CHUNKS:
            return None
        pos += 12 + length
    if not _png_decoder:
        _png_decoder.append(_load_png_decoder())
    decode = _png_decoder[0]
    if decode is None:
        return None
    try:
        # ImageReadMode 0: as stored; 3: RGB (a palette's colours, as PIL's convert("RGB"))
        t = decode(torch.frombuffer(data, dtype=torch.uint8), 3 if ctype == 3 else 0, False)
    except Exception:
        return None
    if t.ndim != 3 or tuple(t.shape[1:]) != (h, w) or t.dtype != torch.uint8:
        return None
    # greyscale: 1 channel (2 with a tRNS chunk: libpng's alpha); others 3 or 4
    if (t.shape[0] not in (1, 2)) if ctype == 0 else (t.shape[0] not in (3, 4) or ctype == 6 and t.shape[0] != 4):
        return None
    return t.numpy(), ctype


def _read_png_fast(path: Path, rgb: bool) -> np.ndarray | None:
    """What :func:`_read_image_file` returns for an 8-bit, non-interlaced greyscale, RGB,
    RGBA or paletted PNG, decoded by libpng (about 2x faster than PIL on small files); None
    for anything else (then PIL decodes it, and reports what is wrong with it)."""
    got = _decode_png(path)
    if got is None:
        return None
    chw, ctype = got
    if ctype == 0:  # greyscale (PIL "L"; libpng's alpha channel of a tRNS chunk dropped)
        return np.repeat(chw[0][:, :, None], 3, axis=2) if rgb else chw[0].copy()
    keep = 4 if ctype == 6 and not rgb else 3  # RGBA as stored unless RGB is asked for; palettes as RGB
    return np.ascontiguousarray(chw[:keep].transpose(1, 2, 0))


def _read_segmentation_file(path: Path | str, where: str) -> np.ndarray:
    """``decode_segmentation(_read_image_file(path, "segmentation", where, rgb=False))``,
    from libpng's channels directly when :func:`_decode_png` reads the file (``path`` may be
    a string: a dissection reads thousands of label PNGs, and a ``Path`` per file costs)."""
    got = _decode_png(path)
    if got is None:
        return decode_segmentation(_read_image_file(Path(path), "segmentation", where, rgb=False))
    chw, ctype = got
    if ctype == 0:
        return chw[0].astype(np.int32)
    seg = chw[1].astype(np.int32)
    seg <<= 8
    seg |= chw[0]  # R + 256 * G
    return seg


def _read_image_file(path: Path, what: str, where: str = "", rgb: bool = True) -> np.ndarray:
    """Read an image file to a uint8 array; every failure is a :class:`DatasetFormatError`
    naming ``path`` (and ``where`` it is referenced).

    Plain 8-bit PNGs (greyscale, RGB, RGBA, paletted) are decoded by libpng when torchvision
    is installed (:func:`_read_png_fast`; the same pixels as PIL), everything else by PIL."""
    fast = _read_png_fast(path, rgb)
    if fast is not None:
        return fast
    from PIL import Image, UnidentifiedImageError

    ref = f" (listed in {where})" if where else ""
    if not path.is_file():
        raise DatasetFormatError(
            f"{what} {path} is missing{ref}. Restore the file, or re-export / re-download the dataset.")
    try:
        with Image.open(path) as im:
            im.load()
            if rgb:
                arr = np.asarray(im.convert("RGB"))
            elif im.mode == "P":
                # a paletted segmentation encodes labels in its palette colours (R + 256*G), as
                # NetDissect's reader (scipy imread) sees them, not in the palette indices
                arr = np.asarray(im.convert("RGB"))
            elif im.mode in ("RGB", "RGBA", "L", "I", "I;16"):
                arr = np.asarray(im)
            else:
                arr = np.asarray(im.convert("RGB"))
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise DatasetFormatError(
            f"{what} {path} is unreadable{ref}: {e}. The file is corrupt or not an image; "
            f"restore it, or re-export / re-download the dataset.") from e
    return arr


def _read_csv(path: Path, required: Sequence[str], hint: str) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """Read a CSV file: its (stripped) header and ``(line number, row)`` pairs. Checks the
    header holds ``required`` and every row has as many columns as the header."""
    if not path.is_file():
        raise DatasetFormatError(f"{path} is missing. {hint}")
    rows: list[tuple[int, list[str]]] = []
    try:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.reader(f)
            header = next(reader, None)
            if header is None:
                raise DatasetFormatError(f"{path} line 1: the file is empty; expected the header "
                                         f"{','.join(required)}. {hint}")
            header = [h.strip().lstrip("\ufeff") for h in header]
            missing = [c for c in required if c not in header]
            if missing:
                raise DatasetFormatError(
                    f"{path} line 1: the header {','.join(header)!r} lacks the column(s) "
                    f"{', '.join(missing)}; expected {','.join(required)}. {hint}")
            end = reader.line_num
            for row in reader:
                # a quoted field may span lines: report the line where the record starts
                start, end = end + 1, reader.line_num
                if not row or (len(row) == 1 and not row[0].strip()):
                    continue  # blank line
                if len(row) != len(header):
                    where = f"line {start}" if start == end else f"lines {start}-{end} (an unclosed quote?)"
                    raise DatasetFormatError(
                        f"{path} {where}: expected {len(header)} columns "
                        f"({','.join(header)}), found {len(row)}. The row is truncated or "
                        f"malformed; fix it or {hint[0].lower() + hint[1:]}")
                rows.append((start, [c.strip() for c in row]))
    except UnicodeDecodeError as e:
        raise DatasetFormatError(f"{path} line {_bad_utf8_line(path)}: not UTF-8 text ({e}). {hint}") from e
    except csv.Error as e:
        raise DatasetFormatError(f"{path} line {reader.line_num}: cannot parse it as CSV ({e}). {hint}") from e
    return header, rows


def _bad_utf8_line(path: Path) -> int:
    """1-based line of the first byte sequence of ``path`` that is not UTF-8."""
    data = path.read_bytes()
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as e:
        return data.count(b"\n", 0, e.start) + 1
    return 1


def _parse_int(text: str, path: Path, line: int, column: str, hint: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise DatasetFormatError(
            f"{path} line {line}, column {column!r}: {text!r} is not an integer. "
            f"Fix the row or {hint[0].lower() + hint[1:]}") from None


def _parse_float(text: str, path: Path, line: int, column: str, hint: str) -> float:
    try:
        return float(text) if text else 0.0
    except ValueError:
        raise DatasetFormatError(
            f"{path} line {line}, column {column!r}: {text!r} is not a number. "
            f"Fix the row or {hint[0].lower() + hint[1:]}") from None


# ---------------------------------------------------------------------------- export
def export_broden(root, world: SyntheticWorld | None = None, n: int = 200, split: str = "val",
                  seg_size=None, start: int = 0, progress: bool = False) -> Path:
    """Render ``n`` synthetic scenes and write them as a Broden dataset under ``root``.

    Scenes ``start .. start+n-1`` of ``split`` are rendered one at a time (never all in
    memory). Image ``i`` is written to ``images/synthetic/<split>_<i:06d>.png`` (PNG, so the
    round trip is exact), its ``color``/``object``/``part``/``texture`` masks to
    ``images/synthetic/<split>_<i:06d>_<category>.png`` (omitted, and the cell left empty,
    when the mask has no label), and its scene label number in the ``scene`` column. The
    ``material`` column is kept, empty. Label numbers are the global concept ids of
    :data:`~advinterp.datasets.synthetic.CONCEPTS`; ``label.csv`` lists all of them, those
    never seen with frequency 0. An existing ``index.csv`` etc. under ``root`` is replaced.

    Args:
        root: output folder (created if needed).
        world: the generator (default ``SyntheticWorld()``: 64x64, seed 0).
        n: number of scenes (default 200).
        split: world split to render, written as is in the ``split`` column (default
            ``"val"``: dissection data, never the scenes the shipped models were trained on;
            Broden itself uses ``train`` and ``val``).
        seg_size: segmentation size, int or ``(sh, sw)`` (default: the image size). Masks
            are downsampled by :func:`resize_nearest`.
        start: index of the first scene (default 0).
        progress: show a progress bar (default False).

    Returns:
        ``Path(root)``.
    """
    from PIL import Image

    from ..progress import progress_bar

    world = SyntheticWorld() if world is None else world
    if not isinstance(n, (int, np.integer)) or isinstance(n, bool) or n < 0:
        raise ParameterError("export_broden", "n", n, "a non-negative integer")
    if not isinstance(start, (int, np.integer)) or isinstance(start, bool) or start < 0:
        raise ParameterError("export_broden", "start", start, "a non-negative integer")
    if not isinstance(split, str):
        raise ParameterError("export_broden", "split", split, "a split name such as 'train' or 'val'")
    world._rng(split, 0)  # validates the split name
    s = world.size
    sh, sw = _size_pair(seg_size, "export_broden", "seg_size") or (s, s)

    root = Path(root)
    img_dir = root / "images" / "synthetic"
    img_dir.mkdir(parents=True, exist_ok=True)

    K = max(c.id for c in CONCEPTS)
    freq = np.zeros(K + 1, np.int64)
    cov_sum = np.zeros(K + 1, np.float64)
    cat_freq = {c: 0 for c in CATEGORIES}
    rows: list[list[str]] = []
    for j in progress_bar(range(n), desc=f"exporting broden {split}", total=n, disable=not progress):
        i = int(start) + j
        sc = world.render(i, split)
        stem = f"synthetic/{split}_{i:06d}"
        Image.fromarray(sc.image).save(root / "images" / f"{stem}.png")
        cells = {c: "" for c in INDEX_COLUMNS[len(_FIXED_COLUMNS):]}
        for cat in PIXEL_CATEGORIES:
            seg = resize_nearest(sc.masks[cat], (sh, sw))
            present, counts = np.unique(seg, return_counts=True)
            keep = present != 0
            if not keep.any():
                continue
            name = f"{stem}_{cat}.png"
            Image.fromarray(encode_segmentation(seg)).save(root / "images" / name)
            cells[cat] = name
            cat_freq[cat] += 1
            freq[present[keep]] += 1
            cov_sum[present[keep]] += counts[keep] / float(sh * sw)
        cells["scene"] = str(int(sc.scene))
        cat_freq["scene"] += 1
        freq[sc.scene] += 1
        cov_sum[sc.scene] += 1.0
        rows.append([f"{stem}.png", split, str(s), str(s), str(sh), str(sw)] + list(cells.values()))

    def coverage(number: int) -> str:
        return f"{cov_sum[number] / freq[number]:.6f}" if freq[number] else "0.0"

    def write(name: str, header: Sequence[str], body: list[list]) -> None:
        with open(root / name, "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f, lineterminator="\n")
            w.writerow(header)
            w.writerows(body)

    write("index.csv", INDEX_COLUMNS, rows)
    write("label.csv", ("number", "name", "category", "frequency", "coverage", "syns"),
          [[c.id, c.name, f"{c.category}({freq[c.id]})", int(freq[c.id]), coverage(c.id), ""]
           for c in CONCEPTS])
    cat_rows = []
    for cat in CATEGORIES:
        members = [c for c in CONCEPTS if c.category == cat]
        nums = [c.id for c in members]
        cat_rows.append([cat, min(nums), max(nums), len(nums), cat_freq[cat]])
        write(f"c_{cat}.csv", ("code", "number", "name", "frequency", "coverage"),
              [[k + 1, c.id, c.name, int(freq[c.id]), coverage(c.id)] for k, c in enumerate(members)])
    write("category.csv", ("name", "first", "last", "count", "frequency"), cat_rows)
    return root


# ---------------------------------------------------------------------------- reader
class BrodenDataset:
    """A Broden dataset on disk (real Broden releases or :func:`export_broden` output),
    read lazily: only the CSVs are loaded up front; each item's image and segmentation
    PNGs are read when the item is accessed.

    Args:
        root: the folder holding ``index.csv`` (and ``images/``).
        categories: category columns to load (default: the categories listed in
            ``category.csv`` that are ``index.csv`` columns).
        split: keep only rows of this ``split`` (default None: all rows).
        resolution: int or ``(h, w)``: resize images (bilinear) and label maps (nearest,
            :func:`resize_nearest`) to this size (default None: keep file sizes).

    Attributes:
        root: ``Path(root)``.
        categories: the selected category names.
        labels: :class:`BrodenLabel` rows of ``label.csv``, by increasing number.
        category_of: ``{label number: primary category}``.
        category_info: ``{category: BrodenCategory}`` from ``category.csv``.
        codes: ``{category: [BrodenCode, ...]}`` from ``c_<category>.csv`` for each
            selected category listed in ``category.csv``.

    Items (``ds[i]``, ``iter(ds)``) are :class:`BrodenItem`; :meth:`batches` streams them
    in groups. Any missing, unreadable or malformed file raises
    :class:`~advinterp.exceptions.DatasetFormatError` naming the file (and line).
    """

    _HINT = "Re-export it with export_broden() or re-download the Broden release."

    def __init__(self, root, categories: Sequence[str] | None = None, split: str | None = None,
                 resolution=None):
        self.root = Path(root)
        if not self.root.is_dir():
            raise DatasetFormatError(f"{self.root} is not a folder; expected a Broden dataset root "
                                     f"holding index.csv, category.csv, label.csv and images/.")
        self.resolution = _size_pair(resolution, "BrodenDataset", "resolution")
        self.images_dir = self.root / "images"
        self._images_str = str(self.images_dir)
        self._load_labels()
        self._load_categories()
        index_path = self.root / "index.csv"
        header, raw = _read_csv(index_path, _FIXED_COLUMNS, self._HINT)
        columns = [c for c in header if c not in _FIXED_COLUMNS]
        if categories is None:
            chosen = [c for c in self.category_info if c in columns]
        else:
            if isinstance(categories, str):
                categories = [categories]
            chosen = list(categories)
            bad = [c for c in chosen if c not in columns]
            if bad:
                raise ParameterError("BrodenDataset", "categories", categories,
                                     f"names of index.csv category columns: {', '.join(columns)}")
        self.categories: list[str] = chosen
        self._load_codes()
        self._rows = self._parse_index(index_path, header, raw, split)
        self.split = split

    # -- CSV loading
    def _load_labels(self) -> None:
        path = self.root / "label.csv"
        header, raw = _read_csv(path, ("number", "name", "category"), self._HINT)
        col = {h: k for k, h in enumerate(header)}
        labels = []
        for line, row in raw:
            number = _parse_int(row[col["number"]], path, line, "number", self._HINT)
            if number == 0:
                continue  # tolerate an explicit "unlabelled" row
            cats: dict[str, int] = {}
            for part in filter(None, (p.strip() for p in row[col["category"]].split(";"))):
                m = _SEG_RE.match(part)
                if m is None:
                    raise DatasetFormatError(
                        f"{path} line {line}, column 'category': {part!r} is not of the form "
                        f"<category>(<count>). Fix the row or {self._HINT[0].lower() + self._HINT[1:]}")
                cats[m.group(1)] = int(m.group(2)) if m.group(2) else 0
            primary = max(cats, key=lambda c: cats[c]) if cats else ""
            freq = (_parse_int(row[col["frequency"]] or "0", path, line, "frequency", self._HINT)
                    if "frequency" in col else 0)
            cov = _parse_float(row[col["coverage"]], path, line, "coverage", self._HINT) if "coverage" in col else 0.0
            syns = tuple(s for s in row[col["syns"]].split(";") if s) if "syns" in col else ()
            labels.append(BrodenLabel(number, row[col["name"]], primary, freq, cov, cats, syns))
        labels.sort(key=lambda lab: lab.number)
        self.labels: list[BrodenLabel] = labels
        self._label_by_number = {lab.number: lab for lab in labels}
        self.category_of: dict[int, str] = {lab.number: lab.category for lab in labels}

    def _load_categories(self) -> None:
        path = self.root / "category.csv"
        cols = ("name", "first", "last", "count", "frequency")
        header, raw = _read_csv(path, cols, self._HINT)
        col = {h: k for k, h in enumerate(header)}
        info = {}
        for line, row in raw:
            vals = [_parse_int(row[col[c]], path, line, c, self._HINT) for c in cols[1:]]
            info[row[col["name"]]] = BrodenCategory(row[col["name"]], *vals)
        self.category_info: dict[str, BrodenCategory] = info

    def _load_codes(self) -> None:
        self.codes: dict[str, list[BrodenCode]] = {}
        cols = ("code", "number", "name", "frequency", "coverage")
        for cat in self.categories:
            if cat not in self.category_info:
                continue
            path = self.root / f"c_{cat}.csv"
            header, raw = _read_csv(path, cols[:3], self._HINT)
            col = {h: k for k, h in enumerate(header)}
            out = []
            for line, row in raw:
                code = _parse_int(row[col["code"]], path, line, "code", self._HINT)
                number = _parse_int(row[col["number"]], path, line, "number", self._HINT)
                freq = (_parse_int(row[col["frequency"]] or "0", path, line, "frequency", self._HINT)
                        if "frequency" in col else 0)
                cov = (_parse_float(row[col["coverage"]], path, line, "coverage", self._HINT)
                       if "coverage" in col else 0.0)
                out.append(BrodenCode(code, number, row[col["name"]], freq, cov))
            self.codes[cat] = out

    def _parse_index(self, path: Path, header: list[str], raw, split: str | None) -> list[_Row]:
        col = {h: k for k, h in enumerate(header)}
        rows, seen = [], set()
        for line, row in raw:
            seen.add(row[col["split"]])
            if split is not None and row[col["split"]] != split:
                continue
            sizes = [_parse_int(row[col[c]], path, line, c, self._HINT) for c in ("ih", "iw", "sh", "sw")]
            if not row[col["image"]]:
                raise DatasetFormatError(f"{path} line {line}, column 'image': empty image path. "
                                         f"Fix the row or re-export / re-download the dataset.")
            pngs, numbers = {}, {}
            for cat in self.categories:
                files, nums = [], []
                for entry in filter(None, (e.strip() for e in row[col[cat]].split(";"))):
                    if entry.isdigit():
                        num = int(entry)
                        if self._label_by_number and num not in self._label_by_number:
                            raise DatasetFormatError(
                                f"{path} line {line}, column {cat!r}: label number {num} is not in "
                                f"{self.root / 'label.csv'}. Fix the row or re-export / re-download the dataset.")
                        nums.append(num)
                    else:
                        files.append(entry)
                pngs[cat], numbers[cat] = tuple(files), tuple(nums)
            rows.append(_Row(line, row[col["image"]], row[col["split"]], *sizes, pngs, numbers))
        if split is not None and not rows:
            raise ParameterError("BrodenDataset", "split", split,
                                 f"a split present in {path}: {', '.join(sorted(seen)) or '(none: empty index)'}")
        return rows

    # -- items
    def __len__(self) -> int:
        return len(self._rows)

    def image_path(self, i: int) -> Path:
        """Path of the image of item ``i``."""
        return self.images_dir / self._rows[i].image

    def _check_index(self, i: Any) -> int:
        n = len(self._rows)
        if not isinstance(i, (int, np.integer)):
            raise TypeError(f"BrodenDataset indices must be integers, not {type(i).__name__}")
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(f"BrodenDataset index {i} out of range for {n} items")
        return int(i)

    def __getitem__(self, i: int) -> BrodenItem:
        i = self._check_index(i)
        r = self._rows[i]
        pixel, image_labels = self._labels(r)
        return BrodenItem(self._image(r), pixel, image_labels, self.images_dir / r.image, i, r.split)

    def segmentation(self, i: int) -> BrodenItem:
        """Item ``i`` without decoding its image (``image`` is an empty ``(0, 0, 3)``
        array): the labels alone, for passes that already have the image's activations."""
        i = self._check_index(i)
        r = self._rows[i]
        pixel, image_labels = self._labels(r)
        return BrodenItem(np.zeros((0, 0, 3), np.uint8), pixel, image_labels, self.images_dir / r.image, i, r.split)

    def _labels(self, r: _Row) -> tuple[dict[str, np.ndarray], dict[str, list[int]]]:
        where = f"{self.root / 'index.csv'} line {r.line}"
        out_seg = self.resolution or (r.sh, r.sw)
        pixel, image_labels = {}, {}
        for cat in self.categories:
            maps = []
            for name in r.pngs[cat]:
                spath = os.path.join(self._images_str, name)
                seg = _read_segmentation_file(spath, f"{where}, column {cat!r}")
                if seg.shape != (r.sh, r.sw):
                    raise DatasetFormatError(
                        f"segmentation {spath} is {seg.shape[0]}x{seg.shape[1]} (HxW) but {where} says "
                        f"sh={r.sh}, sw={r.sw}. Fix the row or re-export / re-download the dataset.")
                maps.append(seg if seg.shape == out_seg else resize_nearest(seg, out_seg))
            pixel[cat] = (np.stack(maps).astype(np.int32, copy=False) if maps
                          else np.zeros((0,) + tuple(out_seg), np.int32))
            image_labels[cat] = list(r.numbers[cat])
        return pixel, image_labels

    def _image(self, r: _Row) -> np.ndarray:
        where = f"{self.root / 'index.csv'} line {r.line}"
        path = self.images_dir / r.image
        image = _read_image_file(path, "image", where)
        if image.shape[:2] != (r.ih, r.iw):
            raise DatasetFormatError(
                f"image {path} is {image.shape[0]}x{image.shape[1]} (HxW) but {where} says "
                f"ih={r.ih}, iw={r.iw}. Fix the row or re-export / re-download the dataset.")
        return image if self.resolution is None else _resize_image(image, self.resolution)

    def image(self, i: int) -> np.ndarray:
        """The ``(H, W, 3)`` uint8 image of item ``i`` alone (its segmentations are not read)."""
        return self._image(self._rows[self._check_index(i)])

    def image_batches(self, batch_size: int = 64) -> Iterator[np.ndarray]:
        """Stream only the images, in order, as ``(B, H, W, 3)`` uint8 stacks (the batches of
        :meth:`batches` without reading any segmentation: NetDissect's feature pass)."""
        if not isinstance(batch_size, (int, np.integer)) or isinstance(batch_size, bool) or batch_size < 1:
            raise ParameterError("BrodenDataset.image_batches", "batch_size", batch_size, "a positive integer")
        for b in range(0, len(self), int(batch_size)):
            images = [self.image(i) for i in range(b, min(b + int(batch_size), len(self)))]
            shapes = {im.shape for im in images}
            if len(shapes) > 1:
                raise ParameterError("BrodenDataset", "resolution", self.resolution,
                                     f"a common size, because images {b}..{b + len(images) - 1} differ "
                                     f"in size ({sorted(shapes)}); e.g. BrodenDataset(root, resolution=224)")
            yield np.stack(images)

    def __iter__(self) -> Iterator[BrodenItem]:
        for i in range(len(self)):
            yield self[i]

    def batches(self, batch_size: int = 64) -> Iterator[tuple[np.ndarray, list[BrodenItem]]]:
        """Stream the dataset in order as ``(images, items)``: ``images`` a
        ``(B, H, W, 3)`` uint8 stack of the items' images (``B <= batch_size``; the last
        batch may be smaller) and ``items`` the ``B`` :class:`BrodenItem`. Only one batch is
        held at a time. Images must share one size, or pass ``resolution=``."""
        if not isinstance(batch_size, (int, np.integer)) or isinstance(batch_size, bool) or batch_size < 1:
            raise ParameterError("BrodenDataset.batches", "batch_size", batch_size, "a positive integer")
        for b in range(0, len(self), int(batch_size)):
            items = [self[i] for i in range(b, min(b + int(batch_size), len(self)))]
            shapes = {it.image.shape for it in items}
            if len(shapes) > 1:
                raise ParameterError("BrodenDataset", "resolution", self.resolution,
                                     f"a common size, because images {b}..{b + len(items) - 1} differ "
                                     f"in size ({sorted(shapes)}); e.g. BrodenDataset(root, resolution=224)")
            yield np.stack([it.image for it in items]), items

    # -- vocabulary
    def label(self, number: int) -> BrodenLabel:
        """The :class:`BrodenLabel` of a label number (``KeyError`` if unknown)."""
        return self._label_by_number[number]

    def primary_categories(self, categories: Sequence[str] | None = None) -> dict[int, str]:
        """``{label number: primary category}`` by NetDissect's rule, among ``categories``
        (default: the selected :attr:`categories`).

        NetDissect (``SegmentationData.primary_categories_per_index``) gives each label the
        category, among those whose ``c_<category>.csv`` lists it, in which its ``coverage``
        is largest (ties: the category listed last). Categories without a
        ``c_<category>.csv`` (not in ``category.csv``) fall back to the counts of the
        ``label.csv`` ``category`` column. Labels in none of ``categories`` are left out.
        This can differ from :attr:`BrodenLabel.category` (most images) for labels listed
        in several categories.
        """
        cats = list(self.categories if categories is None else categories)
        bad = [c for c in cats if c not in self.categories]
        if bad:
            raise ParameterError("BrodenDataset.primary_categories", "categories", categories,
                                 f"a subset of the dataset's categories {self.categories}")
        coverage: dict[str, dict[int, float]] = {}
        for cat in cats:
            if cat in self.codes:
                coverage[cat] = {c.number: c.coverage for c in self.codes[cat]}
            else:
                coverage[cat] = {lab.number: float(lab.categories[cat]) for lab in self.labels
                                 if cat in lab.categories}
        out: dict[int, str] = {}
        for lab in self.labels:
            scored = [(coverage[cat][lab.number], ic) for ic, cat in enumerate(cats) if lab.number in coverage[cat]]
            if scored:
                out[lab.number] = cats[max(scored)[1]]
        return out

    def labels_of(self, category: str) -> list[BrodenLabel]:
        """Labels whose primary category is ``category``, by increasing number."""
        return [lab for lab in self.labels if lab.category == category]

    def __repr__(self) -> str:
        return (f"BrodenDataset({str(self.root)!r}, n={len(self)}, categories={self.categories}, "
                f"split={self.split!r}, resolution={self.resolution})")


def synthetic_broden(n: int = 200, split: str = "val", size: int = 64, seed: int = 0) -> BrodenDataset:
    """The embedded world's scenes ``0 .. n-1`` of ``split`` exported with :func:`export_broden`
    into a temporary folder (removed when the returned dataset is garbage-collected or the
    process exits) and opened as a :class:`BrodenDataset`.

    The registered dataset ``synthetic-broden``: a study's dissection data when no real
    Broden is at hand. Images are those of ``get_dataset("synthetic", n, split, size, seed)``
    bit for bit (PNG round trip of uint8 scenes).
    """
    import shutil
    import tempfile
    import weakref

    tmp = tempfile.mkdtemp(prefix="advinterp-broden-")
    try:
        root = export_broden(tmp, SyntheticWorld(size=size, seed=seed), n=n, split=split)
        ds = BrodenDataset(root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    weakref.finalize(ds, shutil.rmtree, tmp, True)
    return ds
