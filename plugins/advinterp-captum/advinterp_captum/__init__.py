"""advinterp <-> Captum: class-activation-map explainers at the cost of one forward pass.

* ``cam``: CAM (Zhou et al. 2016), ``M_c = sum_k w_k^c A^k`` with ``A`` the layer's
  activation and ``w`` the linear head (GAP + linear models only).
* ``gradcam``: Grad-CAM, in ``captum.attr.LayerGradCam``'s formula and op order.
* ``gradcampp``: Grad-CAM++ (Chattopadhyay et al. 2018, closed form on the logit; Captum has
  no Grad-CAM++, captum issue 353).

All take ``layer`` (None: the model's ``cam_layer``), ``relu``, ``batch_size`` and
``channels_last`` (True: batches run channels-last, faster CPU convolutions)::

    attr = advinterp.get_explainer("gradcam").explain(model, x, target)

Each runs ONE forward per chunk of ``batch_size`` images for all the target vectors it is
asked for (:func:`advinterp_captum.explainers.layer_forward`: a hooked leaf at the layer,
then one ``autograd.grad`` per target through the modules after the layer only); Captum's
own layer-attribution calls run a pass per target and are gone around (see
:mod:`advinterp_captum.explainers`). :meth:`advinterp.Explainer.explain_pair` gives the
four maps F(x0, t0), F(x', t0), F(x0, t), F(x', t) of an :class:`advinterp.AdversarialBatch`
(Fig. 3 of the PSE paper) as an :class:`advinterp.PairMaps` from one forward of the ``2N``
stacked images. :func:`explain_pair` (and ``PairMaps``) stay here for compatibility.

Registered through the ``advinterp`` entry point ``captum = advinterp_captum``. Captum is
not imported when the plugin loads (only its presence is checked), so loading is cheap; a
missing Captum makes the plugin show as unavailable in ``advinterp list`` with the
``pip install`` hint.
"""
from __future__ import annotations

import importlib.util

import advinterp

if importlib.util.find_spec("captum") is None:  # report the missing toolkit at plugin load (advinterp list)
    raise ModuleNotFoundError("advinterp-captum needs the captum package", name="captum")

from .explainers import CAM, EXPLAINERS, CaptumLayerExplainer, GradCAM, GradCAMPlusPlus  # noqa: E402
from advinterp.api import AdversarialBatch, PairMaps  # noqa: E402

__version__ = "0.1.0"
__all__ = ["CAM", "GradCAM", "GradCAMPlusPlus", "CaptumLayerExplainer", "EXPLAINERS", "PairMaps", "explain_pair"]


def explain_pair(explainer: advinterp.Explainer, model, batch: AdversarialBatch, normalize: bool = True) -> PairMaps:
    """Compatibility function: ``explainer.explain_pair(model, batch, normalize=normalize)``.

    The four-map explanation moved into the core :meth:`advinterp.Explainer.explain_pair`
    (which works for every explainer); use that. ``explainer`` must be an
    :class:`advinterp.Explainer` instance (``ParameterError`` otherwise); ``normalize``
    defaults to True. Returns an :class:`advinterp.PairMaps`.
    """
    if not isinstance(explainer, advinterp.Explainer):
        raise advinterp.ParameterError("explain_pair", "explainer", explainer, "an advinterp.Explainer instance",
                                       "Use advinterp.get_explainer('gradcam').")
    return explainer.explain_pair(model, batch, normalize=normalize)


@advinterp.hookimpl
def advinterp_register_explainers(register):
    for cls in EXPLAINERS:
        register(cls)
