"""Score a submission file against a labels file and (optionally) write the report: the library form of
`spinegrade evaluate`, used by the CLI and the demo."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import pandas as pd

from spinegrade.data.tables import read_train_labels
from spinegrade.errors import DataError
from spinegrade.evaluation.priors import training_priors
from spinegrade.evaluation.report import build_report, write_report
from spinegrade.evaluation.score import EvaluationWarning, join_submission, score_rows, scored_rows
from spinegrade.evaluation.submission import read_submission


def evaluate_submission(
    labels: str | os.PathLike,
    pred: str | os.PathLike,
    *,
    out: str | os.PathLike | None = None,
    allow_missing: bool = False,
    priors: str | os.PathLike | None = None,
    views: str | os.PathLike | None = None,
) -> dict:
    """The report dict (score, its four parts, metrics, counts, warnings) of `pred` scored against `labels`.

    With `out`, report.json, report.md, report.html and the figures are written there, all or nothing;
    report.html links each study to its page in `views` (default: the `spinegrade view` folder of a
    submission written by predict, <pred folder>/studies/view, when it exists). Non-fatal issues
    (renormalised rows, unknown studies, filled predictions) are listed under report["warnings"].
    allow_missing fills targets `pred` lacks with the training priors of `priors` (priors.training_priors:
    the training labels or the runs that made `pred`); without them it is refused, as priors of the scored
    labels themselves would leak the answers into the score.
    """
    truth = read_train_labels(labels)
    fill = _fill_priors(truth, priors) if allow_missing else None
    if priors is not None and not allow_missing:
        raise DataError("--priors only fills missing predictions: pass --allow-missing with it")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", EvaluationWarning)
        joined = join_submission(truth, read_submission(pred), fill=fill)
        rows = scored_rows(joined.frame)
        scores = score_rows(rows)
    report = build_report(
        rows,
        scores,
        counts=joined.counts,
        warnings=[str(w.message) for w in caught],
        inputs={"labels": str(labels), "pred": str(pred), "priors": None if priors is None else str(priors)},
    )
    if out is not None:
        default_views = Path(pred).parent / "studies" / "view"
        write_report(report, rows, out, views=views if views is not None else default_views)
    return report


def _fill_priors(labels: pd.DataFrame, priors: str | os.PathLike | None) -> pd.DataFrame:
    """The training priors to fill missing predictions with; DataError without them or when they come
    from studies being scored."""
    if priors is None:
        raise DataError(
            "--allow-missing fills missing predictions with training priors, never those of the labels "
            "being scored: pass --priors with the training studies' train.csv or the classifier runs "
            "that made the predictions (their best.json priors)"
        )
    fill, studies, _ = training_priors(priors)
    shared = sorted(studies & set(labels["study_id"].astype(int))) if studies else []
    if shared:
        raise DataError(
            f"--priors {priors} holds {len(shared)} of the scored studies (e.g. {shared[0]}): give the "
            "labels of the training studies only"
        )
    return fill
