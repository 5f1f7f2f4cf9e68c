"""The influence and kernel-path figures, through the FIGURES registry (render) and directly."""

import numpy as np
import pytest
from matplotlib.figure import Figure

import repkernel as rk
from repkernel import Curriculum, MultitaskEnvironment, MultitaskNetwork, Stage, plot

ENV = MultitaskEnvironment(3, 3)
PROBES = ENV.patterns(k=1, stimuli=2)


@pytest.fixture(scope="module")
def run():
    net = MultitaskNetwork(ENV, hidden=8, init_scale=0.5, seed=0)
    cur = Curriculum((Stage(ENV.sample(27, seed=0), 10, 0.05, reduction="sum"),))
    return net, cur


def test_influence_heatmap_rows_are_sources_and_columns_probe_tasks(run):
    result = rk.influence(*run, PROBES, checkpoints=3, by="task")
    fig = plot.render("influence", result, times=[10])
    assert isinstance(fig, Figure)
    drawn = fig.axes[0].collections[0].get_array().reshape(9, 9)
    rms = np.sqrt((result.influence.sel(time=10) ** 2).mean("unit").groupby("task").mean())
    expected = rms.values / rms.values.max()  # each panel divided by its largest entry
    np.testing.assert_allclose(np.sort(drawn.ravel()), np.sort(expected.ravel()), rtol=1e-6)
    side = plot.influence_heatmaps({"forecast": result, "again": result}, times=[5, 10],
                                   scale="shared")
    assert len([ax for ax in side.axes if ax.get_visible()]) == 4 + 1  # panels + colorbar
    shared = side.axes[1].collections[0].get_array().reshape(9, 9)  # step 5, second result
    rms = np.sqrt((result.influence.sel(time=5) ** 2).mean("unit").groupby("task").mean())
    np.testing.assert_allclose(np.sort(shared.ravel()), np.sort(rms.values.ravel()), rtol=1e-6)
    with pytest.raises(ValueError, match="unknown probe label 'colour'"):
        plot.influence_heatmaps(result, group="colour")


def test_kernel_path_curves_show_the_kernel_and_the_change_correlations(run):
    net, cur = run
    fc = rk.forecast(net, cur, PROBES, checkpoints=6)
    result = rk.kernel_path(net, cur, PROBES, checkpoints=6, forecast=fc)
    fig = plot.render("kernel-path", result)
    labels = [ax.get_ylabel() for ax in fig.axes]
    assert any("kernel distance" in label for label in labels)
    legend = fig.axes[3].get_legend()
    texts = {t.get_text() for t in legend.texts}
    assert {"forecast (linear)", "kernel along the path"} <= texts, texts
    with pytest.raises(ValueError, match=r"needs a result of repkernel\.kernel_path"):
        plot.kernel_path_curves(fc)
