"""The data that flows between components: :class:`AdversarialBatch` and :class:`Attribution`."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

from .results import Result

__all__ = ["AdversarialBatch", "Attribution", "PAIR_KEYS", "PairMaps", "random_targets"]


@dataclass(frozen=True)
class AdversarialBatch(Result):
    """Clean images, their adversarial versions and what the attack did.

    Attributes:
        x0: ``(N, C, H, W)`` clean pixels in [0, 1].
        x_adv: ``(N, C, H, W)`` adversarial pixels in [0, 1].
        y_true: ``(N,)`` true labels.
        y_target: ``(N,)`` target labels of a targeted attack, else ``None``.
        success: ``(N,)`` bool: prediction on ``x_adv`` equals ``y_target`` (targeted) or
            differs from ``y_true`` (untargeted).
        y_adv: ``(N,)`` prediction on ``x_adv`` (``None`` if unknown).
        attack: the attack's registry name.
        params: the attack's parameters.

    ``delta`` is derived (``x_adv - x0``), never stored twice.
    """

    x0: torch.Tensor
    x_adv: torch.Tensor
    y_true: torch.Tensor
    y_target: torch.Tensor | None = None
    success: torch.Tensor | None = None
    y_adv: torch.Tensor | None = None
    attack: str = ""
    params: dict[str, Any] = field(default_factory=dict)

    kind = "adversarial_batch"
    per_image = ("x0", "x_adv", "y_true", "y_target", "success", "y_adv")

    def __post_init__(self):
        from .exceptions import ParameterError

        if tuple(self.x0.shape) != tuple(self.x_adv.shape):
            raise ParameterError("AdversarialBatch", "x_adv", self.x_adv, f"the shape of x0 {tuple(self.x0.shape)}")
        n = len(self.x0)
        for name in ("y_true", "y_target", "success", "y_adv"):
            v = getattr(self, name)
            if v is not None and tuple(v.shape) != (n,):
                raise ParameterError("AdversarialBatch", name, v, f"shape ({n},)")

    @property
    def delta(self) -> torch.Tensor:
        """The perturbation ``x_adv - x0``."""
        return self.x_adv - self.x0

    @property
    def targeted(self) -> bool:
        return self.y_target is not None

    @property
    def target(self) -> torch.Tensor:
        """``y_target`` for targeted attacks, else the adversarial prediction ``y_adv``
        (the "t" of the PSE paper for untargeted attacks)."""
        if self.y_target is not None:
            return self.y_target
        if self.y_adv is None:
            from .exceptions import ParameterError

            raise ParameterError("AdversarialBatch", "y_adv", None, "the adversarial predictions",
                                 "Untargeted batches need y_adv; attacks fill it in.")
        return self.y_adv

    def __len__(self) -> int:
        return len(self.x0)

    def __getitem__(self, idx) -> "AdversarialBatch":
        """A sub-batch (``idx``: int, slice, index tensor or bool mask): :meth:`take`."""
        return self.take(idx)

    def to(self, device) -> "AdversarialBatch":
        mv = (lambda v: None if v is None else v.to(device))
        return dataclasses.replace(self, x0=self.x0.to(device), x_adv=self.x_adv.to(device),
                                   y_true=self.y_true.to(device), y_target=mv(self.y_target),
                                   success=mv(self.success), y_adv=mv(self.y_adv))

    def norms(self, tol: float | None = None) -> dict[str, torch.Tensor]:
        """Per-image ``l0``, ``l1``, ``l2``, ``linf`` norms of ``delta`` (float tensors ``(N,)``).

        ``l0`` counts the entries of ``delta`` (pixels x channels) with ``|delta| > tol``, as
        in Table A1 of the PSE paper (266 031 of 299x299x3 for IFGSM). The default ``tol``
        is relative to the dtype of ``delta``: ``max(1e-8, 4 * torch.finfo(dtype).eps)``
        (4.8e-7 for float32, 3.9e-3 for float16), so entries that differ from ``x0`` by
        round-off only (a clamp, a tanh round trip, a dtype cast) are not counted. Pass
        ``tol=0.0`` to count every entry that differs at all.
        """
        flat = self.delta.flatten(1)
        if tol is None:
            tol = max(1e-8, 4 * torch.finfo(flat.dtype).eps) if flat.is_floating_point() else 0.0
        return {"l0": (flat.abs() > tol).sum(1).float(), "l1": flat.abs().sum(1),
                "l2": flat.norm(dim=1), "linf": flat.abs().amax(1) if flat.shape[1] else flat.sum(1)}

    def rows(self) -> list[dict[str, Any]]:
        n = self.norms()
        asr = float(self.success.float().mean()) if self.success is not None and len(self) else float("nan")
        return [{"attack": self.attack, "n": len(self), "targeted": self.targeted, "asr": asr,
                 **{k: float(v.mean()) if len(v) else float("nan") for k, v in n.items()}}]

    @classmethod
    def from_pair(cls, x0: torch.Tensor, x_adv: torch.Tensor, y_true: torch.Tensor, model: Any = None,
                  y_target: torch.Tensor | None = None, attack: str = "external") -> "AdversarialBatch":
        """Build a batch from precomputed clean/adversarial images (e.g. a DAmageNet-style
        folder). With ``model``, ``y_adv`` and ``success`` are computed.

        Images and labels may be torch tensors or numpy arrays (labels become int64 tensors)."""
        x0, x_adv = _tensor("x0", x0), _tensor("x_adv", x_adv)
        y_true = _tensor("y_true", y_true, torch.long)
        y_target = None if y_target is None else _tensor("y_target", y_target, torch.long).to(y_true.device)
        y_adv = success = None
        if model is not None:
            from .model import as_adapter

            y_adv = as_adapter(model).predict(x_adv).to(x0.device)
            success = (y_adv == y_target) if y_target is not None else (y_adv != y_true)
        return cls(x0=x0, x_adv=x_adv, y_true=y_true, y_target=y_target, success=success, y_adv=y_adv,
                   attack=attack)


def _tensor(name: str, value: Any, dtype: torch.dtype | None = None) -> torch.Tensor:
    """``value`` (tensor, numpy array or sequence) as a tensor; labels (``dtype=torch.long``)
    must be integers."""
    import numpy as np

    from .exceptions import ParameterError

    if isinstance(value, np.ndarray):
        value = torch.from_numpy(np.ascontiguousarray(value))
    elif not isinstance(value, torch.Tensor):
        try:
            value = torch.as_tensor(value)
        except Exception:
            raise ParameterError("AdversarialBatch.from_pair", name, value,
                                 "a torch.Tensor or numpy array") from None
    if dtype is torch.long:
        if value.is_floating_point() or value.is_complex() or value.dtype == torch.bool:
            raise ParameterError("AdversarialBatch.from_pair", name, value, "integer class labels")
        value = value.long()
    return value


@dataclass(frozen=True)
class Attribution(Result):
    """Attribution maps for one class per image.

    Attributes:
        maps: ``(N, H, W)`` at input resolution (bilinear upsampling of ``layer_maps``).
        layer_maps: ``(N, h, w)`` at the explained layer's resolution.
        target: ``(N,)`` the explained classes.
        method: explainer name; layer: the explained layer's name.
    """

    maps: torch.Tensor
    layer_maps: torch.Tensor
    target: torch.Tensor
    method: str = ""
    layer: str = ""

    kind = "attribution"
    per_image = ("maps", "layer_maps", "target")

    def rows(self) -> list[dict[str, Any]]:
        return [{"method": self.method, "layer": self.layer, "n": len(self.maps),
                 "map_size": "x".join(map(str, self.maps.shape[1:])),
                 "layer_size": "x".join(map(str, self.layer_maps.shape[1:]))}]


#: The four maps of an adversarial pair, in the order of Fig. 3 of the PSE paper:
#: F(x0, t0), F(x', t0), F(x0, t), F(x', t).
PAIR_KEYS: tuple[str, ...] = ("x0_t0", "xadv_t0", "x0_t", "xadv_t")


@dataclass(frozen=True)
class PairMaps(Result):
    """Maps of the clean and adversarial images for the true and the adversarial class
    (:meth:`advinterp.Explainer.explain_pair`).

    ``t0`` is the true class (``batch.y_true``), ``t`` the adversarial class
    (``batch.target``: the attack's target, or the adversarial prediction of an untargeted
    attack), ``x'`` the adversarial image.

    Attributes:
        x0_t0, xadv_t0, x0_t, xadv_t: ``(N, H, W)`` maps at input resolution:
            F(x0, t0), F(x', t0), F(x0, t), F(x', t).
        layer_maps: ``{key: (N, h, w)}`` the same four at the layer's resolution (divided by
            the same ``scale``, so the maps are still the bilinear upsampling of ``layer_maps``).
        scale: ``(N,)`` the per-image divisor applied (ones when not normalised): the raw
            maps are ``x0_t0 * scale[:, None, None]`` etc.
        t0, t: ``(N,)`` the true and the adversarial classes.
        method, layer: the explainer's name and the explained layer.
        normalized: whether the maps were divided by their common per-image maximum.

    ``len(pair)`` is ``N``; ``pair[idx]`` is the sub-batch (int, slice, index tensor or bool
    mask), like :meth:`AdversarialBatch.__getitem__`.
    """

    x0_t0: torch.Tensor
    xadv_t0: torch.Tensor
    x0_t: torch.Tensor
    xadv_t: torch.Tensor
    layer_maps: dict[str, torch.Tensor] = field(default_factory=dict)
    scale: torch.Tensor | None = None
    t0: torch.Tensor | None = None
    t: torch.Tensor | None = None
    method: str = ""
    layer: str = ""
    normalized: bool = True

    kind = "pair_maps"
    #: The four keys of :meth:`maps` (``PAIR_KEYS``).
    KEYS: ClassVar[tuple[str, ...]] = PAIR_KEYS
    #: The fields with one entry per image (what ``pair[idx]`` indexes).
    per_image: ClassVar[tuple[str, ...]] = (*PAIR_KEYS, "layer_maps", "scale", "t0", "t")

    def maps(self) -> dict[str, torch.Tensor]:
        """``{key: (N, H, W)}`` for the four keys ``x0_t0, xadv_t0, x0_t, xadv_t``."""
        return {k: getattr(self, k) for k in PAIR_KEYS}

    def __len__(self) -> int:
        return len(self.x0_t0)

    def __getitem__(self, idx) -> "PairMaps":
        """A sub-batch (``idx``: int, slice, index tensor or bool mask) of every ``(N, ...)``
        field (``per_image``): the four maps, ``layer_maps``, ``scale``, ``t0`` and ``t``
        (:meth:`Result.take`)."""
        return self.take(idx)

    def rows(self) -> list[dict[str, Any]]:
        return [{"method": self.method, "layer": self.layer, "n": len(self),
                 "map_size": "x".join(map(str, self.x0_t0.shape[1:])), "normalized": self.normalized,
                 **{f"mean_{k}": float(v.mean()) if v.numel() else float("nan") for k, v in self.maps().items()}}]


def random_targets(y: torch.Tensor, nb_classes: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Uniformly random target labels different from ``y`` (same device)."""
    off = torch.randint(1, nb_classes, tuple(y.shape), generator=generator,
                        device="cpu" if generator is None else generator.device)
    return (y + off.to(y.device)) % nb_classes
