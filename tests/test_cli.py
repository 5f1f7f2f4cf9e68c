"""The CLI end to end, as a user runs it (subprocess: the installed console script)."""

import subprocess
import sys

import xarray as xr

CLI = [sys.executable, "-m", "repkernel_cli"]


def run(*args, cwd=None):
    return subprocess.run([*CLI, *args], capture_output=True, text=True, cwd=cwd, timeout=300)


def test_version_and_help():
    out = run("--version")
    assert out.returncode == 0 and out.stdout.startswith("repkernel ")
    assert "train" in run("--help").stdout


def test_train_published_phase_one_and_group_by_task(tmp_path):
    path = tmp_path / "phase1.nc"
    out = run("train", "--steps", "200", "--checkpoints", "5", "--out", str(path))
    assert out.returncode == 0, out.stderr
    with xr.open_dataset(path) as ds:
        by_task = ds.hidden.groupby("task").mean()
        assert by_task.sizes == {"time": 5, "task": 12, "unit": 200}
        assert ds.loss.values[-1] < ds.loss.values[0]


def test_bad_config_is_one_line_without_traceback(tmp_path):
    config = tmp_path / "bad.toml"
    config.write_text("[network]\nhiddn = 3\n[curriculum]\nlr = -1\n")
    out = run("train", "--config", str(config), "--out", str(tmp_path / "x.nc"))
    assert out.returncode != 0
    assert "Traceback" not in out.stderr
    assert out.stderr.strip().count("\n") == 0 and "[network].hiddn" in out.stderr
    assert not (tmp_path / "x.nc").exists()
    missing = run("train", "--config", str(tmp_path / "nope.toml"))
    assert missing.returncode != 0 and "no configuration file" in missing.stderr
