"""Obstructed regions (capability C3; Jalwana et al. 2020, Fig. 4).

The paper obstructs the seed and every sample with a uniform patch (64x64 at 224x224) of the
samples' mean colour and computes the perturbation again: the new perturbation moves away
from the obstructed region (the target's features are drawn elsewhere).

* :func:`obstruct` -- a copy of images with a uniform ``colour`` patch at ``position``;
* :func:`patch_energy` -- the fraction of ``||p||_2^2`` inside the patch;
* :class:`A2ERegions` (registered analyzer ``a2e.regions``) and its result
  :class:`A2ERegionsResult`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from advinterp.api import AdversarialBatch, Analyzer, ModelAdapter, Param, ParameterError, Result

from .algorithm import attack_to_explain
from .attack import A2E

__all__ = ["obstruct", "patch_energy", "default_patch", "A2ERegions", "A2ERegionsResult"]

#: The paper's patch side (64 px) and image side (224 px).
PAPER_PATCH, PAPER_SIDE = 64, 224


def default_patch(side: int) -> int:
    """The paper's 64/224 of the image side, rounded (18 px at 64 px), at least 1."""
    return max(1, int(round(int(side) * PAPER_PATCH / PAPER_SIDE)))


def _size(patch_size: Any) -> tuple[int, int]:
    if isinstance(patch_size, (int, np.integer)) and not isinstance(patch_size, bool):
        return int(patch_size), int(patch_size)
    h, w = patch_size
    return int(h), int(w)


def obstruct(images: torch.Tensor, patch_size: Any, position: Any, colour: Any) -> torch.Tensor:
    """A copy of ``images`` (``(C, H, W)`` or ``(N, C, H, W)``) with the pixels
    ``[row:row + h, col:col + w]`` set to ``colour`` (a float or ``(C,)`` per channel).

    ``patch_size``: ``s`` or ``(h, w)``; ``position``: ``(row, col)`` of the top-left corner.
    The patch must lie inside the image (``ParameterError`` otherwise)."""
    owner = "obstruct"
    x = torch.as_tensor(images)
    if x.dim() not in (3, 4):
        raise ParameterError(owner, "images", tuple(x.shape), "(C, H, W) or (N, C, H, W) images")
    try:
        h, w = _size(patch_size)
    except (TypeError, ValueError):
        raise ParameterError(owner, "patch_size", patch_size, "an int or (h, w)") from None
    try:
        r, c = (int(v) for v in position)
    except (TypeError, ValueError):
        raise ParameterError(owner, "position", position, "(row, col)") from None
    ch, hh, ww = x.shape[-3:]
    if h < 1 or w < 1 or r < 0 or c < 0 or r + h > hh or c + w > ww:
        raise ParameterError(owner, "position", (r, c), f"a {h}x{w} patch inside the {hh}x{ww} image",
                             f"row in [0, {hh - h}], col in [0, {ww - w}].")
    col = torch.as_tensor(colour, dtype=x.dtype, device=x.device).flatten()
    if len(col) not in (1, ch):
        raise ParameterError(owner, "colour", tuple(col.shape), f"a float or {ch} values (one per channel)")
    out = x.clone()
    out[..., r:r + h, c:c + w] = col.expand(ch).reshape(ch, 1, 1)
    return out


def patch_energy(p: torch.Tensor, patch_size: Any, position: Any) -> float:
    """``||p inside the patch||^2 / ||p||^2`` (NaN for ``p = 0``)."""
    h, w = _size(patch_size)
    r, c = (int(v) for v in position)
    total = float(p.double().pow(2).sum())
    inside = float(p[..., r:r + h, c:c + w].double().pow(2).sum())
    return inside / total if total > 0 else float("nan")


@dataclass(frozen=True)
class A2ERegionsResult(Result):
    """``a2e.regions`` on a batch: per image ``i`` and position ``j``.

    Attributes:
        target: ``(N,)`` the targets.
        patch: ``(h, w)`` the patch size.
        positions: ``(N, P, 2)`` the patches' top-left corners ``(row, col)``.
        colour: ``(N, C)`` the samples' mean colour (the patch's colour) of each seed.
        p: ``(N, P, C, H, W)`` the perturbation recomputed on the obstructed seed and samples.
        obstructed: ``(N, P, C, H, W)`` the obstructed seeds.
        reached: ``(N, P)`` iteration at which wp >= gamma (-1: never); ``wp_last`` ``(N, P)``.
        energy_in: ``(N, P)`` fraction of ``||p||^2`` inside the patch (obstructed run).
        energy_in_clean: ``(N, P)`` the same fraction for the batch's own perturbation
            ``x_adv[i] - x0[i]`` (computed without the patch), at the same patch.
        area: the patch's fraction of the image (the energy fraction of a uniform p).
        attack_params: the settings of the recomputation.
        params: the analyzer's settings.
    """

    target: np.ndarray
    patch: tuple
    positions: np.ndarray
    colour: torch.Tensor
    p: torch.Tensor
    obstructed: torch.Tensor
    reached: np.ndarray
    wp_last: np.ndarray
    energy_in: np.ndarray
    energy_in_clean: np.ndarray
    area: float
    attack_params: dict = field(default_factory=dict)
    params: dict = field(default_factory=dict)

    def rows(self) -> list[dict[str, Any]]:
        """One row per (image, position)."""
        return [{"image": i, "target": int(self.target[i]), "position": j, "row": int(self.positions[i, j, 0]),
                 "col": int(self.positions[i, j, 1]), "reached": int(self.reached[i, j]),
                 "wp_last": float(self.wp_last[i, j]), "energy_in_patch": float(self.energy_in[i, j]),
                 "energy_in_patch_unobstructed": float(self.energy_in_clean[i, j]), "patch_area": float(self.area)}
                for i in range(len(self.target)) for j in range(self.positions.shape[1])]


def _positions_ok(v: Any) -> bool:
    if isinstance(v, bool):
        return False
    if isinstance(v, int):
        return v >= 1
    return isinstance(v, (list, tuple)) and len(v) >= 1 and all(
        isinstance(q, (list, tuple)) and len(q) == 2 and all(isinstance(a, int) and not isinstance(a, bool)
                                                            and a >= 0 for a in q) for q in v)


class A2ERegions(Analyzer):
    """Recompute the attack-to-explain perturbation with a region obstructed (C3; Fig. 4).

    For each seed ``x0[i]`` (target ``batch.target[i]``) and each of ``positions`` patch
    positions: the seed and its samples D̄ get a uniform ``patch x patch`` square of the
    samples' mean colour (:func:`obstruct`), and :func:`attack_to_explain` runs again on them.
    D̄ is what the ``a2e`` attack uses (``distribution="batch"``: the batch's other images
    whose ``y_true`` is not the target; ``"noise"``: its seeded noise images).

    Settings of the recomputation: ``batch.params`` when the batch comes from the ``a2e``
    attack, then ``attack_params`` on top (the ``a2e`` attack's parameter names; ``targeted``
    is ignored). Seed of image ``i``: ``seed + i`` as in the attack.

    Parameters: ``positions`` (3 random top-left corners per image, seeded, or an explicit
    ``[[row, col], ...]`` for every image), ``patch`` (None: 64/224 of the image side, 18 px at
    64 px), ``seed`` (0: the random positions), ``images`` (0: every seed; k: the first k, their
    D̄ still from the whole batch), ``attack_params`` (None).
    """

    name = "a2e.regions"
    context_keys = ()
    params = {
        "positions": Param(3, _positions_ok, "a count >= 1 or a list of [row, col] pairs",
                           doc="random patch positions per image, or explicit [[row, col], ...]",
                           invalid=(0, [[1]], "three", True)),
        "patch": Param.integer(None, low=1, allow_none=True, doc="patch side in px (None: 64/224 of the side)"),
        "seed": Param.integer(0, low=0, doc="seed of the random positions"),
        "images": Param.integer(0, low=0, doc="analyse the first `images` seeds only (0: all); D_bar is still "
                                "drawn from the whole batch"),
        "attack_params": Param(None, lambda v: v is None or (isinstance(v, dict) and all(isinstance(k, str) for k in v)),
                               "None or a dict of a2e parameters", doc="a2e settings on top of the batch's",
                               invalid=(3, "eta")),
    }
    conformance_params = {"positions": 1, "patch": 4,
                          "attack_params": {"batch": 3, "max_iter": 2, "distribution": "noise", "n_samples": 4,
                                            "gamma": 0.05, "refine_every": 1}}

    def _attack(self, batch: AdversarialBatch) -> A2E:
        base = dict(batch.params) if batch.attack == "a2e" and isinstance(batch.params, dict) else {}
        merged = {**base, **(self.attack_params or {})}
        merged.pop("targeted", None)
        known = set(A2E.params)
        unknown = sorted(set(merged) - known)
        if unknown:
            raise ParameterError(f"{type(self).__name__}.analyze", "attack_params", unknown,
                                 f"a2e parameters ({', '.join(sorted(known))})")
        return A2E(**merged)

    def _positions(self, i: int, side: tuple[int, int], patch: tuple[int, int]) -> list[tuple[int, int]]:
        hh, ww = side
        h, w = patch
        if isinstance(self.positions, int):
            g = torch.Generator().manual_seed(int(self.seed) * 1_000_003 + i)
            rows = torch.randint(0, hh - h + 1, (self.positions,), generator=g)
            cols = torch.randint(0, ww - w + 1, (self.positions,), generator=g)
            return [(int(r), int(c)) for r, c in zip(rows, cols)]
        for r, c in self.positions:
            if r + h > hh or c + w > ww:
                raise ParameterError(f"{type(self).__name__}.analyze", "positions", [r, c],
                                     f"a {h}x{w} patch inside the {hh}x{ww} image")
        return [(int(r), int(c)) for r, c in self.positions]

    def _analyze(self, model: ModelAdapter, batch: AdversarialBatch, **context: Any) -> A2ERegionsResult:
        att = self._attack(batch)
        x0 = batch.x0.detach()
        n, (ch, hh, ww) = len(x0), tuple(x0.shape[1:])
        if self.images:
            n = min(n, int(self.images))
        side = default_patch(min(hh, ww)) if self.patch is None else int(self.patch)
        patch = (min(side, hh), min(side, ww))
        n_pos = self.positions if isinstance(self.positions, int) else len(self.positions)
        ap = att.get_params()
        if n == 0:
            return A2ERegionsResult(
                target=np.zeros(0, dtype=np.int64), patch=patch, positions=np.zeros((0, n_pos, 2), dtype=np.int64),
                colour=torch.zeros(0, ch), p=torch.zeros(0, n_pos, ch, hh, ww),
                obstructed=torch.zeros(0, n_pos, ch, hh, ww), reached=np.zeros((0, n_pos), dtype=np.int64),
                wp_last=np.zeros((0, n_pos)), energy_in=np.zeros((0, n_pos)), energy_in_clean=np.zeros((0, n_pos)),
                area=patch[0] * patch[1] / (hh * ww), attack_params=ap, params=self.get_params())
        target = batch.target.detach().long()[:n]
        y = batch.y_true.detach().long()
        p_clean = (batch.x_adv.detach()[:n] - x0[:n]).cpu().float()
        pos = np.zeros((n, n_pos, 2), dtype=np.int64)
        colours = torch.zeros(n, ch)
        ps = torch.zeros(n, n_pos, ch, hh, ww)
        obs = torch.zeros(n, n_pos, ch, hh, ww)
        reached = np.full((n, n_pos), -1, dtype=np.int64)
        wp_last = np.full((n, n_pos), np.nan)
        e_in = np.full((n, n_pos), np.nan)
        e_clean = np.full((n, n_pos), np.nan)
        with torch.enable_grad():
            for i in range(n):
                t = int(target[i])
                samples, labels = att._samples(model, x0, y, i, t)
                colour = samples.mean((0, 2, 3))
                colours[i] = colour.cpu().float()
                for j, (r, c) in enumerate(self._positions(i, (hh, ww), patch)):
                    pos[i, j] = (r, c)
                    seed_o = obstruct(x0[i], patch, (r, c), colour)
                    samp_o = obstruct(samples, patch, (r, c), colour)
                    res = attack_to_explain(
                        model, seed_o, samp_o, t, sample_labels=labels, eta=att.eta, batch=att.batch,
                        gamma=att.gamma, alpha=att.alpha, beta=att.beta, step=att.step, max_iter=att.max_iter,
                        refine=att.refine, refine_every=att.refine_every, refine_layer=att.refine_layer,
                        refine_scale=att.refine_scale, search_on=att.search_on, seed=att.seed + i, progress=False)
                    p = res.p.detach().cpu().float()
                    ps[i, j], obs[i, j] = p, seed_o.detach().cpu().float()
                    reached[i, j] = res.reached
                    wp_last[i, j] = float(res.wp[-1]) if len(res.wp) else float("nan")
                    e_in[i, j] = patch_energy(p, patch, (r, c))
                    e_clean[i, j] = patch_energy(p_clean[i], patch, (r, c))
        return A2ERegionsResult(target=target.cpu().numpy(), patch=patch, positions=pos, colour=colours, p=ps,
                                obstructed=obs, reached=reached, wp_last=wp_last, energy_in=e_in,
                                energy_in_clean=e_clean, area=patch[0] * patch[1] / (hh * ww), attack_params=ap,
                                params=self.get_params())
