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

_held = False  # whether our handler is installed
_pending = False  # a SIGINT came while held


def _remember(signum, frame) -> None:
    global _pending
    _pending = True


def hold_interrupts() -> None:
    """Hold SIGINT until :func:`release_interrupts`. Only in the main thread (the only one
    Python delivers signals to) and only while SIGINT has Python's default handler, so an
    ignored SIGINT (nohup) or a caller's own handler is left alone."""
    global _held
    if _held or threading.current_thread() is not threading.main_thread():
        return
    if signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        return
    signal.signal(signal.SIGINT, _remember)
    _held = True


def ignore_further_interrupts() -> None:
    """Once interrupted, let a repeated SIGINT (a driver stopping its workers repeats it)
    not cut short the failing of the trial and the exit. Main thread only."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.SIG_IGN)


def release_interrupts() -> None:
    """End the hold; raise KeyboardInterrupt if a SIGINT came during it."""
    global _held, _pending
    if not _held:
        return
    signal.signal(signal.SIGINT, signal.default_int_handler)
    _held = False
    if _pending:
        _pending = False
        raise KeyboardInterrupt
