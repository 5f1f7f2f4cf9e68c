"""Options shared by several commands: one definition each, and how run flags override a
configuration."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Annotated, Any

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
Threads = Annotated[int | None, typer.Option(
    min=1, help="CPU threads torch and numpy use inside one operation (default: one for the "
    "small networks of the studies, where more threads only cost; [run].threads).")]

# flag -> (option, configuration section, key): the run flags train, forecast and kernel share
RUN_FLAGS: dict[str, tuple[Any, str, str]] = {
    "init_scale": (InitScale, "network", "init_scale"),
    "hidden": (Hidden, "network", "hidden"),
    "seed": (Seed, "network", "seed"),
    "steps": (Steps, "curriculum", "steps"),
    "lr": (LearningRate, "curriculum", "lr"),
    "n_train": (NTrain, "curriculum", "n"),
    "preset": (Preset, "curriculum", "preset"),
    "checkpoints": (Checkpoints, "run", "checkpoints"),
    "device": (Device, "run", "device"),
    "dtype": (Dtype, "run", "dtype"),
    "threads": (Threads, "run", "threads"),
}


def run_overrides(**flags) -> dict:
    """Command-line flags that were given, as configuration sections to merge over a config."""
    overrides: dict = {}
    for name, value in flags.items():
        if value is not None:
            _, section, key = RUN_FLAGS[name]
            overrides.setdefault(section, {})[key] = value
    return overrides


def build_setup(config: Path | None, **flags):
    """The validated run (repkernel.config.Setup) of a TOML file (or the defaults) with the
    given flags merged over it; its device checked (before any work)."""
    from repkernel import config as configuration
    from repkernel.networks import check_device

    raw = configuration.load_toml(config) if config else {}
    setup = configuration.build(configuration.merge(raw, run_overrides(**flags)))
    check_device(setup.device)
    return setup


def with_setup(skip: Sequence[str] = ()) -> Callable[[Callable], Callable]:
    """Give a command --config and the run flags (RUN_FLAGS but ``skip``) in place of its
    ``setup`` parameter, which receives the Setup they build."""
    flags = [name for name in RUN_FLAGS if name not in skip]
    options = {"config": ConfigFile, **{name: RUN_FLAGS[name][0] for name in flags}}

    def decorate(command: Callable) -> Callable:
        signature = inspect.signature(command, eval_str=True)

        @functools.wraps(command)
        def wrapper(*args, **kwargs):
            given = {name: kwargs.pop(name) for name in options}
            return command(*args, setup=build_setup(**given), **kwargs)

        kept = [p for p in signature.parameters.values() if p.name != "setup"]
        added = [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=None,
                                   annotation=option) for name, option in options.items()]
        wrapper.__signature__ = signature.replace(parameters=[*kept, *added])
        wrapper.__annotations__ = {p.name: p.annotation for p in wrapper.__signature__
                                   .parameters.values()}
        return wrapper

    return decorate
