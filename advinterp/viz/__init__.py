"""Figures for looking at data and results (matplotlib; headless-safe).

Figures are built as :class:`matplotlib.figure.Figure` objects without pyplot, so nothing
here opens a window or needs a display; save them with :func:`save_figure`. Matplotlib is
imported only when a figure is drawn, not when this package is imported.

What is where (every name below is importable from :mod:`advinterp.viz` itself):

* :mod:`~advinterp.viz.common`: the lazy matplotlib import, the qualitative palette,
  :func:`save_figure` and image conversion shared by the others;
* :mod:`~advinterp.viz.scenes`: :func:`concept_colors`, the object/part boxes and
  :func:`plot_scenes` (synthetic scenes with their annotations);
* :mod:`~advinterp.viz.attacks`: :func:`plot_layer_distances` and :func:`plot_perturbations`;
* :mod:`~advinterp.viz.cam`: :data:`CAM_PAIR_KEYS`, :func:`plot_cam_overlays` (Fig. 3 of the
  PSE paper) and :func:`plot_is_table` (Table 2);
* :mod:`~advinterp.viz.pse`: :data:`PSR_COLORS`, :func:`plot_pse_sensitivity` (Fig. 2),
  :func:`psr_overlay` and :func:`plot_psr_overlay` (Fig. 4).

Example::

    from advinterp.datasets.synthetic import SyntheticWorld
    from advinterp.viz import plot_scenes, save_figure

    batch = SyntheticWorld(size=64).generate(6, split="test")
    save_figure(plot_scenes(batch, n=6), "scenes.png")
"""
from __future__ import annotations

from .attacks import plot_layer_distances, plot_perturbations
from .cam import CAM_PAIR_KEYS, plot_cam_overlays, plot_is_table
from .common import save_figure
from .pse import PSR_COLORS, plot_pse_sensitivity, plot_psr_overlay, psr_overlay
from .scenes import concept_colors, plot_scenes

# ``from advinterp.viz import *`` gives these five, as before the split; the other names
# above are re-exported for ``from advinterp.viz import X``.
__all__ = ["plot_scenes", "save_figure", "concept_colors", "plot_cam_overlays", "plot_is_table"]
