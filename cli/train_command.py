"""``repkernel train``: train one network on one curriculum and save the recorded result."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from repkernel_cli.app import app, user_errors
from repkernel_cli.progress import step_progress

from repkernel import config as configuration
from repkernel import results, training

SECTION_OF_FLAG = {"init_scale": "network", "hidden": "network", "seed": "network",
                   "steps": "curriculum", "lr": "curriculum", "n": "curriculum",
                   "preset": "curriculum", "checkpoints": "run", "device": "run", "dtype": "run"}


def run_overrides(**flags) -> dict:
    """Command-line flags that were given, as configuration sections to merge over a config."""
    overrides: dict = {}
    for name, value in flags.items():
        if value is not None:
            overrides.setdefault(SECTION_OF_FLAG[name], {})[name] = value
    return overrides


@app.command()
@user_errors
def train(
    out: Annotated[Path, typer.Option("--out", "-o", help="netCDF file to write.")] = Path(
        "train.nc"),
    config: Annotated[Path | None, typer.Option(
        "--config", "-c", help="TOML run configuration (sections environment, network, "
        "curriculum, probes, run); flags below override it.")] = None,
    init_scale: Annotated[float | None, typer.Option(help="Weight init scale.")] = None,
    hidden: Annotated[int | None, typer.Option(help="Hidden units (multitask network).")] = None,
    seed: Annotated[int | None, typer.Option(help="Network seed.")] = None,
    steps: Annotated[int | None, typer.Option(help="Steps (every stage).")] = None,
    lr: Annotated[float | None, typer.Option(help="Learning rate (every stage).")] = None,
    n_train: Annotated[int | None, typer.Option(help="Training patterns per stage.")] = None,
    preset: Annotated[str | None, typer.Option(help="Curriculum preset.")] = None,
    checkpoints: Annotated[int | None, typer.Option(help="Number of checkpoints.")] = None,
    device: Annotated[str | None, typer.Option(help="torch device, e.g. cpu or cuda.")] = None,
    dtype: Annotated[str | None, typer.Option(help="float32 or float64.")] = None,
) -> None:
    """Train the network of a configuration (default: the published multitask setup, phase 1,
    standard init) and write hidden(time, item, unit), output, loss and weights as netCDF."""
    raw = configuration.load_toml(config) if config else {}
    setup = configuration.build(configuration.merge(raw, run_overrides(
        init_scale=init_scale, hidden=hidden, seed=seed, steps=steps, lr=lr, n=n_train,
        preset=preset, checkpoints=checkpoints, device=device, dtype=dtype)))
    with step_progress("training", setup.curriculum.total_steps) as advance:
        result = training.train(setup.network, setup.curriculum, setup.probes,
                                checkpoints=setup.checkpoints,
                                record_weights=setup.config["run"]["record_weights"],
                                device=setup.device, dtype=setup.dtype, progress=advance)
    results.save(result, out)
    final = float(result.loss.isel(time=-1))
    typer.echo(f"wrote {out}: {result.sizes['time']} checkpoints, {result.sizes['item']} probes, "
               f"final training loss {final:.4g}")
