"""Benchmark of the challenge score: 2,000 studies x 25 targets, random labels, Dirichlet predictions.

Times (median of RUNS runs, seconds): challenge_score on a ready frame; score_submission on in-memory
DataFrames (CSV parse excluded); read_train_labels + read_submission + score_submission from CSV files
(CSV parse included). Wall-clock medians, plus the process's CPU time, which a busy machine distorts less.
Prints one JSON object. Run: .venv/bin/python bench/evaluate.py
"""

from __future__ import annotations

import json
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from spinegrade.data.tables import read_train_labels
from spinegrade.evaluation.score import challenge_score, score_submission
from spinegrade.evaluation.submission import read_submission
from spinegrade.vocab import LABEL_COLUMNS, SEVERITIES, SEVERITY_LABELS, TARGETS

N_STUDIES = 2000
RUNS = 9
SEED = 2024
BLANK_FRACTION = 0.01  # about train.csv's 572 blank cells of 49,375


def make_inputs(rng: np.random.Generator) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(labels in train.csv format, submission, challenge_score frame) for N_STUDIES random studies."""
    study_ids = np.sort(rng.choice(np.arange(1_000_000, 9_999_999), N_STUDIES, replace=False))
    severity = rng.choice(3, size=(N_STUDIES, len(TARGETS)), p=[0.77, 0.16, 0.07])
    text = np.asarray(SEVERITY_LABELS, dtype=object)[severity]
    text[rng.random(text.shape) < BLANK_FRACTION] = np.nan
    labels = pd.DataFrame(text, columns=list(LABEL_COLUMNS))
    labels.insert(0, "study_id", study_ids)
    probs = rng.dirichlet([4.0, 1.0, 0.5], size=N_STUDIES * len(TARGETS))
    study = np.repeat(study_ids, len(TARGETS))
    conditions = np.tile([c for c, _ in TARGETS], N_STUDIES)
    levels = np.tile([lv for _, lv in TARGETS], N_STUDIES)
    row_id = pd.Series(study).astype(str) + "_" + pd.Series(conditions) + "_" + pd.Series(levels)
    submission = pd.DataFrame({"row_id": row_id, **dict(zip(SEVERITIES, probs.T, strict=True))})
    frame = pd.DataFrame({"study_id": study, "condition": conditions, "level": levels})
    frame["severity"] = np.where(pd.isna(text.ravel()), np.nan, severity.ravel())
    frame[list(SEVERITIES)] = probs
    return labels, submission, frame


def timed(fn: Callable[[], object]) -> dict[str, float | list[float]]:
    """Median wall and CPU seconds of RUNS calls of fn, and the wall times of every run."""
    wall, cpu = [], []
    for _ in range(RUNS):
        start, start_cpu = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return {"median_s": statistics.median(wall), "median_cpu_s": statistics.median(cpu), "times_s": wall}


def main() -> None:
    labels, submission, frame = make_inputs(np.random.default_rng(SEED))
    warnings.simplefilter("error")  # the inputs are clean: any warning is a bug
    with tempfile.TemporaryDirectory() as tmp:
        labels_csv, submission_csv = Path(tmp) / "train.csv", Path(tmp) / "submission.csv"
        labels.to_csv(labels_csv, index=False)
        submission.to_csv(submission_csv, index=False)
        results = {
            "challenge_score": timed(lambda: challenge_score(frame)),
            "score_submission_in_memory": timed(lambda: score_submission(labels, submission)),
            "score_submission_from_csv": timed(
                lambda: score_submission(read_train_labels(labels_csv), read_submission(submission_csv))
            ),
        }
    print(
        json.dumps(
            {
                "n_studies": N_STUDIES,
                "n_rows": len(frame),
                "n_scored_rows": int(frame["severity"].notna().sum()),
                "score": challenge_score(frame)["score"],
                "median_s": {name: round(r["median_s"], 4) for name, r in results.items()},
                "median_cpu_s": {name: round(r["median_cpu_s"], 4) for name, r in results.items()},
                "csv_parse_included": {
                    "challenge_score": False,
                    "score_submission_in_memory": False,
                    "score_submission_from_csv": True,
                },
                "runs": RUNS,
                "times_s": {name: [round(t, 4) for t in r["times_s"]] for name, r in results.items()},
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
