"""``unit_sensitivity``: sensitive units vs interpretable units (A9; eq. 8, Fig. 7).

Per layer: the sensitivity ``v(k)`` of every unit on clean/adversarial pairs
(:func:`~advinterp_dissect.sensitivity.unit_sensitivity`), the significance test of
``sum IoU(k)`` over the top-N sensitive units against N random units for each N
(:func:`~advinterp_dissect.significance.significance_test`, Fig. 7a) and the number of
concept detectors per category among the top ``detector_n`` (100) sensitive units (Fig. 7b).

Example::

    from advinterp_dissect import dissect, sensitivity_analysis
    d = dissect(model, broden_root, layers=["layer2", "layer4"])
    res = sensitivity_analysis(model, d, x)          # untargeted PGD on x by default
    print(res.table())                               # p-value per layer and N
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from advinterp.api import AdversarialBatch, Analyzer, Attack, Param, ParameterError, Result, as_adapter, check_images

from .dissection import Dissection, open_broden
from .probe import DissectionProbe
from .sensitivity import unit_sensitivity
from .significance import DEFAULT_NS, SignificanceTest, significance_test, top_sensitive

__all__ = ["LayerSensitivity", "SensitivityAnalysis", "sensitivity_analysis", "UnitSensitivityAnalyzer", "detector_top_n",
           "default_attack"]


@dataclass(frozen=True)
class LayerSensitivity:
    """One layer's sensitivity analysis.

    Attributes:
        layer: layer name.
        sensitivity: ``(U,)`` ``v(k)`` (eq. 8).
        unit_iou: ``(U,)`` ``IoU(k)`` from the dissection.
        best_label, best_category: ``U`` names of each unit's top concept.
        best_iou: ``(U,)`` its IoU.
        test: the :class:`~advinterp_dissect.significance.SignificanceTest`.
        detector_n: the N of the detector counts (:func:`detector_top_n`: ``detector_n``
            when below the width, else a quarter of the width).
        detector_counts: ``{category: detectors among the top detector_n sensitive units}``.
        all_detector_counts: ``{category: detectors among all units}``.
    """

    layer: str
    sensitivity: np.ndarray
    unit_iou: np.ndarray
    best_label: tuple[str, ...]
    best_category: tuple[str, ...]
    best_iou: np.ndarray
    test: SignificanceTest
    detector_n: int
    detector_counts: dict[str, int]
    all_detector_counts: dict[str, int]

    def top_units(self, k: int = 10) -> list[dict[str, Any]]:
        """The ``k`` most sensitive units with their top concept."""
        return [{"layer": self.layer, "unit": int(u), "sensitivity": float(self.sensitivity[u]),
                 "label": self.best_label[u], "category": self.best_category[u], "iou": float(self.best_iou[u]),
                 "unit_iou": float(self.unit_iou[u])} for u in top_sensitive(self.sensitivity, k)]


@dataclass(frozen=True)
class SensitivityAnalysis(Result):
    """Unit sensitivity, significance tests and detector counts for several layers.

    Attributes:
        layers: ``{layer: LayerSensitivity}``.
        model: model name.
        attack: the attack that made the adversarial images.
        n_pairs: clean/adversarial pairs.
        success_rate: the attack's success rate on them (``nan`` if unknown).
        iou_threshold: detector threshold.
    """

    layers: dict[str, LayerSensitivity]
    model: str = ""
    attack: str = ""
    n_pairs: int = 0
    success_rate: float = float("nan")
    iou_threshold: float = 0.04

    kind = "unit_sensitivity"

    def __getitem__(self, layer: str) -> LayerSensitivity:
        if layer not in self.layers:
            raise ParameterError("SensitivityAnalysis", "layer", layer, f"one of {list(self.layers)}")
        return self.layers[layer]

    def rows(self) -> list[dict[str, Any]]:
        """One row per layer and N: the p-value of Fig. 7a."""
        return [{"layer": name, **r} for name, ls in self.layers.items() for r in ls.test.rows()]

    def detector_rows(self) -> list[dict[str, Any]]:
        """One row per layer: detectors per category among the top-N sensitive units (Fig. 7b)."""
        return [{"layer": name, "N": ls.detector_n, **ls.detector_counts} for name, ls in self.layers.items()]


def default_attack() -> Attack:
    """Untargeted l_inf PGD, eps 8/255, 10 steps of 2/255, random start, seed 0."""
    from advinterp.api import get_attack

    return get_attack("pgd", eps=8 / 255, eps_step=2 / 255, max_iter=10, num_random_init=1, seed=0)


def detector_top_n(detector_n: int, units: int) -> int:
    """The N of Fig. 7b's "detectors among the top-N sensitive units" on a layer of ``units``
    units: ``detector_n`` when it is below the width; otherwise (a layer narrower than the
    paper's, where top-N would select every unit) ``max(1, units // 4)``."""
    return int(detector_n) if int(detector_n) < units else max(1, units // 4)


def _analyze_layers(model, dissection: Dissection, batch: AdversarialBatch, layers, ns, n_draws, seed, detector_n,
                    iou_threshold, size, batch_size) -> SensitivityAnalysis:
    names = list(dissection.layers) if layers is None else ([layers] if isinstance(layers, str) else list(layers))
    bad = [n for n in names if n not in dissection.layers]
    if bad or not names:
        raise ParameterError("sensitivity_analysis", "layers", layers,
                             f"None or names among the dissected layers {list(dissection.layers)}")
    thr = dissection.iou_threshold if iou_threshold is None else float(iou_threshold)
    v = unit_sensitivity(model, dissection, batch.x0, batch.x_adv, names, size=size, batch_size=batch_size)
    out = {}
    for name in names:
        ld = dissection[name]
        col, cat, score = ld.best()
        uiou = ld.unit_iou()
        test = significance_test(uiou, v[name], ns=ns, n_draws=n_draws, seed=seed)
        n = detector_top_n(detector_n, ld.units)
        out[name] = LayerSensitivity(
            layer=name, sensitivity=v[name], unit_iou=uiou,
            best_label=tuple(ld.vocabulary.names[c] for c in col),
            best_category=tuple(ld.vocabulary.categories[g] for g in cat), best_iou=score, test=test,
            detector_n=n, detector_counts=ld.detector_counts(thr, top_sensitive(v[name], n)),
            all_detector_counts=ld.detector_counts(thr))
    success = float(batch.success.float().mean()) if batch.success is not None and len(batch) else math.nan
    return SensitivityAnalysis(out, model=as_adapter(model).name, attack=batch.attack, n_pairs=len(batch),
                               success_rate=success, iou_threshold=thr)


def sensitivity_analysis(model: Any, dissection: Dissection, x: Any, x_adv: Any = None, *, y: Any = None,
                         attack: Attack | None = None, layers: Sequence[str] | str | None = None,
                         ns: Sequence[int] = DEFAULT_NS, n_draws: int = 10000, seed: int = 0, detector_n: int = 100,
                         iou_threshold: float | None = None, size: Any = None,
                         batch_size: int = 64) -> SensitivityAnalysis:
    """Sensitivity ``v(k)``, Fig. 7a's p-values and Fig. 7b's detector counts per layer.

    Args:
        model: :class:`~advinterp.ModelAdapter` (or ``nn.Module``); never changed.
        dissection: the model's :class:`~advinterp_dissect.dissection.Dissection`.
        x: ``(N, C, H, W)`` clean pixels in [0, 1], or an :class:`~advinterp.AdversarialBatch`.
        x_adv: adversarial versions of ``x`` (default: made by ``attack``).
        y: labels for the attack (default: the model's predictions).
        attack: any :class:`~advinterp.Attack` (default :func:`default_attack`,
            untargeted PGD as in the paper).
        layers: default: every dissected layer.
        ns: the N values of the test (default ``(10, 20, 30, 50, 80, 100)``, clipped to U).
        n_draws, seed: random draws of the test (10000, 0).
        detector_n: N of the detector counts (100, clipped to U).
        iou_threshold: detector threshold (default: the dissection's).
        size: mask size for ``v(k)`` (default: the input size).
        batch_size: images per forward (64).

    Returns:
        :class:`SensitivityAnalysis`.
    """
    if not isinstance(dissection, Dissection):
        raise ParameterError("sensitivity_analysis", "dissection", dissection, "a Dissection (from dissect())")
    if isinstance(x, AdversarialBatch):
        batch = x
    elif x_adv is not None:
        x0 = check_images("sensitivity_analysis", x, "x")
        y0 = as_adapter(model).predict(x0).to(x0.device) if y is None else y
        batch = AdversarialBatch.from_pair(x0, check_images("sensitivity_analysis", x_adv, "x_adv"), y0,
                                           model=model, attack="external")
    else:
        atk = default_attack() if attack is None else attack
        if not isinstance(atk, Attack):
            raise ParameterError("sensitivity_analysis", "attack", attack, "an advinterp Attack instance or None")
        batch = atk.generate(model, x, y)
    if isinstance(detector_n, bool) or not isinstance(detector_n, int) or detector_n < 1:
        raise ParameterError("sensitivity_analysis", "detector_n", detector_n, "a positive integer")
    return _analyze_layers(model, dissection, batch, layers, ns, n_draws, seed, detector_n, iou_threshold, size,
                           batch_size)


def _ns_ok(v) -> bool:
    return (isinstance(v, (list, tuple)) and len(v) > 0
            and all(isinstance(n, int) and not isinstance(n, bool) and n >= 1 for n in v))


class UnitSensitivityAnalyzer(Analyzer):
    """Unit sensitivity v(k) (eq. 8), p-value of top-N sensitive units' IoU (Fig. 7a), detectors (7b).

    Parameters: ``layers`` (None: the dissected layers), ``ns`` ((10, 20, 30, 50, 80, 100),
    clipped to the layer width), ``n_draws`` (10000), ``seed`` (0), ``detector_n`` (100),
    ``iou_threshold`` (0.04), ``batch_size`` (64), ``dissection_params`` (None or a dict of
    the ``dissection`` probe's parameters, used when no dissection is given).

    Context (optional keywords of ``analyze``): ``dissection=`` a precomputed
    :class:`~advinterp_dissect.dissection.Dissection` of the model (else the model is
    dissected with ``dissection_params``), ``broden=`` a Broden dataset or folder for that
    dissection. The batch supplies the clean/adversarial pairs (the paper: untargeted PGD
    on Broden images).
    """

    name = "unit_sensitivity"
    context_keys = ("dissection", "broden")
    params = {
        "layers": Param(None, lambda v: v is None or (isinstance(v, (list, tuple)) and len(v) > 0
                                                      and all(isinstance(s, str) and s for s in v)),
                        "None or a non-empty list of layer names", invalid=("layer4", [1], [])),
        "ns": Param(DEFAULT_NS, _ns_ok, "a non-empty list of positive integers",
                    doc="N values of the significance test", invalid=(10, [], [0], ["x"])),
        "n_draws": Param.integer(10000, low=1, doc="random N-unit draws per N"),
        "seed": Param.integer(0, low=0, doc="seed of the draws"),
        "detector_n": Param.integer(100, low=1, doc="top-N sensitive units whose detectors are counted"),
        "iou_threshold": Param.number(0.04, low=0.0, high=0.999, doc="detector threshold on max_c IoU(k, c)"),
        "batch_size": Param.integer(64, low=1),
        "dissection_params": Param(None, lambda v: v is None or (isinstance(v, dict) and all(isinstance(k, str)
                                                                                            for k in v)),
                                   "None or a dict of the dissection probe's parameters", invalid=("x", [1])),
    }
    conformance_params = {"ns": (2, 4), "n_draws": 200, "detector_n": 4,
                          "dissection_params": {"synthetic_n": 8, "synthetic_size": 24, "bins": 64, "batch_size": 4}}
    conformance_context: dict[str, Any] = {}

    def _check_params(self) -> None:
        if self.dissection_params:
            try:
                DissectionProbe(**self.dissection_params)
            except ParameterError as e:
                raise ParameterError(type(self).__name__, "dissection_params", self.dissection_params,
                                     "valid parameters of the dissection probe", str(e)) from None

    def _analyze(self, model, batch, **context):
        owner = f"{type(self).__name__}.analyze"
        d = context.get("dissection")
        if d is None:
            params = dict(self.dissection_params or {})
            if self.layers is not None:
                params["layers"] = list(self.layers)
            broden = context.get("broden")
            if broden is not None:
                broden = open_broden(broden, owner=owner)
            d = DissectionProbe(**params).run(model, broden)
        elif not isinstance(d, Dissection):
            raise ParameterError(owner, "dissection", d, "a Dissection (from dissect() or the dissection probe)")
        return _analyze_layers(model, d, batch, self.layers, tuple(self.ns), self.n_draws, self.seed,
                               self.detector_n, self.iou_threshold, None, self.batch_size)
