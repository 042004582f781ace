"""Errors and reported problems shared by every stage."""

from __future__ import annotations

from dataclasses import asdict, dataclass


class SpinegradeError(Exception):
    """Base class of the errors spinegrade raises on purpose (the CLI prints them without a traceback)."""


class DataError(SpinegradeError, ValueError):
    """Input that cannot be used as it is; the message names the file, row, column or tag at fault."""


@dataclass(frozen=True)
class Problem:
    """A quirk of the data that is reported, not fatal (a blank label, an undescribed image folder...)."""

    kind: str
    message: str
    file: str | None = None
    study_id: int | None = None
    series_id: int | None = None

    def to_dict(self) -> dict:
        return asdict(self)
