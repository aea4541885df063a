"""What stored work was made with, and the error that stops a rerun from reusing it when that has changed.

Every stage records beside its output the settings that change it: the photos their photo settings, each
super-resolved shard the digest of the photos and of the trained model it was made from and its precision,
each trained model (and its checkpoint) the training settings that change its weights. Before any work, a
stage compares what is recorded with what the grid asks for now and stops with :class:`StaleWork` when they
differ, rather than silently reusing work made otherwise.
"""

from __future__ import annotations

import hashlib
import json

from srfp.errors import UserError

#: What a difference shows for a value an artefact did not record (made by an earlier srfp).
NOT_RECORDED = "not recorded"


def normalised(value):
    """A value as a JSON record stores it (tuples as lists, integer keys as strings), so stored and new compare."""
    return json.loads(json.dumps(value, sort_keys=True))


def digest(value) -> str:
    """The SHA-256 of a JSON-able value, independent of key order."""
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()


def differences(stored: dict, current: dict) -> list[str]:
    """``setting: stored value, now new value`` for each setting of ``current`` that ``stored`` records otherwise."""
    stored, current = normalised(stored), normalised(current)
    return [f"{name}: {json.dumps(stored[name]) if name in stored else NOT_RECORDED}, now {json.dumps(value)}"
            for name, value in current.items() if stored.get(name, NOT_RECORDED) != value]


class StaleWork(UserError):
    """Stored work made with other settings than the grid's; the message says what differs and how to redo it."""

    def __init__(self, what: str, changes: list[str], stage: str):
        super().__init__(f"{what} was made with other settings ({'; '.join(changes)}); to start afresh, use a new "
                         f"--root, or delete it and redo it with `python -m srfp.grid {stage} --force` (or "
                         f"`run --force {stage}`)")


def check_unchanged(what: str, stored: dict, current: dict, stage: str) -> None:
    """Stop with :class:`StaleWork` when ``stored`` records any setting of ``current`` otherwise."""
    changes = differences(stored, current)
    if changes:
        raise StaleWork(what, changes, stage)
