"""The public plugin API: every name of the core a plugin may use, in one place.

What the shipped plugins use is what a third-party plugin may use; a plugin that needs a
private name of the core is a sign the core lacks an API (a test checks that the shipped
plugins import the core only through ``advinterp``, this module, ``advinterp.datasets`` and
``advinterp.testing``)::

    from advinterp.api import Analyzer, Param, Result, check_images, hookimpl, save_figure

Components and their validation
    :class:`Attack`, :class:`Explainer`, :class:`Analyzer`, :class:`Probe` (bases);
    :class:`Param` (declared parameters), :func:`validate`;
    :func:`check_images` (``(N, C, H, W)`` pixels in [0, 1]), :func:`check_labels`,
    :func:`check_mask`, :func:`check_context`; :func:`as_adapter` (any model ->
    :class:`ModelAdapter`), :func:`channels_last` (a batch in channels-last memory order for
    faster CPU convolutions; :meth:`ModelAdapter.run_channels_last` falls back to channels-first
    for models that need it); :func:`as_dataset`, :func:`load_items`, :func:`load_labels`,
    :class:`Subset` (datasets as probes and study steps read them).
Data and results
    :class:`AdversarialBatch`, :class:`Attribution`, :class:`PairMaps`, :class:`Result`
    (``per_image`` fields make a result sliceable and mergeable), :func:`format_table`,
    :func:`random_targets`.
Errors
    :class:`AdvinterpError`, :class:`ParameterError` (``owner: name=value is invalid;
    expected ...``), :class:`IncompatibleModelError`, :class:`MissingDependencyError`,
    :class:`DatasetFormatError`, :class:`UnknownComponentError`.
Reports and studies
    :class:`Section` (title, text, tables, figures), :func:`save_figure`, :func:`image_hwc`
    (any image as ``imshow`` wants it),
    :class:`ReportGroup`, :class:`Run`, :class:`StepView` (what ``advinterp_report_section``
    receives), :class:`ShardTask` and :class:`Executor` (``advinterp_study_executor``);
    paper comparisons (``advinterp_register_papers``): :class:`Finding`,
    :func:`comparison_section`, :func:`gap`, :func:`gap_verdict`, :func:`threshold_verdict`.
Attack guards
    :func:`needs_grad` (an attack's ``_generate`` runs with gradients whatever the caller's grad
    mode), :func:`check_linf_eps`, :func:`linf_eps_param`, :func:`is_linf`,
    :func:`check_norm_budget` (budgets that fit [0, 1] pixels and the image size).
Plumbing
    :data:`hookimpl`, :func:`progress_bar`, :func:`progress_enabled`, :func:`get_registry`,
    :func:`is_building` (true while plugins' hooks run: do not ask for the registry then),
    ``get_attack`` / ``get_explainer`` / ``get_analyzer`` / ``get_probe`` / ``get_support`` /
    ``get_model`` / ``get_dataset``.
"""
from __future__ import annotations

from .attacks.guards import check_linf_eps, check_norm_budget, is_linf, linf_eps_param, needs_grad
from .components import (Analyzer, Attack, Component, Explainer, Probe, Subset, as_dataset, check_context,
                         check_images, check_labels, check_mask, load_items, load_labels)
from .data import AdversarialBatch, Attribution, PairMaps, random_targets
from .exceptions import (AdvinterpError, DatasetFormatError, IncompatibleModelError, MissingDependencyError,
                         ParameterError, UnknownComponentError)
from .executor import Executor, ShardTask
from .hookspecs import hookimpl
from .model import ModelAdapter, as_adapter, channels_last
from .params import Param, validate
from .progress import progress_bar, progress_enabled
from .registry import (get_analyzer, get_attack, get_dataset, get_explainer, get_model, get_probe, get_registry,
                       get_support, is_building)
from .report import Section
from .results import Result, format_table
from .sections.paper import Finding, comparison_section, gap, gap_verdict, threshold_verdict
from .study.views import ReportGroup, Run, StepView
from .viz.common import image_hwc, save_figure

__all__ = ["check_linf_eps", "check_norm_budget", "is_linf", "linf_eps_param", "needs_grad", "Analyzer", "Attack", "Component", "Explainer", "Probe", "Subset", "as_dataset", "check_context", "check_images",
           "check_labels", "check_mask", "load_items", "load_labels", "AdversarialBatch", "Attribution", "PairMaps",
           "random_targets", "AdvinterpError", "DatasetFormatError", "IncompatibleModelError",
           "MissingDependencyError", "ParameterError", "UnknownComponentError", "Executor", "ShardTask", "hookimpl",
           "ModelAdapter", "as_adapter", "channels_last", "Param", "validate", "progress_bar", "progress_enabled", "get_analyzer",
           "get_attack", "get_dataset", "get_explainer", "get_model", "get_probe", "get_registry", "get_support",
           "is_building", "Section", "Result", "format_table", "ReportGroup", "Run", "StepView", "save_figure", "image_hwc",
           "Finding", "comparison_section", "gap", "gap_verdict", "threshold_verdict"]
