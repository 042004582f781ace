"""The challenge score: cases computed by hand, a cross-check with sklearn's log_loss, joins, real labels."""

from __future__ import annotations

import warnings
from math import log
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import log_loss

from spinegrade.errors import DataError
from spinegrade.evaluation.priors import level_priors
from spinegrade.evaluation.score import (
    EvaluationWarning,
    challenge_score,
    join_submission,
    score_submission,
)
from spinegrade.vocab import LABEL_COLUMNS, SEVERITIES, SEVERITY_LABELS, TARGETS, make_row_id

RSNA = Path(__file__).resolve().parents[1].parent / "shared/data/rsna2024"
SPINAL, LEFT_SS, RIGHT_SS = (
    "spinal_canal_stenosis",
    "left_subarticular_stenosis",
    "right_subarticular_stenosis",
)
LEFT_NF, RIGHT_NF = "left_neural_foraminal_narrowing", "right_neural_foraminal_narrowing"
FRAME_KEY = ("study_id", "condition", "level")


def frame_of(rows: list[tuple]) -> pd.DataFrame:
    """(study_id, condition, level, severity, p0, p1, p2) tuples -> a challenge_score frame."""
    return pd.DataFrame(rows, columns=["study_id", "condition", "level", "severity", *SEVERITIES])


# Two studies. Severity NaN / -1 = blank label. Rows marked * do not sum to 1.
HAND = frame_of(
    [
        (1, SPINAL, "l1_l2", 0, 0.7, 0.2, 0.1),
        (1, SPINAL, "l2_l3", 2, 0.2, 0.3, 0.5),
        (1, SPINAL, "l3_l4", np.nan, 0.1, 0.1, 0.8),  # blank: not scored, and not in any_severe's max
        (1, LEFT_NF, "l4_l5", 1, 0.3, 0.6, 0.1),
        (1, RIGHT_NF, "l4_l5", 0, 0.9, 0.05, 0.05),
        (1, LEFT_SS, "l5_s1", 1, 0.2, 0.4, 0.2),  # * -> (0.25, 0.5, 0.25)
        (1, RIGHT_SS, "l5_s1", 0, 0.5, 0.3, 0.2),
        (2, SPINAL, "l1_l2", 1, 0.6, 0.3, 0.1),
        (2, SPINAL, "l2_l3", 0, 0.8, 0.1, 0.1),
        (2, SPINAL, "l3_l4", 0, 0.4, 0.2, 0.6),  # * -> (1/3, 1/6, 1/2); any_severe uses the raw 0.6
        (2, SPINAL, "l4_l5", -1, 0.0, 0.0, 1.0),  # blank
        (2, LEFT_NF, "l1_l2", 2, 0.5, 0.25, 0.25),
    ]
)


def test_hand_computed_score_with_blanks_any_severe_and_unnormalised_rows() -> None:
    spinal = -(1 * log(0.7) + 4 * log(0.5) + 2 * log(0.3) + 1 * log(0.8) + 1 * log(1 / 3)) / (
        1 + 4 + 2 + 1 + 1
    )
    foraminal = -(2 * log(0.6) + 1 * log(0.9) + 4 * log(0.25)) / (2 + 1 + 4)
    subarticular = -(2 * log(0.5) + 1 * log(0.5)) / (2 + 1)
    # study 1: severe at l2_l3; max severe of labelled spinal rows = 0.5 (not the blank row's 0.8); weight 4.
    # study 2: no severe; max = raw 0.6 (not the blank row's 1.0); weight = max(2, 1, 1) = 2.
    any_severe = -(4 * log(0.5) + 2 * log(1 - 0.6)) / (4 + 2)
    with pytest.warns(EvaluationWarning, match=r"2 of 10 prediction rows do not sum to 1"):
        result = challenge_score(HAND)
    assert result["spinal"] == pytest.approx(spinal, rel=1e-12)
    assert result["foraminal"] == pytest.approx(foraminal, rel=1e-12)
    assert result["subarticular"] == pytest.approx(subarticular, rel=1e-12)
    assert result["any_severe_spinal"] == pytest.approx(any_severe, rel=1e-12)
    assert result["score"] == pytest.approx((spinal + foraminal + subarticular + any_severe) / 4, rel=1e-12)


def test_clipping_to_eps_then_renormalising() -> None:
    frame = frame_of([(1, SPINAL, "l1_l2", 0, 0.0, 1.0, 0.0), (1, LEFT_NF, "l1_l2", 0, 1, 0, 0)])
    frame = pd.concat([frame, frame_of([(1, LEFT_SS, "l1_l2", 0, 1, 0, 0)])])
    for eps in (1e-15, 1e-6):
        result = challenge_score(frame, eps=eps)
        assert result["spinal"] == pytest.approx(-log(eps / (eps + (1 - eps) + eps)), rel=1e-9)
        assert result["foraminal"] == pytest.approx(-log((1 - eps) / (1 + eps)), abs=1e-9)
        assert result["any_severe_spinal"] == pytest.approx(-log(1 - eps), abs=1e-9)


def test_missing_group_is_nan_and_score_averages_the_rest() -> None:
    frame = HAND[HAND["condition"] == SPINAL]
    with pytest.warns(EvaluationWarning) as caught:
        result = challenge_score(frame)
    assert any("no labelled rows for foraminal, subarticular" in str(w.message) for w in caught)
    assert np.isnan(result["foraminal"]) and np.isnan(result["subarticular"])
    assert result["score"] == pytest.approx((result["spinal"] + result["any_severe_spinal"]) / 2)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda f: f.drop(columns="severe"), "lacks column"),
        (lambda f: f.assign(condition="spinal"), "unknown condition"),
        (lambda f: f.assign(level="L1/L2"), "unknown level"),
        (lambda f: f.assign(severity=3), "severity must be 0, 1 or 2"),
        (lambda f: f.assign(moderate=-0.1), "negative"),
        (lambda f: f.assign(moderate=np.inf), "NaN or infinite"),
        (lambda f: pd.concat([f, f.head(1)]), "duplicate target"),
        (lambda f: f.assign(severity=np.nan), "nothing to score"),
        (lambda f: f.assign(study_id="x"), "study_id must be whole numbers"),
    ],
)
def test_bad_frames_raise(change, message: str) -> None:
    with pytest.raises(DataError, match=message), warnings.catch_warnings():
        warnings.simplefilter("ignore", EvaluationWarning)
        challenge_score(change(HAND))


def reference_score(frame: pd.DataFrame) -> float:
    """A straightforward version of the competition's metric on sklearn.metrics.log_loss."""
    scored = frame[frame["severity"].notna()].copy()
    scored["severity"] = scored["severity"].astype(int)
    scored["weight"] = scored["severity"].map({0: 1.0, 1: 2.0, 2: 4.0})
    scored["group"] = scored["condition"].str.extract(r"(spinal|foraminal|subarticular)")[0]
    losses = [
        log_loss(g["severity"], g[list(SEVERITIES)].to_numpy(), sample_weight=g["weight"], labels=[0, 1, 2])
        for _, g in scored.groupby("group")
    ]
    spinal = scored[scored["group"] == "spinal"].assign(is_severe=lambda d: (d["severity"] == 2).astype(int))
    per_study = spinal.groupby("study_id").agg(
        y=("is_severe", "max"), p=("severe", "max"), w=("weight", "max")
    )
    losses.append(log_loss(per_study["y"], per_study["p"], sample_weight=per_study["w"], labels=[0, 1]))
    return float(np.mean(losses))


def random_frame(rng: np.random.Generator, n_studies: int, blank: float = 0.05) -> pd.DataFrame:
    rows = pd.DataFrame([(s, c, lv) for s in range(n_studies) for c, lv in TARGETS], columns=[*FRAME_KEY])
    severity = rng.choice(3, size=len(rows), p=[0.7, 0.2, 0.1]).astype(float)
    severity[rng.random(len(rows)) < blank] = np.nan
    rows["severity"] = severity
    rows[list(SEVERITIES)] = rng.dirichlet([2.0, 1.0, 1.0], size=len(rows))
    return rows


def test_matches_sklearn_log_loss_reference_on_random_data() -> None:
    rng = np.random.default_rng(7)
    for _ in range(3):
        frame = random_frame(rng, 40)
        assert challenge_score(frame)["score"] == pytest.approx(reference_score(frame), rel=1e-10)


def wide_labels(frame: pd.DataFrame) -> pd.DataFrame:
    """A challenge_score frame's labels in train.csv format (blank = NaN)."""
    text = frame["severity"].map(lambda s: np.nan if pd.isna(s) else SEVERITY_LABELS[int(s)])
    wide = frame.assign(column=frame["condition"] + "_" + frame["level"], text=text).pivot(
        index="study_id", columns="column", values="text"
    )
    return wide.reindex(columns=list(LABEL_COLUMNS)).reset_index()


def submission_of(frame: pd.DataFrame) -> pd.DataFrame:
    row_id = [make_row_id(s, c, lv) for s, c, lv in frame[list(FRAME_KEY)].itertuples(index=False)]
    return pd.DataFrame({"row_id": row_id, **{c: frame[c].to_numpy() for c in SEVERITIES}})


def test_score_submission_equals_challenge_score_and_ignores_unknown_studies() -> None:
    frame = random_frame(np.random.default_rng(3), 12)
    labels = wide_labels(frame)
    submission = submission_of(frame).sample(frac=1.0, random_state=0)  # row order must not matter
    assert score_submission(labels, submission) == pytest.approx(challenge_score(frame), rel=1e-12)
    stranger = submission_of(random_frame(np.random.default_rng(4), 1).assign(study_id=999))
    with pytest.warns(EvaluationWarning, match=r"ignored 25 row\(s\) of 1 study id\(s\) .*\(999\)"):
        joined = join_submission(labels, pd.concat([submission, stranger]))
    assert joined.counts["unknown_study_rows"] == 25
    assert joined.counts["scored_rows"] == int(frame["severity"].notna().sum())


def test_missing_predictions_error_or_filled_with_the_given_training_priors() -> None:
    frame = random_frame(np.random.default_rng(5), 6, blank=0.0)
    labels, submission = wide_labels(frame), submission_of(frame)
    dropped = submission.iloc[[3, 30]]
    partial = submission.drop(index=dropped.index)
    with pytest.raises(
        DataError, match=r"no prediction for 2 of 150 labelled target\(s\).*" + dropped.iloc[0, 0]
    ):
        score_submission(labels, partial)
    training = random_frame(np.random.default_rng(6), 9, blank=0.0).astype({"severity": int})
    priors = level_priors(training, weighted=True)  # other studies' priors, never the scored labels'
    with pytest.warns(EvaluationWarning, match="filled with the training priors"):
        joined = join_submission(labels, partial, fill=priors)
    assert joined.counts["filled_rows"] == 2 and joined.counts["scored_rows"] == 150
    indexed = priors.set_index(["condition", "level"])
    filled = joined.frame.set_index(list(FRAME_KEY)).loc[frame.set_index(list(FRAME_KEY)).index[[3, 30]]]
    for (_, condition, level), row in filled.iterrows():
        np.testing.assert_allclose(
            row[list(SEVERITIES)].to_numpy(float), indexed.loc[(condition, level)].to_numpy(float)
        )
    with pytest.warns(EvaluationWarning, match="not scored"):
        kept = join_submission(labels, partial, drop_missing=True)
    assert kept.counts["scored_rows"] == 148 and kept.counts["filled_rows"] == 0


def test_labels_without_the_train_csv_columns_are_refused() -> None:
    frame = random_frame(np.random.default_rng(8), 2)
    labels = wide_labels(frame).drop(columns="spinal_canal_stenosis_l1_l2")
    with pytest.raises(DataError, match=r"labels lack column.*spinal_canal_stenosis_l1_l2"):
        score_submission(labels, submission_of(frame))


def test_studies_without_any_prediction_are_warned_about_not_scored() -> None:
    frame = random_frame(np.random.default_rng(6), 4)
    one_study = frame[frame["study_id"] == 1]
    with pytest.warns(EvaluationWarning, match="3 of 4 labelled studies have no prediction"):
        result = score_submission(wide_labels(frame), submission_of(one_study))
    assert result == pytest.approx(challenge_score(one_study))


@pytest.mark.skipif(not (RSNA / "train.csv").is_file(), reason=f"real RSNA 2024 CSVs not found at {RSNA}")
@pytest.mark.parametrize(("weighted", "expected"), [(False, 0.931), (True, 0.790)])
def test_level_prior_submissions_on_real_train_csv(weighted: bool, expected: float) -> None:
    from spinegrade.data.tables import labels_long, read_train_labels

    labels = read_train_labels(RSNA / "train.csv")
    priors = level_priors(labels_long(labels), weighted=weighted)
    targets = pd.DataFrame(
        [(s, c, lv) for s in labels["study_id"] for c, lv in TARGETS], columns=[*FRAME_KEY]
    )
    predictions = targets.merge(priors, on=["condition", "level"])
    result = score_submission(labels, submission_of(predictions))
    print(f"real train.csv, {'weighted' if weighted else 'plain'} per-level prior: {result}")
    assert result["score"] == pytest.approx(expected, abs=0.005)
