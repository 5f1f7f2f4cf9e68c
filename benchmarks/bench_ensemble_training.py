"""Seed ensembles trained side by side (vectorized) against one by one (issue 12).

REFERENCE.md C's network (4 x 3 features in, 3 x 3 out, 200 sigmoid hidden, biases -2) on its
first phase (500 single-task patterns, full batch, summed loss, lr 0.01) for --steps updates and
11 checkpoints, S seeds. Both ways run in this process, one torch thread, CPU time
(time.process_time), and their results are checked equal.

    python benchmarks/bench_ensemble_training.py [--seeds 2 5 10] [--steps 300]
"""

from __future__ import annotations

import argparse
import time

import torch

import repkernel as rk


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[2, 5, 10])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--hidden", type=int, default=200)
    args = parser.parse_args()
    torch.set_num_threads(1)
    env = rk.MultitaskEnvironment(n_input_dims=4, n_features=3, n_output_dims=3)
    curriculum = rk.Curriculum(rk.Curriculum.single_then_concurrent(
        env, n=500, steps=(args.steps, args.steps), lr=0.01, reduction="sum").stages[:1])
    probes = env.patterns(k=1, stimuli=27, seed=1000)
    print(f"torch threads {torch.get_num_threads()}, {args.steps} steps, 500 patterns, "
          f"{args.hidden} hidden, float64, CPU time")
    print("seeds | one by one (s) | side by side (s) | speed-up | max |difference|")
    for count in args.seeds:
        nets = [rk.MultitaskNetwork(env, hidden=args.hidden, seed=s, dtype=torch.float64)
                for s in range(count)]
        start = time.process_time()
        alone = [rk.train(net, curriculum, probes, checkpoints=11) for net in nets]
        loop = time.process_time() - start
        start = time.process_time()
        together = rk.train(nets, curriculum, probes, checkpoints=11)
        stacked = time.process_time() - start
        gap = max(float(abs(together.hidden.isel(seed=s) - run.hidden).max())
                  for s, run in enumerate(alone))
        print(f"{count:5d} | {loop:14.2f} | {stacked:16.2f} | {loop / stacked:7.2f}x | "
              f"{gap:.1e}")


if __name__ == "__main__":
    main()
