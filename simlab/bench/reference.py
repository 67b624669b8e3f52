"""The reference the ``views`` benchmark measures simlab's data path against: a plain per-sample
PIL implementation of SiM's two-view augmentation (SIM_SPEC.md section 4), as the official
``DataAugmentationForSIM`` composes it from torchvision's PIL transforms.

Per view: horizontal flip (p 0.5) of the whole image, ``RandomResizedCrop`` (bicubic), colour
jitter (0.4, 0.4, 0.2, 0.1; p 0.8; random order), grayscale (p 0.2), PIL Gaussian blur (view 1
p 1.0, view 2 p 0.1), solarize at 128 (view 2 p 0.2), ``ToTensor``, ``Normalize``. Used for
speed only: its random draws are Python's, not simlab's keyed ones.
"""

from __future__ import annotations

import random

import torch

from ..config import AugConfig


class PILTwoViews:
    """``(view1, view2)`` float tensors of one PIL image, drawn with ``random``."""

    def __init__(self, aug: AugConfig, size: int, mean, std):
        import torchvision.transforms as T
        self.aug, self.size = aug, size
        self.sigma = aug.sigma_range(size)
        self.views = [self._view(T, blur_p, solarize_p, mean, std)
                      for blur_p, solarize_p in zip(aug.blur_p, aug.solarize_p)]

    def _view(self, T, blur_p: float, solarize_p: float, mean, std):
        a = self.aug
        return T.Compose([
            T.RandomHorizontalFlip(a.flip_p),
            T.RandomResizedCrop(self.size, scale=a.crop_scale, ratio=a.crop_ratio,
                                interpolation=T.InterpolationMode.BICUBIC),
            T.RandomApply([T.ColorJitter(a.brightness, a.contrast, a.saturation, a.hue)], p=a.jitter_p),
            T.RandomGrayscale(a.grayscale_p),
            _Maybe(blur_p, self._blur),
            _Maybe(solarize_p, _solarize),
            T.ToTensor(),
            T.Normalize(mean, std),
        ])

    def _blur(self, image):
        from PIL import ImageFilter
        return image.filter(ImageFilter.GaussianBlur(radius=random.uniform(*self.sigma)))

    def __call__(self, image) -> tuple[torch.Tensor, torch.Tensor]:
        return self.views[0](image), self.views[1](image)


class _Maybe:
    def __init__(self, p: float, fn):
        self.p, self.fn = p, fn

    def __call__(self, image):
        return self.fn(image) if random.random() < self.p else image


def _solarize(image):
    from PIL import ImageOps
    return ImageOps.solarize(image, 128)
