"""Kernels at initialization (DESIGN.md section 3): Jacobians, eNTK, pseudo-kernel, loss-weighted
kernel, and the matrix-free products the forecast is built from.

J_f(x) = df(x)/dtheta (O x P), J_h(x) = dh(x)/dtheta (H_l x P) per hidden layer, with respect to the
trainable parameters only (``requires_grad``; fixed biases and frozen weight groups are excluded).

  eNTK           Theta(x, x') = J_f(x) J_f(x')^T                  (O x O blocks, symmetric, PSD)
  pseudo-kernel  Pi(x, x')    = J_h(x) J_f(x')^T                  (H x O blocks, neither)
  loss-weighted  PNTK(x, x_i) = -rho J(x) J_f(x_i)^T g_i,  g_i = grad_f l(f(x_i), y_i),
                 rho = eta / n (mean reduction) or eta (sum); summed over i it is the first-order
                 change of f(x) (J = J_f) or h(x) (J = J_h) after one full-batch step.

Two implementations behind one interface (``method=``):
  "structured"  dense layers with elementwise activations (MultitaskNetwork, MLP, DeepLinear).
                Every weight matrix W_m (into pre-activation z_m, fed by activations a_m) adds
                K_m[i, u, j, q] = <a_m(x_i), a_m(x'_j)> * <dy_u(x_i)/dz_m, df_q(x'_j)/dz_m>,
                an input Gram times a backpropagated-signal Gram, both matrix products; a trainable
                bias adds the signal Gram alone. J is never formed.
  "generic"     torch.func (vmap + jacrev for Jacobians, jvp / vjp for products) for any
                RepresentationNetwork whose forward(x, c) returns (hidden tuple, output).
  "auto"        structured when the network supports it, generic otherwise.
Both agree to floating-point round-off. Tensor-level functions return tensors on the network's
device and dtype (or the ``device`` / ``dtype`` asked for); the xarray functions convert once.

Eigen-analysis at t = 0 (``kernel_eigenvectors``): per output unit o the probe x train matrix
M_o[i, j] = <grad_theta l_j, grad_theta f_o(x_i)> and its leading eigenvectors; grouping them by
task and input feature and k-means scores live in repkernel.eigen.

xarray dims: DESIGN.md names the output dim ``output``; xarray forbids a dim named like the
``output`` variable of results (repkernel.results), so kernels use ``output_unit`` (and
``output_unit_b`` for the second eNTK argument).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch
import xarray as xr
from torch.func import functional_call, jacrev, vmap

from repkernel.curriculum import Stage
from repkernel.losses import REDUCTIONS, check_loss, loss_gradient
from repkernel.networks import (
    ACTIVATIONS,
    MLP,
    MultitaskNetwork,
    NetworkInputError,
    RepresentationNetwork,
    not_a_network,
    placed,
)
from repkernel.patterns import PatternSet
from repkernel.results import stack_hidden

METHODS = ("auto", "structured", "generic")
TARGETS = ("output", "hidden")
# Numbers held by one block's intermediates when block_size is not given (128 MiB in float64).
BLOCK_NUMBERS = 2**24


class Jacobians(NamedTuple):
    """output: J_f (n, O, P); hidden: J_h, one (n, H_l, P) per hidden layer."""

    output: torch.Tensor
    hidden: tuple[torch.Tensor, ...]


# -- checks and placement ---------------------------------------------------------------------


def _check_choice(name: str, value, choices) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {list(choices)}, got {value!r}")


def _check_block_size(block_size) -> None:
    if block_size is not None and not (isinstance(block_size, (int, np.integer))
                                       and block_size >= 1):
        raise ValueError(f"block_size must be a positive number of patterns or None (automatic),"
                         f" got {block_size!r}")


def _network(network, device, dtype) -> RepresentationNetwork:
    """The network on device/dtype (a copy only when it must move), checked."""
    if not isinstance(network, RepresentationNetwork):
        raise ValueError(not_a_network(network))
    if network.n_parameters == 0:
        raise ValueError("the network has no trainable parameters, so every kernel is zero: "
                         "choose weight groups with network.set_trainable(...)")
    return placed(network, device, dtype)


def _place(network, patterns, device, dtype, role: str = "probe"):
    """The network on device/dtype and the patterns' (x, c, y) there."""
    net = _network(network, device, dtype)
    return net, _patterns_on(net, patterns, role)


def _patterns_on(net, patterns, role: str):
    """(x, c, y) of ``patterns`` on the network's device and dtype, checked against the network
    (training patterns must also have one target per network output)."""
    if not isinstance(patterns, PatternSet):
        raise ValueError(f"{role} patterns must be a PatternSet, got {type(patterns).__name__}: "
                         f"build one with repkernel.pattern_set(x, y, c)")
    weight = next(iter(net.parameters()))
    x, c, y = patterns.to(weight.device, weight.dtype)
    try:
        output = net.check_inputs(x[:1], None if c is None else c[:1])
    except NetworkInputError as error:
        raise ValueError(f"{role} patterns: {error}") from None
    except RuntimeError as error:
        raise ValueError(f"{role} patterns do not fit the network ({error}): use patterns made "
                         f"for this network") from None
    if role == "training" and output.shape[-1] != patterns.n_outputs:
        raise ValueError(f"training patterns have {patterns.n_outputs} targets but the network "
                         f"has {output.shape[-1]} outputs: use patterns made for this network")
    return x, c, y


# -- the structured path ----------------------------------------------------------------------


def _slope_rule(activation):
    """d act / dz as a function of (z, act(z)); None for the identity."""
    rules = {
        "sigmoid": lambda z, a: a * (1 - a),
        "tanh": lambda z, a: 1 - a * a,
        "relu": lambda z, a: (z > 0).to(z.dtype),
        "linear": None,
    }
    for name, fn in ACTIVATIONS.items():
        if activation is fn:
            return rules[name]
    raise KeyError(activation)


def structured_supported(network: RepresentationNetwork) -> bool:
    """True when ``network`` is a MultitaskNetwork or MLP/DeepLinear with its own forward pass
    and elementwise activations the structured path knows (sigmoid, tanh, relu, linear)."""
    forward = type(network).forward
    if forward not in (MultitaskNetwork.forward, MLP.forward):
        return False
    try:
        _slope_rule(network.phi)
        _slope_rule(network.psi)
    except KeyError:
        return False
    return True


def _resolve_method(network, method: str) -> str:
    _check_choice("method", method, METHODS)
    if method == "generic":
        return "generic"
    if structured_supported(network):
        return "structured"
    if method == "structured":
        raise ValueError(f"{type(network).__name__} has no structured kernel path (only "
                         f"MultitaskNetwork, MLP and DeepLinear with sigmoid/tanh/relu/linear "
                         f"activations do): use method='generic' or 'auto'")
    return "generic"


@dataclass
class _Layer:
    """One pre-activation z = sum_e W_e a_e + b with post-activation act(z), K units.

    params: the trainable weights into z, (name, a (n, in)), and a trainable bias as (name, None);
    post: act(z) (n, K); slope: act'(z) (n, K), None for the identity; chain: the weight
    (K_next, K) carrying act(z) into the next layer (None for the output layer).
    """

    params: list[tuple[str, torch.Tensor | None]]
    post: torch.Tensor
    slope: torch.Tensor | None
    chain: torch.Tensor | None

    @property
    def width(self) -> int:
        return self.post.shape[1]


def _slope(rule, z, a):
    return None if rule is None else rule(z, a)


@torch.no_grad()
def _layers(net: RepresentationNetwork, x: torch.Tensor, c: torch.Tensor | None) -> list[_Layer]:
    """Forward pass of a structured network, recording what its kernels need."""
    trainable = set(net.trainable_names())
    phi, psi = _slope_rule(net.phi), _slope_rule(net.psi)
    if isinstance(net, MultitaskNetwork):
        if c is None:
            raise ValueError("MultitaskNetwork needs task cues c: use patterns from a "
                             "MultitaskEnvironment")
        zh = x @ net.stimulus_hidden.T + c @ net.task_hidden.T + net.hidden_bias
        h = net.phi(zh)
        zf = h @ net.hidden_output.T + c @ net.task_output.T + net.output_bias
        f = net.psi(zf)
        first = [(n, a) for n, a in (("stimulus_hidden", x), ("task_hidden", c)) if n in trainable]
        second = [(n, a) for n, a in (("hidden_output", h), ("task_output", c)) if n in trainable]
        return [_Layer(first, h, _slope(phi, zh, h), net.hidden_output.detach()),
                _Layer(second, f, _slope(psi, zf, f), None)]
    layers, a = [], x
    for i, layer in enumerate(net.layers):
        z = MLP._affine(layer, a)
        last = i == len(net.layers) - 1
        post = (net.psi if last else net.phi)(z)
        params = [(f"layers.{i}.weight", a)] if f"layers.{i}.weight" in trainable else []
        if f"layers.{i}.bias" in trainable:
            params.append((f"layers.{i}.bias", None))
        chain = None if last else net.layers[i + 1].weight.detach()
        layers.append(_Layer(params, post, _slope(psi if last else phi, z, post), chain))
        a = post
    return layers


def _slots(net: RepresentationNetwork, layers: list[_Layer]) -> list[tuple[str, int, int]]:
    """(name, layer index, index in that layer's params) in flat-parameter order."""
    where = {name: (m, k) for m, layer in enumerate(layers)
             for k, (name, _) in enumerate(layer.params)}
    return [(name, *where[name]) for name in net.trainable_names()]


def _signals(layers: list[_Layer], target: int):
    """Backpropagated signals of the post-activation of layer ``target``.

    Returns (diag, full): d act_t / dz_t = diag(diag), diag (n, K_t); and for m < t down to the
    first trainable layer, full[m] = d act_t / dz_m, (n, K_t, K_m).
    """
    top = layers[target]
    diag = torch.ones_like(top.post) if top.slope is None else top.slope
    lowest = min((m for m, layer in enumerate(layers[:target]) if layer.params), default=target)
    full, signal = {}, None
    for m in range(target - 1, lowest - 1, -1):
        weight = layers[m].chain
        signal = diag[:, :, None] * weight if signal is None else signal @ weight
        if layers[m].slope is not None:
            signal = signal * layers[m].slope[:, None, :]
        full[m] = signal
    return diag, full


def _gram(la: _Layer, lb: _Layer, n_a: int, n_b: int, like: torch.Tensor) -> torch.Tensor:
    """Input Gram of one layer: sum over its trainable weights of <a(x_i), a(x'_j)>, plus 1 for a
    trainable bias, (n_a, n_b)."""
    gram = None
    for (_, a), (_, b) in zip(la.params, lb.params):
        term = torch.ones(n_a, n_b, dtype=like.dtype, device=like.device) if a is None else a @ b.T
        gram = term if gram is None else gram + term
    return gram


def _structured_kernel(la: list[_Layer], lb: list[_Layer], target: int) -> torch.Tensor:
    """K[i, u, j, q] = <d y_u(x_i)/dtheta, d f_q(x'_j)/dtheta>, y the post-activation of layer
    ``target`` (the output layer gives the eNTK, a hidden layer the pseudo-kernel)."""
    last = len(lb) - 1
    da, fa = _signals(la, target)
    db, fb = (da, fa) if la is lb and target == last else _signals(lb, last)
    n_a, n_b, width, n_out = da.shape[0], db.shape[0], da.shape[1], db.shape[1]
    out, diagonal = None, None
    for m in range(target + 1):
        if not la[m].params:
            continue
        gram = _gram(la[m], lb[m], n_a, n_b, da)
        if m == target == last:  # both signals diagonal: only o = q terms
            diagonal = gram[:, :, None] * da[:, None, :] * db[None, :, :]
            continue
        if m == target:  # diagonal probe signal: K = da[i,u] G[i,j] S_b[j,q,u]
            left = (da[:, :, None] * gram[:, None, :])[..., None]
            term = left * fb[m].permute(2, 0, 1)[None]
        else:
            k = fa[m].shape[-1]
            term = (fa[m].reshape(-1, k) @ fb[m].reshape(-1, k).T).view(n_a, width, n_b, n_out)
            term.mul_(gram[:, None, :, None])
        out = term if out is None else out.add_(term)
    if out is None:
        out = torch.zeros(n_a, width, n_b, n_out, dtype=da.dtype, device=da.device)
    if diagonal is not None:
        out.diagonal(0, 1, 3).add_(diagonal)
    return out


def _structured_weighted(la: list[_Layer], lb: list[_Layer], target: int,
                         weights: torch.Tensor) -> torch.Tensor:
    """sum_q K[i, u, j, q] w[j, q] for per-train-pattern weights w (n_b, O): (n_a, U, n_b)."""
    last = len(lb) - 1
    da, fa = _signals(la, target)
    db, fb = _signals(lb, last)
    n_a, n_b, width = da.shape[0], db.shape[0], da.shape[1]
    out = None
    for m in range(target + 1):
        if not la[m].params:
            continue
        gram = _gram(la[m], lb[m], n_a, n_b, da)
        # v[j, k] = sum_q d f_q(x'_j)/dz_m,k w[j, q]
        v = db * weights if m == last else (fb[m].transpose(1, 2) @ weights[..., None])[..., 0]
        term = da[:, :, None] * v.T[None] if m == target else fa[m] @ v.T
        term.mul_(gram[:, None, :])
        out = term if out is None else out.add_(term)
    return out if out is not None else da.new_zeros(n_a, width, n_b)


def _structured_jacobian(net, layers: list[_Layer], target: int) -> torch.Tensor:
    """J of the post-activation of layer ``target``, (n, U, P), as outer products of signals and
    layer inputs."""
    diag, full = _signals(layers, target)
    n, width = diag.shape
    blocks = []
    for _, m, k in _slots(net, layers):
        layer = layers[m]
        a = layer.params[k][1]
        n_in = 1 if a is None else a.shape[1]
        if m > target:
            blocks.append(diag.new_zeros(n, width, layer.width * n_in))
            continue
        if m == target:
            signal = torch.diag_embed(diag)
        else:
            signal = full[m]
        block = signal if a is None else signal[..., None] * a[:, None, None, :]
        blocks.append(block.reshape(n, width, -1))
    return torch.cat(blocks, dim=-1)


# -- the generic path -------------------------------------------------------------------------


def network_function(network: RepresentationNetwork):
    """(fn, theta0): fn(theta, x, c) -> (hidden tuple, output) for a flat (P,) theta of the
    trainable weights, the other weights and buffers held fixed; theta0 the current weights."""
    fixed = {name: p.detach() for name, p in network.named_parameters() if not p.requires_grad}
    buffers = dict(network.named_buffers())

    def fn(theta: torch.Tensor, x: torch.Tensor, c: torch.Tensor | None):
        weights = {**fixed, **buffers, **network.unflatten(theta)}
        return functional_call(network, weights, (x, c))

    return fn, network.flat_parameters()


def _generic_jacobians(net, x, c, hidden: bool = True) -> Jacobians:
    """Per-pattern Jacobians by torch.func; J_h only when ``hidden`` (it holds n H P numbers)."""
    fn, theta = network_function(net)

    def single(theta, xi, ci):
        layers, output = fn(theta, xi[None], None if ci is None else ci[None])
        return (tuple(h[0] for h in layers) if hidden else ()), output[0]

    in_dims = (None, 0, None if c is None else 0)
    layers, output = vmap(jacrev(single), in_dims=in_dims)(theta, x, c)
    return Jacobians(output=output, hidden=tuple(layers))


def _generic_transpose(net, x, c, a):
    fn, theta = network_function(net)
    _, pull = torch.func.vjp(lambda t: fn(t, x, c)[1], theta)
    return vmap(lambda coefficients: pull(coefficients)[0], in_dims=-1)(a).T


def _generic_forward_product(net, x, c, d):
    fn, theta = network_function(net)

    def push(direction):
        return torch.func.jvp(lambda t: fn(t, x, c), (theta,), (direction,))[1]

    hidden, output = vmap(push, in_dims=1)(d)  # (m, ...): out_dims=0 also covers J_h = 0
    return tuple(h.movedim(0, -1) for h in hidden), output.movedim(0, -1)


# -- blocking ---------------------------------------------------------------------------------


def _widths(net: RepresentationNetwork, n_outputs: int) -> int:
    return sum(net.hidden_sizes) + n_outputs


def _column_block(n_parameters: int, m: int) -> int:
    return max(1, min(m, BLOCK_NUMBERS // max(n_parameters, 1)))


def _pattern_block(block_size, net, n_outputs: int, m_cols: int, n: int) -> int:
    if block_size is not None:
        return int(block_size)
    widths = _widths(net, n_outputs)
    per_pattern = widths * (m_cols + n_outputs + max(net.hidden_sizes))
    return max(1, min(n, BLOCK_NUMBERS // per_pattern))


def _blocks(n: int, size: int):
    return [slice(start, min(start + size, n)) for start in range(0, n, size)]


def _rows_of(c, rows):
    return None if c is None else c[rows]


# -- public tensor-level API ------------------------------------------------------------------


def jacobians(network: RepresentationNetwork, patterns: PatternSet, device=None, dtype=None,
              method: str = "auto", hidden: bool = True) -> Jacobians:
    """J_f (n, O, P) and J_h (one (n, H_l, P) per layer) at the network's current weights, with
    respect to the trainable parameters in flat order (``network.flat_parameters()``).
    ``hidden=False`` skips J_h (n H P numbers) and returns an empty ``hidden`` tuple."""
    net, (x, c, _) = _place(network, patterns, device, dtype)
    if _resolve_method(net, method) == "generic":
        return _generic_jacobians(net, x, c, hidden)
    layers = _layers(net, x, c)
    last = len(layers) - 1
    return Jacobians(output=_structured_jacobian(net, layers, last),
                     hidden=tuple(_structured_jacobian(net, layers, t) for t in range(last))
                     if hidden else ())


def ntk_matrix(network: RepresentationNetwork, patterns_a: PatternSet,
               patterns_b: PatternSet | None = None, device=None, dtype=None,
               method: str = "auto") -> torch.Tensor:
    """eNTK Theta[i, o, j, q] = <df_o(x_i)/dtheta, df_q(x'_j)/dtheta>, (n_a, O, n_b, O);
    ``patterns_b=None`` means patterns_a."""
    net, (xa, ca, _) = _place(network, patterns_a, device, dtype)
    same = patterns_b is None
    xb, cb = (xa, ca) if same else _patterns_on(net, patterns_b, "second")[:2]
    if _resolve_method(net, method) == "generic":
        ja = _generic_jacobians(net, xa, ca, hidden=False).output
        jb = ja if same else _generic_jacobians(net, xb, cb, hidden=False).output
        return torch.einsum("iop,jqp->iojq", ja, jb)
    la = _layers(net, xa, ca)
    lb = la if same else _layers(net, xb, cb)
    return _structured_kernel(la, lb, len(la) - 1)


def pseudo_kernel_matrix(network: RepresentationNetwork, probes: PatternSet, train: PatternSet,
                         device=None, dtype=None, method: str = "auto") -> tuple[torch.Tensor, ...]:
    """Pi[i, u, j, q] = <dh_u(x_i)/dtheta, df_q(x'_j)/dtheta>, one (n_p, H_l, n_t, O) per hidden
    layer. Dense: n_p H n_t O numbers; use kernel_product when that is too large."""
    net, (xp, cp, _) = _place(network, probes, device, dtype)
    xt, ct, _ = _patterns_on(net, train, "training")
    if _resolve_method(net, method) == "generic":
        jp = _generic_jacobians(net, xp, cp)
        jt = _generic_jacobians(net, xt, ct, hidden=False).output
        return tuple(torch.einsum("iup,jqp->iujq", jh, jt) for jh in jp.hidden)
    lp, lt = _layers(net, xp, cp), _layers(net, xt, ct)
    return tuple(_structured_kernel(lp, lt, t) for t in range(len(lp) - 1))


class JacobianOperator:
    """J(X) at the network's current weights as a matrix-free linear operator on a fixed pattern
    set X (n patterns, O outputs, P trainable weights), for repeated products such as Lanczos on
    the eNTK Theta = J_f J_f^T.

    Structured networks: each pattern block's forward pass (activations and slopes) is computed
    once; a product J d is then forward-mode differentiation and J^T a backpropagation of all m
    columns at once, every step a plain matrix product with the m columns inside the pattern
    rows (layout (n, m, K)): about 2 n m sum_l K_l (in_l + K_(l+1)) multiply-adds, memory linear
    in n, never (nO)^2. Generic networks: torch.func jvp / vjp per block. The operator keeps what
    it needs, so the network's weights may change afterwards.

      forward(d)   J d for d (P, m): (one (n, H_l, m) per hidden layer or (), (n, O, m))
      transpose(a) J_f^T a for a (n, O, m): (P, m)
      kernel(a)    Theta a = J_f (J_f^T a): (n, O, m)
    """

    def __init__(self, network: RepresentationNetwork, patterns: PatternSet, method: str = "auto",
                 block_size: int | None = None) -> None:
        _check_block_size(block_size)
        net, (x, c, _) = _place(network, patterns, None, None)
        self.structured = _resolve_method(net, method) == "structured"
        self.n, self.n_outputs = len(patterns), patterns.n_outputs
        self.n_parameters = net.n_parameters
        self._shapes = {name: tuple(p.shape) for name, p in net.trainable_parameters().items()}
        self._widths = (*net.hidden_sizes, self.n_outputs)
        size = _pattern_block(block_size, net, self.n_outputs, 1, self.n)
        self._rows = _blocks(self.n, size)
        # columns per product, so that a block's intermediates stay within BLOCK_NUMBERS
        self._columns = max(1, BLOCK_NUMBERS // (size * sum(self._widths)))
        if self.structured:
            self._cached = []
            for rows in self._rows:
                layers = _layers(net, x[rows], _rows_of(c, rows))
                for layer in layers:  # own the chain weights: the network may be reloaded
                    layer.chain = None if layer.chain is None else layer.chain.clone()
                self._cached.append(layers)
        else:
            self._net = copy.deepcopy(net)
            self._x, self._c = x, c

    def forward(self, d: torch.Tensor, hidden: bool = False):
        """J d for directions d (P, m): (hidden layers or (), (n, O, m))."""
        if d.shape[-1] > self._columns:
            parts = [self.forward(d[:, start:start + self._columns], hidden)
                     for start in range(0, d.shape[-1], self._columns)]
            return (tuple(torch.cat(layer, -1) for layer in zip(*(h for h, _ in parts))),
                    torch.cat([f for _, f in parts], -1))
        if self.structured:
            arranged = self._split(d)
            parts = [self._push(layers, arranged, d.shape[-1], hidden) for layers in self._cached]
        else:
            parts = [_generic_forward_product(self._net, self._x[rows], _rows_of(self._c, rows), d)
                     for rows in self._rows]
        outputs = torch.cat([f for _, f in parts])
        layers = tuple(torch.cat(layer) for layer in zip(*(h for h, _ in parts))) if hidden \
            else ()
        return layers, outputs

    def transpose(self, a: torch.Tensor) -> torch.Tensor:
        """J_f^T a = sum_i J_f(x_i)^T a_i for a (n, O, m): (P, m)."""
        if a.shape[-1] > self._columns:
            return torch.cat([self.transpose(a[..., start:start + self._columns])
                              for start in range(0, a.shape[-1], self._columns)], -1)
        if not self.structured:
            return sum(_generic_transpose(self._net, self._x[rows], _rows_of(self._c, rows),
                                          a[rows]) for rows in self._rows)
        columns = a.transpose(1, 2)  # (n, m, O)
        total = None
        for rows, layers in zip(self._rows, self._cached):
            part = self._pull(layers, columns[rows])
            total = part if total is None else {k: total[k].add_(v) for k, v in part.items()}
        return torch.cat([self._finish(name, total[name]) for name in self._shapes])

    def kernel(self, a: torch.Tensor) -> torch.Tensor:
        """Theta a = J_f (J_f^T a) for a (n, O, m): (n, O, m)."""
        return self.forward(self.transpose(a))[1]

    def product_cost(self) -> float:
        """Estimated multiply-adds of one kernel(a) column (used to choose dense or Krylov)."""
        return 4.0 * self.n * (self.n_parameters + self.n_outputs * sum(self._widths))

    # -- structured internals: m columns inside pattern rows, (n, m, K) --------------------------

    def _split(self, d: torch.Tensor) -> dict:
        """Directions d (P, m) per trainable weight: a weight (K, in) as (in, m K), a bias as
        (m, K)."""
        pieces = torch.split(d, [math.prod(shape) for shape in self._shapes.values()])
        arranged = {}
        for (name, shape), piece in zip(self._shapes.items(), pieces):
            if len(shape) == 1:
                arranged[name] = piece.T
            else:
                arranged[name] = piece.view(*shape, -1).permute(1, 2, 0).reshape(shape[1], -1)
        return arranged

    @staticmethod
    def _push(layers: list[_Layer], arranged: dict, m_cols: int, keep_hidden: bool):
        """Forward-mode product through the layers: (hidden (n, K_l, m) or (), (n, O, m))."""
        n = layers[0].post.shape[0]
        tangent, hidden = None, []
        for m, layer in enumerate(layers):
            width, weights = layer.width, [(name, a) for name, a in layer.params if a is not None]
            dz = None
            if weights:  # one product for all of the layer's weights: [a_1 a_2 ..] [D_1; D_2; ..]
                sources = torch.cat([a for _, a in weights], 1)
                dz = sources @ torch.cat([arranged[name] for name, _ in weights])
            if tangent is not None:
                flat = tangent.reshape(-1, tangent.shape[-1])
                chain = layers[m - 1].chain.T
                dz = flat @ chain if dz is None else dz.view(-1, width).addmm_(flat, chain)
            for name, source in layer.params:
                if source is None:  # a bias direction (m, K)
                    dz = (arranged[name].expand(n, -1, -1).clone() if dz is None
                          else dz.view(n, m_cols, width).add_(arranged[name]))
            if dz is not None:
                dz = dz.view(n, m_cols, width)
                tangent = dz if layer.slope is None else dz.mul_(layer.slope[:, None, :])
            if keep_hidden and m < len(layers) - 1:
                hidden.append(tangent.transpose(1, 2) if tangent is not None
                              else layer.post.new_zeros(n, width, m_cols))
        output = (tangent.transpose(1, 2) if tangent is not None
                  else layers[-1].post.new_zeros(n, layers[-1].width, m_cols))
        return tuple(hidden), output

    @staticmethod
    def _pull(layers: list[_Layer], columns: torch.Tensor) -> dict:
        """Backpropagation of output coefficients (n, m, O): per trainable weight, (in, m, K) for a
        weight and (m, K) for a bias."""
        n, m_cols = columns.shape[:2]
        top = layers[-1]
        delta = columns if top.slope is None else columns * top.slope[:, None, :]
        lowest = min((m for m, layer in enumerate(layers) if layer.params), default=len(layers))
        grads = {}
        for m in range(len(layers) - 1, lowest - 1, -1):
            layer = layers[m]
            weights = [(name, a) for name, a in layer.params if a is not None]
            if weights:  # one product for all of the layer's weights
                sources = torch.cat([a for _, a in weights], 1)
                stacked = (sources.T @ delta.reshape(n, -1)).view(-1, m_cols, layer.width)
                grads.update(zip([name for name, _ in weights],
                                 stacked.split([a.shape[1] for _, a in weights])))
            for name, source in layer.params:
                if source is None:
                    grads[name] = delta.sum(0)
            if m > lowest:
                below = layers[m - 1]
                delta = (delta.reshape(-1, layer.width) @ below.chain).view(n, m_cols,
                                                                            below.width)
                if below.slope is not None:
                    delta.mul_(below.slope[:, None, :])
        return grads

    def _finish(self, name: str, grad: torch.Tensor) -> torch.Tensor:
        """One weight's (in, m, K) or bias's (m, K) gradient as flat rows (numel, m)."""
        if grad.ndim == 2:
            return grad.T
        return grad.permute(2, 0, 1).reshape(-1, grad.shape[1])


def _coefficients(a: torch.Tensor, n: int, n_out: int, like: torch.Tensor, name: str):
    if not isinstance(a, torch.Tensor) or a.ndim != 3 or tuple(a.shape[:2]) != (n, n_out):
        shape = tuple(a.shape) if isinstance(a, torch.Tensor) else type(a).__name__
        raise ValueError(f"{name} must be a tensor of shape (n, O, m) = ({n}, {n_out}, m), got "
                         f"{shape}: one (O,) coefficient per training pattern and column")
    return a.to(device=like.device, dtype=like.dtype)


def jacobian_transpose_product(network: RepresentationNetwork, patterns: PatternSet,
                               a: torch.Tensor, device=None, dtype=None, method: str = "auto",
                               block_size: int | None = None) -> torch.Tensor:
    """J_f(patterns)^T a = sum_i J_f(x_i)^T a_i for coefficients a (n, O, m): (P, m), the weight
    change direction of dual coefficients a. Computed in blocks of ``block_size`` patterns
    (automatic when None); J is never formed."""
    net, (x, _, _) = _place(network, patterns, device, dtype, "training")
    n, n_out = len(patterns), patterns.n_outputs
    a = _coefficients(a, n, n_out, x, "a")
    return JacobianOperator(net, patterns, method, block_size).transpose(a)


def jacobian_product(network: RepresentationNetwork, patterns: PatternSet, d: torch.Tensor,
                     device=None, dtype=None, method: str = "auto",
                     block_size: int | None = None
                     ) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
    """J(patterns) d for weight directions d (P, m): (one (n, H_l, m) per hidden layer,
    (n, O, m)), forward mode through the layers in blocks of ``block_size`` patterns."""
    net, (x, _, _) = _place(network, patterns, device, dtype)
    _check_block_size(block_size)
    if not isinstance(d, torch.Tensor) or d.ndim != 2 or d.shape[0] != net.n_parameters:
        raise ValueError(f"d must be a tensor of shape (P, m) = ({net.n_parameters}, m), got "
                         f"{getattr(d, 'shape', type(d).__name__)}: one column per weight "
                         f"direction")
    d = d.to(device=x.device, dtype=x.dtype)
    return JacobianOperator(net, patterns, method, block_size).forward(d, hidden=True)


def kernel_product(network: RepresentationNetwork, probes: PatternSet, train: PatternSet,
                   a: torch.Tensor, target: str = "output", block_size: int | None = None,
                   device=None, dtype=None, method: str = "auto"):
    """K(probes, train) a without forming K: out[i, u, :] = sum_{j, q} K[i, u, j, q] a[j, q, :].

    a (n_t, O, m). target "output": K = Theta, returns (n_p, O, m); "hidden": K = Pi, returns one
    (n_p, H_l, m) per hidden layer. Computed as J(probes) (J_f(train)^T a), patterns in blocks of
    ``block_size`` (None: automatic, about 2^24 numbers per block), columns of a in chunks that
    keep the (P, m_chunk) weight direction under the same budget. Memory beyond the result is
    about block_size (sum_l H_l + O) m_chunk + P m_chunk numbers, never n_p n_t.
    """
    _check_choice("target", target, TARGETS)
    net, (xp, _, _) = _place(network, probes, device, dtype)
    _check_block_size(block_size)
    _patterns_on(net, train, "training")
    a = _coefficients(a, len(train), train.n_outputs, xp, "a")
    train_operator = JacobianOperator(net, train, method, block_size)
    probe_operator = JacobianOperator(net, probes, method, block_size)
    step = _column_block(net.n_parameters, a.shape[-1])
    parts = [probe_operator.forward(train_operator.transpose(a[..., start:start + step]),
                                    hidden=target == "hidden")
             for start in range(0, a.shape[-1], step)]
    if target == "output":
        return torch.cat([output for _, output in parts], dim=-1)
    return tuple(torch.cat(layer, dim=-1) for layer in zip(*(hidden for hidden, _ in parts)))


def weighted_kernel_matrix(network: RepresentationNetwork, probes: PatternSet,
                           train: PatternSet, weights: torch.Tensor, target: str = "output",
                           device=None, dtype=None, method: str = "auto"):
    """sum_q K[i, u, j, q] w[j, q], not summed over the training patterns j, for weights w
    (n_t, O): (n_p, O, n_t) for target "output" (Theta), one (n_p, H_l, n_t) per hidden layer
    for "hidden" (Pi). With w = loss gradients this is the loss-weighted kernel up to -rho."""
    _check_choice("target", target, TARGETS)
    net, (xp, cp, _) = _place(network, probes, device, dtype)
    n_t, n_out = len(train), train.n_outputs
    if not isinstance(weights, torch.Tensor) or tuple(weights.shape) != (n_t, n_out):
        raise ValueError(f"weights must be a tensor of shape (n_t, O) = ({n_t}, {n_out}), got "
                         f"{getattr(weights, 'shape', type(weights).__name__)}")
    weights = weights.to(device=xp.device, dtype=xp.dtype)
    if _resolve_method(net, method) == "generic":
        eye = torch.eye(n_t, dtype=xp.dtype, device=xp.device)
        a = weights[:, :, None] * eye[:, None, :]  # column j carries pattern j only
        return kernel_product(net, probes, train, a, target=target, method="generic")
    xt, ct, _ = _patterns_on(net, train, "training")
    lp, lt = _layers(net, xp, cp), _layers(net, xt, ct)
    last = len(lp) - 1
    if target == "output":
        return _structured_weighted(lp, lt, last, weights)
    return tuple(_structured_weighted(lp, lt, t, weights) for t in range(last))


# -- xarray-level API -------------------------------------------------------------------------


def _item_coords(patterns: PatternSet, dim: str, prefix: str = "", suffix: str = "") -> dict:
    coords = {}
    for name, (_, values) in patterns.coords().items():
        key = dim if name == "item" else f"{prefix}{name}{suffix}"
        coords[key] = (dim, values)
    return coords


def _numpy(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().numpy()


def _hidden_array(layers: Sequence[torch.Tensor], dims: tuple[str, ...], unit_axis: int,
                  coords: dict, name: str, attrs: dict) -> xr.DataArray:
    if len(layers) == 1:
        data, dims_out = _numpy(layers[0]), dims
    else:
        data, dims_out = stack_hidden(layers, unit_axis), ("layer", *dims)
        coords = {**coords, "layer": ("layer", np.arange(len(layers)))}
    coords = {**coords, "unit": ("unit", np.arange(data.shape[len(dims_out) - len(dims)
                                                                 + unit_axis]))}
    return xr.DataArray(data, dims=dims_out, coords=coords, name=name, attrs=attrs)


def _attrs(net, method: str, **extra) -> dict:
    weight = next(iter(net.parameters()))
    return {"method": method, "device": str(weight.device),
            "dtype": str(weight.dtype).replace("torch.", ""),
            "trainable": ",".join(net.trainable_names()), **extra}


def ntk(network: RepresentationNetwork, patterns_a: PatternSet,
        patterns_b: PatternSet | None = None, method: str = "auto", device=None,
        dtype=None) -> xr.DataArray:
    """eNTK Theta(x, x') = J_f(x) J_f(x')^T as a DataArray with dims
    (item, output_unit, item_b, output_unit_b); ``patterns_b=None`` means patterns_a.

    Item labels become coordinates (those of patterns_b with a ``_b`` suffix). DESIGN.md's dims
    (item, output, item_b, output_b) are named output_unit(_b) here: see the module docstring.
    """
    net = _network(network, device, dtype)
    values = ntk_matrix(net, patterns_a, patterns_b, method=method)
    other = patterns_a if patterns_b is None else patterns_b
    n_out = values.shape[1]
    coords = {**_item_coords(patterns_a, "item"), **_item_coords(other, "item_b", suffix="_b"),
              "output_unit": ("output_unit", np.arange(n_out)),
              "output_unit_b": ("output_unit_b", np.arange(n_out))}
    return xr.DataArray(_numpy(values), dims=("item", "output_unit", "item_b", "output_unit_b"),
                        coords=coords, name="ntk",
                        attrs=_attrs(net, _resolve_method(net, method),
                                     equation="Theta[i,o,j,q] = <df_o(x_i)/dtheta, "
                                              "df_q(x'_j)/dtheta>"))


def pseudo_kernel(network: RepresentationNetwork, probes: PatternSet, train: PatternSet,
                  method: str = "auto", device=None, dtype=None) -> xr.DataArray:
    """Pseudo-kernel Pi(x, x') = J_h(x) J_f(x')^T as a DataArray with dims
    (item, unit, train_item, output_unit), plus a leading ``layer`` dim (narrower layers padded
    with NaN) when the network has several hidden layers. Training-pattern labels become
    coordinates with a ``train_`` prefix. Dense (n_p H n_t O numbers): for large sets use
    kernel_product."""
    net = _network(network, device, dtype)
    layers = pseudo_kernel_matrix(net, probes, train, method=method)
    coords = {**_item_coords(probes, "item"),
              **_item_coords(train, "train_item", prefix="train_"),
              "output_unit": ("output_unit", np.arange(train.n_outputs))}
    return _hidden_array(layers, ("item", "unit", "train_item", "output_unit"), 1, coords,
                         "pseudo_kernel",
                         _attrs(net, _resolve_method(net, method),
                                equation="Pi[i,u,j,q] = <dh_u(x_i)/dtheta, df_q(x'_j)/dtheta>"))


def loss_rate(n: int, stage: Stage | None = None, lr: float | None = None,
              reduction: str | None = None) -> float:
    """rho, the weight of each pattern's gradient in one expected step: eta / n (mean reduction)
    or eta (sum) for full batch; Stage.drift_rate / n for a stage (its expected drift, which is
    the same for full-batch stages)."""
    if stage is not None:
        if lr is not None or reduction is not None:
            raise ValueError("give either stage= or lr= and reduction=, not both: the stage "
                             "already sets the learning rate and the reduction")
        return stage.drift_rate / len(stage.patterns)
    if lr is None:
        raise ValueError("the loss-weighted kernel needs a learning rate: give stage= or lr= "
                         "(and reduction=, default 'mean')")
    if not (isinstance(lr, (int, float, np.floating)) and np.isfinite(lr) and lr > 0):
        raise ValueError(f"lr must be a positive finite number, got {lr!r}")
    reduction = reduction or "mean"
    _check_choice("reduction", reduction, REDUCTIONS)
    return float(lr) / n if reduction == "mean" else float(lr)


def loss_weighted_kernel(network: RepresentationNetwork, probes: PatternSet,
                         train: PatternSet | None = None, stage: Stage | None = None,
                         lr: float | None = None, reduction: str | None = None,
                         loss: str | None = None, target: str = "output",
                         method: str = "auto", device=None, dtype=None) -> xr.DataArray:
    """The published loss-weighted kernel PNTK(x, x_j) = -rho J(x) J_f(x_j)^T g_j.

    g_j = grad_f l(f(x_j), y_j) (repkernel.losses; f - y for mse), rho = eta / n for mean
    reduction and eta for sum (``loss_rate``); ``stage`` supplies eta, the reduction, the loss and
    (when ``train`` is None) the training patterns. target "output" (J = J_f): dims
    (item, output_unit, train_item); "hidden" (J = J_h): (item, unit, train_item), with a leading
    ``layer`` dim for several hidden layers. Summed over train_item it is the first-order change
    of f (or h) on the probes after one full-batch gradient step.
    """
    _check_choice("target", target, TARGETS)
    if train is None:
        if stage is None:
            raise ValueError("give the training patterns: train= or stage=")
        train = stage.patterns
    loss = loss or (stage.loss if stage is not None else "mse")
    check_loss(loss, "mean")
    rate = loss_rate(len(train), stage, lr, reduction)
    net = _network(network, device, dtype)
    x, c, y = _patterns_on(net, train, "training")
    with torch.no_grad():
        _, f = net(x, c)
    grads = loss_gradient(f, y, loss)
    values = weighted_kernel_matrix(net, probes, train, grads, target=target, method=method)
    attrs = _attrs(net, _resolve_method(net, method), rate=rate, loss=loss, target=target,
                   equation="PNTK[i,u,j] = -rho sum_q K[i,u,j,q] g[j,q]")
    coords = {**_item_coords(probes, "item"),
              **_item_coords(train, "train_item", prefix="train_")}
    if target == "output":
        coords["output_unit"] = ("output_unit", np.arange(train.n_outputs))
        return xr.DataArray(_numpy(-rate * values), dims=("item", "output_unit", "train_item"),
                            coords=coords, name="loss_weighted_kernel", attrs=attrs)
    return _hidden_array([-rate * v for v in values], ("item", "unit", "train_item"), 1, coords,
                         "loss_weighted_kernel", attrs)


# -- the published t = 0 eigen-analysis (grouping helpers: repkernel.eigen) -------------------

DECOMPOSITIONS = ("auto", "eig", "svd")


def loss_kernel_matrices(network: RepresentationNetwork, probes: PatternSet,
                         train: PatternSet | None = None, loss: str = "mse",
                         method: str = "auto", device=None, dtype=None) -> torch.Tensor:
    """M[o, i, j] = <grad_theta l_j, grad_theta f_o(x_i)>, (O, n_p, n_t); train=None: probes."""
    check_loss(loss, "mean")
    train = probes if train is None else train
    net = _network(network, device, dtype)
    x, c, y = _patterns_on(net, train, "training")
    with torch.no_grad():
        _, f = net(x, c)
    g = loss_gradient(f, y, loss)
    return weighted_kernel_matrix(net, probes, train, g, method=method).permute(1, 0, 2)


def kernel_eigenvectors(network: RepresentationNetwork, probes: PatternSet,
                        train: PatternSet | Stage | None = None, n_eigenvectors: int = 3,
                        loss: str | None = None, decomposition: str = "auto",
                        method: str = "auto", device=None, dtype=None) -> xr.DataArray:
    """Leading eigenvectors of M_o per output unit o (module docstring).

    ``train``: the patterns whose loss gradients weight the kernel, or a Stage (its patterns and
    loss); None means the probes themselves (the published analysis: a square M_o).
    decomposition "eig": eigenvectors of the square M_o (train = probes), ordered by |eigenvalue|;
    "svd": left singular vectors (probe side) by singular value, for probes other than the
    training patterns; "auto": "eig" exactly when train is the probes.

    Returns the DataArray ``eigenvector`` (output_unit, rank, item): unit-norm vectors with the
    phase fixed so that the largest entry is real positive (real part kept; abs() gives the
    phase-free |components| the heatmaps show), the probes' labels as item coordinates, and
    coordinates eigenvalue(output_unit, rank) (real part, or the singular value) and
    eigenvalue_imag(output_unit, rank).
    """
    _check_decomposition(decomposition)
    if isinstance(train, Stage):
        loss = loss or train.loss
        train = train.patterns
    square = train is None or train is probes or (
        len(train) == len(probes) and train.fingerprint() == probes.fingerprint())
    if decomposition == "auto":
        decomposition = "eig" if square else "svd"
    if decomposition == "eig" and not square:
        raise ValueError("decomposition='eig' needs the training patterns as probes (a square "
                         "M_o): pass train=None, or use decomposition='svd'")
    if not (isinstance(n_eigenvectors, (int, np.integer)) and 1 <= n_eigenvectors <= len(probes)):
        raise ValueError(f"n_eigenvectors must be an integer in 1..{len(probes)} (the number of "
                         f"probes), got {n_eigenvectors!r}")
    loss = loss or "mse"
    net = _network(network, device, dtype)
    matrices = loss_kernel_matrices(net, probes, train, loss, method).cpu().numpy()
    n_out, k = matrices.shape[0], int(n_eigenvectors)
    vectors = np.empty((n_out, k, len(probes)), dtype=complex)
    values = np.empty((n_out, k), dtype=complex)
    for o, matrix in enumerate(matrices):
        if decomposition == "eig":
            w, v = np.linalg.eig(matrix)
            order = np.argsort(-np.abs(w), kind="stable")[:k]
            values[o], vectors[o] = w[order], v[:, order].T
        else:
            u, singular, _ = np.linalg.svd(matrix, full_matrices=False)
            values[o], vectors[o] = singular[:k], u[:, :k].T
    vectors /= np.linalg.norm(vectors, axis=-1, keepdims=True)
    largest = np.take_along_axis(vectors, np.abs(vectors).argmax(-1)[..., None], axis=-1)
    vectors *= np.conj(largest) / np.abs(largest)  # largest entry real positive
    coords = {**_item_coords(probes, "item"), "output_unit": np.arange(n_out),
              "rank": np.arange(k),
              "eigenvalue": (("output_unit", "rank"), values.real),
              "eigenvalue_imag": (("output_unit", "rank"), values.imag)}
    attrs = _attrs(net, _resolve_method(net, method), decomposition=decomposition, loss=loss,
                   equation="M_o[i,j] = <grad_theta l_j, grad_theta f_o(x_i)> "
                            "= sum_q Theta[i,o,j,q] g[j,q]")
    return xr.DataArray(vectors.real, dims=("output_unit", "rank", "item"), coords=coords,
                        name="eigenvector", attrs=attrs)


def _check_decomposition(decomposition: str) -> None:
    if decomposition not in DECOMPOSITIONS:
        raise ValueError(f"decomposition must be one of {list(DECOMPOSITIONS)}, got "
                         f"{decomposition!r}")
