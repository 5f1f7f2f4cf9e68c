"""Benchmark the eNTK on the published main network (REFERENCE.md C), not a test.

MultitaskEnvironment(4, 3, 3), MultitaskNetwork hidden=200, 500 sampled single-task patterns;
in one process, on one device and dtype, times:
  structured   repkernel.kernels.ntk_matrix(method="structured") (input Gram x signal Gram)
  generic      the torch.func Jacobian-contraction recipe: vmap(jacrev) Jacobians, then einsum
  loop         a naive per-example autograd loop: one backward pass per (pattern, output), then
               the same contraction J J^T
  floor        one matrix product with the FLOP count of the structured path's matrix product
and prints the ratios, after checking that the three kernels agree. Also times the loss-weighted
hidden kernel (n_p, H, n_t) and a matrix-free kernel_product, for reference.

    python benchmarks/bench_kernels.py [--device cpu] [--dtype float64] [--n 500] [--repeat 3]
"""

from __future__ import annotations

import argparse
import time

import torch

import repkernel as rk
from repkernel import kernels


def timed(fn, repeat: int, device: torch.device):
    """Best wall time of ``repeat`` runs (after one warm-up) and the last result."""
    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    result = fn()
    sync()
    best = float("inf")
    for _ in range(repeat):
        sync()
        start = time.perf_counter()
        result = fn()
        sync()
        best = min(best, time.perf_counter() - start)
    return best, result


def loop_ntk(net, patterns, device, dtype):
    """Naive reference: J_f row by row with torch.autograd.grad, then J J^T."""
    params = list(net.trainable_parameters().values())
    x, c, _ = patterns.to(device, dtype)
    rows = []
    for i in range(x.shape[0]):
        _, f = net(x[i:i + 1], c[i:i + 1])
        for o in range(f.shape[1]):
            grads = torch.autograd.grad(f[0, o], params, retain_graph=o < f.shape[1] - 1)
            rows.append(torch.cat([g.reshape(-1) for g in grads]))
    jac = torch.stack(rows)
    n, n_out = x.shape[0], jac.shape[0] // x.shape[0]
    start = time.perf_counter()
    kernel = (jac @ jac.T).view(n, n_out, n, n_out)
    loop_ntk.contraction_seconds = time.perf_counter() - start
    return kernel


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default="float64", choices=["float32", "float64"])
    parser.add_argument("--n", type=int, default=500, help="sampled patterns")
    parser.add_argument("--hidden", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=7, help="runs of the fast paths (best)")
    parser.add_argument("--skip-loop", action="store_true", help="skip the slow reference loop")
    args = parser.parse_args()
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)

    env = rk.MultitaskEnvironment(4, 3, 3)
    net = rk.MultitaskNetwork(env, hidden=args.hidden, init_scale=0.1, seed=0)
    net = net.to(device=device, dtype=dtype)
    patterns = env.sample(args.n, {1: 1.0}, seed=0)
    n, n_out, hidden, n_params = args.n, env.n_outputs, args.hidden, net.n_parameters
    print(f"published main network: {n} patterns, {hidden} hidden, {n_out} outputs, "
          f"P = {n_params} trainable weights; device {device}, {args.dtype}, "
          f"{torch.get_num_threads()} threads")

    t_struct, k_struct = timed(lambda: kernels.ntk_matrix(net, patterns, method="structured"),
                               args.repeat, device)
    t_generic, k_generic = timed(lambda: kernels.ntk_matrix(net, patterns, method="generic"),
                                 min(args.repeat, 2), device)
    # The structured eNTK's one matrix product: (nO x H) @ (H x nO), 2 n^2 O^2 H FLOPs.
    a = torch.randn(n * n_out, hidden, device=device, dtype=dtype)
    t_floor, _ = timed(lambda: a @ a.T, args.repeat, device)
    flops = 2 * (n * n_out) ** 2 * hidden
    scale = k_struct.abs().max().item()
    err_generic = (k_struct - k_generic).abs().max().item() / scale
    del k_generic

    print(f"\neNTK ({n}, {n_out}, {n}, {n_out}):")
    print(f"  structured      {t_struct * 1e3:10.1f} ms")
    print(f"  generic         {t_generic * 1e3:10.1f} ms   torch.func / structured = "
          f"{t_generic / t_struct:8.1f}x   (target >= 20x)")
    if not args.skip_loop:
        t_loop, k_loop = timed(lambda: loop_ntk(net, patterns, device, dtype), 1, device)
        err_loop = (k_struct - k_loop).abs().max().item() / scale
        del k_loop
        contraction = loop_ntk.contraction_seconds
        print(f"  per-example loop{t_loop * 1e3:10.1f} ms   loop / structured       = "
              f"{t_loop / t_struct:8.1f}x   (target >= 100x; of which J J^T "
              f"{contraction * 1e3:.0f} ms, {2 * (n * n_out) ** 2 * n_params / 1e9:.0f} GFLOP)")
    print(f"  matmul floor    {t_floor * 1e3:10.1f} ms   structured / floor      = "
          f"{t_struct / t_floor:8.2f}x   (target <= 3x; {flops / 1e9:.2f} GFLOP, "
          f"{flops / t_floor / 1e9:.1f} GFLOP/s)")
    print(f"  max relative difference: generic {err_generic:.1e}"
          + ("" if args.skip_loop else f", loop {err_loop:.1e}"))

    stage = rk.Stage(patterns, steps=1, lr=0.03, reduction="sum")
    t_lw, lw = timed(lambda: rk.loss_weighted_kernel(net, patterns, stage=stage,
                                                          target="hidden"), args.repeat, device)
    print(f"\nloss-weighted hidden kernel {tuple(lw.shape)} (DataArray): {t_lw * 1e3:.1f} ms")
    coefficients = torch.randn(n, n_out, n * n_out // 10, device=device, dtype=dtype)
    for target in ("output", "hidden"):
        t_kp, _ = timed(lambda target=target: kernels.kernel_product(
            net, patterns, patterns, coefficients, target=target), args.repeat, device)
        print(f"kernel_product, target {target}, m = {coefficients.shape[-1]} columns: "
              f"{t_kp * 1e3:.1f} ms")


if __name__ == "__main__":
    main()
