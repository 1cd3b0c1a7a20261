"""A Ctrl-C at any moment of a trial's life leaves no RUNNING trial behind.

The tests raise SIGINT in the main thread (``signal.raise_signal``): ``os.kill`` of the own
process lets the kernel pick any thread to run the C-level handler, and on a loaded machine
the main thread could pass the moment under test before that thread ran it.
"""

import signal
import warnings

import optuna
import pytest

from automoe.search._interrupt import hold_interrupts, interrupt_once, release_interrupts
from automoe.search._study import run_one_trial


@pytest.fixture(autouse=True)
def _sigint_deliverable():
    """These tests need SIGINT delivered to this thread and handled by Python's default
    handler. A native library loaded earlier in the same pytest process (seen only in the
    full suite) can leave SIGINT blocked in the main thread; unblock it, and say so."""
    if signal.SIGINT in signal.pthread_sigmask(signal.SIG_BLOCK, []):
        warnings.warn("SIGINT was blocked in the main thread before this test; unblocked",
                      stacklevel=1)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, [signal.SIGINT])
    if signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        warnings.warn(f"SIGINT's handler was {signal.getsignal(signal.SIGINT)!r}; reset",
                      stacklevel=1)
        signal.signal(signal.SIGINT, signal.default_int_handler)


class _CtrlCOnCreate(optuna.storages.RDBStorage):
    """Sends this process a SIGINT as soon as a new trial row is committed."""

    def _create_new_trial(self, study_id, template_trial=None):  # what Optuna's cache calls
        trial = super()._create_new_trial(study_id, template_trial)
        signal.raise_signal(signal.SIGINT)
        return trial


class _CtrlCAt(optuna.samplers.RandomSampler):
    """Sends this process a SIGINT at one step of Optuna's ask, after the trial row exists."""

    def __init__(self, step: str):
        super().__init__(seed=0)
        self.step = step

    def before_trial(self, study, trial):
        super().before_trial(study, trial)
        if self.step == "before_trial":
            signal.raise_signal(signal.SIGINT)

    def after_trial(self, study, trial, state, values):
        super().after_trial(study, trial, state, values)
        if self.step == "after_trial":
            signal.raise_signal(signal.SIGINT)


@pytest.mark.parametrize("step", ["created", "before_trial", "after_trial"])
def test_ctrl_c_while_a_trial_is_created_or_told_leaves_it_finished(tmp_path, step):
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    kind = _CtrlCOnCreate if step == "created" else optuna.storages.RDBStorage
    storage = kind(f"sqlite:///{tmp_path / 's.db'}")
    study = optuna.create_study(storage=storage, sampler=_CtrlCAt(step))
    ran = []
    with pytest.raises(KeyboardInterrupt):
        run_one_trial(study, lambda trial: ran.append(trial.number) or trial.suggest_float(
            "x", 0, 1))
    (trial,) = study.get_trials()
    assert trial.state != optuna.trial.TrialState.RUNNING
    # interrupted before the objective: failed; after it returned: its result is kept
    expected = "COMPLETE" if step == "after_trial" else "FAIL"
    assert trial.state.name == expected and ran == ([0] if step == "after_trial" else [])
    if expected == "FAIL":
        assert trial.user_attrs["fail_reason"].startswith("interrupted")
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_a_held_interrupt_is_raised_when_released_and_not_before():
    hold_interrupts()
    signal.raise_signal(signal.SIGINT)
    with pytest.raises(KeyboardInterrupt):
        release_interrupts()
    release_interrupts()  # nothing pending any more
    hold_interrupts()
    release_interrupts()


def test_a_handler_of_the_callers_own_gets_the_held_interrupt():
    previous = signal.signal(signal.SIGINT, interrupt_once)
    try:
        hold_interrupts()
        signal.raise_signal(signal.SIGINT)
        with pytest.raises(KeyboardInterrupt):
            release_interrupts()
        # interrupt_once took it: a repeated SIGINT is ignored from now on
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
        signal.raise_signal(signal.SIGINT)
    finally:
        signal.signal(signal.SIGINT, previous)


def test_an_ignored_sigint_stays_ignored():
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        hold_interrupts()
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
        release_interrupts()
    finally:
        signal.signal(signal.SIGINT, previous)
