"""Benchmark: forecasting the published main network versus training it, in one process.

REFERENCE.md C: MultitaskEnvironment(4, 3, 3), MultitaskNetwork(hidden=200, init_scale=0.1),
500 sampled single-task patterns, 2500 full-batch steps at lr 0.03 on the summed loss, 101
checkpoints. The forecast time includes every kernel computation. Prints seconds and the ratio.

    python benchmarks/forecast_vs_training.py [--device cuda] [--dtype float32] [--repeats 2]
"""

from __future__ import annotations

import argparse
import time

import torch

import repkernel as rk


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float64", choices=["float32", "float64"])
    parser.add_argument("--steps", type=int, default=2500)
    parser.add_argument("--repeats", type=int, default=1)
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

    train_s = timed(lambda: rk.train(net, curriculum, probes, **kwargs))
    forecast_s = timed(lambda: rk.forecast(net, curriculum, probes, **kwargs))
    print(f"device {args.device}, dtype {args.dtype}, {args.steps} steps, 101 checkpoints")
    print(f"train    {train_s:8.2f} s")
    print(f"forecast {forecast_s:8.2f} s   (kernel, eigendecomposition and both readouts)")
    print(f"speed-up of forecast over training: {train_s / forecast_s:.2f}x (target >= 10x)")


if __name__ == "__main__":
    main()
