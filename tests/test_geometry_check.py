"""The packaged pixel-geometry check (simlab.bench.geometry), which the GPU check runs on CUDA: it
passes on the CPU's views, and it would notice relative_coords off by a fraction of a patch."""

import torch

from simlab.bench import geometry


def test_views_made_here_put_every_checked_patch_where_relative_coords_says():
    res = geometry.geometry_error("cpu", per_flip=1)
    assert res["checked_fraction"] > 0.5 and res["checked_patches"] > 300
    assert res["max_error_patches"] < 0.02  # the bound tests/test_views.py holds the CPU to


def test_the_check_sees_a_quarter_patch_error(monkeypatch):
    real = geometry.relative_coords
    shifted = lambda g1, g2, grid: real(g1, g2, grid) + torch.tensor([0.0, 0.25])  # noqa: E731
    monkeypatch.setattr(geometry, "relative_coords", shifted)
    assert abs(geometry.geometry_error("cpu", per_flip=1)["max_error_patches"] - 0.25) < 0.02
