"""``repkernel kernel``: the kernels at initialization of a run configuration, as netCDF."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from repkernel_cli import options
from repkernel_cli.app import app, user_errors

from repkernel import results
from repkernel.config import defaults_of
from repkernel.cpu_threads import threads
from repkernel.kernel_results import KERNELS, kernel_result

DEFAULT = defaults_of(kernel_result)


@app.command()
@user_errors
@options.with_setup(skip=("steps", "checkpoints"))
def kernel(
    setup,
    out: Annotated[Path, typer.Option("--out", "-o", help="netCDF file to write.")] = Path(
        "kernel.nc"),
    what: Annotated[str, typer.Option(help=f"One of {', '.join(KERNELS)}: eigen (the published "
                                      "t = 0 eigen-analysis), ntk, pseudo (Pi = J_h J_f^T) or "
                                      "loss-weighted (-rho J J_f^T g).")] = DEFAULT["what"],
    target: Annotated[str, typer.Option(
        help="loss-weighted only: output (J = J_f) or hidden (J = J_h).")] = DEFAULT["target"],
    stage: Annotated[int, typer.Option(help="Curriculum stage whose patterns (and learning "
                                       "rate, reduction, loss) are the training side.")
                     ] = DEFAULT["stage"],
    on: Annotated[str, typer.Option(
        help="eigen only: train (probes = the stage's patterns, the published analysis) or "
        "probes (the configuration's probes against the stage's patterns).")] = DEFAULT["on"],
    n_eigenvectors: Annotated[int, typer.Option(help="Eigenvectors per output unit.")
                              ] = DEFAULT["n_eigenvectors"],
    clusters: Annotated[int, typer.Option(
        help="k-means groups of the leading eigenvectors (0: none).")] = DEFAULT["clusters"],
    method: Annotated[str, typer.Option(help="auto, structured or generic.")] = DEFAULT["method"],
    max_gb: Annotated[float, typer.Option(help="Refuse dense kernels larger than this.")
                      ] = DEFAULT["max_gb"],
) -> None:
    """Compute a kernel at the initial weights of a configuration (default: the published
    multitask setup) and write it as netCDF: the eigen-analysis (eigenvector(output_unit, rank,
    item), mean |components| by input feature, k-means groups and their silhouette),
    or the eNTK, pseudo-kernel or loss-weighted kernel on probes x training patterns."""
    results.check_writable(out)  # before any work
    with threads(setup.threads):
        ds = kernel_result(setup, what, target, stage, on, n_eigenvectors, clusters, method,
                           max_gb)
    results.save(ds, out)
    summary = ", ".join(f"{name}{tuple(ds[name].shape)}" for name in ds.data_vars)
    typer.echo(f"wrote {out}: {summary}"
               + (f"; silhouette {ds.attrs['silhouette']:.3f}" if "silhouette" in ds.attrs
                  else ""))
