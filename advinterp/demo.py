"""``advinterp demo``: the shipped default study on the embedded world and shipped models.

The demo is a study file, ``advinterp/studies/demo.toml`` (``advinterp demo --print-study``
shows it): every analysis arrives as a registered component with its own report section,
not as code here. :func:`run_demo` runs it with its size variables set.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

__all__ = ["DEMO_STUDY", "demo_vars", "run_demo"]

#: The shipped default study.
DEMO_STUDY = Path(__file__).with_name("studies") / "demo.toml"


def demo_vars(n: int = 1000, n_attack: int = 200, seed: int = 0) -> dict[str, int]:
    """The demo study's variables for ``n`` test scenes and ``n_attack`` attacked ones (the
    targeted attacks take at most 32, the dissection at most 200 Broden scenes, 64 pairs)."""
    n_attack = min(n_attack, n)
    n_dissect = min(200, n)
    return {"n": n, "n_attack": n_attack, "seed": seed, "n_targeted": min(32, n_attack), "n_dissect": n_dissect,
            "n_pairs": min(64, n_dissect)}


def run_demo(out: str | Path | None = None, n: int = 1000, n_attack: int = 200, seed: int = 0,
             log: Callable[[str], None] = print, engine: str = "local") -> Path:
    """Run the demo study into ``out`` (default ``runs/advinterp_demo-<time>``); return the folder."""
    import matplotlib

    from .study import Study

    matplotlib.use("Agg")
    run = Study.from_file(DEMO_STUDY, demo_vars(n, n_attack, seed)).run(out, engine=engine, log=log)
    return run.out
