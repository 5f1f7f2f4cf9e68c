import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from repkernel import MultitaskEnvironment, PatternSet, deep_linear_modes_task, step_function_task


def test_all_stimuli_times_all_tasks_n3_f3():
    env = MultitaskEnvironment(3, 3)
    assert len(env.patterns(k=1)) == 27 * 9 == 243


def test_published_main_environment_task_set_counts():
    env = MultitaskEnvironment(4, 3, 3)
    assert [len(env.task_sets(k)) for k in (1, 2, 3)] == [12, 36, 24]
    assert len(env.task_sets(4)) == 0


@pytest.mark.parametrize("n", [2, 3, 4, 6])
def test_square_k_set_count_formula(n):
    env = MultitaskEnvironment(n, 2)
    for k in range(1, n + 1):
        expected = math.comb(n, k) * math.factorial(n) // math.factorial(n - k)
        assert len(env.task_sets(k)) == expected


def test_targets_copy_the_input_block_to_the_output_block():
    env = MultitaskEnvironment(3, 4)
    p = env.patterns(k=1)
    F = env.n_features
    for i in range(len(p)):
        t = int(p.labels["task"][i])
        a, b = env.input_dim(t), env.output_dim(t)
        x, y = p.x[i].reshape(3, F), p.y[i].reshape(3, F)
        assert torch.equal(y[b], x[a])
        assert y.sum() == 1
        assert p.c[i].sum() == 1 and p.c[i, env.tasks.index(t)] == 1


def test_concurrent_target_is_union_and_congruency():
    env = MultitaskEnvironment(3, 3)
    p = env.patterns(k=2)
    feats = env.stimulus_features(p.labels["stimulus"])
    for i in range(0, len(p), 7):
        tasks = [int(t) for t in p.labels["task_set"][i].split("+")]
        y = p.y[i].reshape(3, 3)
        assert y.sum() == 2
        for t in tasks:
            assert y[env.output_dim(t), feats[i, env.input_dim(t)]] == 1
        same = len({feats[i, env.input_dim(t)] for t in tasks}) == 1
        assert p.labels["congruent"][i] == same
    assert p.labels["congruent"].any() and not p.labels["congruent"].all()
    assert (p.labels["task"] == -1).all() and (p.labels["k"] == 2).all()


def test_task_subset_and_cues():
    env = MultitaskEnvironment(2, 2, tasks=[(0, 0), (1, 1)])
    assert env.tasks == (0, 3) and env.n_cues == 2
    assert env.task_sets(2) == [(0, 3)]


def test_sample_follows_k_probs_and_seed():
    env = MultitaskEnvironment(4, 3, 3)
    a = env.sample(600, {1: 1 / 3, 2: 1 / 3, 3: 1 / 3}, seed=3)
    b = env.sample(600, {1: 1 / 3, 2: 1 / 3, 3: 1 / 3}, seed=3)
    assert torch.equal(a.x, b.x) and torch.equal(a.c, b.c)
    counts = np.bincount(a.labels["k"], minlength=4)[1:]
    assert (counts > 150).all()
    assert torch.equal(a.c.sum(1), torch.as_tensor(a.labels["k"], dtype=a.c.dtype))


@pytest.mark.parametrize("bad", [
    lambda: MultitaskEnvironment(0, 3),
    lambda: MultitaskEnvironment(2, 2, tasks=[(0, 5)]),
    lambda: MultitaskEnvironment(2, 2, tasks=[]),
    lambda: MultitaskEnvironment(2, 2).patterns(k=3),
    lambda: MultitaskEnvironment(2, 2).sample(5, {1: 0.5}),
    lambda: MultitaskEnvironment(2, 2).patterns(stimuli=99),
])
def test_bad_environment_input_raises_clear_errors(bad):
    with pytest.raises(ValueError):
        bad()


def test_pattern_set_indexing_and_concat():
    env = MultitaskEnvironment(2, 2)
    p = env.patterns(k=(1, 2))
    head, tail = p[:5], p[5:]
    joined = PatternSet.concat([head, tail])
    assert torch.equal(joined.x, p.x) and (joined.labels["task_set"] == p.labels["task_set"]).all()
    assert len(p[[0, 3]]) == 2 and len(p[2]) == 1
    with pytest.raises(ValueError):
        PatternSet.concat([p, step_function_task()[0]])


def test_pattern_set_rejects_mismatch_and_nan():
    with pytest.raises(ValueError, match="same number"):
        PatternSet(torch.zeros(3, 2), torch.zeros(2, 1))
    with pytest.raises(ValueError, match="NaN"):
        PatternSet(torch.full((2, 2), float("nan")), torch.zeros(2, 1))


def test_published_small_test_cases():
    train, test = step_function_task()
    assert len(train) == 6 and len(test) == 1000
    assert torch.equal(train.y[:, 0], (train.x[:, 0] > 0).double())
    modes = deep_linear_modes_task()
    assert modes.x.shape == (250, 4) and modes.y.shape == (250, 5)
    assert torch.allclose(modes.x.T @ modes.x, torch.eye(4, dtype=torch.float64), atol=1e-10)
    assert torch.allclose(modes.x.mean(0), torch.zeros(4, dtype=torch.float64), atol=1e-12)
    s = torch.linalg.svdvals(modes.x.T @ modes.y)
    assert torch.allclose(s, torch.tensor([90.0, 24.0, 7.0, 1.0], dtype=torch.float64))


@settings(max_examples=30, deadline=None)
@given(n_in=st.integers(1, 4), n_out=st.integers(1, 4), f=st.integers(1, 3), k=st.integers(1, 4))
def test_property_task_sets_have_distinct_dims(n_in, n_out, f, k):
    env = MultitaskEnvironment(n_in, f, n_out)
    sets = env.task_sets(k)
    assert len(sets) == math.comb(n_in, k) * math.comb(n_out, k) * math.factorial(k)
    for s in sets:
        assert len({env.input_dim(t) for t in s}) == k == len({env.output_dim(t) for t in s})
    if sets:
        p = env.patterns(k=k, stimuli=min(3, env.n_stimuli))
        assert len(p) == len(sets) * min(3, env.n_stimuli)
        assert torch.equal(p.y.sum(1), torch.full((len(p),), float(k), dtype=p.y.dtype))
        assert torch.equal(p.x.sum(1), torch.full((len(p),), float(n_in), dtype=p.x.dtype))
