"""The per-level prior probabilities given to every target that cannot be graded from images."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from spinegrade.data.tables import TRAIN_LABELS, labels_long, read_train_labels
from spinegrade.evaluation.priors import average_priors, level_priors, prior_frame
from spinegrade.prediction.grade import Ensemble
from spinegrade.vocab import SEVERITIES, TARGETS


def load_priors(ensemble: Ensemble, data_dir: Path) -> tuple[pd.DataFrame, str]:
    """Per-level priors (condition, level, normal_mild, moderate, severe) and where they came from.

    The runs' own training-label priors (best.json "priors", averaged) when every run has them; else
    the challenge-weighted class frequencies of DATA_DIR/train.csv; else uniform.
    """
    stored = [priors for run in ensemble.runs if (priors := run.info.get("priors"))]
    if len(stored) == len(ensemble.runs):
        return average_priors(stored), "the classifier runs' training labels (best.json)"
    train_csv = data_dir / TRAIN_LABELS
    if train_csv.is_file():
        priors = level_priors(labels_long(read_train_labels(train_csv)), weighted=True)
        return priors, f"{train_csv} (class frequencies x 1/2/4, renormalised)"
    uniform = np.full((len(TARGETS), len(SEVERITIES)), 1 / len(SEVERITIES))
    return prior_frame(uniform), "uniform (no train.csv beside the test data)"
