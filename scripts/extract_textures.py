"""Extract the texture crops the synthetic world uses from scikit-image's bundled images.

Run once at development time (scikit-image is not a runtime dependency):

    python scripts/extract_textures.py

Writes ``advinterp/datasets/assets/textures.npz`` with three 256x256 uint8 arrays
(``brick``, ``grass``, ``gravel``): the 512x512 originals of ``skimage.data`` averaged
2x2. The originals are public-domain / CC0 images shipped with scikit-image.
"""
from pathlib import Path

import numpy as np
import skimage.data

OUT = Path(__file__).resolve().parents[1] / "advinterp" / "datasets" / "assets" / "textures.npz"


def main() -> None:
    arrays = {}
    for name in ("brick", "grass", "gravel"):
        img = getattr(skimage.data, name)().astype(np.float64)
        small = img.reshape(256, 2, 256, 2).mean(axis=(1, 3))
        arrays[name] = np.round(small).astype(np.uint8)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(OUT, **arrays)
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
