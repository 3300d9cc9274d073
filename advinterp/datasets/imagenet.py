"""ImageNet, offline: the 1000 class names and an ImageNet-style folder reader.

Neither needs torchvision: the class names ship as ``assets/imagenet_classes.txt``
(written by ``scripts/extract_imagenet_classes.py``), and images are read with PIL.

Example::

    names = imagenet_classes()                 # ("tench", "goldfish", ...)
    ds = ImageFolderDataset("~/data/imagenet/val", size=224)
    x, y = ds[0]                               # (3, 224, 224) float32 in [0, 1], int
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import torch

from ..exceptions import MissingDependencyError, ParameterError

__all__ = ["imagenet_classes", "ImageFolderDataset", "IMAGE_EXTENSIONS"]

#: File name endings :class:`ImageFolderDataset` reads (case-insensitive).
IMAGE_EXTENSIONS: tuple[str, ...] = (".jpeg", ".jpg", ".png")

_CLASSES_FILE = Path(__file__).with_name("assets") / "imagenet_classes.txt"


@lru_cache(maxsize=1)
def imagenet_classes() -> tuple[str, ...]:
    """The 1000 ImageNet-1k class names in class-index order (``[0] == "tench"``)."""
    lines = _CLASSES_FILE.read_text(encoding="utf-8").splitlines()
    names = tuple(ln.strip() for ln in lines if ln.strip())
    if len(names) != 1000:  # pragma: no cover - guards a broken install
        raise RuntimeError(f"{_CLASSES_FILE} holds {len(names)} class names, expected 1000; "
                           f"regenerate it with scripts/extract_imagenet_classes.py")
    return names


def _pil_image():
    try:
        from PIL import Image
    except ImportError as exc:  # pragma: no cover - pillow is installed in dev
        raise MissingDependencyError("pillow", "Reading image folders") from exc
    return Image


class ImageFolderDataset:
    """A ``torch.utils.data.Dataset``-compatible reader of ``root/<class folder>/<image>``.

    Images (``.jpeg``, ``.jpg``, ``.png``, any case) are read lazily with PIL, converted to
    RGB, resized so the shorter side is ``int(size * 256 / 224)`` (bilinear, antialiased) and
    center-cropped to ``size`` -- the standard ImageNet evaluation transform, without
    normalisation. Items are ``(x, y)``: ``x`` a ``(3, size, size)`` float32 tensor in
    [0, 1], ``y`` the int class index.

    Args:
        root: the folder holding one sub-folder per class (WordNet ids or class names).
        size: side of the square crop (default 224).
        classes: which class folders to read, and their labels. ``None`` (default): every
            sub-folder, labelled by its position in sorted order. A sequence of folder names:
            those folders, labelled by their position in the sequence. A mapping
            ``{folder: label}``: those folders with the given labels (e.g. ImageNet indices).

    Attributes:
        classes: the class folder names (sorted when ``classes`` was ``None`` or a mapping).
        class_to_idx: ``{folder name: label}``.
        samples: ``[(image path, label), ...]`` in folder, then file-name order.
    """

    def __init__(self, root: str | Path, size: int = 224,
                 classes: Sequence[str] | Mapping[str, int] | None = None):
        owner = "ImageFolderDataset"
        if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1:
            raise ParameterError(owner, "size", size, "a positive integer")
        self.root = Path(root).expanduser()
        self.size = int(size)
        if not self.root.is_dir():
            raise ParameterError(owner, "root", str(root),
                                 f"an existing folder with one sub-folder of images per class "
                                 f"({self.root} does not exist or is not a folder)")
        folders = sorted(p.name for p in self.root.iterdir() if p.is_dir() and not p.name.startswith("."))
        if classes is None:
            self.class_to_idx = {name: i for i, name in enumerate(folders)}
        elif isinstance(classes, Mapping):
            self.class_to_idx = {str(k): int(v) for k, v in sorted(classes.items())}
        elif isinstance(classes, Sequence) and not isinstance(classes, str):
            if len(set(classes)) != len(classes):
                raise ParameterError(owner, "classes", classes, "folder names without repeats")
            self.class_to_idx = {str(name): i for i, name in enumerate(classes)}
        else:
            raise ParameterError(owner, "classes", classes,
                                 "None, a sequence of folder names or a {folder: label} mapping")
        missing = [c for c in self.class_to_idx if c not in folders]
        if missing:
            raise ParameterError(owner, "classes", classes,
                                 f"names of sub-folders of {self.root}",
                                 hint=f"Missing: {', '.join(missing[:10])}"
                                      f"{' ...' if len(missing) > 10 else ''}.")
        self.classes: list[str] = list(self.class_to_idx)
        self.samples: list[tuple[Path, int]] = []
        for name, label in self.class_to_idx.items():
            files = sorted(p for p in (self.root / name).iterdir()
                           if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
            self.samples.extend((p, label) for p in files)
        if not self.samples:
            raise ParameterError(owner, "root", str(root),
                                 f"a folder with class sub-folders holding "
                                 f"{'/'.join(e[1:] for e in IMAGE_EXTENSIONS)} images",
                                 hint=f"Found {len(self.classes)} class folder(s) in {self.root} "
                                      f"but no images in them.")

    @property
    def targets(self) -> list[int]:
        """The label of every sample, in order."""
        return [label for _, label in self.samples]

    def __len__(self) -> int:
        return len(self.samples)

    def load_image(self, path: str | Path) -> torch.Tensor:
        """Read ``path`` and apply the resize + center crop; ``(3, size, size)`` float32 in [0, 1]."""
        Image = _pil_image()
        with Image.open(path) as im:
            im = im.convert("RGB")
            w, h = im.size
            short = int(self.size * 256 / 224)
            if w <= h:
                new_w, new_h = short, max(1, int(short * h / w))
            else:
                new_w, new_h = max(1, int(short * w / h)), short
            if (new_w, new_h) != (w, h):
                im = im.resize((new_w, new_h), getattr(Image, "Resampling", Image).BILINEAR)
            top = int(round((new_h - self.size) / 2.0))
            left = int(round((new_w - self.size) / 2.0))
            im = im.crop((left, top, left + self.size, top + self.size))
            arr = np.asarray(im, dtype=np.uint8).copy()
        return torch.from_numpy(arr).permute(2, 0, 1).float().div_(255.0).contiguous()

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        path, label = self.samples[i]
        return self.load_image(path), label

    def __repr__(self) -> str:
        return (f"ImageFolderDataset(root={str(self.root)!r}, size={self.size}, "
                f"classes={len(self.classes)}, images={len(self.samples)})")
