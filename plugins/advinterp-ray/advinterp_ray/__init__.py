"""advinterp <-> Ray: run a study's shards on a Ray cluster (``--engine ray``).

``advinterp run STUDY.toml --engine ray [--address HEAD:6379]`` or
``Study(...).run(out, engine="ray")`` (or ``engine=RayExecutor(num_workers=8, num_gpus=1)``).
The plugin answers the core's ``advinterp_study_executor`` hook for ``engine == "ray"``; Ray
is imported only when a study runs on it (a missing ``ray`` is an error naming the install).
See docs/scale-out.md.
"""
from __future__ import annotations

from .executor import RayExecutor, connect

__all__ = ["RayExecutor", "connect"]
