"""Loading the compiled modules, and why they are missing when they are.

``_C`` (op schemas + CPU kernels) and ``_C_cuda`` (CUDA kernels) are imported once, here;
importing them registers the ``advinterp_gridablate::ablate`` / ``::scatter_mean`` /
``::crop`` / ``::paste`` / ``::crop_paste`` kernels
with torch's dispatcher. :data:`STATE` says what loaded and, for what did not, why (from the
import error and from ``_build_info.json``, which ``setup.py`` writes at build time).
"""
from __future__ import annotations

import importlib
import json
import os
from dataclasses import dataclass, field
from typing import Callable

import torch

PACKAGE = __name__.rsplit(".", 1)[0]
NAMESPACE = "advinterp_gridablate"
OPS = ("ablate", "scatter_mean")
#: the window ops of the incremental executor (crop / paste): optional for the backend, so a
#: module built before they existed still serves ablate / scatter_mean (see window_device_types)
WINDOW_OPS = ("crop", "paste")
#: the fused window op (crop then paste into the window, one pass): optional on top of WINDOW_OPS
#: (a module built before it existed serves crop / paste; see fused_device_types)
FUSED_OPS = ("crop_paste",)
#: torch device type -> dispatch key of the kernels
DISPATCH_KEYS = {"cpu": "CPU", "cuda": "CUDA"}
REBUILD = "pip install --no-build-isolation -e plugins/advinterp-gridablate (needs a C++ compiler and torch installed)"


@dataclass(frozen=True)
class ExtensionState:
    """What the compiled modules provide in this process.

    Attributes:
        available: the op schemas and the CPU kernels are loaded (``_C`` imported).
        reason: why not (``None`` when available).
        cuda: the CUDA kernels are loaded (``_C_cuda`` imported).
        cuda_reason: why not (``None`` when loaded).
        build_info: the contents of ``_build_info.json`` (``{}`` if absent).
    """

    available: bool
    reason: str | None = None
    cuda: bool = False
    cuda_reason: str | None = None
    build_info: dict = field(default_factory=dict)

    def device_types(self) -> tuple[str, ...]:
        """Device types with a compiled kernel of both ops, e.g. ``("cpu", "cuda")``."""
        if not self.available:
            return ()
        return tuple(d for d, key in DISPATCH_KEYS.items()
                     if all(torch._C._dispatch_has_kernel_for_dispatch_key(f"{NAMESPACE}::{op}", key) for op in OPS))

    def window_device_types(self) -> tuple[str, ...]:
        """Device types with a compiled kernel of ``crop`` and ``paste`` (a subset of
        :meth:`device_types`; smaller only for a module built from older sources)."""
        if not self.available or not all(has_op(op) for op in WINDOW_OPS):
            return ()
        return tuple(d for d in self.device_types()
                     if all(torch._C._dispatch_has_kernel_for_dispatch_key(f"{NAMESPACE}::{op}", DISPATCH_KEYS[d])
                            for op in WINDOW_OPS))

    def fused_device_types(self) -> tuple[str, ...]:
        """Device types with a compiled kernel of ``crop_paste`` (a subset of
        :meth:`window_device_types`; smaller only for a module built from older sources)."""
        if not all(has_op(op) for op in FUSED_OPS):
            return ()
        return tuple(d for d in self.window_device_types()
                     if all(torch._C._dispatch_has_kernel_for_dispatch_key(f"{NAMESPACE}::{op}", DISPATCH_KEYS[d])
                            for op in FUSED_OPS))

    def __str__(self) -> str:
        if not self.available:
            return f"unavailable: {self.reason}"
        cuda = "CUDA kernels loaded" if self.cuda else f"CUDA kernels not loaded ({self.cuda_reason})"
        return f"compiled kernels for {', '.join(self.device_types()) or 'no device'}; {cuda}"


def has_op(name: str) -> bool:
    """Whether the schema ``advinterp_gridablate::<name>`` is registered (by a loaded ``_C``)."""
    try:
        torch._C._dispatch_find_schema_or_throw(f"{NAMESPACE}::{name}", "")
    except RuntimeError:
        return False
    return True


def read_build_info(directory: str | None = None) -> dict:
    """``_build_info.json`` of the package directory (``{}`` if absent or unreadable)."""
    path = os.path.join(directory or os.path.dirname(os.path.abspath(__file__)), "_build_info.json")
    try:
        with open(path) as f:
            info = json.load(f)
        return info if isinstance(info, dict) else {}
    except (OSError, ValueError):
        return {}


def _why(module: str, error: BaseException, info: dict) -> str:
    built = info.get("modules", {}).get(module, {})
    err = f"{type(error).__name__}: {error}"
    if isinstance(error, ModuleNotFoundError) and error.name == f"{PACKAGE}.{module}":
        if built and not built.get("built", False):
            return f"{PACKAGE}.{module} was not built: {built.get('reason', 'unknown reason')}"
        return f"{PACKAGE}.{module} was not built (no compiled module found)"
    if info.get("torch") and info["torch"] != torch.__version__:
        return (f"{PACKAGE}.{module} was built for torch {info['torch']} but torch {torch.__version__} is "
                f"installed ({err})")
    return f"{PACKAGE}.{module} failed to load ({err})"


def load(importer: Callable[[str], object] = importlib.import_module, info: dict | None = None) -> ExtensionState:
    """Import the compiled modules with ``importer`` and describe the result."""
    info = read_build_info() if info is None else info
    try:
        importer(f"{PACKAGE}._C")
    except Exception as e:  # ImportError, or an OSError/undefined symbol from the loader
        return ExtensionState(False, f"{_why('_C', e, info)}; rebuild with {REBUILD}",
                              cuda_reason="needs the CPU module", build_info=info)
    try:
        importer(f"{PACKAGE}._C_cuda")
    except Exception as e:
        return ExtensionState(True, cuda=False, cuda_reason=_why("_C_cuda", e, info), build_info=info)
    return ExtensionState(True, cuda=True, build_info=info)


#: The state of this process (read it through :func:`advinterp_gridablate.status`).
STATE: ExtensionState = load()
