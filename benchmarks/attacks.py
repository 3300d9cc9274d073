"""Native ``cw_l2`` / ``ead`` vs ART's ``CarliniL2Method`` / ``ElasticNet`` (ART issue 1060).

Targeted attacks (random targets, fixed seed) on the shipped ``synthetic-cnn`` with N test
images, equal ``confidence``, ``learning_rate``, ``max_iter``, ``binary_search_steps``,
``initial_const`` and ``batch_size`` on both sides (ART's line-search parameters
``max_halving`` / ``max_doubling`` at ART's defaults). ART runs with the model's parameters
frozen (``requires_grad=False``, as our attacks do), which spares it the weight gradients.

Printed per method: images/second (one timed run each: ART is too slow to repeat), the
ratio to ART's throughput (wall clock, and process CPU time, which is steadier on a shared
machine), the targeted success rate (prediction == target) and the mean l2 / l1 of the
successful perturbations, plus the mean l2 over the images both methods broke (the fair l2
comparison when the success rates differ).

Budget: ART costs two class gradients per iteration, each one backward pass per distinct
label in the batch (12 classes), plus up to 10 line-search forwards (C&W), so the defaults
(C&W 20 iterations x 2 binary-search steps, EAD 10 x 2, c0 = 1) keep the run to a few
minutes on two CPU cores. ``confidence`` defaults to 0 here: ART's ElasticNet keeps the best
iterate on the plain prediction (ignoring kappa) whereas ours (like the reference code)
requires the kappa margin, so kappa = 0 is the setting where both report the same success.
Override anything, e.g. ``python benchmarks/attacks.py --confidence 1 --cw-iter 10 --cw-bss 5
--ead-iter 20 --ead-bss 3``.
"""
import argparse
import time

import torch

import advinterp
from advinterp.data import random_targets
from _util import print_table

DEFAULTS = {"n": 32, "seed": 0, "confidence": 0.0,
            "cw_iter": 20, "cw_bss": 2, "cw_lr": 0.01, "cw_const": 1.0,
            "ead_iter": 10, "ead_bss": 2, "ead_lr": 0.01, "ead_const": 1.0, "ead_beta": 0.001}


def _stats(x, x_adv, t, model):
    ok = model.predict(x_adv) == t
    d = (x_adv - x).flatten(1)
    l2, l1 = d.norm(dim=1), d.abs().sum(1)
    return ok, l2, l1


def _timed(fn):
    """``(result, wall seconds, CPU seconds of this process)``."""
    t, c = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - t, time.process_time() - c


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for k, v in DEFAULTS.items():
        p.add_argument("--" + k.replace("_", "-"), type=type(v), default=v)
    a = p.parse_args([] if argv is None else argv)
    try:
        from art.attacks.evasion import CarliniL2Method, ElasticNet
    except ImportError:
        print("adversarial-robustness-toolbox is not installed: skipped")
        return

    torch.manual_seed(a.seed)
    model = advinterp.get_model("synthetic-cnn")
    x, y = advinterp.get_dataset("synthetic", n=max(a.n, 64), split="test").tensors()
    x, y = x[:a.n], y[:a.n]
    t = random_targets(y, model.nb_classes, torch.Generator().manual_seed(a.seed))
    art_clf = model.to_art()

    common = {"confidence": a.confidence, "targeted": True, "batch_size": 128}
    cw_kw = {**common, "learning_rate": a.cw_lr, "max_iter": a.cw_iter, "binary_search_steps": a.cw_bss,
             "initial_const": a.cw_const}
    ead_kw = {**common, "learning_rate": a.ead_lr, "max_iter": a.ead_iter, "binary_search_steps": a.ead_bss,
              "initial_const": a.ead_const, "beta": a.ead_beta, "decision_rule": "EN"}
    cases = [("cw_l2", "ART CarliniL2Method", CarliniL2Method, cw_kw),
             ("ead", "ART ElasticNet", ElasticNet, ead_kw)]
    print(f"N={a.n} images, targeted (random targets, seed {a.seed}), confidence={a.confidence}, "
          f"torch threads={torch.get_num_threads()}")
    print(f"cw_l2 / CarliniL2Method: {cw_kw}")
    print(f"ead / ElasticNet: {ead_kw}\n")

    rows = []
    for ours_name, art_name, art_cls, kw in cases:
        attack = advinterp.get_attack(ours_name, **kw)
        attack.generate(model, x[:2], y[:2], t[:2])  # warm-up (allocator, mkldnn primitives)
        batch, t_ours, c_ours = _timed(lambda: attack.generate(model, x, y, t))
        art_attack = art_cls(art_clf, verbose=False, **kw)
        with model.preserved(freeze=True):  # no weight gradients: the fairest setting for ART
            x_art, t_art, c_art = _timed(lambda: torch.from_numpy(art_attack.generate(x.numpy(), y=t.numpy())))
        ok_o, l2_o, l1_o = _stats(x, batch.x_adv, t, model)
        ok_a, l2_a, l1_a = _stats(x, x_art, t, model)
        both = ok_o & ok_a
        for name, secs, cpu, ok, l2, l1 in ((ours_name, t_ours, c_ours, ok_o, l2_o, l1_o),
                                            (art_name, t_art, c_art, ok_a, l2_a, l1_a)):
            rows.append({
                "method": name, "seconds": f"{secs:.1f}", "images/s": f"{a.n / secs:.2f}",
                "ratio to ART": f"{t_art / secs:.1f}x", "cpu ratio": f"{c_art / cpu:.1f}x",
                "ASR": f"{ok.float().mean():.2f}",
                "mean l2": f"{l2[ok].mean():.3f}" if ok.any() else "-",
                "mean l1": f"{l1[ok].mean():.1f}" if ok.any() else "-",
                "l2 (both ok)": f"{l2[both].mean():.3f} (n={int(both.sum())})" if both.any() else "-",
            })
    print_table(rows, ["method", "seconds", "images/s", "ratio to ART", "cpu ratio", "ASR", "mean l2", "mean l1",
                       "l2 (both ok)"])


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
