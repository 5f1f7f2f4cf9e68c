"""The one loss definition shared by the trainer and the forecaster (DESIGN.md section 2).

Per-pattern loss l(f, y):
  mse: l = 1/2 ||f - y||^2 summed over outputs;      grad_f l = f - y
  bce: l = -sum_o [y log f + (1 - y) log(1 - f)];    grad_f l = (f - y) / (f (1 - f))
       (binary cross-entropy on outputs in (0, 1), e.g. sigmoid outputs)
  cross_entropy: l = -sum_o y_o log softmax(f)_o;    grad_f l = softmax(f) sum_o y_o - y
       (softmax cross-entropy on logits f; y one-hot or class probabilities, so sum_o y_o = 1
       and the gradient is softmax(f) - y; integer class targets (..., n) are one-hot encoded)
Batch loss L = reduce_i l_i with reduction ``mean`` (divide by the batch size) or ``sum``.
"""

from __future__ import annotations

import torch

LOSSES = ("mse", "bce", "cross_entropy")
REDUCTIONS = ("mean", "sum")
_EPS = 1e-12


def check_loss(loss: str, reduction: str) -> None:
    if loss not in LOSSES:
        raise ValueError(f"unknown loss {loss!r}: choose one of {LOSSES}")
    if reduction not in REDUCTIONS:
        raise ValueError(f"unknown reduction {reduction!r}: choose one of {REDUCTIONS}")


def check_targets(y: torch.Tensor, loss: str) -> None:
    """ValueError when targets y (n, O) do not fit ``loss``: bce needs y in [0, 1];
    cross_entropy needs rows of class probabilities (one-hot: at least two columns, entries >= 0
    summing to 1)."""
    if loss == "bce" and not bool(((y >= 0) & (y <= 1)).all()):
        raise ValueError(f"loss 'bce' needs targets in [0, 1], got {float(y.min()):.3g} to "
                         f"{float(y.max()):.3g}: rescale the targets or use loss='mse'")
    if loss != "cross_entropy":
        return
    if y.shape[-1] < 2:
        raise ValueError(f"loss 'cross_entropy' needs one target column per class (one-hot), got "
                         f"{y.shape[-1]}: give integer class labels as a 1-D array to "
                         f"rk.pattern_set, which one-hot encodes them")
    sums = y.sum(-1)
    if not bool((y >= 0).all()) or not torch.allclose(sums, torch.ones_like(sums)):
        raise ValueError(f"loss 'cross_entropy' needs one-hot targets (or class probabilities "
                         f"summing to 1), got entries {float(y.min()):.3g} to "
                         f"{float(y.max()):.3g} and row sums {float(sums.min()):.3g} to "
                         f"{float(sums.max()):.3g}: one-hot encode the classes")


def one_hot(labels: torch.Tensor, n_classes: int, like: torch.Tensor | None = None
            ) -> torch.Tensor:
    """Integer class labels (...,) as one-hot rows (..., n_classes), in like's dtype."""
    if labels.is_floating_point() or bool((labels < 0).any()) or bool(
            (labels >= n_classes).any()):
        raise ValueError(f"class targets must be integers in 0..{n_classes - 1}, got "
                         f"{labels.min().item()} to {labels.max().item()}")
    rows = torch.nn.functional.one_hot(labels.long(), n_classes)
    return rows.to(torch.float64 if like is None else like.dtype)


def _targets(f: torch.Tensor, y: torch.Tensor, loss: str) -> torch.Tensor:
    """y as (..., n, O): integer class labels (..., n) one-hot encoded for cross_entropy."""
    if loss == "cross_entropy" and y.shape == f.shape[:-1]:
        return one_hot(y, f.shape[-1], f)
    return y


def pattern_loss(f: torch.Tensor, y: torch.Tensor, loss: str = "mse") -> torch.Tensor:
    """Per-pattern loss l_i, (..., n), from outputs and targets (..., n, O)."""
    if loss == "mse":
        return 0.5 * ((f - y) ** 2).sum(-1)
    if loss == "bce":
        f = f.clamp(_EPS, 1 - _EPS)
        return -(y * torch.log(f) + (1 - y) * torch.log1p(-f)).sum(-1)
    if loss == "cross_entropy":
        return -(_targets(f, y, loss) * torch.log_softmax(f, -1)).sum(-1)
    raise ValueError(f"unknown loss {loss!r}: choose one of {LOSSES}")


def loss_gradient(f: torch.Tensor, y: torch.Tensor, loss: str = "mse") -> torch.Tensor:
    """g = grad_f l per pattern, (..., n, O)."""
    if loss == "mse":
        return f - y
    if loss == "bce":
        f = f.clamp(_EPS, 1 - _EPS)
        return (f - y) / (f * (1 - f))
    if loss == "cross_entropy":
        y = _targets(f, y, loss)
        return torch.softmax(f, -1) * y.sum(-1, keepdim=True) - y
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
