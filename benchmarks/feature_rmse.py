"""feature_rmse (Ding et al. eq. 4, Tables 4-7): one hooked forward per pair batch vs a per-layer loop.

``streamed``: :func:`advinterp.analyzers.feature_rmse.feature_rmse_sums`, the analyzer's core --
one forward of ``cat([x0, x'])`` per batch of pairs with every default layer (convolution,
activation, pooling leaves with a 4-d output) hooked at once, each output reduced to its
``(B, C)`` RMSE inside the hook. ``per-layer``: the obvious implementation -- for each layer,
for each batch, ``ModelAdapter.activations(cat([x0, x']), [layer])`` (one hook; the forward
stops after the layer) and the same RMSE. Both see the same pairs (random x0, x' = x0 + uniform
noise of 8/255), the same batch size (32) and layers; each is timed once after a warm-up forward
(and, for the baseline, one untimed call per layer, so that its timed forwards stop after the layer).
``max |d|`` is the largest absolute difference of the mean RMSE of any channel between the two.

Cases: the shipped ``synthetic-cnn`` at 64 px (256 pairs) and ResNet-18 with random weights (no
download) at 112 px (32 pairs).

``python benchmarks/feature_rmse.py [--cases synthetic-cnn:64:256 torchvision:resnet18:112:32] [--batch 32]``
"""
import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _util import print_table  # noqa: E402

CASES = ["synthetic-cnn:64:256", "torchvision:resnet18:112:32"]


def _model(name):
    import advinterp

    return advinterp.get_model(name, **({"weights": "random", "seed": 0} if name.startswith("torchvision:") else {}))


def per_layer(model, x0, xa, layers, batch_size):
    """The baseline: one forward per layer and pair batch, one hook each."""
    out = {}
    for layer in layers:
        s = None
        for i in range(0, len(x0), batch_size):
            a, b = x0[i:i + batch_size], xa[i:i + batch_size]
            with torch.no_grad():
                f = model.activations(torch.cat([a, b]), [layer])[layer]
            r = torch.mean((f[:len(a)] - f[len(a):]).pow(2), dim=(2, 3), dtype=torch.float64).sqrt().sum(0)
            s = r if s is None else s + r
        out[layer] = s / len(x0)
    return out


def run_case(spec, batch_size):
    from advinterp.analyzers.feature_rmse import feature_rmse_sums, rmse_layers

    name, px, n = spec.rsplit(":", 2)
    px, n = int(px), int(n)
    model = _model(name)
    g = torch.Generator().manual_seed(0)
    x0 = torch.rand(n, 3, px, px, generator=g)
    xa = (x0 + (torch.rand(n, 3, px, px, generator=g) - 0.5) * 16 / 255).clamp(0, 1)
    with model.preserved(freeze=True):
        if model.input_shape is None or tuple(model.input_shape[1:]) != (px, px):
            model.input_shape = (3, px, px)
        layers = rmse_layers(model, None, x0)
        with torch.no_grad():
            model.logits(x0[:2])  # warm-up
            for layer in layers:  # the baseline's stop plans (its first call per layer runs the whole net)
                model.activations(x0[:2], [layer])
        t = time.perf_counter()
        sums, count, _ = feature_rmse_sums(model, x0, xa, layers, batch_size)
        streamed = time.perf_counter() - t
        t = time.perf_counter()
        base = per_layer(model, x0, xa, layers, batch_size)
        looped = time.perf_counter() - t
    diff = max(float((sums[l] / count - base[l]).abs().max()) for l in layers)
    return {"case": f"{name} {px}px", "pairs": n, "layers": len(layers),
            "channels": int(sum(len(v) for v in sums.values())),
            "streamed pairs/s": f"{n / streamed:.1f}", "per-layer pairs/s": f"{n / looped:.1f}",
            "speedup": f"{looped / streamed:.2f}x", "max |d|": f"{diff:.2e}"}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cases", nargs="+", default=CASES, help="model:px:pairs")
    p.add_argument("--batch", type=int, default=32)
    args = p.parse_args(argv)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {args.batch} pairs")
    rows = [run_case(c, args.batch) for c in args.cases]
    print_table(rows, list(rows[0]))
    return rows


if __name__ == "__main__":
    main()
