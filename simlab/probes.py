"""Frozen-feature probes: feature extraction, weighted k-NN, linear and dense probes.

Every objective is probed through the same head (README "Probes"): tokens of
the frozen encoder in eval mode, mean-pooled over patches (or the cls token),
then a LayerNorm without affine, then the probe. SiM's encoder has no final
norm and MAE's has one; the shared normalisation keeps them comparable.
"""

from __future__ import annotations

from typing import Callable, Iterable, Optional, Union

import numpy as np
import torch
import torch.nn.functional as F

Images = Union[torch.Tensor, Iterable]


def _quiet(_: str) -> None:
    pass


def prepare(images: torch.Tensor, preprocess: dict) -> torch.Tensor:
    """uint8 [0, 255] or float [0, 1] (B, C, H, W) -> the encoder's normalised input."""
    x = images.float() / 255 if images.dtype == torch.uint8 else images.float()
    c = preprocess["in_chans"]
    if x.shape[1] != c:
        if x.shape[1] == 1 and c == 3:
            x = x.expand(-1, 3, -1, -1)
        elif x.shape[1] == 3 and c == 1:
            x = x.mean(1, keepdim=True)
        else:
            raise ValueError(f"images have {x.shape[1]} channels, the encoder takes {c}")
    size = preprocess["input_size"]
    if x.shape[-2:] != (size, size):
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    mean = torch.tensor(preprocess["mean"]).view(1, -1, 1, 1)
    std = torch.tensor(preprocess["std"]).view(1, -1, 1, 1)
    return (x - mean) / std


def _batches(images_or_loader: Images, batch_size: int):
    if isinstance(images_or_loader, torch.Tensor):
        for s in range(0, len(images_or_loader), batch_size):
            yield images_or_loader[s:s + batch_size], None
    else:
        for item in images_or_loader:
            if isinstance(item, (tuple, list)):
                yield item[0], item[1]
            elif isinstance(item, dict):
                yield item["image"] if "image" in item else item["images"], item.get("label", item.get("labels"))
            else:
                yield item, None


@torch.no_grad()
def extract_tokens(encoder, images_or_loader: Images, batch_size: int = 256, device=None,
                   return_labels: bool = False):
    """All patch tokens (B, N, D) float32 on CPU (and the labels when asked); cls dropped."""
    return _extract(encoder, images_or_loader, "tokens", batch_size, device, return_labels)


@torch.no_grad()
def extract_features(encoder, images_or_loader: Images, pool: str = "mean", return_labels: bool = False,
                     batch_size: int = 256, device=None):
    """Pooled features (B, D) float32 on CPU, per the public contract.

    images: uint8 (B, C, H, W) in [0, 255] or float in [0, 1], not normalised;
    converted to the encoder's channels, resized to its input size (bilinear,
    antialiased) and normalised with its mean and std. ``pool``: "mean" over
    patch tokens, or "cls".
    """
    if pool not in ("mean", "cls"):
        raise ValueError(f"pool must be 'mean' or 'cls', got {pool!r}")
    return _extract(encoder, images_or_loader, pool, batch_size, device, return_labels)


def _extract(encoder, images_or_loader, mode, batch_size, device, return_labels):
    was_training = encoder.training
    encoder.eval()
    device = device or next(encoder.parameters()).device
    feats, labels = [], []
    for x, y in _batches(images_or_loader, batch_size):
        tokens = encoder.forward_features(prepare(x, encoder.preprocess).to(device)).float()  # (B, 1 + N, D)
        if mode == "mean":
            out = tokens[:, 1:].mean(1)
        elif mode == "cls":
            out = tokens[:, 0]
        else:
            out = tokens[:, 1:]
        feats.append(out.cpu())
        if y is not None:
            labels.append(torch.as_tensor(y))
    encoder.train(was_training)
    feats = torch.cat(feats)
    if return_labels:
        return feats, (torch.cat(labels) if labels else None)
    return feats


def normalise(features: torch.Tensor) -> torch.Tensor:
    """The shared probe head's LayerNorm without affine, over the last dim."""
    return F.layer_norm(features.float(), features.shape[-1:])


@torch.no_grad()
def knn_accuracy(train_feats: torch.Tensor, train_labels: torch.Tensor, test_feats: torch.Tensor,
                 test_labels: torch.Tensor, k: int = 20, temperature: float = 0.07, chunk: int = 1024) -> float:
    """DINO's weighted k-NN: cosine similarity in fp32, votes exp(sim / T) (row max subtracted); top-1 in [0, 1].

    Test rows are processed in chunks, so only (chunk x N_train) similarities exist at once.
    """
    train = F.normalize(train_feats.float(), dim=1)
    test = F.normalize(test_feats.float(), dim=1)
    train_labels = train_labels.long().to(train.device)
    classes = int(max(train_labels.max(), test_labels.max())) + 1
    k = min(k, len(train))
    correct = 0
    for s in range(0, len(test), chunk):
        sim = test[s:s + chunk].to(train.device) @ train.T  # (c, N)
        top, idx = sim.topk(k, dim=1)
        weights = torch.exp((top - top[:, :1]) / temperature)  # row max subtracted: no overflow
        votes = torch.zeros(len(top), classes, device=train.device)
        votes.scatter_add_(1, train_labels[idx], weights)
        correct += int((votes.argmax(1).cpu() == test_labels[s:s + chunk].long()).sum())
    return correct / len(test)


def _fit_logistic(x: np.ndarray, y: np.ndarray, C: float, max_iter: int):
    """A fitted LogisticRegression and whether L-BFGS converged within ``max_iter`` (reported in the
    results instead of a warning per fit)."""
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        clf = LogisticRegression(C=C, max_iter=max_iter).fit(x, y)
    return clf, not any(issubclass(w.category, ConvergenceWarning) for w in caught)


def linear_probe(train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor, test_y: torch.Tensor,
                 cs=(0.01, 0.1, 1.0, 10.0), seed: int = 0, max_iter: int = 500) -> dict:
    """Multinomial logistic regression on standardised features, C chosen on a held-out fifth of train.

    Returns ``{"acc", "C", "converged"}``; the final model is refit on all of train with the chosen C.
    """
    from sklearn.preprocessing import StandardScaler
    xtr, ytr = train_x.numpy(), train_y.numpy()
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(xtr))
    cut = len(xtr) // 5
    val, fit = order[:cut], order[cut:]
    best = (-1.0, cs[0])
    for c in cs:
        scaler = StandardScaler().fit(xtr[fit])
        clf, _ = _fit_logistic(scaler.transform(xtr[fit]), ytr[fit], c, max_iter)
        acc = clf.score(scaler.transform(xtr[val]), ytr[val])
        best = max(best, (acc, c))
    scaler = StandardScaler().fit(xtr)
    clf, converged = _fit_logistic(scaler.transform(xtr), ytr, best[1], max_iter)
    return {"acc": float(clf.score(scaler.transform(test_x.numpy()), test_y.numpy())), "C": best[1],
            "converged": converged}


def patch_labels(masks: torch.Tensor, grid: int) -> torch.Tensor:
    """Majority mask label of each patch: masks (B, H, W) -> (B, grid*grid) int64. Pixels marked
    ``IGNORE_LABEL`` do not vote; a patch of ignored pixels only is ``IGNORE_LABEL`` itself."""
    from .data import IGNORE_LABEL
    B, H, W = masks.shape
    ph, pw = H // grid, W // grid
    m = masks[:, :grid * ph, :grid * pw].long().reshape(B, grid, ph, grid, pw).permute(0, 1, 3, 2, 4)
    m = m.reshape(B, grid * grid, ph * pw)
    ignored = m == IGNORE_LABEL
    scored = m.masked_fill(ignored, 0)
    top = int(scored.max()) + 1 if scored.numel() else 1
    counts = (F.one_hot(scored, top) * (~ignored)[..., None]).sum(2)  # (B, N, K)
    labels = counts.argmax(-1)  # ties go to the lower label (background)
    return labels.masked_fill(ignored.all(-1), IGNORE_LABEL)


def iou_scores(pred: np.ndarray, true: np.ndarray, classes: Iterable[int]) -> dict:
    """Per-class IoU over the given classes (those absent from both sides are skipped)."""
    out = {}
    for c in classes:
        inter = np.sum((pred == c) & (true == c))
        union = np.sum((pred == c) | (true == c))
        if union > 0:
            out[int(c)] = inter / union
    return out


def dense_probe(train_tokens: torch.Tensor, train_labels: torch.Tensor, test_tokens: torch.Tensor,
                test_labels: torch.Tensor, C: float = 1.0, max_iter: int = 300) -> dict:
    """Per-patch linear classifiers on frozen patch tokens (B, N, D) for per-patch labels (B, N).

    Reports the class-agnostic foreground/background mIoU (a binary classifier,
    where spatial sensitivity shows), its foreground IoU, and the class-aware
    mIoU (a classifier over background + classes); ``dense_converged`` says whether both fits converged.
    """
    from sklearn.preprocessing import StandardScaler

    from .data import IGNORE_LABEL
    D = train_tokens.shape[-1]
    ytr, yte = train_labels.reshape(-1).numpy(), test_labels.reshape(-1).numpy()
    keep_tr, keep_te = ytr != IGNORE_LABEL, yte != IGNORE_LABEL  # patches no label covers are not scored
    xtr = train_tokens.reshape(-1, D).numpy()[keep_tr]
    xte = test_tokens.reshape(-1, D).numpy()[keep_te]
    ytr, yte = ytr[keep_tr], yte[keep_te]
    scaler = StandardScaler().fit(xtr)
    xtr, xte = scaler.transform(xtr), scaler.transform(xte)
    out = {}
    ok_fg = True
    if len(np.unique(ytr > 0)) == 2:  # a set without background (ADE20K) has no fg/bg split to learn
        fg_clf, ok_fg = _fit_logistic(xtr, ytr > 0, C, max_iter)
        binary = iou_scores(fg_clf.predict(xte).astype(int), (yte > 0).astype(int), (0, 1))
        out.update(fg_bg_miou=float(np.mean(list(binary.values()))), fg_iou=float(binary.get(1, 0.0)))
    cls_clf, ok_cls = _fit_logistic(xtr, ytr, C, max_iter)
    per_class = iou_scores(cls_clf.predict(xte), yte, np.unique(np.concatenate([ytr, yte])))
    out.update(class_miou=float(np.mean(list(per_class.values()))), dense_converged=ok_fg and ok_cls)
    return out


def raw_pixel_tokens(images: torch.Tensor, patch: int) -> torch.Tensor:
    """Raw-pixel baseline for the dense probe: (B, C, H, W) -> per-patch pixels (B, N, C*p*p) in [0, 1]."""
    x = images.float() / 255 if images.dtype == torch.uint8 else images.float()
    B, C, H, W = x.shape
    g = H // patch
    x = x[:, :, :g * patch, :g * patch].reshape(B, C, g, patch, g, patch).permute(0, 2, 4, 1, 3, 5)
    return x.reshape(B, g * g, C * patch * patch)


def probe_encoder(encoder, train: dict, test: dict, grid: int, dense_train: int = 1000,
                  pool: str = "mean", seed: int = 0, log: Callable[[str], None] = _quiet) -> dict:
    """k-NN, linear and (where masks exist) dense probes of one frozen encoder.

    train/test: ``images`` (uint8), ``labels`` and optionally ``masks`` tensors.
    The dense probe trains on the first ``dense_train`` train images. ``log`` hears
    each stage as it starts (the whole takes from seconds to minutes).
    """
    log(f"features of {len(train['images'])} train and {len(test['images'])} test images")
    ftr = normalise(extract_features(encoder, train["images"], pool))
    fte = normalise(extract_features(encoder, test["images"], pool))
    out = global_probes(ftr, fte, train["labels"], test["labels"], seed, log=log)
    if "masks" in train and "masks" in test:
        log(f"dense probe: per-patch logistic regression on {min(dense_train, len(train['images']))} images' tokens")
        ttr = normalise(extract_tokens(encoder, train["images"][:dense_train]))
        tte = normalise(extract_tokens(encoder, test["images"]))
        size = encoder.preprocess["input_size"]
        out.update(dense_probe(ttr, dense_patch_labels(train, size, grid, dense_train), tte,
                               dense_patch_labels(test, size, grid)))
    return out


def dense_patch_labels(split: dict, size: int, grid: int, n: Optional[int] = None) -> torch.Tensor:
    """Per-patch majority labels (B, grid*grid) of a split's first ``n`` masks, seen at input ``size``."""
    return patch_labels(_mask_at(split["masks"][:n], size), grid)


def probe_floors(train: dict, test: dict, grid: int, size: int, dense_train: int = 1000) -> dict:
    """What the probes score without any image content (DESIGN.md convention 13).

    ``chance``: the share of the test set's most frequent class (what every global probe scores
    when it learns nothing). Where masks exist: ``position only``, the dense probe on a one-hot
    code of each patch's grid position (it can learn where objects usually are, nothing else),
    and the constant rule, ``all background`` (or ``majority class`` where a set has no
    background), which predicts the train set's most frequent patch label everywhere.
    """
    labels = test["labels"].long()
    out = {"chance": {"accuracy": float(torch.bincount(labels).max() / len(labels))}}
    if "masks" in train and "masks" in test:
        ytr = dense_patch_labels(train, size, grid, dense_train)
        yte = dense_patch_labels(test, size, grid)
        n = grid * grid
        onehot = lambda b: torch.eye(n)[None].expand(b, n, n).contiguous()  # noqa: E731
        out["position only"] = dense_probe(onehot(len(ytr)), ytr, onehot(len(yte)), yte)
        constant = constant_label_scores(ytr, yte)
        out["all background" if constant.pop("label") == 0 else "majority class"] = constant
    return out


def constant_label_scores(train_labels: torch.Tensor, test_labels: torch.Tensor) -> dict:
    """The dense probe's numbers for a rule predicting the train set's most frequent patch label
    everywhere, scored exactly as :func:`dense_probe` scores (same classes, ignored patches left out)."""
    from .data import IGNORE_LABEL
    ytr, yte = train_labels.reshape(-1).numpy(), test_labels.reshape(-1).numpy()
    ytr, yte = ytr[ytr != IGNORE_LABEL], yte[yte != IGNORE_LABEL]
    label = int(np.bincount(ytr).argmax())
    pred = np.full_like(yte, label)
    out = {"label": label}
    if len(np.unique(ytr > 0)) == 2:
        binary = iou_scores((pred > 0).astype(int), (yte > 0).astype(int), (0, 1))
        out.update(fg_bg_miou=float(np.mean(list(binary.values()))), fg_iou=float(binary.get(1, 0.0)))
    per_class = iou_scores(pred, yte, np.unique(np.concatenate([ytr, yte])))
    out["class_miou"] = float(np.mean(list(per_class.values())))
    return out


def _mask_at(masks: torch.Tensor, size: int) -> torch.Tensor:
    """Masks resized (nearest) to the encoder's input size, so patches cover what the encoder saw."""
    if masks.shape[-1] == size and masks.shape[-2] == size:
        return masks
    return F.interpolate(masks[:, None].float(), size=(size, size), mode="nearest")[:, 0].long()


def random_init_like(encoder, seed: int):
    """A freshly initialised encoder of the same architecture and preprocessing (the random-init baseline)."""
    from .checkpoint import build_encoder
    torch.manual_seed(seed)
    return build_encoder(encoder.config, encoder.preprocess)


def labelled_split(name: str, split: str, n: int, data_root=None, image_size: int = 32, seed: int = 0,
                   download: bool = False, field: str = "dataset", require_labels: bool = True) -> dict:
    """The first ``n`` images (uint8; resized to ``image_size`` where they differ in size), labels
    and, where the dataset has them, masks of a labelled dataset's split; an unlabeled one is a
    configuration error of ``field`` (unless ``require_labels`` is false: images only are needed)."""
    from .config import ConfigError
    from .data import build_dataset
    ds = build_dataset(name, split, data_root, image_size=image_size, size=n if name == "shapes" else None,
                       seed=seed, download=download)
    try:
        out = {k: v[:n] for k, v in ds.tensors().items() if k in ("images", "labels", "masks")}
    except NotImplementedError:  # images of different sizes: load and resize one by one
        items = [ds[i] for i in range(min(n, len(ds)))]
        out = {"labels": torch.as_tensor([int(it["label"]) for it in items]),
               "images": torch.stack([F.interpolate(it["image"][None].float(), size=(image_size, image_size),
                                                    mode="bilinear", antialias=True)[0] for it in items])
               .round().clamp(0, 255).to(torch.uint8)}
        if items and "mask" in items[0]:  # masks follow their images (nearest: labels stay labels)
            out["masks"] = torch.cat([_mask_at(it["mask"][None], image_size) for it in items]).to(torch.uint8)
    if require_labels and (out["labels"] < 0).any():
        raise ConfigError(f"{field}: {name!r} has unlabeled images; name a labelled dataset")
    return out


def global_probes(ftr: torch.Tensor, fte: torch.Tensor, train_y: torch.Tensor, test_y: torch.Tensor,
                  seed: int = 0, log: Callable[[str], None] = _quiet) -> dict:
    """k-NN, linear and few-shot accuracies of pooled, normalised features."""
    log("k-NN (k = 20, T = 0.07)")
    out = {"knn": knn_accuracy(ftr, train_y, fte, test_y)}
    log("linear probe (logistic regression, C chosen on a held-out fifth)")
    linear = linear_probe(ftr, train_y, fte, test_y, seed=seed)
    out.update(linear=linear["acc"], linear_converged=linear["converged"])
    log("few-shot (1, 5, 10 per class, 5 draws each)")
    for n, res in few_shot(ftr, train_y, fte, test_y, seed=seed).items():
        out[f"few_shot_{n}"], out[f"few_shot_{n}_std"] = res["mean"], res["std"]
    return out


def probe_checkpoint(path, train_size: int = 10_000, test_size: int = 2_000, data_root=None,
                     random_init: Optional[int] = None, data_seed: int = 0, seed: int = 0,
                     dataset: Optional[str] = None, pool: str = "mean", log: Callable[[str], None] = _quiet,
                     dense_pairs: int = 512) -> dict:
    """Probe a checkpoint's encoder (or, with ``random_init=SEED``, a fresh one of its architecture)
    on the first ``train_size`` / ``test_size`` images of a dataset's train and test splits (by
    default its pretraining dataset), pooling patch tokens by ``pool`` ("mean" or "cls"); returns every
    number with the settings, the checkpoint's sha256 and the floors (:func:`probe_floors`). For a
    SiM checkpoint it adds ``dense_evidence``: its decoder's predictions on ``dense_pairs`` held-out
    view pairs and its learned correspondences, each beside its floors (:func:`simlab.dense.dense_evidence`).
    Numbers are rounded to 6 decimals. ``path``: a checkpoint file or a run folder."""
    import time

    from .checkpoint import load_encoder, resolve_checkpoint, sha256_of

    start = time.perf_counter()
    path = resolve_checkpoint(path)
    log(f"loading {path}")
    encoder = load_encoder(path)
    if random_init is not None:
        encoder = random_init_like(encoder, random_init)
    cfg = encoder.config
    size = encoder.preprocess["input_size"]
    dataset = dataset or cfg.data.dataset
    if dataset == cfg.data.dataset:  # the recorded data_root belongs to the pretraining dataset only
        data_root = data_root or cfg.data.data_root
    log(f"loading {train_size} train and {test_size} test images of {dataset}")
    splits = {split: labelled_split(dataset, split, n, data_root, size, data_seed)
              for split, n in (("train", train_size), ("test", test_size))}
    res = probe_encoder(encoder, splits["train"], splits["test"], cfg.grid, pool=pool, seed=seed, log=log)
    log("floors: chance, position-only dense probe, constant label")
    res["floors"] = probe_floors(splits["train"], splits["test"], cfg.grid, size)
    if random_init is None and dense_pairs > 0 and cfg.train.objective == "sim":
        from .dense import dense_evidence, load_sim_model
        n = min(dense_pairs, len(splits["test"]["images"]), len(splits["train"]["images"]))
        log(f"dense evidence: the decoder and its floors on {n} held-out view pairs")
        model = load_sim_model(path)
        mean, std = model.preprocess["mean"], model.preprocess["std"]
        _, res["dense_evidence"] = dense_evidence(model, splits["test"]["images"][:n], torch.arange(n),
                                                  splits["train"]["images"][:n], torch.arange(n), mean, std)
    return rounded({"checkpoint": str(path), "sha256": sha256_of(path),
                    "encoder": "random-init" if random_init is not None else "pretrained",
                    "random_init_seed": random_init, "dataset": dataset, "pool": pool,
                    "train_size": len(splits["train"]["labels"]), "test_size": len(splits["test"]["labels"]),
                    "data_seed": data_seed, "probe_seed": seed, **res, "seconds": time.perf_counter() - start})


def rounded(obj, digits: int = 6):
    """Floats rounded to ``digits`` decimals throughout a JSON-ready structure (0.1076, not
    0.10759999999999999); booleans, ints and strings unchanged."""
    if isinstance(obj, float):
        return round(obj, digits)
    if isinstance(obj, dict):
        return {k: rounded(v, digits) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [rounded(v, digits) for v in obj]
    return obj


def few_shot(train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor, test_y: torch.Tensor,
             shots=(1, 5, 10), draws: int = 5, seed: int = 0, C: float = 1.0) -> dict:
    """Logistic regression on ``n`` labelled images per class, ``draws`` random draws per ``n``.

    Returns ``{n: {"mean", "std", "accs"}}``; draw ``d`` of ``n`` shots is keyed by ``(seed, n, d)``.
    A shot count larger than the smallest class of the train set is left out (too few images to draw).
    """
    from sklearn.preprocessing import StandardScaler
    xtr, ytr, xte, yte = train_x.numpy(), train_y.numpy(), test_x.numpy(), test_y.numpy()
    classes, counts = np.unique(ytr, return_counts=True)
    out = {}
    for n in shots:
        if n > counts.min():
            continue
        accs = []
        for d in range(draws):
            rng = np.random.default_rng([seed, n, d])
            pick = np.concatenate([rng.choice(np.flatnonzero(ytr == c), n, replace=False) for c in classes])
            scaler = StandardScaler().fit(xtr[pick])
            clf, _ = _fit_logistic(scaler.transform(xtr[pick]), ytr[pick], C, 1000)
            accs.append(float(clf.score(scaler.transform(xte), yte)))
        out[n] = {"mean": float(np.mean(accs)), "std": float(np.std(accs)), "accs": accs}
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
