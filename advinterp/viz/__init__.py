"""Figures for looking at data and results (matplotlib; headless-safe).

Figures are built as :class:`matplotlib.figure.Figure` objects without pyplot, so nothing
here opens a window or needs a display; save them with :func:`save_figure`. Matplotlib is
imported only when a figure is drawn, not when this package is imported.

What is where (every name below is importable from :mod:`advinterp.viz` itself):

* :mod:`~advinterp.viz.common`: the lazy matplotlib import, the qualitative palette,
  :func:`save_figure` and image conversion shared by the others;
* :mod:`~advinterp.viz.scenes`: :func:`concept_colors`, the object/part boxes and
  :func:`plot_scenes` (synthetic scenes with their annotations);
* :mod:`~advinterp.viz.activations`: :func:`plot_activation_maps` (Figs. 9 / A9) and
  :func:`normalize_map`;
* :mod:`~advinterp.viz.attacks`: :func:`plot_layer_distances` (Fig. A8) and :func:`plot_perturbations`;
* :mod:`~advinterp.viz.cam`: :data:`CAM_PAIR_KEYS`, :func:`plot_cam_overlays` (Fig. 3 of the
  PSE paper), :data:`CAM_A1_COLUMNS` and :func:`plot_cam_a1` (Fig. A1), :func:`plot_is_table`
  (Table 2) and :func:`is_box_data` / :func:`plot_is_boxes` (the per-image IS distributions);
* :mod:`~advinterp.viz.pse`: :data:`PSR_COLORS`, :func:`plot_pse_sensitivity` (Fig. 2),
  :func:`psr_overlay` and :func:`plot_psr_overlay` (Fig. 4, with ``F(x0, t0)`` beside it),
  :data:`PAPER_ATTACKS`, :func:`first_common_success` and :func:`plot_psr_attacks` (Fig. A2);
* :mod:`~advinterp.viz.refine`: :func:`grid_l2_map` and :func:`plot_refine_norms` (Figs. 6 / A6:
  per-grid ``||delta||_2`` before and after refinement, and the supports);
* :mod:`~advinterp.viz.pixels` (Ding et al.): :func:`plot_pixel_histograms` (Fig. 2),
  :func:`plot_prediction_cams` (Fig. 3) and :func:`plot_replacement_changes` (Tables 2-3);
* :mod:`~advinterp.viz.feature_maps` (Ding et al.): :func:`plot_layer_rmse`,
  :func:`plot_feature_map_pairs` (Fig. 4) and :func:`plot_masking_sweep` (Tables 8-9).

Example::

    from advinterp.datasets.synthetic import SyntheticWorld
    from advinterp.viz import plot_scenes, save_figure

    batch = SyntheticWorld(size=64).generate(6, split="test")
    save_figure(plot_scenes(batch, n=6), "scenes.png")
"""
from __future__ import annotations

from .activations import normalize_map, plot_activation_maps
from .attacks import plot_layer_distances, plot_perturbations
from .cam import (CAM_A1_COLUMNS, CAM_PAIR_KEYS, is_box_data, plot_cam_a1, plot_cam_overlays, plot_is_boxes,
                  plot_is_table)
from .common import save_figure
from .pse import (PAPER_ATTACKS, PSR_COLORS, first_common_success, plot_pse_sensitivity, plot_psr_attacks,
                  plot_psr_overlay, psr_overlay)
from .feature_maps import plot_feature_map_pairs, plot_layer_rmse, plot_masking_sweep
from .pixels import plot_pixel_histograms, plot_prediction_cams, plot_replacement_changes
from .refine import grid_l2_map, plot_refine_norms
from .scenes import concept_colors, plot_scenes

# ``from advinterp.viz import *`` gives these five, as before the split; the other names
# above are re-exported for ``from advinterp.viz import X``.
__all__ = ["plot_scenes", "save_figure", "concept_colors", "plot_cam_overlays", "plot_is_table"]
