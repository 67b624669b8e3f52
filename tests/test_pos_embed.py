import math

import torch

from simlab.pos_embed import grid_coords, grid_sincos, relative_embedding, sincos_2d
from simlab.views import ViewGeometry, relative_coords, relative_scales


def test_row_first_order_and_values():
    D = 16
    e = sincos_2d(torch.tensor([[3.0, 5.0]]), D)[0]
    omega = 1.0 / 10000 ** (torch.arange(D // 4, dtype=torch.float64) / (D / 4))
    expected = torch.cat([torch.sin(3 * omega), torch.cos(3 * omega), torch.sin(5 * omega), torch.cos(5 * omega)])
    assert torch.allclose(e, expected.float(), atol=1e-6)
    g = grid_sincos(4, D, cls_token=True)
    assert g.shape == (17, D) and torch.equal(g[0], torch.zeros(D))
    # patch (r=1, c=2) is row-major index 6, and its row goes first
    assert torch.allclose(g[1 + 6], sincos_2d(torch.tensor([1.0, 2.0]), D))
    assert not torch.allclose(g[1 + 6], sincos_2d(torch.tensor([2.0, 1.0]), D))


def test_identical_views_reproduce_the_absolute_embedding():
    D, G = 32, 8
    g = ViewGeometry(torch.tensor([3.0]), torch.tensor([4.0]), torch.tensor([20.0]), torch.tensor([25.0]),
                     torch.tensor([True]))
    rel = relative_embedding(relative_coords(g, g, G), relative_scales(g, g), D)
    assert rel.shape == (1, G * G, 2 * D)
    assert torch.allclose(rel[0, :, :D], grid_sincos(G, D), atol=1e-5)
    # zero log-scale: sin terms 0, cos terms 1
    scale = rel[0, :, D:].view(G * G, 4, D // 4)
    assert torch.allclose(scale[:, [0, 2]], torch.zeros(1)) and torch.allclose(scale[:, [1, 3]], torch.ones(1))


def test_scale_terms_use_ten_log_ratio():
    D = 8
    rel = relative_embedding(torch.zeros(1, 1, 2), torch.tensor([[math.log(2.0), math.log(0.5)]]), D)[0, 0]
    omega = 1.0 / 10000 ** (torch.arange(D // 4, dtype=torch.float64) / (D / 4))
    sh, sw = 10 * math.log(2.0) * omega, 10 * math.log(0.5) * omega
    expected = torch.cat([torch.sin(sh), torch.cos(sh), torch.sin(sw), torch.cos(sw)]).float()
    assert torch.allclose(rel[D:], expected, atol=1e-6)


def test_grid_coords_row_major():
    c = grid_coords(3)
    assert c[5].tolist() == [1.0, 2.0] and c.shape == (9, 2)
