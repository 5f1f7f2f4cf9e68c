"""Stochastic versus full-batch training (issue 13, deliverable 5): read the combined result of
`repkernel run studies/training_response.toml --out results/training_response` and report, per
activation x init scale x batch schedule (mean and sd over seeds, at matched rate per example
and epochs), the participation ratio (PR) of the hidden representation, the shared-input task
similarity and the single-task accuracy, actual versus the drift-only forecast; the SGD effect
dPR = PR(schedule) - PR(full batch) paired by seed, for training and for the forecast; and the
same effect inside the frozen linear model itself, trained with the trainer's own minibatch
sequence (linearized SGD, every order of its noise) against its full-batch drift: what any
linear-model noise correction could add to the forecast at most.

    OMP_NUM_THREADS=1 python benchmarks/training_response.py results/training_response \
        --out reports/training_response
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch
import xarray as xr

import repkernel as rk
from repkernel import plot, studies
from repkernel.results import checkpoint_steps
from repkernel.training import _batches  # the trainer's minibatch sequence, reused exactly

MEASURES = {"participation_ratio": "participation ratio", "shared_input": "shared-input task "
            "similarity", "accuracy": "single-task accuracy"}


def measures(combined: xr.DataTree) -> xr.Dataset:
    """PR, shared-input similarity and k = 1 accuracy over (sweep..., source, time)."""
    pr = combined["dimensionality"].to_dataset()["participation_ratio"].isel(readout=0,
                                                                           drop=True)
    shared = []
    for source in ("actual", "forecast"):
        hidden = combined[source].to_dataset()["hidden"]
        if "readout" in hidden.dims:
            hidden = hidden.sel(readout="network", drop=True)
        summary = rk.task_similarity_summary(rk.task_similarity(hidden))
        shared.append(summary["shared_input"])
    shared = xr.concat(shared, dim=xr.DataArray(["actual", "forecast"], dims="source"))
    accuracy = combined["multitask"].to_dataset()["accuracy_by_k"].sel(k=1, drop=True)
    return xr.Dataset({"participation_ratio": pr, "shared_input": shared,
                       "accuracy": accuracy}).reset_coords(drop=True)


def linearized_sgd(study: studies.Study, cell_coords: dict) -> xr.DataArray:
    """PR over the study's checkpoints of the frozen linear model (theta_0) trained with the
    cell's own minibatch sequence, exactly as the trainer draws it: hidden = h_0 + J_h d."""
    cell = next(c for c in study.cells() if c.coords == cell_coords)
    setup = studies.build_cell(cell)
    net, stage = setup.network, setup.curriculum.stages[0]
    x, c, y = stage.patterns.to(torch.device("cpu"), torch.float64)
    with torch.no_grad():
        f0 = net(x, c)[1]
    jac = rk.jacobians(net, stage.patterns, hidden=False).output  # (n, O, P)
    steps = checkpoint_steps(setup.checkpoints, stage.steps)
    d = torch.zeros(jac.shape[-1], dtype=torch.float64)
    recorded = [d.clone()] if steps[0] == 0 else []
    batches = _batches(stage, torch.Generator().manual_seed(stage.seed))
    scale = stage.lr / (stage.batch_size if stage.reduction == "mean" else 1)
    for step in range(1, stage.steps + 1):
        rows = next(batches)
        j = jac if rows is None else jac[rows]
        residual = (f0 if rows is None else f0[rows]) + j @ d - (y if rows is None else y[rows])
        d -= scale * torch.einsum("nop,no->p", j, residual)
        if step in steps:
            recorded.append(d.clone())
    hidden_change = rk.jacobian_product(net, setup.probes, torch.stack(recorded, 1))[0][0]
    with torch.no_grad():
        h0 = net(*setup.probes.to(torch.device("cpu"), torch.float64)[:2])[0][0]
    hidden = (h0[..., None] + hidden_change).permute(2, 0, 1).numpy()
    epochs = setup.curriculum.epochs_at(steps)
    return xr.DataArray(rk.participation_ratio(hidden)["participation_ratio"], dims="time",
                        coords={"time": np.round(epochs).astype(int)})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("study", type=Path, help="folder of the finished study")
    parser.add_argument("--out", type=Path, default=Path("reports/training_response"))
    parser.add_argument("--linear-seeds", type=int, default=1,
                        help="seeds per cell for the linearized-SGD comparison")
    args = parser.parse_args()
    torch.set_num_threads(1)
    combined = studies.load_tree(args.study / "combined.nc")
    saved = json.loads((args.study / "study.json").read_text())
    study = studies.load_study({**saved["config"], "sweep": saved["sweep"]})
    data = measures(combined)
    last = data.isel(time=-1)
    batches = [b for b in ("full", "32", "online") if b in data["batch"].values]
    print(f"final epoch {int(data['time'][-1])}; mean (sd) over {data.sizes['seed']} seeds; "
          "forecast = network at the drift-only forecast weights")
    print(f"{'activation':<9}{'init':>5} {'batch':<7}" + "".join(
        f"{name[:16]:>28}" for name in MEASURES.values()))
    for activation in data["activation"].values:
        for init in data["init_scale"].values:
            for batch in batches:
                one = last.sel(activation=activation, init_scale=init, batch=batch)
                cells = "".join(
                    f"{float(one[m].sel(source='actual').mean()):8.3f} ({float(one[m].sel(source='actual').std()):.3f})"  # noqa: E501
                    f" / {float(one[m].sel(source='forecast').mean()):6.3f}" for m in MEASURES)
                print(f"{activation:<9}{init:>5} {batch:<7}{cells}")

    full = last.sel(batch="full")
    effect = (last - full).drop_sel(batch="full")  # paired by seed
    print("\nSGD effect on the final PR, dPR = PR(schedule) - PR(full), mean (sd) over seeds;"
          " linear = the frozen linear model trained with the same minibatches (seed 0..)")
    print(f"{'activation':<9}{'init':>5} {'batch':<7}{'actual':>18}{'forecast':>18}"
          f"{'missed':>10}{'forecast error (full)':>24}{'linear':>10}")
    rows = []
    for activation in data["activation"].values:
        for init in data["init_scale"].values:
            error = full["participation_ratio"].sel(activation=activation, init_scale=init)
            error = float(abs(error.sel(source="forecast") - error.sel(source="actual")).mean())
            linear = {}
            for batch in batches:
                linear[batch] = np.mean([float(linearized_sgd(study, {
                    "batch": batch, "activation": activation, "init_scale": init,
                    "seed": seed}).isel(time=-1)) for seed in data["seed"].values[
                        :args.linear_seeds]])
            for batch in batches[1:]:
                one = effect["participation_ratio"].sel(activation=activation, init_scale=init,
                                                        batch=batch)
                a, f = one.sel(source="actual"), one.sel(source="forecast")
                missed = float((a - f).mean())
                lin = linear[batch] - linear["full"]
                rows.append((activation, init, batch, float(a.mean()), float(f.mean()), missed,
                             error, lin))
                print(f"{activation:<9}{init:>5} {batch:<7}{float(a.mean()):9.4f} "
                      f"({float(a.std()):.4f}){float(f.mean()):9.4f} ({float(f.std()):.4f})"
                      f"{missed:10.4f}{error:24.4f}{lin:10.4f}")
    args.out.mkdir(parents=True, exist_ok=True)
    rk.save(data.assign_attrs(study=combined.attrs.get("config", "{}")),
            args.out / "training_response.nc")

    with plot.paper_style():
        for name, label in MEASURES.items():
            figure, axes = plt.subplots(data.sizes["init_scale"], data.sizes["activation"],
                                        figsize=(13, 6.5), sharex=True, squeeze=False)
            for i, init in enumerate(data["init_scale"].values):
                for j, activation in enumerate(data["activation"].values):
                    ax = axes[i, j]
                    for k, batch in enumerate(batches):
                        for source, dash in (("actual", "-"), ("forecast", "--")):
                            curve = data[name].sel(activation=activation, init_scale=init,
                                                   batch=batch, source=source)
                            mean, sd = curve.mean("seed"), curve.std("seed")
                            ax.plot(data["time"], mean, dash, color=f"C{k}",
                                    label=f"{batch} {source}")
                            ax.fill_between(data["time"], mean - sd, mean + sd, color=f"C{k}",
                                            alpha=0.15)
                    ax.set_title(f"{activation}, init {init}", fontsize="medium")
                    if i == data.sizes["init_scale"] - 1:
                        ax.set_xlabel("epoch")
                    if j == 0:
                        ax.set_ylabel(label)
            axes[0, -1].legend(fontsize="x-small", ncol=2)
            figure.suptitle(f"{label}: full batch vs minibatch 32 vs online (solid actual, "
                            f"dashed drift-only forecast; +-1 sd over seeds)")
            figure.tight_layout()
            plot.save_figure(figure, args.out / f"{name}.png")
            plt.close(figure)
        figure, ax = plt.subplots(figsize=(10, 4.5))
        labels = [f"{a[:4]} {i} {b}" for a, i, b, *_ in rows]
        position = np.arange(len(rows))
        for offset, column, name in ((-0.25, 3, "actual"), (0.0, 4, "forecast"),
                                     (0.25, 7, "linear model, same minibatches")):
            ax.bar(position + offset, [r[column] for r in rows], width=0.25, label=name)
        ax.axhline(0, color="0.5", lw=0.8)
        ax.set_xticks(position, labels, rotation=60, ha="right", fontsize="small")
        ax.set_ylabel("PR(schedule) - PR(full batch)")
        ax.legend(fontsize="small")
        ax.set_title("SGD effect on the final participation ratio")
        figure.tight_layout()
        plot.save_figure(figure, args.out / "sgd_effect.png")
        plt.close(figure)
    print(f"wrote {args.out}/training_response.nc and the figures participation_ratio.png, "
          f"shared_input.png, accuracy.png, sgd_effect.png")


if __name__ == "__main__":
    main()
