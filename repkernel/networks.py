"""Networks whose hidden representations repkernel forecasts.

Every network maps (x, c) to ``(hidden, output)``: ``hidden`` a tuple with one (n, H_l) tensor per
hidden layer (after the activation), ``output`` (n, O). Trainable weights are ``nn.Parameter``s
with ``requires_grad``; fixed biases are buffers, so "the trainable parameters" is always
``[p for p in network.parameters() if p.requires_grad]`` in registration order.

Weights are drawn once from a seeded generator in float64 and multiplied by ``init_scale``, so
networks that differ only in ``init_scale`` are the same draw scaled (as published).
"""

from __future__ import annotations

import copy
import inspect
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from repkernel.environments import MultitaskEnvironment
from repkernel.patterns import PatternSet

ACTIVATIONS = {
    "sigmoid": torch.sigmoid,
    "relu": torch.relu,
    "tanh": torch.tanh,
    "linear": lambda z: z,
}


def _activation(name: str):
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}: choose one of {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[name]


def _units(value, name: str) -> int:
    """A layer width: a whole number >= 1 (ValueError naming ``name`` otherwise)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a whole number of units >= 1, got {value!r}: e.g. "
                         f"{name}=100")
    return int(value)


def _init_scale(value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.number)) or not (
            math.isfinite(value) and value > 0):
        raise ValueError(f"init_scale must be a positive finite number, got {value!r}: e.g. "
                         f"0.1 (standard) or 1.0 (large)")
    return value


def _uniform(generator: torch.Generator, shape: tuple[int, ...], bound: float,
             dtype: torch.dtype) -> nn.Parameter:
    draw = torch.rand(shape, generator=generator, dtype=torch.float64) * 2.0 - 1.0
    return nn.Parameter((draw * bound).to(dtype))


class RepresentationNetwork(nn.Module):
    """Base class of every network repkernel forecasts; the contract a new network fulfils.

    A subclass defines, and the rest of repkernel relies on nothing else:
      __init__(*options, seed, dtype=None)  weights drawn from ``seed``, in ``dtype`` (None: the
                                        torch default dtype); with ``needs_environment`` the
                                        first argument is the MultitaskEnvironment
      forward(x (n, D), c (n, C) or None) -> (hidden, output): hidden a tuple with one
                                        (n, H_l) tensor per hidden layer, after the activation;
                                        output (n, O)
      hidden_sizes                      (H_1, ..., H_L)
      config                            {"kind": its NETWORKS name, every constructor option}:
                                        network_from_config(config) rebuilds the same weights
    Trainable weights are nn.Parameters (set_trainable chooses which train); fixed tensors are
    buffers. Everything else (represent, flat parameters, trainable groups) is provided here.
    Registering the class in NETWORKS makes it available to configs, studies and the
    rebuilding of networks from saved results.
    """

    config: dict
    needs_environment: bool = False

    def forward(self, x: torch.Tensor, c: torch.Tensor | None = None
                ) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
        raise NotImplementedError(f"{type(self).__name__} must define forward(x, c) -> "
                                  f"(hidden tuple, output)")

    def check_inputs(self, x: torch.Tensor, c: torch.Tensor | None) -> torch.Tensor:
        """The output (n, O) on a few patterns, run to check that the network takes them
        (ValueError, or the RuntimeError of a shape mismatch, when not); a subclass adds its
        own checks (repkernel.wrapped)."""
        with torch.no_grad():
            return self(x, c)[1]

    def represent(self, patterns: PatternSet) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
        """Hidden representations (one (n, H_l) per layer) and output (n, O) for a PatternSet,
        on this network's device and dtype."""
        weight = next(iter(self.parameters()))
        x, c, _ = patterns.to(weight.device, weight.dtype)
        return self(x, c)

    @property
    def hidden_sizes(self) -> tuple[int, ...]:
        raise NotImplementedError(f"{type(self).__name__} must define hidden_sizes")

    def trainable_names(self) -> list[str]:
        return [name for name, p in self.named_parameters() if p.requires_grad]

    def set_trainable(self, names: str | Sequence[str] = "all") -> RepresentationNetwork:
        """Choose which weight groups train, e.g. ``["hidden_output"]`` for the readout only."""
        all_names = [name for name, _ in self.named_parameters()]
        chosen = all_names if names == "all" else [names] if isinstance(names, str) else list(names)
        unknown = set(chosen) - set(all_names)
        if unknown or not chosen:
            raise ValueError(f"trainable weight groups {sorted(unknown) or chosen} are not valid:"
                             f" choose from {all_names}")
        for name, p in self.named_parameters():
            p.requires_grad_(name in chosen)
        self.config = {**self.config, "trainable": chosen}
        return self

    def trainable_parameters(self) -> dict[str, torch.Tensor]:
        return {name: p for name, p in self.named_parameters() if p.requires_grad}

    def parameter_groups(self) -> np.ndarray:
        """Weight-group name of every entry of the flat parameter vector, (P,)."""
        return np.concatenate([np.full(p.numel(), name, dtype=object)
                               for name, p in self.trainable_parameters().items()]).astype(str)

    @property
    def n_parameters(self) -> int:
        return sum(p.numel() for p in self.trainable_parameters().values())

    def flat_parameters(self) -> torch.Tensor:
        """Trainable weights as one vector theta, (P,), in registration order."""
        return torch.cat([p.detach().reshape(-1) for p in self.trainable_parameters().values()])

    def unflatten(self, theta: torch.Tensor) -> dict[str, torch.Tensor]:
        """Split a flat (P,) vector into named tensors shaped like the trainable parameters."""
        params = self.trainable_parameters()
        if theta.shape != (self.n_parameters,):
            raise ValueError(f"flat parameter vector must have shape ({self.n_parameters},), "
                             f"got {tuple(theta.shape)}")
        pieces = torch.split(theta, [p.numel() for p in params.values()])
        return {name: piece.reshape(p.shape) for (name, p), piece in zip(params.items(), pieces)}

    @torch.no_grad()
    def load_flat_parameters(self, theta: torch.Tensor) -> RepresentationNetwork:
        """Set the trainable weights from a flat (P,) vector (in place); returns self."""
        params = self.trainable_parameters()
        for name, value in self.unflatten(torch.as_tensor(theta)).items():
            params[name].copy_(value)
        return self


def check_device(device) -> torch.device:
    """torch.device(device), or ValueError naming the fix when it is malformed or absent."""
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"device {device!r} is not a device name: use 'cpu', 'cuda' or "
                         f"'cuda:N'") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {str(device)!r} is not available (torch {torch.__version__} "
                         f"finds no CUDA GPU): use device='cpu'")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise ValueError(f"device {str(device)!r} does not exist: this machine has "
                         f"{torch.cuda.device_count()} CUDA device(s)")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError("device 'mps' is not available here: use device='cpu'")
    return device


class NetworkInputError(ValueError):
    """A network cannot run on the stimuli it was given (the message names shapes and fix)."""


def not_a_network(value: Any) -> str:
    """The one-line error for something passed as a network that is not a repkernel one."""
    if isinstance(value, nn.Module):
        return (f"a {type(value).__name__} is not a repkernel network: wrap it with "
                f"rk.wrap(module, hidden=[names of its hidden submodules])")
    return (f"expected a repkernel network, got {type(value).__name__}: build one (rk.MLP, "
            f"...) or wrap a torch module with rk.wrap(module, hidden=...)")


def placed(network: RepresentationNetwork, device=None, dtype=None) -> RepresentationNetwork:
    """``network`` on ``device`` with ``dtype`` (defaults: its own); a copy whenever it has to
    move, so the caller's network is never modified. ValueError for something that is not a
    RepresentationNetwork (naming rk.wrap), a device that is not there or a dtype that is not a
    torch floating dtype."""
    if not isinstance(network, RepresentationNetwork):
        raise ValueError(not_a_network(network))
    if dtype is not None and not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        raise ValueError(f"dtype must be a torch floating dtype, got {dtype!r}: e.g. "
                         f"dtype=torch.float64 or torch.float32")
    weight = next(iter(network.parameters()))
    device = check_device(device) if device is not None else weight.device
    dtype = dtype or weight.dtype
    if (weight.device, weight.dtype) == (device, dtype):
        return network
    return copy.deepcopy(network).to(device=device, dtype=dtype)


def check_patterns(network: RepresentationNetwork, patterns: PatternSet, name: str) -> None:
    """ValueError naming ``name`` when the network cannot take the patterns (wrong input, cue
    or target width; cues missing or extra); runs the network on the first pattern."""
    weight = next(iter(network.parameters()))
    x, c, y = patterns[:1].to(weight.device, weight.dtype)
    widths = f"{x.shape[1]} inputs" + ("" if c is None else f", {c.shape[1]} cues")
    try:
        output = network.check_inputs(x, c)
    except NetworkInputError as error:
        raise ValueError(f"{name}: {error}") from None
    except (RuntimeError, ValueError) as error:
        raise ValueError(f"{name} do not fit the network ({widths}: "
                         f"{str(error).splitlines()[0]}): make them from the network's own "
                         f"environment or input size") from None
    if output.shape[1] != y.shape[1]:
        raise ValueError(f"{name} have {y.shape[1]} target units but the network "
                         f"{output.shape[1]} outputs: make them from the network's own "
                         f"environment or output size")


def check_run(network: RepresentationNetwork, curriculum, probes: PatternSet) -> None:
    """check_patterns for the probes and every stage's patterns of a curriculum."""
    check_patterns(network, probes, "probes")
    for index, stage in enumerate(curriculum.stages):
        check_patterns(network, stage.patterns, f"the patterns of stage {index} ({stage.name})")


class MultitaskNetwork(RepresentationNetwork):
    """The multitask architecture (REFERENCE.md C, D).

    h = phi(W_xh x + W_ch c + b_h), f = psi(W_hf h + W_cf c + b_f), phi = psi = sigmoid by default,
    biases constant (not trained). Weights uniform on [-init_scale, init_scale] (standard 0.1,
    "large" 1.0 = the same draw x 10). Weight groups: ``stimulus_hidden`` (H, N_in F),
    ``task_hidden`` (H, n_tasks), ``hidden_output`` (O, H), ``task_output`` (O, n_tasks).

    ``initial_task_similarity=s`` sets the task -> hidden columns as in REFERENCE.md D: unit-norm,
    zero-mean columns with correlation exactly s between tasks sharing an input dimension and 0
    otherwise, times ``task_weight_scale`` (5).
    """

    needs_environment = True

    def __init__(
        self,
        env: MultitaskEnvironment,
        hidden: int = 200,
        init_scale: float = 0.1,
        bias: float = -2.0,
        seed: int = 0,
        activation: str = "sigmoid",
        output_activation: str | None = None,
        initial_task_similarity: float | None = None,
        task_weight_scale: float = 5.0,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        dtype = dtype or torch.get_default_dtype()
        hidden = _units(hidden, "hidden")
        _init_scale(init_scale)
        output_activation = output_activation or activation
        self.phi, self.psi = _activation(activation), _activation(output_activation)
        g = torch.Generator().manual_seed(seed)
        n_in, n_cues, n_out = env.n_stimulus, env.n_cues, env.n_outputs
        self.stimulus_hidden = _uniform(g, (hidden, n_in), init_scale, dtype)
        self.task_hidden = _uniform(g, (hidden, n_cues), init_scale, dtype)
        self.hidden_output = _uniform(g, (n_out, hidden), init_scale, dtype)
        self.task_output = _uniform(g, (n_out, n_cues), init_scale, dtype)
        self.register_buffer("hidden_bias", torch.full((hidden,), float(bias), dtype=dtype))
        self.register_buffer("output_bias", torch.full((n_out,), float(bias), dtype=dtype))
        if initial_task_similarity is not None:
            columns = task_similarity_columns(env, hidden, initial_task_similarity, seed, dtype)
            with torch.no_grad():
                self.task_hidden.copy_(columns * task_weight_scale)
        self.config = {
            "kind": "multitask", "hidden": hidden, "init_scale": init_scale, "bias": bias,
            "seed": seed, "activation": activation, "output_activation": output_activation,
            "initial_task_similarity": initial_task_similarity,
            "task_weight_scale": task_weight_scale, "environment": env.config(),
        }

    @property
    def hidden_sizes(self) -> tuple[int, ...]:
        return (self.stimulus_hidden.shape[0],)

    def forward(self, x: torch.Tensor, c: torch.Tensor | None = None):
        if c is None:
            raise ValueError("MultitaskNetwork needs task cues c: use patterns from a "
                             "MultitaskEnvironment")
        h = self.phi(x @ self.stimulus_hidden.T + c @ self.task_hidden.T + self.hidden_bias)
        f = self.psi(h @ self.hidden_output.T + c @ self.task_output.T + self.output_bias)
        return (h,), f


def task_similarity_columns(env: MultitaskEnvironment, hidden: int, similarity: float,
                            seed: int = 0, dtype: torch.dtype | None = None) -> torch.Tensor:
    """(hidden, n_tasks) unit-norm, zero-mean columns with correlation ``similarity`` within each
    input dimension's tasks and 0 across: w_t = sqrt(s) q_a + sqrt(1 - s) q_t, q orthonormal and
    orthogonal to the ones vector."""
    if not 0.0 <= similarity <= 1.0:
        raise ValueError(f"initial_task_similarity must be in [0, 1], got {similarity}")
    n_vectors = env.n_input_dims + env.n_cues
    if hidden < n_vectors + 1:
        raise ValueError(f"setting task similarity needs hidden >= {n_vectors + 1} units")
    g = torch.Generator().manual_seed(seed + 1)
    raw = torch.randn(hidden, n_vectors, generator=g, dtype=torch.float64)
    q, _ = torch.linalg.qr(torch.cat([torch.ones(hidden, 1, dtype=torch.float64), raw], dim=1))
    shared, own = q[:, 1:1 + env.n_input_dims], q[:, 1 + env.n_input_dims:]
    columns = [math.sqrt(similarity) * shared[:, env.input_dim(t)] + math.sqrt(1 - similarity)
               * own[:, i] for i, t in enumerate(env.tasks)]
    return torch.stack(columns, dim=1).to(dtype or torch.get_default_dtype())


class MLP(RepresentationNetwork):
    """Fully connected network, sizes = [n_in, H_1, ..., H_L, n_out].

    h_l = phi(W_l h_{l-1} + b_l), f = W_out h_L + b_out (linear readout unless
    ``output_activation`` is given). Default init as PyTorch's ``nn.Linear`` (uniform with bound
    1 / sqrt(fan_in) for weights and biases), times ``init_scale`` when given.
    Weight groups ``layers.{i}.weight`` / ``layers.{i}.bias``.
    """

    def __init__(
        self,
        sizes: Sequence[int],
        activation: str = "relu",
        bias: bool = True,
        init_scale: float | None = None,
        seed: int = 0,
        output_activation: str = "linear",
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        dtype = dtype or torch.get_default_dtype()
        if isinstance(sizes, (str, bytes)) or not isinstance(sizes, Sequence) or len(sizes) < 3:
            raise ValueError(f"sizes must list input, at least one hidden and output size, got "
                             f"{sizes!r}: e.g. sizes=[2, 100, 1]")
        sizes = [_units(s, f"sizes[{i}]") for i, s in enumerate(sizes)]
        if init_scale is not None:
            _init_scale(init_scale)
        self.phi, self.psi = _activation(activation), _activation(output_activation)
        g = torch.Generator().manual_seed(seed)
        scale = 1.0 if init_scale is None else init_scale
        self.layers = nn.ModuleList()
        for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
            layer = nn.Module()
            bound = scale / math.sqrt(fan_in)
            layer.weight = _uniform(g, (fan_out, fan_in), bound, dtype)
            if bias:
                layer.bias = _uniform(g, (fan_out,), bound, dtype)
            else:
                layer.bias = None
            self.layers.append(layer)
        self.config = {"kind": "mlp", "sizes": sizes, "activation": activation, "bias": bias,
                       "init_scale": init_scale, "seed": seed,
                       "output_activation": output_activation}

    @property
    def hidden_sizes(self) -> tuple[int, ...]:
        return tuple(layer.weight.shape[0] for layer in self.layers[:-1])

    @staticmethod
    def _affine(layer, z):
        out = z @ layer.weight.T
        return out if layer.bias is None else out + layer.bias

    def forward(self, x: torch.Tensor, c: torch.Tensor | None = None):
        hidden, z = [], x
        for layer in self.layers[:-1]:
            z = self.phi(self._affine(layer, z))
            hidden.append(z)
        return tuple(hidden), self.psi(self._affine(self.layers[-1], z))


class DeepLinear(MLP):
    """Deep linear network without biases (REFERENCE.md B): sizes = [n_in, H_1, ..., n_out],
    PyTorch's default init times ``init_scale`` (0.1 = the published small init)."""

    def __init__(self, sizes: Sequence[int], init_scale: float = 0.1, seed: int = 0,
                 dtype: torch.dtype | None = None) -> None:
        super().__init__(sizes, activation="linear", bias=False, init_scale=init_scale, seed=seed,
                         dtype=dtype)
        self.config = {"kind": "deep_linear", "sizes": list(sizes), "init_scale": init_scale,
                       "seed": seed}


# kind -> class: the one list of networks that configs, studies and saved results can name
NETWORKS: dict[str, type[RepresentationNetwork]] = {
    "multitask": MultitaskNetwork,
    "mlp": MLP,
    "deep_linear": DeepLinear,
}
_NOT_OPTIONS = ("self", "env", "dtype")


def network_options(kind: str) -> dict[str, Any]:
    """The options of a NETWORKS kind with their constructor defaults (REQUIRED where none)."""
    if kind not in NETWORKS:
        raise ValueError(f"unknown network kind {kind!r}: choose one of {list(NETWORKS)}")
    parameters = inspect.signature(NETWORKS[kind].__init__).parameters.values()
    return {p.name: REQUIRED if p.default is inspect.Parameter.empty else p.default
            for p in parameters if p.name not in _NOT_OPTIONS
            and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}


class _Required:
    def __repr__(self) -> str:
        return "REQUIRED"


REQUIRED = _Required()


def network_from_config(config: Mapping[str, Any], env: MultitaskEnvironment | None = None,
                        dtype: torch.dtype | None = None) -> RepresentationNetwork:
    """Build the network a config describes: NETWORKS[config["kind"]] with the config's options
    (the constructor's defaults for the rest), the weight groups of ``config["trainable"]``
    (default all) trainable, in ``dtype`` (None: the torch default).

    config: a run configuration's [network] section or a network's own ``config`` (whose
    ``environment`` entry is ignored: pass ``env``, needed by kinds with needs_environment).
    """
    kind = config.get("kind")
    if kind == "wrapped" or (isinstance(kind, str) and ":" in kind):
        from repkernel.wrapped import rebuild

        return rebuild(config, dtype).set_trainable(config.get("trainable", "all"))
    options = network_options(kind)
    unknown = sorted(set(config) - set(options) - {"kind", "trainable", "environment"})
    if unknown:
        raise ValueError(f"{unknown[0]!r} is not an option of network kind {kind!r}: use "
                         f"{', '.join(options)}")
    given = {**options, **{k: v for k, v in config.items() if k in options}}
    missing = [name for name, value in given.items() if value is REQUIRED]
    if missing:
        raise ValueError(f"network kind {kind!r} needs {missing[0]!r}: give it in the config")
    network_class = NETWORKS[kind]
    if network_class.needs_environment:
        if env is None:
            raise ValueError(f"network kind {kind!r} is built for a MultitaskEnvironment: pass "
                             f"env=")
        network = network_class(env, **given, dtype=dtype)
    else:
        network = network_class(**given, dtype=dtype)
    return network.set_trainable(config.get("trainable", "all"))


def represent_at(network: RepresentationNetwork, thetas: torch.Tensor, x: torch.Tensor,
                 c: torch.Tensor | None) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
    """Hidden representations and outputs at a stack of flat weight vectors thetas (M, P): one
    (M, n, H_l) per hidden layer and (M, n, O); the network itself is not modified.

    One functional call per checkpoint with every pattern batched (measured on 2 CPU cores,
    101 checkpoints x 5832 patterns x 200 hidden units: twice as fast as torch.func.vmap over
    checkpoints, since each checkpoint is already one large matrix product, and memory stays at
    one checkpoint's activations).
    """
    from torch.func import functional_call

    names = list(network.trainable_parameters())
    shapes = [p.shape for p in network.trainable_parameters().values()]
    sizes = [math.prod(shape) for shape in shapes]
    hidden, outputs = [], []
    with torch.no_grad():
        for theta in thetas:
            params = {n: piece.reshape(shape) for n, piece, shape in zip(
                names, torch.split(theta, sizes), shapes)}
            layers, output = functional_call(network, params, (x, c))
            hidden.append(layers)
            outputs.append(output)
    return tuple(torch.stack(layer) for layer in zip(*hidden)), torch.stack(outputs)

