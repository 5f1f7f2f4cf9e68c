"""Crash safety of result files and studies (issue 14): temporaries a killed write leaves are
removed by the next run, truncated cells are computed again, a refused run changes nothing,
result files are readable by others."""

import os
import subprocess
import sys

import pytest
import xarray as xr

from repkernel import results, studies

TINY = {
    "study": {"name": "tiny", "compute": ["train"]},
    "environment": {"input_dims": 2, "output_dims": 2, "features": 2},
    "network": {"hidden": 6},
    "curriculum": {"n": 12, "steps": 6, "lr": 0.1},
    "probes": {"source": "patterns", "k": [1]},
    "run": {"checkpoints": 3},
    "sweep": {"network.init_scale": [0.1, 1.0]},
}


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_temporaries_of_dead_writers_are_removed_by_the_next_run(tmp_path):
    dead, alive = dead_pid(), os.getpid()
    (tmp_path / "cells").mkdir()
    stale = [tmp_path / f"combined.nc.tmp-{dead}", tmp_path / "cells" / f"x.nc.tmp-{dead}"]
    live = tmp_path / "cells" / f"y.nc.tmp-{alive}"  # another writer still at work
    for path in [*stale, live]:
        path.write_bytes(b"half a file")
    studies.run_study(studies.load_study(TINY), tmp_path)
    assert not any(p.exists() for p in stale) and live.exists()
    # a single result file: the next write of the same name removes its dead temporary
    leftover = tmp_path / f"result.nc.tmp-{dead}"
    leftover.write_bytes(b"half")
    results.write_atomic(tmp_path / "result.nc", lambda tmp: open(tmp, "w").write("done"))
    assert not leftover.exists() and (tmp_path / "result.nc").read_text() == "done"


def test_a_truncated_cell_is_computed_again(tmp_path):
    study = studies.load_study(TINY)
    first = studies.run_study(study, tmp_path)
    path = studies.cell_path(tmp_path, study.cells()[0])
    path.write_bytes(path.read_bytes()[:3000])  # killed mid-copy, e.g. by a full disk
    again = studies.run_study(study, tmp_path)
    xr.testing.assert_identical(first["actual"].to_dataset(), again["actual"].to_dataset())
    with xr.open_datatree(path) as tree:
        assert "actual" in tree.children


def test_a_refused_run_leaves_study_json_and_cells_untouched(tmp_path):
    studies.run_study(studies.load_study(TINY), tmp_path)
    files = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    changed = studies.load_study(TINY, overrides={"curriculum.lr": 0.5})
    with pytest.raises(ValueError, match="different configuration"):
        studies.run_study(changed, tmp_path)
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == files


def test_result_files_are_readable_by_others_whatever_the_umask(tmp_path):
    old = os.umask(0o077)
    try:
        studies.run_study(studies.load_study(TINY), tmp_path)
    finally:
        os.umask(old)
    written = [tmp_path / "study.json", tmp_path / "combined.nc",
               *(tmp_path / "cells").glob("*.nc")]
    assert {oct(p.stat().st_mode & 0o777) for p in written} == {"0o644"}
