"""The trainer: trains the real network on a curriculum and records what the forecaster records.

Several networks of one architecture (e.g. one per seed) train side by side: their weights are
stacked (S, ...) and run with torch.func.vmap over functional_call, one batched product per layer
instead of S small ones; the loss summed over networks gives each its own gradient. A single
network is the stack of one, run as it is.
"""

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
from repkernel.results import (
    checkpoint_steps,
    finish_run,
    representation_dataset,
    seed_labels,
    stack_runs,
)

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
    network: RepresentationNetwork | Sequence[RepresentationNetwork],
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
    ``network`` may be a list of S networks of one architecture (e.g. one per seed): they train
    side by side, vectorized (module docstring), and every variable gains a leading ``seed`` dim
    whose coordinate is each network's ``config["seed"]`` (0..S-1 when those repeat); equal to
    training them one by one up to round-off.
    ``progress(n)`` is called with the number of updates done after each one.
    ``threads``: torch's intra-op CPU threads while training (repkernel.cpu_threads); default
    one for small networks (threads_for), where more threads only cost.
    Raises DivergenceError naming stage, step, learning rate and the stage's stability bound if
    a batch loss becomes NaN or inf or a stage's loss rises above DIVERGENCE_RISE x its start.
    """
    several = isinstance(network, Sequence)
    nets = _Networks([copy.deepcopy(placed(net, device, dtype))  # never train the caller's
                      for net in (network if several else [network])])
    for net in nets.networks:
        check_run(net, curriculum, probes)
    if threads is None:
        threads = cpu_threads.threads_for_run(nets.networks[0], curriculum, probes)
    with cpu_threads.threads(threads):
        runs = _train(nets, curriculum, probes, checkpoints, record_weights, progress)
    if not several:
        return runs[0]
    return stack_runs(runs, seed_labels(nets.networks))


class _Networks:
    """The networks being trained, as one stack of S: forward(x, c) -> (hidden, output) with
    hidden one (S, n, H_l) per layer and output (S, n, O); ``params`` the trainable tensors the
    updates change in place ((S, ...) stacked, or the single network's own parameters)."""

    def __init__(self, networks: list[RepresentationNetwork]) -> None:
        if not networks:
            raise ValueError("train needs at least one network, got an empty list")
        self.networks, first = networks, networks[0]
        for index, net in enumerate(networks):
            if not isinstance(net, RepresentationNetwork):
                raise ValueError(f"network {index} is a {type(net).__name__}, not a repkernel "
                                 f"network (RepresentationNetwork)")
            if not net.trainable_parameters():
                raise ValueError("the network has no trainable weights: call set_trainable "
                                 "first")
            if (_layout(net) != _layout(first) or net.trainable_names() != first.trainable_names()
                    or type(net) is not type(first)):
                raise ValueError(f"networks 0 and {index} differ in architecture, trainable "
                                 f"groups, device or dtype: an ensemble trains copies of one "
                                 f"architecture (e.g. one per seed)")
        if len(networks) == 1:
            self.params = list(first.trainable_parameters().values())
            return
        self.state = {name: torch.stack([dict(net.named_parameters())[name].detach()
                                         for net in networks])
                      for name, _ in first.named_parameters()}
        self.state.update({name: torch.stack([dict(net.named_buffers())[name]
                                              for net in networks])
                           for name, _ in first.named_buffers()})
        self.params = [self.state[name].requires_grad_() for name in first.trainable_names()]

    def __call__(self, x: torch.Tensor, c: torch.Tensor | None):
        first = self.networks[0]
        if len(self.networks) == 1:
            hidden, output = first(x, c)
            return tuple(h[None] for h in hidden), output[None]
        return torch.func.vmap(lambda state: torch.func.functional_call(first, state, (x, c))
                               )(self.state)

    def flat(self) -> torch.Tensor:
        """Trainable weights theta of every network, (S, P)."""
        return torch.cat([p.detach().reshape(len(self.networks), -1) for p in self.params], 1)

    def network(self, index: int, theta: torch.Tensor) -> RepresentationNetwork:
        """A copy of network ``index`` with weights theta (P,)."""
        return copy.deepcopy(self.networks[index]).load_flat_parameters(theta)


def _layout(net: RepresentationNetwork) -> list:
    return [(name, tuple(t.shape), t.dtype, t.device)
            for name, t in [*net.named_parameters(), *net.named_buffers()]]


def _stage_loss(nets: _Networks, stage: Stage, data) -> torch.Tensor:
    """Mean per-pattern loss of each network on the stage's patterns (the recorded ``loss``),
    (S,)."""
    with torch.no_grad():
        return pattern_loss(nets(data[0], data[1])[1], data[2], stage.loss).mean(-1)


def _stability_advice(start: RepresentationNetwork, stage: Stage) -> str:
    """How to fix a divergence: the stage's stability bound at the weights it started from."""
    if stage.loss != "mse":
        return "lower the learning rate"
    kernel = ntk_matrix(start, stage.patterns).detach()
    lam_max = float(torch.linalg.eigvalsh(kernel.reshape(kernel.shape[0] * kernel.shape[1], -1)
                                          ).max())
    return (f"lower it below the stability bound {stage.stability_bound(lam_max):.4g} of the "
            f"stage's linearized dynamics at its start (lam_max = {lam_max:.4g}, the largest "
            f"eigenvalue of its NTK)")


def _train(nets: _Networks, curriculum: Curriculum, probes: PatternSet,
           checkpoints: int | Sequence[int], record_weights: bool,
           progress: Callable[[int], None] | None) -> list[xr.Dataset]:
    """Train the stack; one result per network."""
    weight = nets.params[0]
    device, dtype, count = weight.device, weight.dtype, len(nets.networks)
    steps = checkpoint_steps(checkpoints, curriculum.total_steps)
    record_at = set(steps.tolist())
    probe_x, probe_c, probe_y = probes.to(device, dtype)
    hidden_rec, output_rec, loss_rec, probe_loss_rec, weight_rec = [], [], [], [], []
    batch_losses = torch.full((curriculum.total_steps, count), float("nan"), device=device,
                              dtype=dtype)

    def record(stage: Stage, data) -> None:
        with torch.no_grad():
            hidden, output = nets(probe_x, probe_c)
            hidden_rec.append([h.clone() for h in hidden])
            output_rec.append(output.clone())
            probe_loss_rec.append(pattern_loss(output, probe_y, stage.loss).mean(-1))
            loss_rec.append(_stage_loss(nets, stage, data))
            if record_weights:
                weight_rec.append(nets.flat())

    def check(index: int, stage: Stage, theta: torch.Tensor, start_loss: torch.Tensor,
              first: int, stop: int, loss: torch.Tensor) -> None:
        """Non-finite batch losses in steps first..stop-1, or a stage's loss at step stop
        (``loss``, (S,)) above DIVERGENCE_RISE times its start: DivergenceError."""
        window = batch_losses[first:stop]
        bad = (~torch.isfinite(window)).nonzero()
        risen = (loss > DIVERGENCE_RISE * start_loss.clamp(min=LOSS_FLOOR)).nonzero()
        if len(bad):
            row, net = int(bad[0, 0]), int(bad[0, 1])
            what = f"the loss became {window[row, net].item()} at step {first + row}"
        elif len(risen):
            net = int(risen[0, 0])
            what = (f"its loss rose from {float(start_loss[net]):.4g} to {float(loss[net]):.4g} "
                    f"by step {stop}")
        else:
            return
        which = f" of network {net}" if count > 1 else ""
        advice = _stability_advice(nets.network(net, theta[net]), stage)
        raise DivergenceError(f"training{which} diverged in stage {index} "
                              f"({stage.name or 'unnamed'}): {what} with learning rate "
                              f"{stage.lr:g}; {advice}")

    global_step = 0
    if 0 in record_at:
        first = curriculum.stages[0]
        record(first, first.patterns.to(device, dtype))
    for index, stage in enumerate(curriculum.stages):
        data = stage.patterns.to(device, dtype)
        batches = _batches(stage, torch.Generator().manual_seed(stage.seed))
        last_check, theta = global_step, nets.flat().clone()
        start_loss = _stage_loss(nets, stage, data)
        for _ in range(stage.steps):
            rows = next(batches)
            x, c, y = data if rows is None else (
                data[0][rows], None if data[1] is None else data[1][rows], data[2][rows])
            _, f = nets(x, c)
            loss = batch_loss(f, y, stage.loss, stage.reduction)  # (S,)
            grads = torch.autograd.grad(loss.sum(), nets.params)
            with torch.no_grad():
                for p, g in zip(nets.params, grads):
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
              _stage_loss(nets, stage, data))

    runs = []
    for net, network in enumerate(nets.networks):
        ds = representation_dataset(
            [torch.stack([rec[layer][net] for rec in hidden_rec])
             for layer in range(len(hidden_rec[0]))],
            torch.stack([out[net] for out in output_rec]), steps, probes)
        ds["loss"] = ("time", torch.stack(loss_rec)[:, net].cpu().numpy())
        ds["probe_loss"] = ("time", torch.stack(probe_loss_rec)[:, net].cpu().numpy())
        ds["batch_loss"] = ("step", batch_losses[:, net].cpu().numpy())
        ds = ds.assign_coords(step=("step", np.arange(curriculum.total_steps)))
        weights = torch.stack([w[net] for w in weight_rec]) if record_weights else None
        runs.append(finish_run(ds, network, curriculum, probes, steps, weights, "actual",
                               device, dtype))
    return runs
