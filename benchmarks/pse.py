"""The ``pse`` analyzer against the forward-pass limit, Captum's ``Occlusion`` and a naive loop.

One run, the same images and the same grids for every method (N images, m grids):

1. limit: a pure forward (``ModelAdapter.logits``, normalisation included) of the very
   ``N * (m + 1)`` images that PSE forwards (``x'`` and every ``x' - delta_Gi``, in PSE's order:
   CPU convolutions run a few per cent faster on a batch of near-identical images), built
   beforehand, at the best of a few batch sizes;
2. ``pse`` with the backend the plugins choose (the compiled ``advinterp-gridablate`` op;
   skipped when it is not built, then the hook answers with the reference);
3. ``pse`` with the pure-PyTorch reference backend (``backend="reference"``);
4. Captum ``Occlusion`` with baseline ``x0`` (so an occluded window is ``x' - delta_G``),
   ``sliding_window_shapes=(C, size, size)``, ``strides=(C, stride, stride)``, called once for
   ``t0`` and once for ``t`` (it reads one target per call), ``perturbations_per_eval`` =
   batch size // N;
5. a naive loop: one forward per ablated image (batch of one), both classes read from it;
6. ``pse`` on the exact incremental path (``incremental=True``, :mod:`advinterp.incremental`:
   ``x'`` runs once, each ablated image recomputes only the region its window reaches;
   feature maps channels-last, the compiled crop/paste where built), with the share of the
   full forwards' multiply-adds it ran and its largest logit difference to row (2);
7. (reference for row 6) the limit of row 1 run on channels-last batches: the incremental
   path keeps its maps channels-last, which alone makes CPU convolutions 25-30 % faster, so
   ``limit(CL) / time`` says what the incremental computation itself wins.

Every row is printed as its time ratio to the limit (``limit / time``: 1.0 = as fast as the
forward passes alone) and to Captum (``captum / time``). The targets: (2) >= 0.95x the limit
and >= 1.9x faster than (4) (issue 7); (6) >= 2x the limit on ResNet-50 and >= 1.5x on
ResNet-18 (13x13 windows, stride 13, 224x224, issue 18). Rows (1)-(4) are timed in interleaved rounds and each
keeps its fastest round (other jobs on a shared machine only ever add time); the naive loop
runs once. Wall-clock and process-CPU-time ratios are both printed: on a busy machine the
CPU time is the steadier one.

Models (``--models``): the shipped ``synthetic-cnn`` (64x64, grids 4x4, which tile it as Captum's do,
m = 256) and torchvision ResNet-50, ResNet-18 and VGG-11 with random weights at 224x224 (13x13
grids, stride 13, m = 324; one image by default, so the run stays a few minutes per model on
two CPU cores). On synthetic-cnn the
windows coincide with Captum's, and the run checks that Captum's attribution equals PSE's
unfloored logit change ``Z(x')[t] - Z(x' - delta_G)[t]``. Options: ``--n 8 --n-resnet 1
--repeat 3 --repeat-resnet 1 --threads 0 (torch's default) --no-resnet``.
"""
import argparse
import time

import torch

import advinterp
from advinterp.registry import get_ablation_backend
from advinterp.analyzers.pse import PSEAnalyzer, pse_grids
from _util import print_table

DEFAULTS = {"n": 8, "n_resnet": 1, "repeat": 3, "repeat_resnet": 1, "seed": 0, "threads": 0}
MODELS = ("synthetic-cnn", "torchvision:resnet50", "torchvision:resnet18", "torchvision:vgg11")
BATCH_SIZES = {"synthetic-cnn": (1, 4, 16, 32, 64, 128, 256)}
TV_BATCH_SIZES = (1, 2, 4, 8, 16)
TV_GRID = 13  # the 13x13 windows, stride 13, on 224x224


def _timed(fn):
    """``(wall seconds, CPU seconds of this process)`` of one call."""
    t, c = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - t, time.process_time() - c


def _fastest(fns, rounds):
    """``{name: (fastest wall time, fastest CPU time)}`` over ``rounds`` interleaved rounds."""
    best = {k: (float("inf"), float("inf")) for k in fns}
    for _ in range(rounds):
        for k, fn in fns.items():
            w, c = _timed(fn)
            best[k] = (min(best[k][0], w), min(best[k][1], c))
    return best


def _images(n, size, seed):
    """Synthetic test scenes, a random +-8/255 perturbation (timing does not need a real
    attack) and random targets among the 12 synthetic classes."""
    x, y = advinterp.get_dataset("synthetic", n=max(n, 2), split="test", size=size).tensors()
    x, y = x[:n], y[:n]
    g = torch.Generator().manual_seed(seed)
    x_adv = (x + (torch.rand(x.shape, generator=g) * 2 - 1) * 8 / 255).clamp(0, 1)
    return x, x_adv, y, advinterp.random_targets(y, 12, g)


def _all_images(x0, x_adv, boxes):
    """The ``N * (m + 1)`` images PSE forwards, in its order (``x'`` of every image, then image
    by image its ablated copies, grid after grid), built beforehand."""
    imgs = [x_adv]
    for i in range(len(x0)):
        a = x_adv[i:i + 1].repeat(len(boxes), 1, 1, 1)
        for j, (y0, x0_, y1, x1) in enumerate(boxes.tolist()):
            a[j, :, y0:y1, x0_:x1] = x0[i, :, y0:y1, x0_:x1]
        imgs.append(a)
    return torch.cat(imgs)


def _limit(model, imgs, sizes, tries, channels_last=False):
    """The batch size with the fastest forward per image (the first ``max(sizes)`` images,
    best of ``tries``, after a warm-up), and the limit: a forward of ``imgs`` at that size,
    nothing built or copied (``channels_last``: the batches in channels-last memory order)."""
    per_image = {}
    if channels_last:
        imgs = imgs.contiguous(memory_format=torch.channels_last)
    sample = imgs[:max(sizes)]
    with torch.no_grad():
        for bs in sizes:
            model.logits(sample[:bs])
            runs = []
            for _ in range(tries):
                t = time.perf_counter()
                for i in range(0, len(sample), bs):
                    model.logits(sample[i:i + bs])
                runs.append((time.perf_counter() - t) / len(sample))
            per_image[bs] = min(runs)
    best = min(per_image, key=per_image.get)

    def run():
        with torch.no_grad():
            for i in range(0, len(imgs), best):
                model.logits(imgs[i:i + best])
    return best, run


def _captum(model, x0, x_adv, t0, t, size, stride, ppe):
    from captum.attr import Occlusion

    occ = Occlusion(model.logits)
    c = x0.shape[1]

    def run():
        with model.preserved(freeze=True):
            a0 = occ.attribute(x_adv, sliding_window_shapes=(c, size, size), strides=(c, stride, stride),
                               baselines=x0, target=t0, perturbations_per_eval=ppe)
            at = occ.attribute(x_adv, sliding_window_shapes=(c, size, size), strides=(c, stride, stride),
                               baselines=x0, target=t, perturbations_per_eval=ppe)
        return a0, at
    return run


def _naive(model, x0, x_adv, t0, t, boxes):
    def run():
        out = torch.empty(len(x0), len(boxes), 2)
        with torch.no_grad(), model.preserved():
            for i in range(len(x0)):
                cls = torch.stack([t0[i], t[i]])
                model.logits(x_adv[i:i + 1])[0, cls]
                for j, (y0, x0_, y1, x1) in enumerate(boxes.tolist()):
                    a = x_adv[i:i + 1].clone()
                    a[:, :, y0:y1, x0_:x1] = x0[i:i + 1, :, y0:y1, x0_:x1]
                    out[i, j] = model.logits(a)[0, cls]
        return out
    return run


def bench(model_name, n, repeat, seed):
    if model_name == "synthetic-cnn":
        model, size_px, grid = advinterp.get_model("synthetic-cnn"), 64, 4  # 4 divides 64: windows = Captum's
    else:
        model, size_px, grid = advinterp.get_model(model_name, weights="random"), 224, TV_GRID
    x0, x_adv, t0, t = _images(n, size_px, seed)
    boxes = pse_grids(size_px, size_px, grid)
    size = int(boxes[0, 2] - boxes[0, 0])
    m = len(boxes)
    total = n * (m + 1)
    print(f"\n{model_name}: N={n} images {size_px}x{size_px}, grids {size}x{size} stride {size}, m={m}, "
          f"{total} forwards, torch threads={torch.get_num_threads()}", flush=True)
    rounds = repeat
    sizes = BATCH_SIZES.get(model_name, TV_BATCH_SIZES)
    imgs = _all_images(x0, x_adv, boxes)
    bs, limit_run = _limit(model, imgs, sizes, 2 if rounds > 1 else 1)
    _, limit_cl_run = _limit(model, imgs, sizes, 2 if rounds > 1 else 1, channels_last=True)
    del imgs
    backend = get_ablation_backend(model.device)
    batch = advinterp.AdversarialBatch(x0=x0, x_adv=x_adv, y_true=t0, y_target=t)
    results, captum_out = {}, {}

    def analyzer_run(kind, incremental=False, key=None):
        an = PSEAnalyzer(size=grid, max_batch=256 if incremental else bs, backend=kind,  # 256: pse's default
                         incremental=incremental)
        return lambda: results.__setitem__(key or kind, an.analyze(model, batch))

    fns = {"(1) limit: pure forward": limit_run}
    if backend.name == "reference":
        print("(2) skipped: the advinterp-gridablate plugin is not built (the hook answers with the reference)")
    else:
        fns[f"(2) pse, {backend.name} backend"] = analyzer_run("auto")
    fns["(3) pse, reference backend"] = analyzer_run("reference")
    try:
        cap = _captum(model, x0, x_adv, t0, t, size, size, max(1, bs // n))
        fns["(4) captum Occlusion (t0 and t)"] = lambda: captum_out.__setitem__("a", cap())
    except ImportError:
        print("(4) skipped: captum is not installed")
    fns["(6) pse, incremental (exact)"] = analyzer_run("auto", True, "incremental")
    fns["(7) limit on channels-last batches"] = limit_cl_run
    times = _fastest(fns, rounds)
    times["(5) naive per-grid loop"] = _timed(_naive(model, x0, x_adv, t0, t, boxes))

    lim = times["(1) limit: pure forward"]
    lim_cl = times["(7) limit on channels-last batches"]
    inc = results["incremental"]
    full = results["auto" if "auto" in results else "reference"]
    dev = max(abs(inc.logit_t0 - full.logit_t0).max(), abs(inc.logit_t - full.logit_t).max())
    print(f"(6) ran {inc.inference}: {inc.inference_note}; max |logit difference to the full path| = {dev:.2e} "
          f"(largest |logit| {abs(full.logit_t0).max():.3g}); limit(CL) / time = "
          f"{lim_cl[0] / times['(6) pse, incremental (exact)'][0]:.2f}x")
    cap = times.get("(4) captum Occlusion (t0 and t)")
    rows = [{"method": k, "seconds": f"{w:.2f}", "images/s": f"{total / w:.0f}", "limit / time": f"{lim[0] / w:.2f}x",
             "captum / time": f"{cap[0] / w:.2f}x" if cap else "-", "cpu s": f"{c:.2f}",
             "cpu: limit / time": f"{lim[1] / c:.2f}x", "cpu: captum / time": f"{cap[1] / c:.2f}x" if cap else "-"}
            for k, (w, c) in times.items()]
    print(f"best batch size {bs} (of {sizes}); fastest of {rounds} interleaved round(s) "
          "per row (naive loop: one run)")
    print_table(rows, ["method", "seconds", "images/s", "limit / time", "captum / time", "cpu s",
                       "cpu: limit / time", "cpu: captum / time"])
    if captum_out and model_name == "synthetic-cnn":  # windows coincide: Captum's map is PSE's change
        res = results["reference"]
        a_t = captum_out["a"][1].sum(1)  # channels: every channel of a window holds the same value
        ours = torch.as_tensor(res.adv_logit_t[:, None] - res.logit_t, dtype=torch.float32)
        pix = torch.zeros_like(a_t)
        for j, (y0, x0_, y1, x1) in enumerate(boxes.tolist()):
            pix[:, y0:y1, x0_:x1] = ours[:, j, None, None] * x0.shape[1]
        print(f"check: max |Captum(t) - PSE change| over pixels = {float((a_t - pix).abs().max()):.2e}")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for k, v in DEFAULTS.items():
        p.add_argument("--" + k.replace("_", "-"), type=type(v), default=v)
    p.add_argument("--no-resnet", action="store_true", help="only the shipped model")
    p.add_argument("--models", nargs="+", default=list(MODELS), help=f"of {', '.join(MODELS)}")
    a = p.parse_args([] if argv is None else argv)
    if a.threads > 0:  # e.g. --threads 1 on a busy machine (fewer OpenMP spin-waits)
        torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    for name in a.models:
        if name == "synthetic-cnn":
            bench(name, a.n, a.repeat, a.seed)
        elif not a.no_resnet:
            bench(name, a.n_resnet, a.repeat_resnet, a.seed)


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
