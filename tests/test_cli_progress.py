"""CLI progress (issue 14): plain lines off a terminal, a part's start and end, and a heartbeat
line at least every period while a part computes without calling back."""

import io
import time

from repkernel_cli.progress import Feedback


def test_plain_lines_mark_parts_and_never_go_quiet_for_a_period():
    stream = io.StringIO()
    with Feedback(stream, terminal=False, period=0.1) as feedback:
        feedback.update("cells", "study: cells", 0, 2)
        feedback.update("part", "cell a: training", 0, 100)
        for done in range(1, 51):  # calls back faster than the period: few lines
            feedback.update("part", "cell a: training", done, 100)
        time.sleep(0.45)  # a long step without a call back: heartbeat lines
        feedback.update("part", "cell a: training", 100, 100)
    lines = stream.getvalue().splitlines()
    assert lines[0].endswith("study: cells 0/2")
    assert lines[1].endswith("study: cells 0/2; cell a: training 0/100")
    heartbeats = [line for line in lines if line.endswith("training 50/100")]
    assert len(heartbeats) >= 2
    assert lines[-1].endswith("cell a: training 100/100")
    assert len(lines) < 20


def test_a_terminal_gets_bars_not_lines():
    stream = io.StringIO()
    with Feedback(stream, terminal=True) as feedback:
        feedback.update("part", "cell a: forecast", 3, 10)
        task = feedback._bar.tasks[0]
        assert (task.description, task.completed, task.total) == ("cell a: forecast", 3, 10)
    assert " s] " not in stream.getvalue()  # no plain "[    0 s] ..." line
