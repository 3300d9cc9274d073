"""advinterp-captum's ``cam`` / ``gradcam`` / ``gradcampp`` against one forward pass, torchcam and pytorch-grad-cam.

Wall time per batch (median over ``--repeat`` interleaved rounds after one warm-up round:
every case runs once per round, in turn, so a noisy neighbour slows all of them alike) on

* the shipped ``synthetic-cnn`` (64x64 inputs, layer4 at 16x16), batch 64;
* torchvision ResNet-50 with random weights (224x224, layer4 at 7x7), batch 16.

The yardstick, timed in the same rounds: ONE forward of the same batch, ``model.logits(x)``
under ``torch.no_grad()`` with ``x`` channels-first (the user's plain call). Every row shows
its time as a multiple of that forward (``x fwd``; the target is <= 1.1 for every method);
``explain_pair`` (the four maps of N pairs: ``2N`` images, two target vectors) is shown
against two forwards (``x 2 fwd``). Our rows also show the speed-up over torchcam and
pytorch-grad-cam for the same method (``vs torchcam``, ``vs pgc``: their time / ours; the
target is >= 1.0). Library rows show ours / theirs the same way.

Every method explains the true class of each image at the CAM layer ``layer4``. What each
call includes: ours — the map at layer resolution and its bilinear upsampling to the input
(``Attribution.maps``); pytorch-grad-cam — its forward/backward in numpy, ReLU, min-max
scaling and ``cv2.resize`` to the input; torchcam — forward, backward (none for CAM) and the
layer-resolution map (no upsampling, ``normalized=False``). Both libraries run the model as
the user hands it over (parameters requiring grad), as they are documented to.
Notes: torchcam 0.5's ``GradCAMpp`` divides a boolean-masked *copy* of its alphas, so its
maps are not the closed form (timing only); pytorch-grad-cam has no CAM.
"""
import argparse
import statistics
import time

import torch

import advinterp
from _util import print_table

METHODS = ("cam", "gradcam", "gradcampp")


def _cases(model, x, y, t):
    """``[(key, method, library, fn)]`` on one batch; ``t`` the second target vector of the pair."""
    net = model.as_module()
    cases = [("forward", "forward", "model.logits", lambda: _forward(model, x))]
    for name in METHODS:
        ex = advinterp.get_explainer(name, batch_size=len(x))
        cases.append((f"ours:{name}", name, "advinterp-captum", lambda ex=ex: ex.explain(model, x, y)))
    x_adv = (x + 0.03 * torch.rand(x.shape, generator=torch.Generator().manual_seed(1))).clamp(0, 1)
    batch = advinterp.AdversarialBatch.from_pair(x, x_adv, y, y_target=t)
    for name in METHODS:
        ex = advinterp.get_explainer(name, batch_size=2 * len(x))
        cases.append((f"pair:{name}", f"{name} pair", "advinterp-captum", lambda ex=ex: ex.explain_pair(model, batch)))
    try:
        import pytorch_grad_cam as pgc
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

        targets = [ClassifierOutputTarget(int(c)) for c in y]
        for name, cls in (("gradcam", pgc.GradCAM), ("gradcampp", pgc.GradCAMPlusPlus)):
            def run(cls=cls):
                with model.preserved(), cls(model=net, target_layers=[model.module.layer4]) as cam:
                    return cam(input_tensor=x, targets=targets)
            cases.append((f"pgc:{name}", name, "pytorch-grad-cam", run))
    except ImportError:
        print("pytorch-grad-cam is not installed: skipped")
    try:
        import torchcam.methods as tc

        shape = tuple(x.shape[1:])
        for name, cls, kw in (("cam", tc.CAM, {"fc_layer": "net.fc"}), ("gradcam", tc.GradCAM, {}),
                              ("gradcampp", tc.GradCAMpp, {})):
            def run(cls=cls, kw=kw, name=name):
                with model.preserved(), cls(net, target_layer="net.layer4", input_shape=shape, **kw) as ext:
                    with torch.set_grad_enabled(name != "cam"):
                        scores = net(x)
                    return ext(class_idx=y.tolist(), scores=scores, normalized=False)
            cases.append((f"torchcam:{name}", name, "torchcam", run))
    except ImportError:
        print("torchcam is not installed: skipped")
    return cases


def _forward(model, x):
    with torch.no_grad():
        return model.logits(x)


def interleaved(cases, repeat, warmup=1):
    """``{key: median seconds}``: ``warmup + repeat`` rounds, each running every case once in turn."""
    times = {key: [] for key, *_ in cases}
    for r in range(warmup + repeat):
        for key, _, _, fn in cases:
            t0 = time.perf_counter()
            fn()
            if r >= warmup:
                times[key].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def bench(label, model, x, y, repeat):
    g = torch.Generator().manual_seed(0)
    t = (y + torch.randint(1, model.nb_classes, y.shape, generator=g)) % model.nb_classes
    cases = _cases(model, x, y, t)
    med = interleaved(cases, repeat)
    fwd = med["forward"]
    rows = []
    for key, method, lib, _ in cases:
        secs = med[key]
        row = {"model": label, "method": method, "library": lib, "batch": len(x) * (2 if key.startswith("pair") else 1),
               "ms/batch": f"{1000 * secs:.0f}", "x fwd": f"{secs / fwd:.2f}", "x 2 fwd": "-",
               "vs torchcam": "-", "vs pgc": "-"}
        if key.startswith("pair:"):
            row["x 2 fwd"] = f"{secs / (2 * fwd):.2f}"
        elif key.startswith("ours:"):
            for col, other in (("vs torchcam", "torchcam"), ("vs pgc", "pgc")):
                if f"{other}:{method}" in med:
                    row[col] = f"{med[f'{other}:{method}'] / secs:.2f}x"
        elif key.split(":")[0] in ("torchcam", "pgc"):
            col = "vs torchcam" if key.startswith("torchcam") else "vs pgc"
            row[col] = f"{secs / med[f'ours:{method}']:.2f}x"
        rows.append(row)
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--resnet-batch", type=int, default=16)
    p.add_argument("--repeat", type=int, default=5, help="timed rounds on the shipped model (median)")
    p.add_argument("--resnet-repeat", type=int, default=3, help="timed rounds on ResNet-50 (median; >= 3)")
    p.add_argument("--no-resnet", action="store_true")
    a = p.parse_args([] if argv is None else argv)
    try:
        import advinterp_captum  # noqa: F401
    except ImportError:
        print("advinterp-captum is not installed: skipped")
        return
    torch.manual_seed(0)
    print(f"torch threads={torch.get_num_threads()}")
    model = advinterp.get_model("synthetic-cnn")
    x, y = advinterp.get_dataset("synthetic", n=a.batch, split="test").tensors()
    rows = bench("synthetic-cnn 64x64", model, x[:a.batch], y[:a.batch], a.repeat)
    if not a.no_resnet:
        try:
            rn = advinterp.get_model("torchvision:resnet50", weights="random")
        except Exception as e:  # torchvision missing
            print(f"ResNet-50 skipped: {e}")
        else:
            g = torch.Generator().manual_seed(0)
            xr = torch.rand(a.resnet_batch, 3, 224, 224, generator=g)
            yr = torch.randint(0, rn.nb_classes, (a.resnet_batch,), generator=g)
            rows += bench("resnet50 224x224", rn, xr, yr, max(3, a.resnet_repeat))
    print_table(rows, ["model", "method", "library", "batch", "ms/batch", "x fwd", "x 2 fwd", "vs torchcam", "vs pgc"])


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
