"""``repkernel train``: train one network on one curriculum and save the recorded result."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from repkernel_cli import options
from repkernel_cli.app import app, user_errors
from repkernel_cli.progress import step_progress

from repkernel import results, training


@app.command()
@user_errors
@options.with_setup()
def train(
    setup,
    out: Annotated[Path, typer.Option("--out", "-o", help="netCDF file to write.")] = Path(
        "train.nc"),
) -> None:
    """Train the network of a configuration (default: the published multitask setup, phase 1,
    standard init) and write hidden(time, item, unit), output, loss and weights as netCDF."""
    results.check_writable(out)  # before any work
    with step_progress("training", setup.curriculum.total_steps) as advance:
        result = training.train(setup.network, setup.curriculum, setup.probes,
                                checkpoints=setup.checkpoints,
                                record_weights=setup.config["run"]["record_weights"],
                                device=setup.device, dtype=setup.dtype, progress=advance,
                                threads=setup.threads)
    results.save(result, out)
    final = float(result.loss.isel(time=-1))
    typer.echo(f"wrote {out}: {result.sizes['time']} checkpoints, {result.sizes['item']} probes, "
               f"final training loss {final:.4g}")
