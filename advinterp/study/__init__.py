"""Studies: compose attacks, explainers, analyzers and probes over models and data from a
TOML file, into a resumable run folder with a self-contained report.

* :mod:`advinterp.study.spec` -- the study file: parsing, variables, matrices, checks;
* :mod:`advinterp.study.study` -- :class:`Study`: keys, shards, the run folder, resuming;
* :mod:`advinterp.study.views` -- what report sections see (:class:`Run`, :class:`ReportGroup`);
* :mod:`advinterp.study.report` -- the report of a run folder (``advinterp report RUN_DIR``).
"""
from __future__ import annotations

from .spec import StudyError, parse_study
from .study import Study, run_study
from .views import ReportGroup, Run, StepView

__all__ = ["Study", "StudyError", "run_study", "parse_study", "Run", "ReportGroup", "StepView"]
