"""Seed ensembles and the Monte-Carlo kernel (DESIGN.md section 8).

A forecast from one initialization is one sample. Over seeds s = 1..S:
  ensemble        any run (forecast or training) repeated per seed, stacked on a ``seed`` dim
  summary         mean and standard deviation over seeds of any quantity
  calibration     per checkpoint, the fraction of actual per-seed values inside the forecast
                  ensemble's central band (quantiles (1 - b)/2 and (1 + b)/2 over seeds, b = 0.9),
                  and the Pearson correlation of forecast mean and actual mean
  Monte-Carlo     the seed mean of the eNTK Theta_s and of the pseudo-kernel Pi_s with standard
  kernel          errors std_s / sqrt(S); the seed covariance of the initial outputs
                  (the empirical NNGP) and the seed mean of the initial outputs and hidden units.
                  For i.i.d. initializations it estimates the infinite-width kernel of the same
                  architecture (error ~ 1/sqrt(width) at one seed, ~ 1/sqrt(S) noise).
Seeds are streamed (one network in memory at a time; kernels accumulated with Welford's update).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
import xarray as xr

from repkernel.kernels import ntk_matrix, pseudo_kernel_matrix
from repkernel.networks import RepresentationNetwork
from repkernel.patterns import PatternSet
from repkernel.posterior import learned_coefficients, posterior
from repkernel.results import provenance, save, stack_runs
from repkernel.wide import WideMLP, wide_ntk_matrix, wide_pseudo_kernel_matrix

SEED = "seed"


def _seeds(seeds) -> list[int]:
    seeds = [int(s) for s in np.atleast_1d(np.asarray(seeds))]
    if not seeds or len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds must be a non-empty list of distinct integers, got {seeds}")
    return seeds


def ensemble(run: Callable[[int], xr.Dataset], seeds: Sequence[int],
             store: str | os.PathLike | None = None) -> xr.Dataset:
    """run(seed) for every seed, stacked on a new ``seed`` dim (coords = the seeds); e.g.
    ``ensemble(lambda s: rk.forecast(make_net(s), curriculum, probes), range(10))``. Runs one
    seed at a time; attrs of the first run are kept, with ``seeds`` added. (To train networks
    of one architecture side by side, vectorized, pass them as a list to repkernel.train.)

    ``store``: a folder; each seed's result (a Dataset) is written there as seed_<s>.nc
    (atomically, replacing a file of that name) and released, and the returned Dataset reads
    the files lazily (dask) in chunks of one checkpoint (``time``) with every seed, so memory
    holds one run while running and one chunk while summarizing, however many seeds.
    """
    seeds = _seeds(seeds)
    if store is None:
        return stack_runs([_checked(run(seed), seed) for seed in seeds], seeds, SEED)
    paths, chunks = [], {}
    for seed in seeds:
        result = _checked(run(seed), seed)
        if not isinstance(result, xr.Dataset):
            raise ValueError(f"run({seed}) returned a DataArray: a stored ensemble needs "
                             f"Datasets (use .to_dataset(name=...))")
        paths.append(save(result, Path(store) / f"seed_{seed}.nc"))
        chunks = {"time": 1} if "time" in result.dims else {}
    stacked = xr.open_mfdataset(paths, combine="nested", concat_dim=SEED, chunks=chunks,
                                combine_attrs="override", coords="minimal", compat="override",
                                join="outer")
    stacked = stacked.assign_coords({SEED: seeds}).chunk({SEED: -1})
    stacked.attrs["seeds"] = ",".join(map(str, seeds))
    return stacked


def _checked(result, seed: int):
    if not isinstance(result, (xr.Dataset, xr.DataArray)):
        raise ValueError(f"run({seed}) returned {type(result).__name__}: it must return an "
                         f"xarray Dataset or DataArray")
    return result


def _check_dim(data, dim: str) -> None:
    if dim not in data.dims:
        raise ValueError(f"no {dim!r} dim to summarize over (dims {list(data.dims)}): build "
                         f"the ensemble with repkernel.ensemble")


def summarize(data: xr.Dataset | xr.DataArray, dim: str = SEED) -> xr.Dataset:
    """Mean and standard deviation (ddof 1) over seeds of every variable that has ``dim``:
    variables ``{name}_mean`` and ``{name}_std`` (for a DataArray, ``mean`` and ``std``)."""
    _check_dim(data, dim)
    if data.sizes[dim] < 2:
        raise ValueError(f"a spread needs at least 2 seeds, got {data.sizes[dim]}")
    if isinstance(data, xr.DataArray):
        return xr.Dataset({"mean": data.mean(dim), "std": data.std(dim, ddof=1)},
                          attrs=data.attrs)
    out = {}
    for name, var in data.data_vars.items():
        if dim in var.dims and np.issubdtype(var.dtype, np.number):
            out[f"{name}_mean"] = var.mean(dim)
            out[f"{name}_std"] = var.std(dim, ddof=1)
    return xr.Dataset(out, attrs=data.attrs)


def calibration(forecast: xr.DataArray, actual: xr.DataArray, over: str | Sequence[str] = (),
                dim: str = SEED, band: float = 0.9) -> xr.Dataset:
    """Calibration of a forecast ensemble against the actual one (same dims, same seeds count
    not required).

    coverage: fraction of actual per-seed values inside the forecast's central ``band`` (its
    quantiles (1 - band)/2 and (1 + band)/2 over ``dim``), averaged over ``dim`` and the dims
    ``over`` (e.g. "item"); a calibrated forecast gives ``band``. mean_correlation: Pearson
    correlation over ``over`` of forecast mean and actual mean (needs ``over``). band_width:
    the mean width of the band. Remaining dims (e.g. time) are kept.
    """
    if not 0 < band < 1:
        raise ValueError(f"band must be a fraction in (0, 1), got {band}")
    _check_dim(forecast, dim)
    _check_dim(actual, dim)
    over = [over] if isinstance(over, str) else list(over)
    missing = [d for d in over if d not in forecast.dims or d not in actual.dims]
    if missing:
        raise ValueError(f"dims {missing} to pool over are not in both forecast and actual")
    if forecast.sizes[dim] < 2:
        raise ValueError(f"a forecast band needs at least 2 seeds, got {forecast.sizes[dim]}")
    lower = forecast.quantile((1 - band) / 2, dim=dim).drop_vars("quantile")
    upper = forecast.quantile((1 + band) / 2, dim=dim).drop_vars("quantile")
    inside = ((actual >= lower) & (actual <= upper)).astype(float)
    out = {"coverage": inside.mean([dim, *over]),
           "band_width": (upper - lower).mean(over) if over else upper - lower}
    if over:
        mean_f, mean_a = forecast.mean(dim), actual.mean(dim)
        if len(over) > 1:
            mean_f = mean_f.stack(pooled=over, create_index=False)
            mean_a = mean_a.stack(pooled=over, create_index=False)
        out["mean_correlation"] = xr.corr(mean_f, mean_a, dim=over[0] if len(over) == 1
                                          else "pooled")
    return xr.Dataset(out, attrs={"band": band, "dim": dim, "over": ",".join(over)})


# -- the Monte-Carlo kernel --------------------------------------------------------------------


class _Welford:
    """Running mean and sum of squared deviations of equally shaped tensors."""

    def __init__(self) -> None:
        self.count, self.mean, self.squares = 0, None, None

    def add(self, value: torch.Tensor) -> None:
        value = value.detach()
        self.count += 1
        if self.mean is None:
            self.mean, self.squares = value.clone(), torch.zeros_like(value)
            return
        delta = value - self.mean
        self.mean += delta / self.count
        self.squares += delta * (value - self.mean)

    def standard_error(self) -> torch.Tensor:
        return torch.sqrt(self.squares / (self.count - 1) / self.count)


def _kernels_of(net: RepresentationNetwork, patterns: PatternSet, train: PatternSet | None):
    if isinstance(net, WideMLP):
        ntk = wide_ntk_matrix(net, patterns)
        pseudo = None if train is None else wide_pseudo_kernel_matrix(net, patterns, train)
    else:
        ntk = ntk_matrix(net, patterns)
        pseudo = None if train is None else pseudo_kernel_matrix(net, patterns, train)
    return ntk, pseudo


def monte_carlo_kernel(network: Callable[[int], RepresentationNetwork], seeds: Sequence[int],
                       patterns: PatternSet, train: Sequence[int] | np.ndarray | None = None,
                       layer: int = -1, pseudo_kernel: bool = True) -> xr.Dataset:
    """Seed-averaged kernels of the networks network(seed) on ``patterns`` (module docstring).

    Returns a Dataset with ntk and ntk_standard_error (item, output_unit, item_b, output_unit_b),
    nngp (same dims: the seed covariance of the initial outputs, ddof 1), output_mean
    (item, output_unit) and hidden_mean (item, unit) of the initial network (hidden layer
    ``layer``); with ``train`` (indices of the training items among ``patterns``), also
    pseudo_kernel and pseudo_kernel_standard_error (item, unit, train_item, output_unit),
    Pi = J_h J_f^T of that layer (``pseudo_kernel=False`` skips it: at n items, H units and
    n_train O outputs it holds n H n_train O numbers, 4.3 GB in float64 for 600 items, 200
    units and 500 x 9 training outputs, three times over while averaging). The ntk, nngp and
    output_mean are what ``posterior`` and ``monte_carlo_forecast`` take. Needs at least 2
    seeds.
    """
    seeds = _seeds(seeds)
    if len(seeds) < 2:
        raise ValueError("a Monte-Carlo kernel needs at least 2 seeds (for its standard error)")
    if not isinstance(patterns, PatternSet):
        raise ValueError(f"patterns must be a PatternSet, got {type(patterns).__name__}")
    train_idx = None if train is None else np.asarray(train)
    train_set = None if train is None or not pseudo_kernel else patterns[train_idx]
    ntk, pseudo, outputs, hidden = _Welford(), _Welford(), _Welford(), _Welford()
    moment = None  # running mean of f0 f0^T for the covariance
    config = None
    for seed in seeds:
        net = network(seed)
        if not isinstance(net, RepresentationNetwork):
            raise ValueError(f"network(seed) must return a RepresentationNetwork, got "
                             f"{type(net).__name__}")
        config = config or net.config
        k, pi = _kernels_of(net, patterns, train_set)
        ntk.add(k)
        if pi is not None:
            pseudo.add(pi[layer])
        with torch.no_grad():
            layers, f0 = net.represent(patterns)
        outputs.add(f0)
        hidden.add(layers[layer])
        outer = torch.einsum("io,jq->iojq", f0, f0)
        moment = outer if moment is None else moment + (outer - moment) / outputs.count
    s = len(seeds)
    mean_f = outputs.mean
    covariance = (moment - torch.einsum("io,jq->iojq", mean_f, mean_f)) * s / (s - 1)
    n_out = mean_f.shape[1]
    coords = {**patterns.coords(), "item_b": ("item_b", np.arange(len(patterns))),
              "output_unit": ("output_unit", np.arange(n_out)),
              "output_unit_b": ("output_unit_b", np.arange(n_out)),
              "unit": ("unit", np.arange(hidden.mean.shape[1]))}
    four = ("item", "output_unit", "item_b", "output_unit_b")
    data = {"ntk": (four, ntk.mean.cpu().numpy()),
            "ntk_standard_error": (four, ntk.standard_error().cpu().numpy()),
            "nngp": (four, covariance.cpu().numpy()),
            "output_mean": (("item", "output_unit"), mean_f.cpu().numpy()),
            "hidden_mean": (("item", "unit"), hidden.mean.cpu().numpy())}
    if train is not None:
        coords["train_item"] = ("train_item", train_idx)
    if train_set is not None:
        dims = ("item", "unit", "train_item", "output_unit")
        data["pseudo_kernel"] = (dims, pseudo.mean.cpu().numpy())
        data["pseudo_kernel_standard_error"] = (dims, pseudo.standard_error().cpu().numpy())
    like = ntk.mean
    attrs = provenance({"kind": "monte_carlo_kernel", "network": config, "seeds": seeds,
                        "layer": layer, "patterns": patterns.summary()},
                       like.device, like.dtype, "monte_carlo_kernel")
    return xr.Dataset(data, coords=coords, attrs=attrs)


def monte_carlo_forecast(kernels: xr.Dataset, targets, steps, lr: float = 1.0,
                         reduction: str = "mean", time: str = "discrete",
                         solver: str = "eigh") -> xr.Dataset:
    """Deterministic forecast of the ensemble mean from a Monte-Carlo kernel (with ``train``;
    the hidden forecast needs its pseudo-kernel):
      output: the linearized-ensemble posterior (repkernel.posterior) with Theta = the seed-mean
              eNTK, prior mean and covariance = the seed mean and covariance of f_0: mean and
              variance (time, item, output_unit);
      hidden: hidden_mean(x) + Pi_mean(x, X) a(t), a(t) the dual coefficients of the mean
              kernel (posterior.learned_coefficients) for the mean residual Y - mean f_0(X):
              (time, item, unit). Exact in the infinite-width limit, where the kernels are
              deterministic; at finite width it neglects the seed covariance of Pi and a.
    targets (n_train, O) for the kernel's train items; steps, lr, reduction, time as in
    posterior (time counts steps of the trainer).
    """
    if "train_item" not in kernels.coords:
        raise ValueError("the Monte-Carlo kernel has no training items: build it with train=...")
    train = np.array(kernels.train_item.values)
    n, n_out = len(train), kernels.sizes["output_unit"]
    out = posterior(kernels.ntk, train, targets, steps, lr=lr, reduction=reduction, time=time,
                    prior_covariance=kernels.nngp, prior_mean=kernels.output_mean,
                    solver=solver)
    out.attrs["source"] = "monte_carlo_forecast"
    if "pseudo_kernel" not in kernels:
        return out
    theta = torch.as_tensor(kernels.ntk.values)
    flat = theta[train][:, :, train].reshape(n * n_out, n * n_out)
    targets = torch.as_tensor(np.asarray(targets), dtype=theta.dtype).reshape(n, n_out)
    residual = targets - torch.as_tensor(kernels.output_mean.values[train])
    rho = lr / n if reduction == "mean" else lr
    a = learned_coefficients(flat, residual.reshape(-1, 1), steps, rho, time, solver)
    pi = torch.as_tensor(kernels.pseudo_kernel.values)  # (item, unit, train_item, output_unit)
    change = torch.einsum("iuj,tj->tiu", pi.reshape(*pi.shape[:2], -1), a[..., 0])
    hidden = torch.as_tensor(kernels.hidden_mean.values)[None] + change
    out["hidden"] = (("time", "item", "unit"), hidden.numpy())
    return out.assign_coords(unit=kernels.unit.values)


def band_figure(forecast: xr.DataArray, actual: xr.DataArray, dim: str = SEED,
                band: float = 0.9, x: str = "time", ax=None, title: str = ""):
    """Actual and forecast ensemble means over ``x`` with the central ``band`` of each (quantiles
    over ``dim``), one line and shaded band per source; both inputs (dim, x) after reduction of
    any other dims by the caller. Returns the matplotlib figure."""
    import matplotlib.pyplot as plt

    for name, data in (("forecast", forecast), ("actual", actual)):
        _check_dim(data, dim)
        if set(data.dims) != {dim, x}:
            raise ValueError(f"{name} must have exactly the dims ({dim!r}, {x!r}), got "
                             f"{list(data.dims)}: select or average the others first")
    if ax is None:
        _, ax = plt.subplots(figsize=(5, 3.2))
    for name, data, color in (("actual", actual, "C0"), ("forecast", forecast, "C1")):
        low = data.quantile((1 - band) / 2, dim=dim)
        high = data.quantile((1 + band) / 2, dim=dim)
        ax.fill_between(data[x].values, low.values, high.values, color=color, alpha=0.25,
                        linewidth=0)
        ax.plot(data[x].values, data.mean(dim).values, color=color,
                label=f"{name} mean ({data.sizes[dim]} seeds)")
    ax.set_xlabel(x)
    ax.set_ylabel(forecast.name or "value")
    ax.set_title(title or f"mean and central {round(band * 100)} % band over {dim}")
    ax.legend(frameon=False, fontsize="small")
    ax.figure.tight_layout()
    return ax.figure
