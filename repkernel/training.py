"""The trainer: trains the real network on a curriculum and records what the forecaster records."""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence

import numpy as np
import torch
import xarray as xr

from repkernel import cpu_threads
from repkernel.curriculum import Curriculum, Stage
from repkernel.kernels import ntk_matrix
from repkernel.losses import batch_loss, pattern_loss
from repkernel.networks import RepresentationNetwork, check_run, placed
from repkernel.patterns import PatternSet
from repkernel.results import checkpoint_steps, finish_run, representation_dataset

# A stage's loss (mean per pattern on its patterns) above this factor times its value at the
# stage's start, at a checkpoint or the stage's end, counts as divergence; so does a non-finite
# batch loss. A loss doubling under gradient descent means a rate past the stability bound.
DIVERGENCE_RISE = 2.0
LOSS_FLOOR = 1e-6  # starting losses below this count as this (a fitted stage's round-off)


class DivergenceError(RuntimeError):
    """Training diverged: a non-finite loss, or a stage's loss rising above DIVERGENCE_RISE
    times its start. The message names stage, step, learning rate and the stability bound."""


def _batches(stage: Stage, generator: torch.Generator):
    """Endless stream of index tensors: full batch, or reshuffled minibatches each epoch."""
    n, b = len(stage.patterns), stage.batch_size
    while True:
        if b == n:
            yield None
            continue
        order = torch.randperm(n, generator=generator)
        for start in range(0, n - b + 1, b):
            yield order[start:start + b]


def train(
    network: RepresentationNetwork,
    curriculum: Curriculum,
    probes: PatternSet,
    checkpoints: int | Sequence[int] = 101,
    record_weights: bool = True,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    progress: Callable[[int], None] | None = None,
    threads: int | None = None,
) -> xr.Dataset:
    """Train a copy of ``network`` on ``curriculum`` and record it on ``probes``.

    Each update is theta <- theta - lr grad_theta L_batch (repkernel.curriculum). Records, at the
    checkpoint steps (see results.checkpoint_steps): hidden(time, item, unit), output(time,
    item, output_unit), loss(time), probe_loss(time), weights(time, parameter) when
    ``record_weights``, and batch_loss(step), the loss of the batch used by each update (mean
    per pattern), before it.
    ``progress(n)`` is called with the number of updates done after each one.
    ``threads``: torch's intra-op CPU threads while training (repkernel.cpu_threads); default
    one for small networks (threads_for), where more threads only cost.
    Raises DivergenceError naming stage, step, learning rate and the stage's stability bound if
    a batch loss becomes NaN or inf or a stage's loss rises above DIVERGENCE_RISE x its start.
    """
    net = copy.deepcopy(placed(network, device, dtype))  # never train the caller's network
    if not net.trainable_parameters():
        raise ValueError("the network has no trainable weights: call set_trainable first")
    check_run(net, curriculum, probes)
    if threads is None:
        threads = cpu_threads.threads_for_run(net, curriculum, probes)
    with cpu_threads.threads(threads):
        return _train(net, curriculum, probes, checkpoints, record_weights, progress)


def _stage_loss(net: RepresentationNetwork, stage: Stage, data) -> torch.Tensor:
    """Mean per-pattern loss of ``net`` on the stage's patterns (the recorded ``loss``)."""
    with torch.no_grad():
        return pattern_loss(net(data[0], data[1])[1], data[2], stage.loss).mean()


def _stability_advice(net: RepresentationNetwork, theta: torch.Tensor, stage: Stage) -> str:
    """How to fix a divergence: the stage's stability bound at the weights it started from."""
    if stage.loss != "mse":
        return "lower the learning rate"
    start = copy.deepcopy(net).load_flat_parameters(theta)
    kernel = ntk_matrix(start, stage.patterns).detach()
    lam_max = float(torch.linalg.eigvalsh(kernel.reshape(kernel.shape[0] * kernel.shape[1], -1)
                                          ).max())
    return (f"lower it below the stability bound {stage.stability_bound(lam_max):.4g} of the "
            f"stage's linearized dynamics at its start (lam_max = {lam_max:.4g}, the largest "
            f"eigenvalue of its NTK)")


def _train(net: RepresentationNetwork, curriculum: Curriculum, probes: PatternSet,
           checkpoints: int | Sequence[int], record_weights: bool,
           progress: Callable[[int], None] | None) -> xr.Dataset:
    weight = next(iter(net.parameters()))
    device, dtype = weight.device, weight.dtype
    params = list(net.trainable_parameters().values())
    steps = checkpoint_steps(checkpoints, curriculum.total_steps)
    record_at = set(steps.tolist())
    probe_x, probe_c, probe_y = probes.to(device, dtype)
    hidden_rec, output_rec, loss_rec, probe_loss_rec, weight_rec = [], [], [], [], []
    batch_losses = torch.full((curriculum.total_steps,), float("nan"), device=device, dtype=dtype)

    def record(stage: Stage, data) -> None:
        with torch.no_grad():
            hidden, output = net(probe_x, probe_c)
            hidden_rec.append([h.clone() for h in hidden])
            output_rec.append(output.clone())
            probe_loss_rec.append(pattern_loss(output, probe_y, stage.loss).mean())
            loss_rec.append(_stage_loss(net, stage, data))
            if record_weights:
                weight_rec.append(net.flat_parameters().clone())

    def check(index: int, stage: Stage, theta: torch.Tensor, start_loss: float, first: int,
              stop: int, loss: torch.Tensor) -> None:
        """Non-finite batch losses in steps first..stop-1, or the stage's loss at step stop
        (``loss``) above DIVERGENCE_RISE times its start: DivergenceError."""
        window = batch_losses[first:stop]
        bad = (~torch.isfinite(window)).nonzero()
        if len(bad):
            what = f"the loss became {window[bad[0, 0]].item()} at step {first + int(bad[0, 0])}"
        elif float(loss) > DIVERGENCE_RISE * max(start_loss, LOSS_FLOOR):
            what = f"its loss rose from {start_loss:.4g} to {float(loss):.4g} by step {stop}"
        else:
            return
        raise DivergenceError(f"training diverged in stage {index} ({stage.name or 'unnamed'}): "
                              f"{what} with learning rate {stage.lr:g}; "
                              f"{_stability_advice(net, theta, stage)}")

    global_step = 0
    if 0 in record_at:
        first = curriculum.stages[0]
        record(first, first.patterns.to(device, dtype))
    for index, stage in enumerate(curriculum.stages):
        data = stage.patterns.to(device, dtype)
        batches = _batches(stage, torch.Generator().manual_seed(stage.seed))
        last_check, theta = global_step, net.flat_parameters().clone()
        start_loss = float(_stage_loss(net, stage, data))
        for _ in range(stage.steps):
            rows = next(batches)
            x, c, y = data if rows is None else (
                data[0][rows], None if data[1] is None else data[1][rows], data[2][rows])
            _, f = net(x, c)
            loss = batch_loss(f, y, stage.loss, stage.reduction)
            grads = torch.autograd.grad(loss, params)
            with torch.no_grad():
                for p, g in zip(params, grads):
                    p.sub_(stage.lr * g)
                batch_losses[global_step] = (loss / len(y) if stage.reduction == "sum"
                                             else loss).detach()
            global_step += 1
            if global_step in record_at:
                record(stage, data)
                check(index, stage, theta, start_loss, last_check, global_step, loss_rec[-1])
                last_check = global_step
            if progress is not None:
                progress(global_step)
        check(index, stage, theta, start_loss, last_check, global_step,
              _stage_loss(net, stage, data))

    ds = representation_dataset(
        [torch.stack([rec[layer] for rec in hidden_rec]) for layer in range(len(hidden_rec[0]))],
        torch.stack(output_rec), steps, probes)
    ds["loss"] = ("time", torch.stack(loss_rec).cpu().numpy())
    ds["probe_loss"] = ("time", torch.stack(probe_loss_rec).cpu().numpy())
    ds["batch_loss"] = ("step", batch_losses.cpu().numpy())
    ds = ds.assign_coords(step=("step", np.arange(curriculum.total_steps)))
    return finish_run(ds, net, curriculum, probes, steps,
                      torch.stack(weight_rec) if record_weights else None, "actual", device, dtype)
