"""``repkernel forecast``: forecast a run configuration from its initial weights and curriculum."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from repkernel_cli import options
from repkernel_cli.app import app, user_errors
from repkernel_cli.progress import step_progress

from repkernel import forecasting, results
from repkernel.config import defaults_of

DEFAULT = defaults_of(forecasting.forecast)


@app.command()
@user_errors
@options.with_setup()
def forecast(
    setup,
    out: Annotated[Path, typer.Option("--out", "-o", help="netCDF file to write.")] = Path(
        "forecast.nc"),
    time: Annotated[str, typer.Option(help=f"One of {', '.join(forecasting.TIMES)}: discrete "
                                      "(gradient descent) or continuous (gradient flow).")
                    ] = DEFAULT["time"],
    relinearize: Annotated[str, typer.Option(
        help="Segments per stage at whose start the Jacobians are recomputed at the forecast "
        "weights (1: frozen kernel), or 'auto': segment lengths chosen by error control.")
    ] = str(DEFAULT["relinearize"]),
    tolerance: Annotated[float, typer.Option(
        help="With --relinearize auto: the largest relative deviation of the network from its "
        "linear model allowed per segment.")] = DEFAULT["tolerance"],
    readout: Annotated[list[str] | None, typer.Option(
        help="linear (h_0 + J_h d) and/or network (the network at the forecast weights); "
        "repeat for both (default).")] = None,
) -> None:
    """Forecast hidden(time, readout, item, unit) and outputs from the initial weights and the
    curriculum alone (linearized dynamics), in the trainer's layout, and write netCDF. Time is in
    steps; minibatch/online stages are forecast by their full-batch drift."""
    results.check_writable(out)  # before any work
    with step_progress("forecasting", setup.curriculum.total_steps) as advance:
        result = forecasting.forecast(
            setup.network, setup.curriculum, setup.probes, checkpoints=setup.checkpoints,
            time=time, relinearize=_segments(relinearize), tolerance=tolerance,
            readout=readout or DEFAULT["readout"],
            record_weights=setup.config["run"]["record_weights"], device=setup.device,
            dtype=setup.dtype, progress=advance, threads=setup.threads)
    results.save(result, out)
    typer.echo(f"wrote {out}: {result.sizes['time']} checkpoints, {result.sizes['item']} probes,"
               f" readouts {', '.join(result.readout.values)}")


def _segments(relinearize: str) -> int | str:
    """--relinearize as the library takes it: 'auto' or a number of segments."""
    if relinearize == "auto":
        return relinearize
    try:
        return int(relinearize)
    except ValueError:
        raise ValueError(f"--relinearize must be a positive number of segments or 'auto', got "
                         f"{relinearize!r}") from None
