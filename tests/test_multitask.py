"""Multitask evaluation: scores on hand-built outputs, capacity on known graphs, learning
efficiency on synthetic loss curves, evaluation of trained and forecast results, and the classic
result (small init: shared representations and poor concurrent performance)."""

import itertools
import json
import subprocess
import sys

import numpy as np
import pytest
import torch
import xarray as xr
from hypothesis import given, settings
from hypothesis import strategies as st

from repkernel import (
    Curriculum,
    MultitaskEnvironment,
    MultitaskNetwork,
    Stage,
    capacity,
    evaluate_multitask,
    learning_efficiency,
    maximum_independent_set,
    score_outputs,
    train,
)
from repkernel.multitask import interference_graph, network_from_result
from repkernel.results import load, save

# -- scores on hand-built outputs -------------------------------------------------------------


def test_perfect_outputs_score_one():
    env = MultitaskEnvironment(3, 3)
    patterns = env.patterns((1, 2, 3))
    ds = score_outputs(patterns.y, patterns, env)
    assert ds.sizes["response"] == 27 * (9 + 2 * 18 + 3 * 6)
    for name in ("luce", "accuracy"):
        assert (ds[name] == 1).all() and (ds[f"{name}_cost"] == 0).all()
    assert (ds.error == 0).all()
    np.testing.assert_array_equal(ds.throughput_concurrent, [1, 2, 3])
    np.testing.assert_array_equal(ds.throughput_sequential, [1, 1, 1])
    # single tasks are always congruent: no incongruent k = 1 cell
    assert np.isnan(ds.luce_by_congruency.sel(k=1, congruent=False))
    assert (ds.luce_by_congruency.sel(k=[2, 3]) == 1).all()
    # a leading time dim is kept, with its coordinate
    timed = score_outputs(torch.stack([patterns.y, patterns.y]), patterns, env,
                          coords={"time": [0, 5]})
    assert timed.luce_by_k.dims == ("time", "k") and list(timed.time.values) == [0, 5]


@settings(max_examples=25, deadline=None)
@given(n_in=st.integers(1, 3), n_out=st.integers(1, 3), F=st.integers(2, 4),
       data=st.data())
def test_swapping_an_output_dimensions_units_scores_zero(n_in, n_out, F, data):
    env = MultitaskEnvironment(n_in, F, n_out)
    k = data.draw(st.integers(1, min(n_in, n_out)))
    patterns = env.patterns(k, stimuli=min(env.n_stimuli, 20))
    b = data.draw(st.integers(0, n_out - 1))
    derangement = data.draw(st.permutations(range(F)).filter(
        lambda p: all(i != j for i, j in enumerate(p))))
    output = patterns.y.clone().reshape(len(patterns), n_out, F)
    output[:, b] = output[:, b][:, list(derangement)]
    ds = score_outputs(output.reshape(len(patterns), -1), patterns, env)
    on_b = ds.output_dim.values == b
    assert on_b.any()
    assert (ds.accuracy[on_b] == 0).all() and (ds.luce[on_b] == 0).all()
    assert np.allclose(ds.error[on_b], 2 / F)
    assert (ds.accuracy[~on_b] == 1).all() and (ds.luce[~on_b] == 1).all()


@settings(max_examples=25, deadline=None)
@given(scale=st.floats(0.01, 100), seed=st.integers(0, 1000))
def test_luce_and_accuracy_are_scale_free_and_bounded(scale, seed):
    env = MultitaskEnvironment(2, 3)
    patterns = env.patterns((1, 2))
    output = torch.rand(len(patterns), env.n_outputs, generator=torch.Generator().manual_seed(
        seed), dtype=torch.float64)
    ds, scaled = (score_outputs(o, patterns, env) for o in (output, output * scale))
    np.testing.assert_allclose(ds.luce, scaled.luce, rtol=1e-12)
    np.testing.assert_array_equal(ds.accuracy, scaled.accuracy)
    assert ((0 <= ds.luce) & (ds.luce <= 1)).all()
    # the Luce ratios of the F possible answers of one output block sum to 1
    block = output.reshape(len(patterns), 2, 3)[ds.pattern.values, ds.output_dim.values]
    np.testing.assert_allclose((block / block.sum(-1, keepdims=True)).sum(-1), 1)


def test_congruent_sets_labelled_and_crosstalk_scored():
    env = MultitaskEnvironment(3, 3)
    patterns = env.patterns(2)
    features = env.stimulus_features(patterns.labels["stimulus"])
    for i, task_set in enumerate(patterns.labels["task_set"]):
        a, b = (env.input_dim(int(t)) for t in task_set.split("+"))
        assert patterns.labels["congruent"][i] == (features[i, a] == features[i, b])
    assert np.isclose(patterns.labels["congruent"].mean(), 1 / 3)
    # crosstalk: every active output dim answers with every active task's feature
    cues = patterns.c.numpy()
    output = np.zeros((len(patterns), 3, 3))
    for i in range(len(patterns)):
        active = [env.tasks[j] for j in np.flatnonzero(cues[i])]
        for t in active:
            for u in active:
                output[i, env.output_dim(t), features[i, env.input_dim(u)]] = 1.0
    ds = score_outputs(output.reshape(len(patterns), -1), patterns, env)
    np.testing.assert_allclose(ds.luce_by_congruency.sel(k=2), [1.0, 0.5])
    np.testing.assert_allclose(ds.accuracy_by_congruency.sel(k=2), [1.0, 0.5])  # ties: 1/2
    assert (ds.set_congruent.values == patterns.labels["congruent"][ds.pattern.values]).all()


def test_scoring_refuses_bad_inputs():
    env = MultitaskEnvironment(2, 3)
    patterns = env.patterns(1)
    with pytest.raises(ValueError, match="non-negative"):
        score_outputs(patterns.y - 0.5, patterns, env)
    with pytest.raises(ValueError, match="must have shape"):
        score_outputs(patterns.y[:, :4], patterns, env)
    with pytest.raises(ValueError, match="do not fit"):
        score_outputs(patterns.y, patterns, MultitaskEnvironment(3, 3))


# -- capacity ---------------------------------------------------------------------------------

def _graph(n, edges):
    adjacency = np.zeros((n, n), dtype=bool)
    for i, j in edges:
        adjacency[i, j] = adjacency[j, i] = True
    return adjacency


def _is_independent(adjacency, members):
    return not any(adjacency[i, j] for i, j in itertools.combinations(members, 2))


def test_maximum_independent_set_of_known_graphs():
    cycle5 = _graph(5, [(i, (i + 1) % 5) for i in range(5)])
    outer = [(i, (i + 1) % 5) for i in range(5)]
    inner = [(5 + i, 5 + (i + 2) % 5) for i in range(5)]
    petersen = _graph(10, outer + inner + [(i, i + 5) for i in range(5)])
    for adjacency, size in [(cycle5, 2), (petersen, 4), (_graph(6, []), 6),
                            (~np.eye(7, dtype=bool), 1)]:
        members = maximum_independent_set(adjacency)
        assert len(members) == size and _is_independent(adjacency, members)
    # the rook's graph of a 6 x 6 board (the 36 tasks of N = 6): one rook per row and column
    rook = np.array([[i != j and (i // 6 == j // 6 or i % 6 == j % 6) for j in range(36)]
                     for i in range(36)])
    assert len(maximum_independent_set(rook)) == 6


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 9), density=st.floats(0, 1), seed=st.integers(0, 10 ** 6))
def test_maximum_independent_set_matches_brute_force(n, density, seed):
    rng = np.random.default_rng(seed)
    upper = np.triu(rng.random((n, n)) < density, 1)
    adjacency = upper | upper.T
    best = max(size for size in range(n + 1) for subset in itertools.combinations(range(n), size)
               if _is_independent(adjacency, subset))
    members = maximum_independent_set(adjacency)
    assert len(members) == best and _is_independent(adjacency, members)


def test_capacity_of_shared_and_separate_representations():
    env = MultitaskEnvironment(3, 3)
    tasks = np.array(env.tasks)
    same_input = (tasks[:, None] // 3) == (tasks[None] // 3)
    separate = np.eye(9)  # every task its own representation: only structure limits
    result = capacity(separate, env)
    assert result.size == 3 and len({env.input_dim(t) for t in result.tasks}) == 3
    assert len({env.output_dim(t) for t in result.tasks}) == 3
    # tasks sharing an input dimension share its representation (the rich, shared solution):
    # each task's representation drives every output dimension, so one task at a time
    shared = np.where(same_input, 0.95, 0.1)
    assert capacity(shared, env).size == 1
    # the plain thresholded graph without structure or crosstalk: shared inputs only
    plain = capacity(shared, env, structural=False, crosstalk=False)
    assert plain.size == 3 and len({env.input_dim(t) for t in plain.tasks}) == 3
    graph = interference_graph(shared, env, structural=False, crosstalk=False)
    np.testing.assert_array_equal(graph, same_input & ~np.eye(9, dtype=bool))
    # a DataArray with task labels in another order is reordered to env.tasks
    order = np.arange(9)[::-1]
    labelled = xr.DataArray(shared[np.ix_(order, order)], dims=("task", "task_b"),
                            coords={"task": tasks[order], "task_b": tasks[order]})
    np.testing.assert_array_equal(interference_graph(labelled, env), interference_graph(
        shared, env))
    with pytest.raises(ValueError, match=r"must be \(9, 9\)"):
        capacity(np.eye(4), env)


# -- learning efficiency ----------------------------------------------------------------------

def _curve_result(losses, stages, extra_dims=()):
    """A result with batch_loss(..., step) and the curriculum config the trainer writes."""
    config = {"curriculum": {"stages": [
        {"steps": steps, "batch": batch, "patterns": {"n": n}} for steps, batch, n in stages]}}
    dims = (*extra_dims, "step")
    return xr.Dataset({"batch_loss": (dims, np.asarray(losses))},
                      attrs={"config": json.dumps(config)})


def test_learning_efficiency_full_batch_and_epochs():
    steps = np.arange(100)
    result = _curve_result(np.exp(-steps / 10), [(100, "full", 8)])
    ds = learning_efficiency(result, 0.1)
    assert int(ds.steps_to_criterion) == 24 == int(ds.epochs_to_criterion)  # e^-2.4 < 0.1
    never = learning_efficiency(result, 1e-6)
    assert np.isnan(never.steps_to_criterion) and "never fell below" in never.attrs[
        "never_reached"]
    # minibatches of 2 out of 8 patterns: epochs of 4 updates, judged by the epoch's mean loss
    epoch_means = np.array([1.0, 0.5, 0.2, 0.05, 0.01])
    losses = np.repeat(epoch_means, 4) + np.tile([0.03, -0.03, 0.01, -0.01], 5)
    result = _curve_result(losses, [(20, 2, 8)])
    ds = learning_efficiency(result, 0.1)
    assert int(ds.steps_to_criterion) == 16 and int(ds.epochs_to_criterion) == 4
    # two stages, one per seed row; stage=1 counts from the stage's own start
    two = _curve_result(np.stack([np.r_[np.full(10, 1.0), np.linspace(1, 0, 10)],
                                  np.r_[np.linspace(1, 0, 10), np.full(10, 1.0)]]),
                        [(10, "full", 4), (10, "full", 4)], extra_dims=("seed",))
    np.testing.assert_array_equal(learning_efficiency(two, 0.15).steps_to_criterion, [18, 8])
    np.testing.assert_array_equal(
        learning_efficiency(two, 0.15, stage=1).steps_to_criterion, [8, np.nan])
    with pytest.raises(ValueError, match="stage must be"):
        learning_efficiency(two, 0.1, stage=2)


def test_learning_efficiency_of_a_trained_network():
    env = MultitaskEnvironment(2, 2)
    net = MultitaskNetwork(env, hidden=10, init_scale=0.5, seed=0)
    patterns = env.patterns(1)
    online = Curriculum((Stage(patterns, 16 * 40, 0.5, batch="online", reduction="sum"),))
    result = train(net, online, patterns, checkpoints=2, record_weights=False)
    ds = learning_efficiency(result, 0.2)
    epochs = float(ds.epochs_to_criterion)
    assert epochs == int(epochs) and ds.steps_to_criterion == 16 * epochs
    means = result.batch_loss.values.reshape(40, 16).mean(1)
    assert means[int(epochs) - 1] < 0.2 <= means[:int(epochs) - 1].min()


# -- evaluating results -----------------------------------------------------------------------

@pytest.fixture(scope="module")
def trained():
    torch.set_default_dtype(torch.float64)
    env = MultitaskEnvironment(2, 3)
    net = MultitaskNetwork(env, hidden=12, init_scale=0.5, seed=3)
    curriculum = Curriculum.interleaved(env, 60, 40, 0.1, reduction="sum")
    return env, net, curriculum, train(net, curriculum, env.patterns(1), checkpoints=4)


def test_evaluate_result_matches_the_network_at_each_checkpoint(trained, tmp_path):
    env, net, _, result = trained
    scores = evaluate_multitask(result, env, k=(1, 2))
    np.testing.assert_array_equal(scores.time, result.time)
    np.testing.assert_array_equal(scores.stage, result.stage)
    assert scores.attrs["source"] == "actual"
    assert json.loads(scores.attrs["config"])["evaluate"]["k"] == [1, 2]
    first = evaluate_multitask(net, env, k=(1, 2))
    final_net = network_from_result(result).load_flat_parameters(
        torch.as_tensor(result.weights.isel(time=-1).values))
    last = evaluate_multitask(final_net, env, k=(1, 2))
    for name in ("luce", "accuracy", "error", "luce_by_congruency", "throughput_concurrent"):
        np.testing.assert_allclose(scores[name].isel(time=0), first[name], rtol=1e-12)
        np.testing.assert_allclose(scores[name].isel(time=-1), last[name], rtol=1e-12)
    assert float(scores.luce_by_k.sel(k=1).isel(time=-1)) > float(
        scores.luce_by_k.sel(k=1).isel(time=0))
    # the trainer's own outputs on its probes (every stimulus, single tasks) score the same
    recorded = score_outputs(result.output, env.patterns(1), env)
    np.testing.assert_allclose(recorded.luce, scores.luce.sel(response=recorded.response))
    assert recorded.luce.dims == ("time", "response") and "stage" in recorded.coords
    # the rebuilt network and the given one agree; env=None is the network's environment
    given_net = evaluate_multitask(result, None, k=(1, 2), network=net)
    xr.testing.assert_allclose(given_net.drop_attrs(), scores.drop_attrs())
    # netCDF round trip
    save(scores, tmp_path / "scores.nc")
    xr.testing.assert_allclose(load(tmp_path / "scores.nc").drop_attrs(), scores.drop_attrs())
    # float32 on request, sweep dims kept
    stacked = xr.concat([result, result], dim="seed")
    both = evaluate_multitask(stacked, env, k=1, dtype=torch.float32)
    assert both.luce.dims == ("seed", "time", "response") and both.attrs["dtype"] == "float32"
    np.testing.assert_allclose(both.luce.isel(seed=1), scores.luce.sel(response=both.response),
                               atol=1e-5)


def test_evaluate_forecast_result(trained):
    from repkernel import forecast

    env, net, curriculum, _ = trained
    predicted = forecast(net, curriculum, env.patterns(1), checkpoints=3)
    scores = evaluate_multitask(predicted, env, k=(1, 2), stimuli=5)
    np.testing.assert_array_equal(scores.time, predicted.time)
    assert "readout" not in scores.dims and scores.attrs["source"] == "forecast"
    assert len(np.unique(scores.stimulus)) == 5
    weights = predicted.weights.expand_dims(readout=["linear", "network"], axis=1)
    again = evaluate_multitask(predicted.assign(weights=weights), env, k=(1, 2), stimuli=5)
    xr.testing.assert_allclose(again.drop_attrs(), scores.drop_attrs())


def test_evaluate_refuses_what_it_cannot_score(trained):
    env, _, _, result = trained
    with pytest.raises(ValueError, match="no weights"):
        evaluate_multitask(result.drop_vars("weights"), env, k=1)
    with pytest.raises(ValueError, match="built for environment"):
        evaluate_multitask(result, MultitaskEnvironment(2, 3, tasks=[0, 1, 3]), k=1)
    other = MultitaskNetwork(MultitaskEnvironment(2, 3), hidden=5)
    with pytest.raises(ValueError, match="trainable weights"):
        evaluate_multitask(result, env, k=1, network=other)
    with pytest.raises(ValueError, match="k <= 2"):
        evaluate_multitask(result, env, k=3)


def test_evaluate_command(trained, tmp_path):
    _, _, _, result = trained
    save(result, tmp_path / "run.nc")
    command = [sys.executable, "-m", "repkernel_cli", "evaluate", str(tmp_path / "run.nc"),
               "--out", str(tmp_path / "scores.nc"), "--k", "1,2"]
    out = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "incongruent" in out.stdout and "P(correct)" in out.stdout
    with xr.open_dataset(tmp_path / "scores.nc") as scores:
        assert scores.sizes["time"] == 4 and list(scores.k.values) == [1, 2]
    bad = subprocess.run([*command[:-1], "two"], capture_output=True, text=True, timeout=300)
    assert bad.returncode == 1 and "--k takes" in bad.stderr and "Traceback" not in bad.stderr


def test_scores_draw_as_a_multitask_figure(trained):
    from repkernel import plot

    env, _, _, result = trained
    fig = plot.multitask_scores(evaluate_multitask(result, env, k=(1, 2)))
    assert fig.axes


# -- the classic result -----------------------------------------------------------------------

def _trained_multitasker(init_scale, seed):
    from repkernel.similarity import task_similarity

    env = MultitaskEnvironment(3, 3)
    net = MultitaskNetwork(env, hidden=50, init_scale=init_scale, seed=seed)
    patterns = env.patterns(1)  # every stimulus x every single task, interleaved, full batch
    curriculum = Curriculum((Stage(patterns, 400, 0.1, reduction="sum"),))
    result = train(net, curriculum, patterns, checkpoints=[0, 400])
    similarity = task_similarity(result.hidden.isel(time=-1))  # (task, task_b), tasks ascending
    input_dim = np.array(env.tasks) // 3
    pairs = (input_dim[:, None] == input_dim[None]) & ~np.eye(9, dtype=bool)
    scores = evaluate_multitask(result, env, k=(1, 2)).isel(time=-1)
    return (float(similarity.values[pairs].mean()), float(scores.accuracy_by_k.sel(k=1)),
            float(scores.accuracy_by_congruency.sel(k=2, congruent=False)),
            capacity(similarity, env).size)


@pytest.mark.parametrize("seed", [0, 1])
def test_small_init_shares_representations_and_multitasks_worse(seed):
    """REFERENCE.md D and E: from small init the network learns one representation per input
    dimension (tasks sharing an input are alike) and answers incongruent pairs with crosstalk;
    from large init it keeps separate task representations and multitasks well. Both learn every
    single task. Over seeds 0-9 in this setting: similarity of tasks sharing an input
    0.97 +- 0.01 (small) vs 0.22 +- 0.05 (large); incongruent k = 2 accuracy 0.52 +- 0.02 vs
    0.97 +- 0.01. The capacity estimate agrees: one task at a time versus three."""
    small_similarity, small_single, small_concurrent, small_capacity = _trained_multitasker(
        0.1, seed)
    large_similarity, large_single, large_concurrent, large_capacity = _trained_multitasker(
        1.0, seed)
    assert small_single == large_single == 1.0
    assert small_similarity > 0.8 and large_similarity < 0.5
    assert small_concurrent < 0.65 and large_concurrent > 0.85
    assert (small_capacity, large_capacity) == (1, 3)
