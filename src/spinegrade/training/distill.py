"""Self-distillation: a teacher grades the training crops, and the run learns from its probabilities blended
with the readers' grades (`TrainConfig.distill`, `teacher`).

The teacher is a finished run of the same fold (cv: the fold's headline run), whose raw probabilities are in
the training distribution the student's loss learns, or a submission CSV of probabilities per target in the
score's distribution (another model's predictions of the training studies, or the phantom's
oracle_submission.csv), moved to the training distribution by the fold's prior-shift factors.

Why: a grade is one noisy draw from P(grade | image); the teacher's probabilities carry, for every crop,
what it learned of that distribution from all of them, so the blended target is less noisy than the grade.
On the phantom, the true P(grade | latent) as the teacher measures what the grades' noise costs; a teacher
run is the attainable stand-in, and measured no gain end to end (docs/results.md#distillation).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from spinegrade.crops.folds import FOLDS_FILE
from spinegrade.errors import DataError
from spinegrade.evaluation.submission import read_submission
from spinegrade.training.checkpoint import load_run
from spinegrade.training.datamodule import CropDataset
from spinegrade.training.module import run_model
from spinegrade.training.runs import CONFIG, TrainConfig
from spinegrade.vocab import CONDITIONS, SEVERITIES, make_row_id


def check_teacher(config: TrainConfig, plan: Path) -> Path:
    """`config`'s teacher; DataError unless it is a submission CSV or a run of the same fold, fold plan
    (`plan`, the cache's folds.csv) and class balance."""
    if not config.teacher:
        raise DataError("distill needs a teacher: a finished run of the same fold or a submission CSV")
    teacher = Path(config.teacher)
    if teacher.is_file():
        return teacher
    saved = teacher / CONFIG
    if not saved.is_file():
        raise DataError(f"teacher {teacher} is neither a submission CSV nor a run ({CONFIG} is missing)")
    taught = TrainConfig.from_dict(json.loads(saved.read_text()))
    if taught.fold != config.fold:
        raise DataError(
            f"teacher {teacher} was trained for fold {taught.fold}, not {config.fold}: its training crops "
            "would include this fold's validation studies"
        )
    if (taught.imbalance, taught.class_weights) != (config.imbalance, config.class_weights):
        raise DataError(
            f"teacher {teacher} was trained with imbalance {taught.imbalance} ({taught.class_weights}), this "
            f"run with {config.imbalance} ({config.class_weights}): its probabilities are in another class "
            "balance"
        )
    own = teacher / FOLDS_FILE
    if own.is_file() and plan.is_file() and own.read_bytes() != plan.read_bytes():
        raise DataError(f"teacher {teacher} was trained on another fold plan than {plan}")
    return teacher


def _submission_targets(path: Path, index: pd.DataFrame, prior_shift: np.ndarray | None) -> np.ndarray:
    """Probabilities (len(index), 3) of `index`'s targets from a submission CSV, divided by the prior-shift
    factors of their condition (score -> training distribution) and normalised."""
    table = read_submission(path).set_index("row_id")
    ids = [make_row_id(*key) for key in index[["study_id", "condition", "level"]].itertuples(index=False)]
    missing = [i for i in ids if i not in table.index]
    if missing:
        raise DataError(f"teacher {path} has no row {missing[0]!r} ({len(missing)} training targets missing)")
    probs = table.loc[ids, list(SEVERITIES)].to_numpy(np.float64)
    if prior_shift is not None:
        probs = probs / prior_shift[index["condition"].map(CONDITIONS.index).to_numpy()]
    return (probs / probs.sum(axis=1, keepdims=True)).astype(np.float32)


def teacher_targets(
    config: TrainConfig, train: CropDataset, index: pd.DataFrame, prior_shift: np.ndarray | None
) -> np.ndarray:
    """The teacher's probabilities (max row + 1, 3) float32 of the training crops `train` (whose cache rows
    are `index`), by cache row (zeros for other rows), in the training distribution. A teacher run grades
    the crops in eval mode, unaugmented. The teacher is `config.teacher`, as check_teacher accepted it."""
    teacher = Path(str(config.teacher))
    rows = train.labels.row
    if teacher.is_file():
        probs = _submission_targets(teacher, index, prior_shift)
    else:
        model, _ = load_run(teacher)
        cuda = config.accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available()
        rows, probs = run_model(
            model, train, what="probs", batch_size=config.batch_size * 4, device="cuda" if cuda else "cpu"
        )
    targets = np.zeros((int(rows.max()) + 1, len(SEVERITIES)), dtype=np.float32)
    targets[rows] = probs
    return targets
