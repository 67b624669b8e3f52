import numpy as np
import torch

from simlab.seeding import keyed_normal, keyed_uniform, sample_keys


def test_keys_are_a_function_of_seed_epoch_index_stream():
    a = sample_keys(0, 1, np.arange(10), 2)
    assert np.array_equal(a, sample_keys(0, 1, np.arange(10), 2))
    for other in (sample_keys(1, 1, np.arange(10), 2), sample_keys(0, 2, np.arange(10), 2),
                  sample_keys(0, 1, np.arange(10), 3), sample_keys(0, 1, np.arange(1, 11), 2)):
        assert not np.any(a == other)
    assert len(set(a.tolist())) == 10


def test_draws_do_not_depend_on_the_batch():
    keys = sample_keys(3, 0, np.arange(100), 1)
    whole = keyed_uniform(keys, 7)
    parts = torch.cat([keyed_uniform(keys[i:i + 13], 7) for i in range(0, 100, 13)])
    assert torch.equal(whole, parts)
    alone = keyed_uniform(keys[42:43], 7)
    assert torch.equal(alone[0], whole[42])


def test_uniform_and_normal_statistics():
    u = keyed_uniform(sample_keys(0, 0, np.arange(2000), 0), 50)
    assert 0 <= u.min() and u.max() < 1
    assert abs(u.mean().item() - 0.5) < 0.01 and abs(u.var().item() - 1 / 12) < 0.002
    z = keyed_normal(sample_keys(0, 0, np.arange(2000), 0), 50)
    assert abs(z.mean().item()) < 0.02 and abs(z.std().item() - 1) < 0.02
