"""What a run logs about its representations while it trains: collapse, what the tokens encode, k-NN.

Every ``log_every`` steps the loop records, from the batch it already computed:

- dense-collapse signals of the targets and predictions (per-dimension std, effective ranks);
- the decomposition of the target tokens' variance into view-2 grid position, image identity and
  the rest (:func:`simlab.floors.variance_shares`): a target that is mostly position or mostly one
  code per image gives the decoder nothing to learn about content;
- the same decomposition of the online encoder's patch tokens on the batch's full view 1 (the
  features the probes read), and RankMe of their mean-pooled features. This costs one no-grad
  encoder pass at log steps only, in eval mode, so it draws no random numbers;
- optionally the online k-NN probe (:class:`KnnMonitor`).
"""

from __future__ import annotations

import torch

from .config import Config
from .floors import rankme, variance_shares


@torch.no_grad()
def effective_rank(x: torch.Tensor) -> float:
    """exp(entropy) of the normalised eigenvalues of the covariance of rows of x (N, D)."""
    x = x.float().reshape(-1, x.shape[-1])
    x = x - x.mean(0)
    eig = torch.linalg.eigvalsh(x.T @ x / max(len(x) - 1, 1)).clamp(min=0)
    p = eig / eig.sum().clamp(min=1e-12)
    return float(torch.exp(-(p * torch.log(p.clamp(min=1e-12))).sum()))


@torch.no_grad()
def collapse_monitors(outputs: dict) -> dict:
    """Dense-collapse signals: per-dimension std of the normalised targets, effective ranks, and the
    targets' variance shares (``target_var_position``, ``target_var_image``, ``target_var_rest``)."""
    target = outputs["target"].float()
    flat = target.reshape(-1, target.shape[-1])
    out = {"target_std": float(flat.std(0).mean()),
           "pred_rank": effective_rank(outputs["pred"]),
           "target_rank": effective_rank(flat)}
    out.update({f"target_var_{k}": v for k, v in variance_shares(target).items()})
    return out


@torch.no_grad()
def encoder_monitors(encoder: torch.nn.Module, images: torch.Tensor) -> dict:
    """The online encoder's patch tokens on full (unmasked) normalised images (B, C, H, W): their
    variance shares (``encoder_var_*``) and RankMe of the mean-pooled features (``encoder_rankme``).
    Runs in eval mode (no dropout or drop-path draws) and restores the encoder's mode."""
    was_training = encoder.training
    encoder.eval()
    try:
        tokens = encoder.forward_features(images)[:, 1:].float()  # (B, N, D)
    finally:
        encoder.train(was_training)
    out = {f"encoder_var_{k}": v for k, v in variance_shares(tokens).items()}
    out["encoder_rankme"] = rankme(tokens.mean(1))
    return out


class KnnMonitor:
    """The online k-NN probe: labelled bank and queries loaded once, the online encoder probed in eval mode.

    It draws no random numbers, so a run with the monitor trains exactly as one without it.
    """

    def __init__(self, cfg: Config):
        from .probes import labelled_split
        t, d = cfg.train, cfg.data
        name = t.knn_dataset or d.dataset
        root = d.data_root if name == d.dataset else None
        self.splits = {}
        for split, n in (("train", t.knn_train_size), ("test", t.knn_test_size)):
            data = labelled_split(name, split, n, root, d.image_size, cfg.seed, d.download, field="knn_dataset")
            self.splits[split] = (data["images"], data["labels"])

    def __call__(self, encoder) -> float:
        from .probes import extract_features, knn_accuracy, normalise
        (xtr, ytr), (xte, yte) = self.splits["train"], self.splits["test"]
        ftr = normalise(extract_features(encoder, xtr))
        fte = normalise(extract_features(encoder, xte))
        return knn_accuracy(ftr, ytr, fte, yte)
