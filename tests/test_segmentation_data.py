"""Segmentation sets for the dense probe: Pascal VOC 2012 (through torchvision's loader) and ADE20K
(its release layout), on tiny fabricated folders of each layout."""

import numpy as np
import pytest
import torch
from PIL import Image

from simlab.config import apply_overrides
from simlab.data import IGNORE_LABEL, DatasetNotFound, build_dataset
from simlab.presets import preset
from simlab.probes import patch_labels, probe_checkpoint
from simlab.train import pretrain


def _scene(rng, h: int, w: int, classes: list[int], border: int = None) -> np.ndarray:
    """A mask of vertical bands of the given class values, with an optional border value between them."""
    mask = np.zeros((h, w), dtype=np.uint8)
    edges = np.linspace(0, w, len(classes) + 1).astype(int)
    for c, a, b in zip(classes, edges[:-1], edges[1:]):
        mask[:, a:b] = c
        if border is not None and a > 0:
            mask[:, a:a + 1] = border
    return mask


@pytest.fixture(scope="module")
def voc_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("voc")
    base = root / "VOCdevkit" / "VOC2012"
    for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (base / sub).mkdir(parents=True)
    rng = np.random.default_rng(0)
    names = {"train": [], "val": []}
    palette = rng.integers(0, 256, 768).tolist()
    for k in range(10):
        name = f"2012_{k:06d}"
        h, w = 30 + 2 * k, 40 - k
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(base / "JPEGImages" / f"{name}.jpg")
        mask = Image.fromarray(_scene(rng, h, w, [0, 1 + k % 3, 1 + k % 3, 15], border=255), mode="P")
        mask.putpalette(palette)
        mask.save(base / "SegmentationClass" / f"{name}.png")
        names["train" if k < 6 else "val"].append(name)
    for split, items in names.items():
        (base / "ImageSets" / "Segmentation" / f"{split}.txt").write_text("\n".join(items) + "\n")
    return root


@pytest.fixture(scope="module")
def ade_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("ade") / "ADEChallengeData2016"
    rng = np.random.default_rng(1)
    for sub, n in (("training", 6), ("validation", 4)):
        (root / "images" / sub).mkdir(parents=True)
        (root / "annotations" / sub).mkdir(parents=True)
        for k in range(n):
            name = f"ADE_{sub[:5]}_{k:08d}"
            Image.fromarray(rng.integers(0, 256, (36, 44, 3), dtype=np.uint8)).save(root / "images" / sub / f"{name}.jpg")
            Image.fromarray(_scene(rng, 36, 44, [0, 3 + k % 2, 150])).save(root / "annotations" / sub / f"{name}.png")
    return root


def test_voc_items_follow_the_mask_convention(voc_root):
    train, val = build_dataset("voc", "train", str(voc_root)), build_dataset("voc", "test", str(voc_root))
    assert (len(train), len(val), train.num_classes) == (6, 4, 20) and train.has_masks
    item = train[1]
    assert item["image"].shape == (3, 32, 39) and item["mask"].shape == (32, 39)
    assert set(item["mask"].unique().tolist()) == {0, 2, 15, IGNORE_LABEL}  # VOC's values kept as they are
    assert item["label"] == 1  # dominant object: value 2 covers half the image -> class 1 ("bicycle")
    assert train.class_names[item["label"]] == "bicycle"


def test_ade20k_items_follow_the_mask_convention(ade_root):
    for root in (ade_root, ade_root.parent):  # the release folder itself, or the folder holding it
        train = build_dataset("ade20k", "train", str(root))
        assert len(train) == 6 and len(build_dataset("ade20k", "test", str(root))) == 4
    item = train[0]
    assert set(item["mask"].unique().tolist()) == {3, 150, IGNORE_LABEL}  # "other" (0) is not scored
    assert train.num_classes == 150


def test_verify_data_checks_images_and_masks(voc_root, tmp_path, capsys):
    from simlab.cli import main
    assert main(["verify-data", "--dataset", "voc", "--data-root", str(voc_root), "--quiet"]) == 0
    assert "6 files, 0 bad" in capsys.readouterr().out
    import shutil
    copy = tmp_path / "voc"
    shutil.copytree(voc_root, copy)
    mask = next((copy / "VOCdevkit" / "VOC2012" / "SegmentationClass").glob("*000002.png"))
    mask.write_bytes(mask.read_bytes()[:20])  # a cut mask
    assert main(["verify-data", "--dataset", "voc", "--data-root", str(copy), "--quiet"]) == 1
    out = capsys.readouterr().out
    assert f"bad: {mask}" in out and "6 files, 1 bad" in out


def test_missing_layouts_raise_a_clear_error(tmp_path):
    with pytest.raises(DatasetNotFound, match="VOCdevkit"):
        build_dataset("voc", "train", str(tmp_path))
    with pytest.raises(DatasetNotFound, match="annotations"):
        build_dataset("ade20k", "train", str(tmp_path))


def test_patch_labels_ignore_unscored_pixels():
    masks = torch.tensor([[[255, 255, 3, 3],
                           [255, 1, 3, 255],
                           [255, 255, 0, 0],
                           [255, 255, 0, 2]]], dtype=torch.uint8)
    # 2x2 patches: top-left has one scored pixel (1); top-right 3 wins; bottom-left is all ignored;
    # bottom-right has 0, 0, 0, 2 -> 0
    assert patch_labels(masks, 2).tolist() == [[1, 3, IGNORE_LABEL, 0]]


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    run = tmp_path_factory.mktemp("run")
    return pretrain(apply_overrides(preset("tiny"), ["steps=2"]), run, log=lambda *_: None)


@pytest.mark.parametrize("name", ["voc", "ade20k"])
def test_the_dense_probe_runs_on_each_layout(name, voc_root, ade_root, tiny_checkpoint):
    root = voc_root if name == "voc" else ade_root
    res = probe_checkpoint(tiny_checkpoint, train_size=6, test_size=4, dataset=name, data_root=str(root))
    assert res["dataset"] == name and 0.0 <= res["class_miou"] <= 1.0
    assert ("fg_bg_miou" in res) == (name == "voc")  # ADE20K has no background class
