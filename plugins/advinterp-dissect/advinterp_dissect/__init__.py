"""advinterp <-> network dissection: concept-level interpretability of units and their
sensitivity to adversarial examples (Sec. 5 of the PSE paper; A8-A10).

* :func:`dissect` — per-unit IoU with Broden concepts (eq. 7, NetDissect's conventions),
  two streaming passes (fixed-memory quantiles, then vectorised tallies on the model's
  device); :class:`Dissection` results write NetDissect-Lite's ``tally.csv``.
* :func:`unit_sensitivity` — ``v(k) = E||M_k(x) - M_k(x')||_2`` (eq. 8);
  :func:`sensitivity_analysis` adds the significance test of the top-N sensitive units'
  IoU (Fig. 7a) and their detector counts per category (Fig. 7b).
* :func:`detector_views` — inputs segmented by ``M_k(x)`` and ``M_k(x')`` (Fig. 8).
* :mod:`advinterp_dissect.viz` figures and :func:`dissection_section` (HTML report).

Registered analyzers: ``dissection`` and ``unit_sensitivity``::

    import advinterp
    from advinterp_dissect import dissect, sensitivity_analysis

    model = advinterp.get_model("synthetic-cnn")
    d = dissect(model, "/data/broden1_224", layers=["layer2", "layer4"])
    res = sensitivity_analysis(model, d, x)         # untargeted PGD on x by default

Registered through the ``advinterp`` entry point ``dissect = advinterp_dissect``.
"""
from __future__ import annotations

import advinterp

from .analysis import (LayerSensitivity, SensitivityAnalysis, UnitSensitivityAnalyzer, default_attack,
                       sensitivity_analysis)
from .dissection import Dissection, DissectionAnalyzer, LayerDissection, Vocabulary, dissect
from .quantile import StreamingQuantile
from .report import dissection_section
from .sensitivity import unit_masks, unit_sensitivity
from .significance import DEFAULT_NS, SignificanceTest, significance_test, top_sensitive
from .views import DetectorViews, choose_units, detector_views

__version__ = "0.1.0"
__all__ = ["dissect", "Dissection", "LayerDissection", "Vocabulary", "DissectionAnalyzer", "StreamingQuantile",
           "unit_masks", "unit_sensitivity", "significance_test", "SignificanceTest", "top_sensitive", "DEFAULT_NS",
           "sensitivity_analysis", "SensitivityAnalysis", "LayerSensitivity", "UnitSensitivityAnalyzer",
           "default_attack", "detector_views", "DetectorViews", "choose_units", "dissection_section"]


@advinterp.hookimpl
def advinterp_register_analyzers(register):
    register(DissectionAnalyzer)
    register(UnitSensitivityAnalyzer)
