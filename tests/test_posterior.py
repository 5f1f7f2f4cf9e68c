"""The linearized-ensemble and GP posteriors against closed forms, explicit gradient descent, the
forecast of one network, and an ensemble of wide linearized networks."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import repkernel as rk
from repkernel.wide import WideMLP, wide_ntk_matrix


def _kernels(n=10, depth=2, seed=0):
    x = torch.randn(n, 3, generator=torch.Generator().manual_seed(seed))
    return rk.infinite_width_kernels(x, depth, "relu", b_std=0.1)


TRAIN = np.arange(6)


def test_infinite_time_without_prior_variance_is_kernel_regression():
    ds = _kernels()
    theta, y = ds.ntk.values, np.linspace(-1, 1, 12).reshape(6, 2)
    post = rk.posterior(ds.ntk, TRAIN, y, [np.inf], covariance=True)
    expected = theta[:, :6] @ np.linalg.solve(theta[:6, :6], y)
    np.testing.assert_allclose(post["mean"].values[0], expected, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(post["covariance"].values, 0.0)
    gp = rk.gp_posterior(ds.ntk, TRAIN, y)
    np.testing.assert_allclose(post["mean"].values[0], gp["mean"].values, rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("scale", [0.5, 2.0])
def test_infinite_time_with_ntk_prior_is_exact_gp_regression(scale):
    """Prior covariance s^2 Theta at t = inf: the GP posterior with kernel s^2 Theta, no noise,
    whose covariance is s^2 [Theta(x, x') - Theta(x, X) Theta(X, X)^-1 Theta(X, x')]."""
    ds = _kernels()
    theta, y = ds.ntk.values, np.sin(np.arange(6.0))
    post = rk.posterior(ds.ntk, TRAIN, y, [np.inf], prior_covariance=scale**2 * ds.ntk,
                        covariance=True)
    expected = scale**2 * (theta - theta[:, :6] @ np.linalg.solve(theta[:6, :6], theta[:6, :]))
    np.testing.assert_allclose(post["covariance"].values[0], expected, atol=1e-9 * scale**2)
    gp = rk.gp_posterior(ds.ntk, TRAIN, y, scale=scale, covariance=True)
    np.testing.assert_allclose(post["covariance"].values[0], gp["covariance"].values, atol=1e-9)
    np.testing.assert_allclose(post["variance"].values[0, :6], 0.0, atol=1e-9)


def test_time_zero_is_the_prior():
    ds = _kernels()
    prior_mean = np.arange(10.0) / 10
    post = rk.posterior(ds.ntk, TRAIN, np.ones(6), [0], prior_covariance=ds.nngp,
                        prior_mean=prior_mean, covariance=True)
    np.testing.assert_allclose(post["mean"].values[0, :, 0], prior_mean, atol=1e-12)
    np.testing.assert_allclose(post["covariance"].values[0], ds.nngp.values, atol=1e-12)


def test_discrete_mean_and_covariance_follow_explicit_gradient_descent():
    """f_{k+1} = f_k - rho Theta(., X) (f_k(X) - Y) iterated on the prior mean (mean) and on the
    linear map from initial outputs to outputs (covariance, M_k K M_k^T)."""
    ds = _kernels()
    theta, nngp = ds.ntk.values, ds.nngp.values
    y, lr, n = np.cos(np.arange(6.0))[:, None], 0.5, 6
    rho = lr / n
    f = np.zeros((10, 1))
    m_map = np.eye(10)  # f_k = M_k f_0 + b_k, deterministic part b_k is f above with f_0 = 0
    means, covs = [], []
    for k in range(31):
        if k in (0, 7, 30):
            means.append(f.copy())
            covs.append(m_map @ nngp @ m_map.T)
        f = f - rho * theta[:, :6] @ (f[:6] - y)
        m_map = m_map - rho * theta[:, :6] @ m_map[:6]
    post = rk.posterior(ds.ntk, TRAIN, y, [0, 7, 30], lr=lr, time="discrete",
                        prior_covariance=ds.nngp, covariance=True)
    np.testing.assert_allclose(post["mean"].values, np.stack(means), rtol=1e-9, atol=1e-11)
    np.testing.assert_allclose(post["covariance"].values, np.stack(covs), rtol=1e-9,
                               atol=1e-11)
    alone = rk.posterior(ds.ntk, TRAIN, y, [0, 7, 30], lr=lr, time="discrete",
                         prior_covariance=ds.nngp)  # the variance without the (T, p, p) matrix
    np.testing.assert_allclose(alone["variance"].values[..., 0],
                               np.diagonal(np.stack(covs), axis1=1, axis2=2), rtol=1e-9,
                               atol=1e-11)


def test_results_follow_the_kernels_dtype():
    ds = _kernels()
    ntk = torch.as_tensor(ds.ntk.values, dtype=torch.float32)
    nngp = torch.as_tensor(ds.nngp.values, dtype=torch.float32)
    post = rk.posterior(ntk, TRAIN, torch.ones(6), [0, 10], prior_covariance=nngp)
    assert post["mean"].dtype == np.float32 and post.attrs["dtype"] == "float32"
    reference = rk.posterior(ds.ntk, TRAIN, np.ones(6), [0, 10], prior_covariance=ds.nngp)
    np.testing.assert_allclose(post["variance"].values, reference["variance"].values,
                               rtol=1e-3, atol=1e-5)


def test_sum_reduction_runs_n_times_faster():
    ds = _kernels()
    y = np.ones(6)
    mean = rk.posterior(ds.ntk, TRAIN, y, [3], lr=0.1, reduction="sum")["mean"]
    slow = rk.posterior(ds.ntk, TRAIN, y, [18], lr=0.1, reduction="mean")["mean"]
    np.testing.assert_allclose(mean.values, slow.values, rtol=1e-10)


@settings(max_examples=15, deadline=None)
@given(st.integers(0, 50), st.sampled_from(["continuous", "discrete"]), st.integers(0, 3))
def test_lanczos_equals_the_dense_eigendecomposition(step, time, seed):
    ds = _kernels(seed=seed)
    y = np.linspace(-1, 1, 12).reshape(6, 2)
    kwargs = dict(prior_covariance=ds.nngp, lr=0.5, time=time, covariance=True)
    dense = rk.posterior(ds.ntk, TRAIN, y, [step, np.inf], **kwargs)
    krylov = rk.posterior(ds.ntk, TRAIN, y, [step, np.inf], solver="lanczos", **kwargs)
    np.testing.assert_allclose(krylov["mean"].values, dense["mean"].values, rtol=1e-6,
                               atol=1e-8)
    np.testing.assert_allclose(krylov["covariance"].values, dense["covariance"].values,
                               rtol=1e-6, atol=1e-8)


def test_conjugate_gradients_equal_cholesky_with_noise():
    ds = _kernels(n=40, depth=1)
    train, y = np.arange(30), np.sin(np.arange(30.0))
    direct = rk.gp_posterior(ds.ntk, train, y, noise=0.1, scale=2.0, covariance=True)
    cg = rk.gp_posterior(ds.ntk, train, y, noise=0.1, scale=2.0, covariance=True, solver="cg")
    np.testing.assert_allclose(cg["mean"].values, direct["mean"].values, atol=1e-7)
    np.testing.assert_allclose(cg["covariance"].values, direct["covariance"].values, atol=1e-7)


def test_single_network_posterior_mean_is_the_forecast():
    """Empirical eNTK blocks (N, O, N, O), prior mean f_0, zero prior variance: the mean is the
    linearized network, i.e. repkernel.forecast's linear readout."""
    net = rk.MLP([3, 16, 2], activation="tanh", seed=1)
    x = torch.randn(9, 3, generator=torch.Generator().manual_seed(2))
    y = torch.randn(9, 2, generator=torch.Generator().manual_seed(3))
    everything = rk.pattern_set(x, y)
    train = rk.pattern_set(x[:5], y[:5])
    curriculum = rk.Curriculum([rk.Stage(train, steps=40, lr=0.3)])
    forecast = rk.forecast(net, curriculum, everything, checkpoints=[0, 10, 40],
                           readout="linear")
    with torch.no_grad():
        f0 = net(x)[1]
    post = rk.posterior(rk.ntk_matrix(net, everything), np.arange(5), y[:5], [0, 10, 40],
                        lr=0.3, time="discrete", prior_mean=f0)
    np.testing.assert_allclose(post["mean"].values,
                               forecast.output.sel(readout="linear").values, rtol=1e-8,
                               atol=1e-10)
    np.testing.assert_allclose(post["variance"].values, 0.0)


def test_variance_matches_an_ensemble_of_wide_linearized_networks():
    """Analytic NTK and NNGP predict the mean and variance over 300 seeds of width-1024 ReLU
    networks, each linearized and trained by gradient flow on MSE (its own eNTK, exact
    solution). Sampling error of a variance over 300 seeds is about 8 %; finite width adds an
    O(1/width) excess on training items late in training. The prior variance alone misses by
    about 100 %, so the check discriminates."""
    x = torch.randn(10, 3, generator=torch.Generator().manual_seed(0))
    y = torch.sin(2 * x[:6, :1])
    patterns = rk.pattern_set(x, torch.zeros(10, 1))
    limit = rk.infinite_width_kernels(x, 1, "relu", b_std=0.2)
    steps = [0, 5, 20, 100]
    post = rk.posterior(limit.ntk, TRAIN, y, steps, prior_covariance=limit.nngp)
    outputs = []
    for seed in range(300):
        net = WideMLP(3, 1024, 1, "relu", b_std=0.2, seed=seed)
        theta = wide_ntk_matrix(net, patterns)[:, 0, :, 0]
        with torch.no_grad():
            f0 = net(x)[1]
        lam, u = torch.linalg.eigh(theta[:6, :6])
        residual = u.T @ (f0[:6] - y)
        outputs.append(torch.stack([
            f0[:, 0] - (theta[:, :6] @ (u @ ((-torch.expm1(-lam * k / 6) / lam)[:, None]
                                             * residual)))[:, 0]
            for k in steps]))
    outputs = torch.stack(outputs).numpy()
    prior = limit.nngp.values.diagonal()
    variance, predicted = outputs.var(0, ddof=1), post["variance"].values[..., 0]
    assert (np.abs(variance - predicted) / prior).max() < 0.3
    assert (np.abs(variance - prior) / prior).max() > 0.9
    z = (outputs.mean(0) - post["mean"].values[..., 0]) / np.sqrt(prior / len(outputs))
    assert np.abs(z).max() < 4.5


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"time": "euler"}, "time"),
    ({"reduction": "max"}, "reduction"),
    ({"solver": "qr"}, "solver"),
    ({"lr": -1.0}, "lr"),
    ({"train": [0, 0, 1]}, "distinct"),
    ({"train": [0, 99]}, "lie in"),
    ({"targets": np.ones(4)}, "targets"),
    ({"prior_mean": np.ones(3)}, "prior_mean"),
    ({"steps": [-1]}, "steps"),
    ({"steps": [2.5], "time": "discrete"}, "integer"),
    ({"lr": 1e4, "time": "discrete"}, "diverges"),
])
def test_bad_arguments_are_rejected(kwargs, match):
    ds = _kernels()
    arguments = {"ntk": ds.ntk, "train": [0, 1, 2], "targets": np.ones(3), "steps": [1],
                 **kwargs}
    with pytest.raises(ValueError, match=match):
        rk.posterior(**arguments)


def test_non_psd_and_asymmetric_kernels_are_rejected():
    ds = _kernels()
    with pytest.raises(ValueError, match="positive semidefinite"):
        rk.posterior(-ds.ntk, TRAIN, np.ones(6), [1])
    with pytest.raises(ValueError, match="positive semidefinite"):
        rk.posterior(-ds.ntk, TRAIN, np.ones(6), [1], solver="lanczos")
    with pytest.raises(ValueError, match="symmetric"):
        rk.posterior(ds.ntk.values + np.triu(np.ones((10, 10)), 1), TRAIN, np.ones(6), [1])
    with pytest.raises(ValueError, match="positive definite"):
        rk.gp_posterior(np.ones((10, 10)), TRAIN, np.ones(6))
