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
    assert loaded.congruent.dtype == bool
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
