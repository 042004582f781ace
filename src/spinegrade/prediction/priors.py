"""The per-level prior probabilities given to every target that cannot be graded from images."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from spinegrade.data.tables import TRAIN_LABELS, labels_long, read_train_labels
from spinegrade.evaluation.priors import level_priors
from spinegrade.prediction.grade import Ensemble
from spinegrade.vocab import SEVERITIES, TARGETS


def load_priors(ensemble: Ensemble, data_dir: Path) -> tuple[pd.DataFrame, str]:
    """Per-level priors (condition, level, normal_mild, moderate, severe) and where they came from.

    The runs' own training-label priors (best.json "priors", averaged) when every run has them; else
    the challenge-weighted class frequencies of DATA_DIR/train.csv; else uniform.
    """
    stored = [run.info.get("priors") for run in ensemble.runs]
    if all(stored):
        tables = [
            pd.DataFrame(p).set_index(["condition", "level"]).loc[list(TARGETS), list(SEVERITIES)]
            for p in stored
        ]
        mean = sum(t.to_numpy(np.float64) for t in tables) / len(tables)
        return _prior_frame(mean), "the classifier runs' training labels (best.json)"
    train_csv = data_dir / TRAIN_LABELS
    if train_csv.is_file():
        priors = level_priors(labels_long(read_train_labels(train_csv)), weighted=True)
        return priors, f"{train_csv} (class frequencies x 1/2/4, renormalised)"
    uniform = np.full((len(TARGETS), len(SEVERITIES)), 1 / len(SEVERITIES))
    return _prior_frame(uniform), "uniform (no train.csv beside the test data)"


def _prior_frame(values: np.ndarray) -> pd.DataFrame:
    frame = pd.DataFrame(values, columns=list(SEVERITIES))
    frame.insert(0, "level", [lv for _, lv in TARGETS])
    frame.insert(0, "condition", [c for c, _ in TARGETS])
    return frame
