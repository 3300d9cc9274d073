"""The small CAM-compatible CNN shipped with advinterp, and its loader.

Architecture (``width`` = w, default 16; input 3x64x64 normalised pixels)::

    layer1  conv3x3(3->w)   BN ReLU            64x64
    layer2  maxpool2 conv3x3(w->2w)  BN ReLU   32x32
    layer3  maxpool2 conv3x3(2w->4w) BN ReLU   16x16
    layer4  conv3x3(4w->4w) BN ReLU            16x16   <- CAM layer
    pool    global average pooling
    fc      linear(4w -> n_classes)

It is deliberately *not* an ``nn.Sequential``: layers are reached by name
(``layer3``, ``layer4.conv`` ...) through :class:`advinterp.ModelAdapter`.
The weights ship in ``advinterp/models/weights/`` and are loaded with ``weights_only=True``;
``scripts/train_synthetic_models.py`` retrains them reproducibly.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

WEIGHTS_DIR = Path(__file__).with_name("weights")
#: Per-channel normalisation the shipped models were trained with (applied by the adapter).
MEAN = (0.5, 0.5, 0.5)
STD = (0.25, 0.25, 0.25)


class ConvBlock(nn.Module):
    """``[maxpool2] -> conv3x3 -> BN -> ReLU``."""

    def __init__(self, cin: int, cout: int, pool: bool = False):
        super().__init__()
        self.pool = nn.MaxPool2d(2) if pool else nn.Identity()
        self.conv = nn.Conv2d(cin, cout, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.bn(self.conv(self.pool(x))))


class SyntheticCNN(nn.Module):
    """Conv stages, global average pooling, one linear layer (CAM-compatible).

    Args:
        num_classes: output classes (default 12, the synthetic world's).
        width: channels of the first stage (default 16).
    """

    def __init__(self, num_classes: int = 12, width: int = 16):
        super().__init__()
        w = width
        self.layer1 = ConvBlock(3, w)
        self.layer2 = ConvBlock(w, 2 * w, pool=True)
        self.layer3 = ConvBlock(2 * w, 4 * w, pool=True)
        self.layer4 = ConvBlock(4 * w, 4 * w)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(4 * w, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def load_synthetic_cnn(robust: bool = False, path: str | Path | None = None,
                       map_location: str | torch.device = "cpu") -> SyntheticCNN:
    """Build :class:`SyntheticCNN` and load its shipped (or the given) weights.

    The checkpoint is a dict ``{"state_dict", "num_classes", "width", "mean", "std", "meta"}``
    loaded with ``torch.load(weights_only=True)``.
    """
    from ..exceptions import ParameterError

    if path is None:
        path = WEIGHTS_DIR / ("synthetic_cnn_robust.pt" if robust else "synthetic_cnn.pt")
    path = Path(path)
    if not path.is_file():
        raise ParameterError("load_synthetic_cnn", "path", str(path), "an existing checkpoint file",
                             "Retrain with `python scripts/train_synthetic_models.py`.")
    ckpt = torch.load(path, map_location=map_location, weights_only=True)
    model = SyntheticCNN(num_classes=int(ckpt["num_classes"]), width=int(ckpt["width"]))
    model.load_state_dict(ckpt["state_dict"])
    model.eval()
    return model


def checkpoint_meta(robust: bool = False) -> dict:
    """The ``meta`` dict stored with a shipped checkpoint (accuracies, training recipe)."""
    path = WEIGHTS_DIR / ("synthetic_cnn_robust.pt" if robust else "synthetic_cnn.pt")
    return dict(torch.load(path, map_location="cpu", weights_only=True).get("meta", {}))
