"""Issue 13: curricula in epochs, studies across batch sizes and widths (epoch time axis,
dimensionality group, cpu_seconds), ranking designs by forecast, the dimensionality figure."""

import json

import numpy as np
import pytest
import scipy.stats
import xarray as xr

import repkernel as rk
from repkernel import config, plot, studies
from repkernel.config import ConfigError
from repkernel.designs import rank_designs

ENVIRONMENT = rk.MultitaskEnvironment(n_input_dims=2, n_features=2, n_output_dims=2)


def test_a_curriculum_in_epochs_passes_over_its_patterns_equally_often():
    full = rk.Curriculum.interleaved(ENVIRONMENT, 12, 1, 0.1)
    for batch, per_epoch in (("full", 1), (5, 2), ("online", 12)):
        stage = rk.Stage(full.stages[0].patterns, 1, 0.1, batch=batch)
        curriculum = rk.Curriculum((stage, stage)).in_epochs([3, 2])
        assert [s.steps for s in curriculum.stages] == [3 * per_epoch, 2 * per_epoch]
        steps = np.array([0, per_epoch, 3 * per_epoch, 4 * per_epoch, 5 * per_epoch])
        np.testing.assert_allclose(curriculum.epochs_at(steps), [0, 1, 3, 4, 5])


@pytest.mark.parametrize("epochs", [-1, [1, 2], 1.5])
def test_bad_epochs_are_one_line(epochs):
    curriculum = rk.Curriculum.interleaved(ENVIRONMENT, 12, 1, 0.1)
    with pytest.raises(ValueError, match="epochs must be") as error:
        curriculum.in_epochs(epochs)
    assert "\n" not in str(error.value)


def test_the_configuration_key_epochs_replaces_steps():
    raw = {"environment": {"input_dims": 2, "output_dims": 2, "features": 2},
           "network": {"hidden": 4},
           "curriculum": {"n": 12, "batch": 4, "epochs": 5, "steps": 999}}
    assert config.build(raw).curriculum.total_steps == 15
    with pytest.raises(ConfigError, match=r"\[curriculum\]\.epochs"):
        config.build({**raw, "curriculum": {**raw["curriculum"], "epochs": -2}})


BATCHES = {
    "study": {"name": "batches", "compute": ["train", "forecast", "dimensionality"]},
    "environment": {"input_dims": 2, "output_dims": 2, "features": 2},
    "network": {"hidden": 6, "init_scale": 1.0},
    "curriculum": {"n": 8, "epochs": 4, "lr": 0.1},
    "probes": {"source": "patterns", "k": [1]},
    "run": {"checkpoints": 3},
    "sweep": {"curriculum.batch": ["full", 4, "online"], "network.hidden": [6, 9]},
}


@pytest.fixture(scope="module")
def batches(tmp_path_factory):
    out = tmp_path_factory.mktemp("batches")
    return studies.run_study(studies.load_study(BATCHES), out)


def test_cells_of_different_batch_sizes_and_widths_share_an_epoch_axis(batches):
    actual = batches["actual"].to_dataset()
    assert actual["time"].values.tolist() == [0, 2, 4]  # epochs, in every cell
    assert actual["batch"].values.tolist() == ["4", "full", "online"]  # mixed types as text
    assert "network_hidden" in actual.dims  # named apart from the hidden variable
    assert actual["probe_loss"].dims == ("batch", "network_hidden", "time")  # not broadcast
    assert not actual["probe_loss"].isnull().any()
    assert actual["parameter_group"].dims[-1] == "parameter"  # widths differ: per cell


def test_the_dimensionality_group_is_the_participation_ratio_of_each_source(batches):
    dims = batches["dimensionality"].to_dataset()
    assert dims["source"].values.tolist() == ["actual", "forecast"]
    hidden = batches["actual"].to_dataset()["hidden"].sel(batch="online", network_hidden=6)
    expected = rk.participation_ratio(hidden.dropna("unit", how="all"))["participation_ratio"]
    got = dims["participation_ratio"].sel(batch="online", network_hidden=6, source="actual",
                                          readout="network")  # actual: copied along readout
    np.testing.assert_allclose(got.squeeze(drop=True), expected)


def test_cells_record_cpu_seconds(batches):
    seconds = json.loads(batches.attrs["cpu_seconds"])
    assert len(seconds) == 6
    assert all(cell["train"] > 0 and cell["forecast"] > 0 for cell in seconds.values())


def test_the_dimensionality_figure_draws_a_study_and_plain_results(batches):
    figure = plot.render("dimensionality", batches, select={"network_hidden": 6})
    assert figure.axes and figure.axes[0].get_ylabel().startswith("participation ratio")
    actual = batches["actual"].to_dataset().sel(batch="full", network_hidden=6)
    forecast = batches["forecast"].to_dataset().sel(batch="full", network_hidden=6)
    figure = plot.render("dimensionality", {"actual": actual, "forecast": forecast})
    assert len(figure.axes[0].lines) >= 2
    with pytest.raises(ValueError, match="needs a study with compute"):
        plot.render("dimensionality", {"scores": xr.Dataset({"x": ("time", [1.0])})})


def sweep_result(forecast_loss, actual_loss, forecast_accuracy, actual_accuracy,
                 cpu=None) -> xr.DataTree:
    """A combined study result over designs (width x activation) and two seeds."""
    design = {"width": [10, 20], "activation": ["relu", "tanh", "sigmoid"]}
    shape = (2, 3, 2)

    def per_cell(values):  # (width, activation) -> + seed, seeds scattered around the value
        values = np.asarray(values, dtype=float).reshape(2, 3)
        return np.stack([values - 0.01, values + 0.01], axis=-1)

    coords = {**design, "seed": [0, 1], "time": [0, 5], "readout": ["linear", "network"]}
    actual = xr.Dataset({"probe_loss": (("width", "activation", "seed", "time"), np.stack(
        [np.ones(shape), per_cell(actual_loss)], -1))}, coords={k: coords[k] for k in (
            "width", "activation", "seed", "time")})
    network = per_cell(forecast_loss)
    forecast = xr.Dataset({"probe_loss": (("width", "activation", "seed", "time", "readout"),
                                          np.stack([np.stack([np.ones(shape)] * 2, -1), np.stack(
                                              [np.full(shape, 9.0), network], -1)], -2))},
                          coords={k: coords[k] for k in coords})
    accuracy = np.stack([per_cell(forecast_accuracy), per_cell(actual_accuracy)])
    accuracy = np.stack([np.zeros_like(accuracy), accuracy], -1)[..., None] * np.array([1, 1])
    multitask = xr.Dataset({"accuracy_by_k": (("source", "width", "activation", "seed", "time",
                                               "k"), accuracy)},
                           coords={"source": ["forecast", "actual"], "k": [1, 2],
                                   **{k: coords[k] for k in ("width", "activation", "seed",
                                                             "time")}})
    attrs = {} if cpu is None else {"cpu_seconds": json.dumps(cpu)}
    return xr.DataTree.from_dict({"/": xr.Dataset(attrs=attrs), "/actual": actual,
                                  "/forecast": forecast, "/multitask": multitask})


def test_rank_designs_against_scipy_and_by_hand():
    actual_loss = [0.1, 0.5, 0.3, 0.2, 0.6, 0.4]
    forecast_loss = [0.2, 0.4, 0.35, 0.1, 0.7, 0.5]  # best design differs from the actual's
    accuracy = [0.9, 0.5, 0.6, 0.8, 0.4, 0.7]
    cpu = {"a": {"train": 3.0, "forecast": 1.0}, "b": {"train": 1.0, "forecast": 0.0}}
    out = rank_designs(sweep_result(forecast_loss, actual_loss, accuracy, accuracy, cpu))
    assert out.sizes["design"] == 6
    assert out["design"].values[0] == "width=10,activation=relu"
    np.testing.assert_allclose(out["score"].sel(measure="probe_loss", source="actual"),
                               actual_loss)
    np.testing.assert_allclose(out["spearman"].sel(measure="probe_loss"),
                               scipy.stats.spearmanr(forecast_loss, actual_loss).statistic)
    assert not out["top1_agreement"].sel(measure="probe_loss")
    assert out["forecast_top_actual_rank"].sel(measure="probe_loss") == 2  # 0.2: second best
    assert out["rank"].sel(measure="accuracy", source="actual").values.tolist() == [
        1, 5, 4, 2, 6, 3]  # higher accuracy ranks first
    assert out["spearman"].sel(measure="accuracy") == pytest.approx(1.0)
    assert out["top1_agreement"].sel(measure="accuracy")
    assert out.attrs["cost_ratio"] == pytest.approx(0.25)


def test_rank_designs_bad_input_is_one_line():
    result = sweep_result(*[[0.1, 0.2, 0.3, 0.4, 0.5, 0.6]] * 4)
    cases = [
        (dict(result=result["actual"].to_dataset()), "needs a study result"),
        (dict(result={"actual": result["actual"].to_dataset()}), "no 'forecast' group"),
        (dict(result=result, measures=["speed"]), "unknown measure 'speed'"),
        (dict(result={k: result[k].to_dataset() for k in ("actual", "forecast")}),
         "needs the study's multitask group"),
        (dict(result=result.sel(width=10, activation="relu")), "at least two designs"),
    ]
    for arguments, message in cases:
        with pytest.raises(ValueError, match=message) as error:
            rank_designs(**arguments)
        assert "\n" not in str(error.value)
