"""What the reader reports: Problems and notes of a series (their messages start with its study and series
ids), its warning class and the error of a file that cannot be used."""

from __future__ import annotations

from pathlib import Path
from typing import Final

from spinegrade.errors import DataError, Problem

# Problem kinds of slices read_series sets aside (each names its file).
SET_ASIDE_KINDS: Final = ("foreign_series", "localiser", "partial_geometry", "duplicate_position")


class SeriesWarning(UserWarning):
    """A series quirk that read_series worked around (skipped file, resampled slice, missing geometry);
    `problem` is the Problem saying so."""

    def __init__(self, problem: Problem) -> None:
        super().__init__(problem.message)
        self.problem = problem


class FileError(DataError):
    """A file (or the series folder) that cannot be used: `kind` says why (a Problem kind), `reason` says
    what is wrong without the path, which the message (`{path}: {reason}`) adds."""

    def __init__(self, kind: str, reason: str, path: Path) -> None:
        super().__init__(f"{path}: {reason}")
        self.kind = kind
        self.reason = reason
        self.path = path

    def text(self, folder: Path) -> str:
        """The error as a series_problem text: the reason, after the file's name when it is a file."""
        return self.reason if self.path == folder else f"{self.path.name}: {self.reason}"


def series_problem(
    folder: Path, kind: str, text: str, file: Path | None = None, *, note: bool = False
) -> Problem:
    """A Problem (or a note) of the series in `folder`. In the RSNA layout (<study_id>/<series_id>) the
    message starts with "study S series X", so that it says where in any console, whatever path the data
    was given by; elsewhere with the folder. `file` (default: the folder) keeps the full path."""

    def number(name: str) -> int | None:
        return int(name) if name.isdigit() else None

    study_id, series_id = number(folder.parent.name), number(folder.name)
    rsna = study_id is not None and series_id is not None
    where = f"study {study_id} series {series_id}" if rsna else f"series {folder}"
    return Problem(
        kind=kind,
        message=f"{where}: {text}",
        file=str(file if file is not None else folder),
        study_id=study_id,
        series_id=series_id,
        note=note,
    )
