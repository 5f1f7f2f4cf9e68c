"""The kernel along the actual training path (DESIGN.md section 9, REFERENCE.md F).

At every checkpoint t_i of a training run (weights theta_i), on the probes X_p:
  eNTK             K(t) = Theta(X_p, X_p; theta_i)                      (n_p O x n_p O)
  kernel distance  1 - <K(t), K(0)>_F / (|K(t)|_F |K(0)|_F)            (0: the kernel's shape
                                                                       has not moved)
  kernel norm      |K(t)|_F / |K(0)|_F                                  (its scale)
  alignment        <K, Y Y^T>_F / (|K|_F |Y Y^T|_F) = y^T K y / (|K|_F |y|^2), y = vec(Y) the
                   probe targets (n_p O,)
and the path-integrated kernel prediction of the change. One gradient step of stage s moves the
probes' hidden layer, to first order, by the loss-weighted pseudo-kernel sum over its patterns,
    v_s(theta) = - rho_s Pi(X_p, X_s; theta) g(theta),   g = grad_f l on X_s, rho_s = drift / n
(the full-batch drift, repkernel.curriculum; J_f in place of J_h for the outputs), and
gradient descent moves them by the path sum over its steps k, sum_k v_s(theta_k), up to each
step's second-order remainder (none for a model linear in its weights; first order in the rate
relative to the change, zero in the gradient-flow limit). Between checkpoints a < b (L = b - a
steps of one stage s) the steps' sum is estimated from its ends by the trapezoid rule with the
Euler-Maclaurin end correction,
    sum_{k=a}^{b-1} v_s(theta_k) ~ ((L + 1) v_s(theta_a) + (L - 1) v_s(theta_b)) / 2,
second order in L and exact for L = 1, so the prediction converges to the path sum as
checkpoints get denser (minibatch and online stages add their noise, which the full-batch
drift does not hold). The
same sum with the kernel frozen at theta_0 but the actual residuals g(theta_i),
    v_s^0(theta) = - rho_s Pi(X_p, X_s; theta_0) g(theta),
separates the kernel's motion from the residuals': where the frozen sum fails and the path sum
holds, the frozen-kernel forecast fails because the kernel moved.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Sequence

import numpy as np
import torch
import xarray as xr

from repkernel import cpu_threads
from repkernel.curriculum import Curriculum, Stage
from repkernel.kernels import JacobianOperator, ntk_matrix
from repkernel.losses import loss_gradient
from repkernel.networks import RepresentationNetwork, check_run, placed
from repkernel.patterns import PatternSet
from repkernel.results import (
    _json_default,
    checkpoint_steps,
    config_of,
    finish_run,
    stack_hidden,
)
from repkernel.similarity import change_alignment
from repkernel.training import train


def kernel_path(
    network: RepresentationNetwork,
    curriculum: Curriculum,
    probes: PatternSet,
    trained: xr.Dataset | None = None,
    checkpoints: int | Sequence[int] = 101,
    keep_kernel: bool = False,
    forecast: xr.Dataset | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    threads: int | None = None,
) -> xr.Dataset:
    """The eNTK on ``probes`` along actual training and the path-integrated kernel prediction of
    the hidden change (module docstring).

    trained: a repkernel.train result of ``network`` on ``curriculum`` with its weights
    (record_weights=True), whose checkpoints include step 0 and every stage boundary they pass;
    None trains here at ``checkpoints`` plus the stage boundaries. forecast: optionally a
    repkernel.forecast of the same run; its change correlation with the actual run is recorded
    next to the kernel's motion. keep_kernel: also return the eNTK at every checkpoint
    (T (n_p O)^2 numbers).
    Returns a Dataset over ``time``: kernel_distance, kernel_norm, kernel_alignment;
    hidden_change / output_change (actual, h(t) - h(0)), path_hidden_change /
    path_output_change (the path-integrated kernel), frozen_hidden_change /
    frozen_output_change (kernel frozen at t = 0, actual residuals); path_correlation,
    path_error, frozen_correlation, frozen_error (change alignment with the actual hidden
    change: Pearson r and ||dh_pred - dh_a|| / ||dh_a||); forecast_correlation(time, readout)
    with ``forecast``; kernel(time, item, output_unit, item_b, output_unit_b) with keep_kernel.
    """
    net = placed(network, device, dtype)
    check_run(net, curriculum, probes)
    if threads is None:
        threads = cpu_threads.threads_for_run(net, curriculum, probes)
    if trained is None:
        steps = np.union1d(checkpoint_steps(checkpoints, curriculum.total_steps),
                           curriculum.boundaries)
        trained = train(net, curriculum, probes, checkpoints=steps, threads=threads)
    steps = _checked_steps(trained, net, curriculum)
    with cpu_threads.threads(threads):
        ds = _kernel_path(net, curriculum, probes, trained, steps, keep_kernel)
    if forecast is not None:
        ds["forecast_correlation"] = _forecast_correlation(forecast, trained, steps)
    like = net.flat_parameters()
    return finish_run(ds, net, curriculum, probes, steps, None, "kernel_path", like.device,
                      like.dtype, kernel_path={"keep_kernel": keep_kernel,
                                               "forecast": forecast is not None})


def _checked_steps(trained: xr.Dataset, net: RepresentationNetwork,
                   curriculum: Curriculum) -> np.ndarray:
    """The checkpoint steps of a training result that kernel_path can integrate (ValueError
    naming the problem otherwise)."""
    if isinstance(trained, xr.Dataset) and "readout" in trained.dims:
        raise ValueError("trained is a forecast: give the result of repkernel.train (the "
                         "actual path), and the forecast as forecast=")
    if isinstance(trained, xr.Dataset) and "seed" in trained.dims:
        raise ValueError("trained holds several seeds: give one run, e.g. "
                         "trained.sel(seed=0), with that seed's network")
    if not isinstance(trained, xr.Dataset) or "weights" not in trained.data_vars:
        raise ValueError("trained must be a repkernel.train result with its weights: train with "
                         "record_weights=True (or pass trained=None to train here)")
    if trained.sizes["parameter"] != net.n_parameters:
        raise ValueError(f"trained holds {trained.sizes['parameter']} weights per checkpoint, "
                         f"the network {net.n_parameters}: give the result of training this "
                         f"network")
    recorded = config_of(trained).get("curriculum")
    expected = json.loads(json.dumps(curriculum.config(), default=_json_default,
                                     sort_keys=True))
    if recorded is not None and recorded != expected:
        raise ValueError("trained was made with another curriculum: give the result of "
                         "training this network on this curriculum")
    steps = trained.time.values.astype(np.int64)
    if steps[0] != 0:
        raise ValueError("trained has no checkpoint at step 0: the path starts from the initial "
                         "weights, so record step 0")
    start = torch.as_tensor(trained.weights.values[0]).to(net.flat_parameters())
    if not torch.allclose(start, net.flat_parameters(), rtol=1e-6, atol=1e-9):
        raise ValueError("trained did not start from this network's weights: give the result "
                         "of training this network")
    inside = [int(b) for b in curriculum.boundaries[1:-1] if b < steps[-1] and b not in steps]
    if inside:
        raise ValueError(f"trained has no checkpoint at the stage boundaries {inside}: the path "
                         f"integral changes its training patterns there, so record those steps "
                         f"(or pass trained=None)")
    return steps


class _Velocities:
    """v_s(theta_i) and v_s^0(theta_i) (module docstring): per checkpoint and stage, the
    first-order change of one step on the probes, hidden layers and outputs."""

    def __init__(self, net: RepresentationNetwork, probes: PatternSet, weights: torch.Tensor,
                 curriculum: Curriculum) -> None:
        self.net, self.probes, self.weights = net, probes, weights
        self.curriculum = curriculum
        self._initial: dict[int, JacobianOperator] = {}
        self._cache: dict[tuple[int, int], tuple] = {}
        net.load_flat_parameters(weights[0])
        self.initial_probes = JacobianOperator(net, probes)
        for index, stage in enumerate(curriculum.stages):
            self._initial[index] = JacobianOperator(net, stage.patterns)

    def at(self, i: int, index: int) -> tuple:
        """((hidden layers, output) along the path, (hidden layers, output) frozen at t = 0)."""
        if (i, index) not in self._cache:
            self._cache[(i, index)] = self._compute(i, self.curriculum.stages[index], index)
        return self._cache[(i, index)]

    def _compute(self, i: int, stage: Stage, index: int) -> tuple:
        net = self.net.load_flat_parameters(self.weights[i])
        x, c, y = stage.patterns.to(self.weights.device, self.weights.dtype)
        with torch.no_grad():
            f = net(x, c)[1]
        rho = stage.drift_rate / len(stage.patterns)
        g = (-rho * loss_gradient(f, y, stage.loss))[..., None]  # (n, O, 1)
        path = JacobianOperator(net, self.probes).forward(
            JacobianOperator(net, stage.patterns).transpose(g), hidden=True)
        frozen = self.initial_probes.forward(self._initial[index].transpose(g), hidden=True)
        return _squeeze(path), _squeeze(frozen)


def _squeeze(change) -> tuple:
    hidden, output = change
    return tuple(h[..., 0] for h in hidden), output[..., 0]


def _kernel_path(net, curriculum, probes, trained, steps, keep_kernel) -> xr.Dataset:
    net = copy.deepcopy(net)
    like = net.flat_parameters()
    weights = torch.as_tensor(trained.weights.values).to(like)
    velocities = _Velocities(net, probes, weights, curriculum)
    y = probes.to(like.device, like.dtype)[2].reshape(-1)
    kernels, distance, norm, alignment = [], [], [], []
    first = None
    for theta in weights:
        kernel = ntk_matrix(net.load_flat_parameters(theta), probes)
        flat = kernel.reshape(len(y), len(y))
        first = flat if first is None else first
        distance.append(float(1 - (flat * first).sum() / (flat.norm() * first.norm())))
        norm.append(float(flat.norm() / first.norm()))
        alignment.append(float(y @ flat @ y / (flat.norm() * (y @ y))))
        if keep_kernel:
            kernels.append(kernel.cpu().numpy())
    stages = curriculum.stage_of(steps)
    path, frozen = _integrate(velocities, steps, stages)
    hidden0 = torch.as_tensor(trained.hidden.isel(time=0).values).to(like)
    actual_hidden = torch.as_tensor(trained.hidden.values).to(like)
    if actual_hidden.ndim == 3:  # one hidden layer: the per-layer layout
        actual_hidden, hidden0 = actual_hidden[None], hidden0[None]
    actual_output = torch.as_tensor(trained.output.values).to(like)
    ds = xr.Dataset(coords={"time": ("time", steps), **probes.coords(),
                            "output_unit": ("output_unit", np.arange(probes.n_outputs))})
    ds["kernel_distance"] = ("time", np.array(distance))
    ds["kernel_norm"] = ("time", np.array(norm))
    ds["kernel_alignment"] = ("time", np.array(alignment))
    actual = [a - a0 for a, a0 in zip(actual_hidden, hidden0)]
    for name, layers in (("hidden_change", actual), ("path_hidden_change", path[0]),
                         ("frozen_hidden_change", frozen[0])):
        ds = _with_hidden(ds, name, layers)
    for name, values in (("output_change", actual_output - actual_output[0]),
                         ("path_output_change", path[1]), ("frozen_output_change", frozen[1])):
        ds[name] = (("time", "item", "output_unit"), values.cpu().numpy())
    zero = xr.zeros_like(ds["hidden_change"])
    for name in ("path", "frozen"):
        scores = change_alignment(ds[f"{name}_hidden_change"], ds["hidden_change"], zero)
        ds[f"{name}_correlation"] = scores["correlation"]
        ds[f"{name}_error"] = scores["relative_error"]
    if keep_kernel:
        ds["kernel"] = (("time", "item", "output_unit", "item_b", "output_unit_b"),
                        np.stack(kernels))
        ds = ds.assign_coords(output_unit_b=("output_unit_b", np.arange(probes.n_outputs)))
    _describe(ds)
    return ds


def _integrate(velocities: _Velocities, steps: np.ndarray, stages: np.ndarray):
    """The corrected trapezoid sums of v_s (module docstring) along the path and frozen:
    ((hidden layers (T, n_p, H_l), output (T, n_p, O)), same frozen)."""
    sums = []
    for which in (0, 1):
        hidden0, output0 = velocities.at(0, int(stages[min(1, len(steps) - 1)]))[which]
        hidden = [[torch.zeros_like(h)] for h in hidden0]
        output = [torch.zeros_like(output0)]
        for i in range(1, len(steps)):
            stage, width = int(stages[i]), float(steps[i] - steps[i - 1])
            (h_a, f_a), (h_b, f_b) = (velocities.at(i - 1, stage)[which],
                                      velocities.at(i, stage)[which])
            start, end = (width + 1) / 2, (width - 1) / 2
            for layer, a, b in zip(hidden, h_a, h_b):
                layer.append(layer[-1] + start * a + end * b)
            output.append(output[-1] + start * f_a + end * f_b)
        sums.append(([torch.stack(layer) for layer in hidden], torch.stack(output)))
    return sums[0], sums[1]


def _with_hidden(ds: xr.Dataset, name: str, layers: Sequence[torch.Tensor]) -> xr.Dataset:
    """Add per-layer (T, n_p, H_l) tensors as name(time, item, unit) (``layer`` dim first for
    several layers, narrower ones NaN-padded)."""
    stacked = stack_hidden(list(layers))
    if "unit" not in ds.coords:
        ds = ds.assign_coords(unit=("unit", np.arange(stacked.shape[-1])))
    if stacked.shape[0] == 1:
        ds[name] = (("time", "item", "unit"), stacked[0])
    else:
        ds[name] = (("layer", "time", "item", "unit"), stacked)
        ds = ds.assign_coords(layer=("layer", np.arange(stacked.shape[0])))
    return ds


def _forecast_correlation(forecast: xr.Dataset, trained: xr.Dataset,
                          steps: np.ndarray) -> xr.DataArray:
    """Change correlation of a forecast's hidden (per readout) with the actual run's, at the
    checkpoints both have (NaN elsewhere)."""
    if "hidden" not in forecast.data_vars or "readout" not in forecast.dims:
        raise ValueError("forecast must be a repkernel.forecast result (hidden with a readout "
                         "dim)")
    hidden = forecast.hidden.reindex(time=steps)
    actual = trained.hidden
    scores = change_alignment(hidden, actual, actual.isel(time=0, drop=True))
    return scores["correlation"].drop_vars("stage", errors="ignore")


DESCRIPTIONS = {
    "kernel_distance": ("kernel distance to t = 0",
                        "1 - <K(t), K(0)>_F / (|K(t)| |K(0)|), eNTK on the probes"),
    "kernel_norm": ("eNTK norm relative to t = 0", "|K(t)|_F / |K(0)|_F"),
    "kernel_alignment": ("kernel-target alignment",
                         "<K, y y^T>_F / (|K|_F |y y^T|_F), y the probe targets"),
    "hidden_change": ("actual hidden change", "h(t) - h(0)"),
    "path_hidden_change": ("path-integrated kernel prediction of the hidden change",
                           "sum over steps of -rho Pi(x, X; theta(t)) g(t), from the checkpoints"),
    "frozen_hidden_change": ("frozen-kernel prediction along the actual residuals",
                             "sum over steps of -rho Pi(x, X; theta_0) g(t)"),
    "output_change": ("actual output change", "f(t) - f(0)"),
    "path_output_change": ("path-integrated kernel prediction of the output change", ""),
    "frozen_output_change": ("frozen-kernel prediction of the output change", ""),
    "path_correlation": ("change correlation, path-integrated kernel vs actual", ""),
    "path_error": ("relative error of the path-integrated kernel",
                   "||dh_path - dh_actual|| / ||dh_actual||"),
    "frozen_correlation": ("change correlation, frozen kernel (actual residuals) vs actual", ""),
    "frozen_error": ("relative error of the frozen kernel along the actual residuals", ""),
    "forecast_correlation": ("change correlation, forecast vs actual", ""),
    "kernel": ("eNTK on the probes", "Theta[i,o,j,q](t)"),
}


def _describe(ds: xr.Dataset) -> None:
    for name, (long_name, description) in DESCRIPTIONS.items():
        if name in ds.variables:
            ds[name].attrs.update(long_name=long_name, **(
                {"description": description} if description else {}))
