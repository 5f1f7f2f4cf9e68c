"""repkernel.plot and the `repkernel plot` / `repkernel info` commands, on small results with the
real layout (a tiny trained and forecast multitask network) and synthetic metric Datasets."""

import importlib.util
import subprocess
import sys

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pandas as pd
import pytest
import torch
import xarray as xr
from matplotlib.figure import Figure
from repkernel_cli import info_command, plot_command  # noqa: F401
from repkernel_cli.app import app
from typer.testing import CliRunner

import repkernel
from repkernel import plot

HAS_SIMILARITY = importlib.util.find_spec("repkernel.similarity") is not None
needs_similarity = pytest.mark.skipif(not HAS_SIMILARITY, reason="repkernel.similarity absent")


@pytest.fixture(scope="module")
def results():
    """(actual, forecast) of a 2 x 2 multitask network, 4 checkpoints over 30 steps."""
    saved = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        env = repkernel.MultitaskEnvironment(2, 2)
        net = repkernel.MultitaskNetwork(env, hidden=8, init_scale=1.0, seed=0)
        probes = env.patterns(k=1)
        curriculum = repkernel.Curriculum([repkernel.Stage(probes, steps=30, lr=0.5)])
        actual = repkernel.train(net, curriculum, probes, checkpoints=4)
        forecast = repkernel.forecast(net, curriculum, probes, checkpoints=4)
    finally:
        torch.set_default_dtype(saved)
    return actual, forecast


@pytest.fixture(scope="module")
def result_file(results, tmp_path_factory):
    path = tmp_path_factory.mktemp("results") / "actual.nc"
    repkernel.save(results[0], path)
    return path


def panels(fig: Figure) -> list:
    """The plotting axes of a figure (colorbars excluded)."""
    return [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]


def colorbar_labels(fig: Figure) -> list[str]:
    return [ax.get_ylabel() for ax in fig.axes if ax.get_label() == "<colorbar>"]


def ticklabels(ax, axis="y") -> list[str]:
    ticks = ax.get_yticklabels() if axis == "y" else ax.get_xticklabels()
    return [t.get_text() for t in ticks]


def pearson_rsm(hidden: xr.DataArray) -> xr.DataArray:
    """Ground truth RSM, (..., item, item_b), with numpy's corrcoef."""
    values = np.asarray(hidden.transpose(..., "item", "unit").values)
    lead = values.shape[:-2]
    out = np.stack([np.corrcoef(m) for m in values.reshape(-1, *values.shape[-2:])])
    dims = [d for d in hidden.dims if d not in ("item", "unit")]
    return xr.DataArray(out.reshape(*lead, *out.shape[-2:]), dims=(*dims, "item", "item_b"),
                        coords={**{d: hidden[d] for d in dims},
                                **{c: hidden[c] for c in hidden.coords
                                   if hidden[c].dims == ("item",)}})


# -- heatmaps ---------------------------------------------------------------------------------

def test_rsm_heatmaps_forecast_and_actual_side_by_side(results):
    actual, forecast = results
    data = {"forecast": xr.Dataset({"rsm": pearson_rsm(forecast.hidden)}),
            "actual": xr.Dataset({"rsm": pearson_rsm(actual.hidden)})}
    steps = actual.time.values[[0, -1]].tolist()
    fig = plot.rsm_heatmaps(data, times=steps)
    assert isinstance(fig, Figure)
    axes = panels(fig)
    assert len(axes) == 2 * 3  # 2 checkpoints x (forecast linear, forecast network, actual)
    titles = [ax.get_title() for ax in axes]
    assert titles[0] == f"forecast (linear)\nstep {steps[0]}"
    assert any(t.startswith("actual\nstep") for t in titles)
    # items grouped and labelled by task with their input -> output dims, from the coords
    assert ticklabels(axes[0]) == ["0 (0→0)", "1 (0→1)", "2 (1→0)", "3 (1→1)"]
    assert "task" in fig.get_supylabel()
    assert colorbar_labels(fig) == ["representational similarity\n(Pearson r)"]
    limits = {mesh.get_clim() for ax in axes for mesh in ax.collections[:1]}
    assert len(limits) == 1 and limits.pop() == (-1.0, 1.0)  # one diverging scale around 0


def test_rsm_heatmaps_group_by_task_set_when_items_are_many(results):
    actual, _ = results
    rsm = pearson_rsm(actual.hidden.isel(time=-1))
    fig = plot.rsm_heatmaps(rsm, group_by="k")
    assert len(panels(fig)) == 1
    assert ticklabels(panels(fig)[0]) == ["k=1"]


@needs_similarity
def test_rsm_and_task_similarity_from_hidden(results):
    actual, forecast = results
    fig = plot.rsm_heatmaps({"forecast": forecast, "actual": actual})
    assert len(panels(fig)) == 3 * 3  # default checkpoints: first, middle, last
    fig = plot.task_similarity_heatmaps([forecast, actual], times=[0])
    assert len(panels(fig)) == 3
    assert ticklabels(panels(fig)[0])[3] == "3 (1→1)"


def test_task_similarity_heatmaps_precomputed_with_sweep_dim():
    tasks = np.arange(4)
    values = np.stack([np.eye(4), 0.5 * np.eye(4) - 0.2])
    matrix = xr.DataArray(values[:, None], dims=("init_scale", "time", "task", "task_b"),
                          coords={"init_scale": [0.1, 1.0], "time": [100], "task": tasks,
                                  "task_b": tasks, "input_dim": ("task", [0, 0, 1, 1]),
                                  "output_dim": ("task", [0, 1, 0, 1])}, name="task_similarity")
    fig = plot.task_similarity_heatmaps(matrix)
    axes = panels(fig)
    assert [ax.get_title() for ax in axes] == ["init scale 0.1\nstep 100",
                                               "init scale 1\nstep 100"]
    assert ticklabels(axes[0]) == ["0 (0→0)", "1 (0→1)", "2 (1→0)", "3 (1→1)"]
    assert colorbar_labels(fig) == ["task similarity (Pearson r)"]


def test_kernel_eigenvector_heatmaps_facets_over_remaining_dims():
    rng = np.random.default_rng(0)
    components = xr.DataArray(rng.normal(size=(4, 6, 3)), dims=("output_unit", "task", "input_dim"),
                              coords={"output_unit": np.arange(4), "task": np.arange(6),
                                      "input_dim": np.arange(3)}, name="component")
    fig = plot.kernel_eigenvector_heatmaps(components)
    axes = panels(fig)
    assert len(axes) == 4
    assert [ax.get_title() for ax in axes] == [f"output unit {o}" for o in range(4)]
    assert axes[0].get_ylabel() == "" and "task" in fig.get_supylabel()
    assert colorbar_labels(fig) == ["mean |eigenvector component|"]
    magnitudes = abs(components.values)
    limits = {ax.collections[0].get_clim() for ax in axes}  # one scale over the data's range
    assert limits == {(magnitudes.min(), magnitudes.max())}
    by = xr.Dataset({"by_task": components.isel(input_dim=0, drop=True).T,
                     "by_input": components.isel(task=0, drop=True).T})
    fig = plot.kernel_eigenvector_heatmaps(by)
    assert len(panels(fig)) == 2
    assert [panels(fig)[0].get_ylabel(), panels(fig)[1].get_ylabel()] == ["task", "input dim"]
    # any two dims can be the axes
    fig = plot.kernel_eigenvector_heatmaps(components, y="output_unit", x="task")
    assert len(panels(fig)) == 3


def test_kernel_eigenvector_heatmaps_of_the_real_eigen_analysis():
    from repkernel import eigen
    from repkernel.kernels import kernel_eigenvectors

    saved = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        env = repkernel.MultitaskEnvironment(2, 2)
        probes = env.patterns(k=1)
        vectors = kernel_eigenvectors(repkernel.MultitaskNetwork(env, hidden=8, seed=0), probes,
                                      n_eigenvectors=2)
    finally:
        torch.set_default_dtype(saved)
    # raw components (output_unit, rank, item): mean |component| by task, one panel per rank
    fig = plot.kernel_eigenvector_heatmaps(vectors.to_dataset())
    assert [ax.get_title() for ax in panels(fig)] == ["rank 0", "rank 1"]
    assert "task" in fig.get_supxlabel() and "output unit" in fig.get_supylabel()
    assert colorbar_labels(fig) == ["mean |eigenvector component|"]
    # task x input feature per output unit and rank: a grid, output units down, ranks across
    both = eigen.components_by_input_feature(vectors, probes, by="task")
    fig = plot.kernel_eigenvector_heatmaps(both)
    axes = panels(fig)
    assert len(axes) == 4 * 2 and axes[1].get_title() == "output unit 0, rank 1"
    assert fig.axes[0].get_subplotspec().get_geometry()[:2] == (4, 2)
    assert ticklabels(axes[-1], "x") == ["0/0", "0/1", "1/0", "1/1"]


def test_pseudo_kernel_heatmap_block_norm_and_signed_slices(results):
    actual, _ = results
    items = {c: actual[c] for c in actual.coords if actual[c].dims == ("item",)}
    train = {f"train_{c}": ("train_item", actual[c].values) for c in items if c != "item"}
    rng = np.random.default_rng(1)
    kernel = xr.DataArray(rng.normal(size=(16, 8, 16, 4)),
                          dims=("item", "unit", "train_item", "output_unit"),
                          coords={**items, "train_item": np.arange(16), **train,
                                  "unit": np.arange(8), "output_unit": np.arange(4)},
                          name="pseudo_kernel")
    fig = plot.pseudo_kernel_heatmap(kernel.to_dataset())
    (ax,) = panels(fig)
    assert "norm" in colorbar_labels(fig)[0]
    assert ticklabels(ax, "x")[0] == "0 (0→0)" and "training items" in ax.get_xlabel()
    fig = plot.pseudo_kernel_heatmap(kernel.sel(output_unit=2, unit=[0, 1]), reduce=None)
    assert [ax.get_title() for ax in panels(fig)] == ["unit 0, output unit 2",
                                                     "unit 1, output unit 2"]
    low, high = panels(fig)[0].collections[0].get_clim()
    assert low == -high
    fig = plot.pseudo_kernel_heatmap(kernel.sel(output_unit=2, unit=0))  # auto: one signed slice
    assert colorbar_labels(fig) == ["pseudo kernel"]
    weighted = kernel.isel(unit=0, drop=True).rename("loss_weighted_kernel")
    assert "over output unit" in colorbar_labels(plot.pseudo_kernel_heatmap(weighted))[0]
    with pytest.raises(ValueError, match="item, train_item"):
        plot.pseudo_kernel_heatmap(kernel.rename(train_item="other"))


# -- curves -----------------------------------------------------------------------------------

def metrics(seeds=(0, 1)):
    time = np.arange(0, 50, 10)
    rng = np.random.default_rng(2)
    shape = (len(time), 2, 3, len(seeds))
    ds = xr.Dataset(
        {"hidden_change_correlation": (("time", "readout", "init_scale", "seed"),
                                       1 - rng.uniform(0, 0.3, shape)),
         "hidden_change_relative_error": (("time", "readout", "init_scale", "seed"),
                                          rng.uniform(0, 1, shape))},
        coords={"time": time, "readout": ["linear", "network"], "init_scale": [0.01, 0.1, 3.0],
                "seed": list(seeds), "stage": ("time", [0, 0, 0, 1, 1])})
    ds["hidden_change_relative_error"].attrs["long_name"] = "relative error of Δh"
    return ds


def legend_texts(fig: Figure) -> list[str]:
    return [t.get_text() for ax in fig.axes if ax.get_legend() for t in ax.get_legend().texts]


def test_fidelity_curves_hue_by_sweep_dims():
    fig = plot.fidelity_curves(metrics())
    axes = panels(fig)
    assert len(axes) == 2
    assert [ax.get_ylabel() for ax in axes] == ["hidden change correlation\n(higher is better)",
                                                "relative error of Δh\n(lower is better)"]
    assert axes[0].get_xlabel() == "training step"
    texts = legend_texts(fig)
    assert {"readout", "linear", "network", "init scale"} <= set(texts)
    fig = plot.fidelity_curves(metrics(), metrics=["hidden_change_correlation"], hue="init_scale",
                               style="readout")
    assert len(panels(fig)) == 1
    with pytest.raises(ValueError, match="no metric 'nope'"):
        plot.fidelity_curves(metrics(), metrics=["nope"])
    with pytest.raises(ValueError, match="too many dims"):
        plot.fidelity_curves(metrics().expand_dims(relinearize=[1, 4]))


def test_multitask_scores_against_init_scale():
    scales = [0.01, 0.1, 1.0]
    values = np.random.default_rng(3).uniform(0.3, 1, size=(2, 3, 2, 3, 2))
    values[..., 0, 1] = np.nan  # single tasks are always congruent
    ds = xr.Dataset({"luce_by_congruency": (("source", "init_scale", "time", "k", "congruent"),
                                            values)},
                    coords={"source": ["actual", "forecast"], "init_scale": scales,
                            "time": [0, 100], "k": [1, 2, 3], "congruent": [True, False]})
    fig = plot.multitask_scores(ds)
    axes = panels(fig)
    assert [ax.get_title() for ax in axes] == ["actual", "forecast (network readout)"]
    assert axes[0].get_xlabel() == "init scale" and axes[0].get_xscale() == "log"
    assert {"single task", "k=2, congruent", "k=2, incongruent"} <= set(legend_texts(fig))
    # actual and forecast stacked along source: the actual, copied along readout, shown once
    readout = xr.DataArray([1.0, 0.9], dims="readout", coords={"readout": ["linear", "network"]})
    forecast = ds.sel(source="forecast", drop=True) * readout
    stacked = xr.concat([ds.sel(source="actual", drop=True), forecast],
                        dim=pd.Index(["actual", "forecast"], name="source"))
    assert [ax.get_title() for ax in panels(plot.multitask_scores(stacked))] == [
        "actual", "forecast (linear)", "forecast (network)"]
    fig = plot.multitask_scores(ds.sel(init_scale=0.1), at_step=0)
    assert panels(fig)[0].get_xlabel() == "k"
    with pytest.raises(ValueError, match="step 7 is not a checkpoint"):
        plot.multitask_scores(ds, at_step=7)
    rows = panels(plot.multitask_scores(ds, at_step=[0, 100]))  # a row of panels per step
    assert [ax.get_title() for ax in rows] == [
        "actual, step 0", "forecast (network readout), step 0", "actual, step 100",
        "forecast (network readout), step 100"]
    line = rows[2].get_lines()[0]  # actual at step 100, single task, over init scales
    np.testing.assert_allclose(line.get_ydata(), values[0, :, 1, 0, 0])


def test_loss_curves_forecast_and_actual(results):
    actual, forecast = results
    fig = plot.loss_curves({"forecast": forecast, "actual": actual})
    axes = panels(fig)
    assert [ax.get_ylabel() for ax in axes] == ["training loss", "probe loss"]
    assert {"forecast (linear)", "forecast (network)", "actual"} <= set(legend_texts(fig))
    stacked = xr.concat([forecast[["loss"]], actual[["loss"]]],
                        dim=pd.Index(["forecast", "actual"], name="source"))
    assert {"forecast (linear)", "forecast (network)", "actual"} == set(
        legend_texts(plot.loss_curves(stacked, variables=("loss",)))) - {"result"}
    fig = plot.loss_curves(actual, variables=("loss", "batch_loss"))
    assert len(panels(fig)) == 2
    # two stages: the training loss is drawn per stage (its training set changes), not joined
    staged = actual.assign_coords(stage=("time", [0, 0, 1, 1]))
    lines = panels(plot.loss_curves(staged))[0].lines
    curves = [line for line in lines if len(set(line.get_xdata())) > 1]
    assert sorted(tuple(line.get_xdata()) for line in curves) == [(0, 10), (20, 30)]
    with pytest.raises(ValueError, match="needs one of"):
        plot.loss_curves(metrics())


def test_times_must_be_checkpoints_and_panels_bounded(results):
    actual, _ = results
    rsm = xr.Dataset({"rsm": pearson_rsm(actual.hidden)})
    with pytest.raises(ValueError, match="step 7 is not a checkpoint"):
        plot.rsm_heatmaps(rsm, times=[7])
    many = rsm.expand_dims(seed=range(20))
    with pytest.raises(ValueError, match="panels"):
        plot.rsm_heatmaps(many)


# -- render and save --------------------------------------------------------------------------

def test_render_takes_parts_of_a_study_tree(results):
    actual, forecast = results
    scores = xr.Dataset({"luce": (("time", "k"), [[0.5, 0.4], [0.9, 0.6]])},
                        coords={"time": [0, 30], "k": [1, 2]})
    tree = xr.DataTree.from_dict({"/actual": actual, "/forecast": forecast,
                                  "/compare": metrics(seeds=(0,)).isel(init_scale=0),
                                  "/multitask": scores})
    assert len(panels(plot.render("loss", tree))) == 2
    assert len(panels(plot.render("fidelity", tree))) == 2
    assert len(panels(plot.render("fidelity", tree, select={"readout": "linear"}))) == 2
    assert len(panels(plot.render("multitask", tree))) == 1
    with pytest.raises(ValueError, match="unknown figure kind"):
        plot.render("histogram", tree)
    with pytest.raises(ValueError, match="kernel result"):
        plot.render("kernel-eigenvectors", tree)
    with pytest.raises(ValueError, match="cannot select 'layer'"):
        plot.render("loss", tree, select={"layer": 1})
    with pytest.raises(ValueError, match="seed=1 is not in compare: seed takes 0"):
        plot.render("fidelity", tree, select={"seed": "1"})


@pytest.mark.parametrize("suffix, magic", [(".pdf", b"%PDF"), (".png", b"\x89PNG"),
                                           (".svg", b"<?xml")])
def test_save_figure_writes_each_format_atomically(tmp_path, suffix, magic):
    fig = plot.fidelity_curves(metrics())
    path = plot.save_figure(fig, tmp_path / "sub" / f"fig{suffix}")
    assert path.read_bytes().startswith(magic)
    assert [p.name for p in path.parent.iterdir()] == [f"fig{suffix}"]  # no temporary left


def test_save_figure_refuses_unknown_suffix_and_never_half_writes(tmp_path, monkeypatch):
    fig = plot.fidelity_curves(metrics())
    with pytest.raises(ValueError, match=r"pdf, \.png, \.svg"):
        plot.save_figure(fig, tmp_path / "fig.jpg")

    def broken(target, **kwargs):
        with open(target, "wb") as half:
            half.write(b"%PDF half")
        raise RuntimeError("disk full")

    monkeypatch.setattr(fig, "savefig", broken)
    with pytest.raises(RuntimeError):
        plot.save_figure(fig, tmp_path / "fig.pdf")
    assert list(tmp_path.iterdir()) == []


def test_importing_repkernel_does_not_import_matplotlib():
    code = "import sys, repkernel; assert 'matplotlib' not in sys.modules"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


# -- CLI --------------------------------------------------------------------------------------

runner = CliRunner()


def test_cli_plot_writes_a_figure(result_file, tmp_path):
    out = tmp_path / "loss.svg"
    result = runner.invoke(app, ["plot", str(result_file), "--kind", "loss", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert out.read_bytes().startswith(b"<?xml") and f"wrote {out}" in result.output


@needs_similarity
def test_cli_plot_rsm_at_chosen_times(result_file, tmp_path):
    out = tmp_path / "rsm.png"
    result = runner.invoke(app, ["plot", str(result_file), "--kind", "rsm", "--times", "0,30",
                                 "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert out.exists()


@pytest.mark.parametrize("args, message", [
    (["missing.nc", "--kind", "loss"], "no result file"),
    (["{result}", "--kind", "kernel-eigenvectors"], "kernel result"),
    (["{result}", "--kind", "fidelity"], "compares a forecast with an actual"),
    (["{result}", "--kind", "multitask"], "evaluate_multitask"),
    (["{result}", "--kind", "pie"], "unknown --kind"),
    (["{result}", "--kind", "rsm", "--times", "x"], "--times takes steps"),
    (["{result}", "--kind", "loss", "--select", "seed"], "--select takes dim=value"),
    (["{result}", "--kind", "loss", "--select", "seed=1"], "cannot select 'seed'"),
])
def test_cli_plot_errors_are_one_line(result_file, tmp_path, args, message):
    out = tmp_path / "fig.pdf"
    args = [a.replace("{result}", str(result_file)) for a in args]
    result = runner.invoke(app, ["plot", *args, "--out", str(out)])
    assert result.exit_code == 1
    assert message in result.stderr and result.stderr.count("\n") == 1
    assert "Traceback" not in result.output
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_cli_plot_refuses_bad_suffix_and_non_netcdf(result_file, tmp_path):
    result = runner.invoke(app, ["plot", str(result_file), "--kind", "loss", "--out",
                                 str(tmp_path / "fig.jpg")])
    assert result.exit_code == 1 and "must end in .pdf, .png, .svg" in result.stderr
    text = tmp_path / "notes.nc"
    text.write_text("not netCDF")
    result = runner.invoke(app, ["plot", str(text), "--kind", "loss", "--out",
                                 str(tmp_path / "fig.pdf")])
    assert result.exit_code == 1 and "not a readable netCDF" in result.stderr


def test_cli_info_shows_layout_provenance_and_config(result_file):
    result = runner.invoke(app, ["info", str(result_file)])
    assert result.exit_code == 0, result.output
    text = result.output
    assert "source actual" in text and "dtype float64" in text and "version" in text
    assert "dims time 4 · item 16 · unit 8" in text
    assert "hidden" in text and "(time, item, unit)" in text and "float64" in text
    assert "task" in text and "0, 1, 2, 3" in text
    assert "configuration" in text and "init_scale: 1.0" in text and "lr: 0.5" in text
    missing = runner.invoke(app, ["info", "nope.nc"])
    assert missing.exit_code == 1 and "no result file at nope.nc" in missing.stderr


def test_cli_info_on_a_study_tree(results, tmp_path):
    from repkernel.studies import save_tree

    actual, forecast = results
    path = save_tree(xr.DataTree.from_dict({"/": xr.Dataset(attrs={"study": "tiny"}),
                                            "/actual": actual, "/forecast": forecast}),
                     tmp_path / "combined.nc")
    result = runner.invoke(app, ["info", str(path)])
    assert result.exit_code == 0, result.output
    assert "groups: actual, forecast" in result.output and "group forecast" in result.output
    assert "readout" in result.output


def test_cli_help_lists_every_kind():
    result = runner.invoke(app, ["plot", "--help"])
    assert all(kind in result.output for kind in plot.KINDS)


def test_grouping_curves_draw_the_agreement_over_training():
    values = np.array([[0.1, 0.4, 0.8], [0.1, 0.2, 0.3]])
    kernel = xr.Dataset({"group_agreement": (("source", "time"), values)},
                        coords={"source": ["actual", "forecast"], "time": [0, 10, 20]})
    fig = plot.render("grouping", kernel)
    (ax,) = panels(fig)
    assert ax.get_ylabel() == "kernel vs hidden groups (ARI)\n(higher is better)"
    drawn = sorted(tuple(np.round(line.get_ydata(), 6)) for line in ax.get_lines()
                   if len(line.get_ydata()) == 3)
    assert drawn == sorted(tuple(v) for v in values)
    with pytest.raises(ValueError, match="group_agreement"):
        plot.grouping_curves(kernel.rename(group_agreement="other"))
