"""The embedded synthetic world: seeded scenes with classes, attributes, concepts and boxes.

Every image is a single object (a body shape with a colour and a texture, plus optional
parts: head, legs, tail) on a textured background scene. Classes are defined AwA/CUB-style
by a binary class-attribute vector over :data:`ATTRIBUTES`; some classes differ in a single
attribute (fine-grained pairs), others share few.

Each rendered scene also carries

* per-pixel concept masks in Broden's pixel-level categories ``color``, ``object``,
  ``part`` and ``texture`` (global concept ids, 0 = unlabelled);
* an image-level ``scene`` concept (as in Broden, where scenes are image-level labels);
* boxes for the object and its parts, with attribute labels.

Rendering is deterministic: scene ``i`` of split ``s`` under seed ``k`` is drawn from
``numpy.random.default_rng([k, split_id(s), i])``, so any subset can be regenerated
independently and in any order.

Example::

    world = SyntheticWorld(size=64, seed=0)
    batch = world.generate(16, split="test")      # SceneBatch
    x, y = batch.tensors()                        # (16, 3, 64, 64) float in [0,1], (16,)
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

__all__ = [
    "ATTRIBUTES",
    "CLASSES",
    "CONCEPTS",
    "PIXEL_CATEGORIES",
    "CATEGORIES",
    "Box",
    "Concept",
    "Scene",
    "SceneBatch",
    "SyntheticWorld",
    "SyntheticDataset",
]

#: Binary attributes that define the classes (``group:value``), AwA/CUB style.
ATTRIBUTES: tuple[str, ...] = (
    "shape:disk", "shape:block", "shape:triangle", "shape:diamond",
    "color:red", "color:green", "color:blue", "color:yellow",
    "texture:striped", "texture:dotted", "texture:checkered", "texture:plain",
    "part:head", "part:legs", "part:tail",
    "size:large",
)

# name: (shape, colour, texture, head, legs, tail, large)
_CLASS_TABLE: tuple[tuple[str, str, str, str, int, int, int, int], ...] = (
    ("tabby", "block", "yellow", "striped", 1, 1, 1, 1),
    ("cheetah", "block", "yellow", "dotted", 1, 1, 1, 1),      # fine-grained pair with tabby
    ("kite", "triangle", "red", "plain", 1, 0, 1, 0),
    ("finch", "triangle", "red", "plain", 1, 1, 1, 0),         # fine-grained pair with kite
    ("jay", "diamond", "blue", "checkered", 1, 0, 1, 0),
    ("tit", "diamond", "blue", "striped", 1, 0, 1, 0),         # fine-grained pair with jay
    ("turtle", "disk", "green", "checkered", 1, 1, 0, 1),
    ("frog", "disk", "green", "dotted", 1, 1, 0, 0),
    ("sun", "disk", "yellow", "plain", 0, 0, 0, 1),
    ("crate", "block", "blue", "plain", 0, 0, 0, 1),
    ("ladybird", "disk", "red", "dotted", 1, 1, 0, 0),
    ("cactus", "triangle", "green", "striped", 0, 0, 0, 1),
)

#: Class names, index = class label.
CLASSES: tuple[str, ...] = tuple(row[0] for row in _CLASS_TABLE)

#: Broden's concept categories. ``scene`` is image-level, the others pixel-level.
CATEGORIES: tuple[str, ...] = ("color", "object", "part", "scene", "texture")
PIXEL_CATEGORIES: tuple[str, ...] = ("color", "object", "part", "texture")

_RGB = {  # base colours of the object colours and background tints
    "red": (205, 45, 40), "green": (45, 165, 60), "blue": (40, 80, 210),
    "yellow": (230, 200, 40), "black": (30, 28, 26),
    "brown": (140, 95, 60), "olive": (105, 115, 55), "grey": (128, 128, 128),
    "lightblue": (150, 190, 235),
}
_SCENES = {  # scene -> (background texture or None, tint colour name)
    "brickyard": ("brick", "brown"),
    "meadow": ("grass", "olive"),
    "quarry": ("gravel", "grey"),
    "sky": (None, "lightblue"),
}
_BG_TEXTURE_LABEL = {"brick": "bricked", "grass": "grassy", "gravel": "gravelly"}

_CONCEPT_NAMES: dict[str, tuple[str, ...]] = {
    "color": ("red", "green", "blue", "yellow", "black", "brown", "olive", "grey", "lightblue"),
    "object": CLASSES,
    "part": ("head", "legs", "tail"),
    "scene": tuple(_SCENES),
    "texture": ("striped", "dotted", "checkered", "bricked", "grassy", "gravelly"),
}


@dataclass(frozen=True)
class Concept:
    """One Broden-style concept label: a global ``id`` (>=1), a ``name`` and its ``category``."""

    id: int
    name: str
    category: str


def _build_concepts() -> tuple[Concept, ...]:
    out, nid = [], 1
    for cat in CATEGORIES:
        for name in _CONCEPT_NAMES[cat]:
            out.append(Concept(nid, name, cat))
            nid += 1
    return tuple(out)


#: The global concept vocabulary (Broden ``label.csv`` numbering; 0 means unlabelled).
CONCEPTS: tuple[Concept, ...] = _build_concepts()
_CID = {(c.category, c.name): c.id for c in CONCEPTS}

_SPLIT_IDS = {"train": 0, "val": 1, "test": 2}


@dataclass(frozen=True)
class Box:
    """An axis-aligned box ``(x1, y1, x2, y2)`` in pixels (x2/y2 exclusive).

    ``category`` is ``"object"`` or ``"part"``; ``name`` the class or part name;
    ``attributes`` the visual attributes of what the box holds (``group:value`` strings).
    """

    xyxy: tuple[int, int, int, int]
    name: str
    category: str
    attributes: tuple[str, ...]


@dataclass
class Scene:
    """One rendered scene.

    Attributes:
        image: ``(H, W, 3)`` uint8 RGB.
        label: class index into :data:`CLASSES`.
        masks: ``{category: (H, W) int32}`` global concept ids per pixel for each of
            :data:`PIXEL_CATEGORIES` (0 = no concept of that category).
        scene: global concept id of the image-level scene label.
        boxes: the object box first, then its part boxes.
    """

    image: np.ndarray
    label: int
    masks: dict[str, np.ndarray]
    scene: int
    boxes: list[Box]

    @property
    def class_name(self) -> str:
        return CLASSES[self.label]


@dataclass
class SceneBatch:
    """``N`` scenes stacked.

    Attributes:
        images: ``(N, H, W, 3)`` uint8.
        labels: ``(N,)`` int64 class indices.
        masks: ``{category: (N, H, W) int16}`` concept ids per pixel.
        scenes: ``(N,)`` int64 image-level scene concept ids.
        boxes: ``N`` lists of :class:`Box`.
    """

    images: np.ndarray
    labels: np.ndarray
    masks: dict[str, np.ndarray]
    scenes: np.ndarray
    boxes: list[list[Box]]

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> Scene:
        return Scene(self.images[i], int(self.labels[i]),
                     {k: v[i].astype(np.int32) for k, v in self.masks.items()},
                     int(self.scenes[i]), self.boxes[i])

    def tensors(self, device=None):
        """Return ``(x, y)``: ``(N, 3, H, W)`` float32 pixels in [0, 1] and ``(N,)`` int64 labels."""
        import torch

        x = torch.from_numpy(self.images).permute(0, 3, 1, 2).float().div_(255.0)
        y = torch.from_numpy(self.labels.astype(np.int64))
        if device is not None:
            x, y = x.to(device), y.to(device)
        return x.contiguous(), y


def _load_textures() -> dict[str, np.ndarray]:
    path = Path(__file__).with_name("assets") / "textures.npz"
    with np.load(path) as data:
        return {k: data[k].astype(np.float32) / 255.0 for k in data.files}


class SyntheticWorld:
    """A seeded generator of RGB scenes.

    Args:
        size: image side in pixels (default 64; everything scales with it, >= 24).
        seed: world seed (default 0). Same seed, split and index give the same scene.
        noise: std of the additive Gaussian pixel noise, in [0, 1] units (default 0.02).
    """

    classes = CLASSES
    attributes = ATTRIBUTES
    concepts = CONCEPTS
    categories = CATEGORIES

    def __init__(self, size: int = 64, seed: int = 0, noise: float = 0.02):
        from ..exceptions import ParameterError

        if not isinstance(size, (int, np.integer)) or size < 24:
            raise ParameterError("SyntheticWorld", "size", size, "an integer >= 24")
        if not (0.0 <= float(noise) <= 0.5):
            raise ParameterError("SyntheticWorld", "noise", noise, "a float in [0, 0.5]")
        self.size = int(size)
        self.seed = int(seed)
        self.noise = float(noise)
        s = self.size
        self._yy, self._xx = np.mgrid[0:s, 0:s].astype(np.float32)

    # ------------------------------------------------------------------ vocabulary
    @cached_property
    def class_attributes(self) -> np.ndarray:
        """``(n_classes, n_attributes)`` binary float32 class-attribute matrix."""
        mat = np.zeros((len(CLASSES), len(ATTRIBUTES)), dtype=np.float32)
        idx = {a: i for i, a in enumerate(ATTRIBUTES)}
        for c, (_, shape, colour, texture, head, legs, tail, large) in enumerate(_CLASS_TABLE):
            for a in (f"shape:{shape}", f"color:{colour}", f"texture:{texture}"):
                mat[c, idx[a]] = 1
            for a, on in (("part:head", head), ("part:legs", legs), ("part:tail", tail),
                          ("size:large", large)):
                mat[c, idx[a]] = on
        return mat

    @staticmethod
    def concept_id(category: str, name: str) -> int:
        """Global concept id of ``name`` in ``category`` (raises ``KeyError`` if unknown)."""
        return _CID[(category, name)]

    @cached_property
    def _textures(self) -> dict[str, np.ndarray]:
        return _load_textures()

    # ------------------------------------------------------------------ rendering
    def _rng(self, split: str, index: int) -> np.random.Generator:
        from ..exceptions import ParameterError

        if split not in _SPLIT_IDS:
            raise ParameterError("SyntheticWorld", "split", split, f"one of {sorted(_SPLIT_IDS)}")
        return np.random.default_rng([self.seed, _SPLIT_IDS[split], int(index)])

    def render(self, index: int, split: str = "train", label: int | None = None) -> Scene:
        """Render scene ``index`` of ``split``. Its class is ``index % n_classes`` unless
        ``label`` is given."""
        rng = self._rng(split, index)
        label = int(index % len(CLASSES) if label is None else label)
        name, shape, colour, texture, head, legs, tail, large = _CLASS_TABLE[label]
        s, xx, yy = self.size, self._xx, self._yy
        u = s / 64.0  # unit: one pixel at the default size

        # --- background scene
        scene_name = list(_SCENES)[int(rng.integers(len(_SCENES)))]
        tex_name, tint = _SCENES[scene_name]
        tint_rgb = np.array(_RGB[tint], np.float32) / 255.0
        if tex_name is None:
            grad = np.linspace(0.8, 1.15, s, dtype=np.float32)[:, None, None]
            img = np.broadcast_to(tint_rgb * grad, (s, s, 3)).copy()
        else:
            tex = self._textures[tex_name]
            crop = int(min(tex.shape[0], max(16, round(64 * 1.0))))
            oy, ox = rng.integers(0, tex.shape[0] - crop + 1, size=2)
            sel = (np.arange(s) * crop) // s
            patch = tex[oy + sel][:, ox + sel]
            shade = 0.55 + 0.9 * (patch - patch.mean())
            img = tint_rgb[None, None, :] * shade[:, :, None] + 0.0
        img *= np.float32(rng.uniform(0.85, 1.15))

        # --- object geometry
        r = (rng.uniform(13.0, 15.0) if large else rng.uniform(9.0, 11.0)) * u
        cx = rng.uniform(1.6 * r, s - 1.6 * r)
        cy = rng.uniform(1.3 * r, s - 1.5 * r)
        facing = 1.0 if rng.random() < 0.5 else -1.0  # head on the right or left
        dx, dy = xx - cx, yy - cy
        if shape == "disk":
            body = dx * dx + dy * dy <= r * r
        elif shape == "block":
            body = np.maximum(np.abs(dx), np.abs(dy)) <= 0.85 * r
        elif shape == "triangle":
            body = (dy >= -r) & (dy <= 0.8 * r) & (np.abs(dx) <= (dy + r) * 0.62)
        else:  # diamond
            body = np.abs(dx) + np.abs(dy) <= 1.1 * r

        base = np.array(_RGB[colour], np.float32) / 255.0
        base = np.clip(base + rng.normal(0, 0.04, 3).astype(np.float32), 0, 1)
        period = rng.uniform(5.5, 7.0) * u
        phase = rng.uniform(0, period)
        if texture == "striped":
            dark = ((dx + dy * rng.uniform(-0.3, 0.3) + phase) % period) < period * 0.45
        elif texture == "dotted":
            gx = ((dx + phase) % period) - period / 2
            gy = ((dy + phase) % period) - period / 2
            dark = gx * gx + gy * gy <= (0.28 * period) ** 2
        elif texture == "checkered":
            dark = ((np.floor((dx + phase) / period) + np.floor((dy + phase) / period)) % 2) == 1
        else:
            dark = np.zeros_like(body)
        body_rgb = np.where(dark[:, :, None], base * 0.45, base)
        img = np.where(body[:, :, None], body_rgb, img)

        masks = {c: np.zeros((s, s), np.int32) for c in PIXEL_CATEGORIES}
        # background colour / texture
        masks["color"][:] = _CID[("color", tint)]
        if tex_name is not None:
            masks["texture"][:] = _CID[("texture", _BG_TEXTURE_LABEL[tex_name])]

        obj = body.copy()
        boxes: list[Box] = []
        parts: list[tuple[str, np.ndarray, str]] = []
        if tail:
            tx = dx * facing
            m = (tx <= -0.75 * r) & (tx >= -1.55 * r) & (np.abs(dy + 0.15 * r) <= 0.14 * r + 0.6 * u)
            parts.append(("tail", m & ~body, colour))
        if legs:
            lx = np.abs(dx)
            m = (lx >= 0.3 * r) & (lx <= 0.55 * r) & (dy >= 0.75 * r) & (dy <= 1.4 * r)
            parts.append(("legs", m & ~body, "black"))
        if head:
            hx, hy = cx + facing * 0.95 * r, cy - 0.8 * r
            hr = 0.42 * r
            m = (xx - hx) ** 2 + (yy - hy) ** 2 <= hr * hr
            parts.append(("head", m, colour))
        for pname, m, pcol in parts:
            rgb = base if pcol == colour else np.array(_RGB[pcol], np.float32) / 255.0
            if pname == "head":
                rgb = np.clip(rgb * 1.12, 0, 1)
            img = np.where(m[:, :, None], rgb, img)
            obj |= m
            masks["part"][m] = _CID[("part", pname)]
            masks["color"][m] = _CID[("color", pcol)]
            masks["texture"][m] = 0
        visible_body = body & (masks["part"] == 0)
        masks["color"][visible_body] = _CID[("color", colour)]
        masks["texture"][visible_body] = (_CID[("texture", texture)] if texture != "plain" else 0)
        masks["object"][obj] = _CID[("object", name)]

        cls_attrs = tuple(a for a, on in zip(ATTRIBUTES, self.class_attributes[label]) if on)
        boxes.append(Box(_bbox(obj), name, "object", cls_attrs))
        for pname, m, pcol in sorted(parts, key=lambda p: p[0]):
            if m.any():
                boxes.append(Box(_bbox(m), pname, "part", (f"color:{pcol}",)))

        if self.noise > 0:
            img = img + rng.normal(0, self.noise, img.shape).astype(np.float32)
        image = np.clip(np.round(img * 255.0), 0, 255).astype(np.uint8)
        return Scene(image, label, masks, _CID[("scene", scene_name)], boxes)

    def generate(self, n: int, split: str = "train", start: int = 0,
                 progress: bool = False) -> SceneBatch:
        """Render scenes ``start .. start+n-1`` of ``split`` into a :class:`SceneBatch`."""
        from ..exceptions import ParameterError
        from ..progress import progress_bar

        if not isinstance(n, (int, np.integer)) or n < 0:
            raise ParameterError("SyntheticWorld.generate", "n", n, "a non-negative integer")
        s = self.size
        images = np.empty((n, s, s, 3), np.uint8)
        labels = np.empty(n, np.int64)
        masks = {c: np.empty((n, s, s), np.int16) for c in PIXEL_CATEGORIES}
        scenes = np.empty(n, np.int64)
        boxes: list[list[Box]] = []
        for j in progress_bar(range(n), desc=f"rendering {split}", disable=not progress):
            sc = self.render(start + j, split)
            images[j], labels[j], scenes[j] = sc.image, sc.label, sc.scene
            for c in PIXEL_CATEGORIES:
                masks[c][j] = sc.masks[c]
            boxes.append(sc.boxes)
        return SceneBatch(images, labels, masks, scenes, boxes)

    def __iter__(self) -> Iterator[Scene]:  # pragma: no cover - convenience
        i = 0
        while True:
            yield self.render(i)
            i += 1

    def __repr__(self) -> str:
        return f"SyntheticWorld(size={self.size}, seed={self.seed}, noise={self.noise})"


def _bbox(mask: np.ndarray) -> tuple[int, int, int, int]:
    ys, xs = np.nonzero(mask)
    return (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)


class SyntheticDataset:
    """A ``torch.utils.data.Dataset``-compatible view of ``n`` scenes of one split.

    Items are ``(x, y)`` with ``x`` a ``(3, size, size)`` float32 tensor in [0, 1] and
    ``y`` the int class label. The scenes are rendered once, on first access.

    Args:
        n: number of scenes (default 1000).
        split: ``"train"``, ``"val"`` or ``"test"`` (default ``"test"``).
        size: image side (default 64).
        seed: world seed (default 0).
    """

    def __init__(self, n: int = 1000, split: str = "test", size: int = 64, seed: int = 0):
        self.world = SyntheticWorld(size=size, seed=seed)
        self.n, self.split = int(n), split
        self.world._rng(split, 0)  # validates split early

    @cached_property
    def scenes(self) -> SceneBatch:
        return self.world.generate(self.n, self.split)

    @cached_property
    def _tensors(self):
        return self.scenes.tensors()

    @property
    def classes(self) -> Sequence[str]:
        return CLASSES

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i):
        x, y = self._tensors
        return x[i], int(y[i])

    def tensors(self):
        """All items at once: ``(N, 3, H, W)`` float32 and ``(N,)`` int64."""
        return self._tensors
