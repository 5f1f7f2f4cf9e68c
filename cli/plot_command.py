"""``repkernel plot``: render one figure of repkernel.plot from result files."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from repkernel_cli.app import app, user_errors
from repkernel_cli.files import load_result

from repkernel import plot as plotting


def _steps(values: list[str] | None) -> list[int] | None:
    if not values:
        return None
    steps = []
    for text in (part.strip() for value in values for part in value.split(",")):
        if not text.lstrip("-").isdigit():
            raise ValueError(f"--times takes steps (integers, e.g. --times 0,250,500), got "
                             f"{text!r}")
        steps.append(int(text))
    return steps


def _selection(values: list[str] | None) -> dict[str, str]:
    selection = {}
    for value in values or []:
        dim, sep, choice = value.partition("=")
        if not sep or not dim.strip() or not choice.strip():
            raise ValueError(f"--select takes dim=value (e.g. --select init_scale=0.1), got "
                             f"{value!r}")
        selection[dim.strip()] = choice.strip()
    return selection


def _labelled(paths: list[Path], results: list) -> object:
    """One result as it is; several named by their source attribute (file name if repeated)."""
    if len(results) == 1:
        return results[0]
    sources = [str(r.attrs.get("source", p.stem)) for p, r in zip(paths, results)]
    if len(set(sources)) == len(sources):
        return dict(zip(sources, results))
    return {f"{s} ({p.stem})": r for s, p, r in zip(sources, paths, results)}


@app.command()
@user_errors
def plot(
    results: Annotated[list[Path], typer.Argument(
        help="Result files (netCDF): training, forecast, comparison, multitask scores, kernel "
        "or study results; give a forecast and an actual result to see them side by side.",
        show_default=False)],
    kind: Annotated[str, typer.Option("--kind", "-k", help="The figure: " + "; ".join(
        f"{name} ({figure.description})" for name, figure in plotting.FIGURES.items()) + ".",
                                      show_default=False)],
    out: Annotated[Path, typer.Option("--out", "-o", help="Figure file: .pdf, .png or .svg.",
                                      show_default=False)],
    times: Annotated[list[str] | None, typer.Option(
        "--times", "-t", help="Checkpoint steps of the " + ", ".join(
            name for name, figure in plotting.FIGURES.items() if figure.times) + " figures, "
        "e.g. --times 0,250,500 (default: first, middle and last; multitask: last).")] = None,
    select: Annotated[list[str] | None, typer.Option(
        "--select", "-s", help="dim=value to narrow the data first, e.g. --select "
        "init_scale=0.1 (repeatable).")] = None,
) -> None:
    """Draw a paper-ready figure (repkernel.plot) of result files and save it atomically."""
    if kind not in plotting.FIGURES:
        raise ValueError(f"unknown --kind {kind!r}: choose one of "
                         f"{', '.join(plotting.FIGURES)}")
    if out.suffix.lower() not in plotting.SUFFIXES:
        raise ValueError(f"cannot write a figure to {out.name!r}: the file name must end in "
                         f"{', '.join(plotting.SUFFIXES)}")
    steps, selection = _steps(times), _selection(select)
    if steps is not None and not plotting.FIGURES[kind].times:
        with_times = [name for name, figure in plotting.FIGURES.items() if figure.times]
        raise ValueError(f"--times chooses the checkpoints of the {', '.join(with_times)} "
                         f"figures; --kind {kind} shows every checkpoint")
    loaded = [load_result(path) for path in results]
    figure = plotting.render(kind, _labelled(results, loaded), times=steps, select=selection)
    plotting.save_figure(figure, out)
    typer.echo(f"wrote {out}")
