"""Executors run a study's shards; the core's runs them in this process, one after another.

The study layer cuts every long step into shards (:class:`ShardTask`), asks the plugins for
an executor through the ``firstresult`` hook ``advinterp_study_executor(engine)`` (the core's
:class:`LocalExecutor` answers ``"local"`` last, like the reference grid-ablation backend)
and hands it the shards that are not done yet. The executor calls ``done(i, result)`` as
each shard finishes -- the study saves the result there and then, so a killed run loses only
the shards in flight -- in any order: partial results are merged in shard order afterwards.

An engine that runs shards elsewhere (other processes, a cluster) gets tasks whose
``fn`` and ``args`` are picklable: module-level functions and plain data.

Two optional methods complete the protocol: ``configure(**options)`` receives the engine's
options (``advinterp run --engine ray --address ADDR`` calls
``get_executor("ray", address=ADDR)``, which hands ``address`` to ``configure``; an executor
without it takes no options) and ``close()`` releases what the executor holds (workers, a
cluster connection) -- :meth:`advinterp.Study.run` calls it at the end of a run for the
executors it looked up by name, not for an executor object it was given.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Protocol, Sequence, runtime_checkable

__all__ = ["ShardTask", "Executor", "LocalExecutor"]


@dataclass(frozen=True)
class ShardTask:
    """One shard of a study step: ``fn(*args, **kwargs)`` returns its partial result.

    Attributes:
        step: the step's id; index: the shard's position in the step; label: a short
            description for progress bars and logs (``"images 64:128"``).
    """

    step: str
    index: int
    fn: Callable[..., Any]
    args: tuple = ()
    kwargs: dict = field(default_factory=dict)
    label: str = ""

    def __call__(self) -> Any:
        return self.fn(*self.args, **self.kwargs)


@runtime_checkable
class Executor(Protocol):
    """What an executor provides."""

    name: str

    def run(self, tasks: Sequence[ShardTask], done: Callable[[ShardTask, Any], None]) -> None:
        """Run every task; call ``done(task, result)`` in this process as each finishes.
        An exception of a task propagates (after ``done`` was called for the finished ones)."""


class LocalExecutor:
    """Runs the shards here, in order (the default engine, ``"local"``)."""

    name = "local"

    def run(self, tasks: Sequence[ShardTask], done: Callable[[ShardTask, Any], None]) -> None:
        from .progress import progress_bar

        shown = progress_bar(tasks, desc=f"{tasks[0].step} shards", total=len(tasks)) if len(tasks) > 1 else tasks
        for task in shown:
            done(task, task())
