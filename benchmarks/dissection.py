"""Network dissection end to end: ``advinterp_dissect.dissect`` vs NetDissect-Lite's pipeline.

The baseline is :mod:`netdissect_lite` (this folder): a port of NetDissect-Lite's
``FeatureOperator`` with its own structure -- a ``multiprocessing`` prefetch pool of
``cpu_count()`` workers, the *full* model forward with hooks, every feature kept in a
float64 memmap, the per-unit percentile, and the per-image, per-unit ``tally_job`` loop with
PIL's ``imresize``. Both dissect the same layer of the same model over the same Broden
export of the embedded world (``--n`` scenes; the :data:`CASES`: the shipped ``synthetic-cnn``
at 64 px with labels at 64 and 32 px -- labels smaller than the maps exercise the antialiased
shrink -- and ResNet-18, NetDissect-Lite's default model, at 128 px with 64-px labels), at the
same quantile (0.005), with their defaults otherwise (dissect: batch 32, its own decoding
workers and activation cache; the baseline: batch 128). ``forward s`` times the full forward
of every image alone (decoded beforehand), which both must run once: the end-to-end speedup
cannot exceed ``baseline / forward``, and ``speedup without it`` compares the rest.
``to the layer s`` times the forward that stops after the layer (what dissect runs; for a
deep layer the whole network), the least any implementation must run, and ``cap`` =
``baseline / to the layer s`` is the highest end-to-end speedup possible on the machine.

Each run is a fresh subprocess (``--repeat`` times, the fastest kept), timed end to end
(both passes, PNG decoding included, nothing cached between runs) with its peak memory:
``peak MB`` = the process's peak resident set (``VmHWM``) minus its resident set before the
call. dissect's peak is measured at ``n/2`` and ``n`` images to show it flat in the number of
images (the baseline's grows: it memory-maps every feature). ``max |dIoU|`` compares the
IoUs of the two when the baseline is given dissect's thresholds (its exact percentile
differs from dissect's streaming one by less than one histogram bin): 0 means equal to the
last bit. With a CUDA device, dissect also runs on it (``GPU s``).

``python benchmarks/dissection.py [--n 400] [--cases synthetic-cnn:64:32:layer1 ...] [--repeat 2]``
"""
import argparse
import itertools
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DEFAULTS = {"n": 400, "repeat": 2}
#: (model, image px, label px, layer): the shipped model at its size with labels at full and half
#: size, and ResNet-18 (NetDissect-Lite's default model; random weights, nothing downloads) at
#: 128 px with half-size labels (broden1_224's ratio).
CASES = [("synthetic-cnn", 64, 64, "layer1"), ("synthetic-cnn", 64, 64, "layer4"),
         ("synthetic-cnn", 64, 32, "layer1"), ("synthetic-cnn", 64, 32, "layer4"),
         ("torchvision:resnet18", 128, 64, "layer1"), ("torchvision:resnet18", 128, 64, "layer4")]


def _model(name):
    import advinterp

    return advinterp.get_model(name, **({"weights": "random", "seed": 0} if name.startswith("torchvision:") else {}))


def _status_kb(key):
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def _worker(method, root, layer, out, repeat, device, thresholds, model_name):
    import numpy as np
    import torch

    from advinterp_dissect import dissect

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from netdissect_lite import netdissect_lite

    model = _model(model_name).to(device)
    model.activations(torch.rand(2, 3, 64, 64, device=device), [layer], truncate=False)  # warm-up
    if method in ("forward", "forward_layer"):
        # the forward of every image, decoded beforehand: the full one (what NetDissect-Lite runs) or
        # the one that stops after the layer (the least any implementation must run)
        from advinterp.datasets.broden import BrodenDataset

        ds = BrodenDataset(root)
        images = [torch.from_numpy(np.stack([ds.image(i) for i in range(b, min(len(ds), b + 32))]))
                  for b in range(0, len(ds), 32)]
        wall = float("inf")
        for _ in range(repeat):
            t = time.perf_counter()
            with torch.no_grad():
                for im in images:
                    x = im.to(device).permute(0, 3, 1, 2).float().div(255)
                    if method == "forward":
                        model.logits(x)
                    else:
                        model.activations(x, [layer])
            if device == "cuda":
                torch.cuda.synchronize()
            wall = min(wall, time.perf_counter() - t)
        print(json.dumps({"seconds": wall, "peak_mb": 0.0}))
        return
    base = _status_kb("VmRSS")
    wall = float("inf")
    thr = None if thresholds == "-" else {layer: np.load(thresholds)}
    for _ in range(repeat):  # the fastest of `repeat` runs (the machine may be shared)
        t = time.perf_counter()
        if method == "dissect":
            d = dissect(model, root, [layer], progress=False)
            iou, T = d[layer].iou_by_label(), d[layer].thresholds
        else:
            r = netdissect_lite(model, root, [layer], thresholds=thr)[layer]
            iou, T = r["iou"], r["thresholds"]
        if device == "cuda":
            torch.cuda.synchronize()
        wall = min(wall, time.perf_counter() - t)
    peak = _status_kb("VmHWM")
    np.save(out + ".iou.npy", iou)
    np.save(out + ".thr.npy", T)
    print(json.dumps({"seconds": wall, "peak_mb": max(0, peak - base) / 1024}))


def _run(method, model, root, layer, out, repeat=1, device="cpu", thresholds="-"):
    cmd = [sys.executable, __file__, "--worker", method, str(root), layer, str(out), str(repeat), device,
           str(thresholds), model]
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode:
        raise RuntimeError(f"{method} {layer} failed:\n{res.stderr[-3000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=DEFAULTS["n"], help="scenes in the export (>= 400 for the target)")
    p.add_argument("--cases", nargs="+", default=None, metavar="MODEL:SIZE:SEG:LAYER",
                   help="e.g. synthetic-cnn:64:32:layer1 (default: the CASES list)")
    p.add_argument("--repeat", type=int, default=DEFAULTS["repeat"], help="runs per case; the fastest is kept")
    a = p.parse_args([] if argv is None else argv)
    try:
        import advinterp_dissect  # noqa: F401
    except ImportError:
        print("advinterp-dissect is not installed: skipped")
        return
    import os

    import numpy as np
    import torch

    from advinterp.datasets.broden import export_broden
    from advinterp.datasets.synthetic import SyntheticWorld
    from _util import print_table

    cases = CASES if a.cases is None else [(c.rsplit(":", 3)[0], *map(int, c.rsplit(":", 3)[1:3]), c.rsplit(":", 3)[3])
                                           for c in a.cases]
    gpu = torch.cuda.is_available()
    print(f"Broden exports of the embedded world, {a.n} scenes; quantile 0.005; {os.cpu_count()} CPUs, torch "
          f"threads={torch.get_num_threads()}{', GPU: ' + torch.cuda.get_device_name() if gpu else ', no GPU'}")
    print("forward s: the full forward of every image (decoded beforehand) that both implementations run once; "
          "'without it' compares what each adds to it")
    print("to the layer s: the forward that stops after the layer, the least any implementation must run; "
          "cap = NetDissect-Lite s / it, the highest end-to-end speedup possible on this machine")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        roots, halves = {}, {}
        for model, size, seg, layer in cases:
            if (size, seg) not in roots:
                roots[size, seg] = export_broden(tmp / f"b{size}_{seg}", SyntheticWorld(size=size), n=a.n, seg_size=seg)
                halves[size, seg] = export_broden(tmp / f"h{size}_{seg}", SyntheticWorld(size=size), n=a.n // 2,
                                                  seg_size=seg)
            root = roots[size, seg]
            ours = _run("dissect", model, root, layer, str(tmp / "d"), a.repeat)
            ours_half = _run("dissect", model, halves[size, seg], layer, str(tmp / "dh"), 1)
            ref = _run("netdissect", model, root, layer, str(tmp / "r"), a.repeat)
            _run("netdissect", model, root, layer, str(tmp / "rt"), 1, thresholds=str(tmp / "d.thr.npy"))
            fwd = _run("forward", model, root, layer, str(tmp / "f"), a.repeat)["seconds"]
            fwd_layer = _run("forward_layer", model, root, layer, str(tmp / "f"), a.repeat)["seconds"]
            diff = float(np.abs(np.load(tmp / "d.iou.npy") - np.load(tmp / "rt.iou.npy")).max())
            o, r = ours["seconds"], ref["seconds"]
            row = {"model": model.replace("torchvision:", ""), "px": f"{size}/{seg}", "layer": layer,
                   "dissect s": f"{o:.2f}", "NetDissect-Lite s": f"{r:.2f}", "speedup": f"{r / o:.2f}x",
                   "forward s": f"{fwd:.2f}", "to the layer s": f"{fwd_layer:.2f}",
                   "cap": f"{r / fwd_layer:.1f}x",
                   "speedup without it": f"{(r - fwd) / max(o - fwd, 1e-3):.1f}x" if o > fwd else "-",
                   "dissect img/s": f"{a.n / o:.0f}",
                   "dissect peak MB (n/2, n)": f"{ours_half['peak_mb']:.0f}, {ours['peak_mb']:.0f}",
                   "NetDissect-Lite peak MB": f"{ref['peak_mb']:.0f}", "max |dIoU|": f"{diff:.1e}"}
            if gpu:
                g = _run("dissect", model, root, layer, str(tmp / "g"), a.repeat, device="cuda")
                row["GPU s"] = f"{g['seconds']:.2f}"
            rows.append(row)
            print(f"  {model} {size}/{seg}px {layer}: dissect {o:.2f}s, NetDissect-Lite {r:.2f}s, forward {fwd:.2f}s "
                  f"(to the layer {fwd_layer:.2f}s)",
                  flush=True)
    print()
    print_table(rows, list(rows[0]))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        _worker(sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5], int(sys.argv[6]), sys.argv[7], sys.argv[8],
                sys.argv[9])
    else:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        main(sys.argv[1:])
