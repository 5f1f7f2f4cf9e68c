"""Bad input to the library, as a new user meets it (issue 14): each case raises one clear line
naming the argument and the fix, never a raw torch/xarray error or a silently wrong result."""

import numpy as np
import pytest
import torch

import repkernel as rk


@pytest.fixture(scope="module")
def run():
    torch.set_default_dtype(torch.float64)
    env = rk.MultitaskEnvironment(3, 3)
    net = rk.MultitaskNetwork(env, hidden=12, init_scale=0.1)
    curriculum = rk.Curriculum.interleaved(env, 30, 6, 0.05, reduction="sum")
    probes = env.patterns(k=1, stimuli=3)
    other = rk.MultitaskEnvironment(4, 3).patterns(k=1, stimuli=2)  # 12 inputs, not 9
    return env, net, curriculum, probes, other


def diverging(run):
    env, _, _, probes, _ = run
    big = rk.MultitaskNetwork(env, hidden=12, init_scale=1.0)
    return rk.train(big, rk.Curriculum.interleaved(env, 30, 40, 1e6, reduction="sum"), probes,
                    checkpoints=5)


CASES = {
    "hidden not whole": (lambda r: rk.MultitaskNetwork(r[0], hidden=2.5),
                         ValueError, "hidden must be a whole number of units"),
    "init_scale inf": (lambda r: rk.MultitaskNetwork(r[0], init_scale=float("inf")),
                       ValueError, "init_scale must be a positive finite number"),
    "init_scale nan (MLP)": (lambda r: rk.MLP([2, 3, 1], init_scale=float("nan")),
                             ValueError, "init_scale must be a positive finite number"),
    "MLP size not whole": (lambda r: rk.MLP([2, 3.5, 1]), ValueError, r"sizes\[1\] must be"),
    "lr inf": (lambda r: rk.Curriculum.interleaved(r[0], 30, 6, float("inf")),
               ValueError, "lr must be a positive finite number"),
    "dtype as a string": (lambda r: rk.train(r[1], r[2], r[3], dtype="float32"),
                          ValueError, "dtype must be a torch floating dtype.*torch.float64"),
    "checkpoints not whole": (lambda r: rk.train(r[1], r[2], r[3], checkpoints=2.5),
                              ValueError, "checkpoints must be a whole number"),
    "device absent": (lambda r: rk.train(r[1], r[2], r[3], device="cuda:7"),
                      ValueError, "device 'cuda:7' (is not available|does not exist)"),
    "device malformed": (lambda r: rk.train(r[1], r[2], r[3], device="gpu0"),
                         ValueError, "device 'gpu0' is not a device name"),
    "probes of the wrong width": (lambda r: rk.train(r[1], r[2], r[4]),
                                  ValueError, "probes do not fit the network"),
    "targets of the wrong width": (
        lambda r: rk.train(r[1], r[2], rk.PatternSet(x=r[3].x, c=r[3].c, y=r[3].y[:, :2])),
        ValueError, "probes have 2 target units but the network 9 outputs"),
    "task_similarity of a Dataset": (
        lambda r: rk.task_similarity(rk.train(r[1], r[2], r[3], checkpoints=2)),
        ValueError, "pass result.hidden"),
    "diverging rate": (diverging, rk.DivergenceError,
                       "loss rose from .* lower it below the stability bound"),
}


@pytest.mark.parametrize("case", CASES)
def test_bad_library_input_gives_one_clear_line(run, case):
    call, error, message = CASES[case]
    with pytest.raises(error, match=message) as raised:
        call(run)
    assert "\n" not in str(raised.value)


def test_loading_a_file_that_is_not_netcdf_names_the_fix(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("not a result")
    with pytest.raises(ValueError, match=r"not a netCDF file xarray can read.*repkernel\.save"):
        rk.load(path)


def test_a_stable_rate_trains_without_a_divergence_error(run):
    _, net, curriculum, probes, _ = run
    assert np.isfinite(rk.train(net, curriculum, probes, checkpoints=3).loss).all()
