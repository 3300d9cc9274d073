"""The class-conditional Gaussian of Jalwana et al. (CVPR 2020), Sec. 5.2.

The sample set of the robust-model tasks (generation, inpainting, manipulation) is drawn from
``N(mu_I, Sigma_I)``, the mean and covariance of images ``I_1..I_n`` of the target class,
computed "for computational reasons" at 4x downsampling; the samples are upsampled back to
the network's input size:

1. ``I_i <- downsample(I_i)``: area (average) pooling by ``factor`` (4), i.e.
   ``adaptive_avg_pool2d`` to ``(H // factor, W // factor)``;
2. ``mu = mean_i I_i``, ``Sigma = mean_i (I_i - mu)(I_i - mu)^T`` over the flattened
   ``m = C * (H // factor) * (W // factor)`` values (the paper's ``E[...]``: divided by ``n``),
   plus ``ridge * Id`` so that ``n < m`` images still give a proper distribution;
3. ``z ~ N(mu, Sigma + ridge Id)``, drawn exactly without forming the ``m x m`` matrix:
   ``z = mu + X_c^T u / sqrt(n) + sqrt(ridge) v`` with ``X_c`` the ``(n, m)`` centred images and
   ``u ~ N(0, I_n)``, ``v ~ N(0, I_m)`` (``Cov = X_c^T X_c / n + ridge Id``); this is a
   Cholesky-free factor of the same covariance, ``O(k n m)`` for ``k`` samples;
4. upsample back to ``(H, W)`` (bilinear, ``align_corners=False``: smooth, no block edges)
   and clip to [0, 1].

:func:`class_gaussian` fits it, :meth:`ClassGaussian.sample` draws (seeded
``torch.Generator``), :meth:`ClassGaussian.covariance` returns ``Sigma + ridge Id`` (for tests
and inspection; ``m x m``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from advinterp.api import ParameterError

__all__ = ["ClassGaussian", "class_gaussian", "downsample", "upsample", "PAPER_FACTOR"]

#: The paper's downsampling factor (Sec. 5.2).
PAPER_FACTOR = 4
OWNER = "class_gaussian"


def _small_size(h: int, w: int, factor: int) -> tuple[int, int]:
    return max(1, h // factor), max(1, w // factor)


def downsample(images: torch.Tensor, factor: int) -> torch.Tensor:
    """``(N, C, H, W)`` -> ``(N, C, H // factor, W // factor)`` by area (average) pooling."""
    h, w = images.shape[-2:]
    return F.adaptive_avg_pool2d(images, _small_size(int(h), int(w), int(factor)))


def upsample(images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``(N, C, h, w)`` -> ``(N, C, *size)``, bilinear (``align_corners=False``)."""
    if tuple(images.shape[-2:]) == tuple(size):
        return images.clone()
    return F.interpolate(images, size=tuple(int(s) for s in size), mode="bilinear", align_corners=False)


@dataclass(frozen=True)
class ClassGaussian:
    """``N(mu, Sigma + ridge Id)`` of downsampled class images.

    Attributes:
        mean: ``(m,)`` float64 ``mu`` (flattened ``(C, h, w)``).
        centred: ``(n, m)`` float64 ``X_c = I_i - mu`` (``Sigma = X_c^T X_c / n``).
        ridge: the ridge added to ``Sigma``.
        shape: ``(C, H, W)`` the full image shape (the samples' shape).
        small: ``(C, h, w)`` the downsampled shape.
        factor: the downsampling factor.
    """

    mean: torch.Tensor
    centred: torch.Tensor
    ridge: float
    shape: tuple
    small: tuple
    factor: int

    @property
    def n(self) -> int:
        """The number of images it was fitted on."""
        return int(self.centred.shape[0])

    def covariance(self) -> torch.Tensor:
        """``(m, m)`` float64 ``Sigma + ridge Id``."""
        m = self.mean.numel()
        return self.centred.T @ self.centred / self.n + self.ridge * torch.eye(m, dtype=torch.float64)

    def sample_small(self, k: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``(k, C, h, w)`` float64 samples at the downsampled size (not clipped)."""
        if isinstance(k, bool) or not isinstance(k, int) or k < 0:
            raise ParameterError("ClassGaussian.sample", "k", k, "an integer >= 0")
        m = self.mean.numel()
        u = torch.randn((k, self.n), generator=generator, dtype=torch.float64)
        z = self.mean[None] + u @ self.centred / math.sqrt(self.n)
        if self.ridge > 0:
            z = z + math.sqrt(self.ridge) * torch.randn((k, m), generator=generator, dtype=torch.float64)
        return z.reshape(k, *self.small)

    def sample(self, k: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``(k, C, H, W)`` float32 samples upsampled (bilinear) to the image size, clipped to [0, 1]."""
        z = self.sample_small(k, generator).float()
        return upsample(z, tuple(self.shape[-2:])).clamp_(0, 1)


def class_gaussian(images: Any, factor: int = PAPER_FACTOR, ridge: float = 1e-4) -> ClassGaussian:
    """Fit :class:`ClassGaussian` to ``images`` ``(n, C, H, W)`` (pixels in [0, 1], one class).

    Args:
        images: ``n >= 1`` images of the target class.
        factor: downsampling factor (4, the paper's); 1 keeps the full size.
        ridge: added to the covariance's diagonal (pixel units squared, ``1e-4``: a standard
            deviation of 0.01 per downsampled value), so ``n < m`` images still give a
            full-rank Gaussian; 0 keeps the sample covariance (samples then lie in the span
            of the images around the mean).
    """
    x = torch.as_tensor(images)
    if x.dim() != 4 or not x.is_floating_point():
        raise ParameterError(OWNER, "images", tuple(x.shape), "(n, C, H, W) float images of one class")
    if len(x) == 0:
        raise ParameterError(OWNER, "images", "0 images", "at least one image of the class",
                             "Pass images of the target class (the Gaussian needs a mean).")
    if not bool(torch.isfinite(x).all()) or float(x.min()) < 0 or float(x.max()) > 1:
        raise ParameterError(OWNER, "images", "pixels", "finite pixels in [0, 1]", "Scale 0-255 images by 1/255.")
    if isinstance(factor, bool) or not isinstance(factor, int) or factor < 1:
        raise ParameterError(OWNER, "factor", factor, "an integer >= 1", "The paper downsamples 4x.")
    if isinstance(ridge, bool) or not isinstance(ridge, (int, float)) or not math.isfinite(ridge) or ridge < 0:
        raise ParameterError(OWNER, "ridge", ridge, "a finite number >= 0", "1e-4 keeps a tiny isotropic spread.")
    small = downsample(x.detach().cpu().double(), factor)
    flat = small.flatten(1)
    mean = flat.mean(0)
    return ClassGaussian(mean=mean, centred=flat - mean, ridge=float(ridge), shape=tuple(int(s) for s in x.shape[1:]),
                         small=tuple(int(s) for s in small.shape[1:]), factor=int(factor))
