"""The three registries (NETWORKS, METRICS, FIGURES) are the one place to add a network, a
metric or a figure: a toy metric and a toy figure, registered once, reach compare, render, the
CLI help and a study."""

import subprocess
import sys
import textwrap

import numpy as np
import pytest
import xarray as xr
from matplotlib.figure import Figure

from repkernel import plot, similarity, studies

TOY = textwrap.dedent('''
    import xarray as xr
    from matplotlib.figure import Figure

    from repkernel import plot, similarity


    def toy_squared_difference(a, b, *, item_dim, unit_dim):
        """Mean squared difference of a and b over items and units: (...)."""
        return ((a - b) ** 2).mean((item_dim, unit_dim))


    def toy_loss_lines(parts):
        """Each result's loss over training, one line per result."""
        figure = Figure()
        axes = figure.subplots()
        for name, ds in parts.items():
            axes.plot(ds["time"], ds["loss"].mean([d for d in ds["loss"].dims if d != "time"]),
                      label=name)
        return figure


    similarity.METRICS["toy_msd"] = similarity.Metric(toy_squared_difference, {
        "toy_msd": similarity.Variable("toy mean squared difference", 0.0)})
    plot.FIGURES["toy-loss"] = plot.FigureKind(toy_loss_lines, "toy loss lines")
''')


@pytest.fixture
def toy():
    """TOY's rows in the registries for one test, removed afterwards."""
    exec(TOY, {})
    yield
    del similarity.METRICS["toy_msd"], plot.FIGURES["toy-loss"]


def tiny_result(seed):
    rng = np.random.default_rng(seed)
    return xr.Dataset({"hidden": (("time", "item", "unit"), rng.normal(size=(3, 6, 4))),
                       "loss": ("time", rng.uniform(size=3))},
                      coords={"time": [0, 5, 10], "item": np.arange(6)})


def test_a_registered_metric_and_figure_reach_compare_and_render(toy):
    a, b = tiny_result(1), tiny_result(2)
    out = similarity.compare(a, b, metrics=("toy_msd", "cka"), variables=("hidden",))
    expected = ((a.hidden - b.hidden) ** 2).mean(("item", "unit"))
    np.testing.assert_allclose(out["hidden_toy_msd"], expected)
    assert out["hidden_toy_msd"].attrs["long_name"] == "hidden toy mean squared difference"
    np.testing.assert_allclose(similarity.compare(a, a, metrics=("toy_msd",),
                                                  variables=("hidden",))["hidden_toy_msd"], 0)
    figure = plot.render("toy-loss", {"forecast": a, "actual": b})
    assert isinstance(figure, Figure)
    assert [line.get_label() for line in figure.axes[0].lines] == ["forecast", "actual"]


def test_a_registered_metric_and_figure_appear_in_the_cli_help():
    script = TOY + textwrap.dedent('''
        from typer.testing import CliRunner

        from repkernel_cli import compare_command, plot_command  # noqa: F401
        from repkernel_cli.app import app

        for command in ("compare", "plot"):
            print(CliRunner().invoke(app, [command, "--help"], terminal_width=200).output)
    ''')
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    compare_help, plot_help = done.stdout.split("Usage:")[1:]
    compare_help = " ".join(compare_help.replace("│", " ").split())  # help text wraps
    assert "svcca, toy_msd" in compare_help
    assert "toy-loss (toy loss lines)" in plot_help


def test_a_study_chooses_the_registered_metric_and_figure(toy, tmp_path):
    raw = {"study": {"name": "toy", "compute": ["compare"]},
           "environment": {"input_dims": 2, "output_dims": 2, "features": 2},
           "network": {"hidden": 6}, "curriculum": {"n": 12, "steps": 8, "lr": 0.1},
           "probes": {"source": "patterns", "k": [1]}, "run": {"checkpoints": 3},
           "compare": {"metrics": ["toy_msd"]}, "plots": {"kinds": ["toy-loss"]}}
    study = studies.load_study(raw)
    combined = studies.run_study(study, tmp_path)
    comparison = combined["compare"].to_dataset()
    assert set(comparison.data_vars) == {"hidden_toy_msd", "output_toy_msd"}
    forecast, actual = combined["forecast"].to_dataset(), combined["actual"].to_dataset()
    expected = ((forecast.output - actual.output) ** 2).mean(("item", "output_unit"))
    np.testing.assert_allclose(comparison["output_toy_msd"], expected.transpose(
        *comparison["output_toy_msd"].dims))
    paths = studies.render_figures(study, combined, tmp_path / "figures", formats=("png",))
    assert [p.name for p in paths] == ["toy-loss.png"] and paths[0].stat().st_size > 0
