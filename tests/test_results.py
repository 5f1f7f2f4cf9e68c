import os

import numpy as np
import pytest
import xarray as xr

import repkernel as rk


@pytest.fixture
def result():
    env = rk.MultitaskEnvironment(2, 2)
    net = rk.MultitaskNetwork(env, hidden=6)
    cur = rk.Curriculum.interleaved(env, 20, 10, 0.1)
    return rk.train(net, cur, env.patterns(k=(1, 2)), checkpoints=3)


def test_netcdf_round_trip_with_plain_xarray(result, tmp_path):
    path = rk.save(result, tmp_path / "r.nc")
    with xr.open_dataset(path) as back:
        xr.testing.assert_equal(back, result)
        assert back.attrs["config"] == result.attrs["config"]
    loaded = rk.load(path)
    single = loaded.k.values == 1  # congruency is defined for task sets only
    assert (loaded.congruent.values[single] == -1).all()
    assert set(loaded.congruent.values[~single]) <= {0, 1}
    grouped = loaded.hidden.groupby("task").mean()
    assert set(grouped.task.values) == {-1, 0, 1, 2, 3}


def test_save_is_atomic_and_leaves_no_temp_files(result, tmp_path, monkeypatch):
    path = tmp_path / "r.nc"
    rk.save(result, path)
    before = path.read_bytes()

    def broken(self, *args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(xr.Dataset, "to_netcdf", broken)
    with pytest.raises(RuntimeError):
        rk.save(result, path)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["r.nc"]


def test_checkpoint_steps():
    assert rk.checkpoint_steps(3, 10).tolist() == [0, 5, 10]
    assert rk.checkpoint_steps(101, 10).tolist() == list(range(11))
    assert rk.checkpoint_steps([5, 0, 5], 10).tolist() == [0, 5]
    assert np.array_equal(rk.checkpoint_steps(1, 7), [7])
    with pytest.raises(ValueError):
        rk.checkpoint_steps(0, 10)


def test_load_missing_file():
    with pytest.raises(FileNotFoundError, match="no result file"):
        rk.load("/nonexistent/r.nc")


def test_train_and_forecast_results_explain_every_variable_after_a_round_trip(result, tmp_path):
    env = rk.MultitaskEnvironment(2, 2)
    net = rk.MultitaskNetwork(env, hidden=6)
    forecast = rk.forecast(net, rk.Curriculum.interleaved(env, 20, 10, 0.1),
                           env.patterns(k=(1, 2)), checkpoints=3)
    for ds in (result, forecast):
        back = rk.load(rk.save(ds, tmp_path / "r.nc"))
        assert [name for name in back.variables if "long_name" not in back[name].attrs] == []
        assert back.time.attrs["units"] == "steps" and back.time.dtype == np.int64
        several = back.k.values > 1
        assert (back.task.values[several] == -1).all() and several.any()
        for label in ("task", "input_dim", "output_dim"):
            assert "-1 for items with several active tasks" in back[label].attrs["description"]
        assert "-1 for single tasks" in back.congruent.attrs["description"]
    assert "readout" in forecast.readout.attrs["long_name"]
