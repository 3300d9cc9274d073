"""Image generation with an adversarially robust classifier (capability C5; Jalwana et al. 2020,
Sec. 5.2.1, Fig. 6), next to the baseline of Santurkar et al. (2019): targeted l2 PGD.

For image ``i`` of a batch (its class ``c = y_true[i]`` is the intended class):

1. the class-conditional Gaussian of class ``c`` (:mod:`.gaussian`: 4x downsampled mean and
   covariance, bilinear upsampling) is fitted to the class images -- the batch's other images
   of class ``c`` (context ``class_images`` / ``class_labels`` replaces them: a tensor pair or
   an :class:`~advinterp.api.AdversarialBatch` whose ``x0`` / ``y_true`` are used);
2. the seed is one Gaussian sample, D̄ ``n_samples`` further samples (same generator,
   ``seed + i``);
3. a2e: :func:`~advinterp_a2e.algorithm.attack_to_explain` on the analysed (robust) model,
   target ``c``, budget ``eta`` (the paper's 40 at 3x224x224 scaled with ``sqrt(C*H*W)``:
   11.43 at 3x64x64), no refinement (Sec. 5.2: "we do not use the refinement step"), D̄ given
   explicitly (``sample_labels=None``: the samples are of the target class, as in Sec. 5.2);
4. baseline: the core ``pgd`` attack, ``norm=2``, targeted at ``c``, ``eps = eta`` (the same
   l2 budget), from the same seed (``num_random_init=0``), ``pgd_max_iter`` steps of
   ``pgd_step`` (None: ``2.5 * eta / pgd_max_iter``, Madry et al.'s rule);
5. the robust (analysed) and the standard model's (``standard_model``) softmax confidence in
   ``c`` for the seed, the a2e image ``Clip(seed + p)`` and the PGD image.

The shared machinery (:class:`RobustTask`: parameters, class images, Gaussians, a2e and PGD
runs, confidences) serves :mod:`.inpainting` and :mod:`.manipulation` too.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch

from advinterp.api import AdversarialBatch, Analyzer, ModelAdapter, Param, ParameterError, Result, get_attack, get_model

from .algorithm import PAPER_PIXELS, A2EResult, attack_to_explain
from .gaussian import ClassGaussian, class_gaussian

__all__ = ["scaled_eta", "RobustTask", "A2EGeneration", "A2EGenerationResult", "SEARCH_RADIUS"]

#: Default ``search_radius`` of the robust tasks (the paper's probe is ``p +/- rho/||rho||_inf``,
#: radius 1): measured on synthetic-cnn-robust, radius 1 saturates both probes and the sign
#: choice is a coin flip (docs/attack_to_explain.md, C5).
SEARCH_RADIUS = 0.02


def scaled_eta(paper_eta: float, shape: tuple[int, ...]) -> float:
    """A budget given at 3x224x224 scaled to images of ``shape`` (``(C, H, W)`` or ``(N, C, H, W)``)
    with ``sqrt(C*H*W / (3*224*224))``, the rule of :func:`~advinterp_a2e.algorithm.default_eta`."""
    c, h, w = (int(s) for s in shape[-3:])
    return float(paper_eta) * math.sqrt(c * h * w / PAPER_PIXELS)


def _model_name_ok(v: Any) -> bool:
    return v is None or (isinstance(v, str) and bool(v))


def _probs(model: ModelAdapter, x: torch.Tensor, target: torch.Tensor) -> np.ndarray:
    """``(N,)`` float64 softmax probability of ``target[i]`` for ``x[i]``."""
    if len(x) == 0:
        return np.zeros(0)
    with torch.no_grad():
        p = torch.softmax(model.logits(x.to(model.device, model.dtype)).double(), 1).cpu()
    return p.gather(1, target.long().cpu()[:, None])[:, 0].numpy()


def standard_model_param() -> Param:
    """``standard_model``: a registered model name (default ``"synthetic-cnn"``) or None."""
    return Param("synthetic-cnn", _model_name_ok, "None or a registered model name",
                 "the standard model whose confidence in the intended class is reported too (None: none)", (3, ""))


class RobustTask(Analyzer):
    """Shared parameters and steps of the robust-model tasks (not registered itself).

    Subclasses set ``paper_eta``, ``refine_default``, ``gamma_default`` and implement
    ``_analyze``."""

    context_keys = ("class_images", "class_labels")
    #: The paper's budget for the task at 3x224x224.
    paper_eta: ClassVar[float] = 40.0

    @staticmethod
    def shared_params(gamma: float, refine: bool) -> dict[str, Param]:
        return {
            "images": Param.integer(4, low=0, doc="the first `images` images of the batch (0: all)"),
            "eta": Param.number(None, low=0.0, low_open=True, allow_none=True,
                                doc="l2 budget of a2e and PGD; None: the paper's value at 3x224x224 scaled "
                                    "with sqrt(C*H*W / (3*224*224))"),
            "max_iter": Param.integer(60, low=1, doc="a2e iterations (paper: 300)"),
            "batch": Param.integer(16, low=2, doc="a2e mini-batch b (paper: 32), at most n_samples + 1"),
            "n_samples": Param.integer(32, low=1, doc="|D_bar|: Gaussian samples (paper: 256)"),
            "gamma": Param.number(gamma, low=0.0, high=1.0, low_open=True,
                                  doc="a2e stop / refinement-trigger probability"),
            "refine": Param.boolean(refine, doc="interleave Algorithm 2 (Sec. 5.1 schedule)"),
            "refine_every": Param.integer(50, low=1, doc="iterations between refinements"),
            "search_radius": Param.number(SEARCH_RADIUS, low=0.0, low_open=True,
                                          doc="a2e's sign-search probe p +/- radius * rho/||rho||_inf (paper: 1)"),
            "step": Param.number(1.0, low=0.0, low_open=True, doc="a2e's multiplier of rho (paper: 1)"),
            "pgd_max_iter": Param.integer(None, low=1, allow_none=True, doc="PGD steps (None: max_iter)"),
            "pgd_step": Param.number(None, low=0.0, low_open=True, allow_none=True,
                                     doc="PGD l2 step (None: 2.5 * eta / pgd_max_iter)"),
            "factor": Param.integer(4, low=1, doc="downsampling factor of the Gaussian (paper: 4)"),
            "ridge": Param.number(1e-4, low=0.0, doc="ridge added to the Gaussian's covariance"),
            "seed": Param.integer(0, low=0, doc="seed of the Gaussian draws (image i: seed + i) and of a2e"),
        }

    # ------------------------------------------------------------------ pieces
    def _owner(self) -> str:
        return f"{type(self).__name__}.analyze"

    def _eta(self, shape: tuple[int, ...]) -> float:
        return float(self.eta) if self.eta is not None else scaled_eta(self.paper_eta, shape)

    def _pgd_settings(self, eta: float) -> tuple[int, float]:
        iters = int(self.pgd_max_iter) if self.pgd_max_iter is not None else int(self.max_iter)
        step = float(self.pgd_step) if self.pgd_step is not None else 2.5 * eta / iters
        return iters, step

    def _n(self, batch: AdversarialBatch) -> int:
        n = len(batch.x0)
        return min(n, int(self.images)) if self.images else n

    def _class_pool(self, batch: AdversarialBatch, context: dict) -> tuple[torch.Tensor, torch.Tensor, bool]:
        """``(images, labels, from_batch)``: where the Gaussians come from."""
        cx, cy = context.get("class_images"), context.get("class_labels")
        if cx is None and cy is None:
            return batch.x0.detach().cpu().float(), batch.y_true.detach().cpu().long(), True
        if isinstance(cx, AdversarialBatch):
            return cx.x0.detach().cpu().float(), cx.y_true.detach().cpu().long(), False
        if cx is None or cy is None:
            raise ParameterError(self._owner(), "class_images", type(cx).__name__,
                                 "class_images and class_labels together, or class_images an AdversarialBatch")
        cx, cy = torch.as_tensor(cx).detach().cpu().float(), torch.as_tensor(cy).detach().cpu().long().flatten()
        if cx.dim() != 4 or len(cx) != len(cy) or tuple(cx.shape[1:]) != tuple(batch.x0.shape[1:]):
            raise ParameterError(self._owner(), "class_images", tuple(cx.shape),
                                 f"(M, {', '.join(map(str, batch.x0.shape[1:]))}) images with M labels")
        if len(cx) and (float(cx.min()) < 0 or float(cx.max()) > 1):
            raise ParameterError(self._owner(), "class_images", "pixels", "pixels in [0, 1]")
        return cx, cy, False

    def _gaussian(self, pool: tuple[torch.Tensor, torch.Tensor, bool], c: int, i: int) -> ClassGaussian:
        """The Gaussian of class ``c``: the pool's images of class ``c`` (without batch image
        ``i`` when the pool is the batch itself, so the image analysed never enters it)."""
        x, y, from_batch = pool
        sel = y == c
        if from_batch:
            sel[i] = False
        if not bool(sel.any()):
            raise ParameterError(self._owner(), "class_images", f"no image of class {c}",
                                 f"at least one image of class {c}" + (f" other than image {i}" if from_batch else ""),
                                 "Analyse a batch with several images per class, or pass class images as context "
                                 "class_images / class_labels (e.g. an attack step over the train split).")
        return class_gaussian(x[sel], factor=int(self.factor), ridge=float(self.ridge))

    def _a2e(self, model: ModelAdapter, seed_image: torch.Tensor, samples: torch.Tensor, c: int, i: int,
             eta: float, **extra: Any) -> A2EResult:
        return attack_to_explain(
            model, seed_image, samples, c, sample_labels=None, eta=eta, batch=min(int(self.batch), len(samples) + 1),
            gamma=float(self.gamma), max_iter=int(self.max_iter), refine=bool(self.refine),
            refine_every=int(self.refine_every), search_radius=float(self.search_radius), step=float(self.step),
            seed=int(self.seed) + i, progress=False, **extra)

    def _pgd(self, model: ModelAdapter, seeds: torch.Tensor, target: torch.Tensor, eta: float,
             mask: torch.Tensor | None = None) -> torch.Tensor:
        """Targeted l2 PGD (core ``pgd``, ``norm=2``) from ``seeds`` with ``eps = eta``. The label
        handed to ``generate`` as ``y`` is a placeholder ``(c + 1) % K`` (the seeds have no true
        label; targeted PGD never reads it)."""
        if len(seeds) == 0:
            return seeds.clone()
        iters, step = self._pgd_settings(eta)
        atk = get_attack("pgd", norm=2, eps=eta, eps_step=step, max_iter=iters, targeted=True, num_random_init=0)
        placeholder = (target + 1) % model.nb_classes
        return atk.generate(model, seeds, placeholder, target, mask=mask).x_adv.detach().cpu().float()

    def _standard(self, shape: tuple[int, ...]) -> ModelAdapter | None:
        if getattr(self, "standard_model", None) is None:
            return None
        m = get_model(self.standard_model)
        if m.input_shape is not None and tuple(int(s) for s in m.input_shape) != tuple(shape):
            raise ParameterError(self._owner(), "standard_model", self.standard_model,
                                 f"a model taking {tuple(shape)} images", f"It takes {tuple(m.input_shape)}.")
        return m

    def _attack_params(self, eta: float) -> dict[str, Any]:
        iters, step = self._pgd_settings(eta)
        return {"eta": eta, "pgd": {"norm": 2, "eps": eta, "eps_step": step, "max_iter": iters, "targeted": True,
                                    "num_random_init": 0}}


@dataclass(frozen=True)
class A2EGenerationResult(Result):
    """``a2e.generation`` (or ``a2e.manipulation``) on a batch: per image ``i``.

    Attributes:
        target: ``(N,)`` the intended class (``y_true[i]``).
        seeds: ``(N, C, H, W)`` the seeds (Gaussian samples; sketches for manipulation).
        a2e: ``(N, C, H, W)`` ``Clip(seed + p)``; ``pgd``: ``(N, C, H, W)`` the PGD images.
        robust_seed, robust_a2e, robust_pgd: ``(N,)`` the analysed (robust) model's softmax
            probability of ``target`` for the seed, the a2e and the PGD image.
        standard_seed, standard_a2e, standard_pgd: ``(N,)`` the same for ``standard_model``
            (NaN without one).
        l2_a2e, l2_pgd: ``(N,)`` ``||image - seed||_2`` (both <= ``eta``).
        reached: ``(N,)`` a2e's iteration with ``wp >= gamma`` (-1: never).
        refinements: ``(N,)`` the number of Algorithm 2 steps a2e applied.
        n_class_images: ``(N,)`` images the class Gaussian was fitted on.
        eta: the l2 budget. standard_model: its name ("" for none).
        original: ``(N, C, H, W)`` the batch's images the sketches were made from
            (manipulation; ``None`` for generation).
        attack_params: the a2e budget and the PGD settings. params: the analyzer's settings.
    """

    target: np.ndarray
    seeds: torch.Tensor
    a2e: torch.Tensor
    pgd: torch.Tensor
    robust_seed: np.ndarray
    robust_a2e: np.ndarray
    robust_pgd: np.ndarray
    standard_seed: np.ndarray
    standard_a2e: np.ndarray
    standard_pgd: np.ndarray
    l2_a2e: np.ndarray
    l2_pgd: np.ndarray
    reached: np.ndarray
    refinements: np.ndarray
    n_class_images: np.ndarray
    eta: float
    standard_model: str = ""
    original: torch.Tensor | None = None
    attack_params: dict = field(default_factory=dict)
    params: dict = field(default_factory=dict)

    def rows(self) -> list[dict[str, Any]]:
        """One row per image."""
        return [{"image": i, "target": int(self.target[i]), "robust_seed": float(self.robust_seed[i]),
                 "robust_a2e": float(self.robust_a2e[i]), "robust_pgd": float(self.robust_pgd[i]),
                 "standard_seed": float(self.standard_seed[i]), "standard_a2e": float(self.standard_a2e[i]),
                 "standard_pgd": float(self.standard_pgd[i]), "l2_a2e": float(self.l2_a2e[i]),
                 "l2_pgd": float(self.l2_pgd[i]), "reached": int(self.reached[i]),
                 "refinements": int(self.refinements[i]), "n_class_images": int(self.n_class_images[i])}
                for i in range(len(self.target))]

    def summary_rows(self) -> list[dict[str, Any]]:
        """One row per (model, image kind): mean confidence in the intended class and the
        top-1 rate of ``confidence > 0.5`` over images."""
        out = []
        for model, pre in (("robust", "robust"), (self.standard_model or "standard", "standard")):
            for kind in ("seed", "a2e", "pgd"):
                v = np.asarray(getattr(self, f"{pre}_{kind}"), dtype=float)
                v = v[np.isfinite(v)]
                out.append({"model": model, "image": kind, "images": int(v.size),
                            "confidence": float(v.mean()) if v.size else float("nan"),
                            "confidence_gt_0.5": float((v > 0.5).mean()) if v.size else float("nan")})
        return out


class A2EGeneration(RobustTask):
    """Image generation from class-Gaussian seeds on a robust model: a2e vs l2 PGD (C5; Fig. 6).

    For the first ``images`` images of the batch, their class ``c`` is the intended class; the
    seed and D̄ are samples of class ``c``'s Gaussian (4x downsampled, Sec. 5.2) fitted on the
    batch's other images of class ``c`` (or context ``class_images`` / ``class_labels``). a2e
    (eta = the paper's 40 scaled with sqrt(C*H*W): 11.43 at 3x64x64; no refinement) and the
    core ``pgd`` (norm 2, eps = eta, same seed) are run on the analysed model; the analysed and
    the ``standard_model``'s confidence in ``c`` are reported for seed, a2e and PGD images.

    Parameters (defaults): ``images`` (4), ``eta`` (None: 40 scaled), ``max_iter`` (60),
    ``batch`` (16), ``n_samples`` (32), ``gamma`` (1.0: run all ``max_iter`` iterations, as PGD
    does), ``refine`` (False), ``refine_every`` (50), ``search_radius`` (0.02), ``step`` (1),
    ``pgd_max_iter`` (None: ``max_iter``), ``pgd_step`` (None: ``2.5 * eta / pgd_max_iter``),
    ``factor`` (4), ``ridge`` (1e-4), ``standard_model`` ("synthetic-cnn"; None: none),
    ``seed`` (0). See docs/attack_to_explain.md (C5).
    """

    name = "a2e.generation"
    paper_eta = 40.0
    params = {**RobustTask.shared_params(gamma=1.0, refine=False), "standard_model": standard_model_param()}
    conformance_params = {"images": 1, "max_iter": 2, "batch": 2, "n_samples": 2, "pgd_max_iter": 2,
                          "standard_model": None}

    def _analyze(self, model: ModelAdapter, batch: AdversarialBatch, **context: Any) -> A2EGenerationResult:
        n = self._n(batch)
        shape = tuple(int(s) for s in batch.x0.shape[1:])
        eta = self._eta(shape)
        pool = self._class_pool(batch, context)
        y = batch.y_true.detach().cpu().long()
        seeds, outs, reached, refs, counts = [], [], [], [], []
        for i in range(n):
            c = int(y[i])
            g = self._gaussian(pool, c, i)
            gen = torch.Generator().manual_seed(int(self.seed) + i)
            seed_image = g.sample(1, gen)[0]
            samples = g.sample(int(self.n_samples), gen)
            res = self._a2e(model, seed_image, samples, c, i, eta)
            seeds.append(seed_image)
            outs.append((seed_image + res.p.float()).clamp(0, 1))
            reached.append(res.reached)
            refs.append(len(res.refinements))
            counts.append(g.n)
        return finish(self, model, y[:n], seeds, outs, reached, refs, counts, eta, shape, A2EGenerationResult)


def finish(task: RobustTask, model: ModelAdapter, target: torch.Tensor, seeds: list, outs: list, reached: list,
           refs: list, counts: list, eta: float, shape: tuple, cls: type, original: torch.Tensor | None = None,
           mask: torch.Tensor | None = None) -> Any:
    """PGD from the same seeds and the confidences; the result of type ``cls``."""
    s = torch.stack(seeds).float() if seeds else torch.zeros(0, *shape)
    a = torch.stack(outs).float() if outs else torch.zeros(0, *shape)
    p = task._pgd(model, s, target, eta, mask)
    std = task._standard(shape)
    nan = np.full(len(s), np.nan)
    conf = {f"robust_{k}": _probs(model, v, target) for k, v in (("seed", s), ("a2e", a), ("pgd", p))}
    conf.update({f"standard_{k}": (nan.copy() if std is None else _probs(std, v, target))
                 for k, v in (("seed", s), ("a2e", a), ("pgd", p))})
    return cls(target=target.numpy(), seeds=s, a2e=a, pgd=p, **conf,
               l2_a2e=(a - s).flatten(1).norm(dim=1).double().numpy(),
               l2_pgd=(p - s).flatten(1).norm(dim=1).double().numpy(),
               reached=np.asarray(reached, dtype=np.int64), refinements=np.asarray(refs, dtype=np.int64),
               n_class_images=np.asarray(counts, dtype=np.int64), eta=float(eta),
               standard_model=task.standard_model or "", original=original,
               attack_params=task._attack_params(eta), params=task.get_params())
