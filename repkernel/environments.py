"""Task environments: the multitask environment and the two small published test cases.

Multitask environment (DESIGN.md section 6, REFERENCE.md C and D): N_in input dimensions and N_out
output dimensions of F one-hot features each. Task (a, b), indexed ``a * N_out + b``, copies the
active feature of input dimension a to output dimension b; all other outputs are 0.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import torch

from repkernel.patterns import PatternSet, pattern_set


class MultitaskEnvironment:
    """Stimuli, tasks and concurrent task sets of a multitasking environment.

    Stimulus x: (N_in * F,) one-hot per input dimension. Task cue c: (n_tasks,), one unit per task
    of ``tasks`` in order, several ones for a concurrent set. Target y: (N_out * F,).
    """

    def __init__(
        self,
        n_input_dims: int,
        n_features: int,
        n_output_dims: int | None = None,
        tasks: Sequence[int] | Sequence[tuple[int, int]] | None = None,
    ) -> None:
        n_output_dims = n_input_dims if n_output_dims is None else n_output_dims
        for name, value in [("n_input_dims", n_input_dims), ("n_features", n_features),
                            ("n_output_dims", n_output_dims)]:
            if not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        self.n_input_dims = int(n_input_dims)
        self.n_features = int(n_features)
        self.n_output_dims = int(n_output_dims)
        all_tasks = self.n_input_dims * self.n_output_dims
        if tasks is None:
            tasks = range(all_tasks)
        indices = [self._task_index(t) for t in tasks]
        if not indices:
            raise ValueError("tasks is empty: give at least one task or None for all tasks")
        if len(set(indices)) != len(indices):
            raise ValueError(f"tasks contains duplicates: {list(tasks)}")
        self.tasks: tuple[int, ...] = tuple(sorted(indices))

    def _task_index(self, task) -> int:
        if isinstance(task, (tuple, list)):
            a, b = task
            if not (0 <= a < self.n_input_dims and 0 <= b < self.n_output_dims):
                raise ValueError(f"task {task} is outside the {self.n_input_dims} x "
                                 f"{self.n_output_dims} input x output dimensions")
            return int(a) * self.n_output_dims + int(b)
        if not 0 <= int(task) < self.n_input_dims * self.n_output_dims:
            raise ValueError(f"task index {task} is outside "
                             f"0..{self.n_input_dims * self.n_output_dims - 1}")
        return int(task)

    # -- sizes and task geometry ---------------------------------------------------------------
    @property
    def n_stimulus(self) -> int:
        return self.n_input_dims * self.n_features

    @property
    def n_cues(self) -> int:
        return len(self.tasks)

    @property
    def n_outputs(self) -> int:
        return self.n_output_dims * self.n_features

    @property
    def n_stimuli(self) -> int:
        """Number of distinct stimuli, F ** N_in."""
        return self.n_features ** self.n_input_dims

    def input_dim(self, task: int) -> int:
        return task // self.n_output_dims

    def output_dim(self, task: int) -> int:
        return task % self.n_output_dims

    def config(self) -> dict:
        return {"kind": "multitask", "n_input_dims": self.n_input_dims,
                "n_features": self.n_features, "n_output_dims": self.n_output_dims,
                "tasks": list(self.tasks)}

    def __repr__(self) -> str:
        return (f"MultitaskEnvironment(n_input_dims={self.n_input_dims}, n_features="
                f"{self.n_features}, n_output_dims={self.n_output_dims}, tasks={len(self.tasks)})")

    def task_sets(self, k: int) -> list[tuple[int, ...]]:
        """All k-task sets with pairwise distinct input and distinct output dimensions.

        For a square environment with all N^2 tasks there are C(N, k) * N! / (N - k)! of them.
        """
        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}")
        return [
            combo for combo in itertools.combinations(self.tasks, k)
            if len({self.input_dim(t) for t in combo}) == k
            and len({self.output_dim(t) for t in combo}) == k
        ]

    def _checked_task_sets(self, k: int) -> list[tuple[int, ...]]:
        sets = self.task_sets(k)
        if not sets:
            raise ValueError(
                f"no set of {k} tasks with distinct input and output dimensions exists in {self!r}:"
                f" use k <= {max(kk for kk in range(1, len(self.tasks) + 1) if self.task_sets(kk))}"
            )
        return sets

    # -- stimuli --------------------------------------------------------------------------------
    def stimulus_features(self, stimulus: np.ndarray) -> np.ndarray:
        """Active feature per input dimension, (n, N_in), for stimulus indices (n,)."""
        return np.stack(np.unravel_index(np.asarray(stimulus),
                                         (self.n_features,) * self.n_input_dims), axis=-1)

    def _select_stimuli(self, stimuli: str | int, seed: int) -> np.ndarray:
        if stimuli == "all":
            return np.arange(self.n_stimuli)
        if isinstance(stimuli, (int, np.integer)) and 1 <= stimuli <= self.n_stimuli:
            rng = np.random.default_rng(seed)
            return np.sort(rng.choice(self.n_stimuli, size=int(stimuli), replace=False))
        raise ValueError(f"stimuli must be 'all' or an integer 1..{self.n_stimuli}, "
                         f"got {stimuli!r}")

    def make_patterns(self, stimulus: np.ndarray, task_sets: Sequence[tuple[int, ...]],
                      description: Mapping | None = None) -> PatternSet:
        """Patterns for paired stimulus indices (n,) and task sets (n tuples of task indices)."""
        stimulus = np.asarray(stimulus, dtype=np.int64)
        n, F = len(stimulus), self.n_features
        features = self.stimulus_features(stimulus)
        x = np.zeros((n, self.n_input_dims, F))
        np.put_along_axis(x, features[..., None], 1.0, axis=-1)
        c = np.zeros((n, self.n_cues))
        y = np.zeros((n, self.n_output_dims, F))
        cue_of = {t: i for i, t in enumerate(self.tasks)}
        for i, task_set in enumerate(task_sets):
            for t in task_set:
                c[i, cue_of[t]] = 1.0
                y[i, self.output_dim(t), features[i, self.input_dim(t)]] = 1.0
        k = np.array([len(s) for s in task_sets])
        single = k == 1
        first = np.array([s[0] for s in task_sets])
        labels = {
            "task": np.where(single, first, -1),
            "task_set": np.array(["+".join(map(str, s)) for s in task_sets]),
            "k": k,
            "input_dim": np.where(single, first // self.n_output_dims, -1),
            "output_dim": np.where(single, first % self.n_output_dims, -1),
            "stimulus": stimulus,
            # 1 / 0 for a congruent / incongruent task set; -1 for a single task, which has
            # no other task to agree with
            "congruent": np.where(single, -1, np.array([
                len({features[i, self.input_dim(t)] for t in s}) == 1
                for i, s in enumerate(task_sets)
            ])).astype(np.int8),
        }
        return pattern_set(
            x.reshape(n, -1), y.reshape(n, -1), c, labels,
            {"environment": self.config(), **dict(description or {})},
        )

    # -- pattern sets ---------------------------------------------------------------------------
    def patterns(self, k: int | Iterable[int] = 1, stimuli: str | int = "all",
                 seed: int = 0) -> PatternSet:
        """Every selected stimulus crossed with every k-task set (ordered by k, set, stimulus).

        ``stimuli``: "all" (F ** N_in stimuli) or a number drawn without replacement with ``seed``.
        """
        ks = [k] if isinstance(k, (int, np.integer)) else list(k)
        chosen = self._select_stimuli(stimuli, seed)
        sets = [s for kk in ks for s in self._checked_task_sets(int(kk))]
        stimulus = np.tile(chosen, len(sets))
        task_sets = [s for s in sets for _ in chosen]
        return self.make_patterns(stimulus, task_sets, {
            "made_by": "patterns", "k": [int(kk) for kk in ks], "stimuli": stimuli, "seed": seed})

    def sample(self, n: int, k_probs: Mapping[int, float] | None = None, seed: int = 0,
               tasks: Sequence[int] | None = None) -> PatternSet:
        """n patterns, each a random stimulus with a random task set (the published curriculum).

        The set size k is drawn with probabilities ``k_probs`` (default {1: 1.0}), then a k-set
        uniformly among those with distinct input and output dimensions. ``tasks`` restricts the
        single tasks drawn (k = 1 only), e.g. for blocked curricula.
        """
        k_probs = {1: 1.0} if k_probs is None else {int(k): float(p) for k, p in k_probs.items()}
        if n < 1:
            raise ValueError(f"n must be a positive number of patterns, got {n}")
        probs = np.array(list(k_probs.values()))
        if (probs < 0).any() or not np.isclose(probs.sum(), 1.0):
            raise ValueError(f"k_probs must be non-negative and sum to 1, got {k_probs}")
        if tasks is not None and set(k_probs) != {1}:
            raise ValueError("tasks= restricts single-task sampling: use it with k_probs={1: 1.0}")
        rng = np.random.default_rng(seed)
        ks = rng.choice(list(k_probs), size=n, p=probs)
        sets_by_k = {k: self._checked_task_sets(k) for k, p in k_probs.items() if p > 0}
        if tasks is not None:
            unknown = set(tasks) - set(self.tasks)
            if unknown:
                raise ValueError(f"tasks {sorted(unknown)} are not in the environment")
            sets_by_k[1] = [(int(t),) for t in tasks]
        task_sets = [sets_by_k[k][rng.integers(len(sets_by_k[k]))] for k in ks]
        stimulus = rng.integers(self.n_stimuli, size=n)
        return self.make_patterns(stimulus, task_sets, {
            "made_by": "sample", "n": n, "k_probs": {str(k): p for k, p in k_probs.items()},
            "seed": seed, "tasks": None if tasks is None else [int(t) for t in tasks]})


def step_function_task(n_train: int = 6, n_test: int = 1000) -> tuple[PatternSet, PatternSet]:
    """REFERENCE.md A: 1-D inputs on [-1, 1], target y = 1[x > 0]; (train, test) pattern sets."""
    def make(n, role):
        x = torch.linspace(-1.0, 1.0, n, dtype=torch.float64)[:, None]
        return pattern_set(x, (x > 0).double(), labels={"x": x[:, 0].numpy()},
                           description={"kind": "step_function", "role": role, "n": n})

    return make(n_train, "train"), make(n_test, "test")


def deep_linear_modes_task(
    n: int = 250,
    singular_values: Sequence[float] = (90.0, 24.0, 7.0, 1.0),
    n_out: int = 5,
    seed: int = 0,
) -> PatternSet:
    """REFERENCE.md B: whitened Gaussian inputs (X^T X = I), target y = x W.

    W (d x n_out) has the singular vectors of a random d x n_out matrix and the given singular
    values, d = len(singular_values). The test set is the training set.
    """
    d = len(singular_values)
    if n < d:
        raise ValueError(f"need at least {d} inputs to whiten {d} dimensions, got n={n}")
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d))
    x -= x.mean(axis=0)
    u, _, vt = np.linalg.svd(x, full_matrices=False)
    x = u @ vt  # orthonormal columns: X^T X = I
    a, _, bt = np.linalg.svd(rng.standard_normal((d, n_out)), full_matrices=False)
    w = a @ np.diag(singular_values) @ bt
    return pattern_set(x, x @ w, description={
        "kind": "deep_linear_modes", "n": n, "singular_values": list(map(float, singular_values)),
        "n_out": n_out, "seed": seed})


DIGITS = 1797  # images in scikit-learn's bundled handwritten digits


def digits_task(n_train: int = 500, n_test: int = 500, seed: int = 0
                ) -> tuple[PatternSet, PatternSet]:
    """scikit-learn's bundled handwritten digits (8 x 8 images, 10 classes; no download): two
    disjoint random draws of n_train and n_test images, pixels scaled to [0, 1] (x, (n, 64)),
    one-hot targets (n, 10); labels ``class`` (the digit) and ``image`` (index in the data set).
    """
    from sklearn.datasets import load_digits

    if n_train + n_test > DIGITS:
        raise ValueError(f"the digits data set has {DIGITS} images, n_train + n_test = "
                         f"{n_train + n_test}: draw fewer")
    data = load_digits()
    order = np.random.default_rng(seed).permutation(DIGITS)

    def make(rows, role):
        return pattern_set(data.images[rows] / 16.0, data.target[rows].astype(np.int64),
                           n_classes=10,
                           labels={"image": rows},
                           description={"kind": "digits", "role": role, "n": len(rows),
                                        "seed": seed})

    return make(order[:n_train], "train"), make(order[n_train:n_train + n_test], "test")
