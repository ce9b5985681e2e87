"""Interrupts that wait for the end of a step: Ctrl-C in a shell or Kernel → Interrupt in Jupyter.

Python turns SIGINT into ``KeyboardInterrupt`` wherever the program happens to be, which may be between
``loss.backward()`` and ``opt.step()``: the weights would then be saved half updated. ``deferred_interrupt`` replaces
the handler for the duration of a ``with`` block by one that only raises a flag, which the training loop checks
between steps; the previous handler comes back when the block ends.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def deferred_interrupt() -> Iterator[list[bool]]:
    """Turn Ctrl-C / Kernel → Interrupt into a flag checked between steps, so a step is never half applied.

    Yields a one-element list: ``stop[0]`` becomes True at the first interrupt. Off the main thread (where Python
    cannot install signal handlers) the flag simply never rises.
    """
    flag = [False]
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return

    def handler(signum, frame):  # noqa: ARG001
        flag[0] = True

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield flag
    finally:
        signal.signal(signal.SIGINT, previous)
