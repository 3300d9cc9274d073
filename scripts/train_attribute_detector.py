"""Train the attribute detector shipped with advinterp-attributes, reproducibly.

    python scripts/train_attribute_detector.py                  # the shipped recipe (~35 min on 2 busy CPUs)
    python scripts/train_attribute_detector.py --out /tmp/det.pt --n-train 256 --epochs 1

Recipe (seeded; CPU, float32): :func:`advinterp_attributes.detector.build_detector` with its
defaults (TinyBackbone width 32, anchors 8-48 px, box head 128) for the embedded world's 15
box classes (12 objects + head / legs / tail) and 21 attributes (the 16 class attributes
plus the part colours), ``--n-train`` train scenes (seed 0) with their object and part boxes,
Adam (lr 1e-3, cosine decay to 0), batch 16, ``--epochs`` epochs, random horizontal flips
(boxes flipped with the image). Evaluated on ``--n-test`` held-out test scenes:
mAP@0.5 (VOC all-point, :mod:`advinterp_attributes.detection_metrics`) and attribute
accuracy of the boxes found (score >= 0.5); the numbers are stored in the checkpoint's
``meta`` and printed for docs/attributes.md. The checkpoint loads with
``torch.load(..., weights_only=True)`` (``AttributeDetector.load``).
"""
from __future__ import annotations

import argparse
import math
import time

import torch

from advinterp.datasets.synthetic import SyntheticWorld
from advinterp_attributes.detection_metrics import attribute_accuracy, average_precision
from advinterp_attributes.detector import SHIPPED_WEIGHTS, AttributeDetector, scene_targets, world_vocabulary


def flip(x: torch.Tensor, target: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Horizontal flip of a ``(3, H, W)`` image and its xyxy boxes."""
    w = x.shape[-1]
    boxes = target["boxes"].clone()
    boxes[:, [0, 2]] = w - target["boxes"][:, [2, 0]]
    return x.flip(-1), {**target, "boxes": boxes}


def evaluate(det: AttributeDetector, world: SyntheticWorld, n: int) -> dict[str, float]:
    batch = world.generate(n, split="test")
    x, _ = batch.tensors()
    found = det.detect(x, score_threshold=0.5)
    truth = [{"boxes": [b.xyxy for b in bx], "labels": [b.name for b in bx],
              "attributes": scene_targets(bx, det.classes, det.attributes)["attributes"].numpy()}
             for bx in batch.boxes]
    # mAP ranks every detection the model keeps (score >= its box_score_thresh), as VOC does
    ranked = det.detect(x, score_threshold=0.0)
    ap = average_precision(ranked, truth, iou=0.5)
    acc = attribute_accuracy(found, truth, iou=0.5)
    return {"map50": ap["map"], "ap50": ap["ap"], "attribute_accuracy": acc["accuracy"],
            "attribute_exact": acc["exact"], "boxes_found": acc["found"], "test_scenes": n}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=str(SHIPPED_WEIGHTS))
    p.add_argument("--n-train", type=int, default=2000)
    p.add_argument("--n-test", type=int, default=500)
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    torch.manual_seed(a.seed)
    world = SyntheticWorld(size=64, seed=0)
    classes, attributes = world_vocabulary()
    det = AttributeDetector.build(classes, attributes)
    train = world.generate(a.n_train, split="train")
    x, _ = train.tensors()
    targets = [scene_targets(bx, classes, attributes) for bx in train.boxes]
    model = det.model
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=a.lr)
    steps = a.epochs * math.ceil(a.n_train / a.batch)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps)))
    g = torch.Generator().manual_seed(a.seed)
    t0 = time.time()
    for epoch in range(a.epochs):
        order = torch.randperm(a.n_train, generator=g)
        flips = torch.rand(a.n_train, generator=g) < 0.5
        total, n = {}, 0
        for b in range(0, a.n_train, a.batch):
            idx = order[b:b + a.batch].tolist()
            ims, tgs = [], []
            for i in idx:
                xi, ti = (flip(x[i], targets[i]) if flips[i] else (x[i], targets[i]))
                ims.append(xi)
                tgs.append(ti)
            losses = model(ims, tgs)
            loss = sum(losses.values())
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            for k, v in losses.items():
                total[k] = total.get(k, 0.0) + v.item() * len(idx)
            n += len(idx)
        print(f"epoch {epoch + 1}/{a.epochs} ({time.time() - t0:.0f}s): "
              + ", ".join(f"{k} {v / n:.3f}" for k, v in total.items()), flush=True)
    model.eval()
    meta = evaluate(det, world, a.n_test)
    meta.update({"recipe": f"scripts/train_attribute_detector.py --n-train {a.n_train} --epochs {a.epochs} "
                           f"--batch {a.batch} --lr {a.lr} --seed {a.seed}", "train_seconds": round(time.time() - t0)})
    det.meta = meta
    det.save(a.out)
    print(f"held-out ({a.n_test} test scenes): mAP@0.5 {meta['map50']:.3f}, attribute accuracy "
          f"{meta['attribute_accuracy']:.3f} (exact {meta['attribute_exact']:.3f}), boxes found {meta['boxes_found']:.3f}")
    print("AP@0.5 per class: " + ", ".join(f"{k} {v:.2f}" for k, v in meta["ap50"].items()))
    print(f"saved {a.out}")


if __name__ == "__main__":
    main()
