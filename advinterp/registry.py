"""The component registry, filled by the plugins' ``advinterp_register_*`` hooks.

Use the module-level functions::

    import advinterp
    pgd = advinterp.get_attack("pgd", eps=8/255)
    model = advinterp.get_model("synthetic-cnn")
    for info in advinterp.list_components("analyzer"): print(info.name, info.plugin)

Unknown names raise :class:`UnknownComponentError` listing close matches; two plugins
registering the same name raise :class:`DuplicateComponentError` naming both.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, replace
from typing import Any

import pluggy

import torch

from .components import Analyzer, Attack, Explainer, Probe
from .exceptions import AdvinterpError, DuplicateComponentError, ParameterError, UnknownComponentError
from .kinds import KIND_NAMES, kind as _kind
from .plugins import PluginStatus, create_plugin_manager, register_plugin

__all__ = ["KINDS", "ComponentInfo", "Registry", "get_registry", "reload_plugins", "register_plugin_object",
           "is_building", "get_attack", "get_explainer", "get_analyzer", "get_probe", "get_support", "get_dataset",
           "get_model", "list_components", "list_plugins", "get_ablation_backend", "get_executor"]

#: Kind names (the rows of :data:`advinterp.kinds.KINDS`).
KINDS: tuple[str, ...] = KIND_NAMES


@dataclass(frozen=True)
class ComponentInfo:
    """One registered component: ``kind``, ``name``, the class or factory ``obj``, the
    ``plugin`` that registered it and a one-line ``description``."""

    kind: str
    name: str
    obj: Any
    plugin: str
    description: str = ""


def _describe(obj: Any) -> str:
    doc = (getattr(obj, "__doc__", None) or "").strip().splitlines()
    return doc[0].strip() if doc else ""


class Registry:
    """Components by kind and name, collected from a plugin manager."""

    def __init__(self, pm: pluggy.PluginManager, statuses: list[PluginStatus]):
        self.pm = pm
        self._statuses = list(statuses)
        self._items: dict[str, dict[str, ComponentInfo]] = {k: {} for k in KINDS}
        self._collect()

    # ------------------------------------------------------------------ collection
    def _collect(self) -> None:
        self._items = {k: {} for k in KINDS}
        failed: dict[str, str] = {}
        for kind in KINDS:
            hook = getattr(self.pm.hook, _kind(kind).hook)
            # pluggy lists hookimpls last-registered first; register in plugin order
            for impl in reversed(hook.get_hookimpls()):
                plugin = impl.plugin_name
                if plugin in failed:
                    continue
                added: list[str] = []

                def register(obj: Any, name: str | None = None, *, _kind=kind, _plugin=plugin, _added=added) -> None:
                    info = self._make_info(_kind, obj, name, _plugin)
                    self._add(info)
                    _added.append(info.name)

                try:
                    impl.function(register)
                except DuplicateComponentError:
                    raise
                except Exception as e:  # a broken plugin hook must not break the others
                    for n in added:
                        self._items[kind].pop(n, None)
                    failed[plugin] = f"{type(e).__name__} in advinterp_register_{kind}s: {e}"
        if failed:
            for plugin, err in failed.items():
                for k in KINDS:  # drop everything the failed plugin registered
                    for n in [n for n, i in self._items[k].items() if i.plugin == plugin]:
                        del self._items[k][n]
                self._statuses = [replace(s, loaded=False, error=err, hint="report it to the plugin's authors")
                                  if s.name == plugin else s for s in self._statuses]

    def _make_info(self, kind: str, obj: Any, name: str | None, plugin: str) -> ComponentInfo:
        base = _kind(kind).base
        if base is not None:
            if not (isinstance(obj, type) and issubclass(obj, base)):
                raise ParameterError(f"plugin {plugin!r}", "component", obj,
                                     f"a subclass of advinterp.{base.__name__} for {_kind(kind).hook}")
            name = name or obj.name
            if not name:
                raise ParameterError(f"plugin {plugin!r}", "name", name,
                                     f"a non-empty name (set {obj.__name__}.name or pass name=)")
            return ComponentInfo(kind, name, obj, plugin, obj.describe())
        if not callable(obj) or not name:
            raise ParameterError(f"plugin {plugin!r}", "register", (obj, name),
                                 f"register(factory, name) with a callable factory for {kind}s")
        return ComponentInfo(kind, name, obj, plugin, _describe(obj))

    def _add(self, info: ComponentInfo) -> None:
        existing = self._items[info.kind].get(info.name)
        if existing is not None:
            raise DuplicateComponentError(info.kind, info.name, existing.plugin, info.plugin)
        self._items[info.kind][info.name] = info

    # ------------------------------------------------------------------ queries
    @property
    def plugins(self) -> list[PluginStatus]:
        return list(self._statuses)

    def unavailable(self) -> dict[str, str]:
        return {s.name: s.error or "" for s in self._statuses if not s.loaded}

    def has(self, kind: str, name: str) -> bool:
        """Whether a component ``name`` of ``kind`` is registered (e.g. an optional plugin's)."""
        self.list(kind)  # validates kind
        return name in self._items[kind]

    def info(self, kind: str, name: str) -> ComponentInfo:
        if kind not in KINDS:
            raise ParameterError("advinterp registry", "kind", kind, f"one of {', '.join(KINDS)}")
        try:
            return self._items[kind][name]
        except KeyError:
            raise UnknownComponentError(kind, name, self._items[kind], self.unavailable()) from None

    def create(self, kind: str, name: str, **params: Any) -> Any:
        """Instantiate component ``name`` of ``kind`` with ``params``."""
        info = self.info(kind, name)
        obj = info.obj(**params)
        if kind == "model":
            from .model import ModelAdapter

            if not isinstance(obj, ModelAdapter):
                raise AdvinterpError(f"model factory {name!r} of plugin {info.plugin!r} returned "
                                     f"{type(obj).__name__}, not a ModelAdapter.")
        return obj

    def list(self, kind: str | None = None) -> list[ComponentInfo]:
        kinds = KINDS if kind is None else (kind,)
        for k in kinds:
            if k not in KINDS:
                raise ParameterError("list_components", "kind", k, f"one of {', '.join(KINDS)} or None")
        return [self._items[k][n] for k in kinds for n in sorted(self._items[k])]


_lock = threading.Lock()
_registry: Registry | None = None


def is_building() -> bool:
    """True while the registry is being built (plugins' hooks are running): code reached
    from a plugin's import or registration hook must not ask for the registry then."""
    return _lock.locked()


def get_registry() -> Registry:
    """The process-wide registry (built on first use)."""
    global _registry
    with _lock:
        if _registry is None:
            _registry = Registry(*create_plugin_manager())
        return _registry


def reload_plugins() -> Registry:
    """Rebuild the registry (re-reads entry points and ``ADVINTERP_DISABLE_PLUGINS``)."""
    global _registry
    with _lock:
        _registry = Registry(*create_plugin_manager())
        return _registry


def register_plugin_object(plugin: Any, name: str) -> Registry:
    """Register an in-process plugin (a module or object with hookimpls) and rebuild.

    Handy in notebooks and tests; installed plugins use the ``advinterp`` entry point.
    """
    reg = get_registry()
    register_plugin(reg.pm, plugin, name)
    with _lock:
        try:
            reg.__init__(reg.pm, reg.plugins + [PluginStatus(name, "in-process", True)])
        except Exception:
            reg.pm.unregister(name=name)
            reg.__init__(reg.pm, [s for s in reg.plugins if s.name != name])
            raise
    return reg


def get_attack(name: str, **params: Any) -> Attack:
    """An :class:`Attack` instance: ``get_attack("pgd", eps=8/255)``."""
    return get_registry().create("attack", name, **params)


def get_explainer(name: str, **params: Any) -> Explainer:
    """An :class:`Explainer` instance."""
    return get_registry().create("explainer", name, **params)


def get_analyzer(name: str, **params: Any) -> Analyzer:
    """An :class:`Analyzer` instance."""
    return get_registry().create("analyzer", name, **params)


def get_probe(name: str, **params: Any) -> Probe:
    """A :class:`~advinterp.components.Probe` instance: ``get_probe("accuracy")``."""
    return get_registry().create("probe", name, **params)


def get_support(name: str) -> Any:
    """A support rule of refined attacks: ``get_support("S1")(model, batch, **context)``."""
    return get_registry().info("support", name).obj


def get_dataset(name: str, **params: Any) -> Any:
    """A dataset from a registered factory: ``get_dataset("synthetic", n=1000, split="test")``."""
    return get_registry().create("dataset", name, **params)


def get_model(name: str, **params: Any):
    """A :class:`~advinterp.model.ModelAdapter`: ``get_model("synthetic-cnn")``."""
    return get_registry().create("model", name, **params)


def list_components(kind: str | None = None) -> list[ComponentInfo]:
    """Registered components (of one ``kind`` or all), sorted by kind then name."""
    return get_registry().list(kind)


def list_plugins() -> list[PluginStatus]:
    """Every plugin seen, loaded or not (with the reason)."""
    return get_registry().plugins




def get_ablation_backend(device: torch.device | str = "cpu"):
    """The grid-ablation backend the plugins choose for ``device`` (firstresult hook
    ``advinterp_grid_ablation_backend``; the core's pure-PyTorch reference answers last)."""
    return get_registry().pm.hook.advinterp_grid_ablation_backend(device=torch.device(device))


def get_executor(engine: str = "local", **options: Any):
    """The study executor for ``engine`` (firstresult hook ``advinterp_study_executor``; the
    core's in-process executor answers ``"local"`` last). ``options`` (e.g. ``address`` of
    ``--address``) go to the executor's ``configure(**options)``; one without it takes none."""
    ex = get_registry().pm.hook.advinterp_study_executor(engine=engine)
    if ex is None:
        fix = ("The ray engine comes with the advinterp-ray plugin: pip install -e plugins/advinterp-ray "
               "(it installs ray). " if engine == "ray" else "")
        raise ParameterError("advinterp", "engine", engine, "an engine a loaded plugin provides ('local' is built in)",
                             fix + "Install the plugin that provides it; `advinterp list` shows the loaded plugins.")
    options = {k: v for k, v in options.items() if v is not None}
    if options:
        configure = getattr(ex, "configure", None)
        if configure is None:
            name = sorted(options)[0]
            raise ParameterError(f"engine {engine!r}", name, options[name], "no option: this engine takes none",
                                 "Leave it out, or pick an engine that takes it (e.g. --engine ray --address ADDR "
                                 "with the advinterp-ray plugin).")
        configure(**options)
    return ex


# Result.load reaches the plugins (whose result types it may need) through this callable
# instead of importing the registry, which sits above it.
from . import results as _results  # noqa: E402

_results.plugin_loader = list_plugins
