"""What the reader reports: Problems of a series (named by study, series and file), its warning class and
the error of a file that cannot be used."""

from __future__ import annotations

from pathlib import Path
from typing import Final

from spinegrade.errors import DataError, Problem

# Problem kinds of slices read_series sets aside (each names its file).
SET_ASIDE_KINDS: Final = ("foreign_series", "localiser", "partial_geometry", "duplicate_position")


class SeriesWarning(UserWarning):
    """A series quirk that read_series worked around (skipped file, resampled slice, missing geometry)."""


class FileError(DataError):
    """A file of the series that cannot be used; `kind` says why (a Problem kind)."""

    def __init__(self, kind: str, message: str, path: Path) -> None:
        super().__init__(message)
        self.kind = kind
        self.path = path


def series_problem(folder: Path, kind: str, message: str, file: Path | None = None) -> Problem:
    """A Problem of the series in `folder` (RSNA layout: <study_id>/<series_id>)."""

    def number(name: str) -> int | None:
        return int(name) if name.isdigit() else None

    return Problem(
        kind=kind,
        message=message,
        file=str(file if file is not None else folder),
        study_id=number(folder.parent.name),
        series_id=number(folder.name),
    )
