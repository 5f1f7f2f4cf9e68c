"""``repkernel run``: run a study (or the embedded default) cell by cell, then render figures."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from repkernel_cli import options
from repkernel_cli.app import app, user_errors
from repkernel_cli.progress import Feedback

from repkernel import studies


def settings(values: list[str]) -> dict[str, object]:
    """``--set section.key=value`` strings as overrides; values are TOML (strings need quotes
    only if they could be read as something else)."""
    from repkernel.config import tomllib

    overrides: dict[str, object] = {}
    for text in values:
        key, sep, value = text.partition("=")
        key = key.strip()
        if not sep or key.count(".") < 1 or not all(key.split(".")):
            raise ValueError(f"--set takes section.key=value, e.g. forecast.relinearize=16; "
                             f"got {text!r}")
        try:
            overrides[key] = tomllib.loads(f"v = {value.strip()}")["v"]
        except tomllib.TOMLDecodeError:
            overrides[key] = value.strip()  # a bare word: a string
    return overrides


@app.command()
@user_errors
def run(
    study: Annotated[Path | None, typer.Argument(
        help="Study TOML; omit for the embedded default study.")] = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder.")] = Path(
        "results/default"),
    smoke: Annotated[bool, typer.Option(help="Run the study's reduced [smoke] size.")] = False,
    device: options.Device = None,
    threads: options.Threads = None,
    workers: Annotated[int, typer.Option(help="Local Dask workers (0: serial).")] = 0,
    scheduler: Annotated[str | None, typer.Option(
        help="Address of an existing Dask scheduler, e.g. tcp://host:8786.")] = None,
    figures: Annotated[bool, typer.Option(help="Render the study's figures.")] = True,
    set_: Annotated[list[str] | None, typer.Option(
        "--set", help="section.key=value over the study file (a TOML value), e.g. --set "
        "forecast.relinearize=16 or --set 'sweep.network.seed=[0, 1]' (repeatable).")] = None,
) -> None:
    """Run every sweep cell (finished cells are skipped), combine them, render figures."""
    if workers < 0:
        raise ValueError(f"--workers must be 0 (serial) or a positive count, got {workers}")
    overrides = settings(set_ or [])
    if device:
        overrides["run.device"] = device
    if threads:
        overrides["run.threads"] = threads
    loaded = studies.load_study(study, smoke=smoke, overrides=overrides)
    cells = loaded.cells()
    with Feedback() as feedback:
        def cells_done(done: int, total: int) -> None:
            feedback.update("cells", f"{loaded.name}: cells", done, total)

        def within_cell(cell: studies.Cell, what: str, done: int, total: int) -> None:
            feedback.update("part", f"{cell.name}: {what}", done, total)

        combined = studies.run_study(loaded, out, workers=workers, scheduler=scheduler,
                                     progress=cells_done, cell_progress=within_cell)
        paths = studies.render_figures(
            loaded, combined, out / "figures",
            progress=lambda kind, done, total: feedback.update(
                "part", f"figures ({kind})", done, total)) if figures else []
    typer.echo(f"wrote {len(cells)} cells and {out / 'combined.nc'}")
    for path in paths:
        typer.echo(f"figure {path}")
