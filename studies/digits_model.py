"""The network of studies/digits.toml, as a user brings their own model: a plain torch module,
wrapped for repkernel. The study names it as ``digits_model:cnn``; its [network] keys other than
kind are this function's arguments."""

import torch
from torch import nn

import repkernel as rk


def cnn(channels: int = 4, hidden: int = 32, seed: int = 0) -> rk.WrappedNetwork:
    """8 x 8 digit images (given as 64 pixels) -> two 3 x 3 convolutions (tanh) -> a dense
    hidden layer of ``hidden`` tanh units (the representation repkernel forecasts) -> 10 logits.
    PyTorch's default initialization, drawn from ``seed``."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        module = nn.Sequential(
            nn.Unflatten(1, (1, 8, 8)),
            nn.Conv2d(1, channels, 3), nn.Tanh(),
            nn.Conv2d(channels, channels, 3), nn.Tanh(),
            nn.Flatten(),
            nn.Linear(channels * 4 * 4, hidden), nn.Tanh(),
            nn.Linear(hidden, 10),
        )
    return rk.wrap(module, hidden="7")
