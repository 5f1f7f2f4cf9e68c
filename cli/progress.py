"""Progress for long CLI work on stderr (the library itself never prints; it calls back).

On a terminal: rich bars, one per part (e.g. the cells of a study and the training steps of the
current cell), with elapsed time. Otherwise (a log file, a pipe): plain lines, one when a part
starts or ends and one at least every PERIOD seconds while work goes on, from a heartbeat thread,
so a log never goes quiet for longer even while a step computes without calling back.
"""

from __future__ import annotations

import contextlib
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import TextIO

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

PERIOD = 5.0  # seconds between plain progress lines at most


class Feedback:
    """Progress of named parts: ``update(part, description, done, total)``."""

    def __init__(self, stream: TextIO | None = None, terminal: bool | None = None,
                 period: float = PERIOD) -> None:
        self.stream = stream or sys.stderr
        self.terminal = self.stream.isatty() if terminal is None else terminal
        self.period = period
        self.started = time.monotonic()
        self._lock = threading.Lock()
        self._state: dict[str, tuple[str, int, int]] = {}
        self._last_line = 0.0
        self._stop = threading.Event()
        self._bar: Progress | None = None
        self._tasks: dict[str, int] = {}

    def __enter__(self) -> Feedback:
        if self.terminal:
            self._bar = Progress(TextColumn("{task.description}"), BarColumn(),
                                 MofNCompleteColumn(), TimeElapsedColumn(),
                                 TimeRemainingColumn(), console=Console(file=self.stream),
                                 transient=True)
            self._bar.__enter__()
        else:
            self._last_line = time.monotonic()
            threading.Thread(target=self._heartbeat, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._bar is not None:
            self._bar.__exit__(*exc)

    def update(self, part: str, description: str, done: int, total: int) -> None:
        with self._lock:
            before = self._state.get(part)
            self._state[part] = (description, done, total)
            if self._bar is not None:
                if part not in self._tasks:
                    self._tasks[part] = self._bar.add_task(description, total=total)
                self._bar.update(self._tasks[part], description=description, completed=done,
                                 total=total)
                return
            starts = before is None or before[0] != description
            if starts or done >= total or time.monotonic() - self._last_line >= self.period:
                self._line()

    def _line(self) -> None:
        """One plain line with every part's state (called with the lock held)."""
        parts = "; ".join(f"{d} {n}/{t}" for d, n, t in self._state.values())
        elapsed = time.monotonic() - self.started
        print(f"[{elapsed:5.0f} s] {parts}", file=self.stream, flush=True)
        self._last_line = time.monotonic()

    def _heartbeat(self) -> None:
        while not self._stop.wait(min(1.0, self.period / 2)):
            with self._lock:
                if self._state and time.monotonic() - self._last_line >= self.period:
                    self._line()


@contextlib.contextmanager
def step_progress(description: str, total: int) -> Iterator[Callable[[int], None]]:
    """Progress of one part; yields ``advance(done)`` to report the work done so far."""
    with Feedback() as feedback:
        feedback.update(description, description, 0, total)
        yield lambda done: feedback.update(description, description, done, total)
