"""How many CPU threads torch uses inside one operation (intra-op), chosen for the work's size.

The studies' networks are small: one update multiplies a batch of a few hundred patterns by a few
thousand weights, far too little to pay for waking and synchronizing threads, so torch's default
of one thread per core makes training several times slower than one thread, most of all on a
shared machine (benchmarks/bench_threads.py prints the ratio). ``train`` therefore runs small
work on one thread by default (``threads_for``), and ``threads`` sets a count for any block of
code, e.g. a forecast or a whole study: ``with rk.threads(1): rk.forecast(...)``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

# Multiply-adds per pass (rows x parameters) below which one thread is the faster choice: the
# default study does 7e5 (200 patterns x 3,408 weights); one thread still won 5-10x at 7e6
# (hidden 1000) on 2 cores.
SMALL_WORK = 2**24


def threads_for(parameters: int, rows: int, device: torch.device | str = "cpu") -> int | None:
    """1 for CPU work below SMALL_WORK multiply-adds per pass (rows x parameters), else None
    (leave torch's setting)."""
    if torch.device(device).type != "cpu":
        return None
    return 1 if parameters * rows < SMALL_WORK else None


def threads_for_run(network, curriculum, probes, device: torch.device | str | None = None
                    ) -> int | None:
    """threads_for a training run or forecast: the largest batch of rows any pass takes, on
    ``device`` (default: where the network's weights are)."""
    rows = max([len(probes), *(stage.batch_size for stage in curriculum.stages)])
    device = next(iter(network.parameters())).device if device is None else device
    return threads_for(sum(p.numel() for p in network.parameters()), rows, device)


@contextmanager
def threads(count: int | None) -> Iterator[None]:
    """Run the block with torch.set_num_threads(count) and numpy's BLAS / OpenMP pools limited
    to ``count`` (threadpoolctl), restoring both after; ``None`` leaves the settings as they are.
    The settings are per process."""
    if count is not None and (isinstance(count, bool) or not isinstance(count, int)
                              or count < 1):
        raise ValueError(f"threads must be a whole number >= 1 (or None for torch's setting), "
                         f"got {count!r}")
    if count is None:
        yield
        return
    from threadpoolctl import threadpool_limits  # scikit-learn's dependency

    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        with threadpool_limits(limits=count):
            yield
    finally:
        torch.set_num_threads(before)
