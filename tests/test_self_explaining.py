"""Files and figures that explain themselves (issue 14): multi-group files name their groups,
the compare table keeps readouts apart, and the study figures carry what a paper needs (panel
letters, labelled stage boundaries, metric direction, chance, readable labels, contrast)."""

import matplotlib.pyplot as plt
import numpy as np
import pytest
import xarray as xr
from matplotlib.colors import to_rgb
from repkernel_cli.compare_command import summary_rows

from repkernel import plot, results, studies
from repkernel.plot.style import QUALITATIVE, SEQUENTIAL


def test_a_multi_group_file_names_its_groups_at_the_root(tmp_path):
    tree = xr.DataTree.from_dict({"/actual": xr.Dataset({"a": ("x", [1.0])}),
                                  "/forecast": xr.Dataset({"b": ("x", [2.0])})})
    results.save(tree, tmp_path / "two.nc")
    with xr.open_dataset(tmp_path / "two.nc") as root:
        assert root.attrs["groups"] == "actual forecast"
        assert "open_datatree" in root.attrs["open_with"]


def test_the_compare_table_has_a_row_per_readout():
    comparison = xr.Dataset(
        {"hidden_cka_similarity": (("time", "readout"), [[0.5, 0.7], [0.9, 0.3]])},
        coords={"time": [0, 10], "readout": ["linear", "network"]})
    rows = summary_rows(comparison)
    assert rows[1:] == [("hidden (linear)", "0.9000"), ("hidden (network)", "0.3000")]


@pytest.fixture(scope="module")
def study_figures(tmp_path_factory):
    """The default study at smoke size over two seeds, every figure rendered."""
    study = studies.load_study(None, smoke=True,
                               overrides={"sweep.network.seed": [0, 1],
                                          "plots.heatmaps_at": {"seed": 0}})
    combined = studies.run_study(study, tmp_path_factory.mktemp("default"))
    times = study.config["plots"]["times"] or None
    figures = {}
    for kind in study.config["plots"]["kinds"]:
        select = study.config["plots"]["heatmaps_at"] if plot.FIGURES[kind].heatmap else None
        with plot.paper_style():
            figures[kind] = plot.render(kind, combined, times=times, select=select)
    yield figures
    for figure in figures.values():
        plt.close(figure)


def texts(figure):
    return [t.get_text() for ax in figure.axes for t in
            [*ax.texts, ax.title, ax.xaxis.label, ax.yaxis.label,
             *(ax.get_legend().texts if ax.get_legend() else [])]]


def test_every_panel_has_a_letter_in_reading_order(study_figures):
    for figure in study_figures.values():
        panels = [ax for ax in figure.axes if ax.get_visible() and not hasattr(ax, "_colorbar")]
        letters = [t.get_text() for ax in panels for t in ax.texts
                   if len(t.get_text()) == 1 and t.get_fontweight() == "bold"]
        assert sorted(letters) == [chr(ord("a") + i) for i in range(len(panels))]


def test_labels_are_human_readable_and_consistent(study_figures):
    for figure in study_figures.values():
        for text in texts(figure):
            assert "init_scale" not in text and "=1.0" not in text and text != "1.0"
    fidelity = study_figures["fidelity"]
    labels = [ax.yaxis.label.get_text() for ax in fidelity.axes if ax.get_visible()]
    assert all(label.endswith(("(higher is better)", "(lower is better)")) for label in labels)
    assert any("distance" in label and "lower is better" in label for label in labels)
    assert any(text.startswith("stage 1") for text in texts(fidelity))  # the phase boundary


def test_multitask_scores_show_chance_categories_and_the_readout(study_figures):
    figure = study_figures["multitask"]
    axes = [ax for ax in figure.axes if ax.get_visible()]
    assert [ax.get_title() for ax in axes] == ["actual", "forecast (network readout)"]
    assert all(ax.get_ylabel() in ("Luce ratio P(correct)", "") for ax in axes)
    for ax in axes:
        chance = [line for line in ax.lines if np.allclose(line.get_ydata(), 1 / 3)]
        assert chance and "chance" in [t.get_text() for t in ax.texts]
        # init scales are categories: no data line runs from one to the other
        assert [t.get_text() for t in ax.get_xticklabels()] == ["0.1", "1"]
        for line in ax.lines:  # points (no line style) and sd bars within one category
            x = np.asarray(line.get_xdata(), dtype=float)
            assert line in chance or line.get_linestyle() == "None" or (
                np.nanmax(x) - np.nanmin(x) < 0.5)


def test_line_colours_keep_contrast_on_white(study_figures):
    palette = {to_rgb(c) for c in QUALITATIVE} | {
        tuple(np.round(SEQUENTIAL(v)[:3], 6)) for v in np.linspace(0, 1, 256)}
    for kind in ("loss", "fidelity"):
        for ax in study_figures[kind].axes:
            for line in ax.lines:
                rgb = to_rgb(line.get_color())
                luminance = 0.2126 * rgb[0] + 0.7152 * rgb[1] + 0.0722 * rgb[2]
                grey = max(rgb) - min(rgb) < 0.05  # reference lines: zero, stage boundary
                assert grey or luminance < 0.7, (kind, rgb)
                assert grey or tuple(np.round(rgb, 6)) in palette or rgb in palette
