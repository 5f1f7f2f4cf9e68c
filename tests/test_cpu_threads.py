"""repkernel.cpu_threads: the thread count is set for a block and restored, and train runs small
networks on one thread without changing its results."""

import numpy as np
import pytest
import torch

import repkernel as rk
from repkernel.cpu_threads import SMALL_WORK


def test_threads_sets_the_count_for_the_block_and_restores_it():
    before = torch.get_num_threads()
    with rk.threads(3):
        assert torch.get_num_threads() == 3
    assert torch.get_num_threads() == before
    with pytest.raises(KeyError), rk.threads(2):
        raise KeyError("restored on errors too")
    assert torch.get_num_threads() == before
    with rk.threads(None):
        assert torch.get_num_threads() == before


@pytest.mark.parametrize("count", [0, -1, 2.5, True, "2"])
def test_threads_refuses_counts_that_are_not_whole_and_positive(count):
    with pytest.raises(ValueError, match="threads must be a whole number >= 1"), rk.threads(count):
        pass


def test_threads_for_is_one_for_small_cpu_work_only():
    assert rk.threads_for(3408, 200) == 1  # the default study: 200 patterns, hidden 100
    assert rk.threads_for(SMALL_WORK, 1) is None
    assert rk.threads_for(10, 10, device="meta") is None  # not CPU: torch's threads do not apply


def test_train_runs_small_networks_on_one_thread_with_the_same_results():
    env = rk.MultitaskEnvironment(3, 3)
    net = rk.MultitaskNetwork(env, hidden=20, init_scale=0.1).to(torch.float64)
    curriculum = rk.Curriculum.interleaved(env, 40, 20, 0.05, reduction="sum")
    probes = env.patterns(k=1, stimuli=4)
    seen = []

    def progress(_):
        seen.append(torch.get_num_threads())

    before = torch.get_num_threads()
    with rk.threads(2):
        chosen = rk.train(net, curriculum, probes, checkpoints=3, progress=progress)
        assert set(seen) == {1} and torch.get_num_threads() == 2
        seen.clear()
        two = rk.train(net, curriculum, probes, checkpoints=3, progress=progress, threads=2)
        assert set(seen) == {2}
    assert torch.get_num_threads() == before
    np.testing.assert_allclose(chosen.hidden, two.hidden, rtol=0, atol=1e-12)
