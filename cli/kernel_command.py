"""``repkernel kernel``: the kernels at initialization of a run configuration, as netCDF."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from repkernel_cli import options
from repkernel_cli.app import app, user_errors

from repkernel import eigen, kernels, results

WHAT = ("eigen", "ntk", "pseudo", "loss-weighted")


def _dense_gigabytes(what: str, target: str, n_probes: int, n_train: int, network,
                     n_out: int) -> float:
    rows = n_out if what == "ntk" or (what == "loss-weighted" and target == "output") \
        else sum(network.hidden_sizes)
    columns = n_train * (n_out if what in ("ntk", "pseudo") else 1)
    return n_probes * rows * columns * 8 / 1e9


@app.command()
@user_errors
def kernel(
    out: Annotated[Path, typer.Option("--out", "-o", help="netCDF file to write.")] = Path(
        "kernel.nc"),
    config: options.ConfigFile = None,
    what: Annotated[str, typer.Option(
        help="eigen (the published t = 0 eigen-analysis), ntk, pseudo (Pi = J_h J_f^T) or "
        "loss-weighted (-rho J J_f^T g).")] = "eigen",
    target: Annotated[str, typer.Option(
        help="loss-weighted only: output (J = J_f) or hidden (J = J_h).")] = "output",
    stage: Annotated[int, typer.Option(help="Curriculum stage whose patterns (and learning "
                                       "rate, reduction, loss) are the training side.")] = 0,
    on: Annotated[str, typer.Option(
        help="eigen only: train (probes = the stage's patterns, the published analysis) or "
        "probes (the configuration's probes against the stage's patterns).")] = "train",
    n_eigenvectors: Annotated[int, typer.Option(help="Eigenvectors per output unit.")] = 3,
    clusters: Annotated[int, typer.Option(
        help="k-means groups of the leading eigenvectors (0: none).")] = 12,
    method: Annotated[str, typer.Option(help="auto, structured or generic.")] = "auto",
    max_gb: Annotated[float, typer.Option(help="Refuse dense kernels larger than this.")] = 4.0,
    init_scale: options.InitScale = None,
    hidden: options.Hidden = None,
    seed: options.Seed = None,
    lr: options.LearningRate = None,
    n_train: options.NTrain = None,
    preset: options.Preset = None,
    device: options.Device = None,
    dtype: options.Dtype = None,
) -> None:
    """Compute a kernel at the initial weights of a configuration (default: the published
    multitask setup) and write it as netCDF: the eigen-analysis (eigenvector(output_unit, rank,
    item), mean |components| by input feature, k-means groups and their silhouette),
    or the eNTK, pseudo-kernel or loss-weighted kernel on probes x training patterns."""
    for name, value, choices in (("--what", what, WHAT), ("--target", target, kernels.TARGETS),
                                 ("--on", on, ("train", "probes"))):
        if value not in choices:
            raise ValueError(f"{name} must be one of {', '.join(choices)}, got {value!r}")
    setup = options.build_setup(
        config, init_scale=init_scale, hidden=hidden, seed=seed, lr=lr, n=n_train, preset=preset,
        device=device, dtype=dtype)
    stages = setup.curriculum.stages
    if not 0 <= stage < len(stages):
        raise ValueError(f"--stage must be in 0..{len(stages) - 1} (the curriculum has "
                         f"{len(stages)} stages), got {stage}")
    chosen, net, probes = stages[stage], setup.network, setup.probes
    computing = dict(method=method, device=setup.device, dtype=setup.dtype)
    if what == "eigen":
        ds = eigen.eigen_analysis(net, chosen.patterns if on == "train" else probes, chosen,
                                  n_eigenvectors, clusters, **computing)
    else:
        size = _dense_gigabytes(what, target, len(probes), len(chosen.patterns), net,
                                chosen.patterns.n_outputs)
        if size > max_gb:
            raise ValueError(f"the dense {what} kernel would take {size:.1f} GB (over --max-gb "
                             f"{max_gb:g}): use fewer probes or training patterns, or raise "
                             f"--max-gb")
        if what == "ntk":
            da = kernels.ntk(net, probes, chosen.patterns, **computing)
        elif what == "pseudo":
            da = kernels.pseudo_kernel(net, probes, chosen.patterns, **computing)
        else:
            da = kernels.loss_weighted_kernel(net, probes, stage=chosen, target=target, **computing)
        ds = da.to_dataset()
    kernel_attrs = {k: v for k, v in ds.attrs.items() if k not in ("device", "dtype")}
    run_config = {**setup.config, "kernel": {
        "what": what, "target": target, "stage": stage, "on": on,
        "n_eigenvectors": n_eigenvectors, "clusters": clusters, "method": method}}
    ds.attrs = {**kernel_attrs, **results.provenance(run_config, setup.device, setup.dtype,
                                                      "kernel")}
    results.save(ds, out)
    summary = ", ".join(f"{name}{tuple(ds[name].shape)}" for name in ds.data_vars)
    typer.echo(f"wrote {out}: {summary}"
               + (f"; silhouette {ds.attrs['silhouette']:.3f}" if "silhouette" in ds.attrs
                  else ""))
