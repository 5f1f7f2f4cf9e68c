"""Reading result files and printing tables: what several commands share."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import typer


def load_result(path: Path):
    """A result file as a Dataset, or as a DataTree when it has groups (a study result)."""
    import xarray as xr

    if not path.is_file():
        raise FileNotFoundError(f"no result file at {path}")
    try:
        with xr.open_datatree(path) as tree:
            tree = tree.load()
    except (OSError, ValueError):
        raise ValueError(f"{path} is not a readable netCDF result file") from None
    return tree if tree.children else tree.to_dataset()


def load_run_result(path: Path, command: str, group: str, content: str):
    """A training or forecast result for ``command``; for a study result, the error names the
    ``group`` that already holds the ``content`` the command computes."""
    data = load_result(path)
    if hasattr(data, "children"):
        raise ValueError(f"{path} is a study result: its {group} group already holds the "
                         f"{content} (compute = {command}); {command} a training or forecast "
                         f"result")
    return data


def print_table(rows: Sequence[Sequence[str]]) -> None:
    """Right-aligned columns, two spaces apart, indented by two."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        typer.echo("  " + "  ".join(cell.rjust(w) for cell, w in zip(row, widths)).rstrip())
