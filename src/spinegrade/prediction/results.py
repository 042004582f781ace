"""What grading produces: a study's result, the run's summary, the problems that mean priors were used."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import pandas as pd

from spinegrade.errors import Problem
from spinegrade.vocab import LEVELS, SEVERITIES, SEVERITY_LABELS, TARGETS, make_row_id

STAGES: Final = ("read", "locate", "crop", "classify")
GRADE_COLUMNS: Final = ("condition", "level", *SEVERITIES, "source")
# The real sample_submission.csv's order within a study: conditions alphabetically, levels top-down.
_ROW_ORDER: Final = sorted(TARGETS, key=lambda t: (t[0], LEVELS.index(t[1])))


class PredictionWarning(UserWarning):
    """A study (or part of one) was graded with prior probabilities instead of its images."""


@dataclass
class StudyResult:
    """One graded study: the located points, 25 grades (source 'model' or 'prior') and what went wrong."""

    study_id: int
    points: pd.DataFrame
    grades: pd.DataFrame
    problems: list[Problem] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)
    series: dict[str, list[str]] = field(default_factory=dict)
    # Where each series was read from (series_id -> folder) and the crop settings graded with (k, size,
    # crop_mm per run setting): what `spinegrade view` needs to show the slices and re-cut the crops.
    folders: dict[str, str] = field(default_factory=dict)
    crops: list[dict[str, Any]] = field(default_factory=list)

    def rows(self) -> pd.DataFrame:
        """The study's 25 submission rows, in the real sample submission's order."""
        grades = self.grades.set_index(["condition", "level"]).loc[_ROW_ORDER]
        out = grades[list(SEVERITIES)].reset_index(drop=True)
        out.insert(0, "row_id", [make_row_id(self.study_id, c, lv) for c, lv in _ROW_ORDER])
        return out

    def to_json(self, fingerprint: str) -> dict[str, Any]:
        grades = self.grades.assign(
            grade=[SEVERITY_LABELS[i] for i in self.grades[list(SEVERITIES)].to_numpy().argmax(1)]
        )
        return {
            "study_id": self.study_id,
            "fingerprint": fingerprint,
            "series": self.series,
            "points": self.points.to_dict("records"),
            "grades": grades.to_dict("records"),
            "problems": [p.to_dict() for p in self.problems],
            "seconds": self.seconds,
            "folders": self.folders,
            "crops": self.crops,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> StudyResult:
        return cls(
            int(data["study_id"]),
            pd.DataFrame(data["points"]),
            pd.DataFrame(data["grades"])[list(GRADE_COLUMNS)],
            [Problem(**p) for p in data["problems"]],
            dict(data["seconds"]),
            dict(data["series"]),
            dict(data.get("folders", {})),  # absent in JSON written before the viewer existed
            list(data.get("crops", [])),
        )


@dataclass
class PredictionSummary:
    """What `predict` did: where it wrote, how long it took, which studies fell back to priors and why."""

    submission: Path
    details: Path
    n_studies: int
    prior_source: str
    seconds_per_study: dict[str, float]
    problems: list[Problem]
    resumed: int = 0
    calibration: str = "none"  # the calibration file applied to the submission's rows
    stacking: str = "none"  # the second stage (evaluation.stacking) applied before it

    def studies_with_priors(self) -> dict[int, list[str]]:
        """study_id -> what went wrong in each study where some or all targets got prior probabilities."""
        fallback = {p.study_id for p in self.problems if p.kind in FALLBACK_KINDS}
        out: dict[int, dict[str, None]] = {}
        for p in self.problems:
            if p.study_id is not None and p.study_id in fallback and not p.note:
                out.setdefault(p.study_id, {})[p.message] = None  # each message once, in order
        return {study_id: list(messages) for study_id, messages in out.items()}

    def other_problems(self) -> list[Problem]:
        """The problems of the studies graded wholly from their images (set-aside slices, fallbacks...)."""
        fallback = self.studies_with_priors()
        return [p for p in self.problems if not p.note and p.study_id not in fallback]

    def notes(self) -> dict[str, list[Problem]]:
        """Notes (how series were acquired) by kind, one per series."""
        out: dict[str, dict[tuple, Problem]] = {}
        for p in self.problems:
            if p.note:
                out.setdefault(p.kind, {}).setdefault((p.study_id, p.series_id), p)
        return {kind: list(found.values()) for kind, found in out.items()}


# Problems after which some targets of the study were graded with priors.
FALLBACK_KINDS: Final = frozenset(
    {
        "missing_series_type",
        "not_located",
        "locate_failed",
        "crop_failed",
        "unreadable_study",
        "study_not_found",
    }
)


def study_problem(study_id: int, kind: str, message: str) -> Problem:
    """A Problem about one study."""
    return Problem(kind, message, study_id=study_id)


def reason(exc: BaseException) -> str:
    """An exception as one line for a Problem: its type and message."""
    return f"{type(exc).__name__}: {exc}"
