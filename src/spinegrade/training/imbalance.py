"""Class imbalance: class weights in the loss, random oversampling, SMOTE; all fitted on the training fold.

`--imbalance` names one method or a '+' combination of class weights with one sampler
(`class-weights+smote`); a comma separates alternatives to compare (`none,class-weights,smote`).

* class weights: `balanced` = n / (k * count) per class (k = 3 classes), or `challenge` = the score's
  sample weights 1/2/4. The challenge weights make the weighted cross-entropy the same objective as the
  score's log-loss parts, so they are the default.
* oversample: each training row is drawn with probability inversely proportional to the size of its
  (condition, severity) cell, so classes are balanced within each condition and the conditions keep their
  share; a sampler, no copies.
* smote: imbalanced-learn's SMOTENC, run separately per condition group (synthetic points never blend a
  sagittal T2 canal crop with an axial crop) with the condition and level as categorical columns (a
  synthetic point takes the most frequent condition/level of its neighbours). Each minority class is
  resampled up to the majority class of its group. By default it runs on backbone embeddings (see
  spinegrade.training.train); `--smote-space pixels` runs it on flattened crops.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

import numpy as np

from spinegrade.errors import DataError
from spinegrade.vocab import CONDITIONS, GROUP_OF_CONDITION, SEVERITIES, SEVERITY_WEIGHTS

N_CLASSES: Final = len(SEVERITIES)
SamplerName = Literal["oversample", "smote"]
SAMPLERS: Final[tuple[SamplerName, ...]] = ("oversample", "smote")
CLASS_WEIGHT_MODES: Final = ("balanced", "challenge")
_GROUP_CODE: Final = np.array(
    [list(dict.fromkeys(GROUP_OF_CONDITION.values())).index(GROUP_OF_CONDITION[c]) for c in CONDITIONS]
)


@dataclass(frozen=True)
class Imbalance:
    """One imbalance treatment: class weights in the loss and/or one sampler."""

    class_weights: bool = False
    sampler: SamplerName | None = None

    @property
    def name(self) -> str:
        parts = (["class-weights"] if self.class_weights else []) + ([self.sampler] if self.sampler else [])
        return "+".join(parts) or "none"


def parse_imbalance(text: str) -> Imbalance:
    """'none' | 'class-weights' | 'oversample' | 'smote' | 'class-weights+<oversample|smote>'."""
    parts = [p.strip() for p in text.split("+") if p.strip()]
    known = ("none", "class-weights", *SAMPLERS)
    unknown = [p for p in parts if p not in known]
    if not parts or unknown:
        raise DataError(f"imbalance method {text!r} unknown; use {', '.join(known)} or class-weights+SAMPLER")
    if parts == ["none"]:
        return Imbalance()
    samplers = [s for s in SAMPLERS if s in parts]
    if "none" in parts or len(samplers) > 1 or len(parts) != len(set(parts)):
        raise DataError(
            f"imbalance method {text!r}: combine class-weights with at most one of {', '.join(SAMPLERS)}"
        )
    return Imbalance(class_weights="class-weights" in parts, sampler=samplers[0] if samplers else None)


def parse_imbalance_list(text: str) -> list[Imbalance]:
    """A comma list of methods to compare, e.g. 'none,class-weights,class-weights+smote' (deduplicated)."""
    methods = [parse_imbalance(item) for item in text.split(",") if item.strip()]
    if not methods:
        raise DataError("no imbalance method given; use e.g. --imbalance class-weights")
    return list(dict.fromkeys(methods))


def class_weights(severity: np.ndarray, mode: str = "challenge") -> np.ndarray:
    """Loss weight per class (float32 (3,)) from the training fold's severities.

    balanced: n / (3 * count) (a class absent from the fold gets 1: it never meets the loss);
    challenge: 1, 2, 4 whatever the counts.
    """
    if mode == "challenge":
        return np.asarray(SEVERITY_WEIGHTS, dtype=np.float32)
    if mode != "balanced":
        raise DataError(f"class weight mode {mode!r} unknown; use {' or '.join(CLASS_WEIGHT_MODES)}")
    severity = np.asarray(severity, dtype=np.int64)
    if len(severity) == 0:
        raise DataError("cannot compute class weights of an empty training fold")
    counts = np.bincount(severity, minlength=N_CLASSES).astype(np.float64)
    weights = np.divide(len(severity), N_CLASSES * counts, out=np.ones(N_CLASSES), where=counts > 0)
    return weights.astype(np.float32)


def oversample_weights(severity: np.ndarray, condition: np.ndarray) -> np.ndarray:
    """Sampling weight per training row: classes balanced within each condition, conditions keep their share.

    Row weight = n_condition / (classes present in the condition * count(condition, severity)).
    """
    severity = np.asarray(severity, dtype=np.int64)
    condition = np.asarray(condition, dtype=np.int64)
    cell = condition * N_CLASSES + severity
    cell_count = np.bincount(cell, minlength=len(CONDITIONS) * N_CLASSES).reshape(len(CONDITIONS), N_CLASSES)
    n_condition = cell_count.sum(axis=1)
    present = (cell_count > 0).sum(axis=1)
    return (n_condition[condition] / (present[condition] * cell_count[condition, severity])).astype(
        np.float64
    )


@dataclass(frozen=True)
class Resampled:
    """Real rows first (unchanged, in input order), then the synthetic rows."""

    x: np.ndarray  # (n_real + n_synthetic, d)
    severity: np.ndarray
    condition: np.ndarray
    level: np.ndarray
    n_real: int

    @property
    def n_synthetic(self) -> int:
        return len(self.severity) - self.n_real


def smote_resample(
    x: np.ndarray, severity: np.ndarray, condition: np.ndarray, level: np.ndarray, *, seed: int
) -> Resampled:
    """SMOTENC on training rows x (n, d) per condition group, condition/level categorical (see module doc).

    Only pass the training fold: nothing else should shape the synthetic points. Classes with fewer than 2
    rows in a group cannot be interpolated and are left as they are.
    """
    from imblearn.over_sampling import SMOTENC

    x = np.asarray(x)
    severity, condition, level = (np.asarray(a, dtype=np.int64) for a in (severity, condition, level))
    if x.ndim != 2 or not len(x) == len(severity) == len(condition) == len(level):
        raise DataError(f"smote: expected x (n, d) and n labels, got x {x.shape}, {len(severity)} labels")
    synthetic: list[tuple[np.ndarray, ...]] = []
    for group in np.unique(_GROUP_CODE[condition]):
        rows = np.flatnonzero(_GROUP_CODE[condition] == group)
        counts = np.bincount(severity[rows], minlength=N_CLASSES)
        target = counts.max()
        grow = {c: int(target) for c in range(N_CLASSES) if 2 <= counts[c] < target}
        if not grow:
            continue
        k = min(5, min(counts[c] for c in grow) - 1)
        sampler = SMOTENC(
            categorical_features=[x.shape[1], x.shape[1] + 1],
            sampling_strategy=grow,
            k_neighbors=k,
            random_state=seed,
        )
        features = np.concatenate([x[rows], condition[rows, None], level[rows, None]], axis=1)
        out, out_severity = sampler.fit_resample(features, severity[rows])
        new = out[len(rows) :]
        synthetic.append(
            (
                new[:, :-2].astype(x.dtype),
                out_severity[len(rows) :],
                new[:, -2].astype(np.int64),
                new[:, -1].astype(np.int64),
            )
        )
    parts = [(x, severity, condition, level), *synthetic]
    all_x, all_severity, all_condition, all_level = (np.concatenate([p[i] for p in parts]) for i in range(4))
    return Resampled(all_x, all_severity, all_condition, all_level, n_real=len(x))


def prior_shift(
    train_severity: np.ndarray,
    train_condition: np.ndarray,
    seen_severity: np.ndarray,
    seen_condition: np.ndarray,
    *,
    seen_weights: np.ndarray | None = None,
    loss_weights: np.ndarray | None = None,
    smoothing: float = 0.5,
) -> np.ndarray:
    """Per-condition factors (5, 3) that move a model's probabilities back to what the score expects.

    A model fitted with loss weights w_loss on rows seen with class distribution q_seen (after
    oversampling or SMOTE; `seen_weights` are a sampler's row weights) tends to p_model ~ w_loss * q_seen
    per condition, while the score's optimum is w_metric * q_train (1/2/4 times the real training fold's
    frequencies). So p ~ p_model * w_metric * q_train / (w_loss * q_seen); the factors are that ratio,
    normalised per condition (challenge class weights without a sampler give all ones). Counts get
    `smoothing` per class so a class absent from the fold gets a finite factor.
    """
    n_conditions = len(CONDITIONS)

    def distribution(severity: np.ndarray, condition: np.ndarray, weights: np.ndarray | None) -> np.ndarray:
        cell = np.asarray(condition, np.int64) * N_CLASSES + np.asarray(severity, np.int64)
        counts = np.bincount(cell, weights=weights, minlength=n_conditions * N_CLASSES).astype(np.float64)
        counts = counts.reshape(n_conditions, N_CLASSES)
        if weights is not None:  # expected counts of a sampler drawing as many rows as there are
            real = np.bincount(np.asarray(condition, np.int64), minlength=n_conditions)
            total = counts.sum(axis=1, keepdims=True)
            counts = np.divide(counts * real[:, None], total, out=np.zeros_like(counts), where=total > 0)
        counts += smoothing
        return counts / counts.sum(axis=1, keepdims=True)

    q_train = distribution(train_severity, train_condition, None)
    q_seen = distribution(seen_severity, seen_condition, seen_weights)
    w_loss = np.ones(N_CLASSES) if loss_weights is None else np.asarray(loss_weights, np.float64)
    factors = np.asarray(SEVERITY_WEIGHTS) * q_train / (w_loss * q_seen)
    return factors / factors.sum(axis=1, keepdims=True)


def apply_prior_shift(probs: np.ndarray, condition: np.ndarray, factors: np.ndarray | None) -> np.ndarray:
    """probs (n, 3) times the factors (5, 3) of each row's condition (index into CONDITIONS), renormalised;
    unchanged when factors is None."""
    if factors is None:
        return np.asarray(probs, dtype=np.float64)
    out = (
        np.asarray(probs, dtype=np.float64) * np.asarray(factors, np.float64)[np.asarray(condition, np.int64)]
    )
    return out / out.sum(axis=1, keepdims=True)
