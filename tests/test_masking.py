import pytest
import torch

from simlab.masking import (_Draws, _one_block_mask, block_mask, default_min_block, default_num_masked,
                            keyed_masks, random_mask)


def test_defaults_scale_sim_to_the_grid():
    assert [default_num_masked(g) for g in (4, 8, 14)] == [10, 39, 118]
    assert [default_min_block(g) for g in (4, 8, 14)] == [1, 5, 16]


@pytest.mark.parametrize("grid", [4, 8, 14])
def test_exact_counts(grid):
    for n in (default_num_masked(grid), 1, grid * grid - 1):
        m = block_mask(64, grid, n, generator=torch.Generator().manual_seed(n))
        assert m.shape == (64, grid * grid) and m.dtype == torch.bool
        assert (m.sum(1) == n).all()
    r = random_mask(64, grid, grid, generator=torch.Generator().manual_seed(0))
    assert (r.sum(1) == grid).all()


def test_deterministic_under_a_generator_and_varied_across_samples():
    a = block_mask(32, 14, generator=torch.Generator().manual_seed(7))
    b = block_mask(32, 14, generator=torch.Generator().manual_seed(7))
    c = block_mask(32, 14, generator=torch.Generator().manual_seed(8))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert len({tuple(row.tolist()) for row in a}) == 32
    assert torch.equal(keyed_masks(0, 1, torch.arange(8), 8), keyed_masks(0, 1, torch.arange(8), 8))
    assert torch.equal(keyed_masks(0, 1, torch.arange(8), 8)[3:5], keyed_masks(0, 1, torch.arange(3, 5), 8))
    assert not torch.equal(keyed_masks(0, 1, torch.arange(8), 8), keyed_masks(0, 2, torch.arange(8), 8))


@pytest.mark.parametrize("grid", [8, 14])
def test_blocks_before_top_up_are_contiguous_rectangles(grid):
    draw = _Draws(torch.Generator().manual_seed(grid))
    n, min_block = default_num_masked(grid), default_min_block(grid)
    top_ups = []
    for _ in range(50):
        mask, blocks = _one_block_mask(grid, n, min_block, draw)
        assert blocks, "at least one block is placed"
        union = torch.zeros(grid, grid, dtype=torch.bool)
        for top, left, h, w in blocks:
            assert 0 < h < grid and 0 < w < grid  # sides below the grid
            assert 0 <= top <= grid - h and 0 <= left <= grid - w
            union[top:top + h, left:left + w] = True
        assert (mask.view(grid, grid) | ~union).all(), "every block is masked"
        top_ups.append(int(mask.sum()) - int(union.sum()))
    assert sum(top_ups) / len(top_ups) < 0.2 * n, "most of the mask is blocks, not top-up"


def test_masks_are_block_shaped_not_random():
    # neighbouring patches agree far more often in block masks than in random ones
    def agreement(m):
        m = m.view(-1, 14, 14)
        return (m[:, :, 1:] == m[:, :, :-1]).float().mean()
    g = torch.Generator().manual_seed(0)
    assert agreement(block_mask(64, 14, generator=g)) > agreement(random_mask(64, 14, 118, generator=g)) + 0.2


def test_impossible_settings_raise():
    for grid, n in ((8, 64), (8, 70), (8, -1), (1, 0)):
        with pytest.raises(ValueError, match="mask"):
            block_mask(1, grid, n)
    with pytest.raises(ValueError, match="min_block"):
        block_mask(1, 4, 5, min_block=10)
    with pytest.raises(ValueError, match="num_masked"):
        random_mask(1, 4, 16)
    with pytest.raises(ValueError, match="kind"):
        keyed_masks(0, 0, torch.arange(2), 4, kind="grid")
