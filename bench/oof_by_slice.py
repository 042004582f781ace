"""How much of a cv run's end-to-end loss sits on the targets whose located slice was off.

    python bench/oof_by_slice.py CV_DIR --labels train.csv [--oracle oracle_submission.csv]

Joins cv's out-of-fold located points (oof_points.csv: slice_error, error_mm per target) with its end-to-end
and labelled-point (oracle points) predictions and, when given, the phantom's true probabilities, and
prints per series type and located slice (exact or off) the number of targets, the median point error and
each prediction's mean log loss weighted 1/2/4 by the grade as the score weights it (per row, not the
score's per-group normalisation: a breakdown, not the score). Prints JSON.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd

from spinegrade.data.tables import labels_long, read_train_labels
from spinegrade.evaluation.submission import read_submission
from spinegrade.vocab import SEVERITIES, SEVERITY_WEIGHTS, make_row_id


def row_losses(rows: pd.DataFrame, submission: pd.DataFrame) -> np.ndarray:
    """-log p(grade) of each labelled row (row_id, severity) under `submission` (rows renormalised)."""
    probs = submission.set_index("row_id").loc[rows["row_id"], list(SEVERITIES)].to_numpy(np.float64)
    probs = probs / probs.sum(axis=1, keepdims=True)
    picked = probs[np.arange(len(rows)), rows["severity"].to_numpy(np.int64)]
    return -np.log(np.clip(picked, 1e-15, 1.0))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cv", type=Path, help="a cv output folder (oof_points.csv, oof_*submission.csv)")
    parser.add_argument("--labels", type=Path, required=True, help="the train.csv it was run on")
    parser.add_argument("--oracle", type=Path, help="the phantom's oracle_submission.csv (optional)")
    args = parser.parse_args()
    labels = labels_long(read_train_labels(args.labels))
    labels["row_id"] = [make_row_id(*k) for k in labels[["study_id", "condition", "level"]].itertuples(False)]
    points = pd.read_csv(args.cv / "oof_points.csv")
    points["row_id"] = [make_row_id(*k) for k in points[["study_id", "condition", "level"]].itertuples(False)]
    rows = labels.merge(points[["row_id", "series_type", "slice_error", "error_mm"]], on="row_id")
    rows = rows.dropna(subset=["slice_error"])
    sources = {
        "end_to_end": args.cv / "oof_submission.csv",
        "oracle_points": args.cv / "oof_oracle_submission.csv",
        **({"floor": args.oracle} if args.oracle else {}),
    }
    losses = {name: row_losses(rows, read_submission(path)) for name, path in sources.items()}
    weights = np.asarray(SEVERITY_WEIGHTS, dtype=np.float64)[rows["severity"].to_numpy(np.int64)]
    slice_exact = rows["slice_error"].to_numpy() == 0
    out = []
    for series_type in sorted(rows["series_type"].unique()):
        for exact in (True, False):
            keep = (rows["series_type"].to_numpy() == series_type) & (slice_exact == exact)
            out.append(
                {
                    "series_type": series_type,
                    "slice": "exact" if exact else "off",
                    "targets": int(keep.sum()),
                    "median_error_mm": round(float(np.median(rows["error_mm"].to_numpy()[keep])), 2),
                    **{
                        n: round(float(np.average(v[keep], weights=weights[keep])), 4)
                        for n, v in losses.items()
                    },
                }
            )
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
