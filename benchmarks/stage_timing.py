"""Stage-like learning in the deep linear network (REFERENCE.md B): when does each mode arrive?

The 4 -> 3 -> 5 deep linear network (init 0.1, 250 whitened inputs, target singular values
90, 24, 7, 1, full-batch gradient descent at lr 0.2 on DESIGN.md's loss: 1/2 sum over outputs,
mean over patterns) learns its modes one after another. The strength of mode i at step t is the
projection a_i^T (W2 W1)^T b_i of the network's map on the target's singular vectors (a_i, b_i).
For each mode the trained network reaches, this prints the step at which the trained network,
the frozen forecast (R = 1), equal re-linearization (R = 16, 64) and auto at several tolerances
reach half of the trained network's final strength (linear interpolation between checkpoints
every 2 steps), and the Jacobian evaluations each forecast used. The trained network is the
reference; with repkernel's loss the 90 mode arrives near step 90 and the 24 mode near 280
(PyTorch's MSELoss, averaged over the 5 outputs too, runs the clock 2.5x slower: 190 and 770,
the steps marked in the published figure).

    python benchmarks/stage_timing.py [--out reports/stage_timing]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
import xarray as xr

import repkernel as rk

SINGULAR_VALUES = (90.0, 24.0, 7.0, 1.0)
FORECASTS = [("frozen", 1), ("R=16", 16), ("R=64", 64), ("auto 0.5", "auto 0.5"),
             ("auto 0.3", "auto 0.3"),
             ("auto 0.1", "auto 0.1")]


def mode_strengths(weights: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a_i^T (W2 W1)^T b_i per checkpoint and mode from flat weights (T, 12 + 15): (T, modes)."""
    w1 = weights[:, :12].reshape(-1, 3, 4)
    w2 = weights[:, 12:].reshape(-1, 5, 3)
    product = np.einsum("tij,tjk->tki", w2, w1)  # (T, 4, 5): the map x -> x (W2 W1)^T
    return np.einsum("di,tde,ei->ti", a, product, b)


def half_time(steps: np.ndarray, strength: np.ndarray, level: float) -> float:
    """First step (interpolated) at which ``strength`` reaches ``level``."""
    above = np.nonzero(strength >= level)[0]
    if not len(above):
        return np.nan
    j = above[0]
    if j == 0:
        return float(steps[0])
    s0, s1 = strength[j - 1], strength[j]
    return float(steps[j - 1] + (level - s0) / (s1 - s0) * (steps[j] - steps[j - 1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2500)
    parser.add_argument("--out", type=Path, default=Path("reports/stage_timing"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.set_default_dtype(torch.float64)
    data = rk.deep_linear_modes_task(250, SINGULAR_VALUES, seed=0)
    x, y = data.x.numpy(), data.y.numpy()
    a, _, bt = np.linalg.svd(x.T @ y, full_matrices=False)  # X^T X = I: X^T Y is the target map
    net = rk.DeepLinear([4, 3, 5], init_scale=0.1, seed=0)
    curriculum = rk.Curriculum((rk.Stage(data, args.steps, 0.2),))
    grid = np.arange(0, args.steps + 1, 2)
    actual = rk.train(net, curriculum, data, checkpoints=grid)
    runs = {"trained": (actual.weights.values, 0)}
    for name, option in FORECASTS:
        kwargs = ({"relinearize": "auto", "tolerance": float(option.split()[1])}
                  if isinstance(option, str) else {"relinearize": option})
        fc = rk.forecast(net, curriculum, data, checkpoints=grid, readout="network", **kwargs)
        runs[name] = (fc.weights.values, fc.jacobian_evaluations)
    final = mode_strengths(actual.weights.values[-1:], a, bt.T)[0]
    learned = [i for i, s in enumerate(SINGULAR_VALUES[:3]) if final[i] > 0.5 * s]
    table = np.full((len(runs), len(learned)), np.nan)
    print(f"{'run':>10} {'jacobians':>9} " + " ".join(
        f"{'mode ' + format(SINGULAR_VALUES[i], 'g'):>10}" for i in learned))
    for row, (name, (weights, jacobians)) in enumerate(runs.items()):
        strength = mode_strengths(weights, a, bt.T)
        table[row] = [half_time(grid, strength[:, i], 0.5 * final[i]) for i in learned]
        print(f"{name:>10} {jacobians:9d} " + " ".join(f"{v:10.1f}" for v in table[row]))
    ds = xr.Dataset({"half_step": (("run", "mode"), table)},
                    coords={"run": list(runs), "mode": [SINGULAR_VALUES[i] for i in learned],
                            "jacobian_evaluations": ("run", [j for _, j in runs.values()])})
    ds["half_step"].attrs.update(units="steps", long_name="step at which the mode reaches half "
                                 "of the trained network's final strength")
    args.out.mkdir(parents=True, exist_ok=True)
    rk.save(ds, args.out / "stage_timing.nc")
    print(f"wrote {args.out / 'stage_timing.nc'}")


if __name__ == "__main__":
    main()
