"""SJE fit (advinterp-attributes, Gulshad et al. eqs. 3-6): vectorised mini-batch SGD vs a per-sample Python loop.

``per-sample loop``: the straightforward port of the public numpy SJE implementations -- for each
epoch a random order, for each sample ``scores = theta W Phi^T``, ``y* = argmax(Delta + scores)``,
``W += lr * outer(theta, phi(y_n) - phi(y*))`` when ``y* != y_n`` (:func:`per_sample_sgd`).
``SJE bs=1``: :class:`advinterp_attributes.SJE` with ``batch_size=1`` (the same algorithm, same
sample orders and ``W0``: the weights agree to rounding). ``SJE bs=B``: the estimator's mini-batch
SGD (``batch_size`` B, the estimator's default 64 and 256: the summed eq.-6 updates of B samples per step). All see the
same data (pooled ``layer4`` features of the shipped ``synthetic-cnn`` for embedded-world train /
test scenes; class-attribute matrix ``SyntheticWorld.class_attributes``), learning rate, epochs and
seed; each fit is timed once (one run, after an untimed one-epoch warm-up of each), in wall time and in the process's CPU time (on a shared,
busy machine the latter leaves out the time spent waiting for a CPU). The estimator's time includes its per-epoch training loss
(``loss_curve_``), which the loop does not compute.

``python benchmarks/sje.py [--train 1000] [--test 400] [--epochs 50] [--lr 0.01] [--batch 64 256]``
"""
import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _util import print_table  # noqa: E402


def per_sample_sgd(X, y, phi, lr, epochs, seed, init_scale=1.0):
    """The reference: the paper's SGD, one Python iteration per sample (labels = rows of phi)."""
    rng = np.random.RandomState(seed)
    d = X.shape[1]
    W = rng.standard_normal((d, phi.shape[1])) * (init_scale / np.sqrt(d))
    for _ in range(epochs):
        for n in rng.permutation(len(X)):
            scores = X[n] @ W @ phi.T
            delta = np.ones(len(phi))
            delta[y[n]] = 0.0
            y_star = int(np.argmax(delta + scores))
            if y_star != y[n]:
                W = W + lr * np.outer(X[n], phi[y[n]] - phi[y_star])
    return W


def nearest(Z, phi):
    return ((phi * phi).sum(1)[None, :] - 2 * Z @ phi.T).argmin(1)


def data(n_train, n_test):
    import advinterp
    from advinterp.datasets.synthetic import SyntheticWorld
    from advinterp_attributes import features

    model = advinterp.get_model("synthetic-cnn")
    world = SyntheticWorld(size=64, seed=0)
    xtr, ytr = world.generate(n_train, "train").tensors()
    xte, yte = world.generate(n_test, "test").tensors()
    X = features(model, xtr).astype(np.float64)
    Xt = features(model, xte).astype(np.float64)
    return X, ytr.numpy(), Xt, yte.numpy(), world.class_attributes.astype(np.float64)


def main(argv=None):
    from advinterp_attributes import SJE

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--train", type=int, default=1000)
    p.add_argument("--test", type=int, default=400)
    p.add_argument("--epochs", type=int, default=50)
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--batch", type=int, nargs="+", default=[64, 256], help="mini-batch sizes (besides 1)")
    args = p.parse_args(argv)
    t = time.perf_counter()
    X, y, Xt, yt, phi = data(args.train, args.test)
    print(f"numpy {np.__version__}; features: synthetic-cnn layer4, {X.shape[0]} train / {Xt.shape[0]} test x "
          f"{X.shape[1]}; {phi.shape[0]} classes x {phi.shape[1]} attributes; {args.epochs} epochs, lr {args.lr} "
          f"(data {time.perf_counter() - t:.1f}s)")
    rows = []
    per_sample_sgd(X, y, phi, args.lr, 1, 0)  # warm-ups: one epoch each, untimed
    for bs in (1, *args.batch):
        SJE(phi, learning_rate=args.lr, n_epochs=1, batch_size=bs).fit(X, y)
    t, c = time.perf_counter(), time.process_time()
    W = per_sample_sgd(X, y, phi, args.lr, args.epochs, 0)
    base, base_cpu = time.perf_counter() - t, time.process_time() - c
    rows.append({"fit": "per-sample loop", "wall s": f"{base:.3f}", "speedup": "1.00x", "cpu s": f"{base_cpu:.3f}",
                 "cpu speedup": "1.00x", "test acc": f"{np.mean(nearest(Xt @ W, phi) == yt):.4f}",
                 "max |W - W_loop|": "0"})
    for bs in (1, *args.batch):
        est = SJE(phi, learning_rate=args.lr, n_epochs=args.epochs, batch_size=bs, random_state=0)
        t, c = time.perf_counter(), time.process_time()
        est.fit(X, y)
        sec, cpu = time.perf_counter() - t, time.process_time() - c
        rows.append({"fit": f"SJE bs={bs}", "wall s": f"{sec:.3f}", "speedup": f"{base / sec:.2f}x",
                     "cpu s": f"{cpu:.3f}", "cpu speedup": f"{base_cpu / cpu:.2f}x",
                     "test acc": f"{est.score(Xt, yt):.4f}", "max |W - W_loop|": f"{np.abs(est.coef_ - W).max():.2e}"})
    print_table(rows, list(rows[0]))
    return rows


if __name__ == "__main__":
    main()
