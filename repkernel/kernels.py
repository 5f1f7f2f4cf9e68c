"""Kernels at initialization (DESIGN.md section 3): Jacobians, eNTK and the pseudo-kernel.

J_f(x) = df(x)/dtheta (O x P), J_h(x) = dh(x)/dtheta (H x P), with respect to the trainable
parameters only. eNTK Theta(x, x') = J_f(x) J_f(x')^T; pseudo-kernel Pi(x, x') = J_h(x) J_f(x')^T.

This first version is the generic torch.func path (vmap over jacrev). Tensor-level functions
return torch tensors on the requested device/dtype.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch.func import functional_call, jacrev, vmap

from repkernel.networks import RepresentationNetwork, placed
from repkernel.patterns import PatternSet


class Jacobians(NamedTuple):
    """output: (n, O, P); hidden: one (n, H_l, P) per hidden layer."""

    output: torch.Tensor
    hidden: tuple[torch.Tensor, ...]


def network_function(network: RepresentationNetwork):
    """(fn, theta0): fn(theta, x, c) -> (hidden tuple, output) for a flat (P,) theta of the
    trainable weights, the other weights and buffers held fixed; theta0 the current weights."""
    fixed = {name: p.detach() for name, p in network.named_parameters() if not p.requires_grad}
    buffers = dict(network.named_buffers())

    def fn(theta: torch.Tensor, x: torch.Tensor, c: torch.Tensor | None):
        weights = {**fixed, **buffers, **network.unflatten(theta)}
        return functional_call(network, weights, (x, c))

    return fn, network.flat_parameters()


def _place(network, patterns, device, dtype):
    net = placed(network, device, dtype)
    weight = next(iter(net.parameters()))
    return net, patterns.to(weight.device, weight.dtype)


def jacobians(network: RepresentationNetwork, patterns: PatternSet, device=None,
              dtype=None) -> Jacobians:
    """J_f (n, O, P) and J_h (one (n, H_l, P) per layer) at the network's current weights."""
    net, (x, c, _) = _place(network, patterns, device, dtype)
    fn, theta = network_function(net)

    def single(theta, xi, ci):
        hidden, output = fn(theta, xi[None], None if ci is None else ci[None])
        return tuple(h[0] for h in hidden), output[0]

    in_dims = (None, 0, None if c is None else 0)
    hidden, output = vmap(jacrev(single), in_dims=in_dims)(theta, x, c)
    return Jacobians(output=output, hidden=tuple(hidden))


def ntk_matrix(network: RepresentationNetwork, patterns_a: PatternSet,
               patterns_b: PatternSet | None = None, device=None, dtype=None) -> torch.Tensor:
    """eNTK Theta[i, o, j, o'] = <df_o(x_i)/dtheta, df_o'(x'_j)/dtheta>, (n_a, O, n_b, O)."""
    ja = jacobians(network, patterns_a, device, dtype).output
    jb = ja if patterns_b is None else jacobians(network, patterns_b, device, dtype).output
    return torch.einsum("iop,jqp->iojq", ja, jb)


def pseudo_kernel_matrix(network: RepresentationNetwork, probes: PatternSet, train: PatternSet,
                         device=None, dtype=None) -> tuple[torch.Tensor, ...]:
    """Pi[i, u, j, o] = <dh_u(x_i)/dtheta, df_o(x_j)/dtheta>, one (n_p, H_l, n_t, O) per layer."""
    jp = jacobians(network, probes, device, dtype)
    jt = jacobians(network, train, device, dtype).output
    return tuple(torch.einsum("iup,jop->iujo", jh, jt) for jh in jp.hidden)


def jacobian_product(network: RepresentationNetwork, patterns: PatternSet, d: torch.Tensor,
                     device=None, dtype=None) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
    """J(patterns) d for directions d (P, m): (one (n, H_l, m) per layer, (n, O, m)).

    Forward-mode products (torch.func.jvp) batched over the m directions; J is never formed.
    """
    net, (x, c, _) = _place(network, patterns, device, dtype)
    fn, theta = network_function(net)
    d = d.to(theta)

    def push(direction):
        return torch.func.jvp(lambda t: fn(t, x, c), (theta,), (direction,))[1]

    hidden, output = vmap(push, in_dims=1)(d)  # (m, ...): out_dims=0 also covers J_h = 0
    return tuple(h.movedim(0, -1) for h in hidden), output.movedim(0, -1)


def jacobian_transpose_product(network: RepresentationNetwork, patterns: PatternSet,
                               a: torch.Tensor, device=None, dtype=None) -> torch.Tensor:
    """J_f(patterns)^T a = sum_i J_f(x_i)^T a_i for coefficients a (n, O, m): (P, m).

    Reverse-mode products (torch.func.vjp) batched over the m coefficient sets.
    """
    net, (x, c, _) = _place(network, patterns, device, dtype)
    fn, theta = network_function(net)
    _, pull = torch.func.vjp(lambda t: fn(t, x, c)[1], theta)
    a = a.to(theta)
    return vmap(lambda coefficients: pull(coefficients)[0], in_dims=-1)(a).T
