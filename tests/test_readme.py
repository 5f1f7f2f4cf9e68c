"""The README's "Bring your own model" example runs as written (so it cannot rot)."""

import contextlib
import io
import re
from pathlib import Path

import numpy as np

README = Path(__file__).parents[1] / "README.md"


def _example(heading: str) -> str:
    text = README.read_text()
    section = text.split(f"## {heading}\n", 1)[1].split("\n## ", 1)[0]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_bring_your_own_model_example_runs_and_forecasts_well():
    code = _example("Bring your own model")
    assert len(code.strip().splitlines()) <= 16, "about fifteen lines, as the README promises"
    namespace: dict = {}
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(compile(code, str(README), "exec"), namespace)  # our own README
    fidelity, actual = namespace["fidelity"], namespace["actual"]
    change = fidelity.hidden_change_correlation.sel(readout="network").values[-1]
    assert float(printed.getvalue()) == change
    assert change > 0.9  # the re-linearized forecast follows the trained network's hidden change
    assert float(actual.loss[-1]) < 0.5 * float(actual.loss[0])
    np.testing.assert_array_equal(actual["class"].values, namespace["y"][50:])
