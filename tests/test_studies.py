import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import xarray as xr

from repkernel import studies
from repkernel.config import ConfigError

TINY = {
    "study": {"name": "tiny", "compute": ["train"]},
    "environment": {"input_dims": 2, "output_dims": 2, "features": 2},
    "network": {"hidden": 6},
    "curriculum": {"n": 12, "steps": 8, "lr": 0.1},
    "probes": {"source": "patterns", "k": [1]},
    "run": {"checkpoints": 3},
    "sweep": {"network.init_scale": [0.1, 1.0], "network.seed": [0, 1]},
}


def test_sweep_cells_are_the_cartesian_grid():
    study = studies.load_study(TINY)
    cells = study.cells()
    assert [c.name for c in cells] == ["init_scale=0.1,seed=0", "init_scale=0.1,seed=1",
                                       "init_scale=1.0,seed=0", "init_scale=1.0,seed=1"]
    assert cells[3].config["network"]["init_scale"] == 1.0
    assert cells[3].config["network"]["seed"] == 1


def test_study_problems_reported_at_once_with_location():
    raw = {**TINY, "sweep": {"network.init_scal": [1.0], "network.hidden": [10, -3]},
           "study": {"name": "x", "compute": ["train", "dance"]},
           "plots": {"colour": 1, "heatmaps_at": {"seed": [0, 1]}}}
    with pytest.raises(ConfigError) as info:
        studies.load_study(raw)
    text = str(info.value)
    for where in ("[sweep].network.init_scal", "[sweep].network.hidden[1]", "[study].compute",
                  "[plots].colour", "[plots].heatmaps_at"):
        assert where in text


def test_smoke_overrides_and_embedded_default():
    default = studies.load_study()
    smoke = studies.load_study(smoke=True)
    assert default.name == "default" and len(default.cells()) == 2
    assert smoke.config["network"]["hidden"] < default.config["network"]["hidden"]
    # the main job's figures are png only (about 6 s of its 30); other studies: png and pdf
    assert default.config["plots"]["formats"] == ["png"]
    assert studies.load_study(TINY).config["plots"]["formats"] == ["png", "pdf"]
    with pytest.raises(ConfigError, match=r"\[plots\]\.formats"):
        studies.load_study({**TINY, "plots": {"formats": ["jpeg"]}})


@pytest.mark.parametrize("path", sorted(Path(__file__).parents[1].glob("studies/*.toml")),
                         ids=lambda p: p.stem)
def test_every_study_file_validates(path):
    study = studies.load_study(path, smoke=True)
    assert study.config["study"]["claim"], "each study states the claim it tests"


def test_run_combine_and_resume(tmp_path):
    study = studies.load_study(TINY)
    combined = studies.run_study(study, tmp_path)
    hidden = combined["actual"]["hidden"]
    assert hidden.sizes["init_scale"] == 2 and hidden.sizes["seed"] == 2
    assert hidden.sizes["time"] == 3
    files = sorted((tmp_path / "cells").glob("*.nc"))
    assert len(files) == 4
    stamps = {f: f.stat().st_mtime_ns for f in files}
    studies.run_study(study, tmp_path)  # everything finished: nothing is recomputed
    assert {f: f.stat().st_mtime_ns for f in files} == stamps
    with xr.open_datatree(tmp_path / "combined.nc") as back:
        assert back["actual"]["hidden"].sizes == hidden.sizes
    # new figures or texts reuse the cells; a changed computation refuses to mix results
    relabelled = studies.load_study({**TINY, "plots": {"kinds": ["loss"]},
                                     "study": {**TINY["study"], "claim": "another claim"}})
    studies.run_study(relabelled, tmp_path)
    assert {f: f.stat().st_mtime_ns for f in files} == stamps
    changed = studies.load_study(TINY, overrides={"curriculum.lr": 0.5})
    with pytest.raises(ValueError, match=r"different configuration \(\[curriculum\]\.lr\)"):
        studies.run_study(changed, tmp_path)


def test_compare_metrics_chosen_by_the_study_and_older_cells_reused(tmp_path):
    raw = {**TINY, "study": {"name": "tiny", "compute": ["compare"]},
           "compare": {"metrics": ["cka", "svcca"]}, "sweep": {"network.seed": [0]}}
    study = studies.load_study(raw)
    combined = studies.run_study(study, tmp_path)
    assert set(combined["compare"].data_vars) == {
        f"{variable}_{suffix}" for variable in ("hidden", "output")
        for suffix in ("cka_similarity", "svcca_similarity")}
    # a cell file written before [compare] existed ran the default metrics, and one whose
    # [network] listed every kind's keys but not the newer options ran their defaults: reused
    path = studies.cell_path(tmp_path, study.cells()[0])
    tree = studies.load_tree(path)
    stored = json.loads(tree.attrs["config"])
    del stored["compare"]
    del stored["network"]["task_weight_scale"], stored["network"]["output_activation"]
    stored["network"]["sizes"] = [1, 100, 1]
    tree.attrs["config"] = json.dumps(stored)
    studies.save_tree(tree, path)
    default = studies.load_study({**raw, "compare": {}})
    stamp = path.stat().st_mtime_ns
    studies.run_study(default, tmp_path)
    assert path.stat().st_mtime_ns == stamp
    with pytest.raises(ValueError, match=r"different configuration \(\[compare\].metrics\)"):
        studies.run_study(study, tmp_path)  # but not for other metrics
    with pytest.raises(ConfigError, match=r"\[compare\].metrics: must be a list drawn from "
                       r"\['change_alignment'"):
        studies.load_study({**raw, "compare": {"metrics": ["nope"]}})


def test_a_study_computes_the_kernels_the_kernel_command_offers(tmp_path):
    from repkernel import kernels

    raw = {**TINY, "study": {"name": "tiny", "compute": ["kernel"]},
           "kernel": {"what": "pseudo"}, "sweep": {"network.seed": [0, 1]}}
    study = studies.load_study(raw)
    combined = studies.run_study(study, tmp_path)
    for cell in study.cells():
        setup = studies.build_cell(cell)
        expected = kernels.pseudo_kernel(setup.network, setup.probes,
                                         setup.curriculum.stages[0].patterns)
        got = combined["kernel"]["pseudo_kernel"].sel(seed=cell.coords["seed"])
        xr.testing.assert_allclose(got.drop_vars("seed").reset_coords(drop=True),
                                   expected.reset_coords(drop=True))
    with pytest.raises(ConfigError, match=r"\[kernel\].what: must be one of"):
        studies.load_study({**raw, "kernel": {"what": "nope"}})


def test_killed_sweep_resumes_without_recomputing(tmp_path):
    """SIGKILL a sweep after its first cell is written; the re-run completes the rest only."""
    raw = {**TINY, "curriculum": {"n": 12, "steps": 4000, "lr": 0.1},
           "sweep": {"network.seed": [0, 1, 2]}}
    script = ("import sys, json; from repkernel import studies; "
              "studies.run_study(studies.load_study(json.loads(sys.argv[1])), sys.argv[2])")
    proc = subprocess.Popen([sys.executable, "-c", script, json.dumps(raw), str(tmp_path)])
    cells = tmp_path / "cells"
    deadline = time.time() + 120
    while time.time() < deadline and not (cells.exists() and list(cells.glob("*.nc"))):
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    first = {f.name: f.stat().st_mtime_ns for f in cells.glob("*.nc")}
    assert 1 <= len(first) < 3, "the kill should land mid-sweep"
    combined = studies.run_study(studies.load_study(raw), tmp_path)
    after = {f.name: f.stat().st_mtime_ns for f in cells.glob("*.nc")}
    assert len(after) == 3
    assert all(after[name] == stamp for name, stamp in first.items()), "no cell computed twice"
    assert not list(cells.glob("*.tmp-*")), "no half-written files left"
    assert combined["actual"]["hidden"].sizes["seed"] == 3


def test_dask_local_cluster_matches_serial(tmp_path):
    study = studies.load_study({**TINY, "sweep": {"network.seed": [0, 1]}})
    serial = studies.run_study(study, tmp_path / "serial")
    parallel = studies.run_study(study, tmp_path / "dask", workers=2)
    for group in serial.children:
        xr.testing.assert_identical(serial[group].to_dataset(), parallel[group].to_dataset())


STUDY_FILES = sorted(Path(__file__).parents[1].glob("studies/*.toml"))


@pytest.mark.parametrize("path", [None, *STUDY_FILES], ids=lambda p: "default" if p is None
                         else p.stem)
def test_every_study_runs_at_smoke_size_with_figures(path, tmp_path):
    study = studies.load_study(path, smoke=True)
    combined = studies.run_study(study, tmp_path)
    assert "actual" in combined.children or "kernel" in combined.children
    if "multitask" in combined.children:  # scores of both sources, labelled
        sources = combined["multitask"].to_dataset()["source"].values.tolist()
        assert sources == ["actual", "forecast"][:len(sources)] and sources
    if "classification" in combined.children:  # test accuracy of trained and forecast nets
        accuracy = combined["classification"].to_dataset()["accuracy"]
        assert accuracy["source"].values.tolist() == ["actual", "forecast"]
        assert ((accuracy >= 0) & (accuracy <= 1)).all()
    if "compare_means" in combined.children:  # per-label means (classes): alike at step 0
        rsa = combined["compare_means"].to_dataset()["hidden_rsa"]
        assert float(abs(rsa.isel(time=0) - 1).max()) < 1e-9
    if "segment_start" in combined.children.get("forecast", {}):  # padding stays readable
        assert (combined["forecast"]["segment_start"] >= -1).all()
    for group in combined.children:  # every cell on one checkpoint grid: nothing NaN-padded
        data = combined[group].to_dataset()
        assert {studies._dim(key) for key in study.sweep} <= set(data.dims)
        if "loss" in data:
            assert not data["loss"].isnull().any()
    figures = studies.render_figures(study, combined, tmp_path / "figures", formats=("png",))
    assert len(figures) == len(study.config["plots"]["kinds"])
    assert all(f.stat().st_size > 0 for f in figures)


TINY_TOML = """
[study]
name = "tiny"
compute = ["train"]
[environment]
input_dims = 2
output_dims = 2
features = 2
[network]
hidden = 6
[curriculum]
n = 12
steps = 8
lr = 0.1
[probes]
source = "patterns"
k = [1]
[run]
checkpoints = 3
[sweep]
"network.init_scale" = [0.1, 1.0]
"network.seed" = [0, 1]
"""


def test_cli_run_with_set_overrides_and_a_changed_configuration(tmp_path):
    study, out = tmp_path / "tiny.toml", tmp_path / "out"
    study.write_text(TINY_TOML)

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "repkernel_cli", "run", str(study),
                               "--out", str(out), "--no-figures", *args],
                              capture_output=True, text=True, timeout=300)

    done = cli("--set", "curriculum.lr=0.5", "--set", "sweep.network.seed=[1]")
    assert done.returncode == 0, done.stderr
    cells = sorted(p.name for p in (out / "cells").glob("*.nc"))
    assert cells == ["init_scale=0.1,seed=1.nc", "init_scale=1.0,seed=1.nc"]
    with xr.open_datatree(out / "cells" / cells[0]) as tree:
        assert json.loads(tree.attrs["config"])["curriculum"]["lr"] == 0.5
    again = cli("--set", "sweep.network.seed=[1]")  # lr back to 0.1: not the stored cells
    assert again.returncode == 1 and "Traceback" not in again.stderr
    assert "different configuration ([curriculum].lr)" in again.stderr
    assert again.stderr.strip().count("\n") == 0
    bad = cli("--set", "lr0.5")
    assert bad.returncode == 1 and "--set takes section.key=value" in bad.stderr
