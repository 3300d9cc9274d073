"""The ``advinterp`` entry point of advinterp-ray: the ``"ray"`` engine."""
from __future__ import annotations

from typing import Optional

from advinterp.api import hookimpl


@hookimpl
def advinterp_study_executor(engine: str) -> Optional[object]:
    """A :class:`~advinterp_ray.RayExecutor` for ``engine == "ray"`` (None otherwise)."""
    if engine != "ray":
        return None
    from .executor import RayExecutor

    return RayExecutor()
