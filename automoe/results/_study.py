"""What a stored study is: its name rules, its objectives and the space it was created from."""

from __future__ import annotations

import hashlib
import re

import optuna

from automoe.errors import ConfigError, StorageError
from automoe.results._record import StudyRecord
from automoe.space._metrics import DEFAULT_OBJECTIVES

# Study names become folder names (per-trial resume states): one plain path component.
_STUDY_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def check_study_name(name: str) -> str:
    """``name`` if it is a valid study name, else a :class:`ConfigError` saying why."""
    if not _STUDY_NAME.match(name) or ".." in name:
        raise ConfigError(f"study name {name!r}: use letters, digits, '.', '_' and '-' (at "
                          "most 128, starting with a letter or digit, no '..')")
    return name


def study_folder_name(name: str) -> str:
    """A folder name for the study's files: the name itself where it is valid, else (a
    study created by other tools) a hash of it, so no name can point outside the folder."""
    try:
        return check_study_name(name)
    except ConfigError:
        return "study-" + hashlib.sha256(name.encode()).hexdigest()[:16]


def study_objectives(study: optuna.Study) -> tuple[str, ...]:
    """The metric names a study optimises, in the order of its values."""
    return tuple(study.metric_names or DEFAULT_OBJECTIVES)


def space_of_study(study: optuna.Study):
    """The :class:`~automoe.space.SearchSpace` a study was created with (for workers
    joining it, and for verifying its front)."""
    # deferred: parsing a space loads the model and training configs (torch); reading a
    # study's results does not need it
    from automoe.space import SearchSpace

    raw = StudyRecord(study).space_raw
    if not raw:
        raise StorageError(f"study {study.study_name!r} stores no search space; was it created "
                           "by `automoe search`?")
    space = SearchSpace.from_dict(raw, source=f"study {study.study_name}")
    if space.fingerprint() != StudyRecord(study).space_fingerprint:
        raise StorageError(f"the space stored with study {study.study_name!r} does not match "
                           "its fingerprint; the study was written by another automoe version")
    return space
