"""The trainer: trains the real network on a curriculum and records what the forecaster records."""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence

import numpy as np
import torch
import xarray as xr

from repkernel.curriculum import Curriculum, Stage
from repkernel.losses import batch_loss, pattern_loss
from repkernel.networks import RepresentationNetwork, placed
from repkernel.patterns import PatternSet
from repkernel.results import checkpoint_steps, finish_run, representation_dataset


class DivergenceError(RuntimeError):
    """Training produced a NaN or infinite loss."""


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
) -> xr.Dataset:
    """Train a copy of ``network`` on ``curriculum`` and record it on ``probes``.

    Each update is theta <- theta - lr grad_theta L_batch (repkernel.curriculum). Records, at the
    checkpoint steps (see results.checkpoint_steps): hidden(time, item, unit), output(time,
    item, output_unit), loss(time), probe_loss(time), weights(time, parameter) when
    ``record_weights``, and batch_loss(step), the loss of the batch used by each update (mean
    per pattern), before it.
    ``progress(n)`` is called with the number of updates done after each one.
    Raises DivergenceError naming stage, step and learning rate if the loss becomes NaN or inf.
    """
    net = copy.deepcopy(placed(network, device, dtype))  # never train the caller's network
    weight = next(iter(net.parameters()))
    device, dtype = weight.device, weight.dtype
    params = list(net.trainable_parameters().values())
    if not params:
        raise ValueError("the network has no trainable weights: call set_trainable first")
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
            loss_rec.append(pattern_loss(net(data[0], data[1])[1], data[2], stage.loss).mean())
            if record_weights:
                weight_rec.append(net.flat_parameters().clone())

    def check_finite(stage_index: int, stage: Stage, start: int, stop: int) -> None:
        window = batch_losses[start:stop]
        bad = (~torch.isfinite(window)).nonzero()
        if len(bad):
            step = start + int(bad[0, 0])
            raise DivergenceError(
                f"training diverged in stage {stage_index} ({stage.name or 'unnamed'}) at step "
                f"{step} with learning rate {stage.lr}: the loss became {window[bad[0, 0]].item()};"
                f" lower the learning rate")

    global_step = 0
    if 0 in record_at:
        first = curriculum.stages[0]
        record(first, first.patterns.to(device, dtype))
    for index, stage in enumerate(curriculum.stages):
        data = stage.patterns.to(device, dtype)
        batches = _batches(stage, torch.Generator().manual_seed(stage.seed))
        last_check = global_step
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
                check_finite(index, stage, last_check, global_step)
                last_check = global_step
                record(stage, data)
            if progress is not None:
                progress(global_step)
        check_finite(index, stage, last_check, global_step)

    ds = representation_dataset(
        [torch.stack([rec[layer] for rec in hidden_rec]) for layer in range(len(hidden_rec[0]))],
        torch.stack(output_rec), steps, probes)
    ds["loss"] = ("time", torch.stack(loss_rec).cpu().numpy())
    ds["probe_loss"] = ("time", torch.stack(probe_loss_rec).cpu().numpy())
    ds["batch_loss"] = ("step", batch_losses.cpu().numpy())
    ds = ds.assign_coords(step=("step", np.arange(curriculum.total_steps)))
    return finish_run(ds, net, curriculum, probes, steps,
                      torch.stack(weight_rec) if record_weights else None, "actual", device, dtype)
