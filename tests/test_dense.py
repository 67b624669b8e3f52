"""The dense evidence of a trained SiM: the decoder beside its floors, computed independently here."""

import pytest
import torch

from simlab.checkpoint import list_checkpoints
from simlab.config import apply_overrides
from simlab.data import build_dataset
from simlab.dense import (CONTENT_BLIND, READOUT, VISIBLE, dense_evidence, dense_pair, geometric_matches,
                          load_sim_model)
from simlab.loss import sim_loss
from simlab.presets import preset
from simlab.train import pretrain
from simlab.views import relative_coords


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


def test_matched_tokens_are_the_online_tokens_of_the_visible_view1_patch_under_each_view2_patch(tiny_model):
    test = build_dataset("shapes", "test", image_size=16, size=12)
    pair = dense_pair(tiny_model, test.tensors()["images"], torch.arange(12), test.mean, test.std)
    latent = tiny_model.forward_online(pair.view1, pair.mask)[:, 1:]  # visible tokens in grid order
    cells = geometric_matches(relative_coords(pair.geom1, pair.geom2, tiny_model.cfg.grid), tiny_model.cfg.grid)
    checked = 0
    for b in range(12):
        visible_cells = [i for i in range(pair.mask.shape[1]) if not pair.mask[b, i]]
        for n in range(pair.mask.shape[1]):
            if pair.regions[b, n] == VISIBLE:
                expected = latent[b, visible_cells.index(int(cells[b, n]))]
                checked += 1
            else:
                expected = torch.zeros_like(pair.matched[b, n])
            assert torch.allclose(pair.matched[b, n], expected, atol=1e-5)
    assert checked > 0


def test_dense_evidence_scores_the_matched_readout_beside_the_decoder(tiny_model):
    test = build_dataset("shapes", "test", image_size=16, size=24)
    train = build_dataset("shapes", "train", image_size=16, size=40)
    _, ev = dense_evidence(tiny_model, test.tensors()["images"], torch.arange(24), train.tensors()["images"],
                           torch.arange(40), test.mean, test.std)
    readout, decoder = ev["predictions"][READOUT], ev["predictions"]["decoder"]
    assert {k: readout[k]["patches"] for k in readout} == {k: decoder[k]["patches"] for k in decoder}
    assert all(readout[k]["loss"] > 0 for k in readout)
