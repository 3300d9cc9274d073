"""The plugin manager: built-in plugins first, then the ``advinterp`` entry-point group.

Entry-point plugins are imported one at a time. A plugin whose import (or whose
registration hook) fails is recorded as unavailable — with its error and an install
hint — and never breaks the others; ``advinterp list`` shows it.
``ADVINTERP_DISABLE_PLUGINS=a,b`` blocks plugins by name (built-in or entry point).
"""
from __future__ import annotations

import importlib
import importlib.metadata as md
import os
import traceback
from dataclasses import dataclass
from types import ModuleType
from typing import Iterable

import pluggy

from . import hookspecs

__all__ = ["ENTRY_POINT_GROUP", "BUILTIN_PLUGINS", "PluginStatus", "create_plugin_manager",
           "disabled_plugins", "install_hint"]

ENTRY_POINT_GROUP = "advinterp"
#: Modules of the core registered before any entry point: (plugin name, module path).
BUILTIN_PLUGINS: tuple[tuple[str, str], ...] = (
    ("builtins", "advinterp.builtins"),
)
# import name -> pip package, for install hints
_PIP_NAMES = {"art": "adversarial-robustness-toolbox", "sklearn": "scikit-learn", "skimage": "scikit-image",
              "captum": "captum", "torchvision": "torchvision", "cv2": "opencv-python", "PIL": "pillow",
              "yaml": "pyyaml", "pytorch_grad_cam": "grad-cam", "torchcam": "torchcam"}


@dataclass(frozen=True)
class PluginStatus:
    """What happened to one plugin: ``loaded`` or not, and why.

    Attributes:
        name: plugin name (entry-point name, or the built-in's name).
        source: ``"builtin"`` or ``"entry point <value> (<distribution> <version>)"``.
        loaded: True when its hooks are registered.
        error: why it is unavailable (``None`` when loaded).
        hint: what to do about it.
        disabled: True when blocked by ``ADVINTERP_DISABLE_PLUGINS``.
    """

    name: str
    source: str
    loaded: bool
    error: str | None = None
    hint: str | None = None
    disabled: bool = False


def disabled_plugins() -> set[str]:
    """Plugin names listed in ``ADVINTERP_DISABLE_PLUGINS`` (comma separated)."""
    raw = os.environ.get("ADVINTERP_DISABLE_PLUGINS", "")
    return {p.strip() for p in raw.split(",") if p.strip()}


def install_hint(error: BaseException, distribution: str | None) -> str:
    """A one-line suggestion for a plugin that failed to import.

    An exception that carries its own ``hint`` attribute (e.g. a compiled plugin whose
    extension was not built says how to rebuild it) wins over the generic suggestions.
    """
    own = getattr(error, "hint", None)
    if isinstance(own, str) and own:
        return own
    if isinstance(error, ModuleNotFoundError) and error.name:
        top = error.name.split(".")[0]
        pkg = _PIP_NAMES.get(top, top)
        return f"pip install {pkg}" + (f" (needed by {distribution})" if distribution else "")
    if distribution:
        return f"reinstall the plugin: pip install --force-reinstall {distribution}"
    return "check the plugin's installation"


def _entry_points() -> Iterable[md.EntryPoint]:
    """Entry points of the ``advinterp`` group (deduplicated by name, first wins)."""
    seen: set[str] = set()
    for ep in md.entry_points(group=ENTRY_POINT_GROUP):
        if ep.name not in seen:
            seen.add(ep.name)
            yield ep


def create_plugin_manager(load_entry_points: bool = True) -> tuple[pluggy.PluginManager, list[PluginStatus]]:
    """Build the ``PluginManager("advinterp")`` and load every plugin.

    Returns the manager and one :class:`PluginStatus` per plugin seen.
    """
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    blocked = disabled_plugins()
    statuses: list[PluginStatus] = []
    for name, modname in BUILTIN_PLUGINS:
        if name in blocked:
            pm.set_blocked(name)
            statuses.append(PluginStatus(name, "builtin", False, "disabled by ADVINTERP_DISABLE_PLUGINS",
                                         f"remove {name!r} from ADVINTERP_DISABLE_PLUGINS", True))
            continue
        pm.register(importlib.import_module(modname), name=name)
        statuses.append(PluginStatus(name, "builtin", True))
    if not load_entry_points:
        return pm, statuses
    for ep in _entry_points():
        dist = getattr(ep, "dist", None)
        dist_name = f"{dist.metadata['Name']}" if dist is not None else None
        source = f"entry point {ep.value}" + (f" ({dist_name} {dist.version})" if dist is not None else "")
        if ep.name in blocked:
            pm.set_blocked(ep.name)
            statuses.append(PluginStatus(ep.name, source, False, "disabled by ADVINTERP_DISABLE_PLUGINS",
                                         f"remove {ep.name!r} from ADVINTERP_DISABLE_PLUGINS", True))
            continue
        if pm.get_plugin(ep.name) is not None or pm.is_blocked(ep.name):
            continue
        try:
            plugin = ep.load()
            pm.register(plugin, name=ep.name)
            pm.check_pending()
        except Exception as e:  # an import or validation error must not break the others
            if pm.get_plugin(ep.name) is not None:
                pm.unregister(name=ep.name)
            err = "".join(traceback.format_exception_only(type(e), e)).strip()
            statuses.append(PluginStatus(ep.name, source, False, err, install_hint(e, dist_name)))
            continue
        statuses.append(PluginStatus(ep.name, source, True))
    return pm, statuses


def register_plugin(pm: pluggy.PluginManager, plugin: ModuleType | object, name: str) -> None:
    """Register an in-process plugin object (tests, notebooks) and validate its hooks."""
    pm.register(plugin, name=name)
    try:
        pm.check_pending()
    except Exception:
        pm.unregister(name=name)
        raise
