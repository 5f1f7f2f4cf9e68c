"""Forecasts with uncertainty (issue 12, studies/ensembles.toml): the numbers the study runner
cannot express (calibration across seeds, the Monte-Carlo-kernel forecast, the wide limit).

Part "calibration": REFERENCE.md C (4 x 3 features in, 3 x 3 out, 200 sigmoid hidden, biases -2,
summed squared error, gradient flow forecast) at init 0.1 and 1.0, S seeds; per seed train and
forecast (frozen kernel, --relinearize R segments per stage or auto; network readout) on single-task
probes. Summaries over seeds:
shared-input task similarity and incongruent k = 2 accuracy over training; calibration = the
fraction of actual per-seed values inside the forecast ensemble's central 90 % band, and the
correlation over task pairs of forecast-mean and actual-mean task similarity.
Part "monte-carlo": the same networks, phase 1 only, on --mc-n training patterns (the dense
(N O)^2 kernels of N = mc_n + mc_probes items must fit in memory): the seed-mean kernels (repkernel.
monte_carlo_kernel) forecast the ensemble-mean output in one deterministic run
(monte_carlo_forecast); compared with the seed mean of the actual runs (change correlation and
relative error of the mean output change).
Part "wide": a ReLU MLP (NTK parameterization, 2 hidden layers, b_std 0.1) on the 3 x 3
environment (inputs = stimulus and task cue); per-seed and seed-mean relative distance of the
eNTK to the analytic NTK (repkernel.infinite_width_kernels) for widths 64 .. 4096, and the
log-log slope.

    OMP_NUM_THREADS=1 python benchmarks/ensembles_study.py --out reports/ensembles [--part all]
Writes <out>/<part>.nc and figures; prints the numbers quoted in studies/README.md.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch
import xarray as xr

import repkernel as rk
from repkernel.wide import WideMLP, wide_ntk_matrix


def multitask_setup(args):
    env = rk.MultitaskEnvironment(n_input_dims=4, n_features=3, n_output_dims=3)
    probes = env.patterns(k=1, stimuli=args.probe_stimuli, seed=1000)
    return env, probes


def curriculum_for(env, args, phases, n=None):
    full = rk.Curriculum.single_then_concurrent(env, n=n or args.n,
                                                steps=(args.steps, args.steps), lr=args.lr,
                                                reduction="sum")
    return rk.Curriculum(full.stages[:phases])


def similarity_over_seeds(runs: xr.Dataset, readout: str | None) -> xr.DataArray:
    hidden = runs.hidden if readout is None else runs.hidden.sel(readout=readout)
    return rk.task_similarity(hidden)


def shared_input(matrix: xr.DataArray) -> xr.DataArray:
    return rk.task_similarity_summary(matrix)["shared_input"]


def off_diagonal(matrix: xr.DataArray) -> xr.DataArray:
    stacked = matrix.stack(pair=("task", "task_b"))
    keep = stacked.task.values < stacked.task_b.values
    return stacked.isel(pair=np.flatnonzero(keep))


def incongruent_k2(runs: xr.Dataset, env, args) -> xr.DataArray:
    """Argmax accuracy on incongruent 2-task sets, (seed, time), at each run's weights."""
    scores = rk.evaluate_multitask(runs.drop_vars("hidden"), env, k=[2],
                                   stimuli=args.eval_stimuli)
    return scores.accuracy_by_congruency.sel(k=2, congruent=False, drop=True)


def part_calibration(args, out: Path) -> xr.Dataset:
    env, probes = multitask_setup(args)
    results = []
    for scale in args.scales:
        curriculum = curriculum_for(env, args, 2)

        def network(seed, scale=scale):
            return rk.MultitaskNetwork(env, hidden=args.hidden, init_scale=scale, seed=seed)

        start = time.perf_counter()
        actual = rk.ensemble(lambda s, c=curriculum: rk.train(network(s), c, probes,
                                                              checkpoints=args.checkpoints),
                             args.seeds)
        forecast = rk.ensemble(lambda s, c=curriculum: rk.forecast(network(s), c, probes,
                                                     checkpoints=args.checkpoints,
                                                     time="continuous", readout="network",
                                                     relinearize=args.relinearize,
                                                     tolerance=args.tolerance),
                               args.seeds)
        elapsed = time.perf_counter() - start
        sim_a = similarity_over_seeds(actual, None)
        sim_f = similarity_over_seeds(forecast, "network")
        pairs = rk.calibration(off_diagonal(sim_f), off_diagonal(sim_a), over="pair")
        shared = rk.calibration(shared_input(sim_f), shared_input(sim_a))
        acc_a = incongruent_k2(actual, env, args)
        acc_f = incongruent_k2(forecast.sel(readout="network"), env, args)
        acc = rk.calibration(acc_f, acc_a)
        ds = xr.Dataset({
            "shared_input_actual": shared_input(sim_a), "shared_input_forecast":
            shared_input(sim_f), "incongruent_k2_actual": acc_a,
            "incongruent_k2_forecast": acc_f,
            "pair_coverage": pairs.coverage, "pair_mean_correlation": pairs.mean_correlation,
            "shared_input_coverage": shared.coverage, "incongruent_k2_coverage": acc.coverage,
        }).expand_dims(init_scale=[scale])
        results.append(ds)
        report_calibration(scale, ds.isel(init_scale=0), elapsed, args)
        for name, label in (("shared_input", "shared-input task similarity"),
                            ("incongruent_k2", "incongruent k = 2 accuracy")):
            fig = rk.band_figure(ds[f"{name}_forecast"].isel(init_scale=0).rename(label),
                                 ds[f"{name}_actual"].isel(init_scale=0).rename(label),
                                 title=f"{label}, init {scale}")
            fig.savefig(out / f"band_{name}_init{scale}.png", dpi=120)
            plt.close(fig)
    return xr.concat(results, dim="init_scale")


def report_calibration(scale, ds, elapsed, args):
    times = ds.time.values
    pick = [t for t in (times[len(times) // 4], args.steps, times[-1])]
    print(f"init {scale}: {len(args.seeds)} seeds, train + forecast {elapsed:.0f} s")
    for t in pick:
        row = ds.sel(time=t, method="nearest")
        print(f"  step {t:6d}: shared-input sim actual {float(row.shared_input_actual.mean()):.3f}"
              f" (sd {float(row.shared_input_actual.std(ddof=1)):.3f}) forecast "
              f"{float(row.shared_input_forecast.mean()):.3f} "
              f"(sd {float(row.shared_input_forecast.std(ddof=1)):.3f}); coverage "
              f"{float(row.shared_input_coverage):.2f}; task-pair coverage "
              f"{float(row.pair_coverage):.2f}, mean corr {float(row.pair_mean_correlation):.3f};"
              f" incongruent k=2 acc actual {float(row.incongruent_k2_actual.mean()):.3f} "
              f"forecast {float(row.incongruent_k2_forecast.mean()):.3f} coverage "
              f"{float(row.incongruent_k2_coverage):.2f}")


def part_monte_carlo(args, out: Path) -> xr.Dataset:
    env = rk.MultitaskEnvironment(n_input_dims=4, n_features=3, n_output_dims=3)
    curriculum = curriculum_for(env, args, 1, args.mc_n)
    train = curriculum.stages[0].patterns
    probes = env.sample(args.mc_probes, seed=1000)
    everything = rk.PatternSet.concat([train, probes])
    train_idx = np.arange(len(train))
    probe_idx = np.arange(len(train), len(everything))
    steps = rk.checkpoint_steps(args.checkpoints, args.steps)
    results = []
    for scale in args.scales:
        def network(seed, scale=scale):
            return rk.MultitaskNetwork(env, hidden=args.hidden, init_scale=scale, seed=seed)

        start = time.perf_counter()
        kernels = rk.monte_carlo_kernel(network, args.seeds, everything, train=train_idx,
                                        pseudo_kernel=False)  # the output forecast is compared
        mc = rk.monte_carlo_forecast(kernels, train.y, steps, lr=args.lr, reduction="sum",
                                     time="continuous")
        mc_time = time.perf_counter() - start
        actual = rk.ensemble(lambda s: rk.train(network(s), curriculum, everything,
                                                checkpoints=steps), args.seeds)
        per_seed = rk.ensemble(lambda s: rk.forecast(network(s), curriculum, everything,
                                                     checkpoints=steps, time="continuous",
                                                     readout="linear"), args.seeds)
        mean_actual = actual.output.mean("seed").isel(item=probe_idx)
        mean_seedwise = per_seed.output.sel(readout="linear").mean("seed").isel(item=probe_idx)
        mean_mc = mc["mean"].isel(item=probe_idx).assign_coords(time=mean_actual.time.values)
        rows = {}
        for name, predicted in (("monte_carlo", mean_mc), ("seedwise_mean", mean_seedwise)):
            change_p = predicted - predicted.isel(time=0)
            change_a = mean_actual - mean_actual.isel(time=0)
            rows[f"{name}_change_correlation"] = xr.corr(change_p, change_a,
                                                         dim=["item", "output_unit"])
            rows[f"{name}_relative_error"] = (
                np.sqrt(((change_p - change_a) ** 2).sum(["item", "output_unit"]))
                / np.sqrt((change_a**2).sum(["item", "output_unit"])))
        ds = xr.Dataset(rows).expand_dims(init_scale=[scale])
        ds["monte_carlo_seconds"] = ("init_scale", [mc_time])
        results.append(ds)
        print(f"init {scale}: Monte-Carlo kernel over {len(args.seeds)} seeds + forecast "
              f"{mc_time:.0f} s; ensemble-mean output change on {len(probe_idx)} probes:")
        for t in (steps[len(steps) // 10], steps[len(steps) // 2], steps[-1]):
            row = ds.sel(time=t, method="nearest").isel(init_scale=0)
            print(f"  step {t:6d}: MC forecast corr {float(row.monte_carlo_change_correlation):.3f}"
                  f" rel err {float(row.monte_carlo_relative_error):.3f}; mean of per-seed "
                  f"forecasts corr {float(row.seedwise_mean_change_correlation):.3f} rel err "
                  f"{float(row.seedwise_mean_relative_error):.3f}")
    return xr.concat(results, dim="init_scale")


def part_wide(args, out: Path) -> xr.Dataset:
    env = rk.MultitaskEnvironment(n_input_dims=3, n_features=3, n_output_dims=3)
    patterns = env.patterns(k=1, stimuli=args.wide_stimuli, seed=7)
    x = torch.cat([patterns.x, patterns.c], dim=1)
    inputs = rk.pattern_set(x, torch.zeros(len(x), 1))
    per_seed, seed_mean = [], []
    for width in args.widths:
        limit = torch.as_tensor(rk.infinite_width_kernels(x, 2, "relu", b_std=0.1).ntk.values)
        start = time.perf_counter()
        kernels = [wide_ntk_matrix(WideMLP(x.shape[1], width, 2, "relu", b_std=0.1, seed=s),
                                   inputs)[:, 0, :, 0] for s in args.seeds]
        errors = [float((k - limit).norm() / limit.norm()) for k in kernels]
        mean_error = float((torch.stack(kernels).mean(0) - limit).norm() / limit.norm())
        per_seed.append(errors)
        seed_mean.append(mean_error)
        print(f"width {width:5d}: eNTK relative distance to the limit per seed "
              f"{np.mean(errors):.4f} (sd {np.std(errors, ddof=1):.4f}), seed mean "
              f"{mean_error:.4f}  [{time.perf_counter() - start:.0f} s]")
    rms = np.sqrt(np.mean(np.square(per_seed), axis=1))
    slope = np.polyfit(np.log(args.widths), np.log(rms), 1)[0]
    slope_mean = np.polyfit(np.log(args.widths), np.log(seed_mean), 1)[0]
    print(f"log-log slope: per seed {slope:.3f}, seed mean {slope_mean:.3f} (1/sqrt(width): -0.5)")
    fig, ax = plt.subplots(figsize=(4.5, 3.2))
    ax.loglog(args.widths, rms, "o-", label="one network (rms over seeds)")
    ax.loglog(args.widths, seed_mean, "s-", label=f"mean of {len(args.seeds)} seeds")
    ax.loglog(args.widths, rms[0] * np.sqrt(args.widths[0] / np.asarray(args.widths)), "k--",
              label="1 / sqrt(width)")
    ax.set_xlabel("width")
    ax.set_ylabel("||eNTK - NTK|| / ||NTK||")
    ax.legend(frameon=False, fontsize="small")
    fig.tight_layout()
    fig.savefig(out / "wide_limit.png", dpi=120)
    plt.close(fig)
    return xr.Dataset({"per_seed_error": (("width", "seed"), np.asarray(per_seed)),
                       "seed_mean_error": ("width", seed_mean)},
                      coords={"width": args.widths, "seed": args.seeds},
                      attrs={"slope_per_seed": slope, "slope_seed_mean": slope_mean})


def relinearize(text: str) -> int | str:
    """--relinearize: a number of equal segments per stage, or "auto"."""
    return text if text == "auto" else int(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--part", choices=["all", "calibration", "monte-carlo", "wide"],
                        default="all")
    parser.add_argument("--seeds", type=int, nargs="+", default=list(range(10)))
    parser.add_argument("--scales", type=float, nargs="+", default=[0.1, 1.0])
    parser.add_argument("--hidden", type=int, default=200)
    parser.add_argument("--n", type=int, default=500)
    parser.add_argument("--steps", type=int, default=2500)
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--checkpoints", type=int, default=21)
    parser.add_argument("--tolerance", type=float, default=0.5,
                        help="error tolerance of --relinearize auto")
    parser.add_argument("--relinearize", type=relinearize, default=1,
                        help="forecast segments per stage (part calibration)")
    parser.add_argument("--probe-stimuli", type=int, default=27)
    parser.add_argument("--eval-stimuli", type=int, default=27)
    parser.add_argument("--mc-n", type=int, default=200)
    parser.add_argument("--mc-probes", type=int, default=100)
    parser.add_argument("--wide-stimuli", type=int, default=5)
    parser.add_argument("--widths", type=int, nargs="+", default=[64, 256, 1024, 4096])
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    torch.set_default_dtype(torch.float64)
    parts = {"calibration": part_calibration, "monte-carlo": part_monte_carlo,
             "wide": part_wide}
    for name, run in parts.items():
        if args.part in ("all", name):
            print(f"== {name}")
            rk.save(run(args, args.out), args.out / f"{name}.nc")


if __name__ == "__main__":
    main()
