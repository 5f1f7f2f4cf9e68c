"""The Typer app: a thin shell over library calls. Each command lives in its own module and
registers itself on ``app``; errors a user can fix are printed as one line, exit code 1."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Annotated

import typer

import repkernel

app = typer.Typer(
    name="repkernel",
    help="Forecast hidden-representation change from initial weights and curriculum; "
    "train, compare and plot.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",
)

# Exceptions that mean "the input is wrong", not "repkernel is broken".
USER_ERRORS = (ValueError, FileNotFoundError, FileExistsError, KeyError, TypeError,
               repkernel.DivergenceError)


def fail(message: str) -> typer.Exit:
    typer.secho(f"error: {message}", err=True, fg=typer.colors.RED)
    return typer.Exit(code=1)


def user_errors(command: Callable) -> Callable:
    """Turn user errors into one line on stderr and exit code 1, never a traceback."""
    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except USER_ERRORS as error:
            text = error.args[0] if isinstance(error, KeyError) and error.args else error
            raise fail(str(text)) from None

    return wrapper


def _version(value: bool) -> None:
    if value:
        typer.echo(f"repkernel {repkernel.__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
) -> None:
    """repkernel: pseudo-kernel forecasts of representation learning."""


def main() -> None:
    # Command modules register themselves on import.
    from repkernel_cli import (  # noqa: F401
        compare_command,
        evaluate_command,
        forecast_command,
        info_command,
        kernel_command,
        plot_command,
        run_command,
        train_command,
    )

    app()
