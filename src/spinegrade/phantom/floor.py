"""The phantom's known floor: the oracle's predictions P(grade | latent) and what they and the prior score.

No model of the images can beat the oracle in expectation, since the labels are drawn from exactly those
probabilities; the weight-optimal per-level prior is the bar any model has to clear. Both are scored with
the project's challenge score, as `spinegrade evaluate` would score them.
"""

from __future__ import annotations

from collections.abc import Iterable

import pandas as pd

from spinegrade.data.tables import labels_long
from spinegrade.evaluation.priors import level_priors
from spinegrade.evaluation.score import challenge_score, score_submission
from spinegrade.phantom.study import PhantomStudy
from spinegrade.vocab import CONDITIONS, LABEL_COLUMNS, LEVELS, SEVERITIES, make_row_id

ORACLE_FILE = "oracle_submission.csv"
SUBMISSION_COLUMNS = ("row_id", *SEVERITIES)
# Rows of a study in the order of sample_submission.csv: conditions alphabetically, then levels.
_ROW_ORDER = [(c, lv, LABEL_COLUMNS.index(f"{c}_{lv}")) for c in sorted(CONDITIONS) for lv in LEVELS]


def oracle_submission(studies: Iterable[PhantomStudy]) -> pd.DataFrame:
    """P(grade | latent) of every target of `studies`, in submission format (25 rows per study)."""
    rows = []
    for study in studies:
        oracle = study.labels.oracle[0]
        rows += [(make_row_id(study.study_id, c, lv), *oracle[j]) for c, lv, j in _ROW_ORDER]
    return pd.DataFrame(rows, columns=list(SUBMISSION_COLUMNS))


def label_frame(studies: Iterable[PhantomStudy]) -> pd.DataFrame:
    """train.csv-format labels of `studies`: study_id and the 25 severities (None where blank)."""
    return pd.DataFrame([s.label_row() for s in studies], columns=["study_id", *LABEL_COLUMNS])


def floor_score(labels_wide: pd.DataFrame, oracle: pd.DataFrame) -> float:
    """Challenge score of the oracle on the labelled studies (the oracle's other studies are left out)."""
    ids = oracle["row_id"].str.partition("_")[0].astype("int64")
    return score_submission(labels_wide, oracle[ids.isin(labels_wide["study_id"]).to_numpy()])["score"]


def prior_score(train_wide: pd.DataFrame, scored_wide: pd.DataFrame) -> float:
    """Challenge score on `scored_wide` of the weight-optimal per-level prior of `train_wide`."""
    priors = level_priors(labels_long(train_wide), weighted=True)
    return challenge_score(labels_long(scored_wide).merge(priors, on=["condition", "level"]))["score"]
