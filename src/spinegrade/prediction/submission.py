"""The submission's rows: which studies to grade for a sample submission, and the rows in its order."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from spinegrade.data.tables import SAMPLE_SUBMISSION
from spinegrade.errors import DataError, Problem
from spinegrade.prediction.results import StudyResult, study_problem
from spinegrade.prediction.studies import StudyPlan


def align_with_sample(
    plans: list[StudyPlan], sample: pd.DataFrame | None
) -> tuple[list[StudyPlan], list[Problem]]:
    """The studies to grade when a sample submission fixes the rows: its studies, each found or not.

    Studies only in the images are left out (the submission must have exactly the sample's rows);
    studies only in the sample get no series (priors) and a 'study_not_found' problem.
    """
    if sample is None:
        return plans, []
    wanted = dict.fromkeys(int(r.partition("_")[0]) for r in sample["row_id"])
    by_id = {p.study_id: p for p in plans}
    problems = [
        study_problem(
            p.study_id, "not_in_sample", f"study {p.study_id} is not in {SAMPLE_SUBMISSION}; not graded"
        )
        for p in plans
        if p.study_id not in wanted
    ]
    aligned = []
    for study_id in wanted:
        if study_id in by_id:
            aligned.append(by_id[study_id])
        else:
            aligned.append(StudyPlan(study_id, ()))
            problems.append(
                study_problem(
                    study_id, "study_not_found", f"study {study_id} of {SAMPLE_SUBMISSION} has no images"
                )
            )
    return aligned, problems


def submission_frame(results: Sequence[StudyResult], sample: pd.DataFrame | None) -> pd.DataFrame:
    """All studies' rows: in the sample submission's order when given (every sample row checked), else
    study by study in the real file's order."""
    rows = pd.concat([r.rows() for r in results], ignore_index=True)
    if sample is None:
        return rows
    missing = sample.loc[~sample["row_id"].isin(rows["row_id"]), "row_id"]
    if len(missing):
        raise DataError(
            f"{SAMPLE_SUBMISSION} row {missing.iloc[0]!r} (and {len(missing) - 1} more) got no prediction"
        )
    return rows.set_index("row_id").loc[sample["row_id"]].reset_index()
