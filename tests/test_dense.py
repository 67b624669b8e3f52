"""The dense evidence of a trained SiM: the decoder beside its floors, computed independently here."""

import pytest
import torch

from simlab.checkpoint import list_checkpoints
from simlab.config import apply_overrides
from simlab.data import build_dataset
from simlab.dense import CONTENT_BLIND, dense_evidence, dense_pair, load_sim_model
from simlab.loss import sim_loss
from simlab.presets import preset
from simlab.train import pretrain


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    run = tmp_path_factory.mktemp("dense") / "run"
    pretrain(apply_overrides(preset("tiny"), ["steps=6"]).validate(), run, log=lambda *_: None)
    return load_sim_model(list_checkpoints(run)[-1])


def test_dense_evidence_scores_the_decoder_and_its_floors_like_the_naive_rules(tiny_model):
    test = build_dataset("shapes", "test", image_size=16, size=24)
    train = build_dataset("shapes", "train", image_size=16, size=40)
    images, fit_images = test.tensors()["images"], train.tensors()["images"]
    pair, ev = dense_evidence(tiny_model, images, torch.arange(24), fit_images, torch.arange(40),
                              test.mean, test.std)
    lam = tiny_model.cfg.model.neg_weight
    # the decoder's overall numbers are the training loss on these pairs
    loss, stats = sim_loss(pair.pred, pair.target, lam)
    assert ev["predictions"]["decoder"]["all"]["loss"] == pytest.approx(float(loss), rel=1e-5)
    # the content-blind rule: a hand-built per-position mean of the *other* images' targets
    fit = dense_pair(tiny_model, fit_images, torch.arange(40), test.mean, test.std)
    means = torch.stack([fit.target[:, n].mean(0) for n in range(fit.target.shape[1])])
    blind = means[None].expand_as(pair.target)
    cos = torch.nn.functional.cosine_similarity(blind, pair.target, dim=-1).mean()
    assert ev["predictions"][CONTENT_BLIND]["all"]["cosine"] == pytest.approx(float(cos), rel=1e-4)
    assert ev["predictions"][CONTENT_BLIND]["all"]["loss"] == pytest.approx(float(sim_loss(blind, pair.target, lam)[0]),
                                                                           rel=1e-4)
    # regions partition the patches
    regions = ev["predictions"]["decoder"]
    assert sum(regions[r]["patches"] for r in ("visible", "masked", "outside")) == regions["all"]["patches"]
    c = ev["correspondences"]
    for key in ("encoder", "random-init encoder", "same grid index", "random patch"):
        assert 0.0 <= c[key] <= 1.0
    for shares in ev["decomposition"].values():
        assert sum(shares.values()) == pytest.approx(1.0, abs=1e-4)
    # the random-init floor is a fixed function of its seed
    _, again = dense_evidence(tiny_model, images, torch.arange(24), fit_images, torch.arange(40), test.mean, test.std)
    assert again["correspondences"] == c
