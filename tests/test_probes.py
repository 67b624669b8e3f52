"""Probes against references (a plain k-NN, scikit-learn), and through the command line."""

import json

import numpy as np
import torch

from simlab.checkpoint import list_checkpoints, sha256_of
from simlab.cli import main
from simlab.probes import few_shot, iou_scores, knn_accuracy, patch_labels


def test_cli_probe_reports_every_number_with_its_settings(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["pretrain", "--preset", "tiny", "--out", str(run), "--steps", "4"]) == 0
    ckpt = list_checkpoints(run)[-1]
    capsys.readouterr()
    out = tmp_path / "probe.json"
    assert main(["probe", "--checkpoint", str(ckpt), "--train-size", "200", "--test-size", "100",
                 "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    printed = capsys.readouterr()
    # the terminal gets a table with every number beside its floor, and progress on stderr
    assert "chance" in printed.out and "position only" in printed.out and "same grid index" in printed.out
    assert "dense probe" in printed.err and "k-NN" in printed.err
    assert res["sha256"] == sha256_of(ckpt) and res["dataset"] == "shapes"
    floors = res["floors"]
    assert 0.0 < floors["chance"]["accuracy"] <= 1.0
    assert set(floors) == {"chance", "position only", "all background"}
    # a SiM checkpoint's decoder is scored beside its content-blind floor
    preds = res["dense_evidence"]["predictions"]
    assert {"decoder", "position mean (content-blind)", "image mean (oracle)"} <= set(preds)
    assert all(r == round(r, 6) for r in (res["knn"], res["linear"]))
    assert (res["train_size"], res["test_size"], res["encoder"]) == (200, 100, "pretrained")
    for key in ("knn", "linear", "few_shot_1", "few_shot_5", "few_shot_10", "fg_bg_miou", "fg_iou", "class_miou"):
        assert 0.0 <= res[key] <= 1.0, key
    capsys.readouterr()
    assert main(["probe", "--checkpoint", str(ckpt), "--train-size", "200", "--test-size", "100",
                 "--random-init", "0", "--json"]) == 0
    rand = json.loads(capsys.readouterr().out)
    assert rand["encoder"] == "random-init" and rand["random_init_seed"] == 0
    assert rand["train_size"] == 200
    numbers = lambda r: (r["knn"], r["linear"], r["fg_bg_miou"], r["class_miou"])
    assert numbers(rand) != numbers(res)  # a different encoder was probed
    capsys.readouterr()
    assert main(["probe", "--checkpoint", str(ckpt), "--train-size", "200", "--test-size", "100",
                 "--pool", "cls", "--json"]) == 0
    cls = json.loads(capsys.readouterr().out)
    assert cls["pool"] == "cls" and res["pool"] == "mean"
    # the cls token is another global feature; the dense probe reads patch tokens either way
    assert (cls["knn"], cls["linear"]) != (res["knn"], res["linear"])
    assert (cls["fg_bg_miou"], cls["class_miou"]) == (res["fg_bg_miou"], res["class_miou"])


def plain_weighted_knn(train, train_y, test, k, T):
    """DINO's rule written out one test sample at a time."""
    train = train / train.norm(dim=1, keepdim=True)
    test = test / test.norm(dim=1, keepdim=True)
    preds = []
    for row in test:
        sims = train @ row
        top = sims.topk(k)
        votes = {}
        for s, i in zip(top.values.tolist(), top.indices.tolist()):
            votes[int(train_y[i])] = votes.get(int(train_y[i]), 0.0) + float(np.exp(s / T))
        preds.append(max(sorted(votes), key=lambda c: votes[c]))
    return preds


def test_knn_matches_a_plain_implementation_in_any_chunking():
    g = torch.Generator().manual_seed(0)
    centres = torch.randn(5, 16, generator=g)
    train_y = torch.randint(0, 5, (300,), generator=g)
    test_y = torch.randint(0, 5, (70,), generator=g)
    train = centres[train_y] + 1.5 * torch.randn(300, 16, generator=g)
    test = centres[test_y] + 1.5 * torch.randn(70, 16, generator=g)
    preds = plain_weighted_knn(train.double(), train_y, test.double(), 20, 0.07)
    expected = float(np.mean(np.array(preds) == test_y.numpy()))
    assert 0.3 < expected < 1.0  # a non-trivial problem
    for chunk in (7, 64, 1024):
        assert knn_accuracy(train, train_y, test, test_y, k=20, temperature=0.07, chunk=chunk) == expected


def test_knn_with_uniform_votes_matches_scikit_learn():
    from sklearn.neighbors import KNeighborsClassifier
    g = torch.Generator().manual_seed(1)
    train, test = torch.randn(400, 8, generator=g), torch.randn(100, 8, generator=g)
    train_y = (train[:, 0] > 0).long() + 2 * (train[:, 1] > 0).long()
    test_y = (test[:, 0] > 0).long() + 2 * (test[:, 1] > 0).long()
    # k odd and 4 classes: a huge temperature makes every vote weigh 1, as sklearn's uniform weights
    ours = knn_accuracy(train, train_y, test, test_y, k=15, temperature=1e9)
    ref = KNeighborsClassifier(15, metric="cosine", algorithm="brute").fit(train.numpy(), train_y.numpy())
    theirs = ref.score(test.numpy(), test_y.numpy())
    assert abs(ours - theirs) <= 0.02  # at most 2 of 100 samples differ, by how ties are broken
    assert ours > 0.6


def test_patch_labels_and_iou_against_references():
    from sklearn.metrics import jaccard_score
    g = torch.Generator().manual_seed(2)
    masks = torch.randint(0, 4, (3, 8, 8), generator=g)
    labels = patch_labels(masks, 4)  # 2x2-pixel patches
    for b in range(3):
        for r in range(4):
            for c in range(4):
                block = masks[b, 2 * r:2 * r + 2, 2 * c:2 * c + 2].reshape(-1)
                counts = torch.bincount(block, minlength=4)
                assert labels[b, r * 4 + c] == int(torch.nonzero(counts == counts.max())[0])
    pred, true = np.random.default_rng(0).integers(0, 3, 500), np.random.default_rng(1).integers(0, 3, 500)
    ours = iou_scores(pred, true, (0, 1, 2))
    theirs = jaccard_score(true, pred, average=None, labels=[0, 1, 2])
    assert np.allclose([ours[c] for c in (0, 1, 2)], theirs)


def test_few_shot_draws_are_balanced_seeded_and_learn():
    g = torch.Generator().manual_seed(3)
    centres = 4 * torch.randn(4, 10, generator=g)
    ytr, yte = torch.arange(400) % 4, torch.arange(200) % 4
    xtr = centres[ytr] + torch.randn(400, 10, generator=g)
    xte = centres[yte] + torch.randn(200, 10, generator=g)
    res = few_shot(xtr, ytr, xte, yte, shots=(1, 5), draws=3)
    assert set(res) == {1, 5} and len(res[5]["accs"]) == 3
    assert res[5]["mean"] > 0.9 and res[5]["mean"] >= res[1]["mean"] - 0.05
    assert few_shot(xtr, ytr, xte, yte, shots=(1,), draws=3) == {1: res[1]}  # keyed draws: reproducible


def test_torch_linear_probe_agrees_with_scikit_learn():
    from simlab.probes import linear_probe, torch_linear_probe
    g = torch.Generator().manual_seed(4)
    centres = 0.4 * torch.randn(6, 20, generator=g)
    ytr, yte = torch.arange(1200) % 6, torch.arange(600) % 6
    xtr = 3 + 5 * (centres[ytr] + torch.randn(1200, 20, generator=g))  # offset and scale: BN's job
    xte = 3 + 5 * (centres[yte] + torch.randn(600, 20, generator=g))
    ours = torch_linear_probe(xtr, ytr, xte, yte, epochs=30, batch_size=128)["acc"]
    ref = linear_probe(xtr, ytr, xte, yte)["acc"]
    assert 0.5 < ref < 0.99  # neither trivial nor hopeless
    assert abs(ours - ref) < 0.03


def test_cli_probe_on_another_dataset_aligns_masks_with_the_encoder_input(tmp_path, capsys):
    from conftest import require_data
    from simlab.data import DatasetNotFound, build_dataset
    try:
        build_dataset("fashion-mnist", "test")
        have = True
    except DatasetNotFound:
        have = False
    require_data(have, "apt-get install dataset-fashion-mnist")
    run = tmp_path / "run"
    assert main(["pretrain", "--preset", "tiny", "--out", str(run), "--steps", "2"]) == 0
    capsys.readouterr()
    assert main(["probe", "--checkpoint", str(list_checkpoints(run)[-1]), "--dataset", "fashion-mnist",
                 "--train-size", "300", "--test-size", "100", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["dataset"] == "fashion-mnist" and res["train_size"] == 300
    assert 0.0 <= res["fg_bg_miou"] <= 1.0 and res["linear"] > 0.2  # 28 px grey resized to the 16 px encoder


def test_linear_probe_reports_convergence_instead_of_warning(recwarn):
    from simlab.probes import linear_probe
    g = torch.Generator().manual_seed(5)
    y = torch.arange(400) % 4
    x = torch.randn(4, 30, generator=g)[y] + torch.randn(400, 30, generator=g)
    assert linear_probe(x[:300], y[:300], x[300:], y[300:])["converged"] is True
    assert linear_probe(x[:300], y[:300], x[300:], y[300:], max_iter=2)["converged"] is False
    assert not [w for w in recwarn if "converge" in str(w.message)]


def test_linear_probe_counts_the_fits_that_chose_C_in_its_convergence(monkeypatch):
    import simlab.global_probes as gp
    from simlab.probes import linear_probe
    g = torch.Generator().manual_seed(5)
    y = torch.arange(400) % 4
    x = torch.randn(4, 30, generator=g)[y] + torch.randn(400, 30, generator=g)
    plain, calls = gp._fit_logistic, []

    def first_fit_unconverged(*args):  # the first fit is one of those choosing C, not the final one
        clf, ok = plain(*args)
        calls.append(ok)
        return clf, ok and len(calls) > 1
    monkeypatch.setattr(gp, "_fit_logistic", first_fit_unconverged)
    res = linear_probe(x[:300], y[:300], x[300:], y[300:])
    assert len(calls) == 5 and all(calls) and res["converged"] is False


def test_logistic_fits_on_one_blas_thread_match_the_plain_fit_and_restore_threading():
    from sklearn.linear_model import LogisticRegression
    from threadpoolctl import threadpool_info

    from simlab.global_probes import _fit_logistic
    g = torch.Generator().manual_seed(3)
    y = (torch.arange(600) % 5).numpy()
    x = (torch.randn(5, 40, generator=g)[y] + 2 * torch.randn(600, 40, generator=g)).numpy()
    before = [i["num_threads"] for i in threadpool_info()]
    ours, ok = _fit_logistic(x, y, 1.0, 1000)
    plain = LogisticRegression(C=1.0, max_iter=1000).fit(x, y)
    assert ok and [i["num_threads"] for i in threadpool_info()] == before
    np.testing.assert_allclose(ours.coef_, plain.coef_, rtol=1e-4, atol=1e-5)
    assert np.array_equal(ours.predict(x), plain.predict(x))
