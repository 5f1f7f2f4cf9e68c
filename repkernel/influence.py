"""Influence of training patterns on the forecast representation (DESIGN.md section 9).

In dual form every forecast change is a sum over training patterns. Within one segment of the
forecast (repkernel.forecasting: a stage, or a stretch of it with a re-linearized model around
theta_c), theta(t) = theta_start - sum_j J_f,c(x_j)^T a_j(t), with a_j(t) (O,) the accumulated dual
coefficients of training pattern j (a_j = sum_{k < t} rho g_j(k) for gradient g_j = grad_f l), so
the linear readout's hidden change splits by pattern:
    dh(x, t) = - sum_j Pi_c(x, x_j) a_j(t),   Pi_c(x, x_j) = J_h,c(x) J_f,c(x_j)^T   (H x O).
The term of pattern j is its influence on the representation at probe x; a group's influence
(a label's value: task, k, ...; or a curriculum stage) is the sum over its patterns.

Frozen kernel (relinearize=1): one linear model around theta_0, so the influences summed over
sources are exactly the linear readout's change h_lin(t) - h_0. Re-linearized forecasts
(relinearize=R or "auto") add each segment's terms, accumulated over the segments, and a
remainder no single pattern owns: at every re-centering the linear readout jumps by the
linearization's second-order remainder, h(theta_c') + J_h,c' (theta - theta_c') minus the
previous model's h(theta_c) + J_h,c (theta - theta_c) at the same weights; ``relinearization_jump``
accumulates these jumps, so that
    influence.sum("source") + relinearization_jump = hidden(readout="linear") - hidden(t = 0)
of repkernel.forecast with the same arguments.

Ground truth the forecast never sees is leave-group-out retraining (``leave_out`` builds the
curriculum without a group's patterns); benchmarks/influence_validation.py compares the two.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import xarray as xr

from repkernel import cpu_threads
from repkernel.curriculum import Curriculum
from repkernel.forecasting import checked_run, integrate
from repkernel.kernels import JacobianOperator
from repkernel.networks import RepresentationNetwork
from repkernel.patterns import PatternSet
from repkernel.results import checkpoint_steps, finish_run, stack_hidden

STAGE = "stage"  # the pseudo-label grouping training patterns by curriculum stage


def _labels_of(curriculum: Curriculum) -> list[str]:
    """Labels every stage's training patterns carry (the possible ``by`` values besides
    "stage")."""
    common = set(curriculum.stages[0].patterns.labels)
    for stage in curriculum.stages[1:]:
        common &= set(stage.patterns.labels)
    return sorted(common)


def _check_label(curriculum: Curriculum, by: str | None, allow_stage: bool = True) -> None:
    if by is None or (by == STAGE and allow_stage):
        return
    labels = _labels_of(curriculum)
    if not isinstance(by, str) or by not in labels:
        other = f"'{STAGE}', " if allow_stage else ""
        raise ValueError(f"unknown label {by!r}: group training patterns by one of their labels "
                         f"{labels}, {other}or None (every training pattern on its own)")


def _stage_values(curriculum: Curriculum, by: str) -> list[np.ndarray]:
    """The value of label ``by`` (or the stage index) of every training pattern, per stage."""
    if by == STAGE:
        return [np.full(len(s.patterns), i) for i, s in enumerate(curriculum.stages)]
    return [np.asarray(s.patterns.labels[by]) for s in curriculum.stages]


def sources(curriculum: Curriculum, by: str | None = None
            ) -> tuple[dict[str, tuple[str, np.ndarray]], list[np.ndarray]]:
    """The sources of an influence map and which training patterns each holds.

    by=None: every training pattern of the curriculum is a source (stages concatenated), with
    coordinates source_stage and source_<label> for the labels all stages share. by=label or
    "stage": one source per value. Returns the ``source`` coordinates and, per stage, the
    membership matrix (n_stage_patterns, n_sources) of zeros and ones.
    Raises ValueError naming the labels available for an unknown label.
    """
    _check_label(curriculum, by)
    sizes = [len(s.patterns) for s in curriculum.stages]
    if by is None:
        total, offsets = sum(sizes), np.cumsum([0, *sizes])
        membership = [np.eye(total)[offsets[i]:offsets[i + 1]] for i in range(len(sizes))]
        coords = {"source": ("source", np.arange(total)),
                  "source_stage": ("source", np.repeat(np.arange(len(sizes)), sizes))}
        for label in _labels_of(curriculum):
            coords[f"source_{label}"] = ("source", np.concatenate(
                [np.asarray(s.patterns.labels[label]) for s in curriculum.stages]))
        return coords, membership
    values = _stage_values(curriculum, by)
    names = np.unique(np.concatenate(values))
    membership = [(v[:, None] == names[None, :]).astype(float) for v in values]
    coords = {"source": ("source", names)}
    if by == STAGE:
        coords["source_name"] = ("source", np.array([s.name for s in curriculum.stages]))
    return coords, membership


def leave_out(curriculum: Curriculum, by: str, value: Any) -> Curriculum:
    """The curriculum without the training patterns whose label ``by`` equals ``value`` (the
    leave-group-out ground truth of an influence map); every stage keeps its steps, rate and
    batch policy. Raises ValueError for an unknown label, a value no training pattern has (an
    empty group), and a group holding every pattern of a stage."""
    if by == STAGE:
        raise ValueError("leave_out removes patterns by a label; to leave out a stage, build the "
                         "Curriculum from the other stages")
    _check_label(curriculum, by, allow_stage=False)
    values = _stage_values(curriculum, by)
    if not any((v == value).any() for v in values):
        present = np.unique(np.concatenate(values)).tolist()
        raise ValueError(f"empty group: no training pattern has {by} = {value!r}; the "
                         f"training patterns have {by} in {present}")
    stages = []
    for index, (stage, v) in enumerate(zip(curriculum.stages, values)):
        keep = np.nonzero(v != value)[0]
        if len(keep) == 0:
            raise ValueError(f"leaving out {by} = {value!r} removes every pattern of stage "
                             f"{index} ({stage.name or 'unnamed'}): leave out a smaller group, "
                             f"or build the Curriculum without that stage")
        stages.append(dataclasses.replace(stage, patterns=stage.patterns[keep]))
    return Curriculum(tuple(stages))


def influence(
    network: RepresentationNetwork,
    curriculum: Curriculum,
    probes: PatternSet,
    checkpoints: int | Sequence[int] = 101,
    by: str | None = None,
    relinearize: int | str = 1,
    time: str = "discrete",
    tolerance: float = 0.5,
    factorization: str = "auto",
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    progress: Callable[[int], None] | None = None,
    threads: int | None = None,
) -> xr.Dataset:
    """The forecast's hidden change on ``probes`` split by training source (module docstring):
    influence[t, i, s, u] = - sum_{j in s} Pi_c(x_i, x_j) a_j(t) summed over the segments so far.

    by: None (each training pattern of the curriculum a source), a label of the training
    patterns (e.g. "task", "k"; concurrent patterns have task -1) or "stage".
    Arguments as repkernel.forecast (relinearize 1 = frozen kernel, R equal segments, "auto").
    Returns a Dataset with influence(time, item, source, unit) (a leading ``layer`` dim for
    several hidden layers), relinearization_jump(time, item, unit) (zero for the frozen kernel)
    and source coordinates (``sources``); attrs as a forecast's, source="influence".
    Memory: time x items x sources x units numbers; group by a label for large curricula.
    """
    net, threads = checked_run(network, curriculum, probes, time, relinearize, tolerance,
                               factorization, device, dtype, threads)
    coords, membership = sources(curriculum, by)
    with cpu_threads.threads(threads):
        steps = checkpoint_steps(checkpoints, curriculum.total_steps)
        center_net = copy.deepcopy(net)
        run = integrate(center_net, curriculum, steps, time, relinearize, tolerance,
                        factorization, progress, keep_dual=True)
        layers, jump = _accumulate(run, center_net, probes, membership, len(steps))
    options = {"by": by, "relinearize": relinearize, "time": time, "factorization": factorization}
    if relinearize == "auto":
        options["tolerance"] = float(tolerance)
    stacked = stack_hidden(layers)
    dims = ("time", "item", "source", "unit")
    ds = xr.Dataset(coords={"time": ("time", steps), "unit": ("unit", np.arange(
        stacked.shape[-1])), **probes.coords(), **coords})
    if stacked.shape[0] == 1:
        ds["influence"] = (dims, stacked[0])
        ds["relinearization_jump"] = (("time", "item", "unit"), stack_hidden(jump)[0])
    else:
        ds["influence"] = (("layer", *dims), stacked)
        ds["relinearization_jump"] = (("layer", "time", "item", "unit"), stack_hidden(jump))
        ds = ds.assign_coords(layer=("layer", np.arange(stacked.shape[0])))
    ds["influence"].attrs.update(
        long_name="influence on the hidden representation",
        description="- sum over the source's training patterns j of Pi(x, x_j) a_j(t), summed "
                    "over the forecast's segments (linear readout)")
    ds["relinearization_jump"].attrs.update(
        long_name="accumulated jump of the linear readout at re-linearizations",
        description="second-order remainder owned by no training pattern; zero for the "
                    "frozen kernel")
    ds.attrs["jacobian_evaluations"] = run.jacobian_evaluations
    return finish_run(ds, net, curriculum, probes, steps, None, "influence",
                      run.theta0.device, run.theta0.dtype, influence=options)


def _accumulate(run, net, probes: PatternSet, membership: list[np.ndarray], n_times: int):
    """Per hidden layer, influence (T, n_p, S, H_l) and the accumulated relinearization jump
    (T, n_p, H_l) from the run's pieces (segments with their dual coefficients)."""
    like = run.theta0
    n_sources = membership[0].shape[1]
    widths = net.hidden_sizes
    out = [like.new_zeros(n_times, len(probes), n_sources, w) for w in widths]
    jump_out = [like.new_zeros(n_times, len(probes), w) for w in widths]
    done = [like.new_zeros(len(probes), n_sources, w) for w in widths]
    jump = [like.new_zeros(len(probes), w) for w in widths]
    previous_end, center, row = None, None, 0
    for piece in run.pieces:
        lin = piece.lin
        if center is None or not torch.equal(lin.theta, center):
            center = lin.theta
            net.load_flat_parameters(center)
            probe_operator = JacobianOperator(net, probes)
            with torch.no_grad():
                at_center = net.represent(probes)[0]
            start = _linear_readout(at_center, probe_operator, piece.start - center)
            if previous_end is not None:  # the linear readout jumps where the model moves
                jump = [j + a - e for j, a, e in zip(jump, start, previous_end)]
        previous_end = _linear_readout(at_center, probe_operator, piece.end - center)
        blocks = _blocks(piece, probe_operator, membership[lin.data.index])
        m = len(piece.steps)
        for layer, block in enumerate(blocks):
            out[layer][row:row + m] = done[layer] + block[:m]
            jump_out[layer][row:row + m] = jump[layer]
            done[layer] = done[layer] + block[m]
        row += m
    return out, jump_out


def _linear_readout(at_center, operator: JacobianOperator, direction: torch.Tensor):
    """h_c + J_h,c d on the probes, one (n_p, H_l) per layer."""
    change = operator.forward(direction[:, None], hidden=True)[0]
    return [h + dh[..., 0] for h, dh in zip(at_center, change)]


def _blocks(piece, probe_operator: JacobianOperator, membership: np.ndarray):
    """One segment's influence per layer, (m + 1, n_p, S, H_l) at its checkpoints and end:
    - Pi_c(probes, X_u) (W a) restricted to each source, through J_h,c (J_f,c^T ...)."""
    data, dual = piece.lin.data, piece.dual  # dual (n_u, O, m + 1)
    counts = data.counts.cpu().numpy()
    # distinct pattern u's share of source s: its copies in s over all its copies
    share = np.zeros((data.n, membership.shape[1]))
    np.add.at(share, data.inverse, membership)
    share = torch.as_tensor(share / counts[:, None], dtype=dual.dtype, device=dual.device)
    per_time = []
    for t in range(dual.shape[-1]):
        columns = dual[:, :, t, None] * share[:, None, :]  # (n_u, O, S)
        hidden = probe_operator.forward(-piece.lin.operator.transpose(columns), hidden=True)[0]
        per_time.append([h.transpose(1, 2) for h in hidden])  # (n_p, S, H_l)
    return [torch.stack([layers[i] for layers in per_time]) for i in range(len(per_time[0]))]


def influence_on_groups(result: xr.Dataset, group: str = "task") -> xr.DataArray:
    """Share of the hidden change at the probes of each ``group`` value (a probe label) that
    each source causes: share[t, s, g] = <I_s, dh>_g / <dh, dh>_g over the probe items of g and
    the units, dh = sum_s I_s + relinearization_jump the forecast's change. Sums to 1 over
    sources where the kernel is frozen (the jump is zero). (time, source, probe_<group>)."""
    if group not in result.coords or "item" not in result[group].dims:
        labels = [name for name in result.coords if result[name].dims == ("item",)]
        raise ValueError(f"unknown probe label {group!r}: the probes have {labels}")
    influence = result["influence"]
    change = influence.sum("source") + result["relinearization_jump"]
    dims = [d for d in ("layer", "unit") if d in influence.dims]
    inner = (influence * change).sum(dims).groupby(group).sum()
    size = (change**2).sum(dims).groupby(group).sum()
    share = (inner / size).rename({group: f"probe_{group}"})
    share.attrs.update(long_name=f"share of the hidden change at each {group}'s probes",
                       description="<influence of the source, change> / <change, change>")
    return share.transpose("time", "source", f"probe_{group}")
