"""Ctrl-C that never lands between creating a trial and owning it.

Optuna's loop creates the trial row (RUNNING) before it calls the objective. A
KeyboardInterrupt in between (in the sampler, or in the storage calls around it) leaves a
RUNNING trial that nothing fails: Optuna fails a trial only when the objective raised, and
the driver fails only trials that carry its workers' record, written by the objective.
So SIGINT is held from before the trial is created until the objective has started, and
again from the objective's return until Optuna has stored the result; a Ctrl-C that came
meanwhile is raised as soon as the hold ends (inside the objective, where Optuna fails the
trial with it).
"""

from __future__ import annotations

import signal
import threading

_held = None  # the handler ours replaced while holding (None: not holding)
_pending = False  # a SIGINT came while held


def _remember(signum, frame) -> None:
    global _pending
    _pending = True


def hold_interrupts() -> None:
    """Hold SIGINT until :func:`release_interrupts`. Only in the main thread (the only one
    Python delivers signals to) and only while SIGINT has a Python handler, so an ignored
    SIGINT (nohup) stays ignored."""
    global _held
    if _held is not None or threading.current_thread() is not threading.main_thread():
        return
    previous = signal.getsignal(signal.SIGINT)
    if not callable(previous):
        return
    signal.signal(signal.SIGINT, _remember)
    _held = previous


def interrupt_once(signum, frame) -> None:
    """A SIGINT handler that raises KeyboardInterrupt once and then ignores SIGINT: a
    worker process's, as the driver that stops it repeats its SIGINT, which must not cut
    short the failing of the trial and the exit."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    raise KeyboardInterrupt


def release_interrupts() -> None:
    """End the hold (the handler before it is back); if a SIGINT came during it, that
    handler gets it now (Python's default raises KeyboardInterrupt)."""
    global _held, _pending
    if _held is None:
        return
    previous, _held = _held, None
    signal.signal(signal.SIGINT, previous)
    if _pending:
        _pending = False
        previous(signal.SIGINT, None)
