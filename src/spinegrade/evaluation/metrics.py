"""Per-class metrics of 3-class severity predictions (scikit-learn where it has the metric).

Classes are 0 normal_mild, 1 moderate, 2 severe; the predicted class is the argmax of the probabilities.
Every result is JSON-serialisable: a metric that is undefined on a subset (AUC of a class absent from it,
kappa with a single class) is None, with a note saying why.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
from sklearn.exceptions import UndefinedMetricWarning
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    balanced_accuracy_score,
    cohen_kappa_score,
    confusion_matrix,
    precision_recall_fscore_support,
    roc_auc_score,
)

from spinegrade.errors import DataError
from spinegrade.evaluation.score import GROUPS, ScoredRows
from spinegrade.vocab import LEVELS, SEVERITIES

CLASSES = tuple(range(len(SEVERITIES)))
N_BINS = 10


def json_number(value: float) -> float | None:
    """A float for JSON: NaN (undefined) becomes None."""
    value = float(value)
    return None if np.isnan(value) else value


def _bin_sums(y_true: np.ndarray, probs: np.ndarray, n_bins: int) -> tuple[np.ndarray, ...]:
    """Per top-label confidence bin: (count, sum of confidences, number correct).

    confidence = max probability, correct = (argmax == y_true); bins are equal-width on [0, 1] and
    left-closed ([k/n, (k+1)/n); the last one also holds 1.0).
    """
    confidence = probs.max(axis=1)
    correct = (probs.argmax(axis=1) == y_true).astype(np.float64)
    index = np.minimum((confidence * n_bins).astype(np.int64), n_bins - 1)
    return (
        np.bincount(index, minlength=n_bins),
        np.bincount(index, weights=confidence, minlength=n_bins),
        np.bincount(index, weights=correct, minlength=n_bins),
    )


def expected_calibration_error(y_true: np.ndarray, probs: np.ndarray, n_bins: int = N_BINS) -> float:
    """Top-label ECE: sum over bins of (bin count / n) * |bin accuracy - bin mean confidence| (Guo et al.
    2017), i.e. sum over bins of |number correct - sum of confidences| / n."""
    count, confidence, correct = _bin_sums(y_true, probs, n_bins)
    return float(np.abs(correct - confidence).sum() / count.sum())


def reliability_table(y_true: np.ndarray, probs: np.ndarray, n_bins: int = N_BINS) -> dict:
    """The ECE's bins for a reliability diagram: edges, count, mean confidence, accuracy (None when empty)."""
    count, confidence, correct = _bin_sums(y_true, probs, n_bins)
    filled = count > 0
    return {
        "edges": np.linspace(0.0, 1.0, n_bins + 1).tolist(),
        "count": count.tolist(),
        "confidence": [
            float(s / n) if f else None for s, n, f in zip(confidence, count, filled, strict=True)
        ],
        "accuracy": [float(s / n) if f else None for s, n, f in zip(correct, count, filled, strict=True)],
    }


def _one_vs_rest(y_true: np.ndarray, probs: np.ndarray, notes: list[str]) -> tuple[list, list]:
    """One-vs-rest ROC AUC and average precision per class; None (and a note) where a class is absent or is
    every row (one of the two ROC classes would be empty)."""
    aucs: list[float | None] = []
    aps: list[float | None] = []
    for c, name in enumerate(SEVERITIES):
        positive = y_true == c
        if positive.all() or not positive.any():
            notes.append(
                f"{name}: ROC AUC and average precision undefined (the class is absent or is every row)"
            )
            aucs.append(None)
            aps.append(None)
            continue
        aucs.append(float(roc_auc_score(positive, probs[:, c])))
        aps.append(float(average_precision_score(positive, probs[:, c])))
    return aucs, aps


def classification_metrics(y_true: np.ndarray, probs: np.ndarray) -> dict:
    """Metrics of probabilities `probs` (n, 3) against classes `y_true` (n,) in 0..2.

    accuracy, balanced_accuracy (over the classes present in y_true), quadratic-weighted Cohen's kappa,
    top-label ECE (10 bins) with its reliability table, confusion matrix (rows true, columns predicted),
    per class precision/recall/f1/support/roc_auc/average_precision (one-vs-rest), and macro / support-
    weighted precision/recall/f1 (sklearn's averages over the classes present in y_true or predicted;
    undefined precision or recall count as 0) plus macro_roc_auc (mean of the defined per-class AUCs).
    """
    y_true = np.asarray(y_true, dtype=np.int64)
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim != 2 or probs.shape != (len(y_true), len(SEVERITIES)):
        raise DataError(
            f"classification_metrics: probs must be (n, 3) for n={len(y_true)}, got {probs.shape}"
        )
    if len(y_true) == 0:
        raise DataError("classification_metrics: no rows")
    if not np.isin(y_true, CLASSES).all():
        raise DataError("classification_metrics: y_true must hold classes 0, 1, 2")
    y_pred = probs.argmax(axis=1)
    notes: list[str] = []
    with warnings.catch_warnings():
        # Undefined values are handled here (zero_division=0, None + note), so sklearn's warnings about them
        # (UndefinedMetricWarning; UserWarning for classes absent from y_true; RuntimeWarning from kappa's
        # 0/0) add nothing.
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        warnings.simplefilter("ignore", UserWarning)
        warnings.simplefilter("ignore", RuntimeWarning)
        precision, recall, f1, support = precision_recall_fscore_support(
            y_true, y_pred, labels=list(CLASSES), zero_division=0
        )
        averages = {
            average: precision_recall_fscore_support(y_true, y_pred, average=average, zero_division=0)[:3]
            for average in ("macro", "weighted")
        }
        kappa = cohen_kappa_score(y_true, y_pred, labels=list(CLASSES), weights="quadratic")
        balanced = balanced_accuracy_score(y_true, y_pred)
    if np.isnan(kappa):
        notes.append("quadratic kappa undefined (a single class in y_true and predictions)")
    aucs, aps = _one_vs_rest(y_true, probs, notes)
    defined_aucs = [a for a in aucs if a is not None]
    result = {
        "n": len(y_true),
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "balanced_accuracy": float(balanced),
        "quadratic_kappa": json_number(kappa),
        "ece": expected_calibration_error(y_true, probs),
        "macro_roc_auc": float(np.mean(defined_aucs)) if defined_aucs else None,
        "confusion_matrix": confusion_matrix(y_true, y_pred, labels=list(CLASSES)).tolist(),
        "per_class": {
            name: {
                "precision": float(precision[c]),
                "recall": float(recall[c]),
                "f1": float(f1[c]),
                "support": int(support[c]),
                "roc_auc": aucs[c],
                "average_precision": aps[c],
            }
            for c, name in enumerate(SEVERITIES)
        },
        "reliability": reliability_table(y_true, probs),
        "notes": notes,
    }
    for average, (p, r, f) in averages.items():
        result[f"{average}_precision"], result[f"{average}_recall"], result[f"{average}_f1"] = (
            float(p),
            float(r),
            float(f),
        )
    return result


def subset_metrics(rows: ScoredRows) -> dict:
    """classification_metrics overall, per condition group and per level (pooled over conditions)."""
    out = {"overall": classification_metrics(rows.severity, rows.probs), "by_group": {}, "by_level": {}}
    for key, codes, names in (("by_group", rows.group, GROUPS), ("by_level", rows.level, LEVELS)):
        for code, name in enumerate(names):
            mask = codes == code
            if mask.any():
                out[key][name] = classification_metrics(rows.severity[mask], rows.probs[mask])
    return out


def metrics_table(metrics: dict) -> pd.DataFrame:
    """One row per subset of subset_metrics (overall, groups, levels) with the headline numbers."""
    subsets = {"overall": metrics["overall"], **metrics["by_group"], **metrics["by_level"]}
    columns = ("n", "accuracy", "balanced_accuracy", "macro_f1", "macro_roc_auc", "quadratic_kappa", "ece")
    return pd.DataFrame([{"subset": k, **{c: m[c] for c in columns}} for k, m in subsets.items()])
