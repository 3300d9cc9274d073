"""Write the 1000 ImageNet-1k class names shipped with advinterp.

Run once at development time (torchvision is not needed at runtime for the names):

    python scripts/extract_imagenet_classes.py

Writes ``advinterp/datasets/assets/imagenet_classes.txt``: one human-readable class name per
line, in class-index order (line ``i`` = class ``i``), taken from torchvision's
``torchvision.models._meta._IMAGENET_CATEGORIES`` (the names its ImageNet weights report).
WordNet ids are not included: no offline copy of the wnid list ships with torchvision.
"""
from pathlib import Path

from torchvision.models._meta import _IMAGENET_CATEGORIES

OUT = Path(__file__).resolve().parents[1] / "advinterp" / "datasets" / "assets" / "imagenet_classes.txt"


def main() -> None:
    names = list(_IMAGENET_CATEGORIES)
    if len(names) != 1000:
        raise SystemExit(f"expected 1000 ImageNet categories, torchvision has {len(names)}")
    for i, name in enumerate(names):
        if not name or "\n" in name or name != name.strip():
            raise SystemExit(f"class {i} has an unusable name: {name!r}")
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text("\n".join(names) + "\n", encoding="utf-8")
    print(f"wrote {OUT} ({len(names)} classes, {OUT.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
