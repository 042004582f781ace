"""Self-distillation: a finished run of the same fold (the teacher) grades the training crops, and the new
run learns from its probabilities blended with the readers' grades (`TrainConfig.distill`, `teacher`).

Why: a grade is one noisy draw from P(grade | image); the teacher's probabilities carry, for every crop,
what it learned of that distribution from all of them, so the blended target is less noisy than the grade.
On the phantom, training on the true P(grade | latent) instead of the grades closes most of the
classifier's gap to the floor; a teacher is the attainable stand-in (measured: docs/results.md#distillation).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from spinegrade.crops.folds import FOLDS_FILE
from spinegrade.errors import DataError
from spinegrade.training.checkpoint import load_run
from spinegrade.training.datamodule import CropDataset
from spinegrade.training.module import run_model
from spinegrade.training.runs import CONFIG, TrainConfig


def check_teacher(config: TrainConfig, plan: Path) -> Path:
    """`config`'s teacher; DataError unless it is a run of the same fold, fold plan (`plan`, the cache's
    folds.csv) and class balance."""
    if not config.teacher:
        raise DataError("distill needs a teacher: a finished run of the same fold (train --teacher RUN)")
    teacher = Path(config.teacher)
    saved = teacher / CONFIG
    if not saved.is_file():
        raise DataError(f"teacher {teacher} holds no run ({CONFIG} is missing): give a finished run's folder")
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


def teacher_targets(config: TrainConfig, train: CropDataset, plan: Path) -> np.ndarray:
    """The teacher's raw probabilities (max row + 1, 3) float32 of the training crops, by cache row (zeros
    for other rows); `plan` is the cache's folds.csv. The teacher runs in eval mode, unaugmented."""
    model, _ = load_run(check_teacher(config, plan))
    device = "cuda" if config.accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available() else "cpu"
    rows, probs = run_model(model, train, what="probs", batch_size=config.batch_size * 4, device=device)
    targets = np.zeros((int(rows.max()) + 1, probs.shape[1]), dtype=np.float32)
    targets[rows] = probs
    return targets
