"""An advinterp plugin in a few dozen lines: the logit margin before and after an attack.

margin(x) = Z(x)[y] - max_{j != y} Z(x)[j]: positive when the true class wins. Installed
with ``pip install -e examples/custom_plugin``, it is found through the ``advinterp``
entry point declared in ``setup.cfg`` and used as
``advinterp.get_analyzer("example.logit_margin")``.
"""
from dataclasses import dataclass

import numpy as np
import torch

import advinterp
from advinterp import Analyzer, Param, Result


@dataclass(frozen=True)
class MarginResult(Result):
    """Per-image margins ``clean`` and ``adversarial`` (``(N,)`` arrays)."""

    clean: np.ndarray
    adversarial: np.ndarray

    def rows(self):
        if not len(self.clean):  # an empty batch: no margins to average
            return [{"clean_margin": float("nan"), "adv_margin": float("nan"), "flipped": float("nan")}]
        return [{"clean_margin": float(self.clean.mean()), "adv_margin": float(self.adversarial.mean()),
                 "flipped": float((self.adversarial < 0).mean())}]


class LogitMargin(Analyzer):
    """Logit margin of the true class, clean vs adversarial."""

    name = "example.logit_margin"
    params = {"batch_size": Param.integer(256, low=1)}

    def _analyze(self, model, batch, **context):
        def margins(x):
            out = []
            for i in range(0, len(x), self.batch_size):
                with torch.no_grad():
                    z = model.logits(x[i:i + self.batch_size])
                y = batch.y_true[i:i + self.batch_size].to(z.device)
                true = z.gather(1, y[:, None])[:, 0]
                other = z.scatter(1, y[:, None], float("-inf")).amax(1)
                out.append((true - other).cpu())
            return torch.cat(out).numpy() if out else np.zeros(0, dtype=np.float32)

        return MarginResult(margins(batch.x0), margins(batch.x_adv))


@advinterp.hookimpl
def advinterp_register_analyzers(register):
    register(LogitMargin)
