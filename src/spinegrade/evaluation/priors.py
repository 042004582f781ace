"""Per-(condition, level) class priors: the best constant predictions, for missing series and baselines."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from spinegrade.data.tables import labels_long, read_train_labels
from spinegrade.errors import DataError
from spinegrade.vocab import SEVERITIES, SEVERITY_WEIGHTS, TARGETS


def level_priors(labels_long: pd.DataFrame, weighted: bool = False, smoothing: float = 0.5) -> pd.DataFrame:
    """Class frequencies of each (condition, level) of labels_long[study_id, condition, level, severity 0..2].

    weighted=False gives the plain frequencies (the log-loss-optimal constant). weighted=True multiplies them
    by the challenge's sample weights 1/2/4 and renormalises: the constant that minimises the *weighted* log
    loss of each level (the per-group terms of the challenge score). A (condition, level) without any label
    gets the frequencies pooled over all labels. `smoothing` is a pseudo-count added to every class (0.5: the
    Jeffreys prior), so a class unseen in a small sample (a fold of a phantom) does not get probability 0
    and an infinite log loss; on the real data its effect is negligible (docs/results.md#phantom).
    Returns DataFrame[condition, level, normal_mild, moderate, severe], one row per target (TARGETS order).
    """
    missing = {"condition", "level", "severity"} - set(labels_long.columns)
    if missing:
        raise DataError(f"level_priors: labels lack column(s) {', '.join(sorted(missing))}")
    if labels_long.empty:
        raise DataError("level_priors: no labels to compute priors from")
    counts = pd.crosstab([labels_long["condition"], labels_long["level"]], labels_long["severity"])
    counts = counts.reindex(columns=range(len(SEVERITIES)), fill_value=0)
    counts = counts.reindex(pd.MultiIndex.from_tuples(TARGETS, names=["condition", "level"]))
    pooled = counts.sum().to_numpy(dtype=np.float64)
    values = counts.to_numpy(dtype=np.float64, copy=True)
    values[np.isnan(values).any(axis=1)] = pooled
    values += smoothing
    if weighted:
        values = values * np.asarray(SEVERITY_WEIGHTS)
    values /= values.sum(axis=1, keepdims=True)
    return prior_frame(values)


def prior_frame(values: np.ndarray) -> pd.DataFrame:
    """DataFrame[condition, level, normal_mild, moderate, severe] of probabilities (25, 3), TARGETS order."""
    out = pd.DataFrame(values, columns=list(SEVERITIES))
    out.insert(0, "level", [lv for _, lv in TARGETS])
    out.insert(0, "condition", [c for c, _ in TARGETS])
    return out


def average_priors(tables: Sequence[Sequence[Mapping[str, Any]]]) -> pd.DataFrame:
    """The mean of several runs' best.json "priors" records (condition, level, 3 probabilities), in
    TARGETS order: the priors an ensemble of those runs gives targets it cannot grade."""
    try:
        frames = [
            pd.DataFrame(list(t)).set_index(["condition", "level"]).loc[list(TARGETS), list(SEVERITIES)]
            for t in tables
        ]
    except KeyError as exc:
        raise DataError(f"priors lack a target or a column: {exc}") from None
    return prior_frame(sum(f.to_numpy(np.float64) for f in frames) / len(frames))


def training_priors(path: str | os.PathLike) -> tuple[pd.DataFrame, set[int] | None, str]:
    """(per-level priors, the study ids they come from or None when unknown, description) of `path`.

    A train.csv-format CSV of the training studies gives its challenge-weighted class frequencies (as
    predict and cv use); a best.json, or a folder of runs (every best.json below it), the mean of the runs'
    own training-fold priors. For filling predictions a submission lacks, without priors of the studies
    being scored."""
    path = Path(path)
    if path.is_file() and path.suffix == ".csv":
        labels = read_train_labels(path)
        weighted = level_priors(labels_long(labels), weighted=True)
        return weighted, set(labels["study_id"].astype(int)), f"{path} (class frequencies x 1/2/4)"
    files = [path] if path.is_file() else sorted(path.rglob("best.json")) if path.is_dir() else []
    if not files:
        raise DataError(f"--priors {path}: give the training labels (train.csv format) or classifier runs")
    tables = []
    for file in files:
        try:
            tables.append(json.loads(file.read_text())["priors"])
        except (OSError, json.JSONDecodeError, KeyError, TypeError) as exc:
            raise DataError(f"{file}: no training priors ({type(exc).__name__}: {exc})") from None
    return average_priors(tables), None, f"the training priors of {len(files)} run(s) under {path}"
