"""Pattern sets: stimuli, task cues, targets and the per-pattern labels that become coordinates."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from repkernel.losses import one_hot


@dataclass(frozen=True, eq=False)
class PatternSet:
    """A set of n training or probe patterns.

    x: (n, n_stimulus) stimulus; c: (n, n_cues) task cue, or None where the environment has no
    cues; y: (n, n_outputs) target. ``labels`` maps a name to a length-n numpy array per pattern
    (task, k, input_dim, ...); each becomes a coordinate on the ``item`` dimension of results.
    ``description`` records how the set was made (for provenance in result attributes).
    Tensors are stored as float64 on the CPU; callers move them with :meth:`to`.
    """

    x: torch.Tensor
    y: torch.Tensor
    c: torch.Tensor | None = None
    labels: Mapping[str, np.ndarray] = field(default_factory=dict)
    description: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = self.x.shape[0]
        if self.x.ndim != 2 or self.y.ndim != 2:
            raise ValueError(
                f"patterns need 2-D x and y (n, features); got x {tuple(self.x.shape)}, "
                f"y {tuple(self.y.shape)}: reshape single inputs to (n, 1)"
            )
        if self.y.shape[0] != n or (self.c is not None and self.c.shape[0] != n):
            raise ValueError(
                f"x, c and y must have the same number of patterns; got x {self.x.shape[0]}, "
                f"c {None if self.c is None else self.c.shape[0]}, y {self.y.shape[0]}"
            )
        for name, values in self.labels.items():
            if len(values) != n:
                raise ValueError(f"label {name!r} has {len(values)} entries for {n} patterns")
        if not all(torch.isfinite(t).all() for t in (self.x, self.y) + self._cue()):
            raise ValueError("patterns contain NaN or inf values: clean the data before use")

    def _cue(self) -> tuple[torch.Tensor, ...]:
        return () if self.c is None else (self.c,)

    def __len__(self) -> int:
        return self.x.shape[0]

    @property
    def n_stimulus(self) -> int:
        return self.x.shape[1]

    @property
    def n_outputs(self) -> int:
        return self.y.shape[1]

    def __getitem__(self, index: int | slice | Sequence[int] | np.ndarray) -> PatternSet:
        if isinstance(index, int):
            index = [index]
        index = np.arange(len(self))[index]
        rows = torch.as_tensor(index, dtype=torch.long)
        return PatternSet(
            x=self.x[rows],
            y=self.y[rows],
            c=None if self.c is None else self.c[rows],
            labels={name: np.asarray(v)[index] for name, v in self.labels.items()},
            description={**self.description, "subset": len(index)},
        )

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None):
        """(x, c, y) as tensors on ``device`` with ``dtype`` (c is None without cues)."""
        def move(t):
            return None if t is None else t.to(device=device, dtype=dtype or t.dtype)

        return move(self.x), move(self.c), move(self.y)

    def coords(self) -> dict[str, tuple[str, np.ndarray]]:
        """xarray coordinates on the ``item`` dimension: the item index plus every label."""
        coords = {"item": ("item", np.arange(len(self)))}
        coords.update({name: ("item", np.asarray(v)) for name, v in self.labels.items()})
        return coords

    def fingerprint(self) -> str:
        """A short content hash, so a result can be traced to the exact patterns it used."""
        digest = hashlib.sha256()
        for t in (self.x, self.y) + self._cue():
            digest.update(t.detach().cpu().to(torch.float64).numpy().tobytes())
        return digest.hexdigest()[:16]

    def summary(self) -> dict[str, Any]:
        """JSON-ready provenance: size, shapes, fingerprint and how the set was made."""
        return {
            "n": len(self),
            "n_stimulus": self.n_stimulus,
            "n_cues": 0 if self.c is None else self.c.shape[1],
            "n_outputs": self.n_outputs,
            "fingerprint": self.fingerprint(),
            **dict(self.description),
        }

    @staticmethod
    def concat(sets: Sequence[PatternSet]) -> PatternSet:
        """Concatenate pattern sets with the same shapes; labels must have the same names."""
        if not sets:
            raise ValueError("concat needs at least one pattern set")
        first = sets[0]
        for other in sets[1:]:
            if (other.n_stimulus, other.n_outputs) != (first.n_stimulus, first.n_outputs) or (
                (other.c is None) != (first.c is None)
            ):
                raise ValueError("cannot concatenate pattern sets of different shapes")
            if set(other.labels) != set(first.labels):
                raise ValueError("cannot concatenate pattern sets with different label names")
        return PatternSet(
            x=torch.cat([s.x for s in sets]),
            y=torch.cat([s.y for s in sets]),
            c=None if first.c is None else torch.cat([s.c for s in sets]),
            labels={k: np.concatenate([np.asarray(s.labels[k]) for s in sets])
                    for k in first.labels},
            description={"concat": [dict(s.description) for s in sets]},
        )


def pattern_set(x, y, c=None, labels=None, description=None,
                n_classes: int | None = None, item_dim: str | None = None) -> PatternSet:
    """Build a PatternSet from numpy arrays, torch tensors or xarray DataArrays (stored as
    float64 CPU tensors).

    x: stimuli (n, D), or (n, ...) flattened per item (e.g. images (n, 8, 8) -> (n, 64); a
    wrapped network restores the shape with ``input_shape``). y: targets (n, O), or integer
    class labels (n,), one-hot encoded into (n, n_classes) columns (default n_classes: the
    largest label + 1) and kept as the label ``class``. DataArrays: their item dim is
    ``item_dim`` (default: the first dim) and every coordinate along it (stimulus names,
    categories) becomes a label, hence an item coordinate of results; x's and y's labels must
    agree where both have one.
    """
    labels = dict(labels or {})
    x, y, c = (_values(a, "xyc"[i], item_dim, labels) for i, a in enumerate((x, y, c)))
    if y.ndim == 1 and np.issubdtype(y.dtype, np.integer):
        labels.setdefault("class", y)
        y = one_hot(torch.as_tensor(y), n_classes or int(y.max()) + 1).numpy()
    description = dict(description or {})
    if x.ndim > 2:
        description.setdefault("item_shape", list(x.shape[1:]))
        x = x.reshape(len(x), -1)

    def tensor(a):
        return None if a is None else torch.as_tensor(a, dtype=torch.float64)

    return PatternSet(x=tensor(x), y=tensor(y), c=tensor(c), labels=labels,
                      description=description)


def _values(a, name: str, item_dim: str | None, labels: dict) -> np.ndarray | None:
    """a as a numpy array; a DataArray's item coordinates added to ``labels``."""
    if a is None:
        return None
    if isinstance(a, torch.Tensor):
        return a.detach().cpu().numpy()
    if type(a).__name__ == "DataArray":
        dim = item_dim or a.dims[0]
        if dim not in a.dims:
            raise ValueError(f"{name} has dims {a.dims} but no item dim {dim!r}: give "
                             f"item_dim= the dim that lists the patterns")
        a = a.transpose(dim, ...)
        for coord in a.coords:
            if a[coord].dims != (dim,) or coord == "item":
                continue
            values = np.asarray(a[coord].values)
            if coord in labels and not np.array_equal(labels[coord], values):
                raise ValueError(f"label {coord!r} of {name} differs from the one already given "
                                 f"(x's or labels=): give the same items in the same order")
            labels[coord] = values
        return np.asarray(a.values)
    return np.asarray(a)
