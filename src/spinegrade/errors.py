"""Errors and reported problems shared by every stage."""

from __future__ import annotations

from dataclasses import asdict, dataclass


class SpinegradeError(Exception):
    """Base class of the errors spinegrade raises on purpose (the CLI prints them without a traceback)."""


class DataError(SpinegradeError, ValueError):
    """Input that cannot be used as it is; the message names the file, row, column or tag at fault."""


@dataclass(frozen=True)
class Problem:
    """A quirk of the data that is reported, not fatal (a blank label, an undescribed image folder...).

    A problem means something was set aside, skipped, resampled or fell back to priors: a user should
    look. `note` marks what only says how the data was acquired (angled blocks, InstanceNumber running
    against the slice order): shown apart from the problems.
    """

    kind: str
    message: str
    file: str | None = None
    study_id: int | None = None
    series_id: int | None = None
    note: bool = False

    def to_dict(self) -> dict:
        return asdict(self)
