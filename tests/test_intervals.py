"""Intervals over seeds and test images: per-image scores reproduce every probe's own number, and the
bootstrap widens with each source of spread it covers."""

import numpy as np
import torch

from simlab.dense_probe import dense_probe
from simlab.global_probes import global_probes
from simlab.intervals import bootstrap, example_scores, metrics
from simlab.segmentation import IGNORE_LABEL


def _probed(seed=0, n_train=300, n_test=120, n_patches=16, d=12):
    g = torch.Generator().manual_seed(seed)
    ytr, yte = torch.randint(0, 4, (n_train,), generator=g), torch.randint(0, 4, (n_test,), generator=g)
    centres = torch.randn(4, d, generator=g)
    ftr = centres[ytr] + 1.5 * torch.randn(n_train, d, generator=g)
    fte = centres[yte] + 1.5 * torch.randn(n_test, d, generator=g)
    # dense: patch labels 0 (background) to 3, tokens that carry them noisily, some patches unscored
    dtr = torch.randint(0, 4, (n_train // 4, n_patches), generator=g)
    dte = torch.randint(0, 4, (n_test, n_patches), generator=g)
    dte[:5, :3] = IGNORE_LABEL
    ttr = torch.nn.functional.one_hot(dtr, 4).float() * 2 + torch.randn(*dtr.shape, 4, generator=g)
    tte = torch.nn.functional.one_hot(dte.clamp(min=0) % 4, 4).float() * 2 + torch.randn(*dte.shape, 4, generator=g)
    preds = {}
    numbers = global_probes(ftr, fte, ytr, yte, predictions=preds)
    numbers.update(dense_probe(ttr, dtr, tte, dte, predictions=preds))
    return numbers, example_scores(preds, yte.numpy(), dte.numpy())


def test_per_image_scores_reproduce_every_probe_number_exactly():
    numbers, scores = _probed()
    for key, value in metrics(scores).items():
        assert abs(value - numbers[key]) < 1e-12, key
    assert set(metrics(scores)) == {"knn", "linear", "few_shot_5", "fg_bg_miou", "fg_iou", "class_miou"}


def test_weights_are_a_resample_of_test_images():
    _, scores = _probed()
    twice = np.full(len(scores["knn"]), 2.0)  # every image drawn twice: the same numbers
    assert metrics(scores, twice) == metrics(scores)
    only = np.zeros(len(scores["knn"]))
    only[:10] = 1  # the first ten images alone
    assert metrics(scores, only)["knn"] == scores["knn"][:10].mean()


def test_the_bootstrap_covers_the_estimate_and_widens_with_seed_spread():
    _, a = _probed(seed=0)
    _, b = _probed(seed=1)
    width = lambda iv, k: iv[k][1] - iv[k][0]  # noqa: E731
    one = bootstrap([a], draws=300)
    for key, value in metrics(a).items():
        assert one[key][0] <= value <= one[key][1], key
        assert width(one, key) > 0, key  # a finite test split alone leaves an interval
    # seeds that disagree: the two-level interval is wider than either seed's test-only interval
    far = {k: (v * 0 if not isinstance(v, tuple) else v) for k, v in b.items()}  # a seed scoring 0 on every global probe
    both = bootstrap([a, far], draws=300)
    assert width(both, "knn") > 2 * width(one, "knn")
    assert both["knn"][0] < metrics(a)["knn"] / 2 < both["knn"][1]
    assert bootstrap([a], draws=200, seed=3) == bootstrap([a], draws=200, seed=3)  # reproducible


def test_a_difference_interval_excludes_zero_only_when_the_rows_differ():
    from simlab.intervals import difference
    _, a = _probed(seed=0)
    _, b = _probed(seed=1)
    same = difference([a, b], [a, b], draws=200)
    for key, (diff, low, high) in same.items():
        assert diff == 0.0 and low <= 0.0 <= high, key
    # a row that scores 0 on every global probe is below by the whole accuracy, and the interval knows it
    zero = {k: (v * 0 if not isinstance(v, tuple) else v) for k, v in a.items()}
    gap = difference([a], [zero], draws=200)
    assert abs(gap["knn"][0] - metrics(a)["knn"]) < 1e-12 and gap["knn"][1] > 0
    assert gap["fg_bg_miou"][0] == 0.0  # the dense scores were left alone
