import numpy as np
import torch
from torch import nn

import advinterp
from advinterp import AdversarialBatch, ModelAdapter


class TwoStage(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Sequential(nn.Conv2d(1, 1, 1, bias=False))
        self.b = nn.Sequential(nn.Conv2d(1, 1, 1, bias=False))
        self.fc = nn.Linear(1, 2)
        with torch.no_grad():
            self.a[0].weight.fill_(2.0)
            self.b[0].weight.fill_(-3.0)

    def forward(self, x):
        return self.fc(self.b(self.a(x)).mean((2, 3)))


def test_hand_computed_distances():
    m = ModelAdapter(TwoStage(), input_shape=(1, 2, 2))
    x0 = torch.zeros(2, 1, 2, 2) + 0.25
    xa = x0.clone()
    xa[0, 0, 0, 0] += 0.5  # one pixel moved by 0.5
    xa[1] += 0.1           # all four pixels moved by 0.1
    batch = AdversarialBatch(x0, xa, torch.tensor([0, 1]))
    r = advinterp.get_analyzer("activation_distance").analyze(m, batch)
    assert r.layers == ("a", "b")
    # layer a multiplies by 2, layer b by -6 overall
    np.testing.assert_allclose(r.distance, [[1.0, 3.0], [0.4, 1.2]], rtol=1e-6)
    # clean norms: a: 2*0.25*2 = 1.0 ; b: 6*0.25*2 = 3.0
    np.testing.assert_allclose(r.relative, [[1.0, 1.0], [0.4, 0.4]], rtol=1e-6)
    assert [row["layer"] for row in r.rows()] == ["a", "b"]
    r2 = advinterp.get_analyzer("activation_distance", layers=["b"], batch_size=1).analyze(m, batch)
    np.testing.assert_allclose(r2.distance[:, 0], r.distance[:, 1], rtol=1e-6)
