"""The radiologists' side of a study page: true grades, their points and the loss of each target."""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass

import pandas as pd

from spinegrade.data.tables import COORDINATE_COLUMNS, labels_long, read_label_coordinates, read_train_labels
from spinegrade.evaluation.score import EvaluationWarning, scored_rows, study_losses
from spinegrade.vocab import SEVERITIES


@dataclass(frozen=True)
class Truth:
    """Labels of many studies: severities (long form, int 0..2) and the labelled points (may be empty)."""

    severities: pd.DataFrame  # study_id, condition, level, severity
    points: pd.DataFrame  # study_id, series_id, instance_number, condition, level, x, y

    @classmethod
    def read(cls, labels: str | os.PathLike, coords: str | os.PathLike | None = None) -> Truth:
        """train.csv-format labels and, optionally, train_label_coordinates.csv-format points."""
        points = (
            read_label_coordinates(coords)
            if coords is not None
            else pd.DataFrame(columns=list(COORDINATE_COLUMNS))
        )
        return cls(labels_long(read_train_labels(labels)), points)

    def has(self, study_id: int) -> bool:
        return bool((self.severities["study_id"] == study_id).any())

    def points_of(self, study_id: int) -> pd.DataFrame:
        return self.points[self.points["study_id"] == study_id].reset_index(drop=True)

    def losses(self, study_id: int, grades: pd.DataFrame) -> tuple[pd.DataFrame, float | None]:
        """Per labelled target of the study: severity, weight, -log p(true) and weight * that; and the study's
        weighted log loss (evaluation.score.study_losses), None without labels."""
        mine = self.severities[self.severities["study_id"] == study_id]
        frame = mine.merge(grades[["condition", "level", *SEVERITIES]], on=["condition", "level"])
        if frame.empty:
            return frame.assign(weight=[], nll=[], loss=[]), None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", EvaluationWarning)  # priors are normalised; nothing to report
            rows = scored_rows(frame)
        table = frame[["condition", "level", "severity"]].assign(
            weight=rows.weight, nll=rows.nll, loss=rows.weight * rows.nll
        )
        return table, float(study_losses(rows)["weighted_log_loss"].iat[0])
