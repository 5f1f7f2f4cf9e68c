"""Fidelity report: where does the frozen-kernel forecast of hidden representations hold?

For a scaled-down multitask network (REFERENCE.md C, E) at init scales on a log grid and
re-linearization R in {1, 4, 16}, train the real network and forecast it from its initial weights,
then measure change alignment (DESIGN.md section 5) of the hidden representation on probe
patterns at every checkpoint (R = "auto": error-controlled re-linearization at
``--tolerance``):
    Pearson r and cosine between dh_forecast = h_f(t) - h_0 and dh_actual = h_a(t) - h_0
    (flattened over items and units), and relative error ||dh_f - dh_a|| / ||dh_a||,
against training progress p(t) = (L_a(0) - L_a(t)) / (L_a(0) - min_t L_a), the fraction of the
actual training loss decrease achieved. Both readouts (linear, network) are reported.

The learning rate is the same for every scale unless it exceeds `--stability-fraction` of the
stability bound 2 / lam_max (summed loss) at that scale's initialization; then it is lowered to
that fraction, and the rate used is stored (variable ``lr``).

Writes <out>/fidelity.nc (xarray Dataset), <out>/fidelity.png (alignment, loss and relative
error versus progress, forecast and actual side by side) and <out>/fidelity_summary.png
(alignment at fixed progress levels, init scale x R). The default size takes about a minute on
2 CPU cores.

    python benchmarks/fidelity_report.py --out reports/fidelity [--hidden 100] [--steps 3000]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import seaborn as sns
import torch
import xarray as xr

import repkernel as rk
from repkernel.kernels import ntk_matrix

PROGRESS_LEVELS = (0.1, 0.25, 0.5, 0.9)


def segments(value: str) -> int | str:
    """--relinearize entries: a number of segments or "auto"."""
    return value if value == "auto" else int(value)


def at_progress(values: np.ndarray, progress: np.ndarray, level: float) -> float:
    """Value at the first checkpoint whose progress reaches ``level``."""
    reached = np.nonzero(progress >= level)[0]
    return float(values[reached[0]]) if len(reached) else np.nan


def run(args) -> xr.Dataset:
    torch.set_default_dtype(torch.float64)
    env = rk.MultitaskEnvironment(*args.environment)
    train_set = env.sample(args.n, seed=args.seed)
    probes = env.sample(args.n_probes, seed=args.seed + 100)
    steps = np.unique(np.concatenate([[0], np.round(np.geomspace(1, args.steps,
                                                                 args.checkpoints - 1))]))
    steps = steps.astype(int)
    scales = np.geomspace(args.scale_min, args.scale_max, args.n_scales)
    n_r, n_s, n_t = len(args.relinearize), len(scales), len(steps)
    shape = (n_s, n_r, 2, n_t)
    out = {name: np.full(shape, np.nan) for name in
           ("alignment", "cosine", "relative_error", "forecast_loss", "forecast_change")}
    actual_loss, actual_change, progress = (np.full((n_s, n_t), np.nan) for _ in range(3))
    lrs, lam_maxes, seconds = np.zeros(n_s), np.zeros(n_s), np.zeros((n_s, n_r + 1))
    for i, scale in enumerate(scales):
        net = rk.MultitaskNetwork(env, hidden=args.hidden, init_scale=float(scale),
                                  seed=args.seed)
        size = len(train_set) * train_set.n_outputs
        lam_maxes[i] = float(torch.linalg.eigvalsh(
            ntk_matrix(net, train_set).reshape(size, size)).max())
        lrs[i] = min(args.lr, args.stability_fraction * 2 / lam_maxes[i])
        curriculum = rk.Curriculum((rk.Stage(train_set, args.steps, float(lrs[i]),
                                             reduction="sum", name="interleaved"),))
        start = time.perf_counter()
        actual = rk.train(net, curriculum, probes, checkpoints=steps, record_weights=False)
        seconds[i, 0] = time.perf_counter() - start
        h_actual, h0 = actual.hidden.values, actual.hidden.isel(time=0).values
        loss = actual.loss.values
        actual_loss[i] = loss
        progress[i] = (loss[0] - loss) / (loss[0] - loss.min())
        actual_change[i] = np.linalg.norm((h_actual - h0).reshape(n_t, -1), axis=1)
        for j, segments in enumerate(args.relinearize):
            start = time.perf_counter()
            fc = rk.forecast(net, curriculum, probes, checkpoints=steps, relinearize=segments,
                             tolerance=args.tolerance, record_weights=False)
            seconds[i, j + 1] = time.perf_counter() - start
            for k, readout in enumerate(("linear", "network")):
                h_fc = fc.hidden.sel(readout=readout).values
                alignment = rk.change_alignment(h_fc, h_actual, h0)  # NaN/inf at t = 0
                out["alignment"][i, j, k] = alignment["correlation"]
                out["cosine"][i, j, k] = alignment["cosine"]
                out["relative_error"][i, j, k] = alignment["relative_error"]
                out["forecast_loss"][i, j, k] = fc.loss.sel(readout=readout).values
                out["forecast_change"][i, j, k] = np.linalg.norm(
                    (h_fc - h0).reshape(n_t, -1), axis=1)
        print(f"init scale {scale:7.3g}: lr {lrs[i]:.4g} (lam_max {lam_maxes[i]:.3g}), "
              f"final loss {loss[-1]:.4f}, r at end (R={args.relinearize}, linear) "
              f"{np.round(out['alignment'][i, :, 0, -1], 3).tolist()}", flush=True)
    dims = ("init_scale", "relinearize", "readout", "time")
    ds = xr.Dataset(
        {name: (dims, values) for name, values in out.items()},
        coords={"init_scale": scales, "relinearize": [str(r) for r in args.relinearize],
                "readout": ["linear", "network"], "time": steps,
                "progress_level": list(PROGRESS_LEVELS)},
    )
    ds["actual_loss"] = (("init_scale", "time"), actual_loss)
    ds["actual_change"] = (("init_scale", "time"), actual_change)
    ds["progress"] = (("init_scale", "time"), progress)
    ds["lr"] = ("init_scale", lrs)
    ds["lam_max"] = ("init_scale", lam_maxes)
    ds["seconds"] = (("init_scale", "run"), seconds)
    ds = ds.assign_coords(run=["train"] + [f"forecast R={r}" for r in args.relinearize])
    summary = np.array([[[[at_progress(ds.alignment.values[i, j, k], progress[i], level)
                           for level in PROGRESS_LEVELS] for k in range(2)]
                         for j in range(n_r)] for i in range(n_s)])
    ds["alignment_at_progress"] = (("init_scale", "relinearize", "readout", "progress_level"),
                                   summary)
    ds["alignment"].attrs["long_name"] = "Pearson r of dh_forecast vs dh_actual"
    ds["progress"].attrs["long_name"] = "fraction of the actual loss decrease achieved"
    ds.attrs.update({"environment": str(tuple(args.environment)), "hidden": args.hidden,
                     "tolerance": args.tolerance,
                     "n_train": args.n, "n_probes": args.n_probes, "steps": args.steps,
                     "reduction": "sum", "base_lr": args.lr, "seed": args.seed,
                     "version": rk.__version__})
    return ds


def plot(ds: xr.Dataset, out: Path) -> None:
    sns.set_theme(style="whitegrid", context="paper")
    scales = ds.init_scale.values
    colors = sns.color_palette("viridis", len(scales))
    rs = ds.relinearize.values
    fig, axes = plt.subplots(4, len(rs), figsize=(4.2 * len(rs), 13), sharex="row",
                             sharey="row", squeeze=False)
    steps = np.maximum(ds.time.values, 0.5)  # step 0 drawn at 0.5 on the log axis
    for j, r in enumerate(rs):
        for i, scale in enumerate(scales):
            progress = ds.progress.values[i]
            for k, style in enumerate(("-", "--")):
                axes[0, j].plot(progress, ds.alignment.values[i, j, k], style, color=colors[i],
                                label=f"{scale:.3g}" if k == 0 else None)
                axes[1, j].plot(progress, ds.relative_error.values[i, j, k], style,
                                color=colors[i])
            axes[2, j].plot(steps, ds.actual_loss.values[i], "-", color=colors[i])
            axes[2, j].plot(steps, ds.forecast_loss.values[i, j, 1], ":", color=colors[i])
            moved = ds.time.values > 0  # no change at step 0 on a log axis
            axes[3, j].plot(steps[moved], ds.actual_change.values[i, moved], "-", color=colors[i])
            axes[3, j].plot(steps[moved], ds.forecast_change.values[i, j, 1, moved], ":",
                            color=colors[i])
        axes[0, j].set_title(f"relinearize R = {r}" + (" (frozen kernel)" if r == "1" else ""))
        axes[0, j].set_ylim(-0.2, 1.02)
        axes[1, j].set_yscale("log")
        axes[1, j].set_ylim(1e-3, 10)
        for row in (0, 1):
            axes[row, j].set_xlabel("training progress (fraction of actual loss decrease)")
        for row in (2, 3):
            axes[row, j].set_xscale("log")
            axes[row, j].set_yscale("log")
            axes[row, j].set_xlabel("step")
    axes[0, 0].set_ylabel("change alignment r(dh_f, dh_a)")
    axes[1, 0].set_ylabel("relative error ||dh_f - dh_a|| / ||dh_a||")
    axes[2, 0].set_ylabel("training loss")
    axes[3, 0].set_ylabel("hidden change ||h(t) - h(0)||")
    axes[0, -1].legend(title="init scale", fontsize=7, title_fontsize=7, loc="lower left")
    fig.suptitle(f"Forecast vs actual training: multitask {ds.attrs['environment']}, "
                 f"{ds.attrs['hidden']} hidden, {ds.attrs['n_train']} patterns, summed loss\n"
                 "rows 1-2: solid = linear readout, dashed = network readout;  "
                 "rows 3-4: solid = actual, dotted = forecast (network readout)")
    fig.tight_layout()
    fig.savefig(out / "fidelity.png", dpi=110)
    plt.close(fig)

    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8), squeeze=False)
    for k, readout in enumerate(ds.readout.values):
        table = ds.alignment_at_progress.sel(readout=readout).sel(relinearize=rs)
        frame = table.stack(column=("relinearize", "progress_level")).to_pandas()
        frame.index = [f"{s:.3g}" for s in scales]
        frame.columns = [f"R={r}\np={p:g}" for r, p in frame.columns]
        sns.heatmap(frame, ax=axes[0, k], vmin=0, vmax=1, cmap="magma", annot=True, fmt=".2f",
                    annot_kws={"fontsize": 6}, cbar=k == 1)
        axes[0, k].set_title(f"change alignment r, {readout} readout, at progress p")
        axes[0, k].set_ylabel("init scale")
    fig.tight_layout()
    fig.savefig(out / "fidelity_summary.png", dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("fidelity_report"))
    parser.add_argument("--environment", type=int, nargs=3, default=(4, 3, 3),
                        metavar=("N_IN", "FEATURES", "N_OUT"))
    parser.add_argument("--hidden", type=int, default=100)
    parser.add_argument("--n", type=int, default=200, help="training patterns")
    parser.add_argument("--n-probes", type=int, default=200)
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--lr", type=float, default=0.03, help="summed-loss learning rate")
    parser.add_argument("--stability-fraction", type=float, default=0.5)
    parser.add_argument("--checkpoints", type=int, default=40)
    parser.add_argument("--scale-min", type=float, default=0.01)
    parser.add_argument("--scale-max", type=float, default=3.0)
    parser.add_argument("--n-scales", type=int, default=6)
    parser.add_argument("--relinearize", type=segments, nargs="+", default=(1, 4, 16, "auto"),
                        help="segments per stage, or auto")
    parser.add_argument("--tolerance", type=float, default=0.5, help="for relinearize auto")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    ds = run(args)
    rk.save(ds, args.out / "fidelity.nc")
    plot(ds, args.out)
    print(f"wrote {args.out / 'fidelity.nc'}, {args.out / 'fidelity.png'} and "
          f"{args.out / 'fidelity_summary.png'} in {time.perf_counter() - start:.0f} s")
    for readout in ds.readout.values:
        print(f"change alignment r at progress levels {PROGRESS_LEVELS}, {readout} readout:")
        for scale in ds.init_scale.values:
            cells = ds.alignment_at_progress.sel(readout=readout, init_scale=scale).values
            row = "  ".join(f"R={r}: " + " ".join(f"{v:5.2f}" for v in cells[j])
                            for j, r in enumerate(ds.relinearize.values))
            print(f"  init {scale:7.3g}  {row}")


if __name__ == "__main__":
    main()
