"""The Ray executor: a study's shards as tasks on Ray actors that receive each step's model once.

Per call of :meth:`RayExecutor.run` (one step, or one pass of a sharded probe) the arguments
that every shard shares -- the component, the :class:`~advinterp.api.ModelAdapter`, the
dataset, a probe's state -- are put in Ray's object store once (``ray.put``) and the shards
carry only references to them; an actor fetches each reference once and keeps the object
for the following shards of the step (it drops it when a shard of another step arrives).
The shards go to a pool of actors, one shard per idle actor at a time, and the driver calls
``done(task, result)`` as each finishes -- the study saves the partial result there and then,
in the run folder, exactly as the local engine does, so a run resumes on either engine.

Fault tolerance: the actors are restarted when their process dies (``max_restarts=-1``) and
the shard that was running is retried up to ``max_retries`` times (Ray's
``max_task_retries``); a shard that raises, or whose worker keeps dying, stops the step after
the shards in flight have finished and been saved, with an error naming the shard and the
worker's error.

Components and models whose classes live in a module the workers cannot import by name (a
test file, a notebook, a script: any module that is not part of an installed distribution)
are pickled by value (``ray.cloudpickle.register_pickle_by_value``); plugins registered only
in the driver (``advinterp.register_plugin_object``) are registered in each worker too.
"""
from __future__ import annotations

import importlib
import os
import pickle
import re
import socket
import sys
import types
from typing import Any, Callable, Sequence

from advinterp.api import (AdvinterpError, Component, MissingDependencyError, ModelAdapter, ParameterError,
                           ShardTask, get_registry, progress_bar)

__all__ = ["RayExecutor", "connect"]

INSTALL = "pip install -e plugins/advinterp-ray (it installs ray==2.60.0), or pip install ray==2.60.0"
OWNER = "advinterp-ray"
_PLAIN = (type(None), bool, int, float, str, bytes)


def _ray():
    try:
        import ray
    except ImportError:
        raise MissingDependencyError("ray", "the Ray engine (--engine ray)", INSTALL) from None
    return ray


def _host_port(address: Any) -> tuple[str, int] | None:
    """``(host, port)`` of an explicit address, None for None / ``"auto"`` / ``"local"``."""
    if address in (None, "auto", "local"):
        return None
    rest = address.split("://", 1)[1] if isinstance(address, str) and "://" in address else address
    host, sep, port = rest.rpartition(":") if isinstance(rest, str) else ("", "", "")
    if not sep or not port.isdigit() or not host:
        raise ParameterError(OWNER, "address", address, "a Ray head's HOST:PORT (e.g. 10.0.0.1:6379), "
                             "ray://HOST:10001, 'auto' or 'local'",
                             "Start a cluster with `ray start --head` and pass the address it prints.")
    return host.strip("[]"), int(port)


def _check_reachable(address: str, timeout: float = 5.0) -> None:
    """Fail fast, naming the fix, when nothing listens at ``host:port`` (Ray itself would
    retry for a minute before giving up)."""
    host, port = _host_port(address)
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as e:
        raise AdvinterpError(f"{OWNER}: no Ray cluster answers at address={address!r} ({e}). Start one with "
                             f"`ray start --head` (on that host) and pass the address it prints, or leave out "
                             f"--address to use $RAY_ADDRESS or start a local cluster.") from None


def connect(address: str | None = None, **init_kwargs: Any) -> bool:
    """Connect this process to Ray unless it already is; return True when this call did.

    ``address``: a head's ``HOST:PORT`` or ``ray://HOST:PORT``, ``"auto"`` (the cluster
    started on this machine with ``ray start``), ``"local"`` (a new local cluster), or None:
    ``"auto"`` when ``RAY_ADDRESS`` is set (Ray reads it), else a new local cluster.
    """
    ray = _ray()
    if address not in (None, "auto", "local"):
        _check_reachable(address)  # also when connected already: an explicit address must answer
    if ray.is_initialized():
        return False
    if address is None and os.environ.get("RAY_ADDRESS"):
        address = "auto"
    kwargs = {"log_to_driver": False, "logging_level": "WARNING", **init_kwargs}
    if address in (None, "local"):
        kwargs.setdefault("include_dashboard", False)
    try:
        ray.init(address=address, **kwargs)
    except (ConnectionError, RuntimeError, ValueError) as e:
        raise AdvinterpError(f"{OWNER}: could not connect to Ray at address={address!r}: {e}. Start a cluster "
                             f"with `ray start --head` and pass its address (--address HOST:6379), or leave out "
                             f"--address and unset RAY_ADDRESS to start a local cluster.") from None
    return True


def _installed_tops() -> set[str]:
    from importlib.metadata import packages_distributions

    return set(packages_distributions())


def _driver_only_modules(objects: Sequence[Any]) -> set[str]:
    """Modules of ``objects``' classes (and of the in-process plugins' components) that the
    workers cannot import by name: not ``__main__`` (pickled by value anyway), not part of
    an installed distribution."""
    tops = _installed_tops() | set(sys.builtin_module_names) | set(getattr(sys, "stdlib_module_names", ()))
    names = set()
    for obj in objects:
        for cls in type(obj).__mro__:
            names.add(cls.__module__)
    reg = get_registry()
    inproc = {s.name for s in reg.plugins if s.source == "in-process" and s.loaded}
    for info in reg.list():
        if info.plugin in inproc:
            names.add(getattr(info.obj, "__module__", None) or "")
    for name in inproc:
        plugin = reg.pm.get_plugin(name)
        if plugin is not None and not isinstance(plugin, types.ModuleType):
            names.add(type(plugin).__module__)
    return {n for n in names if n and n != "__main__" and n.split(".")[0] not in tops and n in sys.modules}


def _in_process_plugins() -> list[tuple[str, Any]]:
    """``(name, plugin or module name)`` of every plugin registered only in this process."""
    reg = get_registry()
    out = []
    for s in reg.plugins:
        if s.source == "in-process" and s.loaded:
            plugin = reg.pm.get_plugin(s.name)
            if plugin is not None:
                out.append((s.name, plugin.__name__ if isinstance(plugin, types.ModuleType) else plugin))
    return out


class _Shared:
    """A placeholder in a shard's arguments for the ``i``-th object the step shares."""

    __slots__ = ("i",)

    def __init__(self, i: int):
        self.i = i


class _Worker:
    """The actor: runs shards, fetching each shared object of a step once."""

    def __init__(self, plugins: list[tuple[str, Any]], device: str | None = None):
        os.environ.setdefault("ADVINTERP_PROGRESS", "0")
        self._device = device
        import advinterp

        reg = advinterp.get_registry()
        for name, plugin in plugins:
            if reg.pm.get_plugin(name) is not None:
                continue
            if isinstance(plugin, str):
                try:
                    plugin = importlib.import_module(plugin)
                except ImportError:
                    continue  # its components' classes travel by value; its hooks are not needed here
            advinterp.register_plugin_object(plugin, name)
        self._cache: dict[str, Any] = {}

    def ping(self) -> int:
        return os.getpid()

    def run(self, fn: Callable[..., Any], args: tuple, kwargs: dict, shared: list) -> Any:
        import ray

        wanted = {r.hex() for r in shared}
        self._cache = {k: v for k, v in self._cache.items() if k in wanted}  # drop the previous step's
        objs = []
        for r in shared:
            key = r.hex()
            if key not in self._cache:
                obj = ray.get(r)
                if self._device is not None and isinstance(obj, ModelAdapter):
                    obj.to(self._device)  # this actor's GPU (Ray set CUDA_VISIBLE_DEVICES)
                self._cache[key] = obj
            objs.append(self._cache[key])
        args = tuple(objs[a.i] if isinstance(a, _Shared) else a for a in args)
        kwargs = {k: objs[v.i] if isinstance(v, _Shared) else v for k, v in kwargs.items()}
        result = fn(*args, **kwargs)
        # pickled here, unpickled by the driver: its arrays come back writable (Ray's zero-copy
        # deserialization would hand back read-only numpy arrays); on a GPU actor through
        # torch.save, so that the driver maps any CUDA tensor of the result to its CPU
        if self._device is None:
            return ray.cloudpickle.dumps(result)
        import io

        import torch

        buf = io.BytesIO()
        torch.save(result, buf, pickle_module=ray.cloudpickle)
        return b"T" + buf.getvalue()


def _loads(data: bytes) -> Any:
    """A shard's result as a worker sent it (see :meth:`_Worker.run`)."""
    if data[:1] == b"T":
        import io

        import torch

        return torch.load(io.BytesIO(data[1:]), map_location="cpu", weights_only=False)
    return pickle.loads(data)


def _is_shared(value: Any, counts: dict[int, int], n_tasks: int) -> bool:
    if isinstance(value, _PLAIN):
        return False
    return isinstance(value, (ModelAdapter, Component)) or (n_tasks > 1 and counts.get(id(value), 0) > 1)


class RayExecutor:
    """Runs a study's shards on Ray (engine ``"ray"``).

    Args:
        address: the cluster (see :func:`connect`); None: ``$RAY_ADDRESS``, else a local one.
            Ignored when this process is already connected (``ray.init`` called before).
        num_workers: actors (each holds the step's model once); None: as many as the
            cluster's CPUs (``num_gpus > 0``: GPUs) allow with ``num_cpus`` / ``num_gpus`` each.
        num_cpus: CPUs per actor (Ray sets its threads to it).
        num_gpus: GPUs per actor (0: none; 1: one GPU each; 0.5: two actors per GPU).
        max_retries: times a shard whose worker died is run again (Ray's actor restarts).
        device: where an actor moves the step's model (``ModelAdapter.to``); None: ``"cuda"``
            (the actor's GPU) when ``num_gpus > 0``, else the model stays where the driver
            built it. Results come back to the driver's CPU.
        init_kwargs: more ``ray.init`` keywords when this executor starts the connection.
    """

    name = "ray"

    def __init__(self, address: str | None = None, num_workers: int | None = None, num_cpus: float = 1,
                 num_gpus: float = 0, max_retries: int = 3, device: str | None = None,
                 init_kwargs: dict | None = None):
        _ray()  # a missing ray fails here, naming the fix
        self.address = address
        self.num_workers = num_workers
        self.num_cpus = num_cpus
        self.num_gpus = num_gpus
        self.max_retries = max_retries
        self.device = device
        self.init_kwargs = dict(init_kwargs or {})
        self.actors: list[Any] = []
        self._owns_connection = False
        self._busy: dict[Any, tuple[ShardTask, Any]] = {}
        self._check()

    def _check(self) -> None:
        _host_port(self.address)
        if self.num_workers is not None and (not isinstance(self.num_workers, int) or self.num_workers < 1):
            raise ParameterError(OWNER, "num_workers", self.num_workers, "a positive int or None")
        for k in ("num_cpus", "num_gpus"):
            v = getattr(self, k)
            if not isinstance(v, (int, float)) or v < 0 or (k == "num_cpus" and v == 0):
                raise ParameterError(OWNER, k, v, "a non-negative number (num_cpus > 0)")
        if not isinstance(self.max_retries, int) or self.max_retries < 0:
            raise ParameterError(OWNER, "max_retries", self.max_retries, "an int >= 0")

    def configure(self, **options: Any) -> None:
        """Set options (``address``, ``num_workers``, ``num_cpus``, ``num_gpus``,
        ``max_retries``, ``device``): what ``get_executor("ray", **options)`` and ``--address`` pass."""
        known = ("address", "num_workers", "num_cpus", "num_gpus", "max_retries", "device")
        for k, v in options.items():
            if k not in known:
                raise ParameterError(OWNER, k, v, f"one of the options {', '.join(known)}")
            setattr(self, k, v)
        self._check()

    # ------------------------------------------------------------------ the pool
    def _pool_size(self) -> int:
        if self.num_workers is not None:
            return self.num_workers
        ray = _ray()
        res = ray.cluster_resources()
        if self.num_gpus > 0:
            return max(1, int(res.get("GPU", 0) // self.num_gpus))
        return max(1, int(res.get("CPU", 1) // self.num_cpus))

    def _grow(self, n: int) -> None:
        ray = _ray()
        if not self.actors:
            self._owns_connection = connect(self.address, **self.init_kwargs) or self._owns_connection
        target = min(n, self._pool_size())
        if len(self.actors) >= target:
            return
        plugins = _in_process_plugins()
        for m in _driver_only_modules([p for _, p in plugins if not isinstance(p, str)]):
            ray.cloudpickle.register_pickle_by_value(sys.modules[m])
        cls = ray.remote(_Worker).options(num_cpus=self.num_cpus, num_gpus=self.num_gpus, max_restarts=-1,
                                          max_task_retries=self.max_retries)
        device = self.device if self.device is not None else ("cuda" if self.num_gpus > 0 else None)
        self.actors += [cls.remote(plugins, device) for _ in range(target - len(self.actors))]

    def in_flight(self) -> list[tuple[ShardTask, Any]]:
        """``(task, actor)`` of every shard running now (for monitoring and tests)."""
        return list(self._busy.values())

    # ------------------------------------------------------------------ running
    def run(self, tasks: Sequence[ShardTask], done: Callable[[ShardTask, Any], None]) -> None:
        if not tasks:
            return
        ray = _ray()
        self._grow(len(tasks))
        # the objects the shards share: put once, passed as references
        counts: dict[int, int] = {}
        for t in tasks:
            for v in {id(v): v for v in (*t.args, *t.kwargs.values())}.values():
                counts[id(v)] = counts.get(id(v), 0) + 1
        shared: dict[int, int] = {}
        objects: list[Any] = []
        for t in tasks:
            for v in (*t.args, *t.kwargs.values()):
                if id(v) not in shared and _is_shared(v, counts, len(tasks)):
                    shared[id(v)] = len(objects)
                    objects.append(v)
        for m in _driver_only_modules(objects):
            ray.cloudpickle.register_pickle_by_value(sys.modules[m])
        refs = [ray.put(o) for o in objects]

        def submit(actor: Any, t: ShardTask) -> None:
            args = tuple(_Shared(shared[id(a)]) if id(a) in shared else a for a in t.args)
            kwargs = {k: _Shared(shared[id(v)]) if id(v) in shared else v for k, v in t.kwargs.items()}
            self._busy[actor.run.remote(t.fn, args, kwargs, refs)] = (t, actor)

        def finished():
            queue = list(tasks)
            failure: tuple[ShardTask, BaseException] | None = None
            for actor in self.actors[:len(queue)]:
                submit(actor, queue.pop(0))
            while self._busy:
                ready, _ = ray.wait(list(self._busy), num_returns=1)
                t, actor = self._busy.pop(ready[0])
                try:
                    result = _loads(ray.get(ready[0]))
                except Exception as e:  # the shard raised, or its worker kept dying
                    failure = failure or (t, e)
                else:
                    yield t, result
                if queue and failure is None:
                    submit(actor, queue.pop(0))
            if failure is not None:
                raise self._error(*failure)

        shown = progress_bar(finished(), desc=f"{tasks[0].step} shards (ray)", total=len(tasks))
        try:
            for t, result in shown:
                done(t, result)
        finally:
            for ref in list(self._busy):  # an exception in done: do not leave shards running
                ray.cancel(ref)
            self._busy.clear()

    def _error(self, task: ShardTask, e: BaseException) -> AdvinterpError:
        ray = _ray()
        where = f"step {task.step!r}: shard {task.index} ({task.label or 'no label'})"
        cause = getattr(e, "cause", None)
        text = f"{type(cause).__name__}: {cause}" if cause is not None else f"{type(e).__name__}: {e}"
        missing = re.search(r"No module named '[^']+'", str(e))
        if isinstance(cause, ModuleNotFoundError) or missing:
            text = f"ModuleNotFoundError: {missing.group(0)}" if missing else text
            return AdvinterpError(
                f"{where}: the Ray workers cannot import a module the shard needs ({text}). Make the component "
                f"a plugin installed on every node (a package with an `advinterp` entry point, see docs/plugins.md), "
                f"or keep it in the driver's __main__ / a module outside any installed package, which the Ray "
                f"engine ships by value.")
        if isinstance(e, ray.exceptions.RayActorError):
            return AdvinterpError(f"{where} failed on the Ray engine: its worker died, and kept dying on the "
                                  f"{self.max_retries} retries ({type(e).__name__}: {e}). The finished shards "
                                  f"are saved; rerun to resume (raise max_retries, or give actors more memory with num_cpus/num_gpus).")
        return AdvinterpError(f"{where} failed on the Ray engine: {text}. The finished shards are saved; fix the "
                              f"cause and rerun to resume.\nworker traceback:\n{e}")

    def close(self) -> None:
        """Stop the actors; disconnect when this executor connected."""
        if not self.actors and not self._owns_connection:
            return
        ray = _ray()
        if ray.is_initialized():
            for a in self.actors:
                try:
                    ray.kill(a)
                except Exception:  # already gone
                    pass
            if self._owns_connection:
                ray.shutdown()
        self.actors = []
        self._owns_connection = False
