"""Torchvision ImageNet classifiers, loaded offline.

Nothing here downloads. :func:`load_torchvision_model` builds the architecture with random
initialisation and then loads weights from

* a file you name (``weights=PATH``: a ``state_dict``, or a dict holding one under
  ``"state_dict"`` or ``"model"``; a ``"module."`` prefix from ``DataParallel`` is stripped),
* torchvision's own cache, ``<torch hub dir>/checkpoints/`` (``weights=None``), where
  ``torchvision.models.resnet50(weights="IMAGENET1K_V1")`` would have stored the file on a
  machine with network access, or
* nowhere (``weights="random"``: keep the random initialisation, e.g. for benchmarks;
  ``seed=`` (default 0) makes it reproducible).

Example::

    model = load_torchvision_model("resnet50")            # cached ImageNet weights
    feature_layer, linear_layer = cam_layer_of("resnet50")  # ("layer4", "fc")
"""
from __future__ import annotations

import difflib
import os
import re
from pathlib import Path
from typing import Any, Mapping

import torch

from ..exceptions import AdvinterpError, MissingDependencyError, ParameterError

__all__ = [
    "TORCHVISION_ARCHS",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "load_torchvision_model",
    "cam_layer_of",
    "torchvision_checkpoint_names",
    "WeightsNotFoundError",
]

#: Per-channel mean and std of ImageNet pixels in [0, 1] (inputs of torchvision models).
IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)

# arch -> (CAM feature layer, CAM linear layer or None, final classification layer)
# The final layer is used to infer ``num_classes`` of fine-tuned checkpoints.
_ARCH_TABLE: dict[str, tuple[str, str | None, str]] = {
    **{a: ("layer4", "fc", "fc") for a in (
        "resnet18", "resnet34", "resnet50", "resnet101", "resnet152",
        "wide_resnet50_2", "wide_resnet101_2", "resnext50_32x4d", "resnext101_32x8d")},
    **{a: ("features", None, "classifier.6") for a in (
        "alexnet", "vgg11", "vgg13", "vgg16", "vgg19", "vgg11_bn", "vgg13_bn", "vgg16_bn", "vgg19_bn")},
    **{a: ("features", "classifier", "classifier") for a in (
        "densenet121", "densenet161", "densenet169", "densenet201")},
    "googlenet": ("inception5b", "fc", "fc"),
    "inception_v3": ("Mixed_7c", "fc", "fc"),
    "mobilenet_v2": ("features", "classifier.1", "classifier.1"),
    "mobilenet_v3_small": ("features", None, "classifier.3"),
    "mobilenet_v3_large": ("features", None, "classifier.3"),
    **{f"efficientnet_b{i}": ("features", "classifier.1", "classifier.1") for i in range(8)},
    "shufflenet_v2_x1_0": ("conv5", "fc", "fc"),
    "squeezenet1_1": ("features", None, "classifier.1"),
}

#: Supported torchvision classification architectures (all built by ``torchvision.models.<arch>``).
TORCHVISION_ARCHS: tuple[str, ...] = tuple(_ARCH_TABLE)

_OWNER = "load_torchvision_model"
_DENSENET_KEY = re.compile(
    r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var|num_batches_tracked))$"
)


def _torchvision_models():
    try:
        import torchvision.models as tvm
    except ImportError as exc:  # pragma: no cover - torchvision is installed in dev
        raise MissingDependencyError("torchvision", "Loading torchvision ImageNet models") from exc
    return tvm


def _check_arch(arch: Any) -> str:
    if isinstance(arch, str) and arch.lower() in _ARCH_TABLE:
        return arch.lower()
    close = difflib.get_close_matches(str(arch).lower(), TORCHVISION_ARCHS, n=4, cutoff=0.5)
    hint = f"Did you mean {', '.join(repr(c) for c in close)}?" if close else None
    raise ParameterError(_OWNER, "arch", arch, f"one of {', '.join(TORCHVISION_ARCHS)}", hint=hint)


def cam_layer_of(arch: str) -> tuple[str, str | None]:
    """``(feature layer, linear layer)`` module names for Class Activation Mapping.

    The feature layer is the last convolutional stage, whose output is global-average-pooled
    and fed to the linear layer. The linear layer is ``None`` for architectures without a
    GAP + single linear head (VGG, AlexNet, MobileNetV3, SqueezeNet): use gradient-based CAM
    variants on the feature layer there. Note that DenseNet applies a ReLU after ``features``
    before pooling, so apply one to that layer's output too.
    """
    feature, linear, _ = _ARCH_TABLE[_check_arch(arch)]
    return feature, linear


def torchvision_checkpoint_names(arch: str) -> tuple[str, ...]:
    """File names torchvision stores ``arch``'s ImageNet classification weights under
    (e.g. ``("resnet50-0676ba61.pth", "resnet50-11ad3fa6.pth")``), known offline."""
    arch = _check_arch(arch)
    enum = _weights_enum(arch)
    if enum is None:
        return ()
    return tuple(os.path.basename(w.url) for w in enum if w.name.startswith("IMAGENET1K_V"))


def _weights_enum(arch: str):
    tvm = _torchvision_models()
    try:
        return tvm.get_model_weights(arch)
    except (ValueError, KeyError, AttributeError):  # pragma: no cover - very old torchvision
        return None


def _checkpoint_dir() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints"


def _find_cached(arch: str) -> Path | None:
    folder = _checkpoint_dir()
    if not folder.is_dir():
        return None
    found = {p for p in folder.glob(f"{arch}-*.pth") if p.is_file()}
    found |= {folder / n for n in torchvision_checkpoint_names(arch) if (folder / n).is_file()}
    return sorted(found)[0] if found else None


class WeightsNotFoundError(AdvinterpError, FileNotFoundError):
    """No weights file for a torchvision model was found offline (the message says how to get one)."""


def _missing_weights_error(arch: str, weights: Any) -> WeightsNotFoundError:
    folder = _checkpoint_dir()
    names = (f"{arch}-*.pth",) + tuple(n for n in torchvision_checkpoint_names(arch)
                                       if not n.startswith(f"{arch}-"))
    if weights is None:
        what = (f"{_OWNER}: no ImageNet weights for {arch!r} in the torch hub checkpoints "
                f"folder {folder}/ (looked for {', '.join(names)}).")
    else:
        what = f"{_OWNER}: weights file {str(weights)!r} for {arch!r} does not exist."
    enum = _weights_enum(arch)
    member = getattr(enum, "IMAGENET1K_V1", None) if enum is not None else None
    if member is not None:
        url = member.url
        fname = os.path.basename(url)
        how = (
            f" Nothing is downloaded automatically. On a machine with network access, download "
            f"torchvision.models.{enum.__name__}.IMAGENET1K_V1 once from {url} "
            f"(e.g. `curl -L -o {fname} {url}`), then copy {fname} into {folder}/ "
            f"(set TORCH_HOME to use another place) or pass weights='/path/to/{fname}'. "
            f"Use weights='random' for an untrained model."
        )
    else:  # pragma: no cover - every supported arch has IMAGENET1K_V1
        how = (
            f" Put a torchvision checkpoint named '{arch}-<hash>.pth' into {folder}/ or pass "
            f"weights=PATH. Use weights='random' for an untrained model."
        )
    return WeightsNotFoundError(what + how)


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # UnpicklingError, RuntimeError (corrupt zip), EOFError, ...
        raise ParameterError(
            _OWNER, "weights", str(path), "a file saved with torch.save(model.state_dict(), path)",
            hint=f"Reading it with torch.load(weights_only=True) failed: {type(exc).__name__}: "
                 f"{str(exc).splitlines()[0] if str(exc) else ''}. If it holds a pickled model, "
                 f"re-save its state_dict.",
        ) from exc
    if isinstance(obj, Mapping):
        for key in ("state_dict", "model"):
            if key in obj and isinstance(obj[key], Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not obj or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()):
        raise ParameterError(
            _OWNER, "weights", str(path),
            "a state_dict (str -> tensor), or a dict holding one under 'state_dict' or 'model'",
        )
    return {(k[len("module."):] if k.startswith("module.") else k): v for k, v in obj.items()}


def _fix_legacy_keys(arch: str, sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    if arch.startswith("densenet"):  # torchvision's old DenseNet checkpoints use 'norm.1' keys
        sd = {(_DENSENET_KEY.sub(r"\1\2", k)): v for k, v in sd.items()}
    return sd


def load_torchvision_model(arch: str, weights: str | Path | None = None, seed: int = 0) -> torch.nn.Module:
    """Build torchvision's ``arch`` and load its weights offline; returned in eval mode.

    Args:
        arch: one of :data:`TORCHVISION_ARCHS` (case-insensitive).
        weights: ``None`` (default): the first (sorted) torchvision checkpoint of ``arch``
            found in ``<torch.hub.get_dir()>/checkpoints/`` (``f"{arch}-*.pth"`` or the file
            name of one of its ``IMAGENET1K_V*`` weights). A path: a ``state_dict`` file
            (or a dict with ``"state_dict"``/``"model"``; ``"module."`` prefixes are stripped;
            ``num_classes`` is taken from the checkpoint's classification layer).
            ``"random"``: keep the random initialisation, drawn from ``seed``.
        seed: seeds the random initialisation of ``weights="random"`` (default 0): the same
            seed gives identical weights; the global torch RNG is left as it was. Ignored
            when weights are loaded.

    Raises:
        ParameterError: unknown ``arch``; a ``weights`` file that is not a matching ``state_dict``.
        WeightsNotFoundError: no weights found (the message says where to download them
            and where to put them).
    """
    arch = _check_arch(arch)
    tvm = _torchvision_models()
    builder = getattr(tvm, arch)
    kwargs: dict[str, Any] = {}
    if arch in ("inception_v3", "googlenet"):
        kwargs["init_weights"] = True

    if isinstance(weights, str) and weights == "random":
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ParameterError(_OWNER, "seed", seed, "an integer >= 0 (seeds weights='random')")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return builder(weights=None, **kwargs).eval()

    if weights is None:
        path = _find_cached(arch)
        if path is None:
            raise _missing_weights_error(arch, weights)
    elif isinstance(weights, (str, os.PathLike)):
        path = Path(weights).expanduser()
        if not path.is_file():
            raise _missing_weights_error(arch, weights)
    else:
        raise ParameterError(_OWNER, "weights", weights,
                             "a path to a state_dict file, None or 'random'")

    sd = _fix_legacy_keys(arch, _read_state_dict(path))
    head = _ARCH_TABLE[arch][2]
    head_w = sd.get(f"{head}.weight")
    if head_w is not None and head_w.ndim >= 2 and head_w.shape[0] != 1000:
        kwargs["num_classes"] = int(head_w.shape[0])
    if arch in ("inception_v3", "googlenet"):
        # torchvision's own ImageNet checkpoints expect the input re-normalisation.
        kwargs["transform_input"] = path.name in torchvision_checkpoint_names(arch)
        kwargs["init_weights"] = False  # overwritten by the checkpoint anyway
    model = builder(weights=None, **kwargs)
    if arch == "inception_v3" and not any(k.startswith("AuxLogits.") for k in sd):
        model.aux_logits, model.AuxLogits = False, None
    if arch == "googlenet" and not any(k.startswith(("aux1.", "aux2.")) for k in sd):
        model.aux_logits, model.aux1, model.aux2 = False, None, None

    try:
        model.load_state_dict(sd, strict=True)
    except RuntimeError as exc:
        lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
        detail = " ".join(lines[1:3]) if len(lines) > 1 else lines[0] if lines else ""
        if len(detail) > 400:
            detail = detail[:397] + "..."
        raise ParameterError(_OWNER, "weights", str(path), f"a state_dict of torchvision's {arch}",
                             hint=f"Loading it failed: {detail}") from exc
    if arch == "googlenet" and model.aux_logits:
        # Aux heads only matter for training; torchvision drops them for ImageNet inference too.
        model.aux_logits, model.aux1, model.aux2 = False, None, None
    return model.eval()
