"""``str``: the structured attack, Str-attack (Xu et al., ICLR 2019, "Structured adversarial
attack: towards general implementation and better interpretability").

Str-attack looks for a *group-sparse* perturbation: the image is covered by sliding
``p x p`` windows (all channels; ``group_stride`` apart, overlapping when the stride is
smaller than the size) and a group-Lasso penalty switches whole windows off. In the unified
form of the PSE paper (Appendix 1, eqs. (9)-(10))::

    minimize_delta  f(x0 + delta, t) + gamma ||delta||_2^2 + tau sum_i sqrt|G_i| ||delta_{G_i}||_2
    subject to      x0 + delta in [0, 1]^n,  ||delta||_inf <= eps,

    f(x, t) = c * max(max_{j != t} Z(x)_j - Z(x)_t, -kappa)       (targeted)
    f(x, y) = c * max(Z(x)_y - max_{j != y} Z(x)_j, -kappa)       (untargeted)

It is solved by ADMM on the split ``z = delta, z = w, z = y_i`` (one copy ``y_i`` per group,
so overlapping groups separate), with ``h(w)`` the indicator of the box and the l_inf ball.
One iteration, with penalty ``rho`` and duals ``u, v, s`` (``s`` has one block per group)::

    delta = rho (z - u/rho) / (2 gamma + rho)                              # l2 prox
    w     = clamp(z - v/rho, max(-eps, -x0), min(eps, 1 - x0))             # projection
    y_i   = max(0, 1 - (tau sqrt|G_i| / rho) / ||a_i||) a_i,
            a_i = z_{G_i} - s_i/rho                                         # group soft-threshold
    z     = [eta_k z - grad f(x0 + z) + rho delta + u + rho w + v + fold(rho y + s)]
            / (eta_k + 2 rho + rho count)                                   # linearised z-step
    u += rho (delta - z);  v += rho (w - z);  s_i += rho (y_i - z_{G_i})

``fold`` sums the group copies back onto the pixels (``torch.nn.functional.fold``),
``count`` is the number of groups covering each pixel, and ``eta_k = eta0 sqrt(k + 1)``
(the linearisation's step ``1/eta_k`` decays, as in the paper's linearised ADMM).

The candidate perturbation at each iteration is ``w`` (feasible: box and l_inf ball)
restricted to the support of ``y`` (the selected groups), so it is exactly group-sparse.
The loss constant ``c`` is tuned per image by a C&W-style binary search, keeping the
successful candidate with the smallest l2 norm. ``retrain=True`` adds the paper's refinement:
with the selected groups fixed, the problem is solved again without the group penalty
(``tau = 0``, support = the selected groups), again with a binary search over ``c``; the
refined perturbation replaces the first one when it is successful and smaller in l2.

Everything is batched over images; there are no per-image Python loops.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..components import Attack
from ..exceptions import ParameterError
from ..params import Param
from .guards import linf_eps_param, needs_grad

__all__ = ["StrAttack", "default_group_size", "group_padding", "unfold_groups", "fold_groups", "group_counts",
           "group_sizes", "group_norms", "group_soft_threshold", "project_box_linf"]

_NO_BOUND = 1e10  # C&W's "no upper bound on c found yet"
#: The group-Lasso weight of the authors' code (KaidiXu/StrAttack): a group is switched off when
#: its l2 norm is below tau / rho, whatever its size.
_AUTHORS_TAU = 3.0


# ---------------------------------------------------------------------------- groups
def default_group_size(height: int, width: int) -> int:
    """The paper's group size for an image: 13 at ImageNet scale (>= 200 px), 2 at CIFAR/MNIST
    scale (<= 32 px), otherwise ``round(13 * size / 224)`` (at least 2); ``size = min(H, W)``."""
    size = min(int(height), int(width))
    if size >= 200:
        return 13
    if size <= 32:
        return 2
    return max(2, int(round(size * 13 / 224)))


def group_padding(hw: tuple[int, int], size: int, stride: int) -> tuple[int, int]:
    """Zero rows/columns added at the bottom/right so that windows of ``size`` every ``stride``
    cover the whole image (the last windows then hold fewer real pixels)."""
    out = []
    for n in hw:
        if size > n:
            raise ValueError(f"group size {size} exceeds the image side {n}")
        r = (n - size) % stride
        out.append(0 if r == 0 else stride - r)
    return out[0], out[1]


def unfold_groups(x: torch.Tensor, size: int, stride: int) -> torch.Tensor:
    """``(N, C, H, W)`` -> ``(N, C*size*size, L)``: one column per group (sliding window over
    all channels), after zero-padding the bottom/right so that the groups cover the image."""
    ph, pw = group_padding(tuple(x.shape[-2:]), size, stride)
    if ph or pw:
        x = F.pad(x, (0, pw, 0, ph))
    # the same layout as F.unfold (rows: channel, row, column in the window; columns: groups
    # in raster order), built from strided views: F.unfold's im2col is far slower on CPU
    n, c = x.shape[:2]
    windows = x.unfold(2, size, stride).unfold(3, size, stride)  # (N, C, Gh, Gw, p, p)
    return windows.permute(0, 1, 4, 5, 2, 3).reshape(n, c * size * size, -1)


def fold_groups(cols: torch.Tensor, size: int, stride: int, hw: tuple[int, int]) -> torch.Tensor:
    """Adjoint of :func:`unfold_groups`: sum the group columns back onto ``(N, C, H, W)``."""
    ph, pw = group_padding(hw, size, stride)
    h, w = hw
    out = F.fold(cols, output_size=(h + ph, w + pw), kernel_size=size, stride=stride)
    return out[..., :h, :w]


def group_counts(hw: tuple[int, int], size: int, stride: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """``(1, 1, H, W)``: how many groups cover each pixel."""
    ones = torch.ones(1, 1, *hw, device=device, dtype=dtype)
    return fold_groups(unfold_groups(ones, size, stride), size, stride, hw)


def group_sizes(channels: int, hw: tuple[int, int], size: int, stride: int, device=None,
                dtype=torch.float32) -> torch.Tensor:
    """``(1, L)``: number of real (not padding) entries ``|G_i|`` of each group."""
    ones = torch.ones(1, channels, *hw, device=device, dtype=dtype)
    return unfold_groups(ones, size, stride).sum(1)


def group_norms(delta: torch.Tensor, size: int, stride: int) -> torch.Tensor:
    """``(N, L)``: the l2 norm of ``delta`` over each group."""
    return unfold_groups(delta, size, stride).norm(dim=1)


def group_soft_threshold(cols: torch.Tensor, threshold) -> torch.Tensor:
    """Proximal operator of ``threshold * ||.||_2`` applied to each column (group):
    ``max(0, 1 - threshold / ||a||) a`` (0 where ``||a|| = 0``).

    ``cols``: ``(N, D, L)``; ``threshold``: a number or a tensor broadcastable to ``(N, L)``.
    """
    norms = cols.norm(dim=1)  # (N, L)
    thr = torch.as_tensor(threshold, device=cols.device, dtype=cols.dtype)
    scale = torch.clamp(1 - thr / norms.clamp_min(torch.finfo(cols.dtype).tiny), min=0)
    scale = torch.where(norms > 0, scale, torch.zeros_like(scale))
    return cols * scale[:, None, :]


def project_box_linf(v: torch.Tensor, x0: torch.Tensor, eps: float, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Euclidean projection of ``v`` onto ``{d : x0 + d in [0, 1], ||d||_inf <= eps}`` (and
    ``d = 0`` where ``mask`` is 0): elementwise clamp to ``[max(-eps, -x0), min(eps, 1 - x0)]``."""
    lo = torch.clamp(-x0, min=-eps)
    hi = torch.clamp(1 - x0, max=eps)
    out = torch.max(torch.min(v, hi), lo)
    return out if mask is None else out * mask


# ---------------------------------------------------------------------------- the attack
class StrAttack(Attack):
    """Structured (group-sparse) attack, Str-attack (Xu et al., ICLR 2019), solved by ADMM.

    Parameters (pixel units, [0, 1]):

    * ``targeted`` (True): Str-attack is targeted in the paper; ``False`` uses the C&W
      untargeted margin ``max(Z_y - max_{j!=y} Z_j, -kappa)``.
    * ``eps`` (0.5): l_inf bound of ``h(delta) = ||delta||_inf - eps``; 0.5 is the tolerance of
      the authors' implementation (the same on MNIST, CIFAR-10 and ImageNet), i.e. a loose
      safeguard: the group-Lasso and l2 terms keep the perturbation small.
    * ``group_size`` (None): side ``p`` of the ``p x p`` groups (all channels); None picks the
      paper's choice by resolution: 13 for >= 200 px (ImageNet), 2 for <= 32 px
      (MNIST/CIFAR), ``round(13 * size / 224)`` (>= 2) in between (4 for 64 px).
    * ``group_stride`` (None): distance between groups; None = ``group_size`` (non-overlapping,
      the paper's default); smaller values give overlapping groups.
    * ``confidence`` (0.0): kappa of eq. (10) (the authors' code's ``CONFIDENCE``); success
      requires a margin of at least kappa.
    * ``initial_const`` (1.0): first loss constant ``c`` of the binary search.
    * ``binary_search_steps`` (5): C&W-style binary search steps over ``c`` (per image).
    * ``max_iter`` (100): ADMM iterations per binary search step.
    * ``rho`` (15.0): ADMM penalty.
    * ``gamma`` (2.0): weight of ``||delta||_2^2``.
    * ``tau`` (None): group-Lasso weight; a number: group ``i`` is penalised by
      ``tau * sqrt|G_i| * ||delta_{G_i}||_2`` (``tau`` per pixel, independent of ``p``); None:
      the authors' size-independent penalty ``3 * ||delta_{G_i}||_2`` (threshold ``3 / rho``).
    * ``eta0`` (5.0): linearisation weight of the z-step, ``eta_k = eta0 sqrt(k + 1)``: larger
      values take smaller, steadier steps (smaller l2, slower convergence).
    * ``retrain`` (True): refine with the selected groups fixed (the paper's retraining
      step; doubles the cost).

    The defaults of ``rho``, ``gamma``, ``tau``, ``eta0``, ``confidence`` and ``retrain`` are the
    authors' (KaidiXu/StrAttack, ``l2_LADMMST_attack_v3.py``: ro=15, gamma=2, tau=3 without the
    sqrt|G| factor, alpha=5 with eta = 1/sqrt(k+1), CONFIDENCE=0, RETRAIN=True; their pixels span
    [-0.5, 0.5], the same unit length as [0, 1]). Measured on 16 targeted scenes of the shipped
    model (issue 13): with them and 300 iterations Str has a lower l0 and l2 than EAD and EAD the
    lowest l1, the ordering of the paper's Table A1; the previous defaults, tuned on that model
    (rho=1, gamma=0.1, tau=0.1, eta0=10, kappa=1, no retraining), gave a denser and larger
    perturbation than EAD. They need iterations: 100 per binary-search step at least (30 failed
    on an eighth of the images). Images where no successful perturbation is found are returned
    unchanged (C&W convention). ``supports_mask``: the mask multiplies ``delta``, ``z``, ``w`` and ``y``.
    """

    name = "str"
    supports_mask = True
    params = {
        "targeted": Param.boolean(True, doc="targeted attack (the paper's setting)"),
        "eps": linf_eps_param(0.5, low_open=True, doc="l_inf bound on the perturbation, at most 1 (pixel units)"),
        "group_size": Param.integer(None, low=1, allow_none=True,
                                    doc="side of the square groups; None: 13 (>=200 px), 2 (<=32 px), else scaled"),
        "group_stride": Param.integer(None, low=1, allow_none=True,
                                      doc="stride of the groups; None: group_size (non-overlapping)"),
        "confidence": Param.number(0.0, low=0.0, doc="kappa: required logit margin"),
        "initial_const": Param.number(1.0, low=0.0, low_open=True, doc="first loss constant c"),
        "binary_search_steps": Param.integer(5, low=1, doc="binary search steps over c"),
        "max_iter": Param.integer(100, low=1, doc="ADMM iterations per binary search step"),
        "rho": Param.number(15.0, low=0.0, low_open=True, doc="ADMM penalty (the authors' 15)"),
        "gamma": Param.number(2.0, low=0.0, doc="weight of the squared l2 norm (the authors' 2)"),
        "tau": Param.number(None, low=0.0, allow_none=True,
                            doc="group-Lasso weight per pixel (scaled by sqrt|G|); None: the authors' "
                                "threshold, tau sqrt|G| = 3 for every group"),
        "eta0": Param.number(5.0, low=0.0, low_open=True,
                             doc="linearised z-step weight, eta_k = eta0 sqrt(k+1) (the authors' alpha = 5)"),
        "retrain": Param.boolean(True, doc="refine with the selected groups fixed (the authors' default)"),
    }
    conformance_params = {"targeted": False, "max_iter": 3, "binary_search_steps": 2}

    def _check_params(self) -> None:
        if self.group_size is not None and self.group_stride is not None and self.group_stride > self.group_size:
            raise ParameterError(type(self).__name__, "group_stride", self.group_stride,
                                 f"an integer <= group_size={self.group_size}",
                                 "A stride larger than the groups would leave pixels in no group.")

    # ------------------------------------------------------------------ geometry
    def _geometry(self, x: torch.Tensor) -> tuple[int, int]:
        owner = type(self).__name__
        h, w = int(x.shape[-2]), int(x.shape[-1])
        size = self.group_size if self.group_size is not None else default_group_size(h, w)
        if size > min(h, w):
            raise ParameterError(owner, "group_size", size, f"an integer <= the image side ({min(h, w)})",
                                 f"The images are {h}x{w}.")
        stride = self.group_stride if self.group_stride is not None else size
        if stride > size:
            raise ParameterError(owner, "group_stride", stride, f"an integer <= group_size={size}",
                                 "A stride larger than the groups would leave pixels in no group.")
        return size, stride

    # ------------------------------------------------------------------ the attack
    @needs_grad
    def _generate(self, model, x, y, target, mask=None):
        size, stride = self._geometry(x)
        labels = target if self.targeted else y
        n = len(x)
        m = mask
        best_l2, best_delta, best_const = self._search(model, x, labels, size, stride, m, self.tau,
                                                       torch.full((n,), float(self.initial_const), device=x.device,
                                                                  dtype=x.dtype))
        if self.retrain:
            found = torch.isfinite(best_l2)
            support = (best_delta != 0).to(x.dtype)
            if found.any():
                sub = found.nonzero().flatten()
                rm = support[sub] if m is None else support[sub] * m[sub]
                l2_r, delta_r, _ = self._search(model, x[sub], labels[sub], size, stride, rm, 0.0, best_const[sub])
                better = l2_r < best_l2[sub]
                best_l2[sub] = torch.where(better, l2_r, best_l2[sub])
                best_delta[sub] = torch.where(better[:, None, None, None], delta_r, best_delta[sub])
        return (x + best_delta).clamp(0, 1)

    def _search(self, model, x, labels, size, stride, mask, tau, const):
        """Binary search over ``c`` (vectorised over images) around :meth:`_admm`.

        Returns ``(best_l2, best_delta, best_const)``: the smallest squared l2 of a successful
        perturbation per image (inf if none), that perturbation (0 if none) and its ``c``."""
        n = len(x)
        lower = torch.zeros(n, device=x.device, dtype=x.dtype)
        upper = torch.full((n,), _NO_BOUND, device=x.device, dtype=x.dtype)
        const = const.clone()
        best_l2 = torch.full((n,), math.inf, device=x.device, dtype=x.dtype)
        best_delta = torch.zeros_like(x)
        best_const = const.clone()
        for _ in range(int(self.binary_search_steps)):
            l2, delta = self._admm(model, x, labels, const, size, stride, mask, tau)
            ok = torch.isfinite(l2)
            better = ok & (l2 < best_l2)
            best_l2 = torch.where(better, l2, best_l2)
            best_delta = torch.where(better[:, None, None, None], delta, best_delta)
            best_const = torch.where(better, const, best_const)
            # success: c can shrink; failure: grow it (x10 until an upper bound is known)
            upper = torch.where(ok, torch.minimum(upper, const), upper)
            lower = torch.where(ok, lower, torch.maximum(lower, const))
            bounded = upper < _NO_BOUND
            const = torch.where(bounded, (lower + upper) / 2, const * 10)
        return best_l2, best_delta, best_const

    def _margin(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The C&W margin whose hinge at ``-kappa`` is minimised: targeted
        ``max_{j!=t} Z_j - Z_t``, untargeted ``Z_y - max_{j!=y} Z_j``."""
        own = logits.gather(1, labels[:, None])[:, 0]
        other = logits.scatter(1, labels[:, None], -math.inf).amax(1)
        return other - own if self.targeted else own - other

    def _success(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        margin = -self._margin(logits, labels)  # > 0 iff the attack succeeds
        return (margin >= float(self.confidence)) & (margin > 0)

    def _admm(self, model, x, labels, const, size, stride, mask, tau):
        """One ADMM run at loss constants ``const`` ``(N,)``; returns ``(l2, delta)``: the
        smallest squared l2 of a successful candidate per image (inf if none) and that
        candidate (0 if none)."""
        hw = tuple(x.shape[-2:])
        rho, gamma, kappa = float(self.rho), float(self.gamma), float(self.confidence)
        count = group_counts(hw, size, stride, x.device, x.dtype)
        sizes = group_sizes(x.shape[1], hw, size, stride, x.device, x.dtype)                          # (1, L)
        # group soft-threshold: tau sqrt|G_i| / rho; tau=None: the authors' tau_ref / rho with tau_ref = 3
        thr = torch.full_like(sizes, _AUTHORS_TAU / rho) if tau is None else float(tau) * sizes.sqrt() / rho
        mcols = None if mask is None else unfold_groups(mask.expand_as(x), size, stride)

        def masked(t):
            return t if mask is None else t * mask

        z = torch.zeros_like(x)
        u = torch.zeros_like(x)
        v = torch.zeros_like(x)
        s = unfold_groups(torch.zeros_like(x), size, stride)
        best_l2 = torch.full((len(x),), math.inf, device=x.device, dtype=x.dtype)
        best_delta = torch.zeros_like(x)
        for k in range(int(self.max_iter)):
            with torch.no_grad():
                delta = masked(rho * (z - u / rho) / (2 * gamma + rho))
                w = project_box_linf(z - v / rho, x, self.eps, mask)
                y = group_soft_threshold(unfold_groups(z, size, stride) - s / rho, thr)
                if mcols is not None:
                    y = y * mcols
                # candidate: w on the selected groups -- feasible and exactly group-sparse
                support = fold_groups((y != 0).to(x.dtype), size, stride, hw) > 0
                cand = w * support
                ok = self._success(model.logits(x + cand), labels)
                l2 = cand.flatten(1).pow(2).sum(1)
                better = ok & (l2 < best_l2)
                best_l2 = torch.where(better, l2, best_l2)
                best_delta = torch.where(better[:, None, None, None], cand, best_delta)
            # linearised z-step: gradient of f at x0 + z
            zz = z.detach().requires_grad_(True)
            with torch.enable_grad():
                loss = (const * torch.clamp(self._margin(model.logits(x + zz), labels), min=-kappa)).sum()
                (grad,) = torch.autograd.grad(loss, zz)
            with torch.no_grad():
                eta = float(self.eta0) * math.sqrt(k + 1)
                num = (eta * z - grad + rho * delta + u + rho * w + v
                       + fold_groups(rho * y + s, size, stride, hw))
                z = masked(num / (eta + 2 * rho + rho * count))
                u = u + rho * (delta - z)
                v = v + rho * (w - z)
                s = s + rho * (y - unfold_groups(z, size, stride))
        return best_l2, best_delta
