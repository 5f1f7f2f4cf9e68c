"""``repkernel evaluate``: multitask scores of a training or forecast result at every checkpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from repkernel_cli import options
from repkernel_cli.app import app, user_errors
from repkernel_cli.files import load_run_result, print_table

from repkernel import results
from repkernel.config import DTYPES, defaults_of
from repkernel.cpu_threads import threads as cpu_threads
from repkernel.multitask import evaluate_multitask


def task_set_sizes(values: list[str] | None) -> tuple[int, ...]:
    """``--k 1,2,3`` or ``--k 1 --k 2``: task-set sizes."""
    if not values:
        return tuple(defaults_of(evaluate_multitask)["k"])
    sizes = []
    for text in (part.strip() for value in values for part in value.split(",")):
        if not text.isdigit() or int(text) < 1:
            raise ValueError(f"--k takes task-set sizes (positive integers, e.g. --k 1,2,3), "
                             f"got {text!r}")
        sizes.append(int(text))
    return tuple(dict.fromkeys(sizes))


def summary_rows(scores) -> list[tuple[str, ...]]:
    """One row per (k, congruency) at the last checkpoint, averaged over any other dims."""
    last = scores.isel(time=-1) if "time" in scores.dims else scores
    rows = [("k", "sets", "P(correct)", "accuracy", "error", "cost", "throughput seq/conc")]
    for k in last["k"].values:
        for congruent in (None, True, False):
            if congruent is None:
                values = [last[f"{n}_by_k"].sel(k=k) for n in ("luce", "accuracy", "error")]
                cost = last["luce_cost"].sel(k=k) if "luce_cost" in last else None
                label = "all"
            else:
                if k == 1:
                    continue
                values = [last[f"{n}_by_congruency"].sel(k=k, congruent=congruent)
                          for n in ("luce", "accuracy", "error")]
                cost = (last["luce_cost_by_congruency"].sel(k=k, congruent=congruent)
                        if "luce_cost_by_congruency" in last else None)
                label = "congruent" if congruent else "incongruent"
            through = ("" if congruent is not None or "throughput_sequential" not in last else
                       f"{float(last['throughput_sequential'].sel(k=k).mean()):.3f} / "
                       f"{float(last['throughput_concurrent'].sel(k=k).mean()):.3f}")
            rows.append((str(int(k)), label, *(f"{float(v.mean()):.3f}" for v in values),
                         "" if cost is None else f"{float(cost.mean()):+.3f}", through))
    return rows


@app.command()
@user_errors
def evaluate(
    result: Annotated[Path, typer.Argument(help="Training or forecast result (netCDF) with "
                                           "weights(time, parameter).", show_default=False)],
    out: Annotated[Path, typer.Option("--out", "-o", help="netCDF file to write.")] = Path(
        "scores.nc"),
    k: Annotated[list[str] | None, typer.Option(
        "--k", help="Task-set sizes, e.g. --k 1,2,3 (repeatable; default 1,2,3).")] = None,
    stimuli: Annotated[str, typer.Option(help="'all' stimuli or how many to sample.")] = "all",
    device: options.Device = None,
    dtype: options.Dtype = None,
    threads: options.Threads = 1,
) -> None:
    """Score every k-task set on every stimulus at every checkpoint of a result (the network
    rebuilt from its config, loaded with each recorded weight vector): Luce ratio P(correct),
    accuracy and task-restricted error per response, means by k and congruency, multitasking
    cost and throughput; write netCDF and print the last checkpoint's summary."""
    results.check_writable(out)  # before any work
    sizes = task_set_sizes(k)
    if stimuli != "all" and not stimuli.isdigit():
        raise ValueError(f"--stimuli takes 'all' or a number of stimuli, got {stimuli!r}")
    if dtype is not None and dtype not in DTYPES:
        raise ValueError(f"--dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    data = load_run_result(result, "evaluate", "multitask", "scores")
    with cpu_threads(threads):
        scores = evaluate_multitask(
            data, None, k=sizes, stimuli=stimuli if stimuli == "all" else int(stimuli),
            device=device, dtype=None if dtype is None else DTYPES[dtype])
    results.save(scores, out)
    step = f" at step {int(scores['time'][-1])}" if "time" in scores.dims else ""
    typer.echo(f"wrote {out}: {scores.sizes.get('time', 1)} checkpoints x "
               f"{scores.sizes['response']} responses; summary{step}:")
    print_table(summary_rows(scores))
