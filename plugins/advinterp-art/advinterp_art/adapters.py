"""ART's evasion attacks as advinterp attacks: ``art.fgsm``, ``art.bim``, ``art.pgd``,
``art.cw_l2``, ``art.ead`` and ``art.uap``.

Every adapter is built by one factory, :func:`make_art_attack`, from the ART class and
``Param`` s that mirror the ART constructor's arguments (same names, same defaults). The
parameters are passed through to ART unchanged; only display and logging arguments are
left out (``verbose`` follows advinterp's progress setting, ``summary_writer`` is off).

ART itself is imported lazily, the first time an adapter runs, so that loading the plugin
(every ``advinterp`` command does) does not pay for importing ART.
"""
from __future__ import annotations

import contextlib
import copy
import importlib
import inspect
import math
import numbers
import random
from typing import Any, Callable, ClassVar, Iterator, Mapping, Sequence

import numpy as np
import torch

from advinterp import Attack, Param, ParameterError
from advinterp.api import (ModelAdapter, check_linf_eps, check_norm_budget, is_linf, linf_eps_param, needs_grad,
                           progress_enabled)

__all__ = ["ARTAttack", "make_art_attack", "norm_param", "seeded", "ADAPTERS", "ARTFastGradientMethod",
           "ARTBasicIterativeMethod", "ARTProjectedGradientDescent", "ARTCarliniL2Method", "ARTElasticNet",
           "ARTUniversalPerturbation", "UAP_ATTACKERS"]

_EVASION = "art.attacks.evasion."


def _resolve(path: str) -> type:
    """``"package.module.Class"`` -> the class (imports the module)."""
    module, _, name = path.rpartition(".")
    return getattr(importlib.import_module(module), name)


def norm_param(default: Any = math.inf, doc: str = "") -> Param:
    """ART's ``norm``: ``"inf"``, ``np.inf`` or a real ``p >= 1``."""
    def check(v):
        if isinstance(v, str):
            return v == "inf"
        if isinstance(v, bool) or not isinstance(v, numbers.Real):
            return False
        return v == math.inf or (math.isfinite(v) and v >= 1)

    return Param(default, check, '"inf", np.inf or a real p >= 1', doc or "norm of the perturbation",
                 ("l2", 0.5, None))


def _seed_param() -> Param:
    return Param.integer(0, low=0, allow_none=True,
                         doc="seeds Python's, numpy's and torch's RNGs for the call (ART draws from the global "
                             "RNGs); None: use their current state")


@contextlib.contextmanager
def seeded(seed: int | None) -> Iterator[None]:
    """Seed ``random``, ``numpy.random`` and ``torch`` (ART draws from these global RNGs) and
    restore their previous states on exit. ``seed=None`` does nothing."""
    if seed is None:
        yield
        return
    py_state, np_state, torch_state = random.getstate(), np.random.get_state(), torch.random.get_rng_state()
    cuda_states = torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else None
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    try:
        yield
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)
        torch.random.set_rng_state(torch_state)
        if cuda_states is not None:
            torch.cuda.set_rng_state_all(cuda_states)


def _plain(v: Any) -> Any:
    """numpy scalars -> Python numbers (ART checks ``isinstance(v, int)`` / ``(int, float)``)."""
    if isinstance(v, (bool, np.bool_)):
        return bool(v)
    if isinstance(v, numbers.Integral):
        return int(v)
    if isinstance(v, numbers.Real):
        return float(v)
    return v


def _one_hot(labels: torch.Tensor, nb_classes: int) -> np.ndarray:
    return np.eye(nb_classes, dtype=np.float32)[labels.detach().cpu().numpy()]


def _estimator_for(model: ModelAdapter, x: torch.Tensor):
    """The ART estimator of ``model`` (the user's own one if it wraps an ART estimator)."""
    if model.art_estimator is None and model.input_shape is None:
        model = copy.copy(model)  # shares the module; only the shape is filled in
        model.input_shape = tuple(int(s) for s in x.shape[1:])
    return model.to_art()


class ARTAttack(Attack):
    """Base class of the ART adapters (built by :func:`make_art_attack`).

    Class attributes: ``art_class_path`` (dotted path of the ART ``EvasionAttack``),
    ``art_params`` (the parameters passed to its constructor: all but ``seed``) and
    ``keep`` (attributes of the ART attack copied after each run as ``<name>_``, e.g.
    ``noise_`` for the universal perturbation).
    """

    art_class_path: ClassVar[str] = ""
    art_params: ClassVar[tuple[str, ...]] = ()
    keep: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def art_class(cls) -> type:
        """The ART attack class (imports ART)."""
        return _resolve(cls.art_class_path)

    def art_kwargs(self) -> dict[str, Any]:
        """The keyword arguments given to ART's constructor."""
        kw = {k: _plain(getattr(self, k)) for k in self.art_params}
        if "verbose" in inspect.signature(self.art_class().__init__).parameters:
            kw["verbose"] = progress_enabled()
        return kw

    def make_art_attack(self, estimator: Any):
        """ART's attack on ``estimator`` with this adapter's parameters.

        ART's own checks (``ValueError``/``TypeError``) become :class:`ParameterError`.
        """
        cls = self.art_class()
        kw = self.art_kwargs()
        try:
            return cls(estimator, **kw)
        except (ValueError, TypeError) as e:
            if isinstance(e, ParameterError):
                raise
            shown = {k: v for k, v in kw.items() if k != "verbose"}
            raise ParameterError(type(self).__name__, "parameters", shown,
                                 f"values ART's {cls.__name__} accepts (ART: {e})") from e

    @needs_grad
    def _generate(self, model: ModelAdapter, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None,
                  mask: torch.Tensor | None = None, **kw: Any) -> torch.Tensor:
        if "norm" in self.params and "eps" in self.params:
            check_norm_budget(type(self).__name__, self.eps, self.norm, tuple(x.shape))
        attack = self.make_art_attack(_estimator_for(model, x))
        labels = target if getattr(self, "targeted", False) else y
        x_np = x.detach().cpu().numpy().astype(np.float32)
        extra = {} if mask is None else {"mask": mask.detach().cpu().numpy().astype(np.float32)}
        with seeded(getattr(self, "seed", None)):
            x_adv = attack.generate(x_np, y=_one_hot(labels, model.nb_classes), **extra)
        for name in self.keep:
            setattr(self, f"{name}_", getattr(attack, name, None))
        # ART clips to the estimator's clip_values; clamp for estimators built without them
        return torch.from_numpy(np.asarray(x_adv, dtype=np.float32)).to(x.device).clamp_(0, 1)


def make_art_attack(name: str, art_class: str | type, params: Mapping[str, Param], *, doc: str,
                    class_name: str, conformance_params: Mapping[str, Any] | None = None,
                    supports_mask: bool = False, keep: Sequence[str] = (),
                    check: Callable[[Attack], None] | None = None, base: type[ARTAttack] | None = None,
                    module: str = __name__) -> type[ARTAttack]:
    """Build an advinterp :class:`~advinterp.Attack` class around an ART ``EvasionAttack``.

    Args:
        name: registry name (``"art.<x>"``).
        art_class: the ART class or its dotted path (resolved lazily).
        params: ``{name: Param}`` mirroring the ART constructor (same names and defaults);
            ``seed`` (optional) is advinterp's: it seeds the global RNGs ART draws from.
            Every other parameter is passed to ART's constructor.
        doc: the class docstring (its first line is shown by ``advinterp list``).
        class_name: the class's name (set it to the module attribute it is stored in).
        conformance_params: cheap settings for :mod:`advinterp.testing`.
        supports_mask: ART's ``generate`` accepts ``mask=`` (FGSM, BIM, PGD).
        keep: ART attack attributes copied onto the adapter after a run as ``<attr>_``.
        check: cross-parameter check (``_check_params``), raising ``ParameterError``.
        base: an :class:`ARTAttack` subclass to derive from (to customise ``art_kwargs``).
    """
    path = art_class if isinstance(art_class, str) else f"{art_class.__module__}.{art_class.__qualname__}"
    ns: dict[str, Any] = {
        "__doc__": doc, "__module__": module, "__qualname__": class_name,
        "name": name, "params": dict(params), "art_class_path": path,
        "art_params": tuple(k for k in params if k != "seed"),
        "conformance_params": dict(conformance_params or {}),
        "supports_mask": supports_mask, "keep": tuple(keep),
    }
    if check is not None:
        ns["_check_params"] = check
    return type(class_name, (base or ARTAttack,), ns)


# ------------------------------------------------------------------------------ the adapters
def _eps(default: float) -> Param:
    return Param.number(default, low=0.0, doc="maximum perturbation (pixel units, in the norm)")


def _eps_step(default: float) -> Param:
    return Param.number(default, low=0.0, low_open=True, doc="step size per iteration")


_TARGETED = Param.boolean(False, doc="targeted attack (targets are passed to ART as one-hot y)")
_CHEAP_LINF = {"eps": 8 / 255, "eps_step": 2 / 255}


def _check_norm_eps(self) -> None:
    # an l_inf eps is in pixel units: at most 1 (eps=8 is a 0-255 habit)
    if is_linf(self.norm):
        check_linf_eps(type(self).__name__, "eps", self.eps)
    # ART's random start (art.utils.random_sphere) supports only these norms
    if getattr(self, "num_random_init", 0) and self.norm not in ("inf", math.inf, 1, 2):
        raise ParameterError(type(self).__name__, "norm", self.norm, '"inf", np.inf, 1 or 2 with num_random_init > 0',
                             "ART draws random starts only in the l1, l2 and l_inf balls.")


ARTFastGradientMethod = make_art_attack(
    "art.fgsm", _EVASION + "fast_gradient.FastGradientMethod",
    {
        "norm": norm_param(math.inf),
        "eps": _eps(0.3),
        "eps_step": _eps_step(0.1),
        "targeted": _TARGETED,
        "num_random_init": Param.integer(0, low=0, doc="random starts in the eps-ball (0: start at x)"),
        "batch_size": Param.integer(32, low=1),
        "minimal": Param.boolean(False, doc="smallest eps (in eps_step increments) that succeeds"),
        "seed": _seed_param(),
    },
    doc="ART's FastGradientMethod (FGSM for norm=inf; ART's parameters and defaults).",
    class_name="ARTFastGradientMethod", supports_mask=True, check=_check_norm_eps,
    conformance_params={**_CHEAP_LINF, "num_random_init": 1},
)

ARTBasicIterativeMethod = make_art_attack(
    "art.bim", _EVASION + "iterative_method.BasicIterativeMethod",
    {
        "eps": linf_eps_param(0.3, doc="maximum l_inf perturbation (pixel units, at most 1)"),
        "eps_step": _eps_step(0.1),
        "max_iter": Param.integer(100, low=0),
        "targeted": _TARGETED,
        "batch_size": Param.integer(32, low=1),
    },
    doc="ART's BasicIterativeMethod (I-FGSM, l_inf; ART's parameters and defaults).",
    class_name="ARTBasicIterativeMethod", supports_mask=True,
    conformance_params={**_CHEAP_LINF, "max_iter": 3},
)

ARTProjectedGradientDescent = make_art_attack(
    "art.pgd", _EVASION + "projected_gradient_descent.projected_gradient_descent_pytorch."
                          "ProjectedGradientDescentPyTorch",
    {
        "norm": norm_param(math.inf),
        "eps": _eps(0.3),
        "eps_step": _eps_step(0.1),
        "decay": Param.number(None, low=0.0, allow_none=True, doc="momentum decay (None: no momentum)"),
        "max_iter": Param.integer(100, low=0),
        "targeted": _TARGETED,
        "num_random_init": Param.integer(0, low=0, doc="random restarts in the eps-ball (0: start at x)"),
        "batch_size": Param.integer(32, low=1),
        "random_eps": Param.boolean(False, doc="draw eps from a truncated normal"),
        "seed": _seed_param(),
    },
    doc="ART's ProjectedGradientDescentPyTorch (PGD; ART's parameters and defaults).",
    class_name="ARTProjectedGradientDescent", supports_mask=True, check=_check_norm_eps,
    conformance_params={**_CHEAP_LINF, "max_iter": 3, "num_random_init": 1},
)

ARTCarliniL2Method = make_art_attack(
    "art.cw_l2", _EVASION + "carlini.CarliniL2Method",
    {
        "confidence": Param.number(0.0, low=0.0, doc="margin kappa of the adversarial class"),
        "targeted": _TARGETED,
        "learning_rate": Param.number(0.01, low=0.0, low_open=True),
        "binary_search_steps": Param.integer(10, low=0),
        "max_iter": Param.integer(10, low=0),
        "initial_const": Param.number(0.01, low=0.0, low_open=True),
        "max_halving": Param.integer(5, low=1),
        "max_doubling": Param.integer(5, low=1),
        "batch_size": Param.integer(1, low=1),
    },
    doc="ART's CarliniL2Method (Carlini & Wagner l2; ART's parameters and defaults).",
    class_name="ARTCarliniL2Method",
    conformance_params={"max_iter": 3, "binary_search_steps": 2, "batch_size": 4},
)

ARTElasticNet = make_art_attack(
    "art.ead", _EVASION + "elastic_net.ElasticNet",
    {
        "confidence": Param.number(0.0, low=0.0, doc="margin kappa of the adversarial class"),
        "targeted": _TARGETED,
        "learning_rate": Param.number(0.01, low=0.0, low_open=True),
        "binary_search_steps": Param.integer(9, low=0),
        "max_iter": Param.integer(100, low=0),
        "beta": Param.number(0.001, low=0.0, doc="weight of the l1 term"),
        "initial_const": Param.number(0.001, low=0.0, low_open=True),
        "batch_size": Param.integer(1, low=1),
        "decision_rule": Param.choice("EN", ("EN", "L1", "L2")),
    },
    doc="ART's ElasticNet (EAD, elastic-net l1+l2; ART's parameters and defaults).",
    class_name="ARTElasticNet",
    conformance_params={"max_iter": 3, "binary_search_steps": 2, "batch_size": 4},
)

#: sub-attacks of ART's UniversalPerturbation (keys of its ``attacks_dict``, ART 1.17+)
UAP_ATTACKERS = ("carlini", "carlini_inf", "deepfool", "ead", "fgsm", "bim", "pgd", "newtonfool", "jsma", "vat",
                 "simba")


def _check_uap(self) -> None:
    params = self.attacker_params
    if not params:
        return
    owner = type(self).__name__
    if "targeted" in params:
        raise ParameterError(owner, "attacker_params", params, "parameters without 'targeted'",
                             "The universal perturbation is untargeted: its sub-attack is run on the true labels.")
    sub = _resolve(_resolve(_EVASION + "universal_perturbation.UniversalPerturbation").attacks_dict[self.attacker])
    unknown = sorted(set(params) - set(sub.attack_params))
    if unknown:
        raise ParameterError(owner, "attacker_params", params, f"parameters of ART's {sub.__name__}",
                             f"Unknown: {', '.join(unknown)}; accepted: {', '.join(sub.attack_params)}.")


class _UAPBase(ARTAttack):
    """Untargeted only; fills in the sub-attack's ``verbose`` flag (ART would show one progress
    bar per image)."""

    targeted = False  # not a parameter: ART's universal perturbation has no targeted variant
    shardable = False  # one perturbation for the whole set: a study must not cut it into shards

    def art_kwargs(self) -> dict[str, Any]:
        kw = super().art_kwargs()
        sub = _resolve(self.art_class().attacks_dict[self.attacker])
        params = dict(kw["attacker_params"] or {})
        if "verbose" in sub.attack_params and "verbose" not in params:
            params["verbose"] = progress_enabled()  # one progress bar per image otherwise
        kw["attacker_params"] = params or None
        return kw


def _uap_attacker_params() -> Param:
    ok = lambda v: v is None or (isinstance(v, dict) and all(isinstance(k, str) for k in v))  # noqa: E731
    return Param(None, ok, "None or a dict of the sub-attack's parameters (ART's names)",
                 "parameters of the sub-attack, e.g. {'eps': 0.05}", ("eps=0.1", 3))


ARTUniversalPerturbation = make_art_attack(
    "art.uap", _EVASION + "universal_perturbation.UniversalPerturbation",
    {
        "attacker": Param.choice("deepfool", UAP_ATTACKERS, doc="ART's name of the sub-attack"),
        "attacker_params": _uap_attacker_params(),
        "delta": Param.number(0.2, low=0.0, high=1.0, doc="stop when the fooling rate reaches 1 - delta"),
        "max_iter": Param.integer(20, low=1, doc="passes over the images"),
        "eps": Param.number(10.0, low=0.0, low_open=True, doc="radius of the universal perturbation"),
        "norm": norm_param(math.inf),
        "batch_size": Param.integer(32, low=1),
        "seed": _seed_param(),
    },
    doc="ART's UniversalPerturbation (one perturbation for all images; untargeted; ART's parameters).",
    class_name="ARTUniversalPerturbation", keep=("noise", "fooling_rate", "converged"), check=_check_uap,
    base=_UAPBase,
    conformance_params={"attacker": "fgsm", "attacker_params": {"eps": 0.1}, "max_iter": 1, "eps": 0.1},
)

ADAPTERS: tuple[type[ARTAttack], ...] = (ARTFastGradientMethod, ARTBasicIterativeMethod, ARTProjectedGradientDescent,
                                         ARTCarliniL2Method, ARTElasticNet, ARTUniversalPerturbation)
