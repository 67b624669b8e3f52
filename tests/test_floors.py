"""The floors against independent computations: hand-built means, the naive loss, brute-force counts."""

import json

import numpy as np
import pytest
import torch

from simlab.floors import (MatchedReadout, PositionMean, image_mean_prediction, position_plus_image_prediction,
                           random_patch_agreement, rankme, same_index_matches, score_by_region, variance_shares)
from simlab.loss import sim_loss


def test_content_blind_predictor_is_the_per_position_mean_of_other_images():
    g = torch.Generator().manual_seed(0)
    fit = torch.randn(7, 5, 4, generator=g)
    pm = PositionMean.fit(fit, neg_weight=0.1)
    for n in range(5):  # a hand-built mean over the fitting images, position by position
        manual = sum(fit[b, n] for b in range(7)) / 7
        assert torch.allclose(pm.means[n], manual, atol=1e-6)
    pred = pm.predict(3)
    assert pred.shape == (3, 5, 4) and torch.equal(pred[0], pred[2])  # the same for every image
    # the shrunk version minimises mean |p - z|^2 + lambda p^T F p on the fitting set: zero gradient
    corr = torch.einsum("bnd,bne->de", fit, fit) / (7 * 5)
    for n in range(5):
        p = pm.shrunk[n]
        grad = 2 * (p - fit[:, n].mean(0)) + 2 * 0.1 * corr @ p
        assert grad.abs().max() < 1e-5


def test_matched_readout_recovers_a_linear_content_code_and_is_the_shrunk_position_mean_elsewhere():
    g = torch.Generator().manual_seed(2)
    B, N, Din, D = 4000, 6, 5, 4  # enough images that the position means carry little of the content
    W = torch.randn(Din, D, generator=g)

    def pairs(b):  # targets: a position code plus a linear function of the matched token, where it is visible
        tokens = torch.randn(b, N, Din, generator=g)
        visible = torch.rand(b, N, generator=g) < 0.6
        code = torch.randn(N, D, generator=torch.Generator().manual_seed(9))
        return tokens, visible, code[None] + (tokens @ W) * visible[..., None] + 0.01 * torch.randn(b, N, D, generator=g)
    tokens, visible, targets = pairs(B)
    lam = 0.05
    pm = PositionMean.fit(targets, lam)
    readout = MatchedReadout.fit(tokens, visible, targets, pm, ridge=1e-3)
    test_tokens, test_visible, test_targets = pairs(20)
    pred = readout.predict(test_tokens, test_visible)
    shrink = torch.linalg.inv(torch.eye(D) + lam * torch.einsum("bnd,bne->de", targets, targets) / (B * N))
    # a hand-built prediction: (position mean + token W' + bias) shrunk, the shrunk position mean where not visible
    x = torch.cat([test_tokens, torch.ones(20, N, 1)], -1)
    manual = (pm.means[None] + (x @ readout.weight) * test_visible[..., None]) @ shrink.T
    assert torch.allclose(pred, manual, atol=1e-5)
    assert torch.allclose(pred[~test_visible], pm.shrunk[None].expand(20, N, D)[~test_visible], atol=1e-5)
    # it learned the content: unshrunk, its visible predictions are the targets up to the noise
    unshrunk = pred @ torch.linalg.inv(shrink.T)
    assert (unshrunk - test_targets)[test_visible].abs().max() < 0.1
    regions = (~test_visible).long()
    ours = score_by_region(pred, test_targets, regions, lam, ("visible", "other"))["visible"]["loss"]
    blind = score_by_region(pm.predict(20, shrunk=True), test_targets, regions, lam, ("visible", "other"))
    assert ours < 0.5 * blind["visible"]["loss"]


def test_oracles_read_the_scored_targets():
    g = torch.Generator().manual_seed(1)
    target = torch.randn(3, 6, 4, generator=g)
    im = image_mean_prediction(target)
    assert torch.allclose(im[1, 4], target[1].mean(0), atol=1e-6)
    pm = PositionMean.fit(torch.randn(9, 6, 4, generator=g), 0.02)
    both = position_plus_image_prediction(target, pm)
    assert torch.allclose(both[2, 3], pm.means[3] + target[2].mean(0) - pm.means.mean(0), atol=1e-6)


def test_scores_by_region_match_the_naive_loss_token_by_token():
    g = torch.Generator().manual_seed(2)
    pred, target = torch.randn(4, 9, 8, generator=g), torch.randn(4, 9, 8, generator=g)
    regions = torch.randint(0, 3, (4, 9), generator=g)
    regions[0, 0] = 2  # every region present
    scores = score_by_region(pred, target, regions, 0.05, ("visible", "masked", "outside"))
    loss, stats = sim_loss(pred, target, 0.05)
    assert scores["all"]["loss"] == pytest.approx(float(loss), rel=1e-5)
    assert scores["all"]["pos"] == pytest.approx(float(stats["pos"]), rel=1e-5)
    # naive: F over all tokens, each token's terms written out, averaged within the region
    z = target.reshape(-1, 8)
    F = sum(torch.outer(t, t) for t in z) / len(z)
    for code, name in enumerate(("visible", "masked", "outside")):
        toks = [(pred[b, n], target[b, n]) for b in range(4) for n in range(9) if regions[b, n] == code]
        pos = np.mean([float(((p - t) ** 2).sum()) / 8 for p, t in toks])
        neg = np.mean([float(p @ F @ p) / 8 for p, _ in toks])
        cos = np.mean([float(p @ t / (p.norm() * t.norm())) for p, t in toks])
        s = scores[name]
        assert (s["pos"], s["neg"], s["cosine"]) == pytest.approx((pos, neg, cos), rel=1e-4)
        assert s["loss"] == pytest.approx(pos + 0.05 * neg, rel=1e-4) and s["patches"] == len(toks)


def test_variance_shares_on_targets_built_to_be_positional_per_image_or_noise():
    g = torch.Generator().manual_seed(3)
    B, N, D = 256, 64, 16
    per_position = torch.randn(1, N, D, generator=g).expand(B, N, D)
    per_image = torch.randn(B, 1, D, generator=g).expand(B, N, D)
    noise = torch.randn(B, N, D, generator=g)
    s = variance_shares(per_position)
    assert s["position"] == pytest.approx(1.0, abs=1e-5) and s["image"] < 1e-5
    s = variance_shares(per_image)
    assert s["image"] == pytest.approx(1.0, abs=1e-5) and s["position"] < 1e-5
    s = variance_shares(noise)  # chance levels: about (N - 1) / (B N) and 1 / N
    assert s["position"] < 0.01 and s["image"] < 0.03 and s["rest"] > 0.96
    mix = variance_shares(per_position + per_image + noise)
    assert sum(mix.values()) == pytest.approx(1.0) and min(mix.values()) > 0.2


def test_rankme_counts_directions():
    assert rankme(torch.eye(32)) == pytest.approx(32, rel=1e-3)
    line = torch.randn(100, 1) * torch.randn(1, 32)
    assert rankme(line) == pytest.approx(1.0, abs=0.01)


def test_random_patch_agreement_is_the_exact_share_of_nearby_patches():
    grid = 5
    g = torch.Generator().manual_seed(4)
    geometric = torch.randint(-1, grid * grid, (6, 25), generator=g)
    expected = []  # brute force: every view-1 patch, is it within one patch of the truth?
    for t in geometric[geometric >= 0].tolist():
        near = [m for m in range(grid * grid) if max(abs(m // grid - t // grid), abs(m % grid - t % grid)) <= 1]
        expected.append(len(near) / grid ** 2)
    assert random_patch_agreement(geometric, grid) == pytest.approx(float(np.mean(expected)))


def test_same_index_rule_is_right_exactly_when_the_crops_coincide():
    from simlab.dense import geometric_matches, match_agreement
    from simlab.views import ViewGeometry, relative_coords
    f = lambda *v: torch.tensor(v, dtype=torch.float32)  # noqa: E731
    same = ViewGeometry(f(0.0), f(0.0), f(32.0), f(32.0), torch.tensor([False]))
    shifted = ViewGeometry(f(8.0), f(0.0), f(32.0), f(32.0), torch.tensor([False]))  # two patches down
    grid = 8
    rule = same_index_matches(1, grid * grid)
    truth = geometric_matches(relative_coords(same, same, grid), grid)
    assert match_agreement(truth, rule, grid, tolerance=0) == 1.0
    truth = geometric_matches(relative_coords(same, shifted, grid), grid)
    assert match_agreement(truth, rule, grid, tolerance=1) == 0.0


def test_dense_probe_floors_against_hand_counts():
    from simlab.probes import constant_label_scores, dense_probe
    # labels that depend on position only: the position-only probe gets them all
    n = 16
    layout = torch.tensor([0] * 10 + [3] * 6)
    labels = layout.expand(20, n)
    onehot = torch.eye(n)[None].expand(20, n, n).contiguous()
    res = dense_probe(onehot, labels, onehot, labels)
    assert res["fg_bg_miou"] == pytest.approx(1.0) and res["class_miou"] == pytest.approx(1.0)
    # the constant rule: background everywhere
    ytr = torch.tensor([[0, 0, 0, 1], [0, 0, 2, 2]])
    yte = torch.tensor([[0, 1, 1, 0], [0, 0, 0, 2]])
    res = constant_label_scores(ytr, yte)
    bg = 5 / 8  # IoU of background: 5 true background of 8 patches, all predicted background
    assert res["label"] == 0 and res["fg_iou"] == 0.0
    assert res["fg_bg_miou"] == pytest.approx(bg / 2)
    assert res["class_miou"] == pytest.approx(bg / 3)  # classes 0, 1, 2 seen; 1 and 2 score 0


def test_metrics_log_carries_the_decomposition(tmp_path):
    from simlab.config import apply_overrides
    from simlab.presets import preset
    from simlab.train import pretrain
    cfg = apply_overrides(preset("tiny"), ["steps=5", "log_every=5"]).validate()
    pretrain(cfg, tmp_path / "run", log=lambda *_: None)
    record = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[-1])
    for who in ("target", "encoder"):
        shares = [record[f"{who}_var_{k}"] for k in ("position", "image", "rest")]
        assert all(0.0 <= s <= 1.0 for s in shares) and sum(shares) == pytest.approx(1.0, abs=1e-4)
    assert 1.0 <= record["encoder_rankme"] <= cfg.model.embed_dim
