"""Influence maps against leave-one-task-out retraining (DESIGN.md section 9, issue 13).

The forecast splits the hidden change on the probes by training task g: I_g(t) =
- sum_{j in g} Pi(x, x_j) a_j(t) (repkernel.influence, by="task"). Ground truth the forecast
never sees: retrain the actual network without task g's patterns (repkernel.leave_out) and take
the leave-out effect E_g(t) = h_full(t) - h_without_g(t) at the probes. Reported per init scale,
forecast (frozen kernel, relinearize="auto") and checkpoint:
  variance explained  1 - sum_g |E_g - I_g|^2 / sum_g |E_g - mean(E)|^2, pooled over tasks,
                      probe items and hidden units (1: the forecast's influences are the
                      leave-out effects; 0: no better than their mean)
  pattern r           Pearson r of I_g and E_g over items x units, mean over tasks g
  rank r per task     for each probe task p, Spearman r over the training tasks g of the RMS
                      influence on p's probes, predicted vs actual; mean over p
  rank r (all)        Spearman r over all task x task RMS entries
The influence is an attribution: the direct term of each task in the full run. Leaving a task
out also changes how the other tasks train (their residuals no longer share the left-out task's
progress), which the attribution does not hold. The same forecast engine predicts that too,
from the initial weights alone: the counterfactual forecast F_g(t) = h_forecast(t; full
curriculum) - h_forecast(t; without g) (network readout), scored the same way.
The 3x3 multitask environment (3 input dims x 3 features, 3 output dims: 9 tasks), all 243
single-task patterns for training and as probes, summed loss (so leaving patterns out does not
change the others' rate), full-batch gradient descent.

    python benchmarks/influence_validation.py --out reports/influence [--hidden 100]

About a minute on one core (torch.set_num_threads(1)). Writes <out>/influence_validation.nc and
<out>/influence_heatmaps_<scale>.png (task x task: influence frozen and auto, counterfactual
auto, leave-out retraining; each panel scaled to its largest entry).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import numpy as np
import torch
import xarray as xr
from scipy.stats import spearmanr

import repkernel as rk
from repkernel import plot
from repkernel.kernels import ntk_matrix

FORECASTS = {"frozen": 1, "auto": "auto"}
PREDICTORS = ("influence frozen", "influence auto", "counterfactual frozen",
              "counterfactual auto")


def task_matrix(effect: np.ndarray, probe_tasks: np.ndarray, tasks: np.ndarray) -> np.ndarray:
    """RMS of effect (source, item, unit) over each probe task's items and the units:
    (source, probe task)."""
    return np.stack([np.sqrt((effect[:, probe_tasks == p] ** 2).mean(axis=(1, 2)))
                     for p in tasks], axis=1)


def scores(predicted: np.ndarray, actual: np.ndarray, probe_tasks: np.ndarray,
           tasks: np.ndarray) -> dict[str, float]:
    """The agreement measures of the module docstring for one checkpoint; (source, item,
    unit) arrays."""
    residual = ((actual - predicted) ** 2).sum()
    spread = ((actual - actual.mean()) ** 2).sum()
    pattern = np.mean([np.corrcoef(p.ravel(), a.ravel())[0, 1]
                       for p, a in zip(predicted, actual)])
    m_pred, m_act = (task_matrix(x, probe_tasks, tasks) for x in (predicted, actual))
    per_task = np.mean([spearmanr(m_pred[:, p], m_act[:, p])[0] for p in range(len(tasks))])
    return {"variance_explained": 1 - residual / spread, "pattern_correlation": pattern,
            "rank_correlation_per_task": per_task,
            "rank_correlation": spearmanr(m_pred.ravel(), m_act.ravel())[0]}


def run(args) -> tuple[xr.Dataset, dict, dict]:
    torch.set_default_dtype(torch.float64)
    env = rk.MultitaskEnvironment(3, 3, 3)
    patterns = env.patterns(k=1)
    tasks = np.array(env.tasks)
    probe_tasks = np.asarray(patterns.labels["task"])
    steps = np.array(args.checkpoints)
    measures = ("variance_explained", "pattern_correlation", "rank_correlation_per_task",
                "rank_correlation")
    out = {m: np.full((len(args.scales), len(PREDICTORS), len(steps)), np.nan)
           for m in measures}
    lrs, seconds, maps = [], {}, {}
    for i, scale in enumerate(args.scales):
        net = rk.MultitaskNetwork(env, hidden=args.hidden, init_scale=scale, seed=args.seed)
        size = len(patterns) * patterns.n_outputs
        lam_max = float(torch.linalg.eigvalsh(ntk_matrix(net, patterns).reshape(size, size))
                        .max())
        lr = min(args.lr, 0.5 * 2 / lam_max)  # half the stability bound of the summed loss
        lrs.append(lr)
        cur = rk.Curriculum((rk.Stage(patterns, int(steps[-1]), lr, reduction="sum"),))
        reduced = [rk.leave_out(cur, "task", int(task)) for task in tasks]
        start = time.process_time()
        full = rk.train(net, cur, patterns, checkpoints=steps, record_weights=False)
        actual = np.stack([(full.hidden - rk.train(net, c, patterns, checkpoints=steps,
                                                   record_weights=False).hidden).values
                           for c in reduced], axis=1)  # (time, source, item, unit)
        seconds[(scale, "retraining")] = time.process_time() - start
        predictions = {}
        for name, relinearize in FORECASTS.items():
            start = time.process_time()
            result = rk.influence(net, cur, patterns, checkpoints=steps, by="task",
                                  relinearize=relinearize, tolerance=args.tolerance)
            seconds[(scale, f"influence {name}")] = time.process_time() - start
            predictions[f"influence {name}"] = result.influence.transpose(
                "time", "source", "item", "unit").values
            maps[(scale, name)] = result
            start = time.process_time()

            def forecast(c, net=net, relinearize=relinearize):
                return rk.forecast(net, c, patterns, checkpoints=steps, readout="network",
                                   relinearize=relinearize, tolerance=args.tolerance,
                                   record_weights=False).hidden.sel(readout="network")

            whole = forecast(cur)
            predictions[f"counterfactual {name}"] = np.stack(
                [(whole - forecast(c)).values for c in reduced], axis=1)
            seconds[(scale, f"counterfactual {name}")] = time.process_time() - start
        for j, name in enumerate(PREDICTORS):
            for t in range(1, len(steps)):
                for m, value in scores(predictions[name][t], actual[t], probe_tasks,
                                       tasks).items():
                    out[m][i, j, t] = value
        for name, values in (("counterfactual auto", predictions["counterfactual auto"]),
                             ("leave-out", actual)):  # drawn in the influence layout
            maps[(scale, name)] = result.copy(data={
                "influence": values.transpose(0, 2, 1, 3),
                "relinearization_jump": np.zeros_like(result.relinearization_jump.values)})
    ds = xr.Dataset({m: (("init_scale", "predictor", "time"), v) for m, v in out.items()},
                    coords={"init_scale": args.scales, "predictor": list(PREDICTORS),
                            "time": steps})
    ds["lr"] = ("init_scale", np.array(lrs))
    ds.attrs.update({"environment": "3 x 3 x 3 multitask, 243 single-task patterns",
                     "hidden": args.hidden, "seed": args.seed, "tolerance": args.tolerance,
                     "version": rk.__version__,
                     "cpu_seconds": str({f"{k[0]:g} {k[1]}": round(v, 2)
                                         for k, v in seconds.items()})})
    return ds, maps, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("reports/influence"))
    parser.add_argument("--hidden", type=int, default=100)
    parser.add_argument("--scales", type=float, nargs="+", default=[0.1, 1.0])
    parser.add_argument("--lr", type=float, default=0.02)
    parser.add_argument("--checkpoints", type=int, nargs="+",
                        default=[0, 1, 3, 10, 30, 100, 300, 1000])
    parser.add_argument("--tolerance", type=float, default=0.5)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    ds, maps, seconds = run(args)
    args.out.mkdir(parents=True, exist_ok=True)
    rk.save(ds, args.out / "influence_validation.nc")
    for scale in args.scales:
        figure = plot.influence_heatmaps(
            {f"{name} (init {scale:g})": maps[(scale, name)]
             for name in ("frozen", "auto", "counterfactual auto", "leave-out")},
            times=args.checkpoints[3::2])
        plot.save_figure(figure, args.out / f"influence_heatmaps_{scale:g}.png")
    print(f"influence vs leave-one-task-out retraining; lr per scale "
          f"{dict(zip(args.scales, np.round(ds.lr.values, 4)))}; CPU s "
          f"{ds.attrs['cpu_seconds']}")
    for scale in args.scales:
        ratios = ", ".join(
            f"{name} {seconds[(scale, name)] / seconds[(scale, 'retraining')]:.2f}"
            for name in PREDICTORS)
        print(f"init {scale:g}: CPU time / leave-one-out retraining (10 trainings): {ratios}")
    print(f"{'scale':>6} {'predictor':>21} {'step':>5} {'var.expl':>9} {'pattern r':>9} "
          f"{'rank r/task':>11} {'rank r':>7}")
    for scale in ds.init_scale.values:
        for name in ds.predictor.values:
            for step in ds.time.values[1:]:
                row = ds.sel(init_scale=scale, predictor=name, time=step)
                print(f"{scale:6g} {name:>21} {step:5d} {float(row.variance_explained):9.3f} "
                      f"{float(row.pattern_correlation):9.3f} "
                      f"{float(row.rank_correlation_per_task):11.3f} "
                      f"{float(row.rank_correlation):7.3f}")


if __name__ == "__main__":
    main()
