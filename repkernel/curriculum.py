"""Curricula: ordered training stages, and the published presets.

A stage trains on one pattern set for ``steps`` parameter updates with learning rate ``lr``.
Batch policy: "full" (every pattern each update), an int b (minibatches of b, reshuffled each
epoch) or "online" (b = 1). The batch loss is L = reduce_{i in batch} l_i (repkernel.losses), and
one update is theta <- theta - lr * grad L.

In expectation a minibatch update moves theta like a full-batch update with the same per-pattern
weight: every pattern gradient enters one update with weight ``pattern_rate`` = lr / b (mean) or
lr (sum), and a pattern is in the batch with probability b / n. ``drift_rate`` is the learning
rate of the full-batch *mean*-reduction step that has that expected drift, which is what the
forecast integrates.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from repkernel.environments import MultitaskEnvironment
from repkernel.losses import check_loss, check_targets
from repkernel.patterns import PatternSet


@dataclass(frozen=True)
class Stage:
    """One curriculum stage; see the module docstring for the update rule."""

    patterns: PatternSet
    steps: int
    lr: float
    batch: str | int = "full"
    reduction: str = "mean"
    loss: str = "mse"
    name: str = ""
    seed: int = 0

    def __post_init__(self) -> None:
        check_loss(self.loss, self.reduction)
        try:
            check_targets(self.patterns.y, self.loss)
        except ValueError as error:
            raise ValueError(f"stage {self.name!r}: {error}") from None
        if not isinstance(self.steps, (int, np.integer)) or self.steps < 0:
            raise ValueError(f"stage {self.name!r}: steps must be a non-negative integer, "
                             f"got {self.steps!r}")
        if not (isinstance(self.lr, (int, float, np.floating)) and np.isfinite(self.lr)
                and self.lr > 0):
            raise ValueError(f"stage {self.name!r}: lr must be a positive finite number, "
                             f"got {self.lr!r}")
        if isinstance(self.batch, str):
            if self.batch not in ("full", "online"):
                raise ValueError(f"stage {self.name!r}: batch must be 'full', 'online' or a "
                                 f"positive integer, got {self.batch!r}")
        elif not (isinstance(self.batch, (int, np.integer))
                  and 1 <= self.batch <= len(self.patterns)):
            raise ValueError(f"stage {self.name!r}: batch size must be in 1..{len(self.patterns)}"
                             f" (the number of patterns), got {self.batch!r}")

    @property
    def batch_size(self) -> int:
        return {"full": len(self.patterns), "online": 1}.get(self.batch, self.batch)

    @property
    def pattern_rate(self) -> float:
        """Weight of each pattern's gradient in one update: lr / b (mean) or lr (sum)."""
        return self.lr / self.batch_size if self.reduction == "mean" else self.lr

    @property
    def drift_rate(self) -> float:
        """Rate of the full-batch mean-reduction update with the same expected drift."""
        return self.pattern_rate * self.batch_size

    def stability_bound(self, lam_max: float) -> float:
        """The largest stable lr for a kernel whose largest eigenvalue is lam_max: gradient
        descent on the linearized model diverges iff rho lam_max > 2, rho = drift_rate / n the
        weight of each pattern's gradient, i.e. iff lr > 2 (lr / rho) / lam_max (2n / lam_max
        for the full-batch mean loss, 2 / lam_max for the summed loss)."""
        return 2.0 * self.lr / (self.drift_rate / len(self.patterns)) / lam_max

    @property
    def updates_per_epoch(self) -> int:
        """Updates that pass over the patterns once: n // b (a reshuffled epoch drops the
        remainder, as the trainer does)."""
        return len(self.patterns) // self.batch_size

    @property
    def stochastic(self) -> bool:
        return self.batch_size < len(self.patterns)

    def config(self) -> dict[str, Any]:
        return {"name": self.name, "steps": int(self.steps), "lr": float(self.lr),
                "batch": self.batch if isinstance(self.batch, str) else int(self.batch),
                "reduction": self.reduction, "loss": self.loss, "seed": self.seed,
                "patterns": self.patterns.summary()}


@dataclass(frozen=True)
class Curriculum:
    """An ordered tuple of stages; global step s counts parameter updates from 0 to total_steps."""

    stages: tuple[Stage, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "stages", tuple(self.stages))
        if not self.stages:
            raise ValueError("a curriculum needs at least one stage")
        shapes = {(s.patterns.n_stimulus, s.patterns.n_outputs, s.patterns.c is None)
                  for s in self.stages}
        if len(shapes) > 1:
            raise ValueError("all stages of a curriculum must use patterns of the same shapes")

    @property
    def total_steps(self) -> int:
        return int(sum(s.steps for s in self.stages))

    @property
    def boundaries(self) -> np.ndarray:
        """Global step at which each stage starts, plus the total: (n_stages + 1,)."""
        return np.concatenate([[0], np.cumsum([s.steps for s in self.stages])]).astype(int)

    def stage_of(self, steps: np.ndarray) -> np.ndarray:
        """Stage index that produced the state at each global step (step 0 -> stage 0)."""
        return np.clip(np.searchsorted(self.boundaries, steps, side="left") - 1, 0,
                       len(self.stages) - 1)

    def epochs_at(self, steps: np.ndarray) -> np.ndarray:
        """Epochs (passes over each stage's patterns, Stage.updates_per_epoch) completed at
        global ``steps``: the time axis on which schedules of different batch sizes align."""
        steps = np.asarray(steps)
        epochs = np.zeros(steps.shape)
        for start, stage in zip(self.boundaries, self.stages):
            done = np.clip(steps - start, 0, stage.steps)
            epochs = epochs + done / stage.updates_per_epoch
        return epochs

    def in_epochs(self, epochs: int | Sequence[int]) -> Curriculum:
        """The same stages with steps = epochs x updates per epoch (one count, or one per
        stage): schedules of any batch size then pass over their patterns equally often."""
        whole = isinstance(epochs, (int, np.integer)) and not isinstance(epochs, bool)
        counts = [epochs] * len(self.stages) if whole else (
            list(epochs) if isinstance(epochs, Sequence) else [])
        if len(counts) != len(self.stages) or not all(
                isinstance(e, (int, np.integer)) and e >= 0 for e in counts):
            raise ValueError(f"epochs must be a non-negative whole number, or one per stage "
                             f"({len(self.stages)}), got {epochs!r}")
        return Curriculum(tuple(replace(stage, steps=int(e) * stage.updates_per_epoch)
                                for stage, e in zip(self.stages, counts)))

    def config(self) -> dict[str, Any]:
        return {"stages": [s.config() for s in self.stages]}

    # -- presets --------------------------------------------------------------------------------
    @classmethod
    def interleaved(cls, env: MultitaskEnvironment, n: int, steps: int, lr: float,
                    seed: int = 0, **stage_options) -> Curriculum:
        """Single-task training with tasks interleaved: one stage on n sampled patterns."""
        return cls((Stage(env.sample(n, {1: 1.0}, seed=seed), steps, lr, name="interleaved",
                          **stage_options),))

    @classmethod
    def blocked(cls, env: MultitaskEnvironment, n_per_task: int | Sequence[int],
                steps_per_task: int | Sequence[int], lr: float, seed: int = 0,
                **stage_options) -> Curriculum:
        """Task after task: one stage per task of the environment, in task order. Counts are one
        per task or a single count for every task (see ``split_evenly``)."""
        n_tasks = len(env.tasks)
        ns = _per_task(n_per_task, n_tasks, "n_per_task")
        steps = _per_task(steps_per_task, n_tasks, "steps_per_task")
        return cls(tuple(
            Stage(env.sample(n, {1: 1.0}, seed=seed + i, tasks=[t]), s, lr, name=f"task {t}",
                  **stage_options)
            for i, (t, n, s) in enumerate(zip(env.tasks, ns, steps))))

    @classmethod
    def single_then_concurrent(
        cls, env: MultitaskEnvironment, n: int, steps: Sequence[int] = (2500, 2500),
        lr: float | Sequence[float] = 0.03, k_probs: Mapping[int, float] | None = None,
        seed: int = 0, **stage_options,
    ) -> Curriculum:
        """REFERENCE.md C: phase 1 single-task training, phase 2 fine-tuning on concurrent
        patterns with k tasks, k drawn from ``k_probs`` (default 1, 2, 3 with 1/3 each)."""
        lrs = [lr, lr] if isinstance(lr, (int, float)) else list(lr)
        k_probs = k_probs or {1: 1 / 3, 2: 1 / 3, 3: 1 / 3}
        return cls((
            Stage(env.sample(n, {1: 1.0}, seed=seed), steps[0], lrs[0], name="single",
                  **stage_options),
            Stage(env.sample(n, k_probs, seed=seed + 1), steps[1], lrs[1], name="concurrent",
                  **stage_options),
        ))

    @classmethod
    def mixed(cls, env: MultitaskEnvironment, n: int, steps: int, lr: float, p: float,
              k: int = 2, seed: int = 0, **stage_options) -> Curriculum:
        """Single-task training with a fraction p of k-task patterns mixed in."""
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"the fraction p of concurrent patterns must be in [0, 1], got {p}")
        probs = {1: 1.0 - p, k: p} if p > 0 else {1: 1.0}
        return cls((Stage(env.sample(n, probs, seed=seed), steps, lr, name=f"mixed p={p}",
                          **stage_options),))


def split_evenly(total: int, parts: int) -> list[int]:
    """``total`` split into ``parts`` counts that differ by at most one and sum to ``total``
    (the first ``total % parts`` get one more), so a blocked curriculum keeps the total."""
    if total < parts:
        raise ValueError(f"cannot split {total} over {parts} tasks with at least one each: "
                         f"give at least {parts}")
    base, extra = divmod(int(total), int(parts))
    return [base + (i < extra) for i in range(parts)]


def _per_task(value: int | Sequence[int], n_tasks: int, name: str) -> list[int]:
    if isinstance(value, (int, np.integer)):
        return [int(value)] * n_tasks
    values = [int(v) for v in value]
    if len(values) != n_tasks:
        raise ValueError(f"{name} has {len(values)} counts for {n_tasks} tasks: give one per task")
    return values
