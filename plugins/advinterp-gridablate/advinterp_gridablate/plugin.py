"""The ``advinterp`` entry point of advinterp-gridablate (``gridablate = advinterp_gridablate.plugin``).

Importing it raises :class:`advinterp_gridablate.ExtensionUnavailableError` (with the reason:
not built, build failure, torch mismatch) when the compiled modules are not loaded, so
``advinterp list`` shows the plugin as unavailable with that reason, and the core's reference
backend answers :func:`advinterp_grid_ablation_backend` instead.
"""
from __future__ import annotations

import advinterp

from . import _ext
from .backend import backend_for
from .ops import ExtensionUnavailableError

if not _ext.STATE.available:
    raise ExtensionUnavailableError(f"advinterp-gridablate: {_ext.STATE.reason}")


@advinterp.hookimpl
def advinterp_grid_ablation_backend(device):
    """The compiled backend for ``device`` (``gridablate-cpu`` / ``gridablate-cuda``), or
    ``None`` for a device without compiled kernels (the next plugin, finally the core's
    reference, answers)."""
    return backend_for(device)
