"""Run configurations: a validated TOML/dict schema that builds environment, network, curriculum
and probes. Every problem in a configuration is reported at once, each with its location
(``[section].key``), in one ConfigError.

Sections (all keys optional unless said; defaults are the published main setup, REFERENCE.md C):
  [environment] kind = "multitask" | "step_function" | "deep_linear_modes" | "digits"
                input_dims, features, output_dims, tasks ("all" or task indices)   (multitask)
                n_train, n_test (step_function); n, singular_values, seed (deep_linear_modes)
                n_train, n_test, seed (digits: scikit-learn's bundled handwritten digits)
  [network]     kind = a name of repkernel.networks.NETWORKS ("multitask", "mlp",
                "deep_linear"); the options of that kind's constructor, defaults its own
                (multitask: hidden, init_scale, bias, seed, activation, output_activation,
                initial_task_similarity, task_weight_scale; mlp: sizes, activation, bias,
                init_scale, seed, output_activation; deep_linear: sizes, init_scale, seed);
                trainable = "all" or weight-group names; or kind = "file.py:function" (or
                "module:function"), a builder returning a repkernel network (e.g. rk.wrap of a
                torch module), its other keys the builder's keyword arguments
  [curriculum]  preset = "interleaved" | "blocked" | "single_then_concurrent" | "mixed" |
                "dataset" (the environment's own training set); n, steps, lr, batch, reduction,
                (blocked splits the n patterns and the steps evenly over the tasks);
                epochs replaces steps by epochs x updates per epoch (n // batch), so that
                schedules of different batch sizes pass over their patterns equally often
                loss, seed, k_probs (single_then_concurrent), p and k (mixed)
  [probes]      source = "sample" | "patterns" | "train" | "test"; n, k_probs, seed (sample);
                k, stimuli, seed (patterns)
  [run]         checkpoints, record_weights, device, dtype, threads (torch's CPU threads)
"""

from __future__ import annotations

import contextlib
import copy
import difflib
import inspect

try:
    import tomllib
except ImportError:  # Python 3.10
    import tomli as tomllib
from collections.abc import Callable, Collection, Hashable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from repkernel.curriculum import Curriculum, Stage, split_evenly
from repkernel.environments import (
    MultitaskEnvironment,
    deep_linear_modes_task,
    digits_task,
    step_function_task,
)
from repkernel.losses import LOSSES, REDUCTIONS
from repkernel.networks import (
    ACTIVATIONS,
    NETWORKS,
    REQUIRED,
    network_from_config,
    network_options,
)
from repkernel.patterns import PatternSet
from repkernel.results import checkpoint_steps
from repkernel.wrapped import is_source


class ConfigError(ValueError):
    """One or more problems in a configuration, each with its location."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("invalid configuration: " + "; ".join(problems))


def defaults_of(function: Callable) -> dict[str, Any]:
    """The keyword defaults of ``function``: the one source of a library call's defaults for
    the CLI and the study schema."""
    return {p.name: p.default for p in inspect.signature(function).parameters.values()
            if p.default is not inspect.Parameter.empty}


# -- checkers: value -> bool, public so that studies and plugins check their keys the same way

def positive_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v > 0


def non_negative_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def positive_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0


def number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


class OneOf:
    """Check that a value is one of ``choices`` (a tuple, or a registry dict read at each check,
    so rows added later count); ``str()`` says what the value must be."""

    def __init__(self, choices: Collection[Any]) -> None:
        self.choices = choices

    def __call__(self, v: Any) -> bool:
        return isinstance(v, Hashable) and v in self.choices

    def __str__(self) -> str:
        return f"one of {list(self.choices)}"


class ListOf(OneOf):
    """Check that a value is a list drawn from ``choices`` (as OneOf)."""

    def __call__(self, v: Any) -> bool:
        return isinstance(v, list) and all(map(super().__call__, v))

    def __str__(self) -> str:
        return f"a list drawn from {list(self.choices)}"


def choice(default: Any, choices: Collection[Any]) -> tuple[Any, OneOf, OneOf]:
    """A schema row (default, check, what) for one of ``choices``."""
    check = OneOf(choices)
    return default, check, check


def choices(default: list, choices: Collection[Any]) -> tuple[list, ListOf, ListOf]:
    """A schema row (default, check, what) for a list drawn from ``choices``."""
    check = ListOf(choices)
    return default, check, check


def int_or_list_of(check_item: Callable[[Any], bool]) -> Callable[[Any], bool]:
    def check(v):
        return check_item(v) or (isinstance(v, list) and len(v) > 0 and all(map(check_item, v)))
    return check


def _k_probs(v):
    return isinstance(v, Mapping) and len(v) > 0 and all(
        str(k).isdigit() and int(k) >= 1 and number(p) and p >= 0 for k, p in v.items())


def _tasks(v):
    return v == "all" or (isinstance(v, list) and len(v) > 0 and all(map(non_negative_int, v)))


def _trainable(v):
    return v == "all" or (isinstance(v, list) and len(v) > 0 and all(isinstance(s, str) for s in v))


def _batch(v):
    return v in ("full", "online") or positive_int(v)


def _sizes(v):
    return isinstance(v, list) and len(v) >= 3 and all(map(positive_int, v))


def _stimuli(v):
    return v == "all" or positive_int(v)


def _device(v):
    try:
        torch.device(v)
    except (RuntimeError, TypeError):
        return False
    return True


PRESETS = ("interleaved", "blocked", "single_then_concurrent", "mixed", "dataset")
PROBE_SOURCES = ("sample", "patterns", "train", "test")
DTYPES = {"float32": torch.float32, "float64": torch.float64}

# section -> key -> (default, check, what the value must be)
Spec = dict[str, tuple[Any, Callable[[Any], bool], str]]
SCHEMA: dict[str, Spec] = {
    "environment": {
        "kind": choice("multitask", ("multitask", "step_function", "deep_linear_modes",
                                     "digits")),
        "input_dims": (4, positive_int, "a positive integer"),
        "features": (3, positive_int, "a positive integer"),
        "output_dims": (3, positive_int, "a positive integer"),
        "tasks": ("all", _tasks, "'all' or a list of task indices"),
        "n_train": (6, positive_int, "a positive integer"),
        "n_test": (1000, positive_int, "a positive integer"),
        "n": (250, positive_int, "a positive integer"),
        "singular_values": ([90.0, 24.0, 7.0, 1.0],
                            lambda v: isinstance(v, list) and len(v) > 0 and all(map(number, v)),
                            "a list of numbers"),
        "seed": (0, non_negative_int, "a non-negative integer"),
    },
    # kind, trainable and the checks of network options; which options a kind takes and their
    # defaults come from its constructor (networks.network_options), so REQUIRED is no default
    "network": {
        "kind": ("multitask", lambda v: v in NETWORKS or is_source(v),
                 f"one of {list(NETWORKS)} or a builder 'file.py:function'"),
        "hidden": (REQUIRED, positive_int, "a positive integer"),
        "init_scale": (REQUIRED, lambda v: v is None or positive_number(v), "a positive number"),
        "bias": (REQUIRED, lambda v: number(v) or isinstance(v, bool),
                 "a number (true/false for mlp)"),
        "seed": (REQUIRED, non_negative_int, "a non-negative integer"),
        "activation": (REQUIRED, OneOf(ACTIVATIONS), OneOf(ACTIVATIONS)),
        "output_activation": (REQUIRED, lambda v: v is None or v in ACTIVATIONS,
                              OneOf(ACTIVATIONS)),
        "initial_task_similarity": (REQUIRED, lambda v: v is None or (number(v) and 0 <= v <= 1),
                                    "a number in [0, 1]"),
        "task_weight_scale": (REQUIRED, positive_number, "a positive number"),
        "sizes": (REQUIRED, _sizes, "a list of at least 3 positive integers"),
        "trainable": ("all", _trainable, "'all' or a list of weight-group names"),
    },
    "curriculum": {
        "preset": choice("interleaved", PRESETS),
        "n": (500, positive_int, "a positive integer"),
        "steps": (2500, int_or_list_of(non_negative_int),
                  "a non-negative integer or a list of them"),
        "lr": (0.03, int_or_list_of(positive_number), "a positive number or a list of them"),
        "batch": ("full", _batch, "'full', 'online' or a positive integer"),
        "reduction": choice("sum", REDUCTIONS),
        "loss": choice("mse", LOSSES),
        "seed": (0, non_negative_int, "a non-negative integer"),
        "k_probs": ({"1": 1 / 3, "2": 1 / 3, "3": 1 / 3}, _k_probs,
                    "a table of task-set size -> probability"),
        "p": (0.2, lambda v: number(v) and 0 <= v <= 1, "a number in [0, 1]"),
        "k": (2, positive_int, "a positive integer"),
        "epochs": (None, int_or_list_of(non_negative_int),
                   "a non-negative integer or a list of them (replaces steps)"),
    },
    "probes": {
        "source": choice("sample", PROBE_SOURCES),
        "n": (500, positive_int, "a positive integer"),
        "k_probs": ({"1": 1.0}, _k_probs, "a table of task-set size -> probability"),
        "k": ([1], int_or_list_of(positive_int), "a positive integer or a list of them"),
        "stimuli": ("all", _stimuli, "'all' or a positive integer"),
        "seed": (1, non_negative_int, "a non-negative integer"),
    },
    "run": {
        "checkpoints": (101, int_or_list_of(non_negative_int),
                        "a positive count or a list of steps"),
        "record_weights": (True, lambda v: isinstance(v, bool), "true or false"),
        "device": ("cpu", _device, "a torch device such as 'cpu' or 'cuda:0'"),
        "dtype": choice("float64", DTYPES),
        "threads": ("auto", lambda v: v == "auto" or positive_int(v),
                    "'auto' (one for small CPU work) or a positive count of CPU threads"),
    },
}


def merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """Deep-merge two nested dicts (override wins)."""
    out = copy.deepcopy(dict(base))
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def validate(raw: Mapping[str, Any], schema: Mapping[str, Spec] = SCHEMA,
             extra_sections: tuple[str, ...] = ()) -> dict[str, dict[str, Any]]:
    """Check every key and value of ``raw``; return it completed with defaults.

    Sections named in ``extra_sections`` are passed through unchecked (another layer checks them).
    Raises ConfigError listing every problem with its ``[section].key`` location.
    """
    problems: list[str] = []
    known = list(schema) + list(extra_sections)
    for section in raw:
        if section not in known:
            problems.append(f"[{section}]: unknown section{_suggest(section, known)}")
    resolved: dict[str, dict[str, Any]] = {}
    for section, spec in schema.items():
        given = raw.get(section, {})
        if not isinstance(given, Mapping):
            problems.append(f"[{section}]: must be a table")
            continue
        if section == "network":
            resolved[section] = _network_section(given, spec, problems)
            continue
        for key in given:
            if key not in spec:
                problems.append(f"[{section}].{key}: unknown key{_suggest(key, list(spec))}")
        values = {}
        for key, (default, check, what) in spec.items():
            value = given.get(key, default)
            if key in given and not (value is None and default is None) and not check(value):
                problems.append(f"[{section}].{key}: must be {what}, got {value!r}")
            values[key] = value
        resolved[section] = values
    for section in extra_sections:
        if section in raw:
            resolved[section] = dict(raw[section])
    if problems:
        raise ConfigError(problems)
    return resolved


def _network_section(given: Mapping[str, Any], spec: Spec, problems: list[str]
                     ) -> dict[str, Any]:
    """[network] completed with its kind's constructor defaults; options of other kinds and
    missing required options are problems."""
    kind = given.get("kind", spec["kind"][0])
    if not spec["kind"][1](kind):
        problems.append(f"[network].kind: must be {spec['kind'][2]}, got {kind!r}")
        return dict(given)
    if is_source(kind):  # a user's builder: its options are its keyword arguments
        return {"trainable": spec["trainable"][0], **given}
    options = network_options(kind)
    known = ["kind", *options, "trainable"]
    values = {"kind": kind, **options, "trainable": spec["trainable"][0]}
    for key, value in given.items():
        if key not in known:
            why = f"not an option of network kind {kind!r}" if key in spec else "unknown key"
            problems.append(f"[network].{key}: {why}{_suggest(key, known)}")
            continue
        _, check, what = spec.get(key, (None, lambda v: True, ""))
        if not check(value):
            problems.append(f"[network].{key}: must be {what}, got {value!r}")
        values[key] = value
    problems += [f"[network].{key}: network kind {kind!r} needs it" for key, value
                 in values.items() if value is REQUIRED]
    return values


def network_as_run(section: Mapping[str, Any]) -> dict[str, Any]:
    """A [network] section as it runs: its kind, that kind's options (given values over the
    constructor defaults) and trainable; keys of other kinds dropped (older configs list
    every kind's keys)."""
    kind = section.get("kind", SCHEMA["network"]["kind"][0])
    if is_source(kind):
        return {"trainable": SCHEMA["network"]["trainable"][0], **section}
    options = network_options(kind) if kind in NETWORKS else {}
    return {"kind": kind, **{k: section.get(k, v) for k, v in options.items()},
            "trainable": section.get("trainable", SCHEMA["network"]["trainable"][0])}


def _suggest(name: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(name, choices, n=1)
    return f" (did you mean {close[0]!r}?)" if close else f" (known: {', '.join(choices)})"


def load_toml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no configuration file at {path}")
    try:
        return tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as error:
        raise ConfigError([f"{path}: not valid TOML ({error})"]) from None


@dataclass
class Setup:
    """Everything a run needs, built from a validated configuration."""

    config: dict[str, dict[str, Any]]
    environment: Any
    network: Any
    curriculum: Curriculum
    probes: PatternSet
    train_set: PatternSet | None
    test_set: PatternSet | None

    @property
    def device(self) -> torch.device:
        return torch.device(self.config["run"]["device"])

    @property
    def dtype(self) -> torch.dtype:
        return DTYPES[self.config["run"]["dtype"]]

    @property
    def checkpoints(self):
        return self.config["run"]["checkpoints"]

    @property
    def threads(self) -> int | None:
        """torch's intra-op CPU threads for this run: [run].threads, or for 'auto' the
        repkernel.cpu_threads choice for its size (None: torch's own setting)."""
        from repkernel import cpu_threads

        count = self.config["run"]["threads"]
        if count != "auto":
            return count
        return cpu_threads.threads_for_run(self.network, self.curriculum, self.probes,
                                           self.device)


def _per_stage(value, n_stages: int, location: str) -> list:
    values = value if isinstance(value, list) else [value] * n_stages
    if len(values) != n_stages:
        raise ConfigError([f"{location}: needs {n_stages} entries (one per stage), "
                           f"got {len(values)}"])
    return values


def build(raw: Mapping[str, Any], extra_sections: tuple[str, ...] = ()) -> Setup:
    """Validate ``raw`` and build environment, network, curriculum and probes from it."""
    cfg = validate(raw, extra_sections=extra_sections)
    env_cfg, net_cfg, cur_cfg, probe_cfg = (cfg[s] for s in ("environment", "network",
                                                             "curriculum", "probes"))
    train_set = test_set = None
    if env_cfg["kind"] == "multitask":
        with _located("environment", "tasks" if env_cfg["tasks"] != "all" else None):
            env = MultitaskEnvironment(
                env_cfg["input_dims"], env_cfg["features"], env_cfg["output_dims"],
                None if env_cfg["tasks"] == "all" else env_cfg["tasks"])
    elif env_cfg["kind"] == "step_function":
        env = None
        train_set, test_set = step_function_task(env_cfg["n_train"], env_cfg["n_test"])
    elif env_cfg["kind"] == "digits":
        env = None
        train_set, test_set = digits_task(env_cfg["n_train"], env_cfg["n_test"],
                                          env_cfg["seed"])
    else:
        env = None
        train_set = test_set = deep_linear_modes_task(
            env_cfg["n"], env_cfg["singular_values"], seed=env_cfg["seed"])

    problems = []
    source = is_source(net_cfg["kind"])  # a user's builder may take cues or not
    if not source and (env is None) == NETWORKS[net_cfg["kind"]].needs_environment:
        fitting = [kind for kind, network in NETWORKS.items()
                   if network.needs_environment == (env is not None)]
        problems.append(f"[network].kind: {net_cfg['kind']!r} does not fit environment "
                        f"{env_cfg['kind']!r}: use one of {fitting}")
    if (env is None) != (cur_cfg["preset"] == "dataset"):
        problems.append(f"[curriculum].preset: {cur_cfg['preset']!r} does not fit environment "
                        f"{env_cfg['kind']!r}: use 'dataset' exactly for the fixed test cases")
    if env is None and probe_cfg["source"] in ("sample", "patterns"):
        problems.append(f"[probes].source: {probe_cfg['source']!r} needs the multitask environment;"
                        f" use 'train' or 'test' for the fixed test cases")
    if env is not None and probe_cfg["source"] == "test":
        problems.append("[probes].source: the multitask environment has no fixed test set; use "
                        "'sample' (held-out patterns) or 'patterns'")
    if problems:
        raise ConfigError(problems)

    try:
        network = network_from_config(net_cfg, env, DTYPES[cfg["run"]["dtype"]])
    except ValueError as error:
        if not source:
            raise
        raise ConfigError([f"[network].kind: {error}"]) from None
    uses_k = cur_cfg["preset"] in ("single_then_concurrent", "mixed")
    with _located("curriculum", "batch" if cur_cfg["batch"] != "full" else
                  "k_probs" if uses_k else None):
        curriculum = _build_curriculum(cur_cfg, env, train_set)
    with _located("run", "checkpoints"):
        checkpoint_steps(cfg["run"]["checkpoints"], curriculum.total_steps)
    if probe_cfg["source"] == "sample":
        with _located("probes", "k_probs"):
            probes = env.sample(probe_cfg["n"], _k_probs_dict(probe_cfg["k_probs"]),
                                seed=probe_cfg["seed"])
    elif probe_cfg["source"] == "patterns":
        with _located("probes", "k"):
            probes = env.patterns(probe_cfg["k"], probe_cfg["stimuli"], seed=probe_cfg["seed"])
    elif probe_cfg["source"] == "train":
        probes = curriculum.stages[0].patterns if train_set is None else train_set
    else:
        probes = test_set
    return Setup(cfg, env, network, curriculum, probes, train_set, test_set)


@contextlib.contextmanager
def _located(section: str, key: str | None) -> Iterator[None]:
    """A ValueError raised while building from ``[section].key`` becomes a ConfigError that
    names that location (the whole section when ``key`` is None)."""
    try:
        yield
    except ConfigError:
        raise
    except ValueError as error:
        where = f"[{section}]" + (f".{key}" if key else "")
        raise ConfigError([f"{where}: {error}"]) from None


def _k_probs_dict(table: Mapping) -> dict[int, float]:
    return {int(k): float(p) for k, p in table.items()}


def _build_curriculum(cfg: dict[str, Any], env, train_set) -> Curriculum:
    curriculum = _preset_curriculum(cfg, env, train_set)
    if cfg["epochs"] is None:
        return curriculum
    try:
        return curriculum.in_epochs(cfg["epochs"])
    except ValueError as error:
        raise ConfigError([f"[curriculum].epochs: {error}"]) from None


def _preset_curriculum(cfg: dict[str, Any], env, train_set) -> Curriculum:
    preset = cfg["preset"]
    options = {"batch": cfg["batch"], "reduction": cfg["reduction"], "loss": cfg["loss"]}
    if preset == "single_then_concurrent":
        steps = _per_stage(cfg["steps"], 2, "[curriculum].steps")
        lrs = _per_stage(cfg["lr"], 2, "[curriculum].lr")
        return Curriculum.single_then_concurrent(env, cfg["n"], steps, lrs,
                                                 _k_probs_dict(cfg["k_probs"]), cfg["seed"],
                                                 **options)
    steps = _single(cfg["steps"], "[curriculum].steps")
    lr = _single(cfg["lr"], "[curriculum].lr")
    if preset == "dataset":
        return Curriculum((Stage(train_set, steps, lr, name="dataset", **options),))
    if preset == "interleaved":
        return Curriculum.interleaved(env, cfg["n"], steps, lr, cfg["seed"], **options)
    if preset == "blocked":  # the same total patterns and steps, split evenly over the tasks
        n_tasks = len(env.tasks)
        try:
            ns, stage_steps = split_evenly(cfg["n"], n_tasks), split_evenly(steps, n_tasks)
        except ValueError as error:
            raise ConfigError([f"[curriculum] n and steps (blocked, {n_tasks} tasks): {error}"]
                              ) from None
        return Curriculum.blocked(env, ns, stage_steps, lr, cfg["seed"], **options)
    return Curriculum.mixed(env, cfg["n"], steps, lr, cfg["p"], cfg["k"], cfg["seed"], **options)


def _single(value, location: str):
    if isinstance(value, list):
        if len(value) != 1:
            raise ConfigError([f"{location}: this preset has one stage, give one value"])
        return value[0]
    return value
