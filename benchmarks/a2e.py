"""a2e (attack-to-explain, Jalwana et al. Algorithm 1): batched vs per-image evaluation.

``batched``: :func:`advinterp_a2e.attack_to_explain` as shipped -- the mini-batch gradient of
the seed and its ``b - 1`` samples in one forward/backward, the sign search (lines 11-14) as
shared forwards of both signs over the whole sample set, ``wp`` (line 22) in one forward.
``per-image``: the straightforward implementation of the same algorithm
(``attack_to_explain(..., batched=False)``): one forward/backward per mini-batch image and one
forward per sample and sign in the search. Same model (``synthetic-cnn``, 3x64x64, 12 classes),
same data (the embedded world's test images, seed 0: the first image not of the target is the
seed, the other images of other classes the samples), same settings (paper defaults with eta
scaled to 64 px, ``b = 32``, Algorithm 1 alone, ``gamma = 1`` so no early stop), a fixed number
of iterations, one run each after a one-iteration warm-up. ``max |dp|`` is the largest absolute
difference between the two perturbations.

``python benchmarks/a2e.py [--samples 256] [--iters 5] [--batch 32] [--target 3] [--chunk 32]``
"""
import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _util import print_table  # noqa: E402


def run(samples: int, iters: int, batch: int, target: int, chunk: int = 32):
    import advinterp
    from advinterp.datasets.synthetic import SyntheticWorld
    from advinterp_a2e import attack_to_explain

    model = advinterp.get_model("synthetic-cnn")
    x, y = SyntheticWorld(size=64, seed=0).generate(samples + 1 + samples // 10, "test").tensors()
    i = int((y != target).nonzero()[0])
    rest = torch.tensor([j for j in range(len(x)) if j != i and int(y[j]) != target])[:samples]
    kw = dict(batch=batch, gamma=1.0, refine=False, seed=0, progress=False, eval_batch_size=chunk)
    rows = []
    out = {}
    for name, batched in (("batched", True), ("per-image", False)):
        attack_to_explain(model, x[i], x[rest], target, max_iter=1, batched=batched, **kw)  # warm-up
        t = time.perf_counter()
        out[name] = attack_to_explain(model, x[i], x[rest], target, max_iter=iters, batched=batched, **kw)
        out[name + "_s"] = time.perf_counter() - t
    diff = float((out["batched"].p - out["per-image"].p).abs().max())
    rows.append({"model": "synthetic-cnn 64px", "samples": len(rest), "b": batch, "chunk": chunk, "iters": iters,
                 "batched it/s": f"{iters / out['batched_s']:.3f}",
                 "per-image it/s": f"{iters / out['per-image_s']:.3f}",
                 "speedup": f"{out['per-image_s'] / out['batched_s']:.2f}x", "max |dp|": f"{diff:.2e}",
                 "same signs": bool(torch.equal(out["batched"].directions, out["per-image"].directions))})
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--samples", type=int, default=256, help="|D_bar| (the paper: 256)")
    p.add_argument("--iters", type=int, default=5)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--target", type=int, default=3)
    p.add_argument("--chunk", type=int, default=32, help="images per forward of the batched sign search")
    args = p.parse_args(argv)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    rows = run(args.samples, args.iters, args.batch, args.target, args.chunk)
    print_table(rows, list(rows[0]))
    return rows


if __name__ == "__main__":
    main()
