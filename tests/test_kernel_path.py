import numpy as np
import pytest
import torch

import repkernel as rk
from repkernel import Curriculum, MultitaskEnvironment, MultitaskNetwork, Stage
from repkernel.kernels import ntk_matrix

ENV = MultitaskEnvironment(3, 3)
PROBES = ENV.patterns(k=1, stimuli=2)


def network(**options):
    return MultitaskNetwork(ENV, hidden=10, init_scale=0.5, seed=0, **options)


def two_stages(lr=0.05, steps=(24, 16)):
    single, concurrent = ENV.sample(24, seed=0), ENV.sample(16, {2: 1.0}, seed=1)
    return Curriculum((Stage(single, steps[0], lr, reduction="sum"),
                       Stage(concurrent, steps[1], lr, reduction="sum")))


def test_path_integral_converges_to_the_actual_change_as_checkpoints_densify():
    """From sparse checkpoints the estimate approaches the sum over every step (second order in
    the spacing); that sum differs from the actual change by the steps' second-order remainder,
    which falls with the rate (the gradient-flow limit)."""
    net, cur = network(), two_stages()
    dense = rk.kernel_path(net, cur, PROBES, checkpoints=41)  # every step
    actual = np.linalg.norm(dense.hidden_change[-1])
    gaps = [np.linalg.norm(rk.kernel_path(net, cur, PROBES, checkpoints=n).path_hidden_change[-1]
                           - dense.path_hidden_change[-1]) / actual for n in (3, 6, 11)]
    assert gaps[0] > gaps[1] > gaps[2] and gaps[2] < gaps[0] / 4, gaps
    floor = float(dense.path_error[-1])
    assert floor < 0.002
    slow = rk.kernel_path(net, two_stages(lr=0.05 / 4, steps=(96, 64)), PROBES, checkpoints=161)
    assert float(slow.path_error[-1]) < floor / 2
    assert float(slow.path_correlation[-1]) > 0.9999


def test_first_step_is_the_loss_weighted_kernel_and_the_kernel_matches_ntk():
    net = network()
    stage = Stage(ENV.sample(12, seed=4), 1, 0.1)
    result = rk.kernel_path(net, Curriculum((stage,)), PROBES, checkpoints=2, keep_kernel=True)
    lw = rk.loss_weighted_kernel(net, PROBES, stage=stage, target="hidden").sum("train_item")
    trained = rk.train(net, Curriculum((stage,)), PROBES, checkpoints=2)
    after = net.load_flat_parameters(torch.as_tensor(trained.weights.values[1]))
    np.testing.assert_allclose(result.path_hidden_change.isel(time=1), lw, atol=1e-14)
    np.testing.assert_allclose(result.kernel.isel(time=1).values,
                               ntk_matrix(after, PROBES).numpy(), atol=1e-13)


def test_kernel_statistics_have_their_identity_values_and_react_to_training():
    net = network()
    result = rk.kernel_path(net, two_stages(lr=0.2), PROBES, checkpoints=5, keep_kernel=True)
    assert abs(float(result.kernel_distance[0])) < 1e-12
    assert float(result.kernel_norm[0]) == pytest.approx(1.0)
    assert float(result.kernel_distance[-1]) > 1e-3  # the rich network's kernel moves
    kernel = result.kernel.isel(time=-1).values.reshape(PROBES.y.numel(), -1)
    y = PROBES.y.numpy().reshape(-1)
    alignment = y @ kernel @ y / (np.linalg.norm(kernel) * (y @ y))
    assert float(result.kernel_alignment[-1]) == pytest.approx(alignment, rel=1e-12)


def test_a_linear_model_has_a_frozen_kernel_and_an_exact_frozen_sum():
    """Only the linear readout trains with linear outputs: the kernel never moves, the frozen
    and the path sums agree, and the output change is exact at every step."""
    net = MultitaskNetwork(ENV, hidden=10, output_activation="linear", seed=0)
    net.set_trainable(["hidden_output", "task_output"])
    result = rk.kernel_path(net, two_stages(), PROBES, checkpoints=41)
    np.testing.assert_allclose(result.kernel_distance, 0, atol=1e-12)
    np.testing.assert_allclose(result.path_output_change, result.frozen_output_change,
                               atol=1e-13)
    np.testing.assert_allclose(result.path_output_change, result.output_change, atol=1e-12)


def test_uses_a_given_training_run_and_records_the_forecast_correlation():
    net, cur = network(), two_stages()
    steps = [0, 8, 24, 40]
    trained = rk.train(net, cur, PROBES, checkpoints=steps)
    fc = rk.forecast(net, cur, PROBES, checkpoints=steps)
    result = rk.kernel_path(net, cur, PROBES, trained=trained, forecast=fc)
    assert list(result.time.values) == steps
    assert result.forecast_correlation.dims == ("time", "readout")
    expected = rk.change_alignment(fc.hidden.sel(readout="linear").isel(time=-1).values,
                                   trained.hidden.isel(time=-1).values,
                                   trained.hidden.isel(time=0).values)["correlation"]
    assert float(result.forecast_correlation.sel(readout="linear")[-1]) == pytest.approx(
        float(expected))
    assert result.attrs["source"] == "kernel_path"


def test_bad_training_results_get_one_clear_line():
    net, cur = network(), two_stages()
    no_weights = rk.train(net, cur, PROBES, checkpoints=[0, 24, 40], record_weights=False)
    with pytest.raises(ValueError, match="record_weights=True"):
        rk.kernel_path(net, cur, PROBES, trained=no_weights)
    gap = rk.train(net, cur, PROBES, checkpoints=[0, 10, 40])
    with pytest.raises(ValueError, match=r"stage boundaries \[24\]"):
        rk.kernel_path(net, cur, PROBES, trained=gap)
    late = rk.train(net, cur, PROBES, checkpoints=[10, 24, 40])
    with pytest.raises(ValueError, match="no checkpoint at step 0"):
        rk.kernel_path(net, cur, PROBES, trained=late)
    other = MultitaskNetwork(ENV, hidden=10, init_scale=0.5, seed=1)
    with pytest.raises(ValueError, match="did not start from this network"):
        rk.kernel_path(other, cur, PROBES, trained=gap.sel(time=[0, 40]))
    with pytest.raises(ValueError, match="trained is a forecast"):
        rk.kernel_path(net, cur, PROBES, trained=rk.forecast(net, cur, PROBES, checkpoints=3))
    with pytest.raises(ValueError, match="several seeds"):
        rk.kernel_path(net, cur, PROBES, trained=gap.expand_dims(seed=[0, 1]))
    with pytest.raises(ValueError, match="another curriculum"):
        rk.kernel_path(net, two_stages(lr=0.01), PROBES, trained=gap)


def test_follows_the_requested_dtype():
    net, cur = network(), two_stages()
    single = rk.kernel_path(net, cur, PROBES, checkpoints=3, dtype=torch.float32)
    double = rk.kernel_path(net, cur, PROBES, checkpoints=3)
    assert single.path_hidden_change.dtype == np.float32 and single.attrs["dtype"] == "float32"
    np.testing.assert_allclose(single.path_hidden_change, double.path_hidden_change,
                               atol=1e-4 * float(np.abs(double.path_hidden_change).max()))
    np.testing.assert_allclose(single.kernel_distance, double.kernel_distance, atol=1e-4)
