import torch

from simlab.loss import sim_loss, target_correlation


def naive_sim_loss(pred, target, neg_weight):
    """The formula written out token by token, each prediction against every target token, float64."""
    D = pred.shape[-1]
    p = pred.reshape(-1, D).double()
    z = target.reshape(-1, D).double()
    M = len(p)
    pos = sum(((p[m] - z[m]) ** 2).sum() for m in range(M)) / M
    neg = sum(((p[m] @ z.T) ** 2).mean() for m in range(M)) / M  # p^T F p = mean over z' of (p . z')^2
    return (pos + neg_weight * neg) / D, pos / D, neg / D


def test_matches_the_naive_formula():
    g = torch.Generator().manual_seed(0)
    pred = torch.randn(3, 7, 16, generator=g)
    target = torch.nn.functional.layer_norm(torch.randn(3, 7, 16, generator=g), (16,))
    for lam in (0.0, 0.02, 0.5):
        loss, stats = sim_loss(pred, target, lam)
        ref, pos, neg = naive_sim_loss(pred, target, lam)
        assert torch.allclose(loss.double(), ref, rtol=1e-5)
        assert torch.allclose(stats["pos"].double(), pos, rtol=1e-5)
        assert torch.allclose(stats["neg"].double(), neg, rtol=1e-5)


def test_gradient_is_p_minus_z_plus_lambda_f_p():
    g = torch.Generator().manual_seed(1)
    pred = torch.randn(2, 5, 8, generator=g, requires_grad=True)
    target = torch.randn(2, 5, 8, generator=g)
    loss, _ = sim_loss(pred, target, 0.1)
    loss.backward()
    F = target_correlation(target)
    p, z = pred.detach().reshape(-1, 8), target.reshape(-1, 8)
    expected = (2 * (p - z) + 0.1 * 2 * p @ F) / (10 * 8)
    assert torch.allclose(pred.grad.reshape(-1, 8), expected, atol=1e-6)


def test_given_correlation_replaces_the_batch_one():
    pred, target = torch.randn(2, 4, 8), torch.randn(2, 4, 8)
    loss_i, stats = sim_loss(pred, target, 1.0, correlation=torch.eye(8))
    assert torch.allclose(stats["neg"], (pred.reshape(-1, 8) ** 2).sum(-1).mean() / 8)


def test_runs_in_fp32_under_autocast():
    pred, target = torch.randn(2, 4, 8).bfloat16(), torch.randn(2, 4, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss, _ = sim_loss(pred, target)
    assert loss.dtype == torch.float32
