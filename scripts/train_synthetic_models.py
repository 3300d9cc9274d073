"""Retrain the two shipped models on the embedded synthetic world, reproducibly.

    python scripts/train_synthetic_models.py            # both models (~20 min on 2 CPU cores)
    python scripts/train_synthetic_models.py --only standard

Recipe (all seeded; CPU, float32):

* ``synthetic_cnn.pt``: SyntheticCNN(width=24), 16 000 train scenes (seed 0), Adam lr 3e-3
  with cosine decay, batch 128, 8 epochs, random horizontal flips.
* ``synthetic_cnn_robust.pt``: the same architecture, initialised from the standard model and
  fine-tuned with PGD adversarial training (Madry et al.): l_inf eps = 8/255, 3 steps of
  3/255 from a random start, 10 000 train scenes, Adam lr 1e-3 cosine, 6 epochs.

Both are evaluated on 2 000 test scenes (clean) and 1 000 test scenes under PGD
(l_inf 8/255, 10 steps of 2/255, random start); the numbers are stored in the checkpoint's
``meta`` and printed for docs/models.md.
"""
from __future__ import annotations

import argparse
import math
import time

import torch
import torch.nn.functional as F

from advinterp.attacks.pgd_core import pgd_linf
from advinterp.datasets.synthetic import CLASSES, SyntheticWorld
from advinterp.models.synthetic_cnn import MEAN, STD, WEIGHTS_DIR, SyntheticCNN

EPS = 8 / 255
_mean = torch.tensor(MEAN).view(1, 3, 1, 1)
_std = torch.tensor(STD).view(1, 3, 1, 1)


def logits(model, x):
    return model((x - _mean) / _std)


def evaluate(model, x, y, pgd: bool, batch: int = 250) -> float:
    model.eval()
    correct = 0
    g = torch.Generator().manual_seed(123)
    for i in range(0, len(x), batch):
        xb, yb = x[i:i + batch], y[i:i + batch]
        if pgd:
            xb = pgd_linf(lambda z: logits(model, z), xb, yb, EPS, 2 / 255, 10, generator=g)
        with torch.no_grad():
            correct += (logits(model, xb).argmax(1) == yb).sum().item()
    return correct / len(x)


def train(model, x, y, epochs, lr, adversarial: bool, seed: int, batch: int = 128):
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    steps = epochs * math.ceil(len(x) / batch)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * s / steps)))
    for ep in range(epochs):
        perm = torch.randperm(len(x), generator=g)
        t0, tot, n = time.time(), 0.0, 0
        for i in range(0, len(x), batch):
            idx = perm[i:i + batch]
            xb, yb = x[idx], y[idx]
            flip = torch.rand(len(idx), generator=g) < 0.5
            xb = torch.where(flip.view(-1, 1, 1, 1), xb.flip(3), xb)
            if adversarial:
                model.eval()
                xb = pgd_linf(lambda z: logits(model, z), xb, yb, EPS, 3 / 255, 3, generator=g)
            model.train()
            loss = F.cross_entropy(logits(model, xb), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            tot, n = tot + loss.item() * len(idx), n + len(idx)
        print(f"  epoch {ep + 1}/{epochs} loss {tot / n:.4f} ({time.time() - t0:.0f}s)", flush=True)
    model.eval()
    return model


def save(model, name, meta):
    WEIGHTS_DIR.mkdir(parents=True, exist_ok=True)
    sd = {k: v.detach().clone() for k, v in model.state_dict().items()}
    torch.save({"state_dict": sd, "num_classes": len(CLASSES), "width": 24,
                "mean": list(MEAN), "std": list(STD), "meta": meta}, WEIGHTS_DIR / name)
    print(f"wrote {WEIGHTS_DIR / name}: {meta}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--only", choices=["standard", "robust"], default=None)
    args = ap.parse_args()
    torch.manual_seed(0)
    torch.use_deterministic_algorithms(True)
    world = SyntheticWorld(size=64, seed=0)
    t = time.time()
    x_test, y_test = world.generate(2000, "test").tensors()
    print(f"test set rendered in {time.time() - t:.1f}s")

    if args.only in (None, "standard"):
        x, y = world.generate(16000, "train").tensors()
        torch.manual_seed(0)
        model = train(SyntheticCNN(len(CLASSES), 24), x, y, epochs=8, lr=3e-3, adversarial=False, seed=0)
        meta = {"clean_accuracy": evaluate(model, x_test, y_test, False),
                "pgd_accuracy": evaluate(model, x_test[:1000], y_test[:1000], True),
                "recipe": "standard, 16k scenes, 8 epochs Adam 3e-3 cosine",
                "eval": "clean: 2000 test scenes; pgd: 1000 test scenes, linf 8/255, 10x2/255, random start"}
        save(model, "synthetic_cnn.pt", meta)
    if args.only in (None, "robust"):
        from advinterp.models.synthetic_cnn import load_synthetic_cnn

        x, y = world.generate(10000, "train", start=16000).tensors()
        torch.manual_seed(1)
        model = load_synthetic_cnn(robust=False)
        model = train(model, x, y, epochs=6, lr=1e-3, adversarial=True, seed=1)
        meta = {"clean_accuracy": evaluate(model, x_test, y_test, False),
                "pgd_accuracy": evaluate(model, x_test[:1000], y_test[:1000], True),
                "recipe": "PGD adversarial fine-tuning of synthetic_cnn, linf 8/255, 3x3/255, 10k scenes, 6 epochs Adam 1e-3 cosine",
                "eval": "clean: 2000 test scenes; pgd: 1000 test scenes, linf 8/255, 10x2/255, random start"}
        save(model, "synthetic_cnn_robust.pt", meta)


if __name__ == "__main__":
    main()
