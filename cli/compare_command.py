"""``repkernel compare``: similarity of two results (forecast vs actual) at every checkpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from repkernel_cli import options
from repkernel_cli.app import app, user_errors
from repkernel_cli.files import load_run_result, print_table

from repkernel import results
from repkernel.cpu_threads import threads as cpu_threads
from repkernel.similarity import DEFAULT_METRICS, METRICS, metric_names


def parse_metrics(value: str) -> tuple[str, ...]:
    """``--metrics rsa,cka``: names of ``repkernel.similarity.METRICS``."""
    names = [part.strip() for part in value.split(",") if part.strip()]
    if not names:
        raise ValueError(f"--metrics takes metric names, e.g. --metrics "
                         f"{','.join(DEFAULT_METRICS)}")
    return metric_names(names)


def summary_rows(comparison) -> list[tuple[str, ...]]:
    """One row per variable (and per readout of a forecast: 'hidden (linear)') at the last
    checkpoint, one column per metric; other dims (sweep dims) are averaged, NaN ignored."""
    last = comparison.isel(time=-1) if "time" in comparison.dims else comparison
    variables = list(dict.fromkeys(name.split("_", 1)[0] for name in last.data_vars))
    suffixes = list(dict.fromkeys(name.split("_", 1)[1] for name in last.data_vars))
    readouts = ([str(r) for r in last["readout"].values] if "readout" in last.dims else [None])
    rows = [("", *suffixes)]
    for variable in variables:
        for readout in readouts:
            at = last if readout is None else last.sel(readout=readout)
            label = variable if readout is None else f"{variable} ({readout})"
            rows.append((label, *(f"{float(at[f'{variable}_{s}'].mean()):.4f}"
                                  if f"{variable}_{s}" in at else "" for s in suffixes)))
    return rows


@app.command()
@user_errors
def compare(
    a: Annotated[Path, typer.Argument(help="Result to assess (netCDF), e.g. a forecast.",
                                      show_default=False)],
    b: Annotated[Path, typer.Argument(help="Reference result (netCDF), e.g. the actual "
                                      "training; changes are measured from its step 0.",
                                      show_default=False)],
    out: Annotated[Path, typer.Option("--out", "-o", help="netCDF file to write.")] = Path(
        "comparison.nc"),
    metrics: Annotated[str, typer.Option(
        help=f"Comma-separated metrics: {', '.join(METRICS)}.")] = ",".join(DEFAULT_METRICS),
    threads: options.Threads = 1,
) -> None:
    """Compare the hidden representations and outputs of two results with the same probes and
    checkpoints at every checkpoint (change alignment, RSA, CKA, Procrustes, ...); write netCDF
    and print the last checkpoint's values."""
    from repkernel.similarity import compare as compare_results

    results.check_writable(out)  # before any work
    names = parse_metrics(metrics)
    first, second = (load_run_result(path, "compare", "compare", "comparison") for path in (a, b))
    with cpu_threads(threads):
        comparison = compare_results(first, second, metrics=names)
    comparison.attrs.update(a_file=str(a), b_file=str(b))
    results.save(comparison, out)
    step = f" at step {int(comparison['time'][-1])}" if "time" in comparison.dims else ""
    typer.echo(f"wrote {out}: {', '.join(names)} of {a.name} vs {b.name}{step}:")
    print_table(summary_rows(comparison))
