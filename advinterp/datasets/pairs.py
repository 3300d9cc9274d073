"""Folders of precomputed clean/adversarial pairs (DAmageNet-style releases, other toolkits).

Layout: two ImageNet-style trees with the same relative paths::

    root/clean/<class>/<image>
    root/adversarial/<class>/<image>

Both are read with :class:`~advinterp.datasets.imagenet.ImageFolderDataset` (resize +
centre crop to ``size``); labels come from the class folders (sorted order, or a ``classes``
mapping as for image folders). A study names it as data (``pairs = "path"``) and uses its id
as an analyzer's ``batch``; the study makes an :class:`~advinterp.AdversarialBatch` of it
(``AdversarialBatch.from_pair`` with the study's model).
"""
from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import torch

from ..exceptions import DatasetFormatError
from .imagenet import ImageFolderDataset

__all__ = ["PairsFolder"]


class PairsFolder:
    """Clean/adversarial image pairs under ``root/clean`` and ``root/adversarial``.

    Args:
        root: the folder holding ``clean/`` and ``adversarial/``.
        size: crop side (default 224).
        classes: as for :class:`ImageFolderDataset` (default: the sorted class folders).

    Items are ``(x0, x_adv, y)``; :meth:`tensors` stacks all of them.
    """

    def __init__(self, root: str | Path, size: int = 224, classes: Sequence[str] | Mapping[str, int] | None = None):
        self.root = Path(root).expanduser()
        for sub in ("clean", "adversarial"):
            if not (self.root / sub).is_dir():
                raise DatasetFormatError(
                    f"{self.root}: no {sub}/ folder. A pairs folder holds clean/<class>/<image> and "
                    "adversarial/<class>/<image> with the same relative paths.")
        self.clean = ImageFolderDataset(self.root / "clean", size=size, classes=classes)
        self.adversarial = ImageFolderDataset(self.root / "adversarial", size=size, classes=classes)
        rel = [p.relative_to(self.clean.root) for p, _ in self.clean.samples]
        rel_adv = [p.relative_to(self.adversarial.root) for p, _ in self.adversarial.samples]
        if rel != rel_adv:
            missing = sorted(set(map(str, rel)) ^ set(map(str, rel_adv)))
            raise DatasetFormatError(
                f"{self.root}: clean/ and adversarial/ do not hold the same images ({len(rel)} vs {len(rel_adv)}; "
                f"e.g. {', '.join(missing[:3])} only on one side). Every image needs its pair under the same "
                "relative path.")
        self.classes = self.clean.classes

    def __len__(self) -> int:
        return len(self.clean)

    def __getitem__(self, i: int):
        x0, y = self.clean[i]
        xa, _ = self.adversarial[i]
        return x0, xa, y

    @property
    def targets(self) -> list[int]:
        return self.clean.targets

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(x0 (N, 3, S, S), x_adv (N, 3, S, S), y (N,))``."""
        items = [self[i] for i in range(len(self))]
        if not items:
            raise DatasetFormatError(f"{self.root}: no image pairs")
        return (torch.stack([a for a, _, _ in items]), torch.stack([b for _, b, _ in items]),
                torch.as_tensor([c for _, _, c in items], dtype=torch.long))
