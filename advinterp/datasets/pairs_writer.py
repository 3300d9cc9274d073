"""Export clean/adversarial pairs to disk: :func:`build_pairs`.

Runs any registered attack over a clean dataset and writes the pairs in the layout
:class:`~advinterp.datasets.pairs.PairsFolder` reads::

    root/clean/<class>/<index>.png         8-bit RGB PNG of the clean image
    root/adversarial/<class>/<index>.png   8-bit RGB PNG of its adversarial example
    root/manifest.json                     what was run and what is done

``<index>`` is the item's position in the dataset (6 digits), ``<class>`` the dataset's class
name of its label (``data.classes``) or the label itself (``0003``). The work is cut into
shards of ``shard_size`` consecutive items; a shard's images are written first, then the
shard is recorded in the manifest (atomically), so an interrupted build resumes at the first
shard not recorded. A manifest of another attack, parameters, model, seed, dataset, start,
shard size or class names is an error: such a folder is not extended with different pairs.

``manifest.json`` fields: ``format`` (``"advinterp-pairs/1"``), ``attack``, ``params`` (the
attack's parameters), ``seed``, ``model`` (name) and ``model_fingerprint`` (sha256 of its
weights, :func:`advinterp.model_fingerprint`), ``data`` (a description of the dataset),
``start``, ``shard_size``, ``size`` (``[C, H, W]``), ``classes`` (class folder names in label
order), ``targeted`` and ``shards``: ``{"<k>": {"start", "count", "success", "success_rate",
"clean_correct"}}`` (success measured on the *8-bit quantised* images, as saved), plus the
totals ``n``, ``success`` and ``success_rate`` over the shards done.

Example::

    import advinterp
    from advinterp.datasets.pairs_writer import build_pairs

    pairs = build_pairs("pgd", "synthetic-cnn", advinterp.get_dataset("synthetic", n=64),
                        "pairs/pgd", params={"eps": 8 / 255}, shard_size=32)
    x0, x_adv, y = pairs.tensors()
"""
from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from ..exceptions import DatasetFormatError, ParameterError
from .pairs import MANIFEST, PairsFolder

__all__ = ["build_pairs", "read_manifest", "quantize", "FORMAT"]

#: The ``format`` field of the manifests this module writes.
FORMAT = "advinterp-pairs/1"
_OWNER = "build_pairs"
#: Manifest fields that must be equal for a rerun to add to a folder.
_IDENTITY = ("attack", "params", "seed", "model_fingerprint", "data", "start", "shard_size", "size", "targeted",
             "classes")


def quantize(x: torch.Tensor) -> torch.Tensor:
    """``(N, C, H, W)`` in [0, 1] -> the same images as 8-bit PNGs hold them (``round(255 x) / 255``)."""
    return x.detach().float().clamp(0, 1).mul(255).round().div(255)


def _png(x: torch.Tensor) -> bytes:
    """One ``(C, H, W)`` image in [0, 1] (C = 1 or 3) as 8-bit PNG bytes (deterministic)."""
    from .imagenet import _pil_image

    arr = x.detach().float().clamp(0, 1).mul(255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    im = _pil_image().fromarray(arr[..., 0] if arr.shape[2] == 1 else arr, mode="L" if arr.shape[2] == 1 else "RGB")
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


def _jsonable(v: Any) -> Any:
    if isinstance(v, Mapping):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, (torch.Tensor, np.ndarray)):
        return _jsonable(v.tolist())
    if isinstance(v, (np.integer, np.floating, np.bool_)):
        return v.item()
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    return repr(v)


def _describe_data(data: Any, name: str | None, params: Mapping[str, Any] | None) -> dict[str, Any]:
    if name is not None:
        return {"name": name, "params": _jsonable(dict(params or {}))}
    out: dict[str, Any] = {"type": f"{type(data).__module__}.{type(data).__qualname__}", "len": len(data)}
    for attr in ("split", "seed", "size", "root"):
        v = getattr(data, attr, None)
        if isinstance(v, (bool, int, float, str, Path)):
            out[attr] = str(v) if isinstance(v, Path) else v
    world = getattr(data, "world", None)  # the synthetic world: its seed and image size
    for attr in ("seed", "size"):
        v = getattr(world, attr, None)
        if isinstance(v, (int, float, str)) and attr not in out:
            out[attr] = v
    return out


def read_manifest(root: str | Path) -> dict[str, Any] | None:
    """The manifest of a pairs folder built by :func:`build_pairs` (``None`` when it has none)."""
    f = Path(root).expanduser() / MANIFEST
    if not f.is_file():
        return None
    try:
        m = json.loads(f.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise DatasetFormatError(f"{f}: not a readable pairs manifest ({e}). Move the folder away and build "
                                 "again, or pick another output folder.") from None
    if not isinstance(m, dict) or m.get("format") != FORMAT:
        raise DatasetFormatError(f"{f}: not a manifest of build_pairs (format {FORMAT!r}). Pick another "
                                 "output folder.")
    return m


def _class_names(data: Any, classes: Sequence[str] | None) -> list[str] | None:
    names = classes if classes is not None else getattr(data, "classes", None)
    if names is None:
        return None
    names = [str(c) for c in names]
    bad = [c for c in names if not c or "/" in c or "\\" in c or c.startswith(".")]
    if bad or len(set(names)) != len(names):
        raise ParameterError(_OWNER, "classes", names, "distinct class names usable as folder names "
                             "(no '/', not starting with '.')", f"Bad: {bad[:3] or 'repeated names'}.")
    return names


def build_pairs(attack: Any, model: Any, data: Any, root: str | Path, *,
                params: Mapping[str, Any] | None = None, model_params: Mapping[str, Any] | None = None,
                data_params: Mapping[str, Any] | None = None, shard_size: int = 64, seed: int = 0,
                n: int | None = None, start: int = 0, classes: Sequence[str] | None = None,
                batch_size: int = 256, progress: bool = True) -> PairsFolder:
    """Attack ``data`` with ``attack`` on ``model`` and write the pairs under ``root``.

    Args:
        attack: an :class:`~advinterp.Attack` instance, or a registered attack name (built
            with ``params``). A targeted attack gets random targets (seeded).
        model: a :class:`~advinterp.ModelAdapter` / ``nn.Module``, or a registered model name
            (built with ``model_params``). It is never changed (attacks run under
            ``ModelAdapter.preserved``; the fingerprint is checked after each shard).
        data: a map-style dataset of ``(x (C, H, W) in [0, 1], y)`` items (C = 1 or 3), or a
            registered dataset name (built with ``data_params``).
        root: the output folder (created; an existing build of the same run is resumed).
        params: the attack's parameters when ``attack`` is a name (default none).
        model_params, data_params: the model's / dataset's parameters when given by name.
        shard_size: items per shard, the unit of resumption (default 64).
        seed: seeds the attack's randomness (``torch.manual_seed(seed * 1_000_003 + shard)``
            around each shard) and the random targets; the same seed gives the same files.
        n: how many items from ``start`` (default: all the rest). A rerun with a larger
            ``n`` adds shards; a shard recorded with fewer items than it now needs is redone.
        start: the first item (default 0).
        classes: class folder names in label order (default ``data.classes``, else the
            4-digit label, ``0000`` ... for the model's classes).
        batch_size: batch of the success-rate predictions (default 256).
        progress: show a bar over the shards (default True; off where progress is disabled).

    Returns:
        The :class:`~advinterp.datasets.pairs.PairsFolder` of ``root`` (``size="original"``).

    Raises:
        ParameterError: a bad argument. DatasetFormatError: ``root`` holds the manifest of a
        different build (the message names the fields that differ).
    """
    from ..components import Attack, as_adapter, load_items
    from ..data import random_targets
    from ..model import model_fingerprint
    from ..progress import progress_bar
    from ..registry import get_attack, get_dataset, get_model
    from ..results import atomic_write

    for name, v, lo in (("shard_size", shard_size, 1), ("seed", seed, 0), ("start", start, 0),
                        ("batch_size", batch_size, 1)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
            raise ParameterError(_OWNER, name, v, f"an integer >= {lo}")
    if n is not None and (isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0):
        raise ParameterError(_OWNER, "n", n, "None (all items) or an integer >= 0")
    if isinstance(attack, str):
        attack = get_attack(attack, **dict(params or {}))
    elif params:
        raise ParameterError(_OWNER, "params", params, "None when attack is an instance",
                             "Set the instance's parameters, or pass the attack's name with params=.")
    if not isinstance(attack, Attack):
        raise ParameterError(_OWNER, "attack", attack, "an Attack instance or a registered attack name")
    model_name = model if isinstance(model, str) else None
    adapter = as_adapter(get_model(model, **dict(model_params or {})) if isinstance(model, str) else model)
    data_name = data if isinstance(data, str) else None
    if isinstance(data, str):
        data = get_dataset(data, **dict(data_params or {}))
    total = len(data)
    if start > total:
        raise ParameterError(_OWNER, "start", start, f"at most the dataset's length {total}")
    stop = total if n is None else min(total, start + int(n))
    if stop <= start:
        raise ParameterError(_OWNER, "n", n, "at least one item to attack",
                             f"start={start} n={n} selects none of the dataset's {total} items.")
    names = _class_names(data, classes) or [f"{i:04d}" for i in range(int(adapter.nb_classes))]
    x_first, _ = load_items(data, [start], _OWNER)
    size = [int(s) for s in x_first.shape[1:]]
    if len(size) == 3 and size[0] not in (1, 3):
        raise ParameterError(_OWNER, "data", f"images of shape {tuple(size)}", "1- or 3-channel images (PNG)")

    fp0 = model_fingerprint(adapter)
    ident = {
        "attack": attack.name or type(attack).__name__, "params": _jsonable(attack.get_params()), "seed": int(seed),
        "model_fingerprint": fp0["weights"], "data": _describe_data(data, data_name, data_params),
        "start": int(start), "shard_size": int(shard_size), "size": size,
        "targeted": bool(getattr(attack, "targeted", False)), "classes": names,
    }
    root = Path(root).expanduser()
    manifest = read_manifest(root)
    if manifest is not None:
        diff = [k for k in _IDENTITY if manifest.get(k) != ident[k]]
        if diff:
            shown = "; ".join(f"{k}: folder {manifest.get(k)!r} vs now {ident[k]!r}" for k in diff)
            raise DatasetFormatError(
                f"{root / MANIFEST}: this folder holds pairs of a different build ({shown}). Build into another "
                "folder (--out), or delete this one to rebuild it.")
    else:
        manifest = {"format": FORMAT, **ident, "model": model_name or getattr(adapter, "name", None) or
                    type(adapter.module).__name__, "shards": {}}
    root.mkdir(parents=True, exist_ok=True)

    def folder(y: int) -> str:
        if not 0 <= y < len(names):
            raise ParameterError(_OWNER, "classes", names, f"a name for every label (label {y} has none)")
        return names[y]

    def record() -> None:
        done = manifest["shards"].values()
        manifest["n"] = sum(s["count"] for s in done)
        manifest["success"] = sum(s["success"] for s in done)
        manifest["success_rate"] = manifest["success"] / manifest["n"] if manifest["n"] else None
        atomic_write(root / MANIFEST, (json.dumps(manifest, indent=1) + "\n").encode())

    firsts = list(range(start, stop, shard_size))
    for a in progress_bar(firsts, desc=f"pairs {ident['attack']}", total=len(firsts),
                          disable=None if progress else True):
        k = (a - start) // shard_size
        b = min(a + shard_size, stop)
        prev = manifest["shards"].get(str(k))
        if prev is not None and prev["count"] >= b - a:
            continue
        idx = list(range(a, b))
        x, y = load_items(data, idx, _OWNER)
        shard_seed = int(seed) * 1_000_003 + k
        t = None
        if ident["targeted"]:
            y_t = y if y is not None else adapter.predict(x.to(adapter.device)).cpu()
            t = random_targets(y_t, adapter.nb_classes, torch.Generator().manual_seed(shard_seed))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(shard_seed)
            batch = attack.generate(adapter, x, y, t)
        x0q, xaq = quantize(batch.x0), quantize(batch.x_adv)
        ys = batch.y_true.cpu()
        with adapter.preserved():
            pred0 = torch.cat([adapter.predict(x0q[i:i + batch_size].to(adapter.device, adapter.dtype)).cpu()
                               for i in range(0, len(idx), batch_size)])
            pred = torch.cat([adapter.predict(xaq[i:i + batch_size].to(adapter.device, adapter.dtype)).cpu()
                              for i in range(0, len(idx), batch_size)])
        success = (pred == batch.y_target.cpu()) if batch.y_target is not None else (pred != ys)
        for j, i in enumerate(idx):
            rel = Path(folder(int(ys[j]))) / f"{i:06d}.png"
            atomic_write(root / "clean" / rel, _png(x0q[j]))
            atomic_write(root / "adversarial" / rel, _png(xaq[j]))
        if model_fingerprint(adapter)["weights"] != fp0["weights"]:  # pragma: no cover - guards attacks
            raise DatasetFormatError(f"{_OWNER}: the attack {ident['attack']!r} changed the model's weights; "
                                     f"the pairs of shard {k} were written but not recorded. Report the attack.")
        manifest["shards"][str(k)] = {"start": a, "count": len(idx), "success": int(success.sum()),
                                      "success_rate": float(success.float().mean()) if len(idx) else None,
                                      "clean_correct": int((pred0 == ys).sum())}
        manifest["shards"] = dict(sorted(manifest["shards"].items(), key=lambda kv: int(kv[0])))
        record()
    if not (root / MANIFEST).is_file():
        record()
    for side in ("clean", "adversarial"):
        (root / side).mkdir(exist_ok=True)
    return PairsFolder(root, size="original")
