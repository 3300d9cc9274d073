"""advinterp plugin: interpreting adversarial examples with attributes (Gulshad et al., "Interpreting
Adversarial Examples with Attributes", 2020), the first slice of issue 16.

* :class:`SJE` (:mod:`.sje`): the structured joint embedding of eqs. 3-6 as a scikit-learn
  classifier (vectorised mini-batch SGD; ``batch_size=1`` is the paper's per-sample SGD);
  :func:`sje_loss`, :func:`sje_step`.
* :func:`features` (:mod:`.features`): theta(x), the global average pool of a model layer.
* :mod:`.distances`: d1 / d2 of eqs. 8-15 on the most-changing attributes (capability D4).
* :mod:`.selection`: the per-image attribute selection of eqs. 16-17, top-k (capability D5).

* :func:`alpha_adversarial_training` (:mod:`.adversarial_training`): eq. 2's alpha-mixed PGD
  adversarial fine-tuning of a deep copy (capability D3).
* analyzer ``attributes.robustness`` (:mod:`.robustness`): softmax vs SJE accuracy over an eps
  grid, clean / IFGSM / adversarially trained (Fig. 4; D1, D3); report section in :mod:`.report`.
* analyzer ``attributes.grounding`` (:mod:`.grounding_analysis`): eqs. 16-17 selections of
  flipped images grounded with the attribute detector, precision vs true boxes (Figs. 6-7; D6).
* analyzer ``attributes.distances`` (:mod:`.distances_analysis`): d1 / d2 of the four Fig. 5
  cases with an adversarially trained copy (D4).

Registered through the ``advinterp`` entry point ``attributes = advinterp_attributes``.
scikit-learn is imported only when :class:`SJE` is first used. See ``docs/attributes.md``.
"""
from __future__ import annotations

import importlib
import importlib.util

import advinterp

if importlib.util.find_spec("sklearn") is None:  # report the missing dependency at plugin load (advinterp list)
    raise ModuleNotFoundError("advinterp-attributes needs the scikit-learn package", name="sklearn")

from .distances import (AttributeDistances, attribute_indices, class_distances, figure5,  # noqa: E402
                        prediction_distances, select_images, top_changing_attributes)
from .adversarial_training import alpha_adversarial_training  # noqa: E402
from .features import features  # noqa: E402
from .selection import select_adversarial, select_clean, top_k_attributes  # noqa: E402

__version__ = "0.1.0"
__all__ = ["SJE", "sje_loss", "sje_step", "features", "AttributeDistances", "attribute_indices", "class_distances",
           "figure5", "prediction_distances", "select_images", "top_changing_attributes", "select_adversarial",
           "select_clean", "top_k_attributes", "alpha_adversarial_training"]

_LAZY = {"SJE": "sje", "sje_loss": "sje", "sje_step": "sje", "PREDICT_MODES": "sje"}


def __getattr__(name: str):
    """``SJE``, ``sje_loss``, ``sje_step`` load scikit-learn on first use, not at plugin load."""
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@advinterp.hookimpl
def advinterp_register_analyzers(register):
    """``attributes.robustness`` (Fig. 4), ``attributes.grounding`` (Figs. 6-7), ``attributes.distances`` (Fig. 5)."""
    from .distances_analysis import AttributeDistanceAnalysis
    from .grounding_analysis import AttributeGrounding
    from .robustness import Robustness

    register(Robustness)
    register(AttributeGrounding)
    register(AttributeDistanceAnalysis)


@advinterp.hookimpl
def advinterp_report_section(group, run):
    """The sections of the plugin's analyzers."""
    from .report import SECTIONS

    section = SECTIONS.get((group.kind, group.name))
    return None if section is None else section(group, run)
