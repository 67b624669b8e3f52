import numpy as np
import pytest
import torch
from PIL import Image

from conftest import require_data
from simlab import shapes
from simlab.data import FASHION_MNIST_DIR, DatasetNotFound, ImageFolderDataset, build_dataset


def test_shapes_is_deterministic_and_independent_of_batching():
    a = shapes.render(torch.arange(50), 32, seed=0)
    b = shapes.render(torch.arange(50), 32, seed=0)
    assert torch.equal(a.images, b.images) and torch.equal(a.masks, b.masks)
    single = shapes.render(torch.tensor([17]), 32, seed=0)
    assert torch.equal(single.images[0], a.images[17]) and torch.equal(single.masks[0], a.masks[17])
    c = shapes.render(torch.arange(50), 32, seed=1)
    assert not torch.equal(a.images, c.images)


def test_shapes_labels_masks_and_sizes():
    for size in (16, 32, 64):
        b = shapes.render(torch.arange(200), size)
        assert b.images.shape == (200, 3, size, size) and b.images.dtype == torch.uint8
        assert b.masks.shape == (200, size, size)
    b = shapes.render(torch.arange(1000), 32)
    assert torch.equal(torch.bincount(b.labels, minlength=10), torch.full((10,), 100))
    for i in range(len(b.labels)):
        values = set(b.masks[i].unique().tolist())
        assert values <= {0, int(b.labels[i]) + 1}  # without distractors only the object is labelled
    fg = (b.masks > 0).float().mean(dim=(1, 2))
    assert fg.min() > 0.01, "every object is visible in its mask"
    assert 0.08 < fg.mean() < 0.3
    # colour is no shortcut: mean image colour carries ~no class information
    means = b.images.float().mean(dim=(2, 3))
    per_class = torch.stack([means[b.labels == k].mean(0) for k in range(10)])
    assert per_class.std(0).max() < 12


def test_shapes_distractors_are_labelled_with_their_own_class():
    b = shapes.render(torch.arange(300), 32, distractors=3)
    extra = [set(b.masks[i].unique().tolist()) - {0, int(b.labels[i]) + 1} for i in range(300)]
    assert sum(bool(e) for e in extra) > 30
    assert all(max(e, default=0) <= 10 for e in extra)
    with pytest.raises(ValueError, match="distractors"):
        shapes.render(torch.arange(2), 32, distractors=5)


def test_raw_pixel_knn_stays_well_below_what_a_person_gets():
    from sklearn.neighbors import KNeighborsClassifier
    train = build_dataset("shapes", "train", size=3000).tensors()
    test = build_dataset("shapes", "test", size=600).tensors()
    x, y = train["images"].flatten(1).float(), train["labels"]
    knn = KNeighborsClassifier(20).fit(x.numpy(), y.numpy())
    acc = knn.score(test["images"].flatten(1).float().numpy(), test["labels"].numpy())
    assert 0.1 < acc < 0.4, acc


def test_dataset_items_and_splits():
    train = build_dataset("shapes", "train", size=20)
    test = build_dataset("shapes", "test", size=20)
    item = train[3]
    assert item["image"].shape == (3, 32, 32) and item["mask"].shape == (32, 32) and item["index"] == 3
    assert torch.equal(item["image"], train.tensors()["images"][3])
    assert not torch.equal(train[0]["image"], test[0]["image"])


def test_fashion_mnist_from_the_debian_package():
    require_data(FASHION_MNIST_DIR.exists(), "install it with 'sudo apt-get install dataset-fashion-mnist'")
    ds = build_dataset("fashion-mnist", "test")
    t = ds.tensors()
    assert t["images"].shape == (10000, 1, 28, 28) and t["images"].dtype == torch.uint8
    assert torch.equal(torch.bincount(t["labels"]), torch.full((10,), 1000))
    # masks: label + 1 exactly where the pixel is above the threshold
    fg = t["images"][:, 0] > 25
    assert torch.equal(t["masks"] > 0, fg)
    assert torch.equal(t["masks"][fg].long(), (t["labels"][:, None, None] + 1).expand_as(fg)[fg])
    assert ds.in_chans == 1 and len(ds.mean) == 1


def test_missing_dataset_names_the_place_and_the_remedy(tmp_path):
    with pytest.raises(DatasetNotFound, match=str(tmp_path)) as e:
        build_dataset("fashion-mnist", data_root=str(tmp_path))
    assert "apt-get install dataset-fashion-mnist" in str(e.value)
    with pytest.raises(DatasetNotFound, match=str(tmp_path)):
        build_dataset("cifar10", data_root=str(tmp_path))
    with pytest.raises(DatasetNotFound, match="not a folder"):
        build_dataset("imagefolder", data_root=str(tmp_path / "nope"))
    with pytest.raises(ValueError, match="unknown dataset"):
        build_dataset("imagenet21k")


def test_imagefolder_with_classes_and_flat(tmp_path):
    rng = np.random.default_rng(0)
    for cls in ("cat", "dog"):
        (tmp_path / "labelled" / cls).mkdir(parents=True)
        for k in range(2):
            Image.fromarray(rng.integers(0, 255, (20 + k, 30, 3), dtype=np.uint8)).save(
                tmp_path / "labelled" / cls / f"{k}.png")
    ds = ImageFolderDataset(str(tmp_path / "labelled"))
    assert len(ds) == 4 and ds.class_names == ["cat", "dog"] and ds.num_classes == 2
    assert [ds[i]["label"] for i in range(4)] == [0, 0, 1, 1]
    assert ds[1]["image"].shape == (3, 21, 30) and ds[1]["image"].dtype == torch.uint8
    flat = tmp_path / "flat"
    flat.mkdir()
    Image.fromarray(rng.integers(0, 255, (8, 8), dtype=np.uint8)).save(flat / "a.jpg")  # grey -> RGB
    ds = build_dataset("imagefolder", data_root=str(flat))
    assert ds[0]["label"] == -1 and ds[0]["image"].shape == (3, 8, 8)
