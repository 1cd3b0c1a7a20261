"""Results written where optuna-dashboard shows them: the study's and trials' notes.

A finished Optuna trial takes no new attributes, so results computed after a trial ends
(the verified robust accuracy) cannot sit beside its user attributes on the dashboard's
trial page. optuna-dashboard's notes can: they are Markdown kept with the study and shown
on the study page and on each trial's page, and they can be written after the trial ended.

People write notes in the dashboard too, so automoe owns only a marked section of each
note and replaces that section alone; the rest of the text is kept as it was.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import optuna


@dataclass(frozen=True)
class _TrialHandle:
    """What ``save_note`` and ``get_note`` read of a trial (its storage, study and id).

    An ``optuna.Trial`` on a finished trial would do too, but building one calls the
    sampler's ``before_trial``, which NSGA-II answers by writing to the trial.
    """

    study: optuna.Study
    _trial_id: int

    @property
    def storage(self):
        return self.study._storage


def _target(study: optuna.Study, trial_number: int | None):
    if trial_number is None:
        return study
    return _TrialHandle(study, study.get_trials(deepcopy=False)[trial_number]._trial_id)


def _markers(section: str) -> tuple[str, str]:
    return f"<!-- automoe:{section} -->", f"<!-- /automoe:{section} -->"


def _note_api():
    """optuna-dashboard's ``(get_note, save_note)``.

    Imported here, not with the module: optuna-dashboard imports its web app and
    scikit-learn (about a second), which every CLI command would pay at start; only
    writing or reading a note needs it."""
    # deferred: see the docstring
    from optuna_dashboard import get_note, save_note

    return get_note, save_note


def set_note_section(study: optuna.Study, trial_number: int | None, section: str,
                     body: str) -> None:
    """Put ``body`` (Markdown) in the named section of the study's note (``trial_number``
    None) or of a trial's note, replacing that section's earlier text and keeping the
    rest of the note."""
    get_note, save_note = _note_api()
    target = _target(study, trial_number)
    begin, end = _markers(section)
    block = f"{begin}\n{body.strip()}\n{end}"
    note = get_note(target) or ""
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.DOTALL)
    if pattern.search(note):
        updated = pattern.sub(lambda _: block, note, count=1)
    else:
        updated = f"{note.rstrip()}\n\n{block}" if note.strip() else block
    if updated != note:
        save_note(target, updated)


def note_section(study: optuna.Study, trial_number: int | None, section: str) -> str | None:
    """The text of a section written by :func:`set_note_section`, or None."""
    get_note, _ = _note_api()
    target = _target(study, trial_number)
    begin, end = _markers(section)
    match = re.search(re.escape(begin) + r"\n(.*?)\n" + re.escape(end), get_note(target) or "",
                      re.DOTALL)
    return match.group(1) if match else None
