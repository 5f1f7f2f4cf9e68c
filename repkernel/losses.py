"""The one loss definition shared by the trainer and the forecaster (DESIGN.md section 2).

Per-pattern loss l(f, y):
  mse: l = 1/2 ||f - y||^2 summed over outputs;      grad_f l = f - y
  bce: l = -sum_o [y log f + (1 - y) log(1 - f)];    grad_f l = (f - y) / (f (1 - f))
       (binary cross-entropy on outputs in (0, 1), e.g. sigmoid outputs)
Batch loss L = reduce_i l_i with reduction ``mean`` (divide by the batch size) or ``sum``.
"""

from __future__ import annotations

import torch

LOSSES = ("mse", "bce")
REDUCTIONS = ("mean", "sum")
_EPS = 1e-12


def check_loss(loss: str, reduction: str) -> None:
    if loss not in LOSSES:
        raise ValueError(f"unknown loss {loss!r}: choose one of {LOSSES}")
    if reduction not in REDUCTIONS:
        raise ValueError(f"unknown reduction {reduction!r}: choose one of {REDUCTIONS}")


def pattern_loss(f: torch.Tensor, y: torch.Tensor, loss: str = "mse") -> torch.Tensor:
    """Per-pattern loss l_i, (..., n), from outputs and targets (..., n, O)."""
    if loss == "mse":
        return 0.5 * ((f - y) ** 2).sum(-1)
    if loss == "bce":
        f = f.clamp(_EPS, 1 - _EPS)
        return -(y * torch.log(f) + (1 - y) * torch.log1p(-f)).sum(-1)
    raise ValueError(f"unknown loss {loss!r}: choose one of {LOSSES}")


def loss_gradient(f: torch.Tensor, y: torch.Tensor, loss: str = "mse") -> torch.Tensor:
    """g = grad_f l per pattern, (..., n, O)."""
    if loss == "mse":
        return f - y
    if loss == "bce":
        f = f.clamp(_EPS, 1 - _EPS)
        return (f - y) / (f * (1 - f))
    raise ValueError(f"unknown loss {loss!r}: choose one of {LOSSES}")


def batch_loss(f: torch.Tensor, y: torch.Tensor, loss: str = "mse",
               reduction: str = "mean") -> torch.Tensor:
    """L = mean_i l_i or sum_i l_i over the patterns of a batch."""
    per_pattern = pattern_loss(f, y, loss)
    if reduction == "mean":
        return per_pattern.mean(-1)
    if reduction == "sum":
        return per_pattern.sum(-1)
    raise ValueError(f"unknown reduction {reduction!r}: choose one of {REDUCTIONS}")
