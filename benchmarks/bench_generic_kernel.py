"""Benchmark: the generic (torch.func) eNTK path against the plain torch.func J_f recipe.

A 10 -> 1024 -> 3 tanh MLP on 512 random points, float64, one thread (the case of issue 11: the
generic path used to build the hidden Jacobians too and asked for 30 GB). Each method runs in its
own process, so that its peak resident memory is its own; prints CPU seconds, peak memory and
the ratios repkernel / recipe.

    python benchmarks/bench_generic_kernel.py [--width 1024] [--points 512]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time


def measure(method: str, width: int, points: int) -> None:
    """Child process: compute the eNTK one way, print CPU seconds and peak memory as JSON."""
    import torch

    import repkernel as rk

    torch.set_num_threads(1)
    torch.set_default_dtype(torch.float64)
    net = rk.MLP([10, width, 3], activation="tanh")
    data = rk.pattern_set(torch.randn(points, 10), torch.randn(points, 3))
    start = time.process_time()
    if method == "repkernel":
        kernel = rk.ntk_matrix(net, data, method="generic")
    else:  # the recipe of the torch.func documentation: vmap(jacrev) of J_f, then J J^T
        from torch.func import functional_call, jacrev, vmap

        params = {name: p.detach() for name, p in net.named_parameters()}

        def output(p, x):
            return functional_call(net, p, (x[None], None))[1][0]

        jac = vmap(jacrev(output), (None, 0))(params, data.x)
        flat = torch.cat([j.reshape(points, 3, -1) for j in jac.values()], -1)
        kernel = torch.einsum("iop,jqp->iojq", flat, flat)
    seconds = time.process_time() - start
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"seconds": seconds, "peak_mb": peak_mb, "shape": list(kernel.shape)}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=1024)
    parser.add_argument("--points", type=int, default=512)
    parser.add_argument("--child", choices=["repkernel", "recipe"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        measure(args.child, args.width, args.points)
        return
    results = {}
    for method in ("recipe", "repkernel"):
        out = subprocess.run([sys.executable, __file__, "--child", method, "--width",
                              str(args.width), "--points", str(args.points)],
                             capture_output=True, text=True, check=True)
        results[method] = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"{method:>10}: {results[method]['seconds']:7.2f} s CPU, peak "
              f"{results[method]['peak_mb']:8.0f} MB")
    mine, recipe = results["repkernel"], results["recipe"]
    print(f"repkernel / torch.func recipe: time {mine['seconds'] / recipe['seconds']:.2f}x, "
          f"peak memory {mine['peak_mb'] / recipe['peak_mb']:.2f}x (target: both <= 2x)")


if __name__ == "__main__":
    main()
