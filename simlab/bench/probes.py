"""The ``probes`` benchmark: simlab's weighted k-NN against scikit-learn's brute-force cosine
``KNeighborsClassifier``, the linear probe's time, and one logistic-regression fit with BLAS on
every thread against one thread, on synthetic clustered features.

The rules coincide when simlab's temperature is infinite (every one of the k votes weighs 1):
then both are a plain majority vote of the k nearest by cosine similarity, ties going to the
smaller class index, and their accuracies must agree.
"""

from __future__ import annotations

import time

import torch


def clustered_features(n: int, dim: int, classes: int = 10, seed: int = 0, spread: float = 6.0):
    """(features (n, dim) float32, labels (n,)): Gaussian clusters around class centres that are the
    same for every ``seed`` (train and test share them; their samples differ)."""
    centres = torch.randn(classes, dim, generator=torch.Generator().manual_seed(12345))
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, classes, (n,), generator=g)
    return centres[labels] + spread * torch.randn(n, dim, generator=g), labels


def bench_probes(quick: bool = False, n_train: int = 50_000, n_test: int = 10_000, dim: int = 384,
                 k: int = 20) -> dict:
    from sklearn.neighbors import KNeighborsClassifier

    from ..probes import knn_accuracy, linear_probe
    from . import hardware, timed

    if quick:
        n_train, n_test = 5_000, 1_000
    train_x, train_y = clustered_features(n_train, dim, seed=0)
    test_x, test_y = clustered_features(n_test, dim, seed=1)
    out: dict = {"hardware": hardware(), "n_train": n_train, "n_test": n_test, "dim": dim, "k": k}

    repeats = 1 if quick else 3
    acc = {}
    t_ours = timed(lambda: acc.__setitem__("weighted", knn_accuracy(train_x, train_y, test_x, test_y, k=k)),
                   repeats=repeats, warmup=0)
    t_uniform = timed(lambda: acc.__setitem__("uniform", knn_accuracy(train_x, train_y, test_x, test_y, k=k,
                                                                       temperature=float("inf"))),
                      repeats=repeats, warmup=0)

    def sklearn_knn():
        clf = KNeighborsClassifier(n_neighbors=k, metric="cosine", algorithm="brute")
        acc["sklearn"] = float((clf.fit(train_x.numpy(), train_y.numpy()).predict(test_x.numpy())
                                == test_y.numpy()).mean())
    t_sklearn = timed(sklearn_knn, repeats=repeats, warmup=0)
    out.update(knn_s=t_ours, knn_uniform_s=t_uniform, sklearn_knn_s=t_sklearn, knn_speedup=t_sklearn / t_uniform,
               knn_acc=acc["weighted"], knn_uniform_acc=acc["uniform"], sklearn_knn_acc=acc["sklearn"],
               same_accuracy_where_rules_coincide=abs(acc["uniform"] - acc["sklearn"]) < 1e-9)

    n_lin = min(10_000, n_train)
    start = time.perf_counter()
    res = linear_probe(train_x[:n_lin], train_y[:n_lin], test_x[:2_000], test_y[:2_000])
    out.update(linear_probe_s=time.perf_counter() - start, linear_probe_train=n_lin, linear_probe_acc=res["acc"],
               linear_probe_converged=res["converged"])
    out["logistic_blas_threads"] = blas_threads(train_x[:5_000].numpy(), train_y[:5_000].numpy(), repeats)
    return out


def blas_threads(x, y, repeats: int = 3, iterations: int = 200) -> dict:
    """One L-BFGS logistic fit of ``iterations`` steps (the same work either way) with BLAS on every
    thread it has and on one; why :func:`simlab.global_probes._fit_logistic` runs on one."""
    import warnings

    import numpy as np
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler
    from threadpoolctl import threadpool_info, threadpool_limits

    from . import timed
    x = StandardScaler().fit_transform(x)
    fits = {}

    def fit(threads):
        with warnings.catch_warnings(), threadpool_limits(threads, user_api="blas"):
            warnings.simplefilter("ignore")
            fits[threads] = LogisticRegression(C=10.0, max_iter=iterations, tol=0.0).fit(x, y)
    threads = max([i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"], default=1)
    seconds = {n: timed(lambda: fit(n), repeats=repeats, warmup=0) for n in (threads, 1)}
    return {"train": len(x), "dim": x.shape[1], "iterations": int(fits[1].n_iter_[0]), "threads": threads,
            "seconds_all_threads": seconds[threads], "seconds_one_thread": seconds[1],
            "speedup_one_thread": seconds[threads] / seconds[1],
            "same_predictions": bool(np.array_equal(fits[threads].predict(x), fits[1].predict(x)))}
