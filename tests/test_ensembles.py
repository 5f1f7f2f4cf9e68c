"""Seed ensembles, calibration and the Monte-Carlo kernel."""

import numpy as np
import pytest
import torch
import xarray as xr

import repkernel as rk
from repkernel.wide import WideMLP


def _data(n=6, d=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g)
    return rk.pattern_set(x, torch.sin(x[:, :2]))


def test_monte_carlo_kernel_is_the_seed_mean_with_its_standard_error():
    patterns = _data()
    nets = [rk.MLP([3, 8, 2], activation="tanh", seed=s) for s in range(4)]
    mc = rk.monte_carlo_kernel(lambda s: nets[s], range(4), patterns, train=[0, 2, 4])
    kernels = torch.stack([rk.ntk_matrix(net, patterns) for net in nets]).numpy()
    np.testing.assert_allclose(mc.ntk.values, kernels.mean(0), rtol=1e-12)
    np.testing.assert_allclose(mc.ntk_standard_error.values, kernels.std(0, ddof=1) / 2,
                               rtol=1e-9, atol=1e-14)
    pseudo = torch.stack([rk.pseudo_kernel_matrix(net, patterns, patterns[[0, 2, 4]])[0]
                          for net in nets]).numpy()
    np.testing.assert_allclose(mc.pseudo_kernel.values, pseudo.mean(0), rtol=1e-12)
    outputs = torch.stack([net(patterns.x)[1].detach() for net in nets]).numpy()
    flat = outputs.reshape(4, -1)
    np.testing.assert_allclose(mc.nngp.values.reshape(12, 12), np.cov(flat.T), rtol=1e-9,
                               atol=1e-14)
    np.testing.assert_allclose(mc.output_mean.values, outputs.mean(0), rtol=1e-12)


def test_monte_carlo_kernel_estimates_the_infinite_width_kernel():
    """Width-512 ReLU networks, 16 seeds: the seed mean is within a few standard errors (plus
    the O(1/width) bias) of the analytic NTK, and the empirical NNGP matches the analytic one
    within its sampling error (relative sd sqrt(2 / 15) on the diagonal)."""
    patterns = _data(5, 3, 1)
    mc = rk.monte_carlo_kernel(lambda s: WideMLP(3, 512, 2, b_std=0.2, seed=s), range(16),
                               patterns)
    limit = rk.infinite_width_kernels(patterns, 2, b_std=0.2)
    mean, se = mc.ntk.values[:, 0, :, 0], mc.ntk_standard_error.values[:, 0, :, 0]
    z = np.abs(mean - limit.ntk.values) / (se + 2 / 512 * np.abs(limit.ntk.values))
    assert z.max() < 4.0
    relative = np.abs(np.diag(mc.nngp.values[:, 0, :, 0]) / np.diag(limit.nngp.values) - 1)
    assert relative.max() < 4 * np.sqrt(2 / 15)


def test_monte_carlo_forecast_of_identical_networks_is_the_forecast():
    """When every seed yields the same network the averaged kernels are that network's, so the
    Monte-Carlo forecast must equal repkernel.forecast's linear readout (hidden and output)."""
    patterns = _data(7)
    net = rk.MLP([3, 10, 2], activation="tanh", seed=3)
    train = [0, 1, 2, 3]
    curriculum = rk.Curriculum([rk.Stage(patterns[train], steps=30, lr=0.4)])
    expected = rk.forecast(net, curriculum, patterns, checkpoints=[0, 12, 30], readout="linear")
    mc = rk.monte_carlo_kernel(lambda s: net, [0, 1], patterns, train=train)
    got = rk.monte_carlo_forecast(mc, patterns.y[train], [0, 12, 30], lr=0.4)
    np.testing.assert_allclose(got["mean"].values,
                               expected.output.sel(readout="linear").values, atol=1e-10)
    np.testing.assert_allclose(got.hidden.values, expected.hidden.sel(readout="linear").values,
                               atol=1e-10)
    np.testing.assert_allclose(got["variance"].values, 0.0, atol=1e-20)
    light = rk.monte_carlo_kernel(lambda s: net, [0, 1], patterns, train=train,
                                  pseudo_kernel=False)
    assert "pseudo_kernel" not in light
    outputs_only = rk.monte_carlo_forecast(light, patterns.y[train], [0, 12, 30], lr=0.4)
    assert "hidden" not in outputs_only
    np.testing.assert_allclose(outputs_only["mean"].values, got["mean"].values, atol=1e-12)


def test_ensemble_stacks_runs_on_a_seed_dim_and_summarizes():
    patterns = _data()
    curriculum = rk.Curriculum([rk.Stage(patterns, steps=5, lr=0.1)])
    runs = rk.ensemble(lambda s: rk.train(rk.MLP([3, 4, 2], seed=s), curriculum, patterns,
                                          checkpoints=3), [0, 1, 2])
    assert runs.sizes["seed"] == 3 and list(runs.seed.values) == [0, 1, 2]
    summary = rk.summarize(runs)
    np.testing.assert_allclose(summary.output_mean.values, runs.output.values.mean(0))
    np.testing.assert_allclose(summary.output_std.values, runs.output.values.std(0, ddof=1))
    assert "config" in summary.attrs


def test_a_stored_ensemble_streams_from_disk_and_equals_the_one_in_memory(tmp_path):
    patterns = _data()
    curriculum = rk.Curriculum([rk.Stage(patterns, steps=6, lr=0.1)])

    def run(seed):
        return rk.train(rk.MLP([3, 4, 2], seed=seed), curriculum, patterns, checkpoints=4)

    in_memory = rk.ensemble(run, [0, 1, 2])
    stored = rk.ensemble(run, [0, 1, 2], store=tmp_path / "runs")
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == [
        "seed_0.nc", "seed_1.nc", "seed_2.nc"]
    hidden = stored.hidden.data  # lazy: one chunk per checkpoint, every seed in it
    assert hidden.chunks[0] == (3,) and set(hidden.chunks[1]) == {1}
    xr.testing.assert_allclose(stored.hidden.load(), in_memory.hidden)
    summary = rk.summarize(stored)
    np.testing.assert_allclose(summary.output_std.values, in_memory.output.values.std(0, ddof=1))
    forecast = stored.hidden.isel(unit=0)
    bands = rk.calibration(forecast, in_memory.hidden.isel(unit=0), over="item")
    assert np.isfinite(bands.coverage.values).all()
    assert stored.attrs["seeds"] == "0,1,2"


def test_calibration_of_a_matching_and_a_shifted_forecast():
    rng = np.random.default_rng(0)
    dims = ("seed", "time", "item")
    truth = rng.normal(size=(1, 3, 50)) * 2
    forecast = xr.DataArray(truth + rng.normal(size=(400, 3, 50)), dims=dims)
    actual = xr.DataArray(truth + rng.normal(size=(400, 3, 50)), dims=dims)
    matched = rk.calibration(forecast, actual, over="item")
    np.testing.assert_allclose(matched.coverage.values, 0.9, atol=0.02)
    assert (matched.mean_correlation.values > 0.95).all()
    assert matched.coverage.dims == ("time",)
    shifted = rk.calibration(forecast, actual + 3.0, over="item")
    assert (shifted.coverage.values < 0.3).all()


def test_bad_arguments_are_rejected():
    patterns = _data()
    with pytest.raises(ValueError, match="at least 2 seeds"):
        rk.monte_carlo_kernel(lambda s: WideMLP(3, 4, seed=s), [0], patterns)
    with pytest.raises(ValueError, match="distinct"):
        rk.ensemble(lambda s: xr.Dataset(), [1, 1])
    with pytest.raises(ValueError, match="RepresentationNetwork"):
        rk.monte_carlo_kernel(lambda s: None, [0, 1], patterns)
    data = xr.DataArray(np.zeros((3, 2)), dims=("seed", "item"))
    with pytest.raises(ValueError, match="band"):
        rk.calibration(data, data, band=1.5)
    with pytest.raises(ValueError, match="seed"):
        rk.summarize(data.isel(seed=0))
    with pytest.raises(ValueError, match="no training items"):
        mc = rk.monte_carlo_kernel(lambda s: WideMLP(3, 4, seed=s), [0, 1], patterns)
        rk.monte_carlo_forecast(mc, np.zeros((2, 1)), [1])


def test_band_figure_draws_both_sources():
    rng = np.random.default_rng(1)
    data = xr.DataArray(rng.normal(size=(5, 4)), dims=("seed", "time"),
                        coords={"time": [0, 1, 2, 3]}, name="similarity")
    figure = rk.band_figure(data, data + 1)
    axis = figure.axes[0]
    assert len(axis.lines) == 2 and len(axis.collections) == 2
    np.testing.assert_allclose(axis.lines[1].get_ydata(), data.mean("seed").values)
    with pytest.raises(ValueError, match="dims"):
        rk.band_figure(data.expand_dims(item=2), data)
