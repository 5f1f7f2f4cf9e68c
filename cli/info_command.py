"""``repkernel info``: a result file's dims, variables, coordinates, provenance and configuration
at a glance."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from repkernel_cli.app import app, user_errors
from repkernel_cli.files import load_result
from rich.console import Console
from rich.text import Text

PROVENANCE = ("source", "version", "device", "dtype")
INLINE = 8  # lists longer than this are shown abbreviated


def _short(values: list) -> str:
    shown = [json.dumps(v) if isinstance(v, str) else str(v) for v in values]
    if len(shown) > INLINE:
        return f"[{', '.join(shown[:3])}, …, {shown[-1]}] ({len(shown)} values)"
    return f"[{', '.join(shown)}]"


def config_lines(value: Any, indent: int = 0) -> list[str]:
    """A configuration as indented ``key: value`` lines; lists of numbers stay on one line."""
    pad = "  " * indent
    lines = []
    if isinstance(value, dict):
        for key, item in value.items():
            if isinstance(item, dict) and item:
                lines += [f"{pad}{key}:", *config_lines(item, indent + 1)]
            elif isinstance(item, list) and any(isinstance(v, (dict, list)) for v in item):
                lines += [f"{pad}{key}:", *config_lines(item, indent + 1)]
            else:
                lines.append(f"{pad}{key}: {_scalar(item)}")
    elif isinstance(value, list):
        for item in value:
            inner = config_lines(item, indent + 1) if isinstance(item, (dict, list)) else [
                f"{pad}  {_scalar(item)}"]
            lines.append(f"{pad}- {inner[0].strip()}")
            lines += inner[1:]
    else:
        lines.append(f"{pad}{_scalar(value)}")
    return lines


def _scalar(value: Any) -> str:
    if isinstance(value, list):
        return _short(value)
    if isinstance(value, dict):
        return "{}"
    if isinstance(value, bool):
        return str(value).lower()
    return "null" if value is None else str(value)


def _coordinate_summary(values) -> str:
    import numpy as np

    values = np.asarray(values)
    if values.size == 0:
        return "empty"
    if values.ndim == 0:
        return str(values.item())
    flat = values.ravel()
    if flat.dtype.kind == "b":
        return ", ".join(f"{v} {int((flat == v).sum())}" for v in (True, False)
                         if (flat == v).any())
    distinct = np.unique(flat)
    if flat.dtype.kind in "iuf" and 1 < distinct.size <= 4:
        return ", ".join(f"{v:g}" for v in distinct) + (
            f" ({flat.size} values)" if distinct.size == flat.size else "")
    if flat.dtype.kind in "iuf":
        span = f"{flat.min():g} … {flat.max():g}" if flat.dtype.kind == "f" else (
            f"{flat.min()} … {flat.max()}")
        count = (f"{flat.size} values" if distinct.size == flat.size
                 else f"{distinct.size} distinct")
        return f"{span} ({count})" if distinct.size > 1 else f"{distinct[0]} (all)"
    shown = ", ".join(repr(str(v)) for v in distinct[:4])
    return shown + (f", … ({distinct.size} distinct)" if distinct.size > 4 else "")


def _rows(console: Console, rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row, widths)]
        console.print(Text("  " + "  ".join([*cells, row[-1]]).rstrip()))


def describe(console: Console, dataset, heading: str) -> None:
    """Print one Dataset: provenance, dims, variables, coordinates, attributes, config."""
    console.print(Text(heading, style="bold"))
    provenance = [f"{key} {dataset.attrs[key]}" for key in PROVENANCE if key in dataset.attrs]
    if provenance:
        console.print(Text("  " + " · ".join(provenance)))
    if dataset.sizes:
        console.print(Text.assemble(("dims ", "bold"), " · ".join(
            f"{dim} {size}" for dim, size in dataset.sizes.items())))
    if dataset.data_vars:
        console.print(Text("variables", style="bold"))
        _rows(console, [(str(name), f"({', '.join(map(str, var.dims))})", str(var.dtype))
                        for name, var in dataset.data_vars.items()])
    if dataset.coords:
        console.print(Text("coordinates", style="bold"))
        _rows(console, [(str(name), f"({', '.join(map(str, coord.dims))})", str(coord.dtype),
                         _coordinate_summary(coord.values))
                        for name, coord in dataset.coords.items()])
    others = {k: v for k, v in dataset.attrs.items() if k not in (*PROVENANCE, "config")}
    if others:
        console.print(Text("attributes", style="bold"))
        _rows(console, [(str(k), str(v)) for k, v in others.items()])
    if "config" in dataset.attrs:
        console.print(Text("configuration", style="bold"))
        try:
            config = json.loads(dataset.attrs["config"])
        except (TypeError, ValueError):
            lines = [str(dataset.attrs["config"])]
        else:
            lines = config_lines(config)
        for line in lines:
            console.print(Text("  " + line))


@app.command()
@user_errors
def info(
    result: Annotated[Path, typer.Argument(help="Result file (netCDF).", show_default=False)],
) -> None:
    """Show a result's dims, variables (dims, dtype), coordinates, provenance (source, version,
    device, dtype) and configuration; a study result group by group."""
    data = load_result(result)
    console = Console(highlight=False, soft_wrap=True)
    if hasattr(data, "children"):
        describe(console, data.to_dataset(), f"{result} (study result, groups: "
                 f"{', '.join(map(str, data.children))})")
        for name, child in data.children.items():
            console.print()
            describe(console, child.to_dataset(inherit=False), f"group {name}")
    else:
        describe(console, data, str(result))
