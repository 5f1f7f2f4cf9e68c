"""Any torch module as a repkernel network: ``wrap(module, hidden=...)``.

The wrapped network runs the module on the stimuli (reshaped per item to ``input_shape`` when
given; the cue, where patterns have one, as a second argument) and reads its hidden layers with
forward hooks on the named submodules, registered for the duration of one forward call only:

    forward(x (n, D), c (n, C) or None) -> ((h_1 (n, H_1), ..., h_L (n, H_L)), f (n, O)),
    h_l = output of submodule hidden[l], flattened per item; f = the module's return value (or
    the output of submodule ``output``), flattened per item.

``wrap`` holds a copy of the module (``network.module``), so nothing of the caller's module is
modified (not its hooks, not its parameters' requires_grad). The copy runs in eval mode (dropout
off, batch norm on its running statistics): kernels and forecasts need the network to be a
deterministic function of its weights. Trainable parameters are those with
``requires_grad`` (``set_trainable`` takes the module's own parameter names, e.g. "0.weight").
Hidden sizes are read off the first forward call (every repkernel entry point makes one).

A wrapped network cannot be rebuilt from its config alone (the module's code is not in it); one
made by a builder ``"path/to/file.py:function"`` (``from_source``; a study's [network] kind) can:
``network_from_config`` calls the builder with the recorded options.
"""

from __future__ import annotations

import copy
import difflib
import importlib.util
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from repkernel.networks import NetworkInputError, RepresentationNetwork

PREFIX = "module."  # the wrapped module's parameter names as seen from the wrapper
NOT_REBUILDABLE = ("not rebuildable from this config alone (the module's code is not in it): "
                   "pass the network with network=, or build it by a 'file.py:function' builder "
                   "(a study's [network] kind) so the config names its source")


def _closest(name: str, names: Sequence[str]) -> str:
    close = difflib.get_close_matches(name, names, n=3)
    shown = close or list(names)[:8]
    return ", ".join(repr(n) for n in shown)


class WrappedNetwork(RepresentationNetwork):
    """A torch module whose named submodules' outputs are the hidden layers (module docstring).

    module: any nn.Module mapping stimuli (n, *input_shape) [, cues (n, C)] to outputs;
    hidden: one ``named_modules`` path or a list of them ("features.3"); output: a path whose
    output is the network output (None: the module's return value); input_shape: the per-item
    shape the module takes (None: the stimuli as they are, (n, D)).
    """

    def __init__(self, module: nn.Module, hidden: str | Sequence[str],
                 output: str | None = None, input_shape: Sequence[int] | None = None) -> None:
        super().__init__()
        if isinstance(module, RepresentationNetwork):
            raise ValueError(f"{type(module).__name__} is already a repkernel network: use it "
                             f"directly, without rk.wrap")
        if not isinstance(module, nn.Module):
            raise ValueError(f"rk.wrap needs a torch.nn.Module, got {type(module).__name__}")
        names = [name for name, _ in module.named_modules() if name]
        layers = [hidden] if isinstance(hidden, str) else list(hidden)
        if not layers or not all(isinstance(name, str) for name in layers):
            raise ValueError(f"hidden must name one or more submodules (named_modules paths), "
                             f"got {hidden!r}: e.g. hidden={names[:1] or ['0']}")
        for name in layers + ([] if output is None else [output]):
            if name not in names:
                raise ValueError(f"{name!r} is not a submodule of the {type(module).__name__}: "
                                 f"close names are {_closest(name, names)}")
        if not any(True for _ in module.parameters()):
            raise ValueError(f"the {type(module).__name__} has no parameters to train")
        self.module = copy.deepcopy(module).eval()
        self.hidden_layers, self.output_layer = tuple(layers), output
        self.input_shape = None if input_shape is None else tuple(int(s) for s in input_shape)
        self._sizes: tuple[int, ...] | None = None
        self.config = {
            "kind": "wrapped",
            "module": f"{type(module).__module__}.{type(module).__qualname__}",
            "hidden": list(layers), "output": output,
            "input_shape": None if input_shape is None else list(self.input_shape),
            "parameters": sum(p.numel() for p in module.parameters()),
            "rebuild": NOT_REBUILDABLE,
        }

    @property
    def hidden_sizes(self) -> tuple[int, ...]:
        if self._sizes is None:
            raise ValueError("the wrapped network's hidden sizes are read off its first forward "
                             "call: run it once on stimuli (network(x)) first")
        return self._sizes

    def forward(self, x: torch.Tensor, c: torch.Tensor | None = None):
        inputs = x if self.input_shape is None else x.reshape(x.shape[0], *self.input_shape)
        captured: dict[str, torch.Tensor] = {}

        def keep(name):
            def hook(_module, _args, value):
                captured[name] = value if isinstance(value, torch.Tensor) else value[0]
            return hook

        wanted = dict.fromkeys((*self.hidden_layers, *filter(None, [self.output_layer])))
        handles = [self.module.get_submodule(name).register_forward_hook(keep(name))
                   for name in wanted]
        try:
            value = self.module(inputs) if c is None else self.module(inputs, c)
        except (RuntimeError, TypeError, ValueError) as error:
            tried = f"stimuli {tuple(inputs.shape)}" + ("" if c is None else
                                                        f" and cues {tuple(c.shape)}")
            fix = ("these patterns have cues, so its forward must take (stimuli, cues)"
                   if c is not None and isinstance(error, TypeError) else
                   "give wrap(..., input_shape=...) the per-item shape it takes"
                   if self.input_shape is None else "check input_shape")
            raise NetworkInputError(f"the wrapped {type(self.module).__name__} fails on {tried} "
                             f"({str(error).splitlines()[0]}): {fix}") from None
        finally:
            for handle in handles:
                handle.remove()
        missing = [name for name in wanted if name not in captured]
        if missing:
            raise NetworkInputError(f"submodule {missing[0]!r} is not called by the "
                             f"{type(self.module).__name__}'s forward: name one that is")
        if self.output_layer is not None:
            value = captured[self.output_layer]
        if not isinstance(value, torch.Tensor):
            raise NetworkInputError(f"the wrapped module returns a {type(value).__name__}, not a "
                             f"tensor: name the output submodule with wrap(..., output=...)")
        hidden = tuple(captured[name].reshape(len(inputs), -1) for name in self.hidden_layers)
        self._sizes = tuple(h.shape[1] for h in hidden)
        return hidden, value.reshape(len(inputs), -1)

    def check_inputs(self, x: torch.Tensor, c: torch.Tensor | None) -> torch.Tensor:
        """Run on a few patterns with every parameter followed by autograd: ValueError when a
        hidden layer or the output does not depend on the parameters (its Jacobian is zero)."""
        params = list(self.parameters())
        flags = [p.requires_grad for p in params]
        try:
            with torch.enable_grad():
                for p in params:
                    p.requires_grad_(True)
                hidden, output = self(x, c)
        finally:
            for p, flag in zip(params, flags):
                p.requires_grad_(flag)
        for name, value in zip((*self.hidden_layers, "output"), (*hidden, output)):
            if not value.requires_grad:
                raise NetworkInputError(f"{name!r} of the wrapped {type(self.module).__name__} "
                                        f"does not "
                                 f"depend on its parameters (its Jacobian is zero): name a layer "
                                 f"after a parameterized one")
        return output.detach()

    def set_trainable(self, names: str | Sequence[str] = "all") -> WrappedNetwork:
        """Choose which parameters train, by the module's own names ("0.weight") or "all"."""
        if names != "all":
            names = [names] if isinstance(names, str) else list(names)
            names = [n if n.startswith(PREFIX) else PREFIX + n for n in names]
        return super().set_trainable(names)


def wrap(module: nn.Module, hidden: str | Sequence[str], output: str | None = None,
         input_shape: Sequence[int] | None = None) -> WrappedNetwork:
    """``module`` as a repkernel network (WrappedNetwork; module docstring): ``hidden`` names the
    submodules (``named_modules`` paths, e.g. "features.3") whose outputs, flattened per item,
    are the hidden layers; ``output`` the submodule whose output is the network's output (None:
    the module's return value); ``input_shape`` the per-item shape of the module's input (e.g.
    (1, 8, 8) for images given as flat stimuli). The module is copied, never modified."""
    return WrappedNetwork(module, hidden, output, input_shape)


# -- networks built by a user's function ---------------------------------------------------


def is_source(kind: Any) -> bool:
    """True for a network kind naming a builder, "file.py:function" or "module:function"."""
    return isinstance(kind, str) and kind.count(":") == 1 and all(kind.split(":"))


def resolve_source(kind: str, folder: str | Path | None = None) -> str:
    """A builder "name:function" with its module made a path: "name" is a module file
    ``name.py`` (or a path to one) relative to ``folder`` (default: the working directory),
    or else an importable module. ValueError when neither exists."""
    name, function = kind.split(":")
    path = Path(name if name.endswith(".py") else f"{name.replace('.', '/')}.py")
    path = path if path.is_absolute() else Path(folder or ".") / path
    if path.exists():
        return f"{path.resolve()}:{function}"
    if importlib.util.find_spec(name.removesuffix(".py")) is None:
        raise ValueError(f"network builder {kind!r}: no file {path} and no importable module "
                         f"{name!r}: put {path.name} next to the configuration or give its path")
    return kind


def builder(source: str):
    """The function a builder source names (module file path or module name, ':', function)."""
    name, function = source.split(":")
    if name.endswith(".py"):
        module_name = f"repkernel_builder_{Path(name).stem}_{abs(hash(name))}"
        module = sys.modules.get(module_name)
        if module is None:
            spec = importlib.util.spec_from_file_location(module_name, name)
            if spec is None or not Path(name).exists():
                raise ValueError(f"network builder {source!r}: no file {name}")
            module = importlib.util.module_from_spec(spec)
            sys.modules[module_name] = module
            spec.loader.exec_module(module)
    else:
        module = importlib.import_module(name)
    if not callable(getattr(module, function, None)):
        raise ValueError(f"network builder {source!r}: {name} defines no function {function!r}")
    return getattr(module, function)


def from_source(source: str, options: Mapping[str, Any] | None = None,
                dtype: torch.dtype | None = None) -> RepresentationNetwork:
    """The network ``builder(source)(**options)`` returns (a repkernel network, e.g. rk.wrap of a
    module), in ``dtype``, with a config that records source and options (so it can be
    rebuilt)."""
    options = dict(options or {})
    try:
        network = builder(source)(**options)
    except TypeError as error:
        raise ValueError(f"network builder {source!r} does not take the options {options} "
                         f"({error}): give only its keyword arguments") from None
    if not isinstance(network, RepresentationNetwork):
        raise ValueError(f"network builder {source!r} returned a {type(network).__name__}: "
                         f"return a repkernel network, e.g. rk.wrap(module, hidden=...)")
    if dtype is not None:
        network = network.to(dtype=dtype)
    if isinstance(network, WrappedNetwork):
        network.config = {**network.config, "source": source, "options": options,
                          "rebuild": "call the builder 'source' with 'options'"}
    return network


def rebuild(config: Mapping[str, Any], dtype: torch.dtype | None = None
            ) -> RepresentationNetwork:
    """The network a config of kind "wrapped" (with a recorded source) or "file.py:function"
    (its other keys the builder's options) describes; ValueError when it has no source."""
    kind = config.get("kind")
    if kind != "wrapped":
        options = {k: v for k, v in config.items()
                   if k not in ("kind", "trainable", "environment")}
        return from_source(resolve_source(kind), options, dtype)
    if not config.get("source"):
        raise ValueError(f"this wrapped {config.get('module', 'module')} is {NOT_REBUILDABLE}")
    return from_source(config["source"], config.get("options"), dtype)
