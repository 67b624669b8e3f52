"""Fine-tuning's images: timm's per-image transforms (RandAugment, random erasing; resize and
centre-crop for evaluation), and the generators keyed by ``(seed, step, index)`` and ``(seed, step,
rank)`` so each image's augmentation and each step's mixup and drop-path draws are the same
whatever the number of ranks, workers or micro-batches, and on resume.
"""

from __future__ import annotations

import random
from typing import Optional

import numpy as np
import torch

from .finetune_recipe import FinetuneConfig

def _to_pil(image: torch.Tensor):
    from PIL import Image
    array = image.permute(1, 2, 0).numpy()
    return Image.fromarray(array[..., 0] if array.shape[2] == 1 else array)


def _zero_bit_posterize() -> None:
    """timm's RandAugment can ask ``PosterizeIncreasing`` for 0 bits (magnitude 10 after its noise);
    Pillow >= 11 refuses that, while the Pillow the policy was tuned with returned a black image.
    Give timm's op table that older behaviour (once)."""
    from PIL import Image
    from timm.data import auto_augment as aa
    original = aa.posterize
    if getattr(original, "zero_bits_ok", False):
        return

    def posterize(img, bits_to_keep, **kwargs):
        if bits_to_keep <= 0:
            return Image.new(img.mode, img.size)
        return original(img, bits_to_keep, **kwargs)
    posterize.zero_bits_ok = True
    aa.posterize = posterize
    for name, fn in list(aa.NAME_TO_OP.items()):
        if fn is original:
            aa.NAME_TO_OP[name] = posterize


def transforms(cfg: FinetuneConfig, preprocess: dict):
    """(train, eval) per-image transforms (timm's, PIL in, normalised tensor out)."""
    from timm.data import create_transform
    _zero_bit_posterize()
    size, mean, std = preprocess["input_size"], tuple(preprocess["mean"]), tuple(preprocess["std"])
    train = create_transform(size, is_training=True, scale=tuple(cfg.crop_scale), auto_augment=cfg.randaug or None,
                             re_prob=cfg.reprob, re_mode="pixel", re_count=1, interpolation="bicubic",
                             mean=mean, std=std)
    evaluate = create_transform(size, is_training=False, crop_pct=cfg.crop_pct, interpolation="bicubic",
                                mean=mean, std=std)
    return train, evaluate


def seed_globals(*key: int, devices: bool = False) -> None:
    """Seed Python's, numpy's and torch's CPU global generators (and, with ``devices``, every
    device's) from a tuple of integers: timm's RandAugment, random erasing, Mixup and drop path draw
    from them, so the draws that follow depend on the key alone, not on what ran before
    (SeedSequence mixes the tuple into one seed). Per image, ``devices`` stays off:
    ``torch.manual_seed`` visits every backend and costs about a millisecond."""
    seed = int(np.random.SeedSequence([int(k) for k in key]).generate_state(1)[0]) % 2 ** 31
    random.seed(seed)
    np.random.seed(seed)
    if devices:
        torch.manual_seed(seed)
    else:
        torch.default_generator.manual_seed(seed)


def seed_step(seed: int, step: int, rank: int = 0) -> None:
    """Every global generator keyed by ``(seed, step, rank)``: each step's mixup and drop-path draws
    (drop path draws on the training device)."""
    seed_globals(seed, step, rank, 1, devices=True)


class KeyedBatches(torch.utils.data.Dataset):
    """``(step, epoch, indices)`` -> (images (B, C, S, S), labels (B,), step), each image's augmentation
    keyed by ``(seed, step, index)``: the same image at the same step gets the same draws whichever
    rank, worker or position in a share it lands on (RandomResizedCrop's draws are data dependent,
    so one key per step would tie an image's crop to the images before it)."""

    def __init__(self, dataset, transform, seed: int):
        self.dataset, self.transform, self.seed = dataset, transform, seed

    def __getitem__(self, item):
        step, _, indices = item
        images, labels = [], []
        for i in indices.tolist():
            it = self.dataset[i]
            seed_globals(self.seed, step, i, 0)
            images.append(self.transform(_to_pil(it["image"])))
            labels.append(int(it["label"]))
        return torch.stack(images), torch.as_tensor(labels), step

    def __len__(self):
        return 0


def _first(dataset, n: Optional[int]):
    """The first ``n`` items of ``dataset`` (all when ``n`` is None)."""
    return torch.utils.data.Subset(dataset, range(len(dataset) if n is None else min(n, len(dataset))))
