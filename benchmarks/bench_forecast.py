"""Benchmark: forecasting the published main network versus training it, in one process.

REFERENCE.md C: MultitaskEnvironment(4, 3, 3), MultitaskNetwork(hidden=200, init_scale=0.1),
500 sampled single-task patterns, 2500 full-batch steps at lr 0.03 on the summed loss, 101
checkpoints. The forecast time includes every kernel computation. Prints seconds and the ratio.

    python benchmarks/bench_forecast.py [--device cuda] [--dtype float32] [--repeats 2] [--check]

--check also forecasts with a dense eigendecomposition of the 4500 x 4500 kernel (the Lanczos
path's reference) and prints the largest weight and hidden difference between the two.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

import repkernel as rk
from repkernel import forecasting


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float64", choices=["float32", "float64"])
    parser.add_argument("--steps", type=int, default=2500)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args()
    dtype = getattr(torch, args.dtype)
    env = rk.MultitaskEnvironment(4, 3, 3)
    net = rk.MultitaskNetwork(env, hidden=200, init_scale=0.1)
    curriculum = rk.Curriculum.interleaved(env, 500, args.steps, 0.03, reduction="sum")
    probes = env.sample(500, seed=1)
    kwargs = dict(checkpoints=101, device=args.device, dtype=dtype)

    def timed(run):
        best = float("inf")
        for _ in range(args.repeats):
            if torch.device(args.device).type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            run()
            if torch.device(args.device).type == "cuda":
                torch.cuda.synchronize()
            best = min(best, time.perf_counter() - start)
        return best

    outcome = {}
    train_s = timed(lambda: outcome.update(actual=rk.train(net, curriculum, probes, **kwargs)))
    forecast_s = timed(lambda: outcome.update(forecast=rk.forecast(net, curriculum, probes,
                                                                   **kwargs)))
    print(f"device {args.device}, dtype {args.dtype}, {args.steps} steps, 101 checkpoints")
    print(f"train    {train_s:8.2f} s")
    print(f"forecast {forecast_s:8.2f} s   (kernel, eigendecomposition and both readouts)")
    print(f"speed-up of forecast over training: {train_s / forecast_s:.2f}x (target >= 10x)")
    fc, actual = outcome["forecast"], outcome["actual"]
    change = actual.hidden - actual.hidden.isel(time=0)
    for readout in fc.readout.values:
        predicted = fc.hidden.sel(readout=readout) - actual.hidden.isel(time=0)
        r = np.corrcoef(predicted.values.ravel(), change.values.ravel())[0, 1]
        print(f"change alignment of hidden, {readout} readout, all checkpoints pooled: r = {r:.4f}")
    if args.check:
        saved, forecasting.DENSE_LIMIT = forecasting.DENSE_LIMIT, 10**9
        dense_s = timed(lambda: outcome.update(dense=rk.forecast(net, curriculum, probes,
                                                                 **kwargs)))
        forecasting.DENSE_LIMIT = saved
        dense = outcome["dense"]
        print(f"dense eigendecomposition forecast {dense_s:8.2f} s; Lanczos vs dense: "
              f"max |weights| difference {float(abs(fc.weights - dense.weights).max()):.2e}, "
              f"max |hidden| difference {float(abs(fc.hidden - dense.hidden).max()):.2e}")


if __name__ == "__main__":
    main()
