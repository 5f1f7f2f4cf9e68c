import re

import numpy as np
import pytest
import torch
import xarray as xr

import repkernel as rk
from repkernel import Curriculum, MultitaskEnvironment, MultitaskNetwork, Stage


@pytest.fixture(scope="module")
def setup():
    env = MultitaskEnvironment(3, 3)
    torch.set_default_dtype(torch.float64)
    net = MultitaskNetwork(env, hidden=30, init_scale=0.1)
    curriculum = Curriculum.interleaved(env, 120, 300, 0.05, reduction="sum")
    probes = env.patterns(k=1, stimuli=6)
    return env, net, curriculum, probes


def test_records_at_the_right_steps_and_layout(setup):
    _, net, curriculum, probes = setup
    ds = rk.train(net, curriculum, probes, checkpoints=7)
    assert ds.time.values.tolist() == [0, 50, 100, 150, 200, 250, 300]
    assert ds.hidden.dims == ("time", "item", "unit")
    assert ds.output.dims == ("time", "item", "output_unit")
    assert ds.weights.shape == (7, net.n_parameters)
    assert ds.attrs["source"] == "actual" and ds.attrs["dtype"] == "float64"
    assert rk.config_of(ds)["network"]["hidden"] == 30
    assert (ds.task.values == probes.labels["task"]).all()
    explicit = rk.train(net, curriculum, probes, checkpoints=[0, 3, 300], record_weights=False)
    assert explicit.time.values.tolist() == [0, 3, 300] and "weights" not in explicit


def test_recorded_state_matches_the_network_at_those_weights(setup):
    env, net, curriculum, probes = setup
    ds = rk.train(net, curriculum, probes, checkpoints=3)
    start = net.flat_parameters().clone()
    assert np.allclose(ds.weights.isel(time=0), start.numpy())
    trained = MultitaskNetwork(env, hidden=30).load_flat_parameters(
        torch.as_tensor(ds.weights.isel(time=-1).values))
    (h,), f = trained.represent(probes)
    assert np.allclose(ds.hidden.isel(time=-1), h.detach().numpy())
    assert np.allclose(ds.output.isel(time=-1), f.detach().numpy())
    assert torch.equal(net.flat_parameters(), start), "the caller's network must not change"


def test_full_batch_step_is_plain_gradient_descent(setup):
    _, net, curriculum, probes = setup
    stage = Stage(curriculum.stages[0].patterns, 1, 0.05, reduction="mean")
    ds = rk.train(net, Curriculum((stage,)), probes, checkpoints=[0, 1])
    theta = net.flat_parameters().clone().requires_grad_(True)
    from repkernel.kernels import network_function

    fn, _ = network_function(net)
    x, c, y = stage.patterns.to()
    loss = 0.5 * ((fn(theta, x, c)[1] - y) ** 2).sum(1).mean()
    (grad,) = torch.autograd.grad(loss, theta)
    assert np.allclose(ds.weights.isel(time=1), (theta - 0.05 * grad).detach().numpy())
    assert np.isclose(ds.batch_loss.values[0], loss.item())


def test_loss_decreases_on_default_multitask_setup(setup):
    _, net, curriculum, probes = setup
    ds = rk.train(net, curriculum, probes, checkpoints=4)
    assert ds.loss.values[-1] < 0.5 * ds.loss.values[0]
    assert ds.probe_loss.values[-1] < ds.probe_loss.values[0]


def test_determinism_and_minibatch_policies(setup):
    _, net, curriculum, probes = setup
    patterns = curriculum.stages[0].patterns
    for batch in (10, "online"):
        cur = Curriculum((Stage(patterns, 40, 0.1, batch=batch, seed=5),))
        a = rk.train(net, cur, probes, checkpoints=3)
        b = rk.train(net, cur, probes, checkpoints=3)
        xr.testing.assert_identical(a, b)
        assert np.isfinite(a.batch_loss).all()


def test_multi_stage_curriculum_stage_coordinate():
    env = MultitaskEnvironment(3, 2)
    net = MultitaskNetwork(env, hidden=12)
    cur = Curriculum.single_then_concurrent(env, 40, steps=(20, 30), lr=0.1)
    ds = rk.train(net, cur, env.patterns(k=(1, 2)), checkpoints=[0, 10, 20, 21, 50])
    assert ds.stage.values.tolist() == [0, 0, 0, 1, 1]
    assert set(ds.k.values) == {1, 2}


def test_divergence_names_stage_step_rate_and_the_stability_bound():
    net = rk.DeepLinear([2, 3, 1], init_scale=1.0)
    data = rk.pattern_set(torch.randn(8, 2), torch.randn(8, 1))
    cur = Curriculum((Stage(data, 200, 50.0, name="warmup"),))
    with pytest.raises(rk.DivergenceError, match=r"stage 0 \(warmup\): the loss became "
                       r"(inf|nan) at step \d+ with learning rate 50; lower it below the "
                       r"stability bound") as raised:
        rk.train(net, cur, data, checkpoints=5)
    # the bound of full-batch gradient descent on the mean loss: 2 n / lam_max(J J^T), J the
    # Jacobian of the 8 outputs by explicit autograd at the initial weights
    theta = net.flat_parameters().clone()

    def outputs(flat):
        first, second = flat[:6].reshape(3, 2), flat[6:].reshape(1, 3)
        return (data.x @ first.T @ second.T).reshape(-1)

    jac = torch.autograd.functional.jacobian(outputs, theta)
    bound = 2 * 8 / torch.linalg.eigvalsh(jac @ jac.T).max().item()
    stated = float(re.search(r"stability bound ([\d.e+-]+)", str(raised.value)).group(1))
    assert stated == pytest.approx(bound, rel=1e-3)


def test_a_loss_that_doubles_is_divergence_even_when_it_stays_finite():
    env = MultitaskEnvironment(3, 3)
    net = MultitaskNetwork(env, hidden=20, init_scale=0.1)  # sigmoid outputs: the loss is bounded
    cur = Curriculum.interleaved(env, 40, 40, 1e6, reduction="sum")
    with pytest.raises(rk.DivergenceError, match=r"its loss rose from ([\d.]+) to ([\d.]+) by "
                                                 r"step \d+ with learning rate 1e\+06"):
        rk.train(net, cur, env.patterns(k=1, stimuli=3), checkpoints=3)


def test_several_hidden_layers_get_a_layer_dim():
    net = rk.MLP([2, 4, 3, 1], activation="tanh")
    data = rk.pattern_set(torch.randn(5, 2), torch.randn(5, 1))
    ds = rk.train(net, Curriculum((Stage(data, 4, 0.1),)), data, checkpoints=2)
    assert ds.hidden.dims == ("layer", "time", "item", "unit")
    assert ds.hidden.sizes["unit"] == 4 and np.isnan(ds.hidden.sel(layer=1, unit=3)).all()


def test_float32_and_device_follow_the_caller(setup):
    _, net, curriculum, probes = setup
    ds = rk.train(net, curriculum, probes, checkpoints=2, dtype=torch.float32, device="cpu")
    assert ds.hidden.dtype == np.float32 and ds.attrs["dtype"] == "float32"
    assert next(net.parameters()).dtype == torch.float64


@pytest.mark.parametrize("kwargs, match", [
    (dict(steps=-1, lr=0.1), "steps"),
    (dict(steps=5, lr=float("nan")), "lr"),
    (dict(steps=5, lr=0.1, batch=0), "batch"),
    (dict(steps=5, lr=0.1, reduction="avg"), "reduction"),
    (dict(steps=5, lr=0.1, loss="hinge"), "loss"),
])
def test_bad_stage_arguments(setup, kwargs, match):
    with pytest.raises(ValueError, match=match):
        Stage(setup[2].stages[0].patterns, **kwargs)


def test_bad_checkpoints(setup):
    _, net, curriculum, probes = setup
    with pytest.raises(ValueError, match="checkpoint"):
        rk.train(net, curriculum, probes, checkpoints=[0, 10_000])


# -- several networks side by side (one per seed) ----------------------------------------------


@pytest.mark.parametrize("kind", ["multitask", "deep_mlp_minibatch"])
def test_networks_trained_side_by_side_equal_training_them_one_by_one(kind):
    """The vectorized ensemble (vmap over stacked weights, loss summed over networks) against
    the plain trainer run once per network: equal up to round-off in every variable."""
    if kind == "multitask":
        env = MultitaskEnvironment(3, 3)
        nets = [MultitaskNetwork(env, hidden=16, init_scale=1.0, seed=s) for s in (3, 5, 8)]
        curriculum = Curriculum.single_then_concurrent(env, 60, steps=(15, 15), lr=0.05,
                                                       reduction="sum")
        probes = env.patterns(k=(1, 2), stimuli=3)
    else:
        nets = [rk.MLP([3, 6, 5, 2], activation="tanh", seed=s) for s in (3, 5, 8)]
        data = rk.pattern_set(torch.randn(24, 3, generator=torch.Generator().manual_seed(0)),
                              torch.randn(24, 2, generator=torch.Generator().manual_seed(1)))
        curriculum = Curriculum((Stage(data, 12, 0.1, batch=8, seed=4),
                                 Stage(data[:12], 6, 0.2)))
        probes = data
    together = rk.train(nets, curriculum, probes, checkpoints=4)
    assert together.seed.values.tolist() == [3, 5, 8]
    assert together.hidden.dims[:2] == (("seed", "layer") if kind != "multitask"
                                        else ("seed", "time"))
    for seed, net in zip((3, 5, 8), nets):
        alone = rk.train(net, curriculum, probes, checkpoints=4)
        assert rk.config_of(together.sel(seed=seed)) != {} and alone.attrs["source"] == "actual"
        for name in ("hidden", "output", "weights", "loss", "probe_loss", "batch_loss"):
            xr.testing.assert_allclose(together[name].sel(seed=seed, drop=True), alone[name],
                                       rtol=0, atol=1e-12)
    assert not torch.equal(nets[0].flat_parameters(), nets[1].flat_parameters())
    forecasts = rk.forecast(nets[:2], curriculum, probes, checkpoints=4, readout="linear")
    xr.testing.assert_identical(forecasts.sel(seed=5, drop=True).drop_attrs(),
                                rk.forecast(nets[1], curriculum, probes, checkpoints=4,
                                            readout="linear").drop_attrs())


def test_side_by_side_training_refuses_mixed_architectures_and_names_a_diverging_network():
    env = MultitaskEnvironment(3, 3)
    probes = env.patterns(k=1, stimuli=2)
    curriculum = Curriculum.interleaved(env, 20, 4, 0.1)
    with pytest.raises(ValueError, match="differ in architecture"):
        rk.train([MultitaskNetwork(env, hidden=8), MultitaskNetwork(env, hidden=9)],
                 curriculum, probes)
    with pytest.raises(ValueError, match="at least one network"):
        rk.train([], curriculum, probes)
    data = rk.pattern_set(torch.randn(8, 2), torch.randn(8, 1))
    tame, wild = rk.DeepLinear([2, 3, 1], init_scale=0.01), rk.DeepLinear([2, 3, 1],
                                                                            init_scale=3.0)
    with pytest.raises(rk.DivergenceError, match="training of network 1 diverged"):
        rk.train([tame, wild], Curriculum((Stage(data, 200, 2.0),)), data, checkpoints=5)
