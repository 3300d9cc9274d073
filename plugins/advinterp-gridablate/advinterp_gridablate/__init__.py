"""advinterp-gridablate: compiled batched grid ablation for the PSE analysis.

For an adversarial image ``x' = x0 + delta`` and grids ``G_i`` (windows from
:func:`advinterp.ablation.grid_boxes`), the op ``advinterp_gridablate::ablate`` builds the
images ``x' - delta_{G_i}`` (``x'`` with the pixels of box ``i`` from ``x0``) for a range of
grids in one batch, without materialising per-grid masks; ``advinterp_gridablate::scatter_mean``
maps per-grid scores back to pixels (mean over overlapping windows). Kernels: C++
(``at::parallel_for``) on the CPU, CUDA where built; both equal the core's pure-PyTorch
references (``ReferenceGridAblation``, ``grid_scores_to_map``) bit for bit.

The plugin (entry point ``gridablate = advinterp_gridablate.plugin``) answers the
``advinterp_grid_ablation_backend`` hook with a :class:`CompiledGridAblation` named
``gridablate-cpu`` / ``gridablate-cuda`` for the devices it has kernels for, so::

    advinterp.registry.get_ablation_backend("cpu").name   # "gridablate-cpu" once built

When the compiled modules are missing (not built, failed to build, built for another torch),
this package still imports: :func:`status` says why, the plugin shows as unavailable with that
reason in ``advinterp list``, and the core's reference answers the hook.

For the incremental executor (:mod:`advinterp.incremental`), ``advinterp_gridablate::crop`` /
``::paste`` gather one window per sample from cached feature maps and paste it back (bit for
bit equal to :mod:`advinterp.patches`); ``::crop_paste`` does both into the window in one
pass. The backend offers them as ``.crop`` / ``.paste`` / ``.crop_paste``.
"""
from __future__ import annotations

from . import _ext
from .backend import CompiledGridAblation, backend_for
from .ops import ExtensionUnavailableError, ablate, crop, crop_paste, paste, scatter_mean

__version__ = "0.1.0"
__all__ = ["ablate", "scatter_mean", "crop", "paste", "crop_paste", "CompiledGridAblation", "backend_for", "status",
           "available", "ExtensionUnavailableError"]


def status() -> "_ext.ExtensionState":
    """What is compiled and loaded, and why not: ``.available``, ``.reason``, ``.cuda``,
    ``.cuda_reason``, ``.device_types()``, ``.build_info``; ``str()`` gives one line."""
    return _ext.STATE


def available() -> bool:
    """True when the op schemas and CPU kernels are loaded."""
    return _ext.STATE.available
