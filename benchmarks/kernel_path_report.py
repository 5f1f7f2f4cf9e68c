"""The kernel along the actual path: where and when does the eNTK move, and does that explain
where the frozen-kernel forecast fails? (DESIGN.md section 9, REFERENCE.md F, issue 13)

Two settings, each trained for real and forecast with the frozen kernel (relinearize=1) at the
same checkpoints, then repkernel.kernel_path on the probes:
  C       REFERENCE.md C reduced: 4 x 3 x 3 multitask network, --hidden sigmoid units (200
          published), single-task then concurrent phase of --n patterns each (500 published),
          --phase-steps full-batch steps each on the summed loss, lr 0.03 at init 0.1 and 0.01
          at init 1.0 (the published rates), probes held out.
  scales  the fidelity-report network (benchmarks/fidelity_report.py): one interleaved stage,
          init scales 0.01 to 3, lr 0.03 lowered to half the stability bound where needed.
Per run and at the checkpoints where the network has achieved 10 / 50 / 90 % of its loss
decrease (and at the end), printed: kernel distance to t = 0, kernel norm |K(t)| / |K(0)|,
kernel-target alignment, and the hidden change correlation with the actual change of
  forecast    the frozen-kernel forecast (linear readout),
  frozen      the kernel frozen at t = 0 along the *actual* residuals,
  path        the kernel along the actual path (REFERENCE.md F; relative error path_err).
If "frozen" fails where the forecast fails, the kernel's motion explains the failure; if
"frozen" holds, the forecast's residuals are to blame. Also printed: Spearman r over all
(run, checkpoint) of kernel distance versus 1 - forecast correlation.

    python benchmarks/kernel_path_report.py --out reports/kernel_path [--quick]

Writes <out>/kernel_path_<setting>.nc and <out>/kernel_path_<setting>.png (kernel distance,
norm, alignment and the change correlations over training, one colour per init scale).
One torch thread, float64.
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

LEVELS = (0.1, 0.5, 0.9)


def stable_rate(net, patterns, lr: float) -> float:
    """lr, lowered to half the summed loss's stability bound 2 / lam_max where it is above."""
    size = len(patterns) * patterns.n_outputs
    lam_max = float(torch.linalg.eigvalsh(ntk_matrix(net, patterns).reshape(size, size)).max())
    return min(lr, 0.5 * 2 / lam_max)


def one_run(net, curriculum, probes, steps) -> xr.Dataset:
    trained = rk.train(net, curriculum, probes, checkpoints=steps)
    forecast = rk.forecast(net, curriculum, probes, checkpoints=steps, readout="linear",
                           record_weights=False)
    path = rk.kernel_path(net, curriculum, probes, trained=trained, forecast=forecast)
    loss = trained.loss.values
    path["progress"] = ("time", (loss[0] - loss) / (loss[0] - loss.min()))
    path["lr"] = curriculum.stages[0].lr
    return path


def setting_c(args) -> xr.Dataset:
    env = rk.MultitaskEnvironment(4, 3, 3)
    probes = env.sample(args.n_probes, seed=args.seed + 100)
    runs = []
    for scale, lr in ((0.1, 0.03), (1.0, 0.01)):
        net = rk.MultitaskNetwork(env, hidden=args.hidden, init_scale=scale, seed=args.seed)
        cur = rk.Curriculum.single_then_concurrent(env, n=args.n, steps=(args.phase_steps,) * 2,
                                                   lr=lr, reduction="sum", seed=args.seed)
        # dense where each phase starts (new residuals, fast change), even over the rest
        early = np.round(np.geomspace(1, args.phase_steps, args.checkpoints // 2))
        steps = np.unique(np.concatenate([
            [0], np.round(np.linspace(0, 2 * args.phase_steps, args.checkpoints)), early,
            args.phase_steps + early]))
        runs.append(one_run(net, cur, probes, steps.astype(int)))
    return xr.concat(runs, dim=xr.Variable("init_scale", [0.1, 1.0]), coords="minimal",
                     compat="override")


def setting_scales(args) -> xr.Dataset:
    env = rk.MultitaskEnvironment(4, 3, 3)
    train_set = env.sample(args.n, seed=args.seed)
    probes = env.sample(args.n_probes, seed=args.seed + 100)
    steps = np.unique(np.concatenate([
        [0], np.round(np.geomspace(1, args.scale_steps, args.checkpoints)),
        np.round(np.linspace(0, args.scale_steps, args.checkpoints))])).astype(int)
    scales = np.geomspace(0.01, 3, args.n_scales)
    runs = []
    for scale in scales:
        net = rk.MultitaskNetwork(env, hidden=args.hidden, init_scale=float(scale),
                                  seed=args.seed)
        lr = stable_rate(net, train_set, 0.03)
        cur = rk.Curriculum((rk.Stage(train_set, args.scale_steps, lr, reduction="sum",
                                      name="interleaved"),))
        runs.append(one_run(net, cur, probes, steps))
    return xr.concat(runs, dim=xr.Variable("init_scale", scales), coords="minimal",
                     compat="override")


def at_progress(ds: xr.Dataset, level: float) -> int:
    """Position of the first checkpoint whose progress reaches ``level``."""
    reached = np.nonzero(ds.progress.values >= level)[0]
    return int(reached[0]) if len(reached) else len(ds.time) - 1


def report(name: str, ds: xr.Dataset) -> None:
    print(f"\n{name}: at 10 / 50 / 90 % of the loss decrease and at the end")
    print(f"{'init':>6} {'lr':>7} {'point':>6} {'step':>5} {'k.dist':>7} {'k.norm':>7} "
          f"{'align':>6} {'forecast':>8} {'frozen':>7} {'path':>6} {'path_err':>8}")
    for scale in ds.init_scale.values:
        run = ds.sel(init_scale=scale)
        points = [(f"{int(level * 100)}%", at_progress(run, level)) for level in LEVELS]
        points.append(("end", len(run.time) - 1))
        for label, i in points:
            row = run.isel(time=i)
            print(f"{scale:6.3g} {float(run.lr):7.4f} {label:>6} {int(row.time):5d} "
                  f"{float(row.kernel_distance):7.3f} {float(row.kernel_norm):7.2f} "
                  f"{float(row.kernel_alignment):6.3f} "
                  f"{float(row.forecast_correlation.sel(readout='linear')):8.3f} "
                  f"{float(row.frozen_correlation):7.3f} {float(row.path_correlation):6.3f} "
                  f"{float(row.path_error):8.4f}")
    failure = 1 - ds.forecast_correlation.sel(readout="linear").values[:, 1:].ravel()
    distance = ds.kernel_distance.values[:, 1:].ravel()
    frozen_gap = 1 - ds.frozen_correlation.values[:, 1:].ravel()
    print(f"Spearman r over runs x checkpoints: kernel distance vs forecast failure "
          f"(1 - r) {spearmanr(distance, failure)[0]:.3f}; frozen-kernel-along-the-path "
          f"failure vs forecast failure {spearmanr(frozen_gap, failure)[0]:.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("reports/kernel_path"))
    parser.add_argument("--hidden", type=int, default=100)
    parser.add_argument("--n", type=int, default=200, help="training patterns (per phase)")
    parser.add_argument("--n-probes", type=int, default=100)
    parser.add_argument("--phase-steps", type=int, default=1000, help="C: steps per phase")
    parser.add_argument("--scale-steps", type=int, default=3000, help="scales: steps")
    parser.add_argument("--n-scales", type=int, default=6)
    parser.add_argument("--checkpoints", type=int, default=25)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--settings", nargs="+", choices=("C", "scales"),
                        default=("C", "scales"))
    parser.add_argument("--quick", action="store_true", help="a small version (smoke test)")
    args = parser.parse_args()
    if args.quick:
        args.hidden, args.n, args.n_probes, args.phase_steps = 30, 60, 30, 100
        args.scale_steps, args.n_scales, args.checkpoints = 200, 3, 10
    torch.set_num_threads(1)
    torch.set_default_dtype(torch.float64)
    args.out.mkdir(parents=True, exist_ok=True)
    settings = {"C": setting_c, "scales": setting_scales}
    for name in args.settings:
        setting = settings[name]
        start = time.process_time()
        ds = setting(args)
        seconds = time.process_time() - start
        ds.attrs.update({"setting": name, "hidden": args.hidden, "n": args.n,
                         "n_probes": args.n_probes, "seed": args.seed, "cpu_seconds": seconds})
        rk.save(ds, args.out / f"kernel_path_{name}.nc")
        labelled = ds.assign_coords(init_scale=np.round(ds.init_scale.values, 3))  # legend
        plot.save_figure(plot.kernel_path_curves(labelled),
                         args.out / f"kernel_path_{name}.png")
        report(f"{name} ({seconds:.0f} s CPU)", ds)


if __name__ == "__main__":
    main()
