import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import repkernel as rk
from repkernel import Curriculum, MultitaskEnvironment, MultitaskNetwork, Stage
from repkernel.influence import influence_on_groups, leave_out
from repkernel.kernels import pseudo_kernel_matrix
from repkernel.losses import loss_gradient

ENV = MultitaskEnvironment(3, 3)
PROBES = ENV.patterns(k=1, stimuli=2)


def two_stages(loss="mse"):
    single, concurrent = ENV.sample(24, seed=0), ENV.sample(16, {2: 1.0}, seed=1)
    return Curriculum((Stage(single, 12, 0.05, reduction="sum", loss=loss, name="single"),
                       Stage(concurrent, 8, 0.05, reduction="sum", loss=loss,
                             name="concurrent")))


def network(init_scale=0.5):
    return MultitaskNetwork(ENV, hidden=10, init_scale=init_scale, seed=0)


def linear_change(net, cur, **options):
    fc = rk.forecast(net, cur, PROBES, readout="linear", **options)
    hidden = fc.hidden.sel(readout="linear")
    return (hidden - hidden.isel(time=0)).values


@pytest.mark.parametrize("relinearize", [1, 3, "auto"])
@pytest.mark.parametrize("by", [None, "task"])
def test_summed_over_sources_it_is_the_linear_forecast_change(relinearize, by):
    net, cur = network(), two_stages()
    options = dict(checkpoints=6, relinearize=relinearize, tolerance=0.05)
    result = rk.influence(net, cur, PROBES, by=by, **options)
    expected = linear_change(net, cur, **options)
    total = (result.influence.sum("source") + result.relinearization_jump).values
    scale = np.abs(expected).max()
    assert scale > 1e-3  # the representation moved
    np.testing.assert_allclose(total, expected, atol=1e-10 * scale)
    jump = np.abs(result.relinearization_jump).max()
    if relinearize == 1:
        assert jump == 0  # one linear model: every change belongs to a pattern
    else:  # re-centering leaves a small second-order remainder
        assert 0 < jump < 0.05 * scale


def test_function_space_loss_splits_the_same_way():
    net, cur = network(), two_stages(loss="bce")
    result = rk.influence(net, cur, PROBES, checkpoints=4, by="stage")
    total = result.influence.sum("source").values
    np.testing.assert_allclose(total, linear_change(net, cur, checkpoints=4), atol=1e-12)


def test_one_step_influence_is_each_patterns_loss_weighted_pseudo_kernel_term():
    """After one full-batch step the influence of pattern j is -rho Pi(x, x_j) g_j from the
    dense pseudo-kernel at theta_0; copies of a pattern share it equally."""
    net = network()
    train = ENV.sample(10, seed=3)
    train = rk.PatternSet.concat([train, train[[0, 0, 4]]])  # repeats
    stage = Stage(train, 1, 0.3, reduction="mean")
    result = rk.influence(net, Curriculum((stage,)), PROBES, checkpoints=[0, 1])
    x, c, y = train.to()
    with torch.no_grad():
        f = net(x, c)[1]
    rho = stage.drift_rate / len(train)
    pi = pseudo_kernel_matrix(net, PROBES, train)[0]  # (n_p, H, n_t, O)
    expected = -rho * torch.einsum("iujq,jq->iju", pi, loss_gradient(f, y, "mse"))
    np.testing.assert_allclose(result.influence.sel(time=1).values, expected.numpy(),
                               atol=1e-14)
    np.testing.assert_array_equal(result.influence.sel(time=0).values, 0)


def test_a_group_is_the_sum_of_its_patterns():
    net, cur = network(), two_stages()
    each = rk.influence(net, cur, PROBES, checkpoints=4)
    by_k = rk.influence(net, cur, PROBES, checkpoints=4, by="k")
    summed = each.influence.groupby("source_k").sum().rename(source_k="source")
    np.testing.assert_allclose(by_k.influence.transpose(*summed.dims).values, summed.values,
                               atol=1e-14)
    assert list(by_k.source.values) == [1, 2]


def test_a_frozen_stage_keeps_its_influence_once_it_ends():
    net, cur = network(), two_stages()
    result = rk.influence(net, cur, PROBES, checkpoints=[0, 6, 12, 16, 20], by="stage")
    first = result.influence.sel(source=0)
    for step in (16, 20):
        np.testing.assert_allclose(first.sel(time=step), first.sel(time=12), atol=1e-15)
    np.testing.assert_array_equal(result.influence.sel(source=1, time=[0, 6, 12]).values, 0)
    assert list(result.source_name.values) == ["single", "concurrent"]


def test_one_step_influence_predicts_leaving_the_group_out():
    """Ground truth from retraining: after one step, the hidden change that leaving a task out
    removes is that task's influence, to first order in the rate."""
    net = network()
    single = ENV.sample(40, seed=2)
    cur = Curriculum((Stage(single, 1, 0.002, reduction="sum"),))
    predicted = rk.influence(net, cur, PROBES, checkpoints=[0, 1], by="task")
    full = rk.train(net, cur, PROBES, checkpoints=[1]).hidden.isel(time=0)
    for task in (0, 4):
        without = rk.train(net, leave_out(cur, "task", task), PROBES,
                           checkpoints=[1]).hidden.isel(time=0)
        actual = (full - without).values
        guess = predicted.influence.sel(time=1, source=task).values
        assert np.linalg.norm(guess - actual) < 1e-3 * np.linalg.norm(actual)


def test_shares_of_the_change_sum_to_one_with_the_frozen_kernel():
    result = rk.influence(network(), two_stages(), PROBES, checkpoints=3, by="task")
    share = influence_on_groups(result, "task")
    assert share.dims == ("time", "source", "probe_task")
    np.testing.assert_allclose(share.isel(time=-1).sum("source"), 1.0, atol=1e-12)
    with pytest.raises(ValueError, match="unknown probe label 'colour'"):
        influence_on_groups(result, "colour")


@settings(max_examples=5, deadline=None)
@given(st.lists(st.integers(0, 2), min_size=24, max_size=24))
def test_property_any_grouping_adds_up_to_the_same_change(groups):
    single = ENV.sample(24, seed=0)
    labelled = rk.pattern_set(single.x, single.y, single.c,
                              {**single.labels, "group": np.array(groups)})
    cur = Curriculum((Stage(labelled, 5, 0.05, reduction="sum"),))
    each = rk.influence(network(), cur, PROBES, checkpoints=3)
    grouped = rk.influence(network(), cur, PROBES, checkpoints=3, by="group")
    assert list(grouped.source.values) == sorted(set(groups))
    np.testing.assert_allclose(grouped.influence.sum("source"), each.influence.sum("source"),
                               atol=1e-14)


def test_leave_out_drops_the_group_and_keeps_the_schedule():
    cur = two_stages()
    reduced = leave_out(cur, "task", 3)
    for before, after in zip(cur.stages, reduced.stages):
        kept = np.asarray(before.patterns.labels["task"]) != 3
        assert len(after.patterns) == kept.sum()
        assert (after.steps, after.lr, after.name) == (before.steps, before.lr, before.name)
        assert not (np.asarray(after.patterns.labels["task"]) == 3).any()


def test_bad_input_gets_one_clear_line():
    net, cur = network(), two_stages()
    with pytest.raises(ValueError, match=r"unknown label 'colour'.*'task'.*'stage'"):
        rk.influence(net, cur, PROBES, checkpoints=2, by="colour")
    with pytest.raises(ValueError, match="unknown label 'colour'"):
        leave_out(cur, "colour", 0)
    with pytest.raises(ValueError, match="empty group: no training pattern has task = 99"):
        leave_out(cur, "task", 99)
    only_one = Curriculum((Stage(ENV.sample(6, seed=0, tasks=[2]), 3, 0.1),))
    with pytest.raises(ValueError, match="removes every pattern of stage 0"):
        leave_out(only_one, "task", 2)
    with pytest.raises(ValueError, match="to leave out a stage"):
        leave_out(cur, "stage", 0)
    with pytest.raises(ValueError, match="relinearize"):
        rk.influence(net, cur, PROBES, checkpoints=2, relinearize=0)


def test_where_the_forecast_factorizes_the_primal_space_influence_uses_the_dual():
    """Few weights, many patterns: forecast picks the P x P primal space, which has no dual
    coefficients; influence takes the dual space and agrees with it."""
    from repkernel.forecasting import _choose_factorization

    net = MultitaskNetwork(ENV, hidden=2, init_scale=0.5, seed=0)
    single = ENV.sample(60, seed=5)
    cur = Curriculum((Stage(single, 10, 0.05, reduction="sum"),))
    size = len(single) * single.n_outputs
    assert _choose_factorization("dense", size, net.n_parameters, 1.0) == "primal"
    result = rk.influence(net, cur, PROBES, checkpoints=3, factorization="dense")
    expected = linear_change(net, cur, checkpoints=3, factorization="dense")
    np.testing.assert_allclose(result.influence.sum("source"), expected,
                               atol=1e-10 * np.abs(expected).max())


def test_follows_the_requested_dtype():
    net, cur = network(), two_stages()
    single = rk.influence(net, cur, PROBES, checkpoints=3, by="task", dtype=torch.float32)
    double = rk.influence(net, cur, PROBES, checkpoints=3, by="task")
    assert single.influence.dtype == np.float32 and single.attrs["dtype"] == "float32"
    np.testing.assert_allclose(single.influence, double.influence,
                               atol=1e-4 * float(np.abs(double.influence).max()))
