"""The Ray engine (plugins/advinterp-ray) vs the local engine: one run of the same study.

The study: ``synthetic-cnn`` on ``--n`` synthetic scenes (64 px), untargeted PGD (10 steps),
PSE (8 px grids: 64 ablated forwards per image) and feature RMSE, ``--shard`` images per shard.
Each engine runs it once into a fresh folder (nothing reused), after a warm-up run of a tiny
copy of the study that starts Ray and the actors (their start-up, reported on its own, is paid
once per ``advinterp run``). Engines:

* ``local``: the core's in-process executor (torch on both cores);
* ``ray x1``: one actor with ``num_cpus=2`` (torch on both cores inside the actor);
* ``ray x2``: two actors with ``num_cpus=1`` each (one torch thread each).

``images/s`` is ``n`` over the study's wall time (the steps' seconds in run.json); ``ray/local``
their ratio (target: >= 0.85 on one 2-core machine). The per-shard overhead of Ray is measured
directly: ``--noop`` shards that share the model (as a step's shards do) and return a small
result, through the Ray executor (one actor) minus through the local one, per shard.

The projection table is a projection, not a measurement: the PSE Table 1 workload (5 000
ImageNet images at 224 px x 4 attacks x 2 models, 324 ablated forwards + 1 per image: ~13 M
ResNet-50 forwards) in shards of 64 images on N GPU nodes (one actor per GPU), from (a) the
ResNet-50 forward cost measured here on the CPU (a batch of 8 at 224 px, random weights),
divided by ``--gpu-speedup`` (an assumption: a data-centre GPU's ResNet-50 throughput over
this CPU's, stated in the output), and (b) the per-shard overhead measured here. It leaves
out the attacks that make the adversarial examples and the one-off transfer of the model to
each actor per step (~100 MB for ResNet-50).

``python benchmarks/ray_engine.py [--n 64] [--shard 8] [--noop 200] [--gpu-speedup 200]``
"""
import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _util import print_table  # noqa: E402

STUDY = """
title = "ray benchmark"
seed = 0
shard_size = {shard}

[models.m]
model = "synthetic-cnn"

[data.d]
dataset = "synthetic"
params = {{ n = {n}, split = "test", seed = 0 }}

[[steps]]
id = "pgd"
attack = "pgd"
params = {{ eps = 0.0313, eps_step = 0.0078, max_iter = 10, num_random_init = 0 }}

[[steps]]
id = "pse"
analyzer = "pse"
batch = "pgd"
params = {{ size = 8, max_batch = 256 }}

[[steps]]
id = "rmse"
analyzer = "feature_rmse"
batch = "pgd"
"""


def _noop(model, i):
    """A shard that does nothing but receive the (shared) model."""
    return {"i": i}


def run_study(text, folder, engine):
    from advinterp.study import Study

    t = time.perf_counter()
    Study.from_text(text, Path(folder) / "study.toml").run(Path(folder) / "out", engine=engine,
                                                            log=lambda _: None, report=False)
    wall = time.perf_counter() - t
    steps = json.loads((Path(folder) / "out" / "run.json").read_text())["steps"]
    return wall, sum(s["seconds"] for s in steps.values())


def noop_seconds(executor, model, n):
    from advinterp.api import ShardTask

    tasks = [ShardTask("noop", i, _noop, (model, i)) for i in range(n)]
    got = []
    t = time.perf_counter()
    executor.run(tasks, lambda task, r: got.append(r))
    assert len(got) == n
    return time.perf_counter() - t


def resnet50_seconds_per_image(batch=8):
    import torch

    import advinterp

    m = advinterp.get_model("torchvision:resnet50", weights="random", seed=0)
    x = torch.rand(batch, 3, 224, 224)
    with torch.no_grad():
        m.logits(x[:2])
        t = time.perf_counter()
        m.logits(x)
    return (time.perf_counter() - t) / batch


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--shard", type=int, default=8)
    ap.add_argument("--noop", type=int, default=200, help="no-op shards for the per-shard overhead")
    ap.add_argument("--gpu-speedup", type=float, default=200.0,
                    help="assumed ResNet-50 forward throughput of one GPU over this CPU (projection only)")
    args = ap.parse_args()

    import os

    os.environ.setdefault("ADVINTERP_PROGRESS", "0")
    import ray
    import torch

    import advinterp
    from advinterp.executor import LocalExecutor
    from advinterp_ray import RayExecutor

    text = STUDY.format(n=args.n, shard=args.shard)
    tiny = STUDY.format(n=2 * args.shard, shard=args.shard)
    print(f"study: synthetic-cnn, {args.n} scenes, pgd(10) + pse(8 px) + feature_rmse, {args.shard} images/shard "
          f"({-(-args.n // args.shard)} shards per sharded step); torch threads {torch.get_num_threads()}, "
          f"{os.cpu_count()} CPUs; load average before: {os.getloadavg()[0]:.1f}")
    t = time.perf_counter()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="WARNING")
    t_init = time.perf_counter() - t
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        run_study(tiny, tmp / "warm-local", "local")
        wall, steps = run_study(text, tmp / "local", "local")
        local_rate = args.n / steps
        rows.append({"engine": "local", "workers": 1, "threads": torch.get_num_threads(), "wall s": f"{wall:.2f}",
                     "steps s": f"{steps:.2f}", "images/s": f"{local_rate:.1f}", "ray/local": "1.00"})
        starts = {}
        for workers, cpus in ((1, 2), (2, 1)):
            ex = RayExecutor(num_workers=workers, num_cpus=cpus)
            t = time.perf_counter()
            run_study(tiny, tmp / f"warm-{workers}", ex)  # starts the actors
            starts[workers] = time.perf_counter() - t
            wall, steps = run_study(text, tmp / f"ray-{workers}", ex)
            rows.append({"engine": f"ray x{workers}", "workers": workers, "threads": cpus, "wall s": f"{wall:.2f}",
                         "steps s": f"{steps:.2f}", "images/s": f"{args.n / steps:.1f}",
                         "ray/local": f"{args.n / steps / local_rate:.2f}"})
            if workers == 1:
                model = advinterp.get_model("synthetic-cnn")
                ray_noop = noop_seconds(ex, model, args.noop)
                local_noop = noop_seconds(LocalExecutor(), model, args.noop)
            ex.close()
    print_table(rows, ["engine", "workers", "threads", "wall s", "steps s", "images/s", "ray/local"])
    print(f"load average after: {os.getloadavg()[0]:.1f} (other processes share these CPUs: the rows are "
          f"measured one after another, not side by side)")
    overhead_ms = (ray_noop - local_noop) / args.noop * 1e3
    print(f"\nray.init (local, 2 CPUs): {t_init:.1f}s; actor start-up + warm-up study: "
          f"{starts[1]:.1f}s (1 actor), {starts[2]:.1f}s (2 actors) -- once per run")
    print(f"per-shard overhead of Ray: {overhead_ms:.1f} ms ({args.noop} no-op shards sharing the model: "
          f"{ray_noop * 1e3 / args.noop:.1f} ms each on Ray, {local_noop * 1e3 / args.noop:.2f} ms locally)")
    ray.shutdown()

    # ---- projection (stated as such)
    per_image_cpu = resnet50_seconds_per_image()
    forwards_per_image = 325
    images = 5000 * 4 * 2
    shard = 64
    shards = -(-5000 // shard) * 4 * 2
    shard_cpu = shard * forwards_per_image * per_image_cpu
    shard_gpu = shard_cpu / args.gpu_speedup
    over = max(overhead_ms, 0.0) / 1e3 + 0.0
    print(f"\nPROJECTION (not measured): PSE Table 1 workload, {images // 8} images x 4 attacks x 2 models x "
          f"{forwards_per_image} forwards = {images * forwards_per_image / 1e6:.1f} M ResNet-50 forwards at 224 px, "
          f"{shards} shards of {shard} images.")
    print(f"  measured here: ResNet-50 forward {per_image_cpu * 1e3:.0f} ms/image on this CPU (batch 8) -> "
          f"{shard_cpu:.0f} s per shard on this CPU; ASSUMED GPU speed-up x{args.gpu_speedup:g} -> "
          f"{shard_gpu:.1f} s per shard on one GPU; Ray overhead {over * 1e3:.1f} ms per shard (measured).")
    prow = []
    for nodes in (1, 2, 4, 8, 16, 32):
        waves = -(-shards // nodes)
        t_gpu = waves * (shard_gpu + over)
        prow.append({"GPU nodes": nodes, "shards/node": waves, "hours": f"{t_gpu / 3600:.2f}",
                     "overhead %": f"{100 * over / (shard_gpu + over):.2f}",
                     "speed-up": f"{shards * (shard_gpu + over) / t_gpu:.1f}x"})
    print_table(prow, ["GPU nodes", "shards/node", "hours", "overhead %", "speed-up"])


if __name__ == "__main__":
    main()
