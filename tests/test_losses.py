"""Losses: gradients against autograd, softmax cross-entropy against torch's and through the
trainer and the forecast, targets checked against the loss."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import repkernel as rk
from repkernel.losses import LOSSES, loss_gradient, pattern_loss


def _targets(loss, n, o, generator):
    if loss == "cross_entropy":
        return torch.softmax(torch.randn(n, o, generator=generator, dtype=torch.float64), -1)
    return torch.rand(n, o, generator=generator, dtype=torch.float64)


@settings(max_examples=25, deadline=None)
@given(loss=st.sampled_from(LOSSES), n=st.integers(1, 5), o=st.integers(2, 4),
       seed=st.integers(0, 1000))
def test_loss_gradient_is_the_autograd_gradient(loss, n, o, seed):
    generator = torch.Generator().manual_seed(seed)
    f = torch.rand(n, o, generator=generator, dtype=torch.float64) * 0.8 + 0.1
    if loss == "cross_entropy":
        f = 4 * f - 2  # logits
    y = _targets(loss, n, o, generator)
    f.requires_grad_(True)
    expected, = torch.autograd.grad(pattern_loss(f, y, loss).sum(), f)
    torch.testing.assert_close(loss_gradient(f.detach(), y, loss), expected)


def test_cross_entropy_is_torchs_for_integer_and_one_hot_targets():
    logits = torch.randn(7, 4, dtype=torch.float64)
    classes = torch.tensor([0, 3, 1, 1, 2, 0, 3])
    expected = torch.nn.functional.cross_entropy(logits, classes, reduction="none")
    one_hot = torch.nn.functional.one_hot(classes, 4).double()
    torch.testing.assert_close(pattern_loss(logits, classes, "cross_entropy"), expected)
    torch.testing.assert_close(pattern_loss(logits, one_hot, "cross_entropy"), expected)
    torch.testing.assert_close(loss_gradient(logits, classes, "cross_entropy"),
                               torch.softmax(logits, -1) - one_hot)


def _classification(n=12, n_in=3, n_classes=3, seed=0):
    rng = np.random.default_rng(seed)
    return rk.pattern_set(rng.normal(size=(n, n_in)), rng.integers(0, n_classes, n),
                          n_classes=n_classes)


def test_integer_labels_become_one_hot_targets_and_a_class_label():
    patterns = _classification()
    assert patterns.y.shape == (12, 3)
    assert torch.equal(patterns.y.sum(1), torch.ones(12, dtype=torch.float64))
    np.testing.assert_array_equal(patterns.y.argmax(1).numpy(), patterns.labels["class"])


def test_cross_entropy_forecast_relinearized_every_step_is_gradient_descent():
    net = rk.MLP([3, 6, 3], activation="tanh", seed=2, dtype=torch.float64)
    data = _classification()
    curriculum = rk.Curriculum((rk.Stage(data, 8, 0.5, loss="cross_entropy"),))
    actual = rk.train(net, curriculum, data, checkpoints=5)
    forecast = rk.forecast(net, curriculum, data, checkpoints=5, relinearize=8,
                           readout="network")
    for name in ("hidden", "output", "loss"):
        np.testing.assert_allclose(forecast[name].isel(readout=0), actual[name], atol=1e-10)
    np.testing.assert_allclose(forecast.weights, actual.weights, atol=1e-10)
    assert float(actual.loss[-1]) < float(actual.loss[0])


def test_cross_entropy_frozen_forecast_exact_for_a_readout_only_network():
    # only the readout trains: f is linear in the trainable weights, so the linear model is exact
    net = rk.MLP([3, 6, 3], activation="tanh", seed=3, dtype=torch.float64)
    net.set_trainable(["layers.1.weight", "layers.1.bias"])
    data = _classification(seed=1)
    curriculum = rk.Curriculum((rk.Stage(data, 40, 0.3, loss="cross_entropy"),))
    actual = rk.train(net, curriculum, data, checkpoints=4)
    forecast = rk.forecast(net, curriculum, data, checkpoints=4)
    np.testing.assert_allclose(forecast.output.sel(readout="linear"), actual.output, atol=1e-10)


@pytest.mark.parametrize("y, loss, message", [
    (np.ones((4, 3)), "cross_entropy", "needs one-hot targets .* row sums 3 to 3"),
    (np.zeros((4, 1)), "cross_entropy", "one target column per class"),
    (2 * np.ones((4, 2)), "bce", r"needs targets in \[0, 1\]"),
])
def test_targets_that_do_not_fit_the_loss_get_one_line(y, loss, message):
    patterns = rk.pattern_set(np.zeros((4, 2)), y)
    with pytest.raises(ValueError, match=message) as error:
        rk.Stage(patterns, 1, 0.1, loss=loss, name="s")
    assert str(error.value).startswith("stage 's':") and "\n" not in str(error.value)
    with pytest.raises(ValueError, match=r"integers in 0\.\.2"):
        pattern_loss(torch.zeros(2, 3), torch.tensor([0, 3]), "cross_entropy")
