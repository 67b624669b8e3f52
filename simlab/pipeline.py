"""Pretraining batches: which samples each step sees, and their two views and masks.

Step ``s`` of a run belongs to epoch ``s // steps_per_epoch``; each epoch is a
permutation keyed by ``(seed, epoch)``, cut into full batches (the remainder
is dropped). A batch's views and masks are keyed per sample by
``(seed, epoch, index)``. So a run can start at any step and see exactly what
an uninterrupted run saw there, whatever the number of data workers
(DESIGN.md "Randomness and determinism").
"""

from __future__ import annotations

import dataclasses
from typing import Iterator

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from .config import Config
from .data import ImageDataset, ShapesDataset, build_dataset
from .masking import keyed_masks
from .seeding import key_generator, sample_keys
from .views import TwoViewTransform, image_sizes


def build_pretrain_dataset(cfg: Config, split: str = "train") -> ImageDataset:
    d = cfg.data
    return build_dataset(d.dataset, split, d.data_root, image_size=d.image_size, size=d.train_size,
                         seed=cfg.seed, download=d.download, distractors=d.distractors,
                         on_bad_image=d.on_bad_image)


def epoch_permutation(n: int, seed: int, epoch: int) -> torch.Tensor:
    key = sample_keys(seed, epoch, 0, stream=0x5EED)
    return torch.randperm(n, generator=key_generator(key))


class StepBatches(Sampler):
    """Yields ``(step, epoch, indices)`` for steps ``start .. total - 1``: this rank's share of each global batch."""

    def __init__(self, num_samples: int, batch_size: int, seed: int, total_steps: int, start_step: int = 0,
                 rank: int = 0, world: int = 1):
        if batch_size > num_samples:
            raise ValueError(f"batch_size={batch_size} exceeds the {num_samples} training samples")
        if batch_size % world:
            raise ValueError(f"batch_size={batch_size} does not split over {world} ranks")
        self.n, self.bs, self.seed = num_samples, batch_size, seed
        self.total, self.start = total_steps, start_step
        self.steps_per_epoch = num_samples // batch_size
        # each rank takes its contiguous share of the *global* batch, so the samples a step
        # sees (and, keyed by index, their views and masks) do not depend on the rank count
        self.local = batch_size // world
        self.offset = rank * self.local

    def __len__(self) -> int:
        return self.total - self.start

    def __iter__(self) -> Iterator[tuple[int, int, torch.Tensor]]:
        perm, perm_epoch = None, None
        for step in range(self.start, self.total):
            epoch, k = divmod(step, self.steps_per_epoch)
            if epoch != perm_epoch:
                perm, perm_epoch = epoch_permutation(self.n, self.seed, epoch), epoch
            first = k * self.bs + self.offset
            yield step, epoch, perm[first:first + self.local]


def objective_inputs(cfg: Config) -> tuple:
    """(augmentation, mask kind, masked count) of the configured objective.

    SiM uses the configured augmentation and mask. MAE sees crop and flip only
    (no photometric change) and a uniformly random mask of ``mae_mask_ratio``.
    ID sees SiM's augmentation and no mask.
    """
    if cfg.train.objective == "mae":
        aug = dataclasses.replace(cfg.aug, jitter_p=0.0, grayscale_p=0.0, blur_p=(0.0, 0.0), solarize_p=(0.0, 0.0))
        return aug, "random", round(cfg.model.mae_mask_ratio * cfg.grid ** 2)
    if cfg.train.objective == "id":
        return cfg.aug, "random", 0  # both views whole: nothing is masked
    return cfg.aug, cfg.model.mask_kind, cfg.model.num_masked


class TwoViewBatches(Dataset):
    """Maps ``(step, epoch, indices)`` to a batch dict of two views, their geometry and view-1 masks.

    With ``augment=False`` (device-side augmentation) the batch carries the uint8 ``images`` and
    the sampled boxes instead of the views; :func:`device_views` finishes it on the training device.
    """

    def __init__(self, dataset: ImageDataset, cfg: Config, augment: bool = True):
        self.dataset, self.cfg, self.augment = dataset, cfg, augment
        aug, self.mask_kind, self.num_masked = objective_inputs(cfg)
        self.transform = TwoViewTransform(aug, cfg.data.image_size, dataset.mean, dataset.std, seed=cfg.seed)
        self.grid = cfg.grid

    def images(self, indices: torch.Tensor) -> tuple:
        """(uint8 batch or list of images, [(path, reason) of files skipped on the way])."""
        ds = self.dataset
        if isinstance(ds, ShapesDataset) and ds._cache is None:
            return ds.render(indices).images, []  # rendered on the fly, in this worker
        try:
            return ds.tensors()["images"][indices], []
        except NotImplementedError:  # images of different sizes: a list
            items = [ds[int(i)] for i in indices]
            return [it["image"] for it in items], [s for it in items for s in it.get("skipped", ())]

    def __getitem__(self, item: tuple[int, int, torch.Tensor]) -> dict:
        step, epoch, indices = item
        images, skipped = self.images(indices)
        mask = keyed_masks(self.cfg.seed, epoch, indices, self.grid, self.num_masked, self.mask_kind)
        common = {"mask": mask, "index": indices, "step": step, "epoch": epoch, "skipped": skipped}
        if not self.augment:
            geom1, geom2 = self.transform.geometry(indices, epoch, image_sizes(images))
            return {"images": images, "geom1": geom1, "geom2": geom2, **common}
        views = self.transform(images, indices, epoch)
        return {"view1": views.view1, "view2": views.view2, "geom1": views.geom1, "geom2": views.geom2, **common}

    def __len__(self) -> int:  # the sampler decides
        return 0


def augment_on_device(cfg: Config, device: torch.device) -> bool:
    """Whether the views are made on the training device (``augment_on``; auto: on CUDA)."""
    where = cfg.data.augment_on
    return where == "device" or (where == "auto" and device.type == "cuda")


def device_views(batch: dict, transform: TwoViewTransform, device: torch.device) -> dict:
    """Finish a batch of uint8 ``images`` (from ``TwoViewBatches(augment=False)``) on ``device``:
    crop, colour and normalise both views there, with the boxes the loader sampled. The keyed
    photometric draws are computed from the indices on the host (a few numbers per sample)."""
    images = batch.pop("images")
    images = (images.to(device, non_blocking=True) if isinstance(images, torch.Tensor)
              else [im.to(device, non_blocking=True) for im in images])
    views = transform(images, batch["index"], batch["epoch"], geoms=(batch["geom1"], batch["geom2"]))
    batch["view1"], batch["view2"] = views.view1, views.view2
    return batch


_RENDER_ONCE = 200_000  # shapes pools up to this size are rendered once (<= 600 MB at 32 px)


def pretrain_loader(dataset: ImageDataset, cfg: Config, total_steps: int, start_step: int = 0,
                    pin_memory: bool = False, rank: int = 0, world: int = 1, augment: bool = True) -> DataLoader:
    if isinstance(dataset, ShapesDataset) and len(dataset) <= _RENDER_ONCE:
        dataset.tensors()  # render the pool once, before workers fork and share it
    sampler = StepBatches(len(dataset), cfg.train.batch_size, cfg.seed, total_steps, start_step, rank, world)
    workers = cfg.data.num_workers
    return DataLoader(TwoViewBatches(dataset, cfg, augment), batch_size=None, sampler=sampler, num_workers=workers,
                      pin_memory=pin_memory, persistent_workers=False,
                      prefetch_factor=4 if workers > 0 else None,
                      worker_init_fn=ignore_sigint if workers > 0 else None)


def ignore_sigint(_worker_id: int = 0) -> None:
    """A data worker's ``worker_init_fn``: Ctrl-C reaches a terminal's whole process group, but the
    main process decides what it means (save the last finished step, then stop); a worker that died
    of it would instead fail the batch the main process is still waiting for. Workers end when the
    main process stops iterating, or with it."""
    import signal
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def move_batch(batch: dict, device: torch.device) -> dict:
    out = {}
    for k, v in batch.items():
        if isinstance(v, torch.Tensor):
            out[k] = v.to(device, non_blocking=True)
        elif hasattr(v, "_fields"):  # ViewGeometry
            out[k] = type(v)(*(t.to(device, non_blocking=True) for t in v))
        else:
            out[k] = v
    return out


def split_batch(batch: dict, parts: int) -> list[dict]:
    """A batch cut into ``parts`` equal micro-batches along the sample dimension (gradient accumulation)."""
    if parts == 1:
        return [batch]
    n = batch["view1"].shape[0]
    size = n // parts
    out = []
    for i in range(parts):
        sl = slice(i * size, (i + 1) * size)
        micro = {}
        for k, v in batch.items():
            if isinstance(v, torch.Tensor) and v.dim() > 0 and v.shape[0] == n:
                micro[k] = v[sl]
            elif hasattr(v, "_fields"):  # ViewGeometry
                micro[k] = type(v)(*(t[sl] for t in v))
            else:
                micro[k] = v
        out.append(micro)
    return out
