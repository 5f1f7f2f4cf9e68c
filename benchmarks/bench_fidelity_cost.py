"""Cost-fidelity benchmark: how faithful is each forecast, and what does it cost against training?

In one process, single-threaded (torch.set_num_threads(1)), times measured as CPU time of the
process (time.process_time, robust to other load on the machine), for
  C        REFERENCE.md C (4x3x3 multitask environment, 200 hidden units, 500 training and 500
           probe patterns, single-task then concurrent phase of --c-steps steps each, lr 0.01 on
           the summed loss, gradient flow as in studies/multitask_relinearized.toml) at init 0.1
           and 1.0;
  fidelity the 4x3x3 fidelity-report network (100 hidden, 200 patterns, --f-steps steps, lr
           0.03 or half the stability bound, discrete time) at init 0.01, 0.1 and 1;
it trains the network, then forecasts it with relinearize R in {1, 4, 16, 64} and "auto" at
three tolerances, and reports per forecast:
  cost        forecast CPU time / training CPU time (same checkpoints, no weights recorded)
  r_end_s     change correlation of the hidden representation (Pearson r of dh_forecast vs
              dh_actual over probes x units, network readout) at the end of stage s
  r@10/50/90  the same at the first checkpoint where the actual network has achieved 10 / 50 /
              90 % of its first-stage loss decrease
  jacobians   Jacobian evaluations (linearization centers) of the forecast
Prints a table and writes <out>/fidelity_cost.nc (a Dataset with both readouts).

    python benchmarks/bench_fidelity_cost.py [--quick] [--out reports/fidelity_cost]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
import xarray as xr

import repkernel as rk
from repkernel.kernels import ntk_matrix

LEVELS = (0.1, 0.5, 0.9)
RELINEARIZE = (1, 4, 16, 64)
TOLERANCES = (1.0, 0.3, 0.1)


def c_setup(init_scale: float, steps: int):
    env = rk.MultitaskEnvironment(4, 3, 3)
    net = rk.MultitaskNetwork(env, hidden=200, init_scale=init_scale, seed=0)
    curriculum = rk.Curriculum.single_then_concurrent(env, 500, (steps, steps), 0.01,
                                                      reduction="sum")
    probes = env.sample(500, {1: 1 / 3, 2: 1 / 3, 3: 1 / 3}, seed=1000)
    grid = np.unique(np.concatenate([np.linspace(0, 2 * steps, 101),
                                     np.geomspace(1, steps, 40)]).round().astype(int))
    return net, curriculum, probes, grid, "continuous"


def fidelity_setup(init_scale: float, steps: int):
    env = rk.MultitaskEnvironment(4, 3, 3)
    train_set, probes = env.sample(200, seed=0), env.sample(200, seed=100)
    net = rk.MultitaskNetwork(env, hidden=100, init_scale=init_scale, seed=0)
    size = len(train_set) * train_set.n_outputs
    lam_max = float(torch.linalg.eigvalsh(ntk_matrix(net, train_set).reshape(size, size)).max())
    lr = min(0.03, 0.5 * 2 / lam_max)
    curriculum = rk.Curriculum((rk.Stage(train_set, steps, lr, reduction="sum"),))
    grid = np.unique(np.concatenate([[0], np.geomspace(1, steps, 60)]).round().astype(int))
    return net, curriculum, probes, grid, "discrete"


def cpu_seconds(function, *args, **kwargs):
    """function(*args, **kwargs) and the CPU seconds it took."""
    start = time.process_time()
    result = function(*args, **kwargs)
    return result, time.process_time() - start


def correlations(forecast: xr.Dataset, actual: xr.Dataset, readout: str) -> np.ndarray:
    """Change correlation at every checkpoint, (time,)."""
    h0 = actual.hidden.isel(time=0).values
    return np.asarray(rk.change_alignment(forecast.hidden.sel(readout=readout).values,
                                          actual.hidden.values, h0)["correlation"])


def summary(r: np.ndarray, actual: xr.Dataset, curriculum) -> list[float]:
    """r at the end of stages 1 and 2 (NaN without one) and at the progress levels of the first
    stage."""
    steps = actual.time.values
    ends = [float(r[np.searchsorted(steps, end)]) for end in curriculum.boundaries[1:3]]
    ends += [np.nan] * (2 - len(ends))
    first = steps <= curriculum.boundaries[1]
    loss = actual.loss.values[first]
    progress = (loss[0] - loss) / (loss[0] - loss.min())
    at = [float(r[np.nonzero(progress >= level)[0][0]]) for level in LEVELS]
    return ends + at


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="shorter schedules (C: 1000 + 1000 steps, fidelity: 1000 steps)")
    parser.add_argument("--c-steps", type=int, default=10000, help="steps per phase of C")
    parser.add_argument("--f-steps", type=int, default=3000, help="steps of the fidelity net")
    parser.add_argument("--only", choices=["C", "fidelity"], default=None)
    parser.add_argument("--relinearize", type=int, nargs="*", default=RELINEARIZE)
    parser.add_argument("--tolerances", type=float, nargs="*", default=TOLERANCES)
    parser.add_argument("--out", type=Path, default=Path("reports/fidelity_cost"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.set_default_dtype(torch.float64)
    c_steps, f_steps = (1000, 1000) if args.quick else (args.c_steps, args.f_steps)
    setups = [("C", s, lambda s=s: c_setup(s, c_steps)) for s in (0.1, 1.0)]
    setups += [("fidelity", s, lambda s=s: fidelity_setup(s, f_steps)) for s in (0.01, 0.1, 1.0)]
    setups = [entry for entry in setups if args.only in (None, entry[0])]
    methods = [str(r) for r in args.relinearize] + [f"auto {t:g}" for t in args.tolerances]
    columns = ["r_end_1", "r_end_2", "r@10", "r@50", "r@90"]
    shape = (len(setups), len(methods), 2, len(columns))
    scores = np.full(shape, np.nan)
    cost, jacobians = (np.full((len(setups), len(methods)), np.nan) for _ in range(2))
    train_seconds = np.zeros(len(setups))
    print(f"{'setup':>14} {'forecast':>10} {'cost':>7} {'jacobians':>9} "
          + " ".join(f"{c:>8}" for c in columns), flush=True)
    for i, (name, scale, build) in enumerate(setups):
        net, curriculum, probes, grid, clock = build()
        actual, train_seconds[i] = cpu_seconds(rk.train, net, curriculum, probes,
                                               checkpoints=grid, record_weights=False)
        label = f"{name} {scale:g}"
        print(f"{label:>14} {'train':>10} {train_seconds[i]:6.1f}s", flush=True)
        for j, method in enumerate(methods):
            options = ({"relinearize": "auto", "tolerance": float(method.split()[1])}
                       if method.startswith("auto") else {"relinearize": int(method)})
            fc, seconds = cpu_seconds(rk.forecast, net, curriculum, probes, checkpoints=grid,
                                      time=clock, record_weights=False, **options)
            cost[i, j], jacobians[i, j] = seconds / train_seconds[i], fc.jacobian_evaluations
            for k, readout in enumerate(("network", "linear")):
                values = summary(correlations(fc, actual, readout), actual, curriculum)
                scores[i, j, k, :len(values)] = values
            print(f"{label:>14} {method:>10} {cost[i, j]:7.3f} {int(jacobians[i, j]):9d} "
                  + " ".join(f"{v:8.3f}" for v in scores[i, j, 0]), flush=True)
    ds = xr.Dataset(
        {"change_correlation": (("setup", "forecast", "readout", "measure"), scores),
         "cost": (("setup", "forecast"), cost),
         "jacobian_evaluations": (("setup", "forecast"), jacobians),
         "train_seconds": ("setup", train_seconds)},
        coords={"setup": [f"{n} init {s:g}" for n, s, _ in setups], "forecast": methods,
                "readout": ["network", "linear"], "measure": columns})
    ds["cost"].attrs["long_name"] = "forecast CPU time / training CPU time (1 thread)"
    ds.attrs.update(quick=int(args.quick), c_steps=c_steps, f_steps=f_steps,
                    version=rk.__version__)
    args.out.mkdir(parents=True, exist_ok=True)
    rk.save(ds, args.out / "fidelity_cost.nc")
    print(f"wrote {args.out / 'fidelity_cost.nc'}")


if __name__ == "__main__":
    main()
