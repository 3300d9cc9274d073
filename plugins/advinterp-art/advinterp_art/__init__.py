"""advinterp <-> ART (adversarial-robustness-toolbox), both ways.

* **ART attacks in advinterp**: ``art.fgsm``, ``art.bim``, ``art.pgd``, ``art.cw_l2``,
  ``art.ead``, ``art.uap`` — ART's ``FastGradientMethod``, ``BasicIterativeMethod``,
  ``ProjectedGradientDescentPyTorch``, ``CarliniL2Method``, ``ElasticNet`` and
  ``UniversalPerturbation`` with ART's parameter names and defaults::

      batch = advinterp.get_attack("art.pgd", eps=8/255, eps_step=2/255, max_iter=10).generate(model, x, y)

* **advinterp's native attacks in ART**: ``as_art_evasion_attack(PGD)`` (or
  ``advinterp_art.PGDAttack``, ``art_attack("pgd", classifier, **params)``) is an ART
  ``EvasionAttack``, usable in ART's own code and defences (``AdversarialTrainer``).
  ``advinterp_art.<Name>Attack`` exists for every registered native attack (``PGDAttack``;
  ``CWL2Attack``, ``EADAttack``, ``STRAttack`` once those are registered).

* **Defences** (Ding et al. Secs. 4.6-4.7): the analyzers ``art.adversarial_training``
  (:mod:`advinterp_art.adversarial_training`: fine-tuning on adversarial examples with their
  true labels, per training-set size, Tables 14-15) and ``art.detector``
  (:mod:`advinterp_art.detector`: a clean-vs-adversarial detector trained through ART's
  ``BinaryInputDetector``, per-class accuracy, ROC-AUC, classifier vs detector CAM, Fig. 5),
  with their report sections (:mod:`advinterp_art.report`).

Registered through the ``advinterp`` entry point ``art = advinterp_art``. ART is imported
lazily (loading the plugin does not import it); a missing ART makes the plugin show as
unavailable in ``advinterp list`` with the ``pip install`` hint.
"""
from __future__ import annotations

import importlib.util
from typing import Any

import advinterp

if importlib.util.find_spec("art") is None:  # report the missing toolkit at plugin load (advinterp list)
    raise ModuleNotFoundError("advinterp-art needs the adversarial-robustness-toolbox package", name="art")

from .adapters import (ADAPTERS, ARTAttack, ARTBasicIterativeMethod, ARTCarliniL2Method,  # noqa: E402
                       ARTElasticNet, ARTFastGradientMethod, ARTProjectedGradientDescent, ARTUniversalPerturbation,
                       make_art_attack)

__version__ = "0.1.0"
__all__ = ["ADAPTERS", "ARTAttack", "make_art_attack", "ARTFastGradientMethod", "ARTBasicIterativeMethod",
           "ARTProjectedGradientDescent", "ARTCarliniL2Method", "ARTElasticNet", "ARTUniversalPerturbation",
           "as_art_evasion_attack", "art_attack", "native_attacks", "AdvinterpEvasionAttack"]


@advinterp.hookimpl
def advinterp_register_attacks(register):
    for cls in ADAPTERS:
        register(cls)


@advinterp.hookimpl
def advinterp_register_analyzers(register):
    """``art.adversarial_training`` (B8, Tables 14-15) and ``art.detector`` (B9, Fig. 5)."""
    from .adversarial_training import AdversarialTrainingAnalyzer
    from .detector import DetectorAnalyzer

    register(AdversarialTrainingAnalyzer)
    register(DetectorAnalyzer)


@advinterp.hookimpl
def advinterp_report_section(group, run):
    """The sections of ``art.adversarial_training`` (Tables 14-15) and ``art.detector`` (Fig. 5)."""
    from .report import SECTIONS

    section = SECTIONS.get((group.kind, group.name))
    return None if section is None else section(group, run)


# ---------------------------------------------------------------- the reverse direction (imports ART)
def as_art_evasion_attack(attack_cls):
    """An ART ``EvasionAttack`` subclass running a native advinterp attack (class or name).
    See :mod:`advinterp_art.evasion`."""
    from .evasion import as_art_evasion_attack as f

    return f(attack_cls)


def art_attack(name: str, estimator: Any, **params: Any):
    """The registered native attack ``name`` as an ART ``EvasionAttack`` on ``estimator``."""
    from .evasion import art_attack as f

    return f(name, estimator, **params)


def native_attacks() -> dict:
    """Registered attacks that are not ART adapters, ``{name: class}``."""
    from .evasion import native_attacks as f

    return f()


def __getattr__(name: str) -> Any:
    """``AdvinterpEvasionAttack`` and ``<Name>Attack`` for every native attack, made on first use."""
    if name == "AdvinterpEvasionAttack":
        from .evasion import AdvinterpEvasionAttack

        return AdvinterpEvasionAttack
    if name.endswith("Attack") and not name.startswith("_"):
        from advinterp.api import is_building

        if not is_building():  # never build the registry from inside its own construction
            from .evasion import evasion_class_name

            for cls in native_attacks().values():
                if evasion_class_name(cls) == name:
                    return as_art_evasion_attack(cls)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
