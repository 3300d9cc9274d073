"""The native attack ``a2e``: attack-to-explain (Jalwana et al., CVPR 2020) per image.

``generate(model, x, y, target)`` runs :func:`~advinterp_a2e.algorithm.attack_to_explain` once
per image: ``x[i]`` is the seed ``d``, ``target[i]`` the target, and the sample set ``D_bar``
comes from ``distribution``:

* ``"batch"`` (default): the other images of the same call whose label ``y`` differs from
  ``target[i]`` (at most ``n_samples`` of them, the first in batch order), so a study's attack
  step over ``n`` images gives each seed a distribution of ``n - 1`` or fewer natural images;
* ``"noise"``: ``n_samples`` uniform-noise images (seeded), a prior-free distribution for
  tiny batches. Noise images carry no class, so none is dropped (even one the model happens
  to predict as ``target[i]``: a model may map all noise to one class).

``x_adv[i] = Clip(x[i] + p_i)``. The per-image :class:`~advinterp_a2e.algorithm.A2EResult`
(``p``, ``wp`` per iteration, sample indices, ...) of the last call are kept in
``attack.results_``. Targeted only; not shardable (each seed's distribution is the batch).
"""
from __future__ import annotations

import torch

from advinterp.api import Attack, Param, ParameterError, needs_grad, progress_bar

from .algorithm import attack_to_explain, check_settings

__all__ = ["A2E"]


class A2E(Attack):
    """Attack-to-explain (Jalwana et al. 2020): Algorithm 1 + Otsu refinement, per seed image.

    Parameters (Sec. 5.1 defaults): ``eta`` (None = 10 at 3x224x224 scaled with sqrt(pixels),
    2.857 at 3x64x64), ``batch`` (32), ``gamma`` (0.8), ``alpha`` (0.9), ``beta`` (0.999),
    ``max_iter`` (300), ``refine`` (True), ``refine_every`` (50), ``refine_layer`` (None: the
    layer feeding global pooling), ``refine_scale`` (lambda = 5), ``search_on`` ("all"),
    ``distribution`` ("batch" | "noise"), ``n_samples`` (256), ``step`` (1), ``seed`` (0),
    ``targeted`` (True; required).
    """

    name = "a2e"
    shardable = False
    params = {
        "eta": Param.number(None, low=0.0, low_open=True, allow_none=True,
                            doc="l2 bound of p in pixel units; None: 10 * sqrt(C*H*W / (3*224*224))"),
        "batch": Param.integer(32, low=2, doc="mini-batch size b: the seed plus b - 1 samples"),
        "gamma": Param.number(0.8, low=0.0, high=1.0, low_open=True, doc="stop probability"),
        "alpha": Param.number(0.9, low=0.0, high=0.999999, doc="first-moment decay"),
        "beta": Param.number(0.999, low=0.0, high=0.999999, doc="second-moment decay"),
        "max_iter": Param.integer(300, low=0, doc="Algorithm 1 iterations in all"),
        "refine": Param.boolean(True, doc="interleave Algorithm 2 (Sec. 5.1 schedule)"),
        "refine_every": Param.integer(50, low=1, doc="iterations between refinements once gamma is reached"),
        "refine_layer": Param(None, lambda v: v is None or (isinstance(v, str) and bool(v)),
                              "None or a layer name", "output of the convolutional base (None: model.cam_layer)",
                              (3,)),
        "refine_scale": Param.number(5.0, low=0.0, low_open=True, doc="lambda of Algorithm 2"),
        "search_on": Param.choice("all", ("all", "batch"), doc="images of the sign search (lines 11-12)"),
        "distribution": Param.choice("batch", ("batch", "noise"), doc="where D_bar comes from"),
        "n_samples": Param.integer(256, low=1, doc="|D_bar| at most"),
        "step": Param.number(1.0, low=0.0, low_open=True, doc="multiplier of rho on lines 16/18"),
        "seed": Param.integer(0, low=0, doc="seed of the sample draws (and of the noise distribution)"),
        "targeted": Param(True, lambda v: v is True, "True (a2e is a targeted attack)", "", (False,)),
    }
    conformance_params = {"batch": 3, "max_iter": 3, "distribution": "noise", "n_samples": 6, "gamma": 0.05,
                          "refine_every": 1}

    def _check_params(self) -> None:
        check_settings(self.eta, self.batch, self.gamma, self.alpha, self.beta, self.max_iter, self.refine_every,
                       self.step)

    def _samples(self, model, x, y, i: int, target: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        owner = "A2E.generate"
        if self.distribution == "noise":
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + i)
            noise = torch.rand(self.n_samples, *x.shape[1:], generator=g).to(x.device, x.dtype)
            return noise, None  # noise images carry no class: none is dropped
        others = torch.tensor([j for j in range(len(x)) if j != i and int(y[j]) != target], dtype=torch.long)
        if len(others) == 0:
            raise ParameterError(owner, "y", y.tolist(), f"other images than image {i} with labels other than its "
                                 f"target {target} (distribution='batch' samples D_bar from the batch)",
                                 "Attack more images at once, or use distribution='noise'.")
        others = others[:self.n_samples]
        return x[others.to(x.device)], None

    @needs_grad
    def _generate(self, model, x, y, target, **kw):
        out = x.clone()
        self.results_ = []
        for i in progress_bar(range(len(x)), desc="a2e", total=len(x)):
            t = int(target[i])
            samples, labels = self._samples(model, x, y, i, t)
            res = attack_to_explain(
                model, x[i], samples, t, sample_labels=labels, eta=self.eta, batch=self.batch, gamma=self.gamma,
                alpha=self.alpha, beta=self.beta, step=self.step, max_iter=self.max_iter, refine=self.refine,
                refine_every=self.refine_every, refine_layer=self.refine_layer, refine_scale=self.refine_scale,
                search_on=self.search_on, seed=self.seed + i, progress=False)
            self.results_.append(res)
            out[i] = (x[i] + res.p.to(x.device, x.dtype)).clamp(0, 1)
        return out
