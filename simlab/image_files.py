"""Images read file by file: decoding any file to upright uint8 RGB, the bad-image policy (skip and
list, or fail naming the file), ``verify`` over a whole set, and the image-folder dataset (class
sub-folders, or a flat folder of unlabeled images; ImageNet included).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np
import torch

from .dataset_base import DatasetNotFound, ImageDataset

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
BAD_IMAGE_POLICIES = ("skip", "fail")


class BadImageError(ValueError):
    """An image file that cannot be decoded (cut, empty, not an image, or a decompression bomb)."""

    def __init__(self, path, reason: Optional[str] = None):
        # one argument: the message as re-raised from a data-loader worker
        super().__init__(f"{path}: {reason}" if reason is not None else str(path))
        self.path, self.reason = str(path), reason


def _to_rgb(im) -> np.ndarray:
    """(H, W, 3) uint8 of a decoded Pillow image of any mode."""
    if im.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        # 16-bit greyscale: Pillow's own convert would clip at 255; scale the 0..65535 range instead
        wide = np.asarray(im).astype(np.int64)
        grey = ((wide.clip(0, 65535) * 255 + 32767) // 65535).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=2)
    if im.mode == "P":
        im = im.convert("RGBA")  # palettes with transparency go through RGBA (Pillow warns otherwise)
    return np.asarray(im.convert("RGB"), dtype=np.uint8)


def decode_image(path) -> torch.Tensor:
    """uint8 (3, H, W) of an image file, upright (EXIF orientation applied); raises :class:`BadImageError`.

    Pillow's decompression-bomb guard stays on: a header that declares more than
    twice ``Image.MAX_IMAGE_PIXELS`` is refused before any pixel is decoded.
    """
    import zlib

    from PIL import Image, ImageOps
    try:
        with Image.open(path) as im:
            im.load()  # a cut file fails here, not later in a worker
            array = _to_rgb(ImageOps.exif_transpose(im))
    except Image.DecompressionBombError as e:
        raise BadImageError(path, f"decompression bomb ({e})") from None
    except (OSError, SyntaxError, ValueError, EOFError, zlib.error) as e:  # UnidentifiedImageError is an OSError
        raise BadImageError(path, f"{type(e).__name__}: {e}") from None
    return torch.from_numpy(array.copy()).permute(2, 0, 1)


class FileImages:
    """Mixin of datasets read file by file: ``verify`` decodes every item (``check(i)``, by default
    loading it) and lists the files that fail."""

    def check(self, i: int) -> None:
        self[i]

    def verify(self, progress: bool = False) -> list[tuple[str, str]]:
        """``(path, reason)`` of every file that does not decode, in order."""
        from tqdm.auto import tqdm
        bad = []
        for i in tqdm(range(len(self)), desc="verify", unit="item", disable=not progress):
            try:
                self.check(i)
            except BadImageError as e:
                bad.append((e.path, e.reason))
        return bad


class ImageFolderDataset(FileImages, ImageDataset):
    """A folder of class sub-folders (``root/cls/x.jpg``), or a flat folder of unlabeled images.

    A file that does not decode is skipped under ``on_bad_image="skip"``: the
    sample is replaced by the next one that decodes (so batches keep their size
    and a resumed run sees the same data) and reported in the item's
    ``"skipped"`` list, which training writes to the run folder. Under
    ``"fail"`` it raises :class:`BadImageError` naming the file.
    """

    name = "imagefolder"

    def __init__(self, root: str, on_bad_image: str = "skip"):
        if on_bad_image not in BAD_IMAGE_POLICIES:
            raise ValueError(f"on_bad_image must be one of {BAD_IMAGE_POLICIES}, got {on_bad_image!r}")
        self.root, self.on_bad_image = Path(root), on_bad_image
        if not self.root.is_dir():
            raise DatasetNotFound(f"imagefolder: {self.root} is not a folder")
        subdirs = sorted(d.name for d in self.root.iterdir() if d.is_dir())
        if subdirs:
            self.class_names = subdirs
            self.samples = [(p, k) for k, d in enumerate(subdirs) for p in sorted((self.root / d).rglob("*"))
                            if p.suffix.lower() in IMAGE_SUFFIXES]
            self.num_classes = len(subdirs)
        else:
            self.samples = [(p, -1) for p in sorted(self.root.iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES]
        if not self.samples:
            raise DatasetNotFound(f"imagefolder: no images ({', '.join(IMAGE_SUFFIXES)}) under {self.root}")

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> dict:
        skipped = []
        for k in range(len(self.samples)):
            j = (i + k) % len(self.samples)
            path, label = self.samples[j]
            try:
                image = decode_image(path)
            except BadImageError as e:
                if self.on_bad_image == "fail":
                    raise BadImageError(e.path, f"{e.reason} (add --set on_bad_image=skip to skip bad "
                                                f"images and list them in the run folder)") from None
                skipped.append((e.path, e.reason))
                continue
            return {"image": image, "label": label, "index": i, "skipped": skipped}
        raise DatasetNotFound(f"imagefolder: none of the {len(self.samples)} images under {self.root} decodes")

    def check(self, i: int) -> None:
        decode_image(self.samples[i][0])  # the file itself: no stand-in
