"""The RSNA 2024 challenge score, exactly as the competition's metric ("rsna-lumbar-metric") computes it.

score = mean of four equally weighted parts:
  * spinal, foraminal, subarticular: sample-weighted log loss of the rows of that condition group
    (foraminal and subarticular pool left and right), weights 1/2/4 by *true* severity:
    sum(w * -log p[y]) / sum(w);
  * any_severe_spinal: per study, label = any spinal level severe, prediction = max over the spinal levels of
    the `severe` column, weight = max of the study's spinal row weights; a weighted binary log loss.
Predictions are clipped to [eps, 1 - eps] and each row renormalised (as sklearn.metrics.log_loss did with
eps=1e-15). Rows whose label is blank are not scored. As in the competition's code, any_severe_spinal
takes the max over the study's *labelled* spinal rows of the submitted severe value (clipped, not
renormalised). Vectorised: no Python loop over rows.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd

from spinegrade.data.tables import labels_long
from spinegrade.errors import DataError
from spinegrade.evaluation.submission import validate_submission
from spinegrade.vocab import (
    CONDITION_GROUPS,
    CONDITIONS,
    GROUP_OF_CONDITION,
    LABEL_COLUMNS,
    LEVELS,
    SEVERITIES,
    SEVERITY_WEIGHTS,
)

EPS = 1e-15
SCORE_PARTS = ("spinal", "foraminal", "subarticular", "any_severe_spinal")
FRAME_COLUMNS = ("study_id", "condition", "level", "severity", *SEVERITIES)
GROUPS = tuple(CONDITION_GROUPS)
_GROUP_CODE = np.array([GROUPS.index(GROUP_OF_CONDITION[c]) for c in CONDITIONS])
_WEIGHTS = np.asarray(SEVERITY_WEIGHTS, dtype=np.float64)
_SUM_TOLERANCE = 1e-3
_TARGET_KEY = ["study_id", "condition", "level"]


class EvaluationWarning(UserWarning):
    """A quirk of predictions or labels that scoring works around (renormalised, filled or ignored rows)."""


def clip_normalize(probs: np.ndarray, eps: float = EPS) -> np.ndarray:
    """Clip probabilities to [eps, 1 - eps], then divide each row by its sum (sklearn's old log_loss)."""
    p = np.clip(np.asarray(probs, dtype=np.float64), eps, 1.0 - eps)
    return p / p.sum(axis=1, keepdims=True)


def _warn_unnormalized(probs: np.ndarray) -> int:
    """Warn (EvaluationWarning) when some row of `probs` does not sum to 1 within 1e-3; returns how many."""
    off = np.abs(probs.sum(axis=1) - 1.0) > _SUM_TOLERANCE
    n_off = int(off.sum())
    if n_off:
        warnings.warn(
            f"{n_off} of {len(off)} prediction rows do not sum to 1 (off by more than {_SUM_TOLERANCE:g}); "
            "they were renormalised before scoring",
            EvaluationWarning,
            stacklevel=3,
        )
    return n_off


@dataclass(frozen=True)
class ScoredRows:
    """The labelled rows of a prediction frame as aligned arrays (codes index vocab.CONDITIONS / LEVELS)."""

    study_id: np.ndarray  # int64 (n,)
    condition: np.ndarray  # int (n,) index into CONDITIONS
    level: np.ndarray  # int (n,) index into LEVELS
    severity: np.ndarray  # int (n,) 0..2
    probs: np.ndarray  # float64 (n, 3) clipped and renormalised
    severe_raw: np.ndarray  # float64 (n,) the submitted severe column clipped to [eps, 1 - eps]

    def __len__(self) -> int:
        return len(self.severity)

    @property
    def group(self) -> np.ndarray:
        """Index into GROUPS (spinal, foraminal, subarticular) of each row."""
        return _GROUP_CODE[self.condition]

    @property
    def weight(self) -> np.ndarray:
        """The challenge's sample weight (1/2/4 by true severity) of each row."""
        return _WEIGHTS[self.severity]

    @property
    def nll(self) -> np.ndarray:
        """-log of the probability given to the true class, per row."""
        return -np.log(self.probs[np.arange(len(self)), self.severity])


def _codes(frame: pd.DataFrame, column: str, categories: tuple[str, ...]) -> np.ndarray:
    codes = pd.Index(categories).get_indexer(frame[column])
    bad = codes < 0
    if bad.any():
        examples = ", ".join(repr(v) for v in pd.unique(frame.loc[bad, column])[:3])
        raise DataError(
            f"prediction frame: unknown {column} value(s) {examples}; expected one of {categories}"
        )
    return codes


def _severity(frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """(codes, labelled mask): blank labels are NaN / NA or -1 (the training code's ignore index)."""
    raw = frame["severity"]
    numeric = pd.to_numeric(raw, errors="coerce")
    blank = raw.isna().to_numpy() | (numeric == -1).to_numpy()
    bad = ~blank & ~numeric.isin((0, 1, 2)).to_numpy()
    if bad.any():
        examples = ", ".join(repr(v) for v in pd.unique(raw[bad])[:3])
        raise DataError(f"prediction frame: severity must be 0, 1 or 2 (or blank), found {examples}")
    return np.where(blank, 0, numeric.fillna(0)).astype(np.int64), ~blank


def _probabilities(frame: pd.DataFrame) -> np.ndarray:
    try:
        probs = frame[list(SEVERITIES)].to_numpy(dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise DataError(f"prediction frame: {', '.join(SEVERITIES)} must be numbers ({exc})") from exc
    if not np.isfinite(probs).all():
        raise DataError(
            f"prediction frame: {int((~np.isfinite(probs)).sum())} probabilities are NaN or infinite"
        )
    if (probs < 0).any():
        raise DataError(f"prediction frame: {int((probs < 0).sum())} probabilities are negative")
    return probs


def scored_rows(frame: pd.DataFrame, *, eps: float = EPS) -> ScoredRows:
    """Validate frame[study_id, condition, level, severity, <3 probabilities>]; keep the labelled rows.

    Raises DataError for missing columns, unknown condition/level names, severities outside 0..2, duplicate
    (study_id, condition, level) rows and non-finite or negative probabilities. Warns when a labelled row's
    probabilities do not sum to 1 (they are renormalised, as the competition's metric does).
    """
    missing = [c for c in FRAME_COLUMNS if c not in frame.columns]
    if missing:
        raise DataError(
            f"prediction frame lacks column(s) {', '.join(missing)}; expected {', '.join(FRAME_COLUMNS)}"
        )
    condition = _codes(frame, "condition", CONDITIONS)
    level = _codes(frame, "level", LEVELS)
    severity, labelled = _severity(frame)
    probs = _probabilities(frame)
    try:
        study_id = frame["study_id"].to_numpy(dtype=np.int64)
    except (TypeError, ValueError) as exc:
        raise DataError(f"prediction frame: study_id must be whole numbers ({exc})") from exc
    dup = pd.DataFrame({"s": study_id, "c": condition, "lv": level}).duplicated(keep="first").to_numpy()
    if dup.any():
        first = frame.loc[dup].iloc[0]
        raise DataError(
            f"prediction frame: {int(dup.sum())} duplicate target row(s), e.g. study {first['study_id']} "
            f"{first['condition']} {first['level']}; each (study, condition, level) must appear once"
        )
    probs = probs[labelled]
    _warn_unnormalized(probs)
    return ScoredRows(
        study_id=study_id[labelled],
        condition=condition[labelled],
        level=level[labelled],
        severity=severity[labelled],
        probs=clip_normalize(probs, eps),
        severe_raw=np.clip(probs[:, SEVERITIES.index("severe")], eps, 1.0 - eps),
    )


def any_severe_spinal(rows: ScoredRows) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per study with a labelled spinal row: (label 0/1, predicted probability, weight).

    Label, weight *and prediction* come from the study's labelled spinal rows only: a level whose label is
    blank does not enter the max, as in the competition's metric (the submission is aligned to the solution's
    rows). The prediction is the submitted `severe` value clipped, not renormalised, as in that metric.
    """
    spinal = rows.group == GROUPS.index("spinal")
    per_study = (
        pd.DataFrame(
            {
                "study_id": rows.study_id[spinal],
                "label": (rows.severity[spinal] == SEVERITIES.index("severe")).astype(np.float64),
                "prob": rows.severe_raw[spinal],
                "weight": rows.weight[spinal],
            }
        )
        .groupby("study_id", sort=False)
        .max()
    )
    return per_study["label"].to_numpy(), per_study["prob"].to_numpy(), per_study["weight"].to_numpy()


def _weighted_mean(values: np.ndarray, weights: np.ndarray) -> float:
    total = weights.sum()
    return float((weights * values).sum() / total) if total > 0 else float("nan")


def score_rows(rows: ScoredRows) -> dict[str, float]:
    """The four parts and the score of already validated rows (see challenge_score)."""
    if len(rows) == 0:
        raise DataError("nothing to score: no prediction row has a label")
    weight, nll = rows.weight, rows.nll
    numerator = np.bincount(rows.group, weights=weight * nll, minlength=len(GROUPS))
    denominator = np.bincount(rows.group, weights=weight, minlength=len(GROUPS))
    parts = {
        g: float(numerator[i] / denominator[i]) if denominator[i] > 0 else float("nan")
        for i, g in enumerate(GROUPS)
    }
    label, prob, study_weight = any_severe_spinal(rows)
    binary_nll = -(label * np.log(prob) + (1.0 - label) * np.log1p(-prob))
    parts["any_severe_spinal"] = _weighted_mean(binary_nll, study_weight)
    undefined = [k for k, v in parts.items() if np.isnan(v)]
    if undefined:
        warnings.warn(
            f"no labelled rows for {', '.join(undefined)}: the score averages the other parts only",
            EvaluationWarning,
            stacklevel=3,
        )
    return {"score": float(np.nanmean(list(parts.values()))), **parts}


def challenge_score(frame: pd.DataFrame, *, eps: float = EPS) -> dict[str, float]:
    """Challenge score of frame[study_id, condition, level, severity (0..2; blank = NaN or -1), normal_mild,
    moderate, severe] -> {"score", "spinal", "foraminal", "subarticular", "any_severe_spinal"} (lower is
    better).

    A part without any labelled row (e.g. validating spinal rows only) is NaN and the score averages the
    others, with an EvaluationWarning; the competition always has all four.
    """
    return score_rows(scored_rows(frame, eps=eps))


def level_losses(rows: ScoredRows) -> pd.DataFrame:
    """Weighted log loss per (condition, level): DataFrame[condition, level, n, weight, weighted_log_loss]."""
    table = (
        pd.DataFrame(
            {
                "condition": np.asarray(CONDITIONS)[rows.condition],
                "level": np.asarray(LEVELS)[rows.level],
                "weight": rows.weight,
                "loss": rows.weight * rows.nll,
            }
        )
        .groupby(["condition", "level"], sort=False)
        .agg(n=("weight", "size"), weight=("weight", "sum"), loss=("loss", "sum"))
        .reset_index()
    )
    table["weighted_log_loss"] = table.pop("loss") / table["weight"]
    order = table["condition"].map(CONDITIONS.index) * len(LEVELS) + table["level"].map(LEVELS.index)
    return table.iloc[np.argsort(order.to_numpy(), kind="stable")].reset_index(drop=True)


def study_losses(rows: ScoredRows) -> pd.DataFrame:
    """Weighted log loss of each study's labelled rows: DataFrame[study_id, n, weighted_log_loss], worst first

    The rows' part of the challenge metric per study (weights 1/2/4 by true severity), to find the studies
    that cost the most; the any_severe_spinal part is a per-study maximum and is left out.
    """
    table = (
        pd.DataFrame({"study_id": rows.study_id, "weight": rows.weight, "loss": rows.weight * rows.nll})
        .groupby("study_id", sort=False)
        .agg(n=("weight", "size"), weight=("weight", "sum"), loss=("loss", "sum"))
        .reset_index()
    )
    table["weighted_log_loss"] = table.pop("loss") / table.pop("weight")
    return table.sort_values("weighted_log_loss", ascending=False, kind="stable").reset_index(drop=True)


@dataclass(frozen=True)
class JoinedSubmission:
    """A submission matched to its labels: `frame` is challenge_score's input, `counts` says what was used."""

    frame: pd.DataFrame
    counts: dict[str, int]


def _row_ids(frame: pd.DataFrame, limit: int = 5) -> str:
    head = frame.head(limit)
    ids = head["study_id"].astype(str) + "_" + head["condition"].astype(str) + "_" + head["level"].astype(str)
    return ", ".join(ids) + (", ..." if len(frame) > limit else "")


def join_submission(
    labels_wide: pd.DataFrame,
    submission: pd.DataFrame,
    *,
    fill: pd.DataFrame | None = None,
    drop_missing: bool = False,
) -> JoinedSubmission:
    """Match a submission (row_id, normal_mild, moderate, severe) to train.csv-format labels.

    The scored studies are those of the labels that the submission predicts (so a validation fold's
    predictions can be scored against the whole train.csv; label studies without any prediction are counted
    and warned about). Every labelled target of a scored study needs a prediction: a missing one is a
    DataError giving how many and the first row ids; with `fill` (per-level priors: condition, level and
    the 3 probabilities, e.g. priors.training_priors - never priors of the scored labels themselves) it
    is filled from them, and with drop_missing=True left out; both are warned about. Rows of studies
    absent from the labels are ignored with a warning; rows whose label is blank are not scored.
    """
    missing = [c for c in ("study_id", *LABEL_COLUMNS) if c not in labels_wide.columns]
    if missing:
        raise DataError(
            f"labels lack column(s) {', '.join(missing[:3])}{', ...' if len(missing) > 3 else ''}; "
            "expected train.csv's study_id and 25 <condition>_<level> columns"
        )
    sub = validate_submission(submission)
    source = sub.attrs.get("file", "submission")
    long = labels_long(labels_wide)
    known = sub["study_id"].isin(labels_wide["study_id"]).to_numpy()
    if not known.all():
        unknown = sub.loc[~known, "study_id"].unique()
        warnings.warn(
            f"{source}: ignored {int((~known).sum())} row(s) of {len(unknown)} study id(s) that are not in "
            f"the labels ({', '.join(map(str, unknown[:5]))}{', ...' if len(unknown) > 5 else ''})",
            EvaluationWarning,
            stacklevel=2,
        )
    predicted = sub.loc[known, [*_TARGET_KEY, *SEVERITIES]]
    unpredicted = np.setdiff1d(labels_wide["study_id"].to_numpy(), predicted["study_id"].to_numpy())
    if len(unpredicted):
        warnings.warn(
            f"{source}: {len(unpredicted)} of {labels_wide['study_id'].nunique()} labelled studies have no "
            "prediction and are not scored",
            EvaluationWarning,
            stacklevel=2,
        )
    scored = long[long["study_id"].isin(predicted["study_id"])].astype({"condition": object, "level": object})
    frame = scored.merge(predicted, on=_TARGET_KEY, how="left", validate="one_to_one")
    absent = frame["severe"].isna().to_numpy()
    if absent.any():
        message = (
            f"{source}: no prediction for {int(absent.sum())} of {len(frame)} labelled target(s) of the "
            f"studies it predicts, e.g. {_row_ids(frame[absent])}"
        )
        if drop_missing:
            warnings.warn(f"{message}; not scored", EvaluationWarning, stacklevel=2)
        elif fill is None:
            raise DataError(
                f"{message}; predict every target of those studies, or fill them with the training "
                "folds' priors (--allow-missing --priors RUNS_OR_TRAINING_LABELS)"
            )
        else:
            priors = frame.loc[absent, ["condition", "level"]].merge(
                fill, on=["condition", "level"], how="left"
            )
            if priors[list(SEVERITIES)].isna().any().any():
                raise DataError(f"the fill priors lack targets of {source}, e.g. {_row_ids(frame[absent])}")
            frame.loc[absent, list(SEVERITIES)] = priors[list(SEVERITIES)].to_numpy()
            warnings.warn(f"{message}; filled with the training priors", EvaluationWarning, stacklevel=2)
    filled = 0 if drop_missing else int(absent.sum())
    if drop_missing:
        frame = frame.loc[~absent]
    counts = {
        "submission_rows": len(sub),
        "unknown_study_rows": int((~known).sum()),
        "unscored_rows": int(len(predicted) - (~absent).sum()),
        "scored_rows": len(frame),
        "filled_rows": filled,
        "scored_studies": int(frame["study_id"].nunique()),
        "unpredicted_studies": len(unpredicted),
    }
    return JoinedSubmission(frame[list(FRAME_COLUMNS)], counts)


def score_submission(
    labels_wide: pd.DataFrame,
    submission: pd.DataFrame,
    *,
    fill: pd.DataFrame | None = None,
    eps: float = EPS,
) -> dict[str, float]:
    """Score a submission (row_id, normal_mild, moderate, severe) against train.csv-format labels.

    See join_submission for which rows are scored: unknown studies are ignored with a warning; predictions
    missing for labelled rows are a DataError, or filled from `fill` (training priors) and warned about.
    """
    joined = join_submission(labels_wide, submission, fill=fill)
    return challenge_score(joined.frame, eps=eps)


def predicted_rows(labels_wide: pd.DataFrame, submission: pd.DataFrame, *, eps: float = EPS) -> ScoredRows:
    """The labelled targets that a submission predicts, as scored rows: like join_submission, but a
    labelled target without a prediction (oracle-point OOF files lack targets without coordinates) is
    left out, with an EvaluationWarning giving how many, instead of being an error or filled."""
    return scored_rows(join_submission(labels_wide, submission, drop_missing=True).frame, eps=eps)
