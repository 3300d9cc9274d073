"""Interactive image manipulation from a crude sketch on an adversarially robust classifier
(capability C5; Jalwana et al. 2020, Sec. 5.2.3, Fig. 8), next to targeted l2 PGD.

The paper turns a raw sketch of the target category into an image of it: the sketch is the
seed, D̄ the class Gaussian's samples (Sec. 5.2), the budget 60 at 3x224x224, and -- unlike
generation and inpainting -- with the refinement (Algorithm 2).

Sketch (:func:`sketch`): the embedded world has no hand drawings, so a crude sketch of an
image is made from the image itself -- its colours reduced to ``colours`` flat regions:

1. a box blur of ``blur`` px (stride 1, ``count_include_pad=False``) removes texture and noise;
2. k-means on the blurred pixels' colours (``colours`` = 3 clusters, initialised at the
   pixels of the luminance quantiles ``(j + 0.5) / k``, 10 Lloyd iterations; deterministic);
3. every pixel takes its cluster's mean colour (of the blurred image).

On the embedded world this gives the object's shape filled with one flat colour on one or two
flat background colours (textures, parts' details and the class's stripes or dots are gone).
For image ``i`` of the batch (class ``c``): seed = ``sketch(x0[i])``, a2e with refinement
(``gamma`` 0.8 triggers it, then every ``refine_every`` iterations up to ``max_iter``) and
the core ``pgd`` (norm 2, eps = eta) target ``c``; the analysed (robust) and the standard
model's confidence in ``c`` are reported for sketch, a2e and PGD images.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from advinterp.api import AdversarialBatch, ModelAdapter, Param, ParameterError

from .generation import A2EGenerationResult, RobustTask, finish, standard_model_param

__all__ = ["sketch", "A2EManipulation", "A2EManipulationResult"]


def sketch(image: torch.Tensor, colours: int = 3, blur: int = 5, iters: int = 10) -> torch.Tensor:
    """A crude sketch ``(C, H, W)`` of ``image`` ``(C, H, W)`` in [0, 1]: box blur of ``blur`` px,
    then every pixel replaced by the mean colour of its k-means cluster (``colours`` clusters)."""
    owner = "sketch"
    x = torch.as_tensor(image)
    if x.dim() != 3 or not x.is_floating_point():
        raise ParameterError(owner, "image", tuple(x.shape), "a (C, H, W) float image")
    if isinstance(colours, bool) or not isinstance(colours, int) or colours < 1:
        raise ParameterError(owner, "colours", colours, "an integer >= 1", "3: the object and a two-tone background.")
    if isinstance(blur, bool) or not isinstance(blur, int) or blur < 1 or blur % 2 == 0:
        raise ParameterError(owner, "blur", blur, "an odd integer >= 1", "1: no blur; 5 removes the world's textures.")
    xd = x.detach().cpu().double()
    if blur > 1:
        xd = F.avg_pool2d(xd[None], blur, stride=1, padding=blur // 2, count_include_pad=False)[0]
    c, h, w = xd.shape
    pix = xd.reshape(c, -1).T  # (H*W, C)
    lum = pix.mean(1)
    order = torch.argsort(lum, stable=True)
    k = min(colours, len(pix))
    centres = pix[order[[int((j + 0.5) / k * (len(pix) - 1)) for j in range(k)]]].clone()
    assign = torch.zeros(len(pix), dtype=torch.long)
    for _ in range(int(iters)):
        assign = torch.cdist(pix, centres).argmin(1)
        for j in range(k):
            sel = assign == j
            if bool(sel.any()):
                centres[j] = pix[sel].mean(0)
    assign = torch.cdist(pix, centres).argmin(1)
    return centres[assign].T.reshape(c, h, w).to(x.dtype).clamp(0, 1)


@dataclass(frozen=True)
class A2EManipulationResult(A2EGenerationResult):
    """``a2e.manipulation`` on a batch: :class:`~advinterp_a2e.generation.A2EGenerationResult`
    with ``seeds`` the sketches and ``original`` the images they were made from."""


class A2EManipulation(RobustTask):
    """Image manipulation from a sketch seed on a robust model: a2e with refinement vs l2 PGD (C5; Fig. 8).

    For the first ``images`` images of the batch (class ``c``): the seed is :func:`sketch` of
    the image (``colours`` flat colours after a ``blur`` px box blur); a2e (eta = 60 scaled with
    sqrt(C*H*W): 17.14 at 3x64x64; D̄ = samples of class ``c``'s Gaussian; Algorithm 2 once
    ``wp >= gamma`` and every ``refine_every`` iterations) and the core ``pgd`` (norm 2, eps =
    eta) target ``c``; the analysed and the ``standard_model``'s confidence in ``c``.

    Parameters (defaults): ``colours`` (3), ``blur`` (5), ``gamma`` (0.8, the refinement
    trigger), ``refine`` (True), ``refine_every`` (25), and those of ``a2e.generation``
    (``images`` 4, ``eta`` None: 60 scaled, ``max_iter`` 60, ``batch`` 16, ``n_samples`` 32,
    ``search_radius`` 0.02, ``pgd_max_iter`` None = ``max_iter``, ``pgd_step`` None = 2.5 *
    eta / pgd_max_iter, ``factor`` 4, ``ridge`` 1e-4, ``standard_model`` "synthetic-cnn",
    ``seed`` 0).
    """

    name = "a2e.manipulation"
    paper_eta = 60.0
    params = {**RobustTask.shared_params(gamma=0.8, refine=True),
              "refine_every": Param.integer(25, low=1, doc="iterations between refinements (paper: 50 of 300)"),
              "colours": Param.integer(3, low=1, doc="flat colours of the sketch"),
              "blur": Param(5, lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 1 and v % 2 == 1,
                            "an odd integer >= 1", "box blur (px) before the colour reduction", (2, 0, 1.5)),
              "standard_model": standard_model_param()}
    conformance_params = {"images": 1, "max_iter": 2, "batch": 2, "n_samples": 2, "pgd_max_iter": 2,
                          "standard_model": None, "refine_every": 1, "gamma": 0.05}

    def _analyze(self, model: ModelAdapter, batch: AdversarialBatch, **context: Any) -> A2EManipulationResult:
        n = self._n(batch)
        shape = tuple(int(s) for s in batch.x0.shape[1:])
        eta = self._eta(shape)
        pool = self._class_pool(batch, context)
        x0 = batch.x0.detach().cpu().float()
        y = batch.y_true.detach().cpu().long()
        seeds, outs, reached, refs, counts = [], [], [], [], []
        for i in range(n):
            c = int(y[i])
            seed_image = sketch(x0[i], int(self.colours), int(self.blur))
            g = self._gaussian(pool, c, i)
            samples = g.sample(int(self.n_samples), torch.Generator().manual_seed(int(self.seed) + i))
            res = self._a2e(model, seed_image, samples, c, i, eta)
            seeds.append(seed_image)
            outs.append((seed_image + res.p.float()).clamp(0, 1))
            reached.append(res.reached)
            refs.append(len(res.refinements))
            counts.append(g.n)
        return finish(self, model, y[:n], seeds, outs, reached, refs, counts, eta, shape, A2EManipulationResult,
                      original=x0[:n])
