"""advinterp-captum's ``cam`` / ``gradcam`` / ``gradcampp`` vs pytorch-grad-cam and torchcam.

Maps per second (median of a few timed runs after a warm-up) on

* the shipped ``synthetic-cnn`` (64x64 inputs, layer4 at 16x16), batch 64;
* torchvision ResNet-50 with random weights (224x224, layer4 at 7x7), batch 16 (64 images of
  ResNet-50 forward+backward are ~4x slower per call and would blow the 3-minute budget
  on two CPU cores).

Every method explains the true class of each image (one per-sample target per image) at
the CAM layer ``layer4``. What each call includes: ours — the map at layer resolution and
its bilinear upsampling to the input (``Attribution.maps``); pytorch-grad-cam — its
forward/backward in numpy, ReLU, min-max scaling and ``cv2.resize`` to the input;
torchcam — forward, backward (none for CAM) and the layer-resolution map (no upsampling,
``normalized=False``). Ratio = our maps/s divided by the library's for the same method.
Notes: torchcam 0.5's ``GradCAMpp`` divides a boolean-masked *copy* of its alphas, so its
maps are not the closed form (timing only); pytorch-grad-cam has no CAM.
"""
import argparse

import torch

import advinterp
from _util import best_of, print_table


def _cases(model, x, y):
    """``[(method, library, fn)]`` on one batch."""
    net = model.as_module()
    cases = []
    for name in ("cam", "gradcam", "gradcampp"):
        ex = advinterp.get_explainer(name, batch_size=len(x))
        cases.append((name, "advinterp-captum", lambda ex=ex: ex.explain(model, x, y)))
    try:
        import pytorch_grad_cam as pgc
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

        targets = [ClassifierOutputTarget(int(c)) for c in y]
        for name, cls in (("gradcam", pgc.GradCAM), ("gradcampp", pgc.GradCAMPlusPlus)):
            def run(cls=cls):
                with model.preserved(), cls(model=net, target_layers=[model.module.layer4]) as cam:
                    return cam(input_tensor=x, targets=targets)
            cases.append((name, "pytorch-grad-cam", run))
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
            cases.append((name, "torchcam", run))
    except ImportError:
        print("torchcam is not installed: skipped")
    return cases


def bench(label, model, x, y, repeat):
    rows, ours = [], {}
    for method, lib, fn in _cases(model, x, y):
        secs = best_of(fn, repeat=repeat, warmup=1)
        rate = len(x) / secs
        if lib == "advinterp-captum":
            ours[method] = rate
        rows.append({"model": label, "method": method, "library": lib, "batch": len(x),
                     "ms/batch": f"{1000 * secs:.0f}", "maps/s": f"{rate:.1f}",
                     "ours / lib": "-" if lib == "advinterp-captum" else f"{ours[method] / rate:.2f}x"})
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--resnet-batch", type=int, default=16)
    p.add_argument("--repeat", type=int, default=3)
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
            rows += bench("resnet50 224x224", rn, xr, yr, max(1, a.repeat - 2))
    print_table(rows, ["model", "method", "library", "batch", "ms/batch", "maps/s", "ours / lib"])


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
