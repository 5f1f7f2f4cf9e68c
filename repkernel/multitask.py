"""Multitask evaluation (DESIGN.md section 6, REFERENCE.md D): sequential versus concurrent
performance, learning efficiency and the capacity estimate.

A *response* is one active task t = (a, b) of one pattern (stimulus x task set): the network's
answer on output dimension b, the F units o_b = f[b F : (b + 1) F], whose correct unit is the
stimulus feature of input dimension a. Scores per response:
  Luce ratio     P(correct) = o_b[correct] / sum_j o_b[j]       (needs o_b >= 0, e.g. sigmoid)
  accuracy       1 / m when the correct unit is among the m largest-and-equal units of o_b, else 0
                 (argmax with random tie-breaking, in expectation)
  error          mean_j (o_b[j] - y_b[j])^2, the task-restricted squared error over F units
Summaries are means over responses (tasks and stimuli) by set size k and by congruency. The
multitasking cost pairs every response with the single-task (k = 1) response of the same task on
the same stimulus: cost = single score - concurrent score, averaged over the k-sets' responses.
Throughput counts correct responses per unit time: a k-set done sequentially takes k units, so
its rate is the mean single-task accuracy of its tasks; done concurrently it takes one unit, so
its rate is k times the mean concurrent accuracy.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import xarray as xr

from repkernel.config import DTYPES
from repkernel.environments import MultitaskEnvironment
from repkernel.networks import (
    NETWORKS,
    RepresentationNetwork,
    check_patterns,
    network_from_config,
    placed,
    represent_at,
)
from repkernel.patterns import PatternSet
from repkernel.results import config_of, provenance

SCORES = ("luce", "accuracy", "error")
LONG_NAMES = {"luce": "Luce ratio P(correct)", "accuracy": "accuracy (argmax)",
              "error": "task-restricted squared error"}


# -- responses and scores ---------------------------------------------------------------------

@dataclass(frozen=True)
class Responses:
    """Every (pattern, active task) pair of a pattern set: R responses.

    pattern, task, input_dim, output_dim, correct (feature index), slot (position in the task
    set): (R,) int arrays; set_size, set_congruent, stimulus, task_set: the pattern's labels.
    """

    pattern: np.ndarray
    task: np.ndarray
    input_dim: np.ndarray
    output_dim: np.ndarray
    correct: np.ndarray
    slot: np.ndarray
    set_size: np.ndarray
    set_congruent: np.ndarray
    stimulus: np.ndarray
    task_set: np.ndarray

    def coords(self) -> dict[str, tuple[str, np.ndarray]]:
        return {"response": ("response", np.arange(len(self.pattern))),
                **{name: ("response", getattr(self, name)) for name in (
                    "pattern", "stimulus", "task_set", "set_size", "set_congruent", "task",
                    "input_dim", "output_dim", "slot", "correct")}}


def responses(patterns: PatternSet, env: MultitaskEnvironment) -> Responses:
    """The responses of ``patterns`` (made by ``env``): one per active cue of each pattern."""
    if patterns.c is None or patterns.c.shape[1] != env.n_cues or (
            patterns.n_outputs != env.n_outputs):
        raise ValueError(f"patterns do not fit {env!r}: make them with env.patterns(...) or "
                         "env.make_patterns(...)")
    cues = patterns.c.numpy()
    rows, cue = np.nonzero(cues)
    if len(rows) == 0:
        raise ValueError("patterns have no active task cues: score multitask patterns only")
    task = np.asarray(env.tasks)[cue]
    output_dim = task % env.n_output_dims
    F = env.n_features
    target = patterns.y.numpy().reshape(len(patterns), env.n_output_dims, F)[rows, output_dim]
    if not np.all(np.sort(target, axis=1) == np.eye(F)[-1]):
        raise ValueError("every active task needs a one-hot target on its output dimension: "
                         "make the patterns with env.patterns(...)")
    slot = np.zeros(len(rows), dtype=np.int64)
    for i in range(1, len(rows)):  # rows come sorted: slot counts within a pattern
        slot[i] = slot[i - 1] + 1 if rows[i] == rows[i - 1] else 0
    labels = patterns.labels
    k = np.bincount(rows, minlength=len(patterns))
    stimulus = np.asarray(labels.get("stimulus", np.full(len(patterns), -1)))
    if "congruent" in labels:
        congruent = np.asarray(labels["congruent"]) != 0  # -1 (single task): cannot conflict
    else:  # congruent: every active task asks for the same feature index
        correct_of = target.argmax(axis=1)
        congruent = np.array([len(set(correct_of[rows == i])) <= 1
                              for i in range(len(patterns))])
    task_set = np.asarray(labels["task_set"]) if "task_set" in labels else np.array(
        ["+".join(map(str, task[rows == i])) for i in range(len(patterns))])
    return Responses(
        pattern=rows.astype(np.int64), task=task.astype(np.int64),
        input_dim=(task // env.n_output_dims).astype(np.int64),
        output_dim=output_dim.astype(np.int64), correct=target.argmax(axis=1).astype(np.int64),
        slot=slot, set_size=k[rows].astype(np.int64), set_congruent=congruent[rows],
        stimulus=stimulus[rows], task_set=task_set[rows])


def response_scores(output: torch.Tensor, resp: Responses, n_features: int
                    ) -> dict[str, torch.Tensor]:
    """Luce ratio, accuracy and error per response, each (..., R), from outputs (..., n, O).

    Stays on ``output``'s device and dtype. Raises ValueError for negative activations (the Luce
    ratio is a ratio of activations).
    """
    lead = output.shape[:-2]
    blocks = output.reshape(*lead, output.shape[-2], -1, n_features)
    device = output.device
    pattern = torch.as_tensor(resp.pattern, device=device)
    out_dim = torch.as_tensor(resp.output_dim, device=device)
    correct = torch.as_tensor(resp.correct, device=device)
    block = blocks[..., pattern, out_dim, :]  # (..., R, F)
    if bool((block < 0).any()):
        raise ValueError(f"the Luce ratio needs non-negative output activations, got minimum "
                         f"{block.min().item():.3g}: score sigmoid outputs (the network readout)")
    index = correct.expand(*block.shape[:-1]).unsqueeze(-1)
    right = block.gather(-1, index).squeeze(-1)
    total = block.sum(-1)
    luce = torch.where(total > 0, right / total, torch.full_like(total, float("nan")))
    best = block.amax(-1)
    ties = (block == best.unsqueeze(-1)).sum(-1)
    accuracy = torch.where(right == best, 1.0 / ties.to(block.dtype), torch.zeros_like(best))
    target = torch.nn.functional.one_hot(correct, n_features).to(block.dtype)
    error = ((block - target) ** 2).mean(-1)
    return {"luce": luce, "accuracy": accuracy, "error": error}


def _group_means(values: torch.Tensor, groups: np.ndarray, n_groups: int) -> torch.Tensor:
    """Mean of values (..., R) within each of n_groups groups (R,) -> (..., n_groups); NaN where
    a group is empty. One matrix product, no loop over groups."""
    member = torch.zeros(values.shape[-1], n_groups, dtype=values.dtype, device=values.device)
    member[torch.arange(values.shape[-1], device=values.device),
           torch.as_tensor(groups, device=values.device)] = 1.0
    counts = member.sum(0)
    missing = torch.isnan(values)
    sums = torch.where(missing, torch.zeros_like(values), values) @ member
    spoiled = (missing.to(values.dtype) @ member) > 0  # a NaN spoils its own group only
    return torch.where((counts > 0) & ~spoiled, sums / counts.clamp(min=1),
                       torch.full_like(sums, float("nan")))


def score_outputs(
    output: torch.Tensor | np.ndarray | xr.DataArray,
    patterns: PatternSet,
    env: MultitaskEnvironment,
    dims: Sequence[str] | None = None,
    coords: dict[str, Any] | None = None,
) -> xr.Dataset:
    """Multitask scores of outputs (..., n, O) on ``patterns`` (n patterns made by ``env``).

    ``dims`` names the leading dims (default: ``("time",)`` for 3-D outputs, none for 2-D; a
    DataArray brings its own dims and coords). Returns, besides any leading dims:
      luce, accuracy, error (..., response): per response (module docstring), with response
        coords pattern, stimulus, task_set, set_size (k), set_congruent, task, input_dim,
        output_dim, slot, correct
      *_by_k (..., k) and *_by_congruency (..., k, congruent): means over responses
      luce_cost, accuracy_cost (..., k) and *_cost_by_congruency (..., k, congruent): matched
        single minus concurrent score (only when every response's single task was scored)
      throughput_sequential, throughput_concurrent (..., k): correct responses per unit time
    The set size and congruency of each response are named ``set_size`` and ``set_congruent``
    because ``k`` and ``congruent`` are the summary dims.
    """
    if isinstance(output, xr.DataArray):  # its leading dims with their coordinates
        dims = output.dims[:-2]
        coords = {**{name: (c.dims, c.values) for name, c in output.coords.items()
                     if set(c.dims) <= set(dims)}, **(coords or {})}
        output = output.values
    output = torch.as_tensor(output)
    resp = responses(patterns, env)
    if output.ndim < 2 or output.shape[-2:] != (len(patterns), env.n_outputs):
        raise ValueError(f"output must have shape (..., {len(patterns)}, {env.n_outputs}) "
                         f"(patterns x output units), got {tuple(output.shape)}")
    if dims is None:
        dims = {2: (), 3: ("time",)}.get(output.ndim)
        if dims is None:
            raise ValueError(f"output has {output.ndim - 2} leading dims: name them with dims=")
    dims = tuple(dims)
    if len(dims) != output.ndim - 2:
        raise ValueError(f"dims {dims} must name the {output.ndim - 2} leading dims of output")
    scores = response_scores(output, resp, env.n_features)

    ks = np.unique(resp.set_size)
    k_index = np.searchsorted(ks, resp.set_size)
    congruency = np.array([True, False])
    cell = k_index * 2 + (~resp.set_congruent).astype(np.int64)  # (k, congruent) cell
    single = _matched_single(resp)
    by: dict[str, tuple[tuple[str, ...], torch.Tensor]] = {}
    for name in SCORES:
        by[f"{name}_by_congruency"] = (("k", "congruent"), _group_means(
            scores[name], cell, 2 * len(ks)).reshape(*output.shape[:-2], len(ks), 2))
    for name in SCORES:
        by[f"{name}_by_k"] = (("k",), _group_means(scores[name], k_index, len(ks)))
    if single is not None:
        for name in ("luce", "accuracy"):
            cost = scores[name][..., single] - scores[name]
            by[f"{name}_cost"] = (("k",), _group_means(cost, k_index, len(ks)))
            by[f"{name}_cost_by_congruency"] = (("k", "congruent"), _group_means(
                cost, cell, 2 * len(ks)).reshape(*output.shape[:-2], len(ks), 2))
        kk = torch.as_tensor(ks, dtype=output.dtype, device=output.device)
        by["throughput_sequential"] = (("k",), _group_means(
            scores["accuracy"][..., single], k_index, len(ks)))
        by["throughput_concurrent"] = (("k",), kk * by["accuracy_by_k"][1])

    def numpy(t):
        return t.detach().cpu().numpy()

    variables = {name: ((*dims, *extra), numpy(value)) for name, (extra, value) in by.items()}
    variables.update({name: ((*dims, "response"), numpy(scores[name])) for name in SCORES})
    ds = xr.Dataset(variables, coords={**resp.coords(), "k": ("k", ks),
                                       "congruent": ("congruent", congruency), **(coords or {})})
    for name in ds.data_vars:
        base = next(s for s in SCORES if name.startswith(s)) if not name.startswith(
            "throughput") else None
        if base is not None:
            ds[name].attrs["long_name"] = (f"{LONG_NAMES[base]}, single minus concurrent"
                                           if "_cost" in name else LONG_NAMES[base])
            if base in ("luce", "accuracy") and "_cost" not in name:  # guessing among features
                ds[name].attrs["chance"] = 1 / env.n_features
        else:
            ds[name].attrs.update(long_name=f"throughput, {name.split('_')[1]}",
                                  units="correct responses per unit time")
    ds.attrs["multitask_cost"] = (
        "matched: each response's single-task score on the same stimulus minus its score"
        if single is not None else
        "not computed: some responses have no single-task (k = 1) response of the same task on "
        "the same stimulus; include k = 1")
    return ds


def _matched_single(resp: Responses) -> np.ndarray | None:
    """Index of the k = 1 response with the same task and stimulus, per response; None if any
    response has none."""
    singles = {(t, s): i for i, (t, s, k) in enumerate(
        zip(resp.task, resp.stimulus, resp.set_size)) if k == 1}
    matched = [singles.get((t, s)) for t, s in zip(resp.task, resp.stimulus)]
    if any(m is None for m in matched) or (resp.stimulus < 0).any():
        return None
    return np.asarray(matched, dtype=np.int64)


# -- networks at checkpoints ------------------------------------------------------------------

def network_from_result(dataset: xr.Dataset) -> RepresentationNetwork:
    """Rebuild the (untrained) network of a result from ``config_of(dataset)["network"]``, with
    the trainable weight groups it recorded; checks the parameter count against ``weights``."""
    config = config_of(dataset)
    cfg = config.get("network")
    if not isinstance(cfg, dict) or "kind" not in cfg:
        raise ValueError("the result's config has no network entry: pass the network with "
                         "network=")
    wrapped = cfg["kind"] == "wrapped"  # rebuilt from its recorded source, if it has one
    if cfg["kind"] not in NETWORKS and not wrapped:
        raise ValueError(f"cannot rebuild a network of kind {cfg['kind']!r}: pass it with "
                         f"network=")
    dtype = DTYPES.get(str(dataset.attrs.get("dtype", "float64")), torch.float64)
    env = (environment_from_result(dataset)
           if not wrapped and NETWORKS[cfg["kind"]].needs_environment else None)
    trainable = config.get("trainable", cfg.get("trainable", "all"))
    net = network_from_config({**cfg, "trainable": trainable}, env, dtype)
    if "weights" in dataset and dataset.sizes["parameter"] != net.n_parameters:
        raise ValueError(f"the rebuilt network has {net.n_parameters} trainable weights but the "
                         f"result has {dataset.sizes['parameter']}: pass the network with "
                         "network=")
    return net


def environment_from_result(dataset: xr.Dataset) -> MultitaskEnvironment:
    """The multitask environment a result's network was built for (from its config)."""
    cfg = config_of(dataset).get("network", {})
    env = cfg.get("environment") if isinstance(cfg, dict) else None
    if not isinstance(env, dict) or env.get("kind") != "multitask":
        raise ValueError("the result's config names no multitask environment: pass env= "
                         "(a MultitaskEnvironment)")
    return MultitaskEnvironment(**{k: v for k, v in env.items() if k != "kind"})


def evaluate_multitask(
    result_or_network: xr.Dataset | RepresentationNetwork,
    env: MultitaskEnvironment | None,
    k: int | Iterable[int] = (1, 2, 3),
    stimuli: str | int = "all",
    network: RepresentationNetwork | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> xr.Dataset:
    """Score every k-task set of ``env`` on every stimulus (``env.patterns(k, stimuli)``);
    ``env=None``: the environment the network was built for.

    ``result_or_network``: a network (scored as it is), or a result Dataset with
    weights(..., parameter) (actual, or a forecast: its weights do not depend on ``readout``),
    scored at every checkpoint by loading each weight vector into ``network`` (default: rebuilt
    from the result's config, see network_from_result). Every dim of ``weights`` but
    ``parameter`` (time, and sweep dims such as seed) is kept. Runs on ``device`` / ``dtype``
    (default: the network's; a rebuilt one: cpu and the result's dtype).

    Returns score_outputs' Dataset (per-response Luce ratio, accuracy, error; means by k and by
    congruency; multitasking cost; throughput) with attrs from repkernel.results.provenance: the
    source result's config plus an ``evaluate`` entry.
    """
    ks = [int(k)] if isinstance(k, (int, np.integer)) else [int(v) for v in k]
    if not ks:
        raise ValueError("k is empty: give at least one task-set size, e.g. k=(1, 2)")
    if env is None:
        if isinstance(result_or_network, xr.Dataset):
            env = environment_from_result(result_or_network)
        else:
            net_env = getattr(result_or_network, "config", {}).get("environment")
            if not isinstance(net_env, dict):
                raise ValueError("the network names no multitask environment: pass env=")
            env = MultitaskEnvironment(**{k: v for k, v in net_env.items() if k != "kind"})
    patterns = env.patterns(ks, stimuli)
    evaluation = {"k": ks, "stimuli": stimuli, "environment": env.config(),
                  "patterns": len(patterns)}
    if isinstance(result_or_network, RepresentationNetwork):
        if network is not None:
            raise ValueError("give the network either first or as network=, not both")
        net = placed(result_or_network, device, dtype)
        _check_fits(net, env)
        x, c, _ = patterns.to(*_place(net))
        with torch.no_grad():
            output = net(x, c)[1]
        ds = score_outputs(output, patterns, env, dims=())
        ds.attrs.update(provenance({"network": net.config, "evaluate": evaluation},
                                   *_place(net), "network"))
        return ds
    if not isinstance(result_or_network, xr.Dataset):
        raise ValueError(f"evaluate_multitask needs a network or a result Dataset, got "
                         f"{type(result_or_network).__name__}")
    result = result_or_network
    output, lead, coords, (device, dtype) = outputs_at_weights(
        result, patterns, network, device, dtype, check=lambda net: _check_fits(net, env))
    ds = score_outputs(output, patterns, env, dims=lead, coords=coords)
    config = {**config_of(result), "evaluate": evaluation}
    ds.attrs.update(provenance(config, device, dtype, str(result.attrs.get("source", "actual"))))
    return ds


def outputs_at_weights(result: xr.Dataset, patterns: PatternSet,
                       network: RepresentationNetwork | None = None, device=None, dtype=None,
                       check=None):
    """The network's outputs on ``patterns`` at every weight vector of a result
    (weights(..., parameter); a forecast's are the same for every readout): (output tensor
    (*lead, n, O), lead dims, their coords, (device, dtype)). ``network`` default: rebuilt from
    the result (network_from_result), on cpu and the result's dtype; ``check(net)`` may refuse
    it."""
    if "weights" not in result:
        raise ValueError("the result has no weights(time, parameter): train or forecast with "
                         "record_weights=True")
    weights = result["weights"]
    if "readout" in weights.dims:  # weights are the same for every readout
        first = weights.isel(readout=0, drop=True)
        if not np.allclose(weights.values, first.broadcast_like(weights).values, equal_nan=True):
            raise ValueError("the result's weights differ along readout: select one readout")
        weights = first
    if network is None:
        net = network_from_result(result)
        net = placed(net, device or "cpu", dtype or next(net.parameters()).dtype)
    else:
        net = placed(network, device, dtype)
    if net.n_parameters != weights.sizes["parameter"]:
        raise ValueError(f"the network has {net.n_parameters} trainable weights but the result "
                         f"has {weights.sizes['parameter']}: pass the network it was trained "
                         "from with network=")
    if check is not None:
        check(net)
    device, dtype = _place(net)
    lead = [d for d in weights.dims if d != "parameter"]
    weights = weights.transpose(*lead, "parameter")
    values = weights.values  # may be a read-only view (netCDF, broadcasting): copy then
    thetas = torch.as_tensor(values if values.flags.writeable else values.copy(), device=device,
                             dtype=dtype)
    x, c, _ = patterns.to(device, dtype)
    flat = represent_at(net, thetas.reshape(-1, thetas.shape[-1]), x, c)[1]
    output = flat.reshape(*thetas.shape[:-1], *flat.shape[1:])
    coords = {name: (coord.dims, coord.values) for name, coord in weights.coords.items()
              if name != "parameter" and "parameter" not in coord.dims}
    return output, lead, coords, (device, dtype)


def classification_accuracy(result: xr.Dataset, patterns: PatternSet,
                            network: RepresentationNetwork | None = None, device=None,
                            dtype=None) -> xr.DataArray:
    """Accuracy of a classifier on ``patterns`` at every weight vector of a result (trained, or a
    forecast's weights with the network evaluated there): the fraction of patterns whose largest
    output is the target's largest, argmax_o f_o(x_i) = argmax_o y_io; dims those of the
    result's weights but ``parameter`` (time, sweep dims)."""
    output, lead, coords, _ = outputs_at_weights(result, patterns, network, device, dtype)
    target = patterns.y.argmax(-1).to(output.device)
    correct = (output.argmax(-1) == target).to(torch.float64).mean(-1)
    return xr.DataArray(correct.cpu().numpy(), dims=lead, coords=coords, name="accuracy",
                        attrs={"long_name": "classification accuracy",
                               "description": "fraction of patterns whose largest output is "
                                              "their target's largest",
                               "patterns": len(patterns)})


def _place(network: RepresentationNetwork) -> tuple[torch.device, torch.dtype]:
    weight = next(iter(network.parameters()))
    return weight.device, weight.dtype


def _check_fits(network: RepresentationNetwork, env: MultitaskEnvironment) -> None:
    """A MultitaskNetwork built for ``env``, or any other network (e.g. a wrapped module) that
    takes the environment's stimuli and cues and has one output per response unit."""
    net_env = network.config.get("environment")
    if network.config.get("kind") == "wrapped":
        check_patterns(network, env.patterns([1], 1), "the environment's patterns")
        return
    if network.config.get("kind") != "multitask" or net_env is None:
        raise ValueError("multitask evaluation needs a MultitaskNetwork (task cues in, F units "
                         "per output dimension out)")
    if net_env != env.config():
        raise ValueError(f"the network was built for environment {net_env}, not "
                         f"{env.config()}: evaluate with the environment it was trained on")


# -- learning efficiency ----------------------------------------------------------------------

def learning_efficiency(result: xr.Dataset, criterion: float, stage: int | None = None
                        ) -> xr.Dataset:
    """Updates (steps) and epochs until the training loss per pattern first falls below
    ``criterion``, from ``batch_loss(..., step)`` (the per-pattern loss of each update's batch,
    before the update; repkernel.losses defines l, by default 1/2 ||f - y||^2).

    Full-batch stages: the first step s with batch_loss[s] < criterion (the state after s
    updates; the final state is read from ``loss`` at the stage's last step when recorded).
    Minibatch and online stages, as in the multitasking tradition: the mean batch loss over each
    epoch of n // b updates; reached at the end of the first epoch whose mean is below criterion.
    ``stage=None`` scans the whole curriculum and counts global steps; ``stage=i`` scans stage i
    and counts from its start. Returns ``steps_to_criterion`` and ``epochs_to_criterion`` over
    any extra dims of batch_loss (e.g. seed); NaN where the criterion is never reached.
    """
    if "batch_loss" not in result:
        raise ValueError("the result has no batch_loss(step): use a training result from "
                         "repkernel.train")
    if not criterion > 0:
        raise ValueError(f"criterion must be a positive loss per pattern, got {criterion}")
    stages = config_of(result).get("curriculum", {}).get("stages")
    if not stages:
        raise ValueError("the result's config has no curriculum stages: use a training result "
                         "from repkernel.train")
    bounds = np.concatenate([[0], np.cumsum([s["steps"] for s in stages])]).astype(int)
    chosen = range(len(stages)) if stage is None else [stage]
    if stage is not None and not 0 <= stage < len(stages):
        raise ValueError(f"stage must be in 0..{len(stages) - 1}, got {stage}")
    losses = result["batch_loss"]
    lead = [d for d in losses.dims if d != "step"]
    values = losses.transpose(*lead, "step").values
    origin = 0 if stage is None else bounds[stage]
    traces, steps_at, epochs_at, measures = [], [], [], []
    epochs_done = 0.0
    for s in chosen:
        start, stop = bounds[s], bounds[s + 1]
        n = int(stages[s]["patterns"]["n"])
        batch = stages[s]["batch"]
        size = n if batch == "full" else 1 if batch == "online" else int(batch)
        if size == n:
            trace = values[..., start:stop]
            at = np.arange(start, stop)
            if "loss" in result and "time" in result["loss"].dims and stop in result["time"] \
                    and stop > start:
                final = result["loss"].sel(time=stop).transpose(*lead).values[..., None]
                trace, at = np.concatenate([trace, final], axis=-1), np.append(at, stop)
            traces.append(trace)
            steps_at.append(at - origin)
            epochs_at.append(epochs_done + (at - start))
            measures.append(f"stage {s}: full-batch loss per pattern at each step")
            epochs_done += stop - start
        else:
            per_epoch = n // size
            count = (stop - start) // per_epoch
            block = values[..., start:start + count * per_epoch]
            traces.append(block.reshape(*block.shape[:-1], count, per_epoch).mean(-1))
            ends = start + per_epoch * np.arange(1, count + 1)
            steps_at.append(ends - origin)
            epochs_at.append(epochs_done + np.arange(1, count + 1))
            measures.append(f"stage {s}: mean batch loss per pattern over each epoch of "
                            f"{per_epoch} updates")
            epochs_done += (stop - start) / per_epoch
    trace = np.concatenate(traces, axis=-1)
    steps_at, epochs_at = np.concatenate(steps_at), np.concatenate(epochs_at)
    below = trace < criterion
    reached = below.any(axis=-1)
    first = below.argmax(axis=-1)
    steps = np.where(reached, steps_at[first], np.nan)
    epochs = np.where(reached, epochs_at[first], np.nan)
    coords = {d: losses[d].values for d in lead if d in losses.coords}
    ds = xr.Dataset({"steps_to_criterion": (lead, steps), "epochs_to_criterion": (lead, epochs)},
                    coords=coords)
    ds["steps_to_criterion"].attrs.update(
        long_name="steps to criterion", units="parameter updates" + (
            "" if stage is None else f" from the start of stage {stage}"))
    ds["epochs_to_criterion"].attrs.update(long_name="epochs to criterion", units="epochs")
    ds.attrs.update(criterion=float(criterion), stage="all" if stage is None else int(stage),
                    measure="; ".join(measures),
                    never_reached=("" if reached.all() else
                                   f"NaN: the loss never fell below {criterion} in "
                                   f"{int((~reached).sum())} of {reached.size} runs"))
    return ds


# -- capacity ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Capacity:
    """Capacity estimate: ``size`` tasks can run at once; ``tasks`` is one maximum set;
    ``interference`` the (n_tasks, n_tasks) boolean graph in ``env.tasks`` order."""

    size: int
    tasks: tuple[int, ...]
    interference: np.ndarray = field(repr=False)
    threshold: float = 0.8


def interference_graph(similarity: np.ndarray | xr.DataArray, env: MultitaskEnvironment,
                       threshold: float = 0.8, structural: bool = True, crosstalk: bool = True
                       ) -> np.ndarray:
    """Boolean (n_tasks, n_tasks) interference graph from a task-similarity matrix (tasks in
    ``env.tasks`` order; a DataArray with a ``task`` coordinate is reordered to it).

    Tasks t = (a, b) and u = (c, d) share a representation when sim(t, u) > threshold. Edges:
      structural  a = c or b = d: not a valid concurrent set in the environment (env.task_sets);
      crosstalk   t shares a representation with some task writing u's output d (or u with one
                  writing b): the shared representation of t's input drives d, the graph analysis
                  of Musslick et al. and Petri et al. With crosstalk=False, an edge is only
                  sim(t, u) > threshold (the plain thresholded graph; crosstalk includes it).
    """
    matrix = _similarity_in_task_order(similarity, env)
    tasks = np.asarray(env.tasks)
    n = len(tasks)
    shares = matrix > threshold
    np.fill_diagonal(shares, True)
    out_dim = tasks % env.n_output_dims
    in_dim = tasks // env.n_output_dims
    if crosstalk:
        writes = shares.astype(int) @ np.eye(env.n_output_dims, dtype=int)[out_dim] > 0  # t->d
        edges = writes[:, out_dim] | writes[:, out_dim].T
    else:
        edges = shares.copy()
    if structural:
        edges |= (in_dim[:, None] == in_dim[None, :]) | (out_dim[:, None] == out_dim[None, :])
    edges[np.arange(n), np.arange(n)] = False
    return edges


def _similarity_in_task_order(similarity, env: MultitaskEnvironment) -> np.ndarray:
    n = len(env.tasks)
    if isinstance(similarity, xr.DataArray):
        if similarity.ndim != 2:
            raise ValueError(f"the similarity matrix must be 2-D (task x task), got dims "
                             f"{similarity.dims}: select one checkpoint, e.g. .isel(time=-1)")
        for dim in similarity.dims:  # reorder each task dim that carries task labels
            if dim not in similarity.indexes:
                continue
            labels = list(np.asarray(similarity[dim].values).tolist())
            if any(t not in labels for t in env.tasks):
                raise ValueError(f"the similarity matrix's {dim} labels {labels} lack some of "
                                 f"the environment's tasks {list(env.tasks)}: compute it on "
                                 "probes covering every task")
            similarity = similarity.isel({dim: [labels.index(t) for t in env.tasks]})
        similarity = similarity.values
    matrix = np.asarray(similarity, dtype=float)
    if matrix.shape != (n, n):
        raise ValueError(f"the similarity matrix must be ({n}, {n}) for {env!r}, got "
                         f"{matrix.shape}")
    if np.isnan(matrix).any():
        raise ValueError("the similarity matrix has NaN entries (tasks whose hidden vectors are "
                         "constant?): compute it where every task is represented")
    return matrix


def maximum_independent_set(adjacency: np.ndarray) -> tuple[int, ...]:
    """One maximum independent set of an undirected graph (boolean (n, n) adjacency), exact.

    Branch and bound on bitsets: take the vertex v of largest degree, best of (sets without v)
    and (v plus sets without v's neighbours); vertices of degree <= 1 are taken greedily (always
    optimal), and a branch stops when its size plus the remaining vertices cannot win.
    """
    adjacency = np.asarray(adjacency, dtype=bool)
    n = adjacency.shape[0]
    if adjacency.shape != (n, n) or (adjacency != adjacency.T).any():
        raise ValueError("adjacency must be a symmetric (n, n) boolean matrix")
    neighbours = [sum(1 << int(j) for j in np.flatnonzero(adjacency[i]) if j != i)
                  for i in range(n)]
    best: list[int] = [0, 0]  # size, bitset

    def search(candidates: int, chosen: int, size: int) -> None:
        while True:  # take every vertex with at most one remaining neighbour
            for v in _bits(candidates):
                if (neighbours[v] & candidates).bit_count() <= 1:
                    chosen |= 1 << v
                    size += 1
                    candidates &= ~((1 << v) | neighbours[v])
                    break
            else:
                break
        if candidates == 0:
            if size > best[0]:
                best[:] = [size, chosen]
            return
        if size + candidates.bit_count() <= best[0]:
            return
        v = max(_bits(candidates), key=lambda u: (neighbours[u] & candidates).bit_count())
        search(candidates & ~((1 << v) | neighbours[v]), chosen | (1 << v), size + 1)
        search(candidates & ~(1 << v), chosen, size)

    search((1 << n) - 1, 0, 0)
    return tuple(_bits(best[1]))


def _bits(mask: int) -> list[int]:
    return [i for i in range(mask.bit_length()) if mask >> i & 1]


def capacity(similarity: np.ndarray | xr.DataArray, env: MultitaskEnvironment,
             threshold: float = 0.8, structural: bool = True, crosstalk: bool = True
             ) -> Capacity:
    """Predicted multitasking capacity: the size of a maximum independent set of the
    interference graph (interference_graph), with one such set of tasks. Exact."""
    graph = interference_graph(similarity, env, threshold, structural, crosstalk)
    members = maximum_independent_set(graph)
    return Capacity(len(members), tuple(int(env.tasks[i]) for i in members), graph,
                    float(threshold))
