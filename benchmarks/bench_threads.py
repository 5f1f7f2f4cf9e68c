"""Benchmark torch's intra-op CPU threads at the default study's sizes, not a test.

In one process, for each network width (default: the default study's hidden 100) and init scale
(0.1 and 1.0, its sweep), trains (rk.train) and forecasts (rk.forecast, both readouts) the default
study's multitask network and curriculum (200 patterns, steps 1500 + 500, lr 0.02, 200 probes,
41 checkpoints) once on one thread and once on torch's default count (one per core unless
OMP_NUM_THREADS says otherwise), alternating, and prints the times and the ratio default / one.
The machine's load average is printed too: on a shared machine the extra threads mostly wait.

    python benchmarks/bench_threads.py [--hidden 100 1000] [--steps 1500 500] [--repeat 1]
"""

from __future__ import annotations

import argparse
import os
import time

import torch

import repkernel as rk


def timed(fn, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hidden", type=int, nargs="+", default=[100])
    parser.add_argument("--steps", type=int, nargs=2, default=[1500, 500])
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()
    default = torch.get_num_threads()
    torch.set_default_dtype(torch.float64)
    env = rk.MultitaskEnvironment(n_input_dims=4, n_features=3, n_output_dims=3)
    curriculum = rk.Curriculum.single_then_concurrent(env, n=200, steps=tuple(args.steps),
                                                      lr=0.02, reduction="sum")
    probes = env.sample(200, seed=1)
    print(f"default threads {default}; load average {os.getloadavg()[0]:.1f} on "
          f"{os.cpu_count()} cores; steps {args.steps}; best of {args.repeat}")
    print(f"{'hidden':>6} {'init':>5} {'job':<9}{'1 thread (s)':>13}{'default (s)':>13}"
          f"{'default / 1':>13}")
    for hidden in args.hidden:
        for init_scale in (0.1, 1.0):
            net = rk.MultitaskNetwork(env, hidden=hidden, init_scale=init_scale, seed=0)
            jobs = {
                "train": lambda n: rk.train(net, curriculum, probes, checkpoints=41,  # noqa: B023
                                            threads=n),
                "forecast": lambda n: rk.forecast(net, curriculum, probes,  # noqa: B023
                                                  checkpoints=41),
            }
            for name, job in jobs.items():
                times = {}
                for count in (1, default):
                    with rk.threads(count):
                        times[count] = timed(lambda: job(count), args.repeat)  # noqa: B023
                print(f"{hidden:>6} {init_scale:>5} {name:<9}{times[1]:>13.2f}"
                      f"{times[default]:>13.2f}{times[default] / times[1]:>12.1f}x")


if __name__ == "__main__":
    main()
