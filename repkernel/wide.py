"""The infinite-width limit of fully connected networks (DESIGN.md section 8), in the conventions
of the Neural Tangents library, and the finite networks it is the limit of.

Network: ``depth`` hidden layers of stax.Dense(width, W_std, b_std) followed by the activation,
then a readout stax.Dense(1, W_std, b_std) (scalar output). Per Dense layer with n_in inputs a:
  "ntk"       W_ij, b_i ~ N(0, 1),                z = W_std / sqrt(n_in) W a + b_std b
  "standard"  W_ij ~ N(0, W_std^2 / n_in), b_i ~ N(0, b_std^2),   z = W a + b
``b_std=None`` means no bias at all; ``b_std=0.0`` a bias initialized at zero (in the standard
parameterization it still trains, adding 1 to the NTK, as in Neural Tangents).

Kernel recursions over the Dense layers (u, v ~ N(0, [[K(x,x), K(x,x')], [K(x',x), K(x',x')]])),
starting from the input covariance K^0 = x x'^T / d and Theta^0 = 0:
  Dense, "ntk":       K <- W_std^2 K + b_std^2,   Theta <- K(new) + W_std^2 Theta
  Dense, "standard":  Theta <- n_in K + W_std^2 Theta + [bias],   K <- W_std^2 K + b_std^2
                      (n_in = d for the first layer, ``width`` after; the standard-
                      parameterization NTK grows with the width, so ``width`` is required)
  activation:         K <- E[phi(u) phi(v)],   Theta <- E[phi'(u) phi'(v)] Theta
Closed forms (cos t = K12 / sqrt(K11 K22)):
  relu (arc-cosine kernels of degree 1 and 0):
      E[phi phi] = sqrt(K11 K22) (sin t + (pi - t) cos t) / (2 pi)
      E[phi' phi'] = (pi - t) / (2 pi)
  erf (arcsine kernel):
      E[phi phi] = (2 / pi) arcsin(2 K12 / sqrt((1 + 2 K11)(1 + 2 K22)))
      E[phi' phi'] = (4 / pi) / sqrt((1 + 2 K11)(1 + 2 K22) - 4 K12^2)
Sigmoid and tanh have no closed form: use the Monte-Carlo kernel (repkernel.ensembles); erf is
the usual stand-in for sigmoid.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import xarray as xr
from torch import nn

from repkernel.kernels import ntk_matrix, pseudo_kernel_matrix
from repkernel.networks import ACTIVATIONS, MLP, RepresentationNetwork
from repkernel.patterns import PatternSet
from repkernel.results import provenance

CLOSED_FORMS = ("relu", "erf")
PARAMETERIZATIONS = ("ntk", "standard")
WIDE_ACTIVATIONS = {"relu": torch.relu, "erf": torch.erf}


def _check_closed_form(activation) -> None:
    if activation not in CLOSED_FORMS:
        raise ValueError(f"activation {activation!r} has no closed-form infinite-width kernel: "
                         f"choose one of {list(CLOSED_FORMS)}, or estimate the kernel with "
                         f"repkernel.monte_carlo_kernel (erf stands in for sigmoid)")


def _check_architecture(depth, w_std, b_std, parameterization) -> None:
    if not isinstance(depth, (int, np.integer)) or depth < 0:
        raise ValueError(f"depth must be a non-negative number of hidden layers, got {depth!r}")
    if parameterization not in PARAMETERIZATIONS:
        raise ValueError(f"parameterization must be one of {list(PARAMETERIZATIONS)}, "
                         f"got {parameterization!r}")
    if not (np.isfinite(w_std) and w_std > 0):
        raise ValueError(f"w_std must be a positive finite number, got {w_std!r}")
    if b_std is not None and not (np.isfinite(b_std) and b_std >= 0):
        raise ValueError(f"b_std must be None (no bias) or a finite number >= 0, got {b_std!r}")


def _check_width(width, name: str = "width") -> int:
    if not isinstance(width, (int, np.integer)) or width < 1:
        raise ValueError(f"{name} must be a positive number of units, got {width!r}")
    return int(width)


def _inputs(x, name: str) -> torch.Tensor:
    if isinstance(x, PatternSet):
        return x.x
    if not isinstance(x, torch.Tensor) or x.ndim != 2 or x.shape[0] == 0:
        raise ValueError(f"{name} must be a PatternSet or a 2-D tensor (n, d) of inputs, got "
                         f"{getattr(x, 'shape', type(x).__name__)}")
    if not x.is_floating_point() or not torch.isfinite(x).all():
        raise ValueError(f"{name} must hold finite floating-point inputs")
    return x


def _relu_moments(k11, k12, k22):
    """E[relu(u) relu(v)] and E[step(u) step(v)] for the given (co)variances (arc-cosine)."""
    norm = torch.sqrt(k11 * k22)
    cos = (k12 / norm.clamp_min(torch.finfo(k12.dtype).tiny)).clamp(-1.0, 1.0)
    angle = torch.arccos(cos)
    value = norm * (torch.sin(angle) + (math.pi - angle) * cos) / (2 * math.pi)
    return value, (math.pi - angle) / (2 * math.pi)


def _erf_moments(k11, k12, k22):
    """E[erf(u) erf(v)] and E[erf'(u) erf'(v)] (arcsine kernel and its derivative kernel)."""
    scale = (1 + 2 * k11) * (1 + 2 * k22)
    value = (2 / math.pi) * torch.arcsin((2 * k12 / torch.sqrt(scale)).clamp(-1.0, 1.0))
    return value, (4 / math.pi) / torch.sqrt(scale - 4 * k12 * k12)


MOMENTS = {"relu": _relu_moments, "erf": _erf_moments}


def kernel_recursion(x: torch.Tensor, depth: int, activation: str = "relu", w_std: float = 1.0,
                     b_std: float | None = 0.0, parameterization: str = "ntk",
                     width: int | None = None):
    """NNGP K (N, N), NTK Theta (N, N) of the readout and the post-activation NNGP of every
    hidden layer, (depth, N, N), for inputs x (N, d); on x's device and dtype. Equations in the
    module docstring."""
    _check_closed_form(activation)
    _check_architecture(depth, w_std, b_std, parameterization)
    standard = parameterization == "standard"
    if standard:
        width = _check_width(width, "width (needed by the standard-parameterization NTK)")
    bias_var = 0.0 if b_std is None else b_std**2
    moments = MOMENTS[activation]
    nngp = x @ x.T / x.shape[1]
    ntk = torch.zeros_like(nngp)
    hidden = []
    for layer in range(depth + 1):
        fan_in = x.shape[1] if layer == 0 else width
        if standard:
            ntk = fan_in * nngp + w_std**2 * ntk + (0.0 if b_std is None else 1.0)
            nngp = w_std**2 * nngp + bias_var
        else:
            nngp = w_std**2 * nngp + bias_var
            ntk = nngp + w_std**2 * ntk
        if layer < depth:
            diag = torch.diagonal(nngp)
            nngp, slope = moments(diag[:, None], nngp, diag[None, :])
            nngp = (nngp + nngp.T) / 2  # exact symmetry despite round-off in arccos/arcsin
            ntk = slope * ntk
            hidden.append(nngp)
    hidden = torch.stack(hidden) if hidden else nngp.new_zeros(0, *nngp.shape)
    return nngp, ntk, hidden


def infinite_width_kernels(x: torch.Tensor | PatternSet, depth: int, activation: str = "relu",
                           w_std: float = 1.0, b_std: float | None = 0.0,
                           parameterization: str = "ntk", x_b: torch.Tensor | PatternSet | None
                           = None, width: int | None = None) -> xr.Dataset:
    """Infinite-width NNGP and NTK of a scalar-output MLP with ``depth`` hidden layers, as Neural
    Tangents' stax.serial([Dense(width, W_std, b_std), Relu() or Erf()] * depth,
    Dense(1, W_std, b_std)) computes them (module docstring for the equations).

    x (n, d) inputs or a PatternSet (its stimuli x); x_b a second set (default: x). Returns a
    Dataset with nngp(item, item_b) (the prior covariance of the output at initialization),
    ntk(item, item_b), and hidden_nngp(layer, item, item_b), the limit of <h_l(x), h_l(x')> / width
    for each hidden layer (in the NTK-parameterized limit the hidden layers do not move under
    gradient descent, so hidden_nngp is also the infinite-width forecast of the hidden
    covariance at every step; the output forecast is repkernel.posterior with these kernels);
    item coords from PatternSets, attrs config + version. ``width`` is
    needed only for parameterization="standard" (whose NTK grows with it). Computed on x's device
    and dtype.
    """
    xa = _inputs(x, "x")
    xb = xa if x_b is None else _inputs(x_b, "x_b").to(device=xa.device, dtype=xa.dtype)
    if xb.shape[1] != xa.shape[1]:
        raise ValueError(f"x and x_b must have the same input dimension, got {xa.shape[1]} and "
                         f"{xb.shape[1]}")
    n = xa.shape[0]
    joint = xa if x_b is None else torch.cat([xa, xb])
    nngp, ntk, hidden = kernel_recursion(joint, depth, activation, w_std, b_std,
                                         parameterization, width)
    block = (slice(0, n), slice(0, n) if x_b is None else slice(n, None))
    coords = {"item": np.arange(n), "item_b": np.arange(xb.shape[0]),
              "layer": np.arange(depth)}
    for source, dim in ((x, "item"), (x if x_b is None else x_b, "item_b")):
        if isinstance(source, PatternSet):
            suffix = "" if dim == "item" else "_b"
            coords.update({(dim if name == "item" else f"{name}{suffix}"): (dim, values)
                           for name, (_, values) in source.coords().items()})
    config = {"kind": "infinite_width_mlp", "depth": int(depth), "activation": activation,
              "w_std": float(w_std), "b_std": None if b_std is None else float(b_std),
              "parameterization": parameterization, "width": width,
              "conventions": "neural_tangents stax.Dense + activation, readout Dense"}
    return xr.Dataset(
        {"nngp": (("item", "item_b"), nngp[block].cpu().numpy()),
         "ntk": (("item", "item_b"), ntk[block].cpu().numpy()),
         "hidden_nngp": (("layer", "item", "item_b"), hidden[(slice(None), *block)].cpu().numpy())},
        coords=coords, attrs=provenance(config, xa.device, xa.dtype, "infinite_width"))


class WideMLP(RepresentationNetwork):
    """The finite network whose limit infinite_width_kernels computes: ``depth`` hidden layers of
    ``width`` units, scalar linear readout, Gaussian init, "ntk" or "standard" parameterization
    (module docstring). forward(x, c) -> ((h_1, ..., h_depth), f), c ignored.
    Weight groups ``layers.{i}.weight`` (fan_out, fan_in) and ``layers.{i}.bias`` (fan_out,).
    ``activation`` may also be "sigmoid" or "tanh" (no closed-form limit; Monte-Carlo only).
    """

    def __init__(self, n_inputs: int, width: int, depth: int = 1, activation: str = "relu",
                 w_std: float = 1.0, b_std: float | None = 0.0, parameterization: str = "ntk",
                 seed: int = 0) -> None:
        super().__init__()
        _check_width(n_inputs, "n_inputs")
        _check_width(width)
        _check_architecture(depth, w_std, b_std, parameterization)
        if depth < 1:
            raise ValueError(f"a WideMLP needs at least one hidden layer, got depth={depth}")
        activations = {**WIDE_ACTIVATIONS, "sigmoid": torch.sigmoid, "tanh": torch.tanh}
        if activation not in activations:
            raise ValueError(f"activation must be one of {sorted(activations)}, "
                             f"got {activation!r}")
        self.phi = activations[activation]
        self.w_std, self.b_std, self.standard = w_std, b_std, parameterization == "standard"
        g = torch.Generator().manual_seed(seed)
        sizes = [n_inputs] + [width] * depth + [1]
        self.layers = nn.ModuleList()
        for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
            layer = nn.Module()
            w_scale = w_std / math.sqrt(fan_in) if self.standard else 1.0
            b_scale = (b_std or 0.0) if self.standard else 1.0
            layer.weight = self._normal(g, (fan_out, fan_in), w_scale)
            layer.bias = None if b_std is None else self._normal(g, (fan_out,), b_scale)
            self.layers.append(layer)
        self.config = {"kind": "wide_mlp", "n_inputs": n_inputs, "width": width, "depth": depth,
                       "activation": activation, "w_std": w_std, "b_std": b_std,
                       "parameterization": parameterization, "seed": seed}

    @staticmethod
    def _normal(g: torch.Generator, shape: tuple[int, ...], scale: float) -> nn.Parameter:
        draw = torch.randn(shape, generator=g, dtype=torch.float64) * scale
        return nn.Parameter(draw.to(torch.get_default_dtype()))

    @property
    def hidden_sizes(self) -> tuple[int, ...]:
        return tuple(layer.weight.shape[0] for layer in self.layers[:-1])

    def _dense(self, layer, a: torch.Tensor) -> torch.Tensor:
        if self.standard:
            z = a @ layer.weight.T
            return z if layer.bias is None else z + layer.bias
        z = a @ layer.weight.T * (self.w_std / math.sqrt(a.shape[-1]))
        return z if layer.bias is None else z + self.b_std * layer.bias

    def forward(self, x: torch.Tensor, c: torch.Tensor | None = None):
        hidden, a = [], x
        for layer in self.layers[:-1]:
            a = self.phi(self._dense(layer, a))
            hidden.append(a)
        return tuple(hidden), self._dense(self.layers[-1], a)



def equivalent_mlp(network: WideMLP) -> tuple[MLP, dict[str, float]]:
    """A repkernel MLP computing the same function as ``network`` (standard-form weights
    W' = W_std / sqrt(n_in) W, b' = b_std b in the NTK parameterization, the weights themselves
    in the standard one) and the factor c_g of each weight group, such that
        eNTK(network) = sum_g c_g J'_g J'_g^T,   c_W = W_std^2 / n_in, c_b = b_std^2 ("ntk"),
                                                 c_g = 1 ("standard"),
    J'_g the Jacobian of the MLP with respect to group g. This lets the structured kernels of
    repkernel.kernels (relu, sigmoid, tanh) serve the NTK parameterization.
    """
    activation = network.config["activation"]
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation {activation!r} has no repkernel MLP equivalent: use "
                         f"repkernel.ntk_matrix on the WideMLP itself (generic path)")
    weight = network.layers[0].weight
    sizes = [weight.shape[1], *network.hidden_sizes, 1]
    mlp = MLP(sizes, activation=activation, bias=network.b_std is not None)
    mlp = mlp.to(device=weight.device, dtype=weight.dtype)
    factors, pieces = {}, []
    for i, (layer, fan_in) in enumerate(zip(network.layers, sizes[:-1])):
        w_scale = 1.0 if network.standard else network.w_std / math.sqrt(fan_in)
        pieces.append(layer.weight.detach().reshape(-1) * w_scale)
        factors[f"layers.{i}.weight"] = 1.0 if network.standard else w_scale**2
        if layer.bias is not None:
            b_scale = 1.0 if network.standard else network.b_std
            pieces.append(layer.bias.detach() * b_scale)
            factors[f"layers.{i}.bias"] = 1.0 if network.standard else b_scale**2
    mlp.load_flat_parameters(torch.cat(pieces))
    return mlp, factors


def _group_weighted(network: WideMLP, kernel_of):
    """sum_g c_g kernel_of(MLP trainable in group g only) (see equivalent_mlp); one call when
    every c_g is 1."""
    mlp, factors = equivalent_mlp(network)
    if network.standard:
        return kernel_of(mlp)
    total = None
    for group, factor in factors.items():
        if factor == 0.0:
            continue
        part = kernel_of(mlp.set_trainable(group))
        part = tuple(p * factor for p in part) if isinstance(part, tuple) else part * factor
        total = part if total is None else (
            tuple(t + p for t, p in zip(total, part)) if isinstance(part, tuple) else total + part)
    return total


def wide_ntk_matrix(network: WideMLP, patterns_a: PatternSet,
                    patterns_b: PatternSet | None = None) -> torch.Tensor:
    """eNTK of a WideMLP with respect to its own parameters, (n_a, 1, n_b, 1), equal to
    repkernel.ntk_matrix(network, ...) but through the structured kernels (equivalent_mlp) when
    the activation allows, which is what makes widths in the thousands affordable."""
    if network.config["activation"] not in ACTIVATIONS:
        return ntk_matrix(network, patterns_a, patterns_b)
    return _group_weighted(network, lambda mlp: ntk_matrix(mlp, patterns_a, patterns_b))


def wide_pseudo_kernel_matrix(network: WideMLP, probes: PatternSet,
                              train: PatternSet) -> tuple[torch.Tensor, ...]:
    """Pseudo-kernel J_h J_f^T of a WideMLP, one (n_p, width, n_t, 1) per hidden layer, equal to
    repkernel.pseudo_kernel_matrix(network, ...) (structured when the activation allows)."""
    if network.config["activation"] not in ACTIVATIONS:
        return pseudo_kernel_matrix(network, probes, train)
    return _group_weighted(network, lambda mlp: pseudo_kernel_matrix(mlp, probes, train))
