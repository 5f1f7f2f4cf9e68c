"""Benchmark: forecasting the published main network versus training it, in one process.

REFERENCE.md C: MultitaskEnvironment(4, 3, 3), MultitaskNetwork(hidden=200, init_scale=0.1),
500 sampled single-task patterns, 2500 full-batch steps at lr 0.03 on the summed loss, 101
checkpoints. The forecast time includes every kernel product and both readouts. Prints seconds
and the ratio. On the CPU, one torch thread (the fastest for networks of this size) and CPU time
of the process (time.process_time: robust to other load on the machine); on CUDA, wall time.

    python benchmarks/bench_forecast.py [--device cuda] [--dtype float32] [--repeats 2] [--check]
                                        [--scaling]

--check also forecasts with a dense eigendecomposition of the ~3600 x 3600 kernel (the Krylov
path's reference) and prints the largest weight and hidden difference between the two.
--scaling times the frozen forecast (gradient flow) over 2000 steps for 100, 500 and 2000
training patterns (target: 2000 patterns at most 5x the cost of 500).
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
    parser.add_argument("--scaling", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    cuda = torch.device(args.device).type == "cuda"
    clock = time.perf_counter if cuda else time.process_time
    dtype = getattr(torch, args.dtype)
    env = rk.MultitaskEnvironment(4, 3, 3)
    net = rk.MultitaskNetwork(env, hidden=200, init_scale=0.1, dtype=dtype)
    curriculum = rk.Curriculum.interleaved(env, 500, args.steps, 0.03, reduction="sum")
    probes = env.sample(500, seed=1)
    kwargs = dict(checkpoints=101, device=args.device, dtype=dtype)

    def timed(run):
        best = float("inf")
        for _ in range(args.repeats):
            if cuda:
                torch.cuda.synchronize()
            start = clock()
            run()
            if cuda:
                torch.cuda.synchronize()
            best = min(best, clock() - start)
        return best

    outcome = {}
    train_s = timed(lambda: outcome.update(actual=rk.train(net, curriculum, probes, **kwargs)))
    forecast_s = timed(lambda: outcome.update(forecast=rk.forecast(net, curriculum, probes,
                                                                   **kwargs)))
    print(f"device {args.device}, dtype {args.dtype}, {args.steps} steps, 101 checkpoints")
    print(f"train    {train_s:8.2f} s")
    print(f"forecast {forecast_s:8.2f} s   (kernel products, Krylov and both readouts)")
    print(f"speed-up of forecast over training: {train_s / forecast_s:.2f}x (target >= 10x)")
    fc, actual = outcome["forecast"], outcome["actual"]
    change = actual.hidden - actual.hidden.isel(time=0)
    for readout in fc.readout.values:
        predicted = fc.hidden.sel(readout=readout) - actual.hidden.isel(time=0)
        r = np.corrcoef(predicted.values.ravel(), change.values.ravel())[0, 1]
        print(f"change alignment of hidden, {readout} readout, all checkpoints pooled: r = {r:.4f}")
    if args.check:
        dense_s = timed(lambda: outcome.update(dense=rk.forecast(
            net, curriculum, probes, factorization="dense", **kwargs)))
        dense = outcome["dense"]
        print(f"dense eigendecomposition forecast {dense_s:8.2f} s; Krylov vs dense: "
              f"max |weights| difference {float(abs(fc.weights - dense.weights).max()):.2e}, "
              f"max |hidden| difference {float(abs(fc.hidden - dense.hidden).max()):.2e}")
    if args.scaling:
        seconds = {}
        for n in (100, 500, 2000):
            stage = rk.Curriculum.interleaved(env, n, 2000, 0.03, reduction="sum")
            distinct = len(forecasting._distinct(stage.stages[0].patterns)[0])
            seconds[n] = timed(lambda stage=stage: rk.forecast(  # summed loss: the rate is
                net, stage, probes, time="continuous", **kwargs))  # unstable for n = 2000
            print(f"frozen forecast, {n:5d} training patterns ({distinct} distinct, nO = "
                  f"{distinct * probes.n_outputs}), 2000 steps: {seconds[n]:6.2f} s")
        print(f"2000 / 500 patterns: {seconds[2000] / seconds[500]:.2f}x (target <= 5x)")

if __name__ == "__main__":
    main()
