"""Folders of precomputed clean/adversarial pairs (DAmageNet-style releases, other toolkits,
:func:`~advinterp.datasets.pairs_writer.build_pairs`).

Two layouts:

* one ``root`` holding both sides (what :func:`build_pairs` writes)::

      root/clean/<class>/<image>
      root/adversarial/<class>/<image>
      root/manifest.json             (optional; written by build_pairs)

* two separate folders, e.g. DAmageNet next to the ILSVRC2012 validation set::

      PairsFolder(clean="ILSVRC2012/val", adversarial="DAmageNet", labels="ILSVRC2012/val.txt")

Each side is a class tree (``<class>/<image>``) or flat (``<image>``). An adversarial image is
paired with the clean image of the same *key* (``match``):

* ``"stem"`` (default): the relative path without its extension, so
  ``ILSVRC2012_val_00000001.png`` pairs with ``ILSVRC2012_val_00000001.JPEG`` and
  ``cat/1.png`` with ``cat/1.png`` (PNG against JPEG is allowed; both sides need the same
  folders);
* ``"path"``: the relative path, extension included;
* ``"name"``: the file name without extension, folders ignored (a flat side against a class
  tree); a name repeated on one side is an error.

Labels come from the clean side's class folders (sorted order, or a ``classes`` list /
``{folder: label}`` mapping, as for image folders; a ``root/manifest.json`` written by
``build_pairs`` gives the writer's labels) or from a labels file (``labels=PATH``): lines
``relative/path_or_name label`` separated by white space as ILSVRC's ``val.txt``, or CSV
``file,label`` (a ``.csv`` file; an optional ``file,label`` header); ``#`` comments and blank
lines are skipped; a label is an integer, or a class name looked up in ``classes`` (default:
the sorted names found). Images are read with the ImageNet transform of
:class:`~advinterp.datasets.imagenet.ImageFolderDataset` (resize + centre crop to ``size``) or,
with ``size=None`` / ``"original"``, as stored.

A study names it as data (``pairs = "path"`` with these keywords as ``params``) and uses its id
as an analyzer's ``batch``; the study makes an :class:`~advinterp.AdversarialBatch` of it
(``AdversarialBatch.from_pair`` with the study's model).
"""
from __future__ import annotations

import csv
import json
import warnings
from pathlib import Path, PurePosixPath
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from ..exceptions import DatasetFormatError, ParameterError
from .imagenet import IMAGE_EXTENSIONS, ImageFolderDataset, _pil_image

__all__ = ["PairsFolder", "read_pair_labels", "MATCH_MODES", "MANIFEST"]

#: The ways :class:`PairsFolder` pairs files (``match=``).
MATCH_MODES: tuple[str, ...] = ("stem", "path", "name")
#: The file a pairs folder built by ``build_pairs`` describes itself in.
MANIFEST = "manifest.json"
_OWNER = "PairsFolder"
_SHOWN = 5


def _is_image(p: Path) -> bool:
    return p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".")


def _scan(root: Path, folders: Sequence[str] | None, loose: bool) -> list[PurePosixPath]:
    """Relative paths of the images of ``root``: its loose images (if ``loose``) and those one
    folder down (only in ``folders`` when given), sorted by path."""
    out: list[PurePosixPath] = []
    for p in sorted(root.iterdir()):
        if p.name.startswith("."):
            continue
        if p.is_dir() and (folders is None or p.name in folders):
            out.extend(PurePosixPath(p.name, q.name) for q in sorted(p.iterdir()) if _is_image(q))
        elif loose and _is_image(p):
            out.append(PurePosixPath(p.name))
    return out


def _key(rel: PurePosixPath, match: str) -> str:
    if match == "path":
        return str(rel)
    if match == "stem":
        return str(rel.with_suffix(""))
    return rel.stem


def _keyed(side: str, root: Path, rels: list[PurePosixPath], match: str) -> dict[str, PurePosixPath]:
    out: dict[str, PurePosixPath] = {}
    for rel in rels:
        k = _key(rel, match)
        if k in out:
            fix = ('use match="path" (the extension then tells them apart) or remove one'
                   if match == "stem" else 'use match="stem" (folders then tell them apart) or rename one')
            raise DatasetFormatError(
                f"{root}: {side} images {out[k]} and {rel} have the same key {k!r} under match={match!r}, "
                f"so neither can be paired; {fix}.")
        out[k] = rel
    return out


def _names(items: Sequence[Any]) -> str:
    shown = ", ".join(str(i) for i in items[:_SHOWN])
    return shown + (f", ... ({len(items) - _SHOWN} more)" if len(items) > _SHOWN else "")


def read_pair_labels(path: str | Path) -> dict[str, str]:
    """Read a labels file: ``{file key: label text}`` in file order.

    Formats: white-space separated lines ``relative/path_or_name label`` (ILSVRC's
    ``val.txt``), or, for a ``.csv`` file, rows ``file,label`` with an optional
    ``file,label`` header. Blank lines and lines starting with ``#`` are skipped.

    Raises:
        DatasetFormatError: the file is missing, not UTF-8, or a line does not have exactly
            two fields or repeats a file; the message names the file and line.
    """
    path = Path(path).expanduser()
    fix = ("Each line must be 'relative/path_or_name label' (white space separated), or 'file,label' "
           "in a .csv file; '#' starts a comment.")
    if not path.is_file():
        raise DatasetFormatError(f"labels file {path} does not exist. Pass labels= the path of a file "
                                 f"such as ILSVRC2012's val.txt. {fix}")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        raise DatasetFormatError(f"{path}: not UTF-8 text ({e}). {fix}") from e
    is_csv = path.suffix.lower() == ".csv"
    out: dict[str, str] = {}
    where: dict[str, int] = {}
    for no, line in enumerate(text.splitlines(), start=1):
        s = line.strip()
        if not s or s.startswith("#"):
            continue
        if is_csv:
            try:
                fields = [f.strip() for f in next(csv.reader([s]))]
            except csv.Error as e:
                raise DatasetFormatError(f"{path} line {no}: cannot parse it as CSV ({e}). {fix}") from e
        else:
            fields = s.split()
        if is_csv and not out and [f.lower() for f in fields] == ["file", "label"]:
            continue  # the header
        if len(fields) != 2 or not fields[0] or not fields[1]:
            raise DatasetFormatError(f"{path} line {no}: expected 2 fields (file and label), found "
                                     f"{len([f for f in fields if f])}: {s!r}. {fix}")
        name, label = fields
        name = name.replace("\\", "/")
        while name.startswith("./"):
            name = name[2:]
        if name in out:
            raise DatasetFormatError(f"{path} line {no}: {name!r} already has a label (line {where[name]}). "
                                     "Keep one line per file.")
        out[name], where[name] = label, no
    if not out:
        raise DatasetFormatError(f"{path}: no labels in the file. {fix}")
    return out


class PairsFolder:
    """Clean/adversarial image pairs read from disk.

    Args:
        root: the folder holding ``clean/`` and ``adversarial/`` (or the folder that relative
            ``clean`` / ``adversarial`` / ``labels`` paths are taken in). ``None``: give
            ``clean`` and ``adversarial``.
        size: crop side (default 224: the ImageNet resize + centre crop); ``None`` or
            ``"original"``: the images as stored (all must have one size for :meth:`tensors`).
        classes: the class folders to read and their labels: a list of folder names (label =
            position) or ``{folder: label}``; default every class folder in sorted order (or,
            for a folder built by ``build_pairs``, the writer's labels from ``manifest.json``).
            With ``labels=``: how class *names* in the labels file map to labels (a list:
            position; a mapping: its value; default the sorted names).
        clean: the clean images' folder (default ``root/clean``).
        adversarial: the adversarial images' folder (default ``root/adversarial``).
        labels: a labels file (see :func:`read_pair_labels`) instead of class folders; needed
            when the clean side is flat. An entry matches a pair by the clean (else the
            adversarial) image's relative path, file name, relative path without extension or
            file stem.
        match: ``"stem"`` (default), ``"path"`` or ``"name"`` (module docstring).
        unmatched: ``"error"`` (default): an image without its partner raises
            :class:`DatasetFormatError` (counts, the first names, the fix); ``"skip"``: the
            pairs that match are kept, one warning gives the count, and :attr:`skipped` lists
            the names left out on each side.

    Attributes:
        pairs: ``[(clean path, adversarial path, label), ...]`` in clean class-folder, then
            file order.
        classes: class names in label order where known (class folders, ``classes`` or the
            labels file's names), else ``None`` (integer labels without names).
        skipped: ``{"clean": [...], "adversarial": [...]}``: relative paths without a partner
            (empty unless ``unmatched="skip"``).

    Items are ``(x0, x_adv, y)``: two ``(3, S, S)`` float32 tensors in [0, 1] and the int
    label; :meth:`tensors` stacks all of them.
    """

    def __init__(self, root: str | Path | None = None, size: int | str | None = 224,
                 classes: Sequence[str] | Mapping[str, int] | None = None, *,
                 clean: str | Path | None = None, adversarial: str | Path | None = None,
                 labels: str | Path | None = None, match: str = "stem", unmatched: str = "error"):
        if match not in MATCH_MODES:
            raise ParameterError(_OWNER, "match", match, " or ".join(repr(m) for m in MATCH_MODES),
                                 '"stem" pairs a.png with a.JPEG; "path" needs identical relative paths; '
                                 '"name" ignores folders.')
        if unmatched not in ("error", "skip"):
            raise ParameterError(_OWNER, "unmatched", unmatched, '"error" or "skip"')
        if size is None or size == "original":
            self.size: int | None = None
        elif isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1:
            raise ParameterError(_OWNER, "size", size, 'a positive integer, or None / "original" (as stored)')
        else:
            self.size = int(size)
        base = None if root is None else Path(root).expanduser()
        if base is None and (clean is None or adversarial is None):
            raise ParameterError(_OWNER, "root", None, "a folder holding clean/ and adversarial/",
                                 "Or give both clean= and adversarial= folders.")

        def at(p: str | Path | None, default: str) -> Path:
            if p is None:
                return base / default  # type: ignore[operator]
            p = Path(p).expanduser()
            return p if p.is_absolute() or base is None else base / p

        self.root = base if base is not None else at(adversarial, "")
        self.clean_root, self.adversarial_root = at(clean, "clean"), at(adversarial, "adversarial")
        self.labels_file = None if labels is None else at(labels, "")
        self.match, self.unmatched = match, unmatched
        for side, p in (("clean", self.clean_root), ("adversarial", self.adversarial_root)):
            if not p.is_dir():
                given = clean if side == "clean" else adversarial
                raise DatasetFormatError(
                    f"{p}: no {side} folder. " + (
                        f"A pairs folder holds clean/<class>/<image> and adversarial/<class>/<image>; or pass "
                        f"{side}= the folder of the {side} images." if given is None else
                        f"Pass {side}= an existing folder of {side} images (class folders or flat)."))

        manifest_classes = self._manifest_classes() if classes is None and labels is None else None
        if labels is None:
            folders = sorted(p.name for p in self.clean_root.iterdir() if p.is_dir() and not p.name.startswith("."))
            if not folders:
                raise DatasetFormatError(
                    f"{self.clean_root}: the clean side is flat (no class folders), so it gives no labels. "
                    "Pass labels= a file of 'name label' lines (e.g. ILSVRC2012's val.txt), or sort the clean "
                    "images into <class>/ folders.")
            class_to_idx = self._class_to_idx(classes, folders, manifest_classes)
            clean_rels = _scan(self.clean_root, list(class_to_idx), loose=False)
            adv_has_folders = any(p.is_dir() for p in self.adversarial_root.iterdir())
            restrict = (classes is not None or manifest_classes is not None) and adv_has_folders and match != "name"
            adv_rels = _scan(self.adversarial_root, list(class_to_idx) if restrict else None, loose=True)
            order = {c: i for i, c in enumerate(class_to_idx)}
            clean_rels.sort(key=lambda r: (order[r.parts[0]], r.parts[1]))
            label_of = {rel: class_to_idx[rel.parts[0]] for rel in clean_rels}
            self.classes: list[str] | None = list(class_to_idx)
            self.class_to_idx = class_to_idx
        else:
            clean_rels = _scan(self.clean_root, None, loose=True)
            adv_rels = _scan(self.adversarial_root, None, loose=True)
            label_of = {}
        if not clean_rels:
            raise DatasetFormatError(f"{self.clean_root}: no {'/'.join(e[1:] for e in IMAGE_EXTENSIONS)} images "
                                     "(in class folders, or loose with labels=).")
        ck, ak = _keyed("clean", self.clean_root, clean_rels, match), _keyed("adversarial", self.adversarial_root,
                                                                             adv_rels, match)
        only_clean = [str(r) for k, r in ck.items() if k not in ak]
        only_adv = [str(r) for k, r in ak.items() if k not in ck]
        self.skipped: dict[str, list[str]] = {"clean": only_clean, "adversarial": only_adv}
        if only_clean or only_adv:
            if unmatched == "error":
                raise DatasetFormatError(
                    f"{self.root}: {len(only_clean)} clean image(s) without an adversarial partner"
                    + (f" ({_names(only_clean)})" if only_clean else "")
                    + f" and {len(only_adv)} adversarial image(s) without a clean partner"
                    + (f" ({_names(only_adv)})" if only_adv else "")
                    + f", pairing by match={match!r} in {self.clean_root} and {self.adversarial_root}. Add the "
                    "missing files, choose another match= (stem: same relative path, any extension; name: "
                    "same file name in any folder), or pass unmatched=\"skip\" to keep the pairs that match.")
            warnings.warn(f"{_OWNER}({self.root}): skipped {len(only_clean)} clean and {len(only_adv)} "
                          f"adversarial image(s) without a partner (unmatched='skip'; their names are in "
                          f".skipped).", stacklevel=2)
        matched = [(rel, ak[k]) for k, rel in ck.items() if k in ak]
        if not matched:
            raise DatasetFormatError(f"{self.root}: no image of {self.clean_root} has a partner in "
                                     f"{self.adversarial_root} under match={match!r}; check the folders and match=.")
        if labels is not None:
            label_of, self.classes = self._file_labels(matched, classes)
            self.class_to_idx = {} if self.classes is None else {c: i for i, c in enumerate(self.classes)}
        self.pairs: list[tuple[Path, Path, int]] = [
            (self.clean_root / c, self.adversarial_root / a, int(label_of[c])) for c, a in matched]

    # ------------------------------------------------------------------ labels
    def _manifest_classes(self) -> list[str] | None:
        f = self.root / MANIFEST
        if not f.is_file() or self.clean_root != self.root / "clean":
            return None
        try:
            names = json.loads(f.read_text(encoding="utf-8")).get("classes")
        except (ValueError, UnicodeDecodeError, AttributeError) as e:
            raise DatasetFormatError(f"{f}: not a pairs manifest ({e}). Remove it, or pass classes= to label "
                                     "the class folders.") from None
        return [str(c) for c in names] if isinstance(names, list) else None

    def _class_to_idx(self, classes: Any, folders: list[str], manifest: list[str] | None) -> dict[str, int]:
        if classes is None and manifest is not None and set(folders) <= set(manifest):
            pos = {c: i for i, c in enumerate(manifest)}  # build_pairs' labels: class name -> index
            return {f: pos[f] for f in sorted(folders, key=pos.__getitem__)}
        if classes is None:
            return {name: i for i, name in enumerate(folders)}
        if isinstance(classes, Mapping):
            out = {str(k): int(v) for k, v in sorted(classes.items())}
        elif isinstance(classes, Sequence) and not isinstance(classes, str):
            if len(set(classes)) != len(classes):
                raise ParameterError(_OWNER, "classes", classes, "folder names without repeats")
            out = {str(c): i for i, c in enumerate(classes)}
        else:
            raise ParameterError(_OWNER, "classes", classes, "None, a list of folder names or a {folder: label} mapping")
        missing = [c for c in out if c not in folders]
        if missing:
            raise ParameterError(_OWNER, "classes", classes, f"names of class folders of {self.clean_root}",
                                 hint=f"Missing: {_names(missing)}.")
        return out

    def _file_labels(self, matched, classes) -> tuple[dict[PurePosixPath, int], list[str] | None]:
        table = read_pair_labels(self.labels_file)  # type: ignore[arg-type]
        text: dict[PurePosixPath, str] = {}
        missing = []
        for c, a in matched:
            for cand in (str(c), c.name, str(c.with_suffix("")), c.stem, str(a), a.name, str(a.with_suffix("")), a.stem):
                if cand in table:
                    text[c] = table[cand]
                    break
            else:
                missing.append(str(c))
        if missing:
            raise DatasetFormatError(
                f"{self.labels_file}: no label for {len(missing)} of {len(matched)} pair(s) ({_names(missing)}). "
                "Add a line 'name label' for each (the clean image's relative path, file name or stem).")
        values = set(text.values())
        if all(v.lstrip("-").isdigit() for v in values) and classes is None:
            return {c: int(v) for c, v in text.items()}, None
        if classes is None:
            names = sorted(values)
            idx = {n: i for i, n in enumerate(names)}
        elif isinstance(classes, Mapping):
            idx, names = {str(k): int(v) for k, v in classes.items()}, None
        elif isinstance(classes, Sequence) and not isinstance(classes, str):
            names = [str(c) for c in classes]
            idx = {n: i for i, n in enumerate(names)}
        else:
            raise ParameterError(_OWNER, "classes", classes, "None, a list of class names or a {name: label} mapping")
        out = {}
        for c, v in text.items():
            if v in idx:
                out[c] = idx[v]
            elif v.lstrip("-").isdigit():
                out[c] = int(v)
            else:
                raise DatasetFormatError(
                    f"{self.labels_file}: the label {v!r} of {c} is neither an integer nor one of the classes "
                    f"({_names(sorted(idx))}). Fix the labels file or pass classes= with that name.")
        if isinstance(classes, Mapping):
            names = [n for n, _ in sorted(idx.items(), key=lambda kv: kv[1])]
        return out, names

    # ------------------------------------------------------------------ items
    def _load(self, path: Path) -> torch.Tensor:
        if self.size is not None:
            return ImageFolderDataset.load_image(self, path)  # type: ignore[arg-type]  # uses only .size
        Image = _pil_image()
        with Image.open(path) as im:
            arr = np.asarray(im.convert("RGB"), dtype=np.uint8).copy()
        return torch.from_numpy(arr).permute(2, 0, 1).float().div_(255.0).contiguous()

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        c, a, y = self.pairs[i]
        return self._load(c), self._load(a), y

    @property
    def targets(self) -> list[int]:
        """The label of every pair, in order."""
        return [y for _, _, y in self.pairs]

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(x0 (N, 3, S, S), x_adv (N, 3, S, S), y (N,))``."""
        items = [self[i] for i in range(len(self))]
        if not items:
            raise DatasetFormatError(f"{self.root}: no image pairs")
        shapes = sorted({tuple(t.shape) for a, b, _ in items for t in (a, b)})
        if len(shapes) > 1:
            raise DatasetFormatError(f"{self.root}: the images have different sizes ({_names(shapes)}) and cannot be "
                                     "stacked; pass size= a crop side (e.g. 224) instead of the original size.")
        return (torch.stack([a for a, _, _ in items]), torch.stack([b for _, b, _ in items]),
                torch.as_tensor([c for _, _, c in items], dtype=torch.long))

    def __repr__(self) -> str:
        return (f"PairsFolder(clean={str(self.clean_root)!r}, adversarial={str(self.adversarial_root)!r}, "
                f"pairs={len(self)}, match={self.match!r}, skipped={sum(map(len, self.skipped.values()))})")
