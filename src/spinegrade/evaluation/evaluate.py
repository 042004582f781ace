"""Score a submission file against a labels file and (optionally) write the report: the library form of
`spinegrade evaluate`, used by the CLI and the demo."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

from spinegrade.data.tables import read_train_labels
from spinegrade.evaluation.report import build_report, write_report
from spinegrade.evaluation.score import EvaluationWarning, join_submission, score_rows, scored_rows
from spinegrade.evaluation.submission import read_submission


def evaluate_submission(
    labels: str | os.PathLike,
    pred: str | os.PathLike,
    *,
    out: str | os.PathLike | None = None,
    allow_missing: bool = False,
    views: str | os.PathLike | None = None,
) -> dict:
    """The report dict (score, its four parts, metrics, counts, warnings) of `pred` scored against `labels`.

    With `out`, report.json, report.md, report.html and the figures are written there, all or nothing;
    report.html links each study to its page in `views` (default: the `spinegrade view` folder of a
    submission written by predict, <pred folder>/studies/view, when it exists). Non-fatal issues
    (renormalised rows, unknown studies, filled predictions) are listed under report["warnings"].
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", EvaluationWarning)
        joined = join_submission(
            read_train_labels(labels), read_submission(pred), allow_missing=allow_missing
        )
        rows = scored_rows(joined.frame)
        scores = score_rows(rows)
    report = build_report(
        rows,
        scores,
        counts=joined.counts,
        warnings=[str(w.message) for w in caught],
        inputs={"labels": str(labels), "pred": str(pred)},
    )
    if out is not None:
        default_views = Path(pred).parent / "studies" / "view"
        write_report(report, rows, out, views=views if views is not None else default_views)
    return report
