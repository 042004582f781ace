"""What calibration, prior-shift correction and ensembling move an OOF challenge score by, with intervals.

    python bench/oof_effects.py --labels train.csv --folds cache/index.csv \
        --oof base=oof_a.csv --oof other=oof_b.csv [--ensemble base+other] [--calibrate base]

Every OOF file (submission format, e.g. the fold runs' val_predictions.csv concatenated) is scored on the
rows all of them predict, beside the per-level prior of each study's training folds on the same rows;
each gets a 95% bootstrap interval over studies and a paired interval of its difference to the first.
--calibrate NAME adds NAME calibrated out of fold (nested_calibrated_oof) in four variants; --stack NAME
adds NAME graded by the second stage out of fold (evaluation.stacking, nested_oof); --ensemble
A+B adds A and B averaged in probability and in logit space. Prints JSON.
"""

from __future__ import annotations

import argparse
import json
import warnings

import pandas as pd

from spinegrade.data.tables import labels_long, read_train_labels
from spinegrade.evaluation.bootstrap import bootstrap_difference, submission_interval
from spinegrade.evaluation.calibration import folds_of, nested_calibrated_oof, nested_oof
from spinegrade.evaluation.ensemble import SPACES, average_submissions
from spinegrade.evaluation.priors import level_priors
from spinegrade.evaluation.score import EvaluationWarning
from spinegrade.evaluation.stacking import fit_stacking
from spinegrade.evaluation.submission import read_submission
from spinegrade.vocab import SEVERITIES

CALIBRATIONS = {
    "temperature": {"bias": False, "boost": False},
    "temperature+boost": {"bias": False, "boost": True},
    "temperature+bias": {"bias": True, "boost": False},
    "temperature+bias+boost": {"bias": True, "boost": True},
}


def fold_priors(labels: pd.DataFrame, folds: pd.Series, rows: pd.DataFrame) -> pd.DataFrame:
    """Each row predicted with the challenge-weighted per-level priors of its study's training folds."""
    long = labels_long(labels)
    parts = []
    for fold in sorted(folds.unique()):
        priors = level_priors(long[long["study_id"].map(folds) != fold], weighted=True)
        held = rows[rows["study_id"].map(folds) == fold][["row_id", "condition", "level"]]
        parts.append(held.merge(priors, on=["condition", "level"])[["row_id", *SEVERITIES]])
    return pd.concat(parts, ignore_index=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--labels", required=True)
    parser.add_argument("--folds", required=True, help="CSV with study_id and fold (a cache's index.csv)")
    parser.add_argument("--oof", action="append", required=True, help="NAME=FILE; the first is the base")
    parser.add_argument("--ensemble", action="append", default=[], help="A+B: average two OOF files")
    parser.add_argument("--calibrate", action="append", default=[], help="NAME: nested calibration")
    parser.add_argument("--stack", action="append", default=[], help="NAME: nested second stage")
    parser.add_argument("--brief", action="store_true", help="print one line per entry instead of JSON")
    parser.add_argument("--n", type=int, default=1000, help="bootstrap resamples")
    args = parser.parse_args()
    warnings.simplefilter("ignore", EvaluationWarning)

    labels = read_train_labels(args.labels)
    folds = folds_of(pd.read_csv(args.folds), args.folds)
    frames = {}
    for item in args.oof:
        name, _, path = item.partition("=")
        frames[name] = read_submission(path)
    common = set.intersection(*(set(f["row_id"]) for f in frames.values()))
    parsed = {n: f[f["row_id"].isin(common)].sort_values("row_id") for n, f in frames.items()}
    frames = {n: f[["row_id", *SEVERITIES]].reset_index(drop=True) for n, f in parsed.items()}
    base_name = next(iter(frames))
    frames["prior"] = fold_priors(labels, folds, next(iter(parsed.values())))
    for name in args.calibrate:
        for variant, options in CALIBRATIONS.items():
            frames[f"{name} calibrated ({variant})"] = nested_calibrated_oof(
                frames[name], labels, folds, **options
            )
    for name in args.stack:
        fit = lambda rows: fit_stacking(rows, labels)  # noqa: E731
        frames[f"{name} stacked"] = nested_oof(frames[name], folds, fit, "stacking")
    for pair in args.ensemble:
        a, b = pair.split("+")
        for space in SPACES:
            frames[f"{a}+{b} ({space})"] = average_submissions([frames[a], frames[b]], space=space)

    base = frames[base_name]
    out = {"rows": len(common), "studies": int(parsed[base_name]["study_id"].nunique()), "results": {}}
    for name, frame in frames.items():
        entry = {"score": submission_interval(labels, frame, n=args.n)}
        if name != base_name:
            entry[f"minus {base_name}"] = bootstrap_difference(labels, frame, base, n=args.n)
        for other in (n for n in [*args.calibrate, *args.stack] if name.startswith(f"{n} ") and n != name):
            entry[f"minus {other}"] = bootstrap_difference(labels, frame, frames[other], n=args.n)
        out["results"][name] = entry
    if not args.brief:
        print(json.dumps(out, indent=1))
        return
    for name, entry in out["results"].items():
        s = entry["score"]
        diffs = "  ".join(
            f"{k} {d['score']:+.3f} [{d['low']:+.3f}, {d['high']:+.3f}]"
            for k, d in entry.items()
            if k != "score"
        )
        print(f"{name:<40} {s['score']:.3f} [{s['low']:.3f}, {s['high']:.3f}]  {diffs}")


if __name__ == "__main__":
    main()
