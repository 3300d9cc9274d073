"""Inpainting with an adversarially robust classifier (capability C5; Jalwana et al. 2020,
Sec. 5.2.2, eq. 4, Fig. 7), next to Santurkar et al.'s (2019) targeted l2 PGD, measured.

For image ``i`` of a batch (class ``c = y_true[i]``, the uncorrupted image is known):

1. ``F``: a square of ``patch`` px (None: 64/224 of the side, 18 px at 64 px, the C3 patch)
   at a seeded random position (``seed * 1_000_003 + i``) -- the corrupt region;
2. the masked image (the seed) ``x * (1 - F) + fill * F``, ``fill = "mean"``: the mean
   colour of the image's uncorrupted pixels (what a user of the corrupted image can know), or
   a grey level in [0, 1] (0: black);
3. a2e: :func:`~advinterp_a2e.algorithm.attack_to_explain` with eq. 4 (``penalty_mask=F``,
   ``penalty_beta = beta = 10``), target ``c``, D̄ = ``n_samples`` samples of class ``c``'s
   Gaussian (:mod:`.gaussian`, the batch's other images of class ``c`` or context
   ``class_images``), ``eta`` = the paper's 21 scaled with ``sqrt(C*H*W)`` (6.0 at 3x64x64),
   no refinement;
4. baseline: the core ``pgd`` (``norm=2``, ``eps = eta``, targeted at ``c``) from the same
   masked image, restricted to ``F`` (``pgd_restrict=True``: ``delta = 0`` outside the corrupt
   region, the limit beta -> infinity of Santurkar et al.'s penalised objective; False: the
   whole image);
5. against the uncorrupted image: PSNR and SSIM (``skimage.metrics``, ``data_range=1``,
   ``channel_axis``) of the masked image, a2e and PGD, PSNR inside ``F`` alone, and the change
   outside ``F``; the robust model's confidence in ``c`` for each.

PSNR of an image identical to the original is infinite; it is reported as ``PSNR_CAP`` = 100 dB.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from advinterp.api import AdversarialBatch, ModelAdapter, Param, ParameterError, Result

from .generation import RobustTask, _probs
from .regions import default_patch

__all__ = ["square_mask", "corrupt", "psnr", "ssim", "region_psnr", "A2EInpainting", "A2EInpaintingResult",
           "PSNR_CAP"]

#: PSNR reported for an image identical to the reference (dB).
PSNR_CAP = 100.0


def square_mask(shape: tuple[int, int], side: int, position: tuple[int, int]) -> torch.Tensor:
    """``(1, H, W)`` float 0/1 mask ``F`` with a ``side x side`` square of 1 at ``(row, col)``."""
    h, w = (int(s) for s in shape)
    r, c = (int(v) for v in position)
    if side < 1 or r < 0 or c < 0 or r + side > h or c + side > w:
        raise ParameterError("square_mask", "position", (r, c), f"a {side}x{side} square inside {h}x{w}",
                             f"row in [0, {h - side}], col in [0, {w - side}].")
    f = torch.zeros(1, h, w)
    f[:, r:r + side, c:c + side] = 1.0
    return f


def corrupt(image: torch.Tensor, mask: torch.Tensor, fill: Any = "mean") -> torch.Tensor:
    """``image * (1 - F) + colour * F`` for ``image`` ``(C, H, W)`` and ``F`` ``(1, H, W)``:
    ``fill="mean"`` is the mean colour (per channel) of the pixels outside ``F``; a number is
    a grey level in [0, 1]."""
    keep = 1.0 - mask
    if isinstance(fill, str):
        if fill != "mean":
            raise ParameterError("corrupt", "fill", fill, "'mean' or a number in [0, 1]")
        denom = float(keep.sum())
        colour = (image * keep).sum((1, 2)) / denom if denom > 0 else image.mean((1, 2))
    else:
        colour = torch.full((image.shape[0],), float(fill), dtype=image.dtype)
    return image * keep + colour.view(-1, 1, 1).to(image.dtype) * mask


def _hwc(x: torch.Tensor) -> np.ndarray:
    return x.detach().cpu().double().permute(1, 2, 0).numpy()


def psnr(reference: torch.Tensor, image: torch.Tensor) -> float:
    """PSNR (dB) of ``image`` against ``reference`` (``(C, H, W)`` in [0, 1];
    ``skimage.metrics.peak_signal_noise_ratio``, ``data_range=1``), ``PSNR_CAP`` if identical."""
    from skimage.metrics import peak_signal_noise_ratio

    if torch.equal(reference.double(), image.double()):
        return PSNR_CAP
    return float(min(PSNR_CAP, peak_signal_noise_ratio(_hwc(reference), _hwc(image), data_range=1.0)))


def ssim(reference: torch.Tensor, image: torch.Tensor) -> float:
    """SSIM of ``image`` against ``reference`` (``skimage.metrics.structural_similarity``,
    ``data_range=1``, ``channel_axis=2`` on HWC; default 7x7 window)."""
    from skimage.metrics import structural_similarity

    return float(structural_similarity(_hwc(reference), _hwc(image), data_range=1.0, channel_axis=2))


def region_psnr(reference: torch.Tensor, image: torch.Tensor, mask: torch.Tensor) -> float:
    """PSNR over the pixels where ``mask`` ``(1, H, W)`` is 1 (all channels), ``PSNR_CAP`` if equal there."""
    sel = mask.expand_as(reference).bool()
    mse = float((reference.double() - image.double())[sel].pow(2).mean()) if bool(sel.any()) else 0.0
    return PSNR_CAP if mse == 0 else float(min(PSNR_CAP, 10 * math.log10(1.0 / mse)))


@dataclass(frozen=True)
class A2EInpaintingResult(Result):
    """``a2e.inpainting`` on a batch: per image ``i``.

    Attributes:
        target: ``(N,)`` the class (``y_true[i]``), the target of both methods.
        masks: ``(N, 1, H, W)`` ``F`` (1 = corrupt region). positions: ``(N, 2)`` its corner.
        original, masked, a2e, pgd: ``(N, C, H, W)`` the uncorrupted image, the seed, a2e's
            ``Clip(masked + p)``, PGD's image.
        psnr_masked, psnr_a2e, psnr_pgd: ``(N,)`` PSNR (dB) against the original (cap 100).
        ssim_masked, ssim_a2e, ssim_pgd: ``(N,)`` SSIM against the original.
        psnr_region_masked, psnr_region_a2e, psnr_region_pgd: ``(N,)`` PSNR inside ``F``.
        outside_a2e, outside_pgd: ``(N,)`` ``||(image - masked) * (1 - F)||_2``, the change
            outside the corrupt region.
        robust_original, robust_masked, robust_a2e, robust_pgd: ``(N,)`` the analysed model's
            probability of ``target``.
        l2_a2e, l2_pgd: ``(N,)`` ``||image - masked||_2`` (<= ``eta``).
        n_class_images: ``(N,)`` images of the class Gaussian.
        eta, beta: the budget and eq. 4's beta. attack_params, params: the settings.
    """

    target: np.ndarray
    masks: torch.Tensor
    positions: np.ndarray
    original: torch.Tensor
    masked: torch.Tensor
    a2e: torch.Tensor
    pgd: torch.Tensor
    psnr_masked: np.ndarray
    psnr_a2e: np.ndarray
    psnr_pgd: np.ndarray
    ssim_masked: np.ndarray
    ssim_a2e: np.ndarray
    ssim_pgd: np.ndarray
    psnr_region_masked: np.ndarray
    psnr_region_a2e: np.ndarray
    psnr_region_pgd: np.ndarray
    outside_a2e: np.ndarray
    outside_pgd: np.ndarray
    robust_original: np.ndarray
    robust_masked: np.ndarray
    robust_a2e: np.ndarray
    robust_pgd: np.ndarray
    l2_a2e: np.ndarray
    l2_pgd: np.ndarray
    n_class_images: np.ndarray
    eta: float
    beta: float
    attack_params: dict = field(default_factory=dict)
    params: dict = field(default_factory=dict)

    def rows(self) -> list[dict[str, Any]]:
        """One row per image."""
        keys = ("psnr_masked", "psnr_a2e", "psnr_pgd", "ssim_masked", "ssim_a2e", "ssim_pgd", "psnr_region_masked",
                "psnr_region_a2e", "psnr_region_pgd", "outside_a2e", "outside_pgd", "robust_original",
                "robust_masked", "robust_a2e", "robust_pgd", "l2_a2e", "l2_pgd")
        return [{"image": i, "target": int(self.target[i]), **{k: float(getattr(self, k)[i]) for k in keys}}
                for i in range(len(self.target))]

    def summary_rows(self) -> list[dict[str, Any]]:
        """One row per image kind (masked, a2e, pgd): means over images, and for a2e / PGD the
        number of images where it beats the other (PSNR, SSIM)."""
        out = []
        n = len(self.target)
        for kind in ("masked", "a2e", "pgd"):
            def mean(name: str) -> float:
                v = np.asarray(getattr(self, name), dtype=float)
                return float(v.mean()) if v.size else float("nan")

            row = {"image": kind, "images": n, "psnr": mean(f"psnr_{kind}"), "ssim": mean(f"ssim_{kind}"),
                   "psnr_region": mean(f"psnr_region_{kind}"), "robust_confidence": mean(f"robust_{kind}")}
            if kind != "masked":
                other = "pgd" if kind == "a2e" else "a2e"
                row["psnr_wins"] = int((getattr(self, f"psnr_{kind}") > getattr(self, f"psnr_{other}")).sum())
                row["ssim_wins"] = int((getattr(self, f"ssim_{kind}") > getattr(self, f"ssim_{other}")).sum())
                row["outside_change"] = mean(f"outside_{kind}")
            out.append(row)
        return out


def _fill_ok(v: Any) -> bool:
    if isinstance(v, str):
        return v == "mean"
    return not isinstance(v, bool) and isinstance(v, (int, float)) and math.isfinite(v) and 0 <= v <= 1


class A2EInpainting(RobustTask):
    """Inpainting on a robust model: a2e with eq. 4 vs l2 PGD, PSNR / SSIM against the truth (C5; Fig. 7).

    For the first ``images`` images of the batch: a ``patch`` square ``F`` at a seeded random
    position is filled (``fill``), the masked image is the seed; a2e minimises eq. 4 (``beta``
    = 10 on ``||p (1 - F)||_2``, ``eta`` = 21 scaled with sqrt(C*H*W): 6.0 at 3x64x64, D̄ =
    samples of the image's class Gaussian, no refinement) and the core ``pgd`` (norm 2, eps =
    eta, restricted to ``F`` when ``pgd_restrict``) targets the image's class from the same
    masked image. PSNR / SSIM against the uncorrupted image (scikit-image) for the masked
    image, a2e and PGD.

    Parameters (defaults): ``patch`` (None: 64/224 of the side, 18 px at 64 px), ``fill``
    ("mean": the image's mean colour outside F; or a grey level), ``beta`` (10),
    ``pgd_restrict`` (True), and those of ``a2e.generation`` (``images`` 4, ``eta`` None: 21
    scaled, ``max_iter`` 60, ``batch`` 16, ``n_samples`` 32, ``gamma`` 1.0, ``refine`` False,
    ``search_radius`` 0.02, ``pgd_max_iter`` None = ``max_iter``, ``pgd_step`` None = 2.5 *
    eta / pgd_max_iter, ``factor`` 4, ``ridge`` 1e-4, ``standard_model`` None, ``seed`` 0).
    """

    name = "a2e.inpainting"
    paper_eta = 21.0
    params = {**RobustTask.shared_params(gamma=1.0, refine=False),
              "patch": Param.integer(None, low=1, allow_none=True, doc="side of the corrupt square (None: 64/224 "
                                     "of the image side)"),
              "fill": Param("mean", _fill_ok, "'mean' or a number in [0, 1]",
                            "the corrupt region's colour: the image's mean colour outside it, or a grey level",
                            ("black", 2.0, True)),
              "beta": Param.number(10.0, low=0.0, doc="eq. 4's beta on ||p (1 - F)||_2 (paper: 10)"),
              "pgd_restrict": Param.boolean(True, doc="PGD perturbs only the corrupt region (False: the whole "
                                                      "image)")}
    conformance_params = {"images": 1, "max_iter": 2, "batch": 2, "n_samples": 2, "pgd_max_iter": 2, "patch": 2}

    def _analyze(self, model: ModelAdapter, batch: AdversarialBatch, **context: Any) -> A2EInpaintingResult:
        n = self._n(batch)
        ch, hh, ww = (int(s) for s in batch.x0.shape[1:])
        side = default_patch(min(hh, ww)) if self.patch is None else int(self.patch)
        if side > min(hh, ww):
            raise ParameterError(self._owner(), "patch", self.patch, f"a side <= {min(hh, ww)} (the image's)")
        eta = self._eta((ch, hh, ww))
        pool = self._class_pool(batch, context)
        x0 = batch.x0.detach().cpu().float()
        y = batch.y_true.detach().cpu().long()[:n]
        masks, pos, masked, outs, counts = [], np.zeros((n, 2), dtype=np.int64), [], [], []
        for i in range(n):
            c = int(y[i])
            g = torch.Generator().manual_seed(int(self.seed) * 1_000_003 + i)
            r = int(torch.randint(0, hh - side + 1, (1,), generator=g))
            col = int(torch.randint(0, ww - side + 1, (1,), generator=g))
            f = square_mask((hh, ww), side, (r, col))
            seed_image = corrupt(x0[i], f, self.fill)
            gauss = self._gaussian(pool, c, i)
            samples = gauss.sample(int(self.n_samples), torch.Generator().manual_seed(int(self.seed) + i))
            res = self._a2e(model, seed_image, samples, c, i, eta, penalty_mask=f, penalty_beta=float(self.beta))
            pos[i] = (r, col)
            masks.append(f)
            masked.append(seed_image)
            outs.append((seed_image + res.p.float()).clamp(0, 1))
            counts.append(gauss.n)
        shape = (ch, hh, ww)
        fm = torch.stack(masks) if masks else torch.zeros(0, 1, hh, ww)
        s = torch.stack(masked) if masked else torch.zeros(0, *shape)
        a = torch.stack(outs) if outs else torch.zeros(0, *shape)
        p = self._pgd(model, s, y, eta, fm if self.pgd_restrict else None)
        orig = x0[:n]
        metrics: dict[str, np.ndarray] = {}
        for kind, imgs in (("masked", s), ("a2e", a), ("pgd", p)):
            metrics[f"psnr_{kind}"] = np.array([psnr(orig[i], imgs[i]) for i in range(n)], dtype=float)
            metrics[f"ssim_{kind}"] = np.array([ssim(orig[i], imgs[i]) for i in range(n)], dtype=float)
            metrics[f"psnr_region_{kind}"] = np.array([region_psnr(orig[i], imgs[i], fm[i]) for i in range(n)],
                                                      dtype=float)
        keep = 1.0 - fm
        ap = self._attack_params(eta)
        ap["pgd"]["restricted_to_F"] = bool(self.pgd_restrict)
        ap["beta"] = float(self.beta)
        return A2EInpaintingResult(
            target=y.numpy(), masks=fm, positions=pos, original=orig, masked=s, a2e=a, pgd=p, **metrics,
            outside_a2e=((a - s) * keep).flatten(1).norm(dim=1).double().numpy(),
            outside_pgd=((p - s) * keep).flatten(1).norm(dim=1).double().numpy(),
            robust_original=_probs(model, orig, y), robust_masked=_probs(model, s, y), robust_a2e=_probs(model, a, y),
            robust_pgd=_probs(model, p, y), l2_a2e=(a - s).flatten(1).norm(dim=1).double().numpy(),
            l2_pgd=(p - s).flatten(1).norm(dim=1).double().numpy(), n_class_images=np.asarray(counts, dtype=np.int64),
            eta=float(eta), beta=float(self.beta), attack_params=ap, params=self.get_params())
