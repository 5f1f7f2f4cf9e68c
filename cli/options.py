"""Options shared by several commands: one definition each, and how run flags override a
configuration."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

ConfigFile = Annotated[Path | None, typer.Option(
    "--config", "-c", help="TOML run configuration (sections environment, network, curriculum, "
    "probes, run); the flags below override it.")]
InitScale = Annotated[float | None, typer.Option(help="Weight init scale.")]
Hidden = Annotated[int | None, typer.Option(help="Hidden units (multitask network).")]
Seed = Annotated[int | None, typer.Option(help="Network seed.")]
Steps = Annotated[int | None, typer.Option(help="Steps (every stage).")]
LearningRate = Annotated[float | None, typer.Option(help="Learning rate (every stage).")]
NTrain = Annotated[int | None, typer.Option(help="Training patterns per stage.")]
Preset = Annotated[str | None, typer.Option(help="Curriculum preset.")]
Checkpoints = Annotated[int | None, typer.Option(help="Number of checkpoints.")]
Device = Annotated[str | None, typer.Option(help="torch device, e.g. cpu or cuda.")]
Dtype = Annotated[str | None, typer.Option(help="float32 or float64.")]

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


def build_setup(config: Path | None, **flags):
    """The validated run (repkernel.config.Setup) of a TOML file (or the defaults) with the
    given flags merged over it."""
    from repkernel import config as configuration

    raw = configuration.load_toml(config) if config else {}
    return configuration.build(configuration.merge(raw, run_overrides(**flags)))
