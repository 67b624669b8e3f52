"""Image-level probes of pooled, normalised features: DINO's weighted k-NN, the linear probe
(scikit-learn logistic regression, C chosen on a held-out fifth), few-shot logistic regression, and
the large-set linear probe trained in torch (SIM_SPEC.md section 5, MAE's linprobe).
"""

from __future__ import annotations

from typing import Callable, Optional

import numpy as np
import torch
import torch.nn.functional as F

def _quiet(_: str) -> None:
    pass


@torch.no_grad()
def knn_predict(train_feats: torch.Tensor, train_labels: torch.Tensor, test_feats: torch.Tensor,
                k: int = 20, temperature: float = 0.07, chunk: int = 1024, classes: int = 0) -> torch.Tensor:
    """DINO's weighted k-NN: cosine similarity in fp32, votes exp(sim / T) (row max subtracted); the
    predicted label of every test row, (M,) int64 on CPU.

    Test rows are processed in chunks, so only (chunk x N_train) similarities exist at once.
    """
    train = F.normalize(train_feats.float(), dim=1)
    test = F.normalize(test_feats.float(), dim=1)
    train_labels = train_labels.long().to(train.device)
    classes = max(classes, int(train_labels.max()) + 1)
    k = min(k, len(train))
    preds = []
    for s in range(0, len(test), chunk):
        sim = test[s:s + chunk].to(train.device) @ train.T  # (c, N)
        top, idx = sim.topk(k, dim=1)
        weights = torch.exp((top - top[:, :1]) / temperature)  # row max subtracted: no overflow
        votes = torch.zeros(len(top), classes, device=train.device)
        votes.scatter_add_(1, train_labels[idx], weights)
        preds.append(votes.argmax(1).cpu())
    return torch.cat(preds) if preds else torch.zeros(0, dtype=torch.long)


def knn_accuracy(train_feats: torch.Tensor, train_labels: torch.Tensor, test_feats: torch.Tensor,
                 test_labels: torch.Tensor, k: int = 20, temperature: float = 0.07, chunk: int = 1024) -> float:
    """Top-1 accuracy in [0, 1] of :func:`knn_predict` (DINO's weighted k-NN, k = 20, T = 0.07)."""
    pred = knn_predict(train_feats, train_labels, test_feats, k, temperature, chunk,
                       classes=int(test_labels.max()) + 1 if len(test_labels) else 0)
    return int((pred == test_labels.long().cpu()).sum()) / len(test_labels)


def _fit_logistic(x: np.ndarray, y: np.ndarray, C: float, max_iter: int):
    """A fitted LogisticRegression and whether L-BFGS converged within ``max_iter`` (reported in the
    results instead of a warning per fit).

    BLAS runs on one thread here: a probe's products are skinny (N x D times D x classes), where
    OpenBLAS's threads cost more than they give (bench/probes.json: ``logistic_blas_threads``).
    """
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from threadpoolctl import threadpool_limits
    with warnings.catch_warnings(record=True) as caught, threadpool_limits(1, user_api="blas"):
        warnings.simplefilter("always", ConvergenceWarning)
        clf = LogisticRegression(C=C, max_iter=max_iter).fit(x, y)
    return clf, not any(issubclass(w.category, ConvergenceWarning) for w in caught)


def linear_probe(train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor, test_y: torch.Tensor,
                 cs=(0.01, 0.1, 1.0, 10.0), seed: int = 0, max_iter: int = 3000,
                 return_predictions: bool = False) -> dict:
    """Multinomial logistic regression on standardised features, C chosen on a held-out fifth of train.

    Returns ``{"acc", "C", "converged"}`` (and ``"pred"``, the test predictions, when asked); the
    final model is refit on all of train with the chosen C. ``converged``: every fit, those that
    chose C included, converged. An unconverged fit's accuracy depends on where L-BFGS stopped,
    so on BLAS threading too (a point or more at 500 iterations); 3000 leaves room for the largest
    C (about 700 iterations on a random-init encoder's features at 5,000 images).
    """
    from sklearn.preprocessing import StandardScaler
    xtr, ytr = train_x.numpy(), train_y.numpy()
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(xtr))
    cut = len(xtr) // 5
    val, fit = order[:cut], order[cut:]
    best, converged = (-1.0, cs[0]), True
    scaler = StandardScaler().fit(xtr[fit])
    for c in cs:
        clf, ok = _fit_logistic(scaler.transform(xtr[fit]), ytr[fit], c, max_iter)
        acc = clf.score(scaler.transform(xtr[val]), ytr[val])
        best, converged = max(best, (acc, c)), converged and ok
    scaler = StandardScaler().fit(xtr)
    clf, ok = _fit_logistic(scaler.transform(xtr), ytr, best[1], max_iter)
    converged = converged and ok
    pred = clf.predict(scaler.transform(test_x.numpy()))
    out = {"acc": float(np.mean(pred == test_y.numpy())), "C": best[1], "converged": converged}
    return {**out, "pred": pred} if return_predictions else out


def few_shot(train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor, test_y: torch.Tensor,
             shots=(1, 5, 10), draws: int = 5, seed: int = 0, C: float = 1.0,
             return_predictions: bool = False) -> dict:
    """Logistic regression on ``n`` labelled images per class, ``draws`` random draws per ``n``.

    Returns ``{n: {"mean", "std", "accs"}}`` (and ``"preds"``, (draws, M) test predictions, when
    asked); draw ``d`` of ``n`` shots is keyed by ``(seed, n, d)``.
    A shot count larger than the smallest class of the train set is left out (too few images to draw).
    """
    from sklearn.preprocessing import StandardScaler
    xtr, ytr, xte, yte = train_x.numpy(), train_y.numpy(), test_x.numpy(), test_y.numpy()
    classes, counts = np.unique(ytr, return_counts=True)
    out = {}
    for n in shots:
        if n > counts.min():
            continue
        accs, preds = [], []
        for d in range(draws):
            rng = np.random.default_rng([seed, n, d])
            pick = np.concatenate([rng.choice(np.flatnonzero(ytr == c), n, replace=False) for c in classes])
            scaler = StandardScaler().fit(xtr[pick])
            clf, _ = _fit_logistic(scaler.transform(xtr[pick]), ytr[pick], C, 1000)
            preds.append(clf.predict(scaler.transform(xte)))
            accs.append(float(np.mean(preds[-1] == yte)))
        out[n] = {"mean": float(np.mean(accs)), "std": float(np.std(accs)), "accs": accs}
        if return_predictions:
            out[n]["preds"] = np.stack(preds)
    return out


def global_probes(ftr: torch.Tensor, fte: torch.Tensor, train_y: torch.Tensor, test_y: torch.Tensor,
                  seed: int = 0, log: Callable[[str], None] = _quiet, predictions: Optional[dict] = None) -> dict:
    """k-NN, linear and few-shot accuracies of pooled, normalised features. A ``predictions`` dict
    receives each probe's test predictions (numpy; few-shot's as (draws, M)), for intervals that
    resample the test set (:mod:`simlab.intervals`)."""
    keep = predictions is not None
    log("k-NN (k = 20, T = 0.07)")
    knn = knn_predict(ftr, train_y, fte, classes=int(test_y.max()) + 1).numpy()
    out = {"knn": float(np.mean(knn == test_y.long().numpy()))}
    log("linear probe (logistic regression, C chosen on a held-out fifth)")
    linear = linear_probe(ftr, train_y, fte, test_y, seed=seed, return_predictions=keep)
    out.update(linear=linear["acc"], linear_converged=linear["converged"])
    log("few-shot (1, 5, 10 per class, 5 draws each)")
    shots = few_shot(ftr, train_y, fte, test_y, seed=seed, return_predictions=keep)
    for n, res in shots.items():
        out[f"few_shot_{n}"], out[f"few_shot_{n}_std"] = res["mean"], res["std"]
    if keep:
        predictions.update(knn=knn, linear=linear["pred"],
                           **{f"few_shot_{n}": res["preds"] for n, res in shots.items()})
    return out


def torch_linear_probe(train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor, test_y: torch.Tensor,
                       epochs: int = 90, batch_size: int = 1024, blr: float = 0.1, weight_decay: float = 0.0,
                       seed: int = 0, device=None) -> dict:
    """The large-set linear probe (SIM_SPEC.md section 5, MAE's linprobe): BatchNorm without affine,
    then a Linear, trained with SGD (momentum 0.9, lr = blr x batch / 256, cosine) on frozen features.

    For sets too large for scikit-learn; features may live on a GPU. Returns ``{"acc"}``.
    """
    device = torch.device(device or train_x.device)
    g = torch.Generator().manual_seed(seed)
    classes = int(max(train_y.max(), test_y.max())) + 1
    head = torch.nn.Sequential(torch.nn.BatchNorm1d(train_x.shape[1], affine=False, eps=1e-6),
                               torch.nn.Linear(train_x.shape[1], classes)).to(device)
    torch.nn.init.trunc_normal_(head[1].weight, std=0.01, generator=g)
    torch.nn.init.zeros_(head[1].bias)
    steps_per_epoch = max(1, len(train_x) // batch_size)
    lr = blr * batch_size / 256
    opt = torch.optim.SGD(head.parameters(), lr=lr, momentum=0.9, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs * steps_per_epoch)
    xtr, ytr = train_x.float().to(device), train_y.long().to(device)
    head.train()
    for _ in range(epochs):
        order = torch.randperm(len(xtr), generator=g).to(device)
        for s in range(steps_per_epoch):
            idx = order[s * batch_size:(s + 1) * batch_size]
            loss = F.cross_entropy(head(xtr[idx]), ytr[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    head.eval()
    with torch.no_grad():
        pred = torch.cat([head(test_x[s:s + 4096].float().to(device)).argmax(1).cpu()
                          for s in range(0, len(test_x), 4096)])
    return {"acc": float((pred == test_y.long().cpu()).float().mean())}
