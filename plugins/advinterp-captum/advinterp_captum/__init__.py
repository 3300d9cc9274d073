"""advinterp <-> Captum: class-activation-map explainers on Captum's layer machinery.

* ``cam``: CAM (Zhou et al. 2016), ``M_c = sum_k w_k^c A^k`` with ``A`` from
  ``captum.attr.LayerActivation`` and ``w`` the linear head (GAP + linear models only).
* ``gradcam``: Grad-CAM, ``captum.attr.LayerGradCam``.
* ``gradcampp``: Grad-CAM++ (Chattopadhyay et al. 2018, closed form on the logit), from
  Captum's layer gradients (Captum has no Grad-CAM++, captum issue 353).

All take ``layer`` (None: the model's ``cam_layer``), ``relu`` and ``batch_size``::

    attr = advinterp.get_explainer("gradcam").explain(model, x, target)

:func:`explain_pair` gives the four maps F(x0, t0), F(x', t0), F(x0, t), F(x', t) of an
:class:`advinterp.AdversarialBatch` (Fig. 3 of the PSE paper).

Registered through the ``advinterp`` entry point ``captum = advinterp_captum``. Captum is
imported lazily (inside the explainers), so loading the plugin is cheap; a missing Captum
makes the plugin show as unavailable in ``advinterp list`` with the ``pip install`` hint.
"""
from __future__ import annotations

import importlib.util

import advinterp

if importlib.util.find_spec("captum") is None:  # report the missing toolkit at plugin load (advinterp list)
    raise ModuleNotFoundError("advinterp-captum needs the captum package", name="captum")

from .explainers import CAM, EXPLAINERS, CaptumLayerExplainer, GradCAM, GradCAMPlusPlus  # noqa: E402
from .pairs import PairMaps, explain_pair  # noqa: E402

__version__ = "0.1.0"
__all__ = ["CAM", "GradCAM", "GradCAMPlusPlus", "CaptumLayerExplainer", "EXPLAINERS", "PairMaps", "explain_pair"]


@advinterp.hookimpl
def advinterp_register_explainers(register):
    for cls in EXPLAINERS:
        register(cls)
