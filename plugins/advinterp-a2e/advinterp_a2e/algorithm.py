"""Algorithm 1 of Jalwana et al., "Attack to Explain Deep Representation" (CVPR 2020):
perturbation estimation, with Algorithm 2 (:mod:`.refinement`) interleaved as in Sec. 5.1.

Eq. 3: ``max_p  E_{I ~ S} [P(K(I + p) -> target)]  s.t.  ||p||_2 <= eta`` over the set
``S = {d} U D_bar`` of a seed image ``d`` and samples ``D_bar`` of other classes.

:func:`attack_to_explain` runs it on tensors and returns an :class:`A2EResult` that keeps
``p``, the probability ``wp`` (the paper's "script p") of every iteration, the sample indices
of every mini-batch, the sign chosen by the search, the refinement steps and the optimiser's
state, so a run can be inspected and resumed (``resume=previous_result``).

Line by line (the paper's numbers; ``d_bar`` is the untouched seed, ``D_bar`` the samples):

1. ``p, mu, sigma = 0``; ``t = wp = 0``; ``alpha = 0.9``, ``beta = 0.999``.
2. while ``wp < gamma`` (and ``t < max_iter``):
3. ``D``: ``b - 1`` samples of ``D_bar`` drawn without replacement (seeded generator).
4. ``D <- Clip(D + p)``, ``d <- Clip(d_bar + p)`` (``p`` applied to untouched copies).
5. ``t <- t + 1``.
6. ``xi = ||grad J(d)||_2 / mean_i ||grad J(d_i)||_2`` (``J`` = cross-entropy to the target,
   gradients w.r.t. the clipped images; ``xi = 0`` if every sample gradient is 0).
7. ``g = grad J(d) / 2 + xi / 2 * mean_i grad J(d_i)``.
8. ``mu = alpha mu + (1 - alpha) g``;  9. ``sigma = beta sigma + (1 - beta) g * g``.
10. ``rho = mu sqrt(1 - beta^t) / ((sqrt(sigma) + eps) (1 - alpha^t))`` (``eps = 1e-8``).
11-14. ``varrho+/-`` = mean target probability of ``D_bar`` (``search_on="all"``, the paper)
   or of the mini-batch (``"batch"``) perturbed by ``p -/+ rho / ||rho||_inf``, clipped to
   [0, 1] (``clip_search=True``; the paper writes no Clip on lines 11-12).
15-19. ``p <- p + step * rho`` if ``varrho+ >= varrho-`` else ``p - step * rho``
   (``step = 1``: the paper has no step size).
20. ``p <- p * min(1, eta / ||p||_2)``.
21-22. ``wp`` = mean target probability of ``Clip({d_bar} U D + p)`` (the mini-batch of line 3).

Schedule (Sec. 5.1, ``refine=True``): Algorithm 1 runs until ``wp >= gamma`` (iteration
``reached``); then Algorithm 2 refines ``p``; Algorithm 1 continues (no longer stopping at
gamma) with a refinement after every ``refine_every`` further iterations, until ``max_iter``
iterations in all. A refinement is never the last operation (one due at ``max_iter`` is
skipped), so the result has passed through Algorithm 1 after its last filtration, as the
paper says ("the output of Algorithm 2 is further processed by Algorithm 1"). If gamma is
never reached no refinement happens. With ``refine=False`` it is Algorithm 1 alone: stop at
``wp >= gamma`` or ``max_iter``.

``eta``: 10 for 3x224x224 pixels in [0, 1] (the paper); ``eta=None`` scales it with the square
root of the number of pixel values, ``10 * sqrt(C*H*W / (3*224*224))`` (2.857 at 3x64x64)
(:func:`default_eta`).

Eq. 4 (Sec. 5.2.2, inpainting; ``penalty_mask`` given): every image's loss gains
``penalty_beta * ||p * (1 - F)||_2`` (``F`` = 1 on the corrupt region, ``penalty_beta`` = the
paper's beta = 10; not to be confused with ``beta``, the second-moment decay of line 9), so p
grows freely inside the corrupt region and is held small outside it. As ``I_p = I + p``, the
penalty's gradient w.r.t. each image is ``penalty_beta * p (1 - F) / ||p (1 - F)||_2`` (0 at
``p (1 - F) = 0``); it is added to every ``grad J(d_i)`` of line 6 before the fusion of line 7
(the expectation of eq. 4 holds the penalty inside). The sign search (lines 11-14) still scores
the target probability alone. Without ``penalty_mask`` nothing changes (bit for bit).

``batched=True`` (default) computes the mini-batch gradient in one forward/backward and the
sign search in shared forwards of ``eval_batch_size`` images (both signs together);
``batched=False`` is the straightforward reference with one forward per image (the
benchmark's baseline, same numbers up to float rounding).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
import torch.nn.functional as F

from advinterp.api import ModelAdapter, ParameterError, Result, as_adapter, progress_bar

__all__ = ["A2EResult", "attack_to_explain", "default_eta", "PAPER_ETA", "PAPER_PIXELS"]

#: The paper's eta (Sec. 5.1) and the number of pixel values it is given for (3x224x224).
PAPER_ETA = 10.0
PAPER_PIXELS = 3 * 224 * 224
OWNER = "attack_to_explain"


def default_eta(shape: tuple[int, ...]) -> float:
    """The paper's ``eta = 10`` at 3x224x224, scaled with ``sqrt(C*H*W)`` to images of ``shape``
    (``(C, H, W)`` or ``(N, C, H, W)``): ``10 * sqrt(C*H*W / 150528)``."""
    c, h, w = (int(s) for s in shape[-3:])
    return PAPER_ETA * math.sqrt(c * h * w / PAPER_PIXELS)


@dataclass(frozen=True)
class A2EResult(Result):
    """One run of Algorithm 1 (+ 2) for one seed image and one target.

    Attributes:
        p: ``(C, H, W)`` the perturbation (pixel units; ``||p||_2 <= eta`` after every Alg. 1
            iteration).
        wp: ``(T,)`` float64, the mean target probability on the clipped mini-batch after
            each iteration (lines 21-22).
        indices: ``(T, b - 1)`` long, the rows of ``samples`` forming each mini-batch (line 3).
        directions: ``(T,)`` int8, ``+1`` when the search took ``p + rho``, ``-1`` for ``p - rho``.
        refinements: ``(R,)`` long, the iterations after which Algorithm 2 was applied.
        reached: first iteration with ``wp >= gamma`` (``-1``: never).
        iterations: ``T``.
        target, eta, gamma, batch: the run's settings (``eta`` after defaulting).
        mu, sigma: ``(C, H, W)`` the moments (lines 8-9), for resuming.
        rng_state: the sample generator's state, for resuming.
        params: every setting of the run.
    """

    p: torch.Tensor
    wp: torch.Tensor
    indices: torch.Tensor
    directions: torch.Tensor
    refinements: torch.Tensor
    reached: int
    iterations: int
    target: int
    eta: float
    gamma: float
    batch: int
    mu: torch.Tensor
    sigma: torch.Tensor
    rng_state: torch.Tensor
    params: dict = field(default_factory=dict)

    @property
    def success(self) -> bool:
        """Whether ``wp >= gamma`` was reached."""
        return self.reached >= 0

    def rows(self) -> list[dict[str, Any]]:
        return [{"target": self.target, "iterations": self.iterations, "reached": self.reached,
                 "wp_max": float(self.wp.max()) if len(self.wp) else float("nan"),
                 "wp_last": float(self.wp[-1]) if len(self.wp) else float("nan"),
                 "refinements": len(self.refinements), "p_l2": float(self.p.norm()), "eta": self.eta}]


# ---------------------------------------------------------------------------- checks
def _number(name: str, value: Any, ok: Callable[[float], bool], expected: str, hint: str) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ParameterError(OWNER, name, value, expected, hint) from None
    if not math.isfinite(v) or not ok(v):
        raise ParameterError(OWNER, name, value, expected, hint)
    return v


def check_settings(eta: Any, batch: Any, gamma: Any, alpha: Any, beta: Any, max_iter: Any,
                   refine_every: Any, step: Any) -> None:
    """ParameterError for a setting outside its domain (shared with the ``a2e`` attack)."""
    if eta is not None:
        _number("eta", eta, lambda v: v > 0, "a number > 0 (the l2 bound of p, pixel units)",
                "Use eta=None for the paper's 10 at 3x224x224 scaled to the image size.")
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 2:
        raise ParameterError(OWNER, "batch", batch, "an integer >= 2 (the seed plus b - 1 samples)",
                             "The paper uses b = 32.")
    _number("gamma", gamma, lambda v: 0 < v <= 1, "a probability in (0, 1]",
            "gamma is the mean target probability at which Algorithm 1 stops; the paper uses 0.8.")
    _number("alpha", alpha, lambda v: 0 <= v < 1, "a number in [0, 1)", "The paper uses alpha = 0.9.")
    _number("beta", beta, lambda v: 0 <= v < 1, "a number in [0, 1)", "The paper uses beta = 0.999.")
    if isinstance(max_iter, bool) or not isinstance(max_iter, int) or max_iter < 0:
        raise ParameterError(OWNER, "max_iter", max_iter, "an integer >= 0", "The paper stops at 300.")
    if isinstance(refine_every, bool) or not isinstance(refine_every, int) or refine_every < 1:
        raise ParameterError(OWNER, "refine_every", refine_every, "an integer >= 1", "The paper uses 50.")
    _number("step", step, lambda v: v > 0, "a number > 0", "step=1 is the paper's update p +/- rho.")


def _images(name: str, x: Any, ndim: int) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        try:
            x = torch.as_tensor(x)
        except Exception:
            raise ParameterError(OWNER, name, x, f"a {ndim}-d float tensor of pixels in [0, 1]") from None
    if x.ndim != ndim or not x.is_floating_point():
        raise ParameterError(OWNER, name, x, f"a {ndim}-d float tensor of pixels in [0, 1]",
                             f"Got shape {tuple(x.shape)} and dtype {x.dtype}.")
    if x.numel() and (not torch.isfinite(x).all() or x.min() < 0 or x.max() > 1):
        raise ParameterError(OWNER, name, x, "finite pixels in [0, 1]", "Scale 0-255 images by 1/255.")
    return x


# ---------------------------------------------------------------------------- the pieces
def target_probability(model: ModelAdapter, x: torch.Tensor, target: int, chunk: int | None = None) -> torch.Tensor:
    """``(N,)`` softmax probability of ``target`` for pixels ``x`` (no gradient), ``chunk`` images
    per forward (``None``: all at once)."""
    with torch.no_grad():
        if chunk is None or len(x) <= chunk:
            return F.softmax(model.logits_channels_last(x).float(), 1)[:, target]
        return torch.cat([F.softmax(model.logits_channels_last(x[i:i + chunk]).float(), 1)[:, target]
                          for i in range(0, len(x), chunk)])


def ce_gradients(model: ModelAdapter, x: torch.Tensor, target: int, batched: bool = True) -> torch.Tensor:
    """``(N, C, H, W)`` gradient of the cross-entropy to ``target`` of each image w.r.t. itself
    (line 6's ``grad J(d_i)``): one forward/backward of the batch (the per-image losses are
    summed; eval mode makes them independent) or one per image."""
    if not batched:
        return torch.cat([ce_gradients(model, x[i:i + 1], target, True) for i in range(len(x))])
    with torch.enable_grad():
        xg = x.detach().clone().requires_grad_(True)
        logits = model.logits_channels_last(xg)
        tgt = torch.full((len(xg),), int(target), dtype=torch.long, device=logits.device)
        loss = F.cross_entropy(logits, tgt, reduction="sum")
        (grad,) = torch.autograd.grad(loss, xg)
    return grad.detach()


def fuse(grad_seed: torch.Tensor, grad_samples: torch.Tensor) -> tuple[float, torch.Tensor]:
    """Lines 6-7: ``(xi, g)`` from the seed's gradient ``(C, H, W)`` and the samples' ``(b-1, C, H, W)``."""
    norms = grad_samples.flatten(1).norm(dim=1)
    mean_norm = float(norms.mean())
    xi = float(grad_seed.norm()) / mean_norm if mean_norm > 0 else 0.0
    g = 0.5 * grad_seed + (xi / 2) * grad_samples.mean(0)
    return xi, g


def moment_step(mu: torch.Tensor, sigma: torch.Tensor, g: torch.Tensor, t: int, alpha: float, beta: float,
                eps: float = 1e-8) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Lines 8-10: ``(mu_t, sigma_t, rho)``."""
    mu = alpha * mu + (1 - alpha) * g
    sigma = beta * sigma + (1 - beta) * g * g
    rho = mu * math.sqrt(1 - beta ** t) / ((sigma.sqrt() + eps) * (1 - alpha ** t))
    return mu, sigma, rho


def penalty_gradient(p: torch.Tensor, keep: torch.Tensor, weight: float) -> torch.Tensor:
    """Gradient of ``weight * ||p * keep||_2`` w.r.t. ``p`` (eq. 4 with ``keep = 1 - F``):
    ``weight * keep^2 * p / ||p * keep||_2``, zero where ``p * keep = 0``."""
    q = p * keep
    n = float(q.norm())
    return q * keep * (weight / n) if n > 0 else torch.zeros_like(p)


def _penalty_keep(penalty_mask: Any, shape: tuple[int, ...]) -> torch.Tensor:
    """``1 - F`` as a float ``(1 or C, H, W)`` tensor from a 0/1 ``F`` of shape ``(H, W)``,
    ``(1, H, W)`` or ``(C, H, W)``."""
    try:
        f = torch.as_tensor(penalty_mask).detach().cpu()
    except Exception:
        raise ParameterError(OWNER, "penalty_mask", penalty_mask,
                             "a 0/1 tensor (H, W), (1, H, W) or (C, H, W)") from None
    c, h, w = shape
    if f.dim() == 2:
        f = f[None]
    if f.dim() != 3 or tuple(f.shape[-2:]) != (h, w) or f.shape[0] not in (1, c):
        raise ParameterError(OWNER, "penalty_mask", tuple(f.shape), f"a 0/1 mask of shape ({h}, {w}), (1, {h}, {w}) "
                             f"or ({c}, {h}, {w})", "F marks the corrupt region with 1 (eq. 4).")
    f = f.float()
    if not bool(((f == 0) | (f == 1)).all()):
        raise ParameterError(OWNER, "penalty_mask", "values", "only 0 and 1 (1 = the corrupt region F)",
                             "Threshold a soft mask first, e.g. mask > 0.5.")
    return 1.0 - f


def project_l2(p: torch.Tensor, eta: float) -> torch.Tensor:
    """Line 20: ``p * min(1, eta / ||p||_2)``."""
    n = float(p.norm())
    return p * (eta / n) if n > eta else p


def sign_search(model: ModelAdapter, images: torch.Tensor, p: torch.Tensor, rho: torch.Tensor, target: int, *,
                clip: bool = True, batched: bool = True, chunk: int = 32, radius: float = 1.0
                ) -> tuple[float, float]:
    """Lines 11-14: ``(varrho+, varrho-)``, the mean target probability of ``images`` perturbed by
    ``p + radius * rho/||rho||_inf`` and ``p - radius * rho/||rho||_inf`` (``radius = 1``: the paper; clipped to [0, 1] when ``clip``).
    Batched: both signs in shared forwards of ``chunk`` images; else one forward per image."""
    top = float(rho.abs().max())
    r = rho * (radius / top) if top > 0 else torch.zeros_like(rho)
    plus, minus = images + (p + r), images + (p - r)
    if clip:
        plus, minus = plus.clamp(0, 1), minus.clamp(0, 1)
    if batched:
        probs = target_probability(model, torch.cat([plus, minus]), target, chunk)
        return float(probs[:len(images)].double().mean()), float(probs[len(images):].double().mean())
    pp = torch.cat([target_probability(model, plus[i:i + 1], target) for i in range(len(plus))])
    pm = torch.cat([target_probability(model, minus[i:i + 1], target) for i in range(len(minus))])
    return float(pp.double().mean()), float(pm.double().mean())


# ---------------------------------------------------------------------------- Algorithm 1
def attack_to_explain(model: Any, seed_image: torch.Tensor, samples: torch.Tensor, target: int, *,
                      sample_labels: torch.Tensor | None = None, eta: float | None = None, batch: int = 32,
                      gamma: float = 0.8, alpha: float = 0.9, beta: float = 0.999, eps: float = 1e-8,
                      step: float = 1.0, max_iter: int = 300, refine: bool = True, refine_every: int = 50,
                      refine_layer: str | None = None, refine_scale: float = 5.0, search_on: str = "all",
                      clip_search: bool = True, ascent: bool = True, search_radius: float = 1.0,
                      eval_batch_size: int = 32, batched: bool = True, seed: int = 0,
                      resume: A2EResult | None = None, progress: bool | None = None,
                      trace: list | None = None, penalty_mask: Any = None,
                      penalty_beta: float = 10.0) -> A2EResult:
    """Algorithm 1 (with Algorithm 2 on the Sec. 5.1 schedule when ``refine``): a perturbation
    ``p`` that makes ``model`` predict ``target`` on the seed and on the samples.

    Args:
        model: :class:`~advinterp.ModelAdapter` (or ``nn.Module`` / ART classifier); never changed.
        seed_image: ``(C, H, W)`` the seed ``d``, pixels in [0, 1].
        samples: ``(M, C, H, W)`` the raw samples ``D_bar`` (256 in the paper).
        target: the target class ``l_target``.
        sample_labels: ``(M,)`` labels of ``samples``; those of the target class are dropped
            (eq. 3's ``D_bar`` holds other classes). ``None``: use them all.
        eta: l2 bound of ``p`` in pixel units (``None``: :func:`default_eta`).
        batch: mini-batch size ``b`` (the seed plus ``b - 1`` samples; 32); at most ``M' + 1``
            for ``M'`` usable samples.
        gamma: stop probability (0.8). alpha, beta, eps: moments (0.9, 0.999, 1e-8).
        step: multiplier of ``rho`` on lines 16/18 (1 = the paper).
        max_iter: Algorithm 1 iterations in all, including resumed ones (300).
        refine: interleave Algorithm 2 (Sec. 5.1 schedule, see the module docstring).
        refine_every: iterations between refinements after gamma is reached (50).
        refine_layer: the convolutional base's output layer (``None``: the layer feeding global
            pooling, ``model.cam_layer``). refine_scale: lambda (5).
        search_on: ``"all"`` (lines 11-12: the whole ``D_bar``) or ``"batch"`` (the mini-batch).
        clip_search: clip the search's images to [0, 1] (True; the paper writes no Clip there).
        eval_batch_size: images per forward of the search (32: fastest of 8-256 measured on 2 CPU
            threads at 64 px; both signs share forwards).
        batched: False for the one-forward-per-image reference (the benchmark's baseline).
        seed: seed of the sample draws (line 3).
        resume: a previous :class:`A2EResult` of the same seed, samples and target: continue from
            its ``p``, moments, iteration count and generator state up to ``max_iter``.
        progress: show a progress bar with ``wp`` (``None``: on a terminal).
        trace: a list to append each iteration's internals to (``t, xi, g, rho, varrho_plus,
            varrho_minus, direction, p, wp``; for tests and inspection).
        penalty_mask: ``None`` (default: Algorithm 1 as in Sec. 5.1) or eq. 4's ``F``, a 0/1
            tensor ``(H, W)``, ``(1, H, W)`` or ``(C, H, W)`` with 1 on the corrupt region: the
            loss gains ``penalty_beta * ||p * (1 - F)||_2`` (see the module docstring).
        penalty_beta: eq. 4's beta (10, the paper's), used only with ``penalty_mask``.

    Returns:
        :class:`A2EResult`. Raises :class:`~advinterp.exceptions.ParameterError` for settings out
        of their domain, a sample set of only the target class, or ``batch > M' + 1``.
    """
    adapter = as_adapter(model)
    check_settings(eta, batch, gamma, alpha, beta, max_iter, refine_every, step)
    if search_on not in ("all", "batch"):
        raise ParameterError(OWNER, "search_on", search_on, "'all' or 'batch'",
                             "'all' is the paper's lines 11-12 (the whole sample set).")
    d_bar = _images("seed_image", seed_image, 3)
    pool = _images("samples", samples, 4)
    if tuple(pool.shape[1:]) != tuple(d_bar.shape):
        raise ParameterError(OWNER, "samples", samples, f"images of the seed's shape {tuple(d_bar.shape)}",
                             f"Got {tuple(pool.shape[1:])}.")
    nb = adapter.nb_classes
    if isinstance(target, torch.Tensor):
        target = int(target)
    if isinstance(target, bool) or not isinstance(target, int) or not (0 <= target < nb):
        raise ParameterError(OWNER, "target", target, f"a class index in [0, {nb})")
    rows = torch.arange(len(pool))
    if sample_labels is not None:
        lab = torch.as_tensor(sample_labels).reshape(-1).long().cpu()
        if len(lab) != len(pool):
            raise ParameterError(OWNER, "sample_labels", sample_labels, f"{len(pool)} labels, one per sample")
        rows = rows[lab != target]
        if len(rows) == 0:
            raise ParameterError(OWNER, "samples", f"{len(pool)} images, all of class {target}",
                                 "samples of classes other than the target",
                                 "Draw D_bar from other classes (eq. 3 excludes the target class).")
    if len(rows) == 0:
        raise ParameterError(OWNER, "samples", samples, "at least one sample image")
    if batch > len(rows) + 1:
        raise ParameterError(OWNER, "batch", batch, f"at most {len(rows) + 1} (the seed plus the {len(rows)} "
                             "usable samples)", f"Pass more samples of other classes or batch <= {len(rows) + 1}.")
    if eta is None:
        eta = default_eta(tuple(d_bar.shape))
    eta, gamma = float(eta), float(gamma)
    keep = None
    if penalty_mask is not None:
        _number("penalty_beta", penalty_beta, lambda v: v >= 0, "a number >= 0 (eq. 4's beta)",
                "The paper uses beta = 10.")
        keep = _penalty_keep(penalty_mask, tuple(d_bar.shape))

    dev, dt = adapter.device, adapter.dtype
    if keep is not None:
        keep = keep.to(dev, torch.float32)
    d_bar = d_bar.to(dev, dt)
    pool = pool.to(dev, dt)
    usable = pool[rows.to(dev)]
    gen = torch.Generator().manual_seed(int(seed))
    if resume is not None:
        if not isinstance(resume, A2EResult) or tuple(resume.p.shape) != tuple(d_bar.shape) \
                or resume.target != target or resume.batch != batch:
            raise ParameterError(OWNER, "resume", resume, f"an A2EResult for target {target}, batch {batch} and "
                                 f"images {tuple(d_bar.shape)}", "Resume with the run's own settings.")
        p = resume.p.to(dev, torch.float32).clone()
        mu, sigma = resume.mu.to(dev, torch.float32).clone(), resume.sigma.to(dev, torch.float32).clone()
        gen.set_state(resume.rng_state.clone())
        t, reached = resume.iterations, resume.reached
        wp_hist, idx_hist = list(resume.wp.tolist()), [r for r in resume.indices]
        dir_hist, ref_hist = list(resume.directions.tolist()), list(resume.refinements.tolist())
        wp = wp_hist[-1] if wp_hist else 0.0
    else:
        p = torch.zeros(d_bar.shape, device=dev, dtype=torch.float32)   # line 1
        mu, sigma = torch.zeros_like(p), torch.zeros_like(p)
        t, reached, wp = 0, -1, 0.0
        wp_hist, idx_hist, dir_hist, ref_hist = [], [], [], []
    if reached < 0 and wp_hist and max(wp_hist) >= gamma:  # resumed with a lower gamma
        reached = next(i + 1 for i, w in enumerate(wp_hist) if w >= gamma)

    from .refinement import refine_perturbation

    bar = progress_bar(range(t, max_iter), desc=f"a2e -> {target}", total=max(max_iter - t, 0), disable=progress
                       if progress is None else not progress)
    for _ in bar:
        if not refine and wp >= gamma:                     # line 2 (Algorithm 1 alone)
            break
        pick = torch.randperm(len(usable), generator=gen)[:batch - 1]     # line 3
        D_raw = usable[pick.to(dev)]
        pd = p.to(dt)
        d = (d_bar + pd).clamp(0, 1)                       # line 4, on untouched copies
        D = (D_raw + pd).clamp(0, 1)
        t += 1                                             # line 5
        grads = ce_gradients(adapter, torch.cat([d[None], D]), target, batched).float()
        if keep is not None:  # eq. 4: every image's loss gains penalty_beta * ||p (1 - F)||_2
            grads = grads + penalty_gradient(p, keep, float(penalty_beta))[None]
        if ascent:  # +rho increases the target probability (see the module docstring)
            grads = -grads
        xi, g = fuse(grads[0], grads[1:])                  # lines 6-7
        mu, sigma, rho = moment_step(mu, sigma, g, t, alpha, beta, eps)   # lines 8-10
        search = usable if search_on == "all" else torch.cat([d_bar[None], D_raw])
        vp, vm = sign_search(adapter, search, pd, rho.to(dt), target, clip=clip_search, batched=batched,
                             chunk=eval_batch_size, radius=search_radius)        # lines 11-14
        direction = 1 if vp >= vm else -1                  # lines 15-19
        p = p + direction * step * rho
        p = project_l2(p, eta)                             # line 20
        mb = (torch.cat([d_bar[None], D_raw]) + p.to(dt)).clamp(0, 1)     # line 21
        probs = target_probability(adapter, mb, target) if batched else torch.cat(
            [target_probability(adapter, mb[i:i + 1], target) for i in range(len(mb))])
        wp = float(probs.double().mean())                  # line 22
        wp_hist.append(wp)
        idx_hist.append(rows[pick])
        dir_hist.append(direction)
        if trace is not None:
            trace.append({"t": t, "xi": xi, "g": g.cpu(), "rho": rho.cpu(), "varrho_plus": vp, "varrho_minus": vm,
                          "direction": direction, "p": p.cpu(), "wp": wp, "indices": rows[pick].clone()})
        if hasattr(bar, "set_postfix"):
            bar.set_postfix(wp=f"{wp:.3f}")
        if reached < 0 and wp >= gamma:
            reached = t
        if refine and reached >= 0 and (t - reached) % refine_every == 0 and t < max_iter:
            p = refine_perturbation(adapter, p[None].to(dt), d_bar[None], layer=refine_layer,
                                    scale=refine_scale)[0][0].float()
            ref_hist.append(t)
    if hasattr(bar, "close"):
        bar.close()

    params = {"eta": eta, "batch": batch, "gamma": gamma, "alpha": alpha, "beta": beta, "eps": eps, "step": step,
              "max_iter": max_iter, "refine": refine, "refine_every": refine_every, "refine_layer": refine_layer,
              "refine_scale": refine_scale, "search_on": search_on, "clip_search": clip_search, "ascent": ascent,
              "search_radius": search_radius, "seed": seed}
    if keep is not None:  # only then: the params of runs without eq. 4 stay as they were
        params.update(penalty_beta=float(penalty_beta), penalty_pixels=int((keep == 0).sum()))
    return A2EResult(
        p=p.detach().cpu(), wp=torch.tensor(wp_hist, dtype=torch.float64),
        indices=torch.stack(idx_hist).long() if idx_hist else torch.zeros(0, batch - 1, dtype=torch.long),
        directions=torch.tensor(dir_hist, dtype=torch.int8), refinements=torch.tensor(ref_hist, dtype=torch.long),
        reached=int(reached), iterations=int(t), target=int(target), eta=eta, gamma=gamma, batch=int(batch),
        mu=mu.detach().cpu(), sigma=sigma.detach().cpu(), rng_state=gen.get_state(), params=params)

