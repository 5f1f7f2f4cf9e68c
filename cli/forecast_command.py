"""``repkernel forecast``: forecast a run configuration from its initial weights and curriculum."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from repkernel_cli import options
from repkernel_cli.app import app, user_errors
from repkernel_cli.progress import step_progress

from repkernel import forecasting, results


@app.command()
@user_errors
def forecast(
    out: Annotated[Path, typer.Option("--out", "-o", help="netCDF file to write.")] = Path(
        "forecast.nc"),
    config: options.ConfigFile = None,
    init_scale: options.InitScale = None,
    hidden: options.Hidden = None,
    seed: options.Seed = None,
    steps: options.Steps = None,
    lr: options.LearningRate = None,
    n_train: options.NTrain = None,
    preset: options.Preset = None,
    checkpoints: options.Checkpoints = None,
    time: Annotated[str, typer.Option(help="discrete (gradient descent) or continuous "
                                      "(gradient flow).")] = "discrete",
    relinearize: Annotated[int, typer.Option(help="Segments per stage at whose start the "
                                             "Jacobians are recomputed (1: frozen kernel).")] = 1,
    readout: Annotated[list[str] | None, typer.Option(
        help="linear (h_0 + J_h d) and/or network (the network at the forecast weights); "
        "repeat for both (default).")] = None,
    device: options.Device = None,
    dtype: options.Dtype = None,
) -> None:
    """Forecast hidden(time, readout, item, unit) and outputs from the initial weights and the
    curriculum alone (linearized dynamics), in the trainer's layout, and write netCDF. Time is in
    steps; minibatch/online stages are forecast by their full-batch drift."""
    setup = options.build_setup(
        config, init_scale=init_scale, hidden=hidden, seed=seed, steps=steps, lr=lr, n=n_train,
        preset=preset, checkpoints=checkpoints, device=device, dtype=dtype)
    with step_progress("forecasting", setup.curriculum.total_steps) as advance:
        result = forecasting.forecast(
            setup.network, setup.curriculum, setup.probes, checkpoints=setup.checkpoints,
            time=time, relinearize=relinearize, readout=readout or forecasting.READOUTS,
            record_weights=setup.config["run"]["record_weights"], device=setup.device,
            dtype=setup.dtype, progress=advance)
    results.save(result, out)
    typer.echo(f"wrote {out}: {result.sizes['time']} checkpoints, {result.sizes['item']} probes,"
               f" readouts {', '.join(result.readout.values)}")
