"""``repkernel run``: run a study (or the embedded default) cell by cell, then render figures."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from repkernel_cli import options
from repkernel_cli.app import app, user_errors
from repkernel_cli.progress import step_progress

from repkernel import studies


@app.command()
@user_errors
def run(
    study: Annotated[Path | None, typer.Argument(
        help="Study TOML; omit for the embedded default study.")] = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder.")] = Path(
        "results/default"),
    smoke: Annotated[bool, typer.Option(help="Run the study's reduced [smoke] size.")] = False,
    device: options.Device = None,
    workers: Annotated[int, typer.Option(help="Local Dask workers (0: serial).")] = 0,
    scheduler: Annotated[str | None, typer.Option(
        help="Address of an existing Dask scheduler, e.g. tcp://host:8786.")] = None,
    figures: Annotated[bool, typer.Option(help="Render the study's figures.")] = True,
) -> None:
    """Run every sweep cell (finished cells are skipped), combine them, render figures."""
    if workers < 0:
        raise ValueError(f"--workers must be 0 (serial) or a positive count, got {workers}")
    loaded = studies.load_study(study, smoke=smoke,
                                overrides={"run.device": device} if device else None)
    cells = loaded.cells()
    with step_progress(f"{loaded.name}: cells", len(cells)) as advance:
        combined = studies.run_study(loaded, out, workers=workers, scheduler=scheduler,
                                     progress=lambda done, total: advance(done))
    typer.echo(f"wrote {len(cells)} cells and {out / 'combined.nc'}")
    if figures:
        for path in studies.render_figures(loaded, combined, out / "figures"):
            typer.echo(f"figure {path}")
