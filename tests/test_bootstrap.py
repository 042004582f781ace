"""Bootstrap intervals over studies: centred on the exact score, narrower with more studies, seeded."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from spinegrade.evaluation.bootstrap import bootstrap_interval
from spinegrade.evaluation.score import challenge_score
from spinegrade.vocab import SEVERITIES, TARGETS


def _frame(n_studies: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for s in range(n_studies):
        for condition, level in TARGETS:
            severity = int(rng.choice(3, p=[0.7, 0.2, 0.1]))
            p = rng.dirichlet([1, 1, 1]) * 0.5
            p[severity] += 0.5
            rows.append((s, condition, level, severity, *p))
    return pd.DataFrame(rows, columns=["study_id", "condition", "level", "severity", *SEVERITIES])


def test_interval_brackets_the_exact_score_and_shrinks_with_studies() -> None:
    small, large = _frame(20, 0), _frame(320, 1)
    for frame in (small, large):
        exact = challenge_score(frame)
        out = bootstrap_interval(frame, n=500, seed=3)
        for part, value in exact.items():
            assert out[part]["value"] == pytest.approx(value, rel=1e-9)
            assert out[part]["low"] < value < out[part]["high"]
    widths = [bootstrap_interval(f, n=500)["score"] for f in (small, large)]
    assert widths[1]["high"] - widths[1]["low"] < (widths[0]["high"] - widths[0]["low"]) / 2  # ~ 1/4
    assert bootstrap_interval(small, n=200, seed=5) == bootstrap_interval(small, n=200, seed=5)
