"""Benchmark the batched similarity metrics against a per-checkpoint loop, not a test.

Random hidden representations of shape (seeds, checkpoints, items, units), default
(10, 101, 100, 200) float64, for a "forecast", an "actual" and the initial (checkpoint 0) one. In
one process, times each metric of repkernel.similarity
  cka                cka_similarity (linear)
  rsa                rsa (Pearson RSMs compared by Pearson r)
  procrustes         procrustes_distance
  change_alignment   change_alignment (against the initial representation)
called once on the whole batch ("batched") and in a Python loop over seeds x checkpoints on
(items, units) slices ("loop"), checks that both agree, and prints the times and the ratio.
BLAS runs on ``--threads`` threads (default 1) for both, so the ratio measures batching rather
than how the BLAS threads share a busy machine.

Then Kendall tau-a between the RDMs of two representations of ``--kendall-items`` conditions
(default 300: T = 44850 matrix entries): repkernel's O(T log^2 T) sort against the O(T^2) sum
over all pairs it replaced (kept below, timed once), with their agreement.

    python benchmarks/bench_similarity.py [--seeds 10] [--checkpoints 101] [--items 100]
                                          [--units 200] [--repeat 3] [--threads 1]
                                          [--kendall-items 300]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from threadpoolctl import threadpool_limits

from repkernel import similarity


def timed(fn, repeat: int):
    """Best wall time of ``repeat`` runs and the last result."""
    best, result = float("inf"), None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


def loop(metric, *arrays):
    """The same metric on every (items, units) slice, one call each."""
    seeds, checkpoints = arrays[0].shape[:2]
    rows = [[metric(*(x[s, t] if x.ndim == 4 else x[s] for x in arrays))
             for t in range(checkpoints)] for s in range(seeds)]
    if isinstance(rows[0][0], dict):
        return {key: np.array([[r[key] for r in row] for row in rows]) for key in rows[0][0]}
    return np.array(rows)


def agree(batched, looped) -> bool:
    if isinstance(batched, dict):
        return all(np.allclose(batched[k], looped[k], atol=1e-9, equal_nan=True) for k in batched)
    return bool(np.allclose(batched, looped, atol=1e-9, equal_nan=True))


def quadratic_kendall_tau_a(u: np.ndarray, v: np.ndarray, chunk: int = 2**21) -> float:
    """The former repkernel tau-a: sum_{i != j} sign(u_i - u_j) sign(v_i - v_j) / (T (T - 1)),
    over rows of at most ``chunk`` sign entries at a time."""
    count = len(u)
    rows = max(1, chunk // count)
    total = 0.0
    for i in range(0, count, rows):
        total += np.einsum("ij,ij->", np.sign(u[i:i + rows, None] - u[None, :]),
                           np.sign(v[i:i + rows, None] - v[None, :]))
    return total / (count * (count - 1))


def kendall(items: int, repeat: int) -> None:
    rng = np.random.default_rng(1)
    a = rng.normal(size=(items, 20))
    b = a + rng.normal(size=(items, 20))
    rows, cols = np.triu_indices(items, 1)
    u, v = similarity.rdm(a)[rows, cols], similarity.rdm(b)[rows, cols]
    fast_time, fast = timed(lambda: similarity._kendall_tau_a(u, v), repeat)
    slow_time, slow = timed(lambda: quadratic_kendall_tau_a(u, v), 1)
    print(f"\nKendall tau-a, {items} conditions ({len(u)} RDM entries): sort "
          f"{fast_time:.3f} s, all pairs {slow_time:.3f} s, speedup {slow_time / fast_time:.0f}x, "
          f"|difference| {abs(fast - slow):.1e}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--checkpoints", type=int, default=101)
    parser.add_argument("--items", type=int, default=100)
    parser.add_argument("--units", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="BLAS threads")
    parser.add_argument("--kendall-items", type=int, default=300)
    args = parser.parse_args()
    threadpool_limits(args.threads)

    rng = np.random.default_rng(0)
    shape = (args.seeds, args.checkpoints, args.items, args.units)
    initial = rng.normal(size=(args.seeds, args.items, args.units))
    drift = np.linspace(0, 1, args.checkpoints)[None, :, None, None]
    actual = initial[:, None] + drift * rng.normal(size=shape)
    forecast = actual + 0.3 * drift * rng.normal(size=shape)

    cases = {
        "cka": (similarity.cka_similarity, (forecast, actual)),
        "rsa": (similarity.rsa, (forecast, actual)),
        "procrustes": (similarity.procrustes_distance, (forecast, actual)),
        "change_alignment": (similarity.change_alignment,
                             (forecast, actual, initial[:, None])),
    }
    print(f"hidden {shape} float64; {args.seeds * args.checkpoints} matrices per call; "
          f"{args.threads} BLAS thread(s); best of {args.repeat}")
    print(f"{'metric':<18}{'batched (s)':>12}{'loop (s)':>12}{'speedup':>10}  agree")
    for name, (metric, arrays) in cases.items():
        batched_time, batched = timed(lambda: metric(*arrays), args.repeat)  # noqa: B023
        loop_arrays = arrays[:2] + ((initial,) if len(arrays) == 3 else ())
        loop_time, looped = timed(lambda: loop(metric, *loop_arrays), args.repeat)  # noqa: B023
        print(f"{name:<18}{batched_time:>12.3f}{loop_time:>12.3f}"
              f"{loop_time / batched_time:>9.1f}x  {agree(batched, looped)}")
    kendall(args.kendall_items, args.repeat)


if __name__ == "__main__":
    main()
