"""advinterp plugin: attack-to-explain (Jalwana et al., "Attack to Explain Deep Representation",
CVPR 2020), the first implementation (the paper has no public code).

* :func:`attack_to_explain` (:mod:`.algorithm`): Algorithm 1, perturbation estimation, with
  Algorithm 2 interleaved on the Sec. 5.1 schedule; returns an :class:`A2EResult` (``p``,
  ``wp`` per iteration, sample indices; resumable).
* :func:`refine_perturbation` (:mod:`.refinement`): Algorithm 2 (Otsu filter of the
  convolutional base's channel mean, lambda = 5, bicubic upsample, clip).
* attack ``a2e`` (:class:`A2E`, :mod:`.attack`): the native targeted attack, per seed image.
* support ``a2e``: the Otsu region of a batch's perturbation (next to ``S1``/``S2``).
* analyzer ``a2e.transfer`` (:mod:`.transfer`): target confidence of other models for ``p``
  added to held-out images and for ``p`` alone rescaled (report section in :mod:`.report`).
* analyzer ``a2e.regions`` (:mod:`.regions`): ``p`` recomputed with the seed and samples
  obstructed by a uniform patch of the samples' mean colour (Fig. 4), energy inside the patch.
* analyzer ``a2e.saliency`` (:mod:`.saliency`): the paper's claim measured -- ``p`` alone,
  rescaled, classified as the target vs single-image PGD-l2 / C&W-l2 perturbations of the
  same l2 norm.
* analyzers ``a2e.generation``, ``a2e.inpainting``, ``a2e.manipulation`` (:mod:`.generation`,
  :mod:`.inpainting`, :mod:`.manipulation`; C5, Sec. 5.2): the robust-model image tasks from
  class-Gaussian samples (:mod:`.gaussian`), a masked image (eq. 4) and a sketch, each next to
  targeted l2 PGD from the same seed with the same budget.

Registered through the ``advinterp`` entry point ``a2e = advinterp_a2e``. See
``docs/attack_to_explain.md``.
"""
from __future__ import annotations

import importlib.util

import advinterp

if importlib.util.find_spec("skimage") is None:  # report the missing dependency at plugin load (advinterp list)
    raise ModuleNotFoundError("advinterp-a2e needs the scikit-image package", name="skimage")

from .algorithm import A2EResult, attack_to_explain, default_eta  # noqa: E402
from .attack import A2E  # noqa: E402
from .refinement import a2e_support, otsu_mask, refine_perturbation  # noqa: E402

__version__ = "0.1.0"
__all__ = ["A2E", "A2EResult", "attack_to_explain", "default_eta", "refine_perturbation", "otsu_mask", "a2e_support"]


@advinterp.hookimpl
def advinterp_register_attacks(register):
    register(A2E)


@advinterp.hookimpl
def advinterp_register_supports(register):
    register(a2e_support, "a2e")


@advinterp.hookimpl
def advinterp_register_analyzers(register):
    """``a2e.transfer`` (C4), ``a2e.regions`` (C3, Fig. 4), ``a2e.saliency`` (the claim about
    p alone) and the C5 tasks ``a2e.generation``, ``a2e.inpainting``, ``a2e.manipulation``."""
    from .generation import A2EGeneration
    from .inpainting import A2EInpainting
    from .manipulation import A2EManipulation
    from .regions import A2ERegions
    from .saliency import A2ESaliency
    from .transfer import A2ETransfer

    register(A2ETransfer)
    register(A2ERegions)
    register(A2ESaliency)
    register(A2EGeneration)
    register(A2EInpainting)
    register(A2EManipulation)


@advinterp.hookimpl
def advinterp_register_papers(register):
    """``jalwana2020``: a run's numbers next to the paper's claims (:mod:`.paper`)."""
    from .paper import jalwana2020_section

    register(jalwana2020_section, "jalwana2020")


@advinterp.hookimpl
def advinterp_report_section(group, run):
    """The sections of the plugin's analyzers."""
    from .report import SECTIONS

    section = SECTIONS.get((group.kind, group.name))
    return None if section is None else section(group, run)
