"""Frozen-encoder features, the input of every probe: images brought to the encoder's preprocessing,
then its patch tokens or pooled features (DESIGN.md's public contract for ``extract_features``),
and the probe head's shared normalisation.

Every objective is probed through the same head (README "Probes"): tokens of the frozen encoder in
eval mode, mean-pooled over patches (or the cls token), then a LayerNorm without affine. SiM's
encoder has no final norm and MAE's has one; the shared normalisation keeps them comparable.
"""

from __future__ import annotations

from typing import Iterable, Union

import torch
import torch.nn.functional as F

Images = Union[torch.Tensor, Iterable]


def match_channels(x: torch.Tensor, c: int) -> torch.Tensor:
    """(B, C, H, W) -> (B, c, H, W): grey images repeated to RGB, RGB averaged to grey, so an
    encoder pretrained on one kind of dataset can be probed on the other."""
    if x.shape[1] == c:
        return x
    if x.shape[1] == 1 and c == 3:
        return x.expand(-1, 3, -1, -1)
    if x.shape[1] == 3 and c == 1:
        return x.float().mean(1, keepdim=True).round().to(x.dtype) if x.dtype == torch.uint8 \
            else x.mean(1, keepdim=True)
    raise ValueError(f"images have {x.shape[1]} channels, the encoder takes {c}")


def resized(x: torch.Tensor, size: int) -> torch.Tensor:
    """Float images (B, C, H, W) at ``size`` x ``size``, as the encoders see them (bilinear, antialiased)."""
    if x.shape[-2:] != (size, size):
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return x


def prepare(images: torch.Tensor, preprocess: dict) -> torch.Tensor:
    """uint8 [0, 255] or float [0, 1] (B, C, H, W) -> the encoder's normalised input."""
    x = match_channels(images.float() / 255 if images.dtype == torch.uint8 else images.float(),
                       preprocess["in_chans"])
    x = resized(x, preprocess["input_size"])
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
