"""rk.wrap: any torch module as a repkernel network, checked against repkernel's own MLP with the
same weights and against explicit autograd Jacobians."""

import numpy as np
import pytest
import torch
import xarray as xr
from torch import nn

import repkernel as rk
from repkernel.multitask import evaluate_multitask, network_from_result
from repkernel.networks import network_from_config
from repkernel.results import config_of


def _patterns(n=6, n_in=3, n_out=2, seed=0):
    rng = np.random.default_rng(seed)
    return rk.pattern_set(rng.normal(size=(n, n_in)), rng.normal(size=(n, n_out)))


def _twins(activation="tanh"):
    """A repkernel MLP 3-5-4-2 and an nn.Sequential with the same weights, wrapped."""
    mlp = rk.MLP([3, 5, 4, 2], activation=activation, seed=1, dtype=torch.float64)
    act = {"tanh": nn.Tanh, "relu": nn.ReLU}[activation]
    seq = nn.Sequential(nn.Linear(3, 5), act(), nn.Linear(5, 4), act(), nn.Linear(4, 2)).double()
    with torch.no_grad():
        for linear, layer in zip(seq[::2], mlp.layers):
            linear.weight.copy_(layer.weight)
            linear.bias.copy_(layer.bias)
    return mlp, rk.wrap(seq, hidden=["1", "3"])


def test_wrapped_sequential_matches_repkernel_mlp():
    mlp, wrapped = _twins()
    probes, train = _patterns(5, seed=1), _patterns(6)
    assert wrapped.n_parameters == mlp.n_parameters
    np.testing.assert_allclose(rk.ntk(wrapped, probes).values, rk.ntk(mlp, probes).values,
                               rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(rk.pseudo_kernel(wrapped, probes, train).values,
                               rk.pseudo_kernel(mlp, probes, train).values, rtol=1e-10,
                               atol=1e-12)
    assert wrapped.hidden_sizes == (5, 4)
    curriculum = rk.Curriculum((rk.Stage(train, 30, 0.2),))
    for run in (rk.train, rk.forecast):
        a, b = run(wrapped, curriculum, probes, checkpoints=4), run(mlp, curriculum, probes,
                                                                       checkpoints=4)
        for name in ("hidden", "output", "loss"):
            np.testing.assert_allclose(a[name].values, b[name].values, rtol=1e-9, atol=1e-11)


class SmallCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Tanh(), nn.Conv2d(2, 2, 2),
                                      nn.Tanh())
        self.readout = nn.Linear(2 * 3 * 3, 3)

    def forward(self, x):
        return self.readout(self.features(x).flatten(1))


def _cnn(seed=0):
    torch.manual_seed(seed)
    return rk.wrap(SmallCNN().double(), hidden=["features.1", "features.3"],
                   input_shape=(1, 6, 6))


def test_cnn_ntk_and_pseudo_kernel_equal_explicit_autograd_jacobians():
    net = _cnn()
    patterns = _patterns(4, n_in=36, n_out=3)
    x = patterns.x.reshape(4, 1, 6, 6)
    module = net.module
    params = list(module.parameters())

    def jacobian(values):  # (n, U, P) by one autograd call per unit
        rows = [torch.cat([torch.zeros_like(p).reshape(-1) if g is None else g.reshape(-1)
                           for p, g in zip(params, torch.autograd.grad(
                               v, params, retain_graph=True, allow_unused=True))])
                for v in values.reshape(-1)]
        return torch.stack(rows).reshape(*values.shape, -1)

    hidden = module.features[:2](x)
    j_f, j_h = jacobian(module(x)), jacobian(hidden.flatten(1))
    expected_ntk = torch.einsum("iop,jqp->iojq", j_f, j_f).detach().numpy()
    np.testing.assert_allclose(rk.ntk(net, patterns).values, expected_ntk, rtol=1e-10,
                               atol=1e-12)
    pseudo = rk.pseudo_kernel(net, patterns, patterns).isel(layer=0).values
    np.testing.assert_allclose(pseudo, torch.einsum("iup,jqp->iujq", j_h, j_f).detach().numpy(),
                               rtol=1e-10, atol=1e-12)


def test_cnn_forecast_relinearized_every_step_is_gradient_descent():
    net = _cnn(1)
    train = _patterns(5, n_in=36, n_out=3, seed=2)
    curriculum = rk.Curriculum((rk.Stage(train, 6, 0.3),))
    forecast = rk.forecast(net, curriculum, train, checkpoints=3, relinearize=6,
                           readout="network")
    actual = rk.train(net, curriculum, train, checkpoints=3)
    np.testing.assert_allclose(forecast.hidden.isel(readout=0).values, actual.hidden.values,
                               rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(forecast.weights.values, actual.weights.values, rtol=1e-8,
                               atol=1e-10)


def test_wrapped_network_through_every_entry_point(tmp_path):
    _, net = _twins("relu")
    probes, train = _patterns(5, seed=1), _patterns(6)
    stage = rk.Stage(train, 20, 0.1)
    curriculum = rk.Curriculum((stage,))
    assert rk.loss_weighted_kernel(net, probes, stage=stage, target="hidden").sizes["item"] == 5
    assert rk.kernel_eigenvectors(net, probes, stage, n_eigenvectors=2).notnull().all()
    modes = rk.modes(net, stage, probes, n_modes=3)
    assert modes.sizes["mode"] == 3 and (modes.eigenvalue.diff("mode") <= 0).all()
    forecast = rk.forecast(net, curriculum, probes, checkpoints=3, relinearize="auto")
    actual = rk.train(net, curriculum, probes, checkpoints=3)
    flow = rk.forecast(net, curriculum, probes, checkpoints=3, time="continuous",
                       factorization="krylov", dtype=torch.float32)
    assert flow.attrs["dtype"] == "float32" and flow.output.notnull().all()
    assert rk.ntk(net, probes, dtype=torch.float32).dtype == np.float32
    compared = rk.compare(forecast.sel(readout="linear", layer=0), actual.sel(layer=0))
    assert float(compared.hidden_rsa.isel(time=0)) == pytest.approx(1.0)
    path = rk.save(actual, tmp_path / "actual.nc")
    config = config_of(rk.load(path))["network"]
    assert config["kind"] == "wrapped" and config["hidden"] == ["1", "3"]
    assert "not rebuildable" in config["rebuild"]
    with pytest.raises(ValueError, match="not rebuildable"):
        network_from_result(rk.load(path))


def test_trainable_follows_set_trainable_and_the_callers_module_is_untouched():
    seq = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).double()
    net = rk.wrap(seq, hidden="1").set_trainable(["2.weight", "2.bias"])
    assert net.n_parameters == 4 * 2 + 2
    assert all(p.requires_grad for p in seq.parameters()) and seq.training
    seq[0].bias.requires_grad_(False)  # a frozen parameter of the module stays frozen
    assert rk.wrap(seq, hidden="1").trainable_names() == [
        "module.0.weight", "module.2.weight", "module.2.bias"]
    seq[0].bias.requires_grad_(True)
    probes = _patterns(4)
    rk.ntk(net, probes)
    assert not any(m._forward_hooks for m in seq.modules())
    # only the readout trains: the hidden layer stays where it was
    actual = rk.train(net, rk.Curriculum((rk.Stage(probes, 5, 0.1),)), probes, checkpoints=2)
    np.testing.assert_array_equal(actual.hidden.isel(time=0), actual.hidden.isel(time=-1))


class CueNet(nn.Module):
    """A multitask network as a user would write it: stimulus and cue in, sigmoid out."""

    def __init__(self, env):
        super().__init__()
        self.stimulus, self.cue = nn.Linear(env.n_stimulus, 6), nn.Linear(env.n_cues, 6)
        self.hidden = nn.Sigmoid()
        self.readout = nn.Linear(6, env.n_outputs)

    def forward(self, x, c):
        return torch.sigmoid(self.readout(self.hidden(self.stimulus(x) + self.cue(c))))


def test_multitask_evaluation_of_a_wrapped_module_with_cues():
    env = rk.MultitaskEnvironment(2, 2, 2)
    net = rk.wrap(CueNet(env).double(), hidden="hidden")
    scores = evaluate_multitask(net, env, k=1)
    assert isinstance(scores, xr.Dataset) and scores.sizes
    with pytest.raises(ValueError, match=r"stimuli \(1, 4\) and cues \(1, 4\) .* takes"):
        small = nn.Sequential(nn.Linear(env.n_stimulus, 3), nn.Tanh(), nn.Linear(3, 3))
        evaluate_multitask(rk.wrap(small.double(), hidden="1"), env, k=1)


@pytest.mark.parametrize("call, message", [
    (lambda seq, ps: rk.forecast(seq, rk.Curriculum((rk.Stage(ps, 2, 0.1),)), ps), "rk.wrap"),
    (lambda seq, ps: rk.train(seq, rk.Curriculum((rk.Stage(ps, 2, 0.1),)), ps), "rk.wrap"),
    (lambda seq, ps: rk.ntk(seq, ps), "rk.wrap"),
    (lambda seq, ps: rk.pseudo_kernel(seq, ps, ps), "rk.wrap"),
    (lambda seq, ps: rk.modes(seq, rk.Stage(ps, 2, 0.1), ps), "rk.wrap"),
    (lambda seq, ps: rk.wrap(seq, hidden="01"),
     r"'01' is not a submodule .* close names are '1', '0'"),
    (lambda seq, ps: rk.ntk(rk.wrap(seq, hidden="1", input_shape=(3, 1)), ps),
     r"fails on stimuli \(1, 3, 1\)"),
    (lambda seq, ps: rk.ntk(rk.wrap(nn.Sequential(nn.Flatten(), seq), hidden="0"), ps),
     "'0' of the wrapped Sequential does not depend on its parameters"),
    (lambda seq, ps: rk.ntk(rk.wrap(seq, hidden="1"), _patterns(n_in=4)),
     r"fails on stimuli \(1, 4\)"),
])
def test_bad_input_gets_one_line(call, message):
    seq = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).double()
    with pytest.raises(ValueError, match=message) as error:
        call(seq, _patterns())
    assert "\n" not in str(error.value)


BUILDER = '''
import torch
from torch import nn
import repkernel as rk


def net(width=4, seed=0):
    torch.manual_seed(seed)
    return rk.wrap(nn.Sequential(nn.Linear(3, width), nn.Tanh(), nn.Linear(width, 3)).double(),
                   hidden="1")
'''


def test_a_network_named_by_its_builder_is_rebuilt_from_saved_results(tmp_path):
    from repkernel.config import ConfigError, build
    from repkernel.multitask import classification_accuracy

    (tmp_path / "my_model.py").write_text(BUILDER)
    source = f"{tmp_path / 'my_model.py'}:net"
    rng = np.random.default_rng(0)
    patterns = rk.pattern_set(rng.normal(size=(9, 3)), rng.integers(0, 3, 9), n_classes=3)
    net = network_from_config({"kind": source, "width": 5, "seed": 3})
    assert net.n_parameters == 3 * 5 + 5 + 5 * 3 + 3
    assert net.config["source"] == source and net.config["options"] == {"width": 5, "seed": 3}
    curriculum = rk.Curriculum((rk.Stage(patterns, 20, 0.5, loss="cross_entropy"),))
    actual = rk.train(net, curriculum, patterns, checkpoints=3)
    path = rk.save(actual, tmp_path / "actual.nc")
    rebuilt = network_from_result(rk.load(path))
    torch.testing.assert_close(rebuilt.flat_parameters(), net.flat_parameters())
    accuracy = classification_accuracy(rk.load(path), patterns)
    expected = [float((torch.as_tensor(f).argmax(-1) == patterns.y.argmax(-1)).double().mean())
                for f in actual.output.values]
    np.testing.assert_allclose(accuracy.values, expected)
    with pytest.raises(ConfigError, match=r"no file .*missing\.py"):
        build({"network": {"kind": "missing:net"}})
    with pytest.raises(ValueError, match=r"no file .*missing\.py"):
        network_from_config({"kind": "missing:net"})
