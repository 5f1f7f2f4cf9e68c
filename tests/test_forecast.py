import numpy as np
import pytest
import torch

import repkernel as rk
from repkernel import Curriculum, MultitaskEnvironment, MultitaskNetwork, Stage
from repkernel.forecasting import forecast, modes
from repkernel.kernels import jacobians, ntk_matrix, pseudo_kernel_matrix

ENV = MultitaskEnvironment(3, 3)


def readout_only(hidden=12, **kwargs):
    """Only the linear readout trains: the linearization in the weights is exact."""
    net = MultitaskNetwork(ENV, hidden=hidden, output_activation="linear", **kwargs)
    return net.set_trainable(["hidden_output", "task_output"])


def assert_same(fc, actual, readout="network", atol=1e-10):
    for name in ("hidden", "output", "loss", "probe_loss"):
        np.testing.assert_allclose(fc[name].sel(readout=readout), actual[name], atol=atol,
                                   err_msg=name)
    np.testing.assert_allclose(fc.weights, actual.weights, atol=atol)


def three_stages(reduction):
    lrs = (0.3, 0.5, 0.2) if reduction == "mean" else (0.01, 0.02, 0.005)
    single, concurrent = ENV.sample(40), ENV.sample(30, {2: 1.0}, seed=1)
    return Curriculum((Stage(single, 25, lrs[0], reduction=reduction),
                       Stage(concurrent, 15, lrs[1], reduction=reduction),
                       Stage(single, 10, lrs[2], reduction=reduction)))


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_exact_for_a_linear_model_across_stages(reduction):
    net = readout_only()
    cur = three_stages(reduction)
    probes = ENV.patterns(k=(1, 2), stimuli=3)
    actual = rk.train(net, cur, probes, checkpoints=11)
    fc = forecast(net, cur, probes, checkpoints=11)
    assert fc.attrs["source"] == "forecast"
    assert list(fc.readout.values) == ["linear", "network"]
    assert_same(fc, actual, "network")
    assert_same(fc, actual, "linear")


def test_lanczos_path_is_exact_and_agrees_with_the_dense_path():
    """The matrix-free Krylov path equals gradient descent on a linear model and the dense
    eigendecomposition on a nonlinear one."""
    net = readout_only()
    cur = three_stages("sum")
    probes = ENV.patterns(k=1, stimuli=3)
    actual = rk.train(net, cur, probes, checkpoints=6)
    dense_nonlinear = MultitaskNetwork(ENV, hidden=20, init_scale=1.0)
    dense = {time: forecast(dense_nonlinear, cur, probes, checkpoints=6, time=time,
                            factorization="dense")
             for time in ("discrete", "continuous")}
    assert_same(forecast(net, cur, probes, checkpoints=6, factorization="krylov"), actual)
    for time, expected in dense.items():
        krylov = forecast(dense_nonlinear, cur, probes, checkpoints=6, time=time,
                          factorization="krylov")
        np.testing.assert_allclose(krylov.weights, expected.weights, atol=1e-11)
        np.testing.assert_allclose(krylov.hidden, expected.hidden, atol=1e-11)


def test_repeated_patterns_count_with_their_multiplicity():
    net = readout_only()
    data = ENV.sample(15, seed=4)
    doubled = rk.PatternSet.concat([data, data[:7], data[:3]])
    cur = Curriculum((Stage(doubled, 30, 0.4), Stage(doubled, 10, 0.02, reduction="sum")))
    actual = rk.train(net, cur, data, checkpoints=5)
    assert_same(forecast(net, cur, data, checkpoints=5), actual)


def test_exact_in_primal_space_when_parameters_are_few():
    net = rk.MLP([3, 4, 2], activation="tanh").set_trainable(["layers.1.weight",
                                                              "layers.1.bias"])
    data = rk.pattern_set(torch.randn(30, 3), torch.randn(30, 2))
    assert net.n_parameters < 30 * 2  # P < nO: the primal path
    cur = Curriculum((Stage(data, 40, 0.2), Stage(data[:10], 20, 0.1, reduction="sum")))
    actual = rk.train(net, cur, data, checkpoints=7)
    assert_same(forecast(net, cur, data, checkpoints=7), actual)


def test_time_zero_is_the_initial_network():
    net = MultitaskNetwork(ENV, hidden=10)
    probes = ENV.patterns(k=1, stimuli=4)
    fc = forecast(net, Curriculum.interleaved(ENV, 20, 10, 0.05), probes, checkpoints=3)
    (h,), f = net.represent(probes)
    for readout in ("linear", "network"):
        np.testing.assert_allclose(fc.hidden.sel(readout=readout).isel(time=0), h.detach())
        np.testing.assert_allclose(fc.output.sel(readout=readout).isel(time=0), f.detach())


def test_long_time_is_kernel_regression():
    net = readout_only(hidden=30)
    train = ENV.sample(12, seed=2)
    probes = ENV.patterns(k=1, stimuli=2)
    cur = Curriculum((Stage(train, 10**7, 0.5),))
    fc = forecast(net, cur, probes, checkpoints=[0, 10**7], time="continuous", readout="linear")
    theta_tt = ntk_matrix(net, train).reshape(12 * 9, 12 * 9)
    theta_pt = ntk_matrix(net, probes, train).reshape(len(probes) * 9, 12 * 9)
    f0_train, f0_probe = net.represent(train)[1].detach(), net.represent(probes)[1].detach()
    residual = (train.y - f0_train).reshape(-1)
    expected = f0_probe.reshape(-1) + theta_pt @ torch.linalg.lstsq(theta_tt, residual).solution
    np.testing.assert_allclose(fc.output.isel(time=-1, readout=0).values.reshape(-1), expected,
                               atol=1e-6)


def autograd_jacobians(net, patterns):
    """J_h (n, H, P) and J_f (n, O, P) by plain autograd, independent of repkernel.kernels."""
    theta0 = net.flat_parameters()

    def outputs(theta):
        fn, _ = rk.kernels.network_function(net)  # functional forward only, no kernel code
        (h,), f = fn(theta, patterns.x, patterns.c)
        return h, f

    return torch.autograd.functional.jacobian(outputs, theta0)


def test_one_step_change_is_the_loss_weighted_kernel_sum():
    net = MultitaskNetwork(ENV, hidden=20, init_scale=0.5)
    train, probes = ENV.sample(30, seed=1), ENV.patterns(k=1, stimuli=3)
    jh_probe, _ = autograd_jacobians(net, probes)
    _, jf_train = autograd_jacobians(net, train)
    g = (net.represent(train)[1] - train.y).detach()
    errors = []
    for lr in (0.4, 0.2):
        cur = Curriculum((Stage(train, 1, lr),))
        actual = rk.train(net, cur, probes, checkpoints=[0, 1])
        fc = forecast(net, cur, probes, checkpoints=[0, 1])
        # sum_i PNTK(x, x_i) = -(eta / n) sum_i Pi(x, x_i) g_i, Pi = J_h J_f^T
        pseudo_kernel = torch.einsum("iup,jop->iujo", jh_probe, jf_train)
        predicted = (-(lr / 30) * torch.einsum("iujo,jo->iu", pseudo_kernel, g)).numpy()
        change = fc.hidden.sel(readout="linear").diff("time").isel(time=0)
        np.testing.assert_allclose(change, predicted, atol=1e-12)
        # one step of the forecast is one step of gradient descent: the network readout is exact
        assert_same(fc, actual, "network", atol=1e-12)
        actual_change = actual.hidden.isel(time=1) - actual.hidden.isel(time=0)
        errors.append(float(abs(actual_change - predicted).max()))
    assert errors[1] < errors[0] / 3, f"error must be second order in lr, got {errors}"


@pytest.mark.parametrize("init_scale", [0.1, 1.0])
def test_change_alignment_early_in_training(init_scale):
    env = MultitaskEnvironment(4, 3, 3)
    net = MultitaskNetwork(env, hidden=50, init_scale=init_scale)
    cur = Curriculum.interleaved(env, 100, 300, 0.02, reduction="sum")
    probes = env.sample(100, seed=5)
    steps = [0, 5, 10, 20]
    actual = rk.train(net, cur, probes, checkpoints=steps)
    fc = forecast(net, cur, probes, checkpoints=steps, readout="linear")
    h0 = actual.hidden.isel(time=0)
    for t in range(1, len(steps)):
        da = (actual.hidden.isel(time=t) - h0).values.ravel()
        df = (fc.hidden.isel(time=t, readout=0) - h0).values.ravel()
        assert np.corrcoef(da, df)[0, 1] > 0.95


def test_continuous_matches_discrete_for_small_rates():
    net = MultitaskNetwork(ENV, hidden=15)
    cur = Curriculum.interleaved(ENV, 30, 200, 0.01)
    probes = ENV.patterns(k=1, stimuli=2)
    discrete = forecast(net, cur, probes, checkpoints=5, readout="linear")
    continuous = forecast(net, cur, probes, checkpoints=5, readout="linear", time="continuous")
    change = float(abs(discrete.hidden.isel(time=-1) - discrete.hidden.isel(time=0)).max())
    gap = float(abs(discrete.hidden - continuous.hidden).max())
    assert gap < 0.01 * change


def test_relinearizing_every_step_is_gradient_descent():
    net = MultitaskNetwork(ENV, hidden=10, init_scale=1.0)
    cur = Curriculum((Stage(ENV.sample(20), 12, 0.5), Stage(ENV.sample(20, seed=3), 8, 0.3)))
    probes = ENV.patterns(k=1, stimuli=2)
    actual = rk.train(net, cur, probes, checkpoints=6)
    fc = forecast(net, cur, probes, checkpoints=6, relinearize=20)
    assert_same(fc, actual, "network", atol=1e-10)
    frozen = forecast(net, cur, probes, checkpoints=6, relinearize=1)
    assert float(abs(frozen.weights - actual.weights).max()) > 1e-6


def test_auto_with_a_tight_tolerance_is_gradient_descent():
    """Segments shrink to single steps, whose exponential Euler step is a gradient step."""
    net = MultitaskNetwork(ENV, hidden=10, init_scale=1.0)
    cur = Curriculum((Stage(ENV.sample(20), 12, 0.5), Stage(ENV.sample(20, seed=3), 8, 0.3)))
    probes = ENV.patterns(k=1, stimuli=2)
    actual = rk.train(net, cur, probes, checkpoints=6)
    fc = forecast(net, cur, probes, checkpoints=6, relinearize="auto", tolerance=1e-12)
    assert_same(fc, actual, "network", atol=1e-10)
    assert fc.jacobian_evaluations == 20 and (fc.segment_steps == 1).all()


@pytest.mark.parametrize("time", ["discrete", "continuous"])
def test_auto_converges_and_never_needs_more_jacobians_than_steps(time):
    net = MultitaskNetwork(ENV, hidden=20, init_scale=0.3)
    cur = Curriculum((Stage(ENV.sample(40), 150, 0.05, reduction="sum"),
                      Stage(ENV.sample(30, {2: 1.0}, seed=2), 50, 0.02, reduction="sum")))
    probes = ENV.sample(30, seed=5)
    actual = rk.train(net, cur, probes, checkpoints=9)
    errors, jacobians = [], []
    for tolerance in (0.3, 0.03, 0.003):
        fc = forecast(net, cur, probes, checkpoints=9, relinearize="auto", tolerance=tolerance,
                      time=time)
        assert fc.jacobian_evaluations <= cur.total_steps
        # the segment log tiles each stage; every segment meets the tolerance unless 1 step
        assert int(fc.segment_steps.sum()) == cur.total_steps
        assert (np.diff(fc.segment_start) > 0).all()
        assert ((fc.segment_error <= tolerance) | (fc.segment_steps == 1)).all()
        assert set(fc.segment_start.values) >= set(cur.boundaries[:-1])
        errors.append(float(abs(fc.weights - actual.weights).max()))
        jacobians.append(fc.jacobian_evaluations)
    assert errors[0] > errors[1] > errors[2] and jacobians[0] < jacobians[1] < jacobians[2]
    if time == "discrete":
        assert errors[2] < 0.05 * errors[0]


def test_equal_segments_log_their_error():
    net = MultitaskNetwork(ENV, hidden=10, init_scale=1.0)
    cur = Curriculum.interleaved(ENV, 20, 40, 0.5)
    probes = ENV.patterns(k=1, stimuli=2)
    frozen = forecast(net, cur, probes, checkpoints=3)
    segments = forecast(net, cur, probes, checkpoints=3, relinearize=4)
    assert frozen.jacobian_evaluations == 1 and segments.jacobian_evaluations == 4
    assert segments.segment_start.values.tolist() == [0, 10, 20, 30]
    assert float(segments.segment_error.max()) < float(frozen.segment_error[0])


@pytest.mark.parametrize("tolerance", [0, -1.0, float("nan"), float("inf"), "tight"])
def test_bad_tolerance(tolerance):
    net = MultitaskNetwork(ENV, hidden=6)
    cur = Curriculum.interleaved(ENV, 10, 5, 0.1)
    with pytest.raises(ValueError, match="tolerance must be a positive finite number"):
        forecast(net, cur, ENV.patterns(stimuli=2), relinearize="auto", tolerance=tolerance)


def test_matrix_free_path_never_forms_a_kernel_too_large_for_memory():
    """nO = 180,000: a dense kernel would need 259 GB; the Krylov path stays linear in n."""
    torch.manual_seed(0)
    net = rk.MLP([10, 40, 9], activation="tanh")
    data = rk.pattern_set(torch.randn(20000, 10), torch.randn(20000, 9))
    cur = Curriculum((Stage(data, 3, 0.1),))
    fc = forecast(net, cur, data[:50], checkpoints=[0, 3], readout="linear")
    assert np.isfinite(fc.hidden.values).all() and float(fc.loss[-1, 0]) < float(fc.loss[0, 0])


def test_cross_entropy_matches_gradient_descent_when_relinearized_each_step():
    net = MultitaskNetwork(ENV, hidden=10, init_scale=1.0)
    cur = Curriculum((Stage(ENV.sample(20), 10, 0.5, loss="bce"),))
    probes = ENV.patterns(k=1, stimuli=2)
    actual = rk.train(net, cur, probes, checkpoints=6)
    assert_same(forecast(net, cur, probes, checkpoints=6, relinearize=10), actual)


def test_cross_entropy_exact_for_a_model_linear_in_its_weights():
    net = rk.MLP([3, 5, 2], activation="sigmoid").set_trainable(["layers.1.weight"])
    with torch.no_grad():
        net.layers[1].bias.fill_(0.5)
        net.layers[1].weight.mul_(0.1)
    data = rk.pattern_set(torch.randn(8, 3), 0.2 + 0.6 * torch.rand(8, 2))
    cur = Curriculum((Stage(data, 30, 0.05, loss="bce"),))
    actual = rk.train(net, cur, data, checkpoints=4)
    assert ((actual.output > 0) & (actual.output < 1)).all(), "cross-entropy needs f in (0, 1)"
    assert_same(forecast(net, cur, data, checkpoints=4), actual)
    flow = forecast(net, cur, data, checkpoints=4, time="continuous", readout="linear")
    assert float(abs(flow.output.isel(time=-1) - actual.output.isel(time=-1)).max()) < 0.05


def test_minibatch_stages_forecast_their_full_batch_drift():
    net = readout_only()
    data = ENV.sample(24)
    online = Curriculum((Stage(data, 48, 0.01, batch="online"),))
    full = Curriculum((Stage(data, 2, 0.01, reduction="sum"),))  # 2 epochs of drift
    a = forecast(net, online, data, checkpoints=[0, 48])
    b = forecast(net, full, data, checkpoints=[0, 2])
    # 48 online steps drift like 48 full-batch steps of rate 0.01 * 24 / 24 on the mean loss
    per_step = Curriculum((Stage(data, 48, 0.01),))
    c = forecast(net, per_step, data, checkpoints=[0, 48])
    np.testing.assert_allclose(a.weights, c.weights, atol=1e-12)
    assert not np.allclose(a.weights, b.weights)


@pytest.mark.parametrize("factorization", ["dense", "krylov"])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_unstable_rate_raises_with_the_bound(factorization, reduction):
    net = readout_only()
    data = ENV.sample(20)
    lam_max = torch.linalg.eigvalsh(ntk_matrix(net, data).reshape(180, 180)).max().item()
    bound = (2 * 20 if reduction == "mean" else 2) / lam_max
    with pytest.raises(ValueError, match=f"stability bound {bound:.4g} "):
        forecast(net, Curriculum((Stage(data, 5, 1.01 * bound, reduction=reduction),)), data,
                 checkpoints=2, factorization=factorization)
    forecast(net, Curriculum((Stage(data, 5, 0.99 * bound, reduction=reduction),)), data,
             checkpoints=2, factorization=factorization)
    forecast(net, Curriculum((Stage(data, 5, 1.01 * bound, reduction=reduction),)), data,
             checkpoints=2, time="continuous", factorization=factorization)


def test_modes_are_eigenpairs_with_their_hidden_patterns():
    net = MultitaskNetwork(ENV, hidden=8)
    stage = Stage(ENV.sample(10), 100, 0.1)
    probes = ENV.patterns(k=1, stimuli=2)
    m = modes(net, stage, probes, n_modes=5)
    assert (np.diff(m.eigenvalue) <= 0).all()
    np.testing.assert_allclose(m.timescale, 10 / (0.1 * m.eigenvalue))
    pi = pseudo_kernel_matrix(net, probes, stage.patterns)[0]
    u = torch.as_tensor(m.train_pattern.values)
    expected = torch.einsum("iujo,mjo->miu", pi, u)
    np.testing.assert_allclose(m.hidden_pattern, expected, atol=1e-12)


def test_dtype_follows_the_caller_and_network_untouched():
    net = MultitaskNetwork(ENV, hidden=6)
    before = net.flat_parameters().clone()
    cur = Curriculum.interleaved(ENV, 10, 5, 0.1)
    fc = forecast(net, cur, ENV.patterns(stimuli=2), checkpoints=2, dtype=torch.float32)
    assert fc.hidden.dtype == np.float32 and fc.attrs["dtype"] == "float32"
    assert torch.equal(net.flat_parameters(), before)


def test_bad_arguments():
    net = MultitaskNetwork(ENV, hidden=6)
    cur = Curriculum.interleaved(ENV, 10, 5, 0.1)
    probes = ENV.patterns(stimuli=2)
    for kwargs in (dict(readout="both"), dict(time="euler"), dict(relinearize=0),
                   dict(relinearize="adaptive"), dict(relinearize=True),
                   dict(factorization="lu")):
        with pytest.raises(ValueError):
            forecast(net, cur, probes, **kwargs)


def test_forecast_and_actual_concatenate_along_source():
    import xarray as xr

    net = MultitaskNetwork(ENV, hidden=6)
    cur = Curriculum.interleaved(ENV, 10, 5, 0.1)
    probes = ENV.patterns(stimuli=2)
    actual = rk.train(net, cur, probes, checkpoints=3)
    fc = forecast(net, cur, probes, checkpoints=3).sel(readout="network", drop=True)
    both = xr.concat([fc, actual], dim="source", coords="minimal", compat="override",
                     join="exact")
    assert both.hidden.sizes["source"] == 2
    assert jacobians(net, probes).output.shape[-1] == net.n_parameters


def test_cli_writes_a_forecast_that_concatenates_with_training(tmp_path):
    import subprocess
    import sys

    import xarray as xr

    path = tmp_path / "forecast.nc"
    out = subprocess.run(
        [sys.executable, "-m", "repkernel_cli", "forecast", "--steps", "30", "--checkpoints", "4",
         "--hidden", "10", "--n-train", "20", "--out", str(path)],
        capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    with xr.open_dataset(path) as ds:
        assert ds.attrs["source"] == "forecast"
        assert ds.hidden.dims == ("time", "readout", "item", "unit")
        assert ds.sizes["time"] == 4 and list(ds.readout.values) == ["linear", "network"]
    unstable = subprocess.run(
        [sys.executable, "-m", "repkernel_cli", "forecast", "--steps", "3", "--hidden", "10",
         "--n-train", "20", "--lr", "100", "--out", str(tmp_path / "x.nc")],
        capture_output=True, text=True, timeout=300)
    assert unstable.returncode == 1 and "stability bound" in unstable.stderr
    assert "Traceback" not in unstable.stderr and not (tmp_path / "x.nc").exists()
    adaptive = subprocess.run(
        [sys.executable, "-m", "repkernel_cli", "forecast", "--steps", "30", "--checkpoints", "4",
         "--hidden", "10", "--n-train", "20", "--relinearize", "auto", "--tolerance", "0.2",
         "--out", str(tmp_path / "auto.nc")],
        capture_output=True, text=True, timeout=300)
    assert adaptive.returncode == 0, adaptive.stderr
    with xr.open_dataset(tmp_path / "auto.nc") as ds:
        assert int(ds.segment_steps.sum()) == 30 and ds.attrs["jacobian_evaluations"] >= 1
    wrong = subprocess.run(
        [sys.executable, "-m", "repkernel_cli", "forecast", "--relinearize", "many", "--out",
         str(tmp_path / "y.nc")], capture_output=True, text=True, timeout=300)
    assert wrong.returncode == 1 and "--relinearize must be" in wrong.stderr
    assert "Traceback" not in wrong.stderr and not (tmp_path / "y.nc").exists()


def test_modes_timescales_in_steps_for_the_summed_loss():
    net = MultitaskNetwork(ENV, hidden=8)
    stage = Stage(ENV.sample(10), 100, 0.02, reduction="sum")
    m = modes(net, stage, ENV.patterns(k=1, stimuli=2), n_modes=3)
    np.testing.assert_allclose(m.timescale, 1 / (0.02 * m.eigenvalue))  # rho = eta for "sum"
    assert m.timescale.attrs["units"] == "steps"


def test_cross_entropy_forecast_warns_when_linear_outputs_leave_the_unit_interval():
    net = MultitaskNetwork(ENV, hidden=10, init_scale=1.0)
    data = ENV.sample(20)
    cur = Curriculum((Stage(data, 10, 20.0, loss="bce"),))
    with pytest.warns(RuntimeWarning, match=r"leave \(0, 1\)"):
        forecast(net, cur, data, checkpoints=2, readout="network")


def test_probes_that_do_not_fit_get_one_line():
    net = MultitaskNetwork(ENV, hidden=6)
    cur = Curriculum.interleaved(ENV, 10, 5, 0.1)
    wrong = rk.pattern_set(torch.randn(4, 5), torch.randn(4, 9), torch.zeros(4, 9))
    with pytest.raises(ValueError, match="probes do not fit the network"):
        forecast(net, cur, wrong)


@pytest.mark.parametrize("relinearize", [1, 3, "auto"])
def test_a_stage_without_steps_records_step_zero_once(relinearize):
    net = MultitaskNetwork(ENV, hidden=10)
    cur = Curriculum((Stage(ENV.sample(20), 0, 0.1), Stage(ENV.sample(20, seed=2), 10, 0.1)))
    probes = ENV.sample(10, seed=3)
    actual = rk.train(net, cur, probes, checkpoints=4)
    fc = forecast(net, cur, probes, checkpoints=4, relinearize=relinearize)
    assert fc.time.values.tolist() == actual.time.values.tolist() == [0, 3, 7, 10]
    assert int(fc.segment_steps.sum()) == 10
    np.testing.assert_allclose(fc.hidden.isel(time=0, readout=1), actual.hidden.isel(time=0))
