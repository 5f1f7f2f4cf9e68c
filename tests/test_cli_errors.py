"""The CLI's error boundary (issue 14's catalogue of bad inputs): every case gives one line on
stderr, a non-zero exit, no traceback, and writes nothing. In process (typer's runner): fast."""

import socket

import pytest
import torch
from repkernel_cli import (  # noqa: F401  (commands register on import)
    compare_command,
    evaluate_command,
    forecast_command,
    kernel_command,
    run_command,
    train_command,
)
from repkernel_cli.app import app
from typer.testing import CliRunner

import repkernel as rk

TINY_RUN = """
[environment]
input_dims = 2
features = 2
output_dims = 2
[network]
hidden = 6
[curriculum]
n = 12
steps = 6
lr = 0.1
[probes]
source = "patterns"
k = [1]
[run]
checkpoints = 3
"""

TINY_STUDY = """
[study]
name = "tiny"
compute = ["train"]
""" + TINY_RUN + """
[sweep]
"network.init_scale" = [0.1, 1.0]
"""

STEP_FUNCTION_STUDY = """
[study]
name = "steps"
compute = ["train", "evaluate"]
[environment]
kind = "step_function"
[network]
kind = "mlp"
sizes = [1, 8, 1]
[curriculum]
preset = "dataset"
steps = 4
lr = 0.1
[probes]
source = "train"
"""


def cli(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def refused(result, *phrases):
    """One line on stderr naming the problem, exit code 1, no traceback."""
    assert result.exit_code == 1, (result.exit_code, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr + result.stdout
    assert result.stderr.strip().count("\n") == 0, result.stderr
    for phrase in phrases:
        assert phrase in result.stderr, result.stderr


def written(folder, before):
    return sorted({p.name for p in folder.rglob("*")} - before)


@pytest.fixture
def tiny(tmp_path):
    (tmp_path / "run.toml").write_text(TINY_RUN)
    (tmp_path / "study.toml").write_text(TINY_STUDY)
    (tmp_path / "steps.toml").write_text(STEP_FUNCTION_STUDY)
    env = rk.MultitaskEnvironment(2, 2, 2)
    net = rk.MultitaskNetwork(env, hidden=6, init_scale=0.1)
    result = rk.train(net, rk.Curriculum.interleaved(env, 12, 4, 0.1), env.patterns(k=1),
                      checkpoints=3)
    rk.save(result, tmp_path / "a.nc")
    (tmp_path / "folder").mkdir()
    (tmp_path / "plain").write_text("a file, not a folder")
    return tmp_path


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")
CASES = {
    "train --device cuda": (("train", "-c", "run.toml", "--device", "cuda", "--out", "x.nc"),
                            ("device 'cuda' is not available",), CUDA),
    "run --device cuda": (("run", "study.toml", "--device", "cuda", "--out", "res"),
                          ("device 'cuda' is not available",), CUDA),
    "train --out a folder": (("train", "-c", "run.toml", "--out", "folder"),
                             ("folder is a folder: give a file name",), None),
    "compare --out a folder": (("compare", "a.nc", "a.nc", "--out", "folder"),
                               ("folder is a folder: give a file name",), None),
    "forecast --out under a file": (("forecast", "-c", "run.toml", "--out", "plain/x.nc"),
                                    ("plain is a file, not a folder",), None),
    "run --out a file": (("run", "study.toml", "--out", "plain"),
                         ("plain is a file: give a folder",), None),
    "unreachable --scheduler": (("run", "study.toml", "--out", "res", "--scheduler",
                                 f"tcp://127.0.0.1:{_closed_port()}"),
                                ("no Dask scheduler answered", "drop --scheduler"), None),
    "--set on a swept key": (("run", "study.toml", "--out", "res", "--set",
                              "network.init_scale=2"),
                             ("[sweep].network.init_scale: swept",
                              "--set 'sweep.network.init_scale=[2]'"), None),
    "evaluate without multitask": (("run", "steps.toml", "--out", "res"),
                                   ("[study].compute: 'evaluate' scores multitasking",), None),
    "--init-scale inf": (("train", "-c", "run.toml", "--init-scale", "inf", "--out", "x.nc"),
                         ("init_scale must be a positive finite number",), None),
    "bad k_probs": (("train", "-c", "run.toml", "--preset", "single_then_concurrent",
                     "--out", "x.nc"), ("[curriculum].k_probs:",), None),
    "batch > n": (("run", "study.toml", "--out", "res", "--set", "curriculum.batch=50"),
                  ("[curriculum].batch:",), None),
    "tasks = [99]": (("run", "study.toml", "--out", "res", "--set", "environment.tasks=[99]"),
                     ("[environment].tasks: task index 99",), None),
    "checkpoint steps out of range": (("run", "study.toml", "--out", "res", "--set",
                                       "run.checkpoints=[0, 99]"),
                                      ("[run].checkpoints: checkpoint steps must lie in",), None),
    "k > dims": (("run", "study.toml", "--out", "res", "--set", "probes.k=[5]"),
                 ("[probes].k:", "use k <= 2"), None),
}


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_is_one_line_and_writes_nothing(name, tiny, monkeypatch):
    args, phrases, mark = CASES[name]
    if mark is not None and torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    monkeypatch.chdir(tiny)
    before = {p.name for p in tiny.rglob("*")}
    refused(cli(*args), *phrases)
    assert written(tiny, before) == []


def test_threads_flag_is_refused_below_one_and_reaches_the_library(tiny, monkeypatch):
    monkeypatch.chdir(tiny)
    assert cli("train", "-c", "run.toml", "--threads", "0", "--out", "x.nc").exit_code == 2
    seen = []
    train = rk.training._train

    def recording(*args, **kwargs):
        seen.append(torch.get_num_threads())
        return train(*args, **kwargs)

    monkeypatch.setattr(rk.training, "_train", recording)
    before = torch.get_num_threads()
    for count in (2, 1):
        done = cli("train", "-c", "run.toml", "--threads", count, "--out", "x.nc")
        assert done.exit_code == 0, done.stderr
    assert seen == [2, 1] and torch.get_num_threads() == before
