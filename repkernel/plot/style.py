"""The look of every figure (STYLE, colour maps, panel sizes) and atomic saving."""

from __future__ import annotations

import contextlib
import functools
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import matplotlib as mpl
import numpy as np
import seaborn as sns
from cycler import cycler
from matplotlib.figure import Figure

from repkernel.results import write_atomic

SUFFIXES = (".pdf", ".png", ".svg")


# One place for the look of every figure: readable 8-10 pt fonts, text kept as text in vector
# files (TrueType in pdf, live text in svg), 300 dpi for png and for rasterized heatmap cells.
STYLE: dict[str, Any] = {
    "font.size": 9,
    "axes.titlesize": 9,
    "axes.labelsize": 9,
    "xtick.labelsize": 8,
    "ytick.labelsize": 8,
    "legend.fontsize": 8,
    "legend.title_fontsize": 8,
    "figure.titlesize": 10,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "pdf.fonttype": 42,
    "ps.fonttype": 42,
    "svg.fonttype": "none",
    "savefig.dpi": 300,
    "figure.dpi": 100,
    "axes.prop_cycle": cycler(color=["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00",
                                     "#56B4E9", "#000000"]),  # QUALITATIVE below
}


# Colour-blind-safe lines (Okabe & Ito): categories take QUALITATIVE in order; ordered numbers
# (init scales, ...) take SEQUENTIAL, viridis without its pale yellow end so every line keeps
# contrast on white.
QUALITATIVE = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000"]
SEQUENTIAL = mpl.colors.ListedColormap(mpl.colormaps["viridis"](np.linspace(0.0, 0.75, 256)),
                                       name="viridis_dark")


def letter_panels(fig: Figure) -> Figure:
    """Bold panel letters a, b, c, ... at the top left of every visible panel (not colorbars),
    in reading order, for a paper's references to them."""
    panels = [ax for ax in fig.axes if ax.get_visible() and not hasattr(ax, "_colorbar")
              and ax.get_label() != "<colorbar>"]
    panels.sort(key=lambda ax: (-round(ax.get_position().y1, 2), ax.get_position().x0))
    for index, ax in enumerate(panels):
        letter = chr(ord("a") + index) if index < 26 else f"a{chr(ord('a') + index - 26)}"
        ax.text(-0.02, 1.02, letter, transform=ax.transAxes, ha="right", va="bottom",
                fontweight="bold", fontsize=STYLE["figure.titlesize"])
    return fig


CORRELATION_CMAP = "RdBu_r"  # diverging, centered at 0: correlations and signed kernels


MAGNITUDE_CMAP = "viridis"  # sequential: magnitudes such as |eigenvector components|


PANEL = (2.5, 2.3)  # inches per heatmap panel (width, height)


LINE_PANEL = (3.2, 2.4)  # inches per line-plot panel


MAX_PANELS = 48


MAX_COLUMNS = 9  # heatmap columns before a sweep is laid out as blocks of rows


RASTER_CELLS = 4096  # heatmaps with more cells are rasterized inside vector files (file size)


MAX_TICKS = 30  # more items than this on an axis: label groups (tasks), not items


MAX_LABELS = 14  # evenly spaced tick labels that fit along one heatmap axis at 8 pt


AXIS_POINTS = 118  # length of a PANEL's heatmap axis in points (minus margins), for labels


PSEUDO_KERNEL_PANEL = (3.0, 2.8)


@contextlib.contextmanager
def paper_style() -> Iterator[None]:
    """The shared figure style (seaborn "ticks" plus STYLE) as a context manager."""
    with sns.axes_style("ticks"), mpl.rc_context(STYLE):
        yield


def _styled(function):
    """Draw the whole figure inside paper_style (fonts are fixed when text is created)."""
    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        with paper_style():
            return function(*args, **kwargs)
    return wrapper


def save_figure(fig: Figure, path: str | os.PathLike) -> Path:
    """Write ``fig`` to ``path`` (.pdf, .png or .svg, chosen by suffix) atomically: a temporary
    file in the same folder, then a rename, so no half-written figure ever exists at ``path``."""
    path = Path(path)
    fmt = path.suffix.lower()
    if fmt not in SUFFIXES:
        raise ValueError(f"cannot save a figure as {path.name!r}: use a file name ending in "
                         f"{', '.join(SUFFIXES)}")
    fonts = logging.getLogger("fontTools")  # font subsetting warns about harmless timestamps
    level = fonts.level
    try:
        fonts.setLevel(logging.ERROR)
        with mpl.rc_context(STYLE):
            return write_atomic(path, lambda tmp: fig.savefig(tmp, format=fmt[1:]))
    finally:
        fonts.setLevel(level)
