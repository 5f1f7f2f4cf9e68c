import inspect

import pytest
import torch

from repkernel import MLP, DeepLinear, MultitaskEnvironment, MultitaskNetwork
from repkernel.config import ConfigError, build, validate
from repkernel.networks import NETWORKS, REQUIRED, network_from_config, network_options

# every registered kind with options differing from its defaults (a new kind needs a row)
EXAMPLES = {
    "multitask": {"hidden": 17, "init_scale": 0.3, "bias": -1.0, "seed": 4,
                  "activation": "tanh", "output_activation": "sigmoid",
                  "initial_task_similarity": 0.5, "task_weight_scale": 2.0},
    "mlp": {"sizes": [3, 6, 5, 2], "activation": "tanh", "bias": False, "init_scale": 0.7,
            "seed": 2, "output_activation": "sigmoid"},
    "deep_linear": {"sizes": [4, 3, 5], "init_scale": 0.2, "seed": 3},
}


@pytest.fixture
def env():
    return MultitaskEnvironment(4, 3, 3)


def test_multitask_shapes_and_fixed_biases(env):
    net = MultitaskNetwork(env, hidden=20)
    p = env.sample(7)
    (h,), f = net.represent(p)
    assert h.shape == (7, 20) and f.shape == (7, 9)
    assert net.n_parameters == 20 * 12 + 20 * 12 + 9 * 20 + 9 * 12
    assert not any("bias" in name for name in net.trainable_names())
    assert torch.all(net.hidden_bias == -2.0)


def test_manual_forward_matches_definition(env):
    net = MultitaskNetwork(env, hidden=5)
    p = env.sample(3)
    (h,), f = net.represent(p)
    h_ref = torch.sigmoid(p.x @ net.stimulus_hidden.T + p.c @ net.task_hidden.T - 2)
    f_ref = torch.sigmoid(h_ref @ net.hidden_output.T + p.c @ net.task_output.T - 2)
    assert torch.allclose(h, h_ref) and torch.allclose(f, f_ref)


def test_init_scale_scales_the_same_draw(env):
    small = MultitaskNetwork(env, hidden=10, init_scale=0.1, seed=3)
    large = MultitaskNetwork(env, hidden=10, init_scale=1.0, seed=3)
    assert torch.allclose(large.flat_parameters(), 10 * small.flat_parameters())
    assert small.flat_parameters().abs().max() <= 0.1


def test_determinism_and_seed_changes(env):
    a, b, c = (MultitaskNetwork(env, hidden=10, seed=s) for s in (1, 1, 2))
    assert torch.equal(a.flat_parameters(), b.flat_parameters())
    assert not torch.equal(a.flat_parameters(), c.flat_parameters())


@pytest.mark.parametrize("make", [
    lambda env: MultitaskNetwork(env, hidden=8),
    lambda env: MLP([3, 6, 5, 2], activation="tanh"),
    lambda env: DeepLinear([4, 3, 5]),
])
def test_flat_parameter_round_trip(env, make):
    net = make(env)
    theta = net.flat_parameters()
    assert theta.shape == (net.n_parameters,)
    new = torch.randn_like(theta)
    net.load_flat_parameters(new)
    assert torch.equal(net.flat_parameters(), new)
    pieces = net.unflatten(new)
    assert list(pieces) == net.trainable_names()
    assert len(net.parameter_groups()) == net.n_parameters
    with pytest.raises(ValueError, match="shape"):
        net.load_flat_parameters(new[:-1])


def test_trainable_groups_restrict_the_flat_vector(env):
    net = MultitaskNetwork(env, hidden=8).set_trainable(["hidden_output"])
    assert net.trainable_names() == ["hidden_output"]
    assert net.n_parameters == 9 * 8
    with pytest.raises(ValueError, match="choose from"):
        net.set_trainable(["nope"])


def test_mlp_hidden_layers_and_default_init():
    net = MLP([1, 100, 1], activation="relu", seed=0)
    hidden, f = net(torch.linspace(-1, 1, 11)[:, None])
    assert len(hidden) == 1 and hidden[0].shape == (11, 100) and f.shape == (11, 1)
    assert net.layers[0].weight.abs().max() <= 1.0  # bound 1/sqrt(fan_in) = 1
    assert net.layers[1].weight.abs().max() <= 0.1
    deep = DeepLinear([4, 3, 5], init_scale=0.1)
    assert deep.layers[0].bias is None and deep.layers[0].weight.abs().max() <= 0.1 / 2
    x = torch.randn(6, 4)
    assert torch.allclose(deep(x)[1], x @ deep.layers[0].weight.T @ deep.layers[1].weight.T)


def test_initial_task_similarity_is_exact(env):
    net = MultitaskNetwork(env, hidden=50, initial_task_similarity=0.6)
    w = net.task_hidden.detach()
    assert torch.allclose(w.norm(dim=0), torch.full((12,), 5.0))
    corr = torch.corrcoef(w.T)
    for i, t in enumerate(env.tasks):
        for j, u in enumerate(env.tasks):
            expected = 1.0 if i == j else 0.6 if env.input_dim(t) == env.input_dim(u) else 0.0
            assert abs(corr[i, j] - expected) < 1e-10


def test_bad_network_arguments(env):
    with pytest.raises(ValueError, match="activation"):
        MultitaskNetwork(env, activation="swish")
    with pytest.raises(ValueError, match="init_scale"):
        MultitaskNetwork(env, init_scale=0)
    with pytest.raises(ValueError, match="sizes"):
        MLP([3, 2])
    with pytest.raises(ValueError, match="cues"):
        MultitaskNetwork(env)(torch.zeros(1, 12))


def test_every_registered_network_rebuilds_from_its_config_with_identical_weights(env):
    assert set(EXAMPLES) == set(NETWORKS)
    for kind, options in EXAMPLES.items():
        assert set(options) == set(network_options(kind)), kind  # the example sets every option
        for dtype in (torch.float32, torch.float64):
            first = network_from_config({"kind": kind, **options}, env, dtype)
            names = first.trainable_names()[-1:]
            first.set_trainable(names)
            again = network_from_config(first.config, env, dtype)
            assert again.config == first.config and again.trainable_names() == names, kind
            assert again.hidden_sizes == first.hidden_sizes
            for (name, a), (_, b) in zip(first.state_dict().items(),
                                         again.state_dict().items()):
                assert a.dtype == dtype and torch.equal(a, b), (kind, name)


def test_network_dtype_is_explicit_not_the_global_default(env):
    default = torch.get_default_dtype()
    for dtype in (torch.float32, torch.float64):
        net = network_from_config({"kind": "multitask", "hidden": 20,
                                   "initial_task_similarity": 0.5}, env, dtype)
        assert {t.dtype for t in net.state_dict().values()} == {dtype}
        assert torch.get_default_dtype() == default
    wide = network_from_config({"kind": "multitask", "hidden": 20}, env, torch.float64)
    narrow = network_from_config({"kind": "multitask", "hidden": 20}, env, torch.float32)
    assert torch.equal(wide.flat_parameters().float(), narrow.flat_parameters())


def test_config_defaults_are_the_constructor_defaults():
    required = {"mlp": {"sizes": [1, 4, 1]}, "deep_linear": {"sizes": [1, 4, 1]},
                "multitask": {}}
    for kind, network_class in NETWORKS.items():
        signature = inspect.signature(network_class.__init__).parameters
        resolved = validate({"network": {"kind": kind, **required[kind]}})["network"]
        for name, value in network_options(kind).items():
            expected = required[kind][name] if value is REQUIRED else value
            assert resolved[name] == expected == required[kind].get(
                name, signature[name].default), (kind, name)
        assert set(resolved) == {"kind", "trainable", *network_options(kind)}


def test_network_config_problems_name_the_kind_and_its_options(env):
    with pytest.raises(ConfigError) as info:
        validate({"network": {"kind": "mlp", "hidden": 3}})
    text = str(info.value)
    assert "[network].hidden: not an option of network kind 'mlp'" in text
    assert "[network].sizes: network kind 'mlp' needs it" in text
    with pytest.raises(ConfigError, match="does not fit environment 'multitask': use one of "
                       r"\['multitask'\]"):
        build({"network": {"kind": "deep_linear", "sizes": [4, 3, 5]}})
    with pytest.raises(ValueError, match="'hidden' is not an option of network kind 'mlp'"):
        network_from_config({"kind": "mlp", "sizes": [1, 2, 1], "hidden": 3})
    with pytest.raises(ValueError, match="pass env="):
        network_from_config({"kind": "multitask"})
