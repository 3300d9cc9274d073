"""advinterp <-> network dissection: concept-level interpretability of units and their
sensitivity to adversarial examples (Sec. 5 of the PSE paper; A8-A10).

* :func:`dissect` — per-unit IoU with Broden concepts (eq. 7, NetDissect's conventions),
  two streaming passes (fixed-memory quantiles, then vectorised tallies on the model's
  device); :class:`Dissection` results write NetDissect-Lite's ``tally.csv``. The same as
  the registered probe ``dissection`` (:class:`DissectionProbe`), which a study runs in
  shards with exactly the same result.
* :func:`unit_sensitivity` — ``v(k) = E||M_k(x) - M_k(x')||_2`` (eq. 8);
  :func:`sensitivity_analysis` adds the significance test of the top-N sensitive units'
  IoU (Fig. 7a) and their detector counts per category (Fig. 7b).
* :func:`detector_views` — inputs segmented by ``M_k(x)`` and ``M_k(x')`` (Fig. 8).
* :mod:`advinterp_dissect.viz` figures; :mod:`advinterp_dissect.report` sections of the
  study report (``advinterp_report_section``) and :func:`dissection_section`.

Registered: the probe ``dissection``, the analyzers ``unit_sensitivity`` and
``detector_views``, and their report sections::

    import advinterp
    from advinterp_dissect import dissect, sensitivity_analysis

    model = advinterp.get_model("synthetic-cnn")
    d = dissect(model, "/data/broden1_224", layers=["layer2", "layer4"])
    d = advinterp.get_probe("dissection", layers=["layer2", "layer4"]).run(model, "/data/broden1_224")  # the same
    res = sensitivity_analysis(model, d, x)         # untargeted PGD on x by default

Registered through the ``advinterp`` entry point ``dissect = advinterp_dissect``.
"""
from __future__ import annotations

import advinterp

from .analysis import (LayerSensitivity, SensitivityAnalysis, UnitSensitivityAnalyzer, default_attack,
                       sensitivity_analysis)
from .dissection import Dissection, LayerDissection, Vocabulary
from .probe import DissectionProbe, dissect
from .quantile import GridSchedule, QuantileState, StreamingQuantile
from .report import dissection_section
from .sensitivity import unit_masks, unit_sensitivity
from .significance import DEFAULT_NS, SignificanceTest, significance_test, top_sensitive
from .views import DetectorViews, DetectorViewsAnalyzer, choose_units, detector_views

__version__ = "0.1.0"
__all__ = ["dissect", "DissectionProbe", "Dissection", "LayerDissection", "Vocabulary", "StreamingQuantile",
           "QuantileState", "GridSchedule", "unit_masks", "unit_sensitivity", "significance_test", "SignificanceTest",
           "top_sensitive", "DEFAULT_NS", "sensitivity_analysis", "SensitivityAnalysis", "LayerSensitivity",
           "UnitSensitivityAnalyzer", "default_attack", "detector_views", "DetectorViews", "DetectorViewsAnalyzer",
           "choose_units", "dissection_section"]


@advinterp.hookimpl
def advinterp_register_probes(register):
    register(DissectionProbe)


@advinterp.hookimpl
def advinterp_register_analyzers(register):
    register(UnitSensitivityAnalyzer)
    register(DetectorViewsAnalyzer)


@advinterp.hookimpl
def advinterp_report_section(group, run):
    """The sections of the dissection probe and the unit_sensitivity / detector_views analyzers."""
    from .report import SECTIONS

    section = SECTIONS.get((group.kind, group.name))
    return None if section is None else section(group, run)
