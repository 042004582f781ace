"""spinegrade.training.imbalance: method parsing, class weights, oversampling weights, SMOTE."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import WeightedRandomSampler

from spinegrade.errors import DataError
from spinegrade.training.imbalance import (
    Imbalance,
    apply_prior_shift,
    class_weights,
    oversample_weights,
    parse_imbalance,
    parse_imbalance_list,
    prior_shift,
    smote_resample,
)
from spinegrade.training.module import score_loss
from spinegrade.training.runs import TrainConfig
from spinegrade.vocab import CONDITIONS, GROUP_OF_CONDITION, SEVERITY_WEIGHTS


def test_methods_combine_with_plus_and_compare_with_commas() -> None:
    assert parse_imbalance("class-weights+smote") == Imbalance(class_weights=True, sampler="smote")
    assert parse_imbalance("oversample") == Imbalance(sampler="oversample")
    assert parse_imbalance("none") == Imbalance()
    assert parse_imbalance("class-weights+oversample").name == "class-weights+oversample"
    listed = parse_imbalance_list("none,class-weights,smote,class-weights+smote")
    assert [m.name for m in listed] == ["none", "class-weights", "smote", "class-weights+smote"]
    for bad in ("smote+oversample", "none+smote", "focal", "class-weights+class-weights", ""):
        with pytest.raises(DataError):
            parse_imbalance(bad)


def test_balanced_class_weights_follow_n_over_k_count() -> None:
    y = np.array([0] * 6 + [1] * 3 + [2] * 1)
    # n / (k * count) with n = 10, k = 3
    assert np.allclose(class_weights(y, "balanced"), [10 / 18, 10 / 9, 10 / 3])
    # A class missing from the training fold gets weight 1 (it never meets the loss).
    assert np.allclose(class_weights(np.array([0, 0, 1]), "balanced"), [3 / 6, 3 / 3, 1.0])


def test_challenge_class_weights_are_the_scores_sample_weights() -> None:
    y = np.array([0] * 50 + [1] * 3)
    assert class_weights(y, "challenge").tolist() == [1.0, 2.0, 4.0]
    with pytest.raises(DataError, match="unknown"):
        class_weights(y, "inverse")


def test_class_weights_depend_on_the_training_rows_only() -> None:
    rng = np.random.default_rng(0)
    train = rng.choice(3, size=300, p=[0.7, 0.2, 0.1])
    val_a = rng.choice(3, size=100, p=[0.7, 0.2, 0.1])
    val_b = np.full(100, 2)  # a validation fold of another class distribution
    weights = class_weights(train, "balanced")
    # What the training code calls: the weights of the training fold whatever the validation fold holds.
    for val in (val_a, val_b):
        rows = np.concatenate([train, val])
        fold = np.r_[np.zeros(len(train)), np.ones(len(val))]
        assert np.allclose(class_weights(rows[fold == 0], "balanced"), weights)
    assert not np.allclose(class_weights(np.concatenate([train, val_b]), "balanced"), weights)


def test_oversampler_draws_minority_classes_as_often_as_the_majority() -> None:
    rng = np.random.default_rng(0)
    n = 2000
    condition = rng.integers(0, len(CONDITIONS), n)
    severity = rng.choice(3, size=n, p=[0.8, 0.15, 0.05])
    weights = oversample_weights(severity, condition)
    sampler = WeightedRandomSampler(
        torch.as_tensor(weights), num_samples=30000, generator=torch.Generator().manual_seed(0)
    )
    drawn = np.fromiter(sampler, dtype=np.int64)
    share = np.bincount(severity[drawn], minlength=3) / len(drawn)
    assert np.allclose(share, 1 / 3, atol=0.03)  # was 0.80 / 0.15 / 0.05
    condition_share = np.bincount(condition[drawn], minlength=5) / len(drawn)
    assert np.allclose(condition_share, np.bincount(condition, minlength=5) / n, atol=0.02)


def _on_some_segment(point: np.ndarray, rows: np.ndarray, tol: float = 1e-4) -> bool:
    """Whether `point` lies on a segment between two of `rows` (n, d)."""
    i, j = np.triu_indices(len(rows), k=1)
    a, ab = rows[i], rows[j] - rows[i]
    t = np.einsum("pd,pd->p", point - a, ab) / np.maximum(np.einsum("pd,pd->p", ab, ab), 1e-12)
    residual = np.abs(a + t[:, None] * ab - point).max(axis=1)
    return bool(np.any((t >= -tol) & (t <= 1 + tol) & (residual < tol)))


def test_smote_adds_only_points_between_training_rows_of_one_class_and_group() -> None:
    rng = np.random.default_rng(0)
    n, d = 120, 4
    condition = rng.integers(0, len(CONDITIONS), n)
    level = rng.integers(0, 5, n)
    severity = rng.choice(3, size=n, p=[0.7, 0.2, 0.1])
    x = rng.normal(size=(n, d)) + severity[:, None] * 3.0
    out = smote_resample(x, severity, condition, level, seed=0)

    assert out.n_real == n and out.n_synthetic > 0
    # The training rows come first and unchanged.
    assert np.array_equal(out.x[:n], x)
    assert np.array_equal(out.severity[:n], severity)
    group = np.array([GROUP_OF_CONDITION[c] for c in CONDITIONS])
    for i in range(n, len(out.x)):
        same = np.flatnonzero((severity == out.severity[i]) & (group[condition] == group[out.condition[i]]))
        assert _on_some_segment(out.x[i], x[same]), i
    assert set(out.level[n:]) <= set(range(5))
    # Each group's minority classes were grown to its majority class.
    for g in set(group):
        in_group = group[out.condition] == g
        counts = np.bincount(out.severity[in_group], minlength=3)
        assert counts.min() == counts.max()


def test_smote_leaves_a_class_with_a_single_row_alone() -> None:
    x = np.arange(20, dtype=np.float64).reshape(10, 2)
    severity = np.array([0] * 6 + [1] * 3 + [2])
    condition = np.zeros(10, dtype=np.int64)
    out = smote_resample(x, severity, condition, np.zeros(10, dtype=np.int64), seed=0)
    assert np.bincount(out.severity, minlength=3).tolist() == [6, 6, 1]


def _fold(rng: np.random.Generator, n: int = 3000) -> tuple[np.ndarray, np.ndarray]:
    condition = rng.integers(0, len(CONDITIONS), n)
    severity = rng.choice(3, size=n, p=[0.75, 0.18, 0.07])
    return severity, condition


def _frequencies(
    severity: np.ndarray, condition: np.ndarray, weights: np.ndarray | None = None
) -> np.ndarray:
    counts = np.zeros((len(CONDITIONS), 3))
    np.add.at(counts, (condition, severity), 1.0 if weights is None else weights)
    return (counts + 0.5) / (counts + 0.5).sum(axis=1, keepdims=True)


def test_prior_shift_is_identity_for_challenge_weights_and_the_weights_for_plain_cross_entropy() -> None:
    severity, condition = _fold(np.random.default_rng(0))
    challenge = class_weights(severity, "challenge")
    same = prior_shift(severity, condition, severity, condition, loss_weights=challenge)
    assert np.allclose(same, 1 / 3)  # nothing to correct: the loss already has the score's optimum
    plain = prior_shift(severity, condition, severity, condition)
    assert np.allclose(plain, np.asarray(SEVERITY_WEIGHTS) / sum(SEVERITY_WEIGHTS))


@pytest.mark.parametrize("method", ["balanced", "oversample", "smote-like"])
def test_prior_shift_maps_a_models_training_optimum_to_the_scores_optimum(method: str) -> None:
    """A model at the optimum of its training loss (p ~ w_loss q_seen) is moved to w_metric q_train."""
    rng = np.random.default_rng(1)
    severity, condition = _fold(rng)
    seen_s, seen_c, seen_w, loss_w = severity, condition, None, None
    if method == "balanced":
        loss_w = class_weights(severity, "balanced")
    elif method == "oversample":
        seen_w = oversample_weights(severity, condition)
    else:  # synthetic minority rows added: every class as large as the majority of its condition
        extra = [(k, c) for c in range(len(CONDITIONS)) for k in (1, 2) for _ in range(400 - 50 * k)]
        seen_s = np.r_[severity, [k for k, _ in extra]]
        seen_c = np.r_[condition, [c for _, c in extra]]
    factors = prior_shift(severity, condition, seen_s, seen_c, seen_weights=seen_w, loss_weights=loss_w)
    model = _frequencies(seen_s, seen_c, seen_w) * (1.0 if loss_w is None else loss_w)
    model /= model.sum(axis=1, keepdims=True)
    corrected = apply_prior_shift(model[condition], condition, factors)
    target = _frequencies(severity, condition) * np.asarray(SEVERITY_WEIGHTS)
    target /= target.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(corrected, target[condition], rtol=1e-6)
    assert not np.allclose(model[condition], target[condition], atol=0.02)
    np.testing.assert_allclose(apply_prior_shift(model, np.arange(5), None), model)


def test_score_loss_weights_condition_groups_equally_and_adds_a_per_study_any_severe_term() -> None:
    weights = torch.tensor(SEVERITY_WEIGHTS)
    spinal, foraminal = CONDITIONS.index("spinal_canal_stenosis"), 1
    logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 0.0, 1.0]] + [[1.0, 0.0, 0.0]] * 8)
    severity = torch.tensor([0, 2] + [1] * 8)
    condition = torch.tensor([spinal, spinal] + [foraminal] * 8)
    study = torch.tensor([5, 5] + [6] * 8)
    loss = score_loss(logits, severity, condition, study, weights)
    nll = torch.nn.functional.cross_entropy(logits, severity, reduction="none")
    spinal_part = (nll[0] * 1 + nll[1] * 4) / 5
    assert loss.item() == pytest.approx(((spinal_part + nll[2:].mean()) / 2).item(), rel=1e-5)
    pooled = torch.nn.functional.cross_entropy(logits, severity, weight=weights)
    assert loss.item() != pytest.approx(pooled.item())  # eight foraminal rows no longer outweigh the spinal
    severe = torch.softmax(logits[:2], dim=1)[:, 2].max()
    any_severe = -torch.log(severe)  # study 5 has a severe level; weight 4 / 4
    both = score_loss(logits, severity, condition, study, weights, any_severe=1.0)
    assert both.item() == pytest.approx(((spinal_part + nll[2:].mean() + any_severe) / 3).item(), rel=1e-5)
    synthetic = score_loss(logits, severity, condition, torch.full_like(study, -1), weights, any_severe=1.0)
    assert synthetic.item() == pytest.approx(loss.item())  # synthetic rows have no study


def test_label_smoothing_spreads_each_target_over_the_grades() -> None:
    weights = torch.tensor(SEVERITY_WEIGHTS)
    logits = torch.tensor([[3.0, 0.0, -1.0], [0.0, 2.0, 0.0]])
    severity, condition, study = torch.tensor([0, 1]), torch.tensor([0, 0]), torch.tensor([1, 2])
    log_p = torch.log_softmax(logits, dim=1)
    target = torch.nn.functional.one_hot(severity, 3) * 0.9 + 0.1 / 3
    nll = -(target * log_p).sum(1)
    expected = (nll[0] * 1 + nll[1] * 2) / 3
    smoothed = score_loss(logits, severity, condition, study, weights, label_smoothing=0.1)
    assert smoothed.item() == pytest.approx(expected.item(), rel=1e-5)
    assert smoothed.item() != pytest.approx(score_loss(logits, severity, condition, study, weights).item())
    with pytest.raises(DataError, match="label_smoothing"):
        TrainConfig(label_smoothing=1.0)
