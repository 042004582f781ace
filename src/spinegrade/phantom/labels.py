"""Severity labels of phantom studies: a continuous latent severity per target, and a noisy reader.

Each target has a latent severity z ~ N(0, 1) (study, level and condition factors give the correlations of
real spines: a degenerated L4/L5 tends to be narrowed everywhere); the image shows z as a narrowing graded
continuously (`narrowing_of`). The label is what a radiologist reads from it: z + reader noise, cut at
thresholds, an ordinal probit P(grade | z) whose confusions are mostly between neighbouring grades, as
between real readers. The thresholds keep the real per-target frequencies. P(grade | z) is the oracle: no
model that sees the image can beat its score in expectation (the phantom's floor).
"""

from __future__ import annotations

from dataclasses import dataclass
from statistics import NormalDist
from typing import Final

import numpy as np

from spinegrade.vocab import CONDITIONS, LABEL_COLUMNS, LEVELS

# (Normal/Mild, Moderate, Severe, blank) per train.csv column, counted once from the competition's
# train.csv (1,975 studies; /work/shared/data/rsna2024/train.csv). Embedded so the phantom needs no data.
REAL_COUNTS: Final[dict[str, tuple[int, int, int, int]]] = {
    "spinal_canal_stenosis_l1_l2": (1886, 67, 21, 1),
    "spinal_canal_stenosis_l2_l3": (1770, 151, 53, 1),
    "spinal_canal_stenosis_l3_l4": (1622, 230, 122, 1),
    "spinal_canal_stenosis_l4_l5": (1482, 237, 255, 1),
    "spinal_canal_stenosis_l5_s1": (1904, 51, 19, 1),
    "left_neural_foraminal_narrowing_l1_l2": (1908, 63, 2, 2),
    "left_neural_foraminal_narrowing_l2_l3": (1791, 171, 11, 2),
    "left_neural_foraminal_narrowing_l3_l4": (1522, 411, 40, 2),
    "left_neural_foraminal_narrowing_l4_l5": (1204, 629, 140, 2),
    "left_neural_foraminal_narrowing_l5_s1": (1247, 520, 206, 2),
    "right_neural_foraminal_narrowing_l1_l2": (1891, 63, 13, 8),
    "right_neural_foraminal_narrowing_l2_l3": (1793, 168, 6, 8),
    "right_neural_foraminal_narrowing_l3_l4": (1512, 414, 41, 8),
    "right_neural_foraminal_narrowing_l4_l5": (1208, 629, 130, 8),
    "right_neural_foraminal_narrowing_l5_s1": (1281, 496, 190, 8),
    "left_subarticular_stenosis_l1_l2": (1690, 93, 28, 164),
    "left_subarticular_stenosis_l2_l3": (1555, 255, 83, 82),
    "left_subarticular_stenosis_l3_l4": (1324, 454, 194, 3),
    "left_subarticular_stenosis_l4_l5": (887, 624, 461, 3),
    "left_subarticular_stenosis_l5_s1": (1408, 409, 147, 11),
    "right_subarticular_stenosis_l1_l2": (1680, 110, 24, 161),
    "right_subarticular_stenosis_l2_l3": (1577, 243, 73, 82),
    "right_subarticular_stenosis_l3_l4": (1322, 454, 197, 2),
    "right_subarticular_stenosis_l4_l5": (891, 622, 460, 2),
    "right_subarticular_stenosis_l5_s1": (1399, 396, 173, 7),
}
# Share of labelled targets without a point in train_label_coordinates.csv (146 of 48,803 in the real data).
MISSING_POINT_RATE: Final = 0.003
# Variance shares of the latent severity: study, level and condition factors; the rest is per target.
# Chosen so that codes correlate roughly like the real ones (Spearman ~0.36 same level, ~0.27 same
# condition, ~0.19 otherwise).
STUDY_SHARE: Final = 0.3
LEVEL_SHARE: Final = 0.2
CONDITION_SHARE: Final = 0.1

# Standard deviation of the reader's noise on the latent scale (z has unit variance). Sets the floor: the
# oracle's challenge score is about 0.32 with it (0.28-0.36 on the default phantom), against a per-level
# prior of about 0.79, the real prior.
READER_NOISE: Final = 0.35
# Narrowing (share of the lumen's radius taken by the lesion) at the latent's knots, relative to the two
# grade thresholds t0 (Normal/Mild | Moderate) and t1 (Moderate | Severe): (offset from t0, t0, t1, offset
# from t1). Between knots it is linear, so the picture grades continuously.
NARROWING_KNOTS: Final = ((-2.0, 0.0), (0.0, 0.30), (0.0, 0.62), (1.2, 0.88))

_COUNTS = np.array([REAL_COUNTS[c] for c in LABEL_COLUMNS], dtype=np.float64)
FREQUENCIES: Final = _COUNTS[:, :3] / _COUNTS[:, :3].sum(axis=1, keepdims=True)  # (25, 3), rows sum to 1
BLANK_RATES: Final = _COUNTS[:, 3] / _COUNTS.sum(axis=1)  # (25,)
# Cut points (25, 2) of the noisy reading z + noise ~ N(0, 1 + READER_NOISE^2), so that the labels keep the
# real frequencies; the stdlib's normal quantile spares importing scipy.stats (~1.5 s per worker).
_NORMAL = NormalDist()
THRESHOLDS: Final = np.sqrt(1.0 + READER_NOISE**2) * np.vectorize(_NORMAL.inv_cdf)(
    np.cumsum(FREQUENCIES, axis=1)[:, :2]
)
_CDF = np.vectorize(_NORMAL.cdf, otypes=[np.float64])


@dataclass(frozen=True)
class LabelSample:
    """Latent severity and label (0..2) of every target, and which of them the CSVs leave blank or without a
    point."""

    latent: np.ndarray  # float64 (n, 25) in LABEL_COLUMNS order: the severity the images show
    severity: np.ndarray  # int8 (n, 25): the reader's grade, drawn from P(grade | latent)
    blank: np.ndarray  # bool (n, 25): no label in train.csv (and no point)
    no_point: np.ndarray  # bool (n, 25): labelled, but left out of the coordinates file

    @property
    def oracle(self) -> np.ndarray:
        """P(grade | latent), float64 (n, 25, 3): the best prediction any model of the images can make."""
        return grade_probabilities(self.latent)


def grade_probabilities(latent: np.ndarray) -> np.ndarray:
    """P(grade | latent) (..., 25, 3) of the reader model for latents (..., 25) in LABEL_COLUMNS order."""
    below = _CDF((THRESHOLDS - latent[..., None]) / READER_NOISE)  # P(grade <= 0), P(grade <= 1)
    return np.diff(below, axis=-1, prepend=0.0, append=1.0)


def narrowing_of(latent: np.ndarray) -> np.ndarray:
    """What the image shows of latents (..., 25): the share of each target's lumen a lesion takes."""
    offsets = np.array([k[0] for k in NARROWING_KNOTS])
    values = np.array([k[1] for k in NARROWING_KNOTS])
    out = np.empty(np.shape(latent))
    for j in range(len(LABEL_COLUMNS)):
        low, high = THRESHOLDS[j]
        knots = np.array([low, low, high, high]) + offsets
        out[..., j] = np.interp(latent[..., j], knots, values)
    return out


def grade_latent(code: int) -> np.ndarray:
    """A latent (25,) typical of grade `code` at every target: where that grade's reading is surest."""
    low, high = THRESHOLDS[:, 0], THRESHOLDS[:, 1]
    return (low - 1.5, (low + high) / 2.0, high + 1.0)[code]


def sample_labels(rng: np.random.Generator, n: int) -> LabelSample:
    """Draw latents and labels of `n` studies with the real per-target frequencies and blank rates."""
    n_levels, n_conditions = len(LEVELS), len(CONDITIONS)
    study = rng.standard_normal((n, 1, 1))
    level = rng.standard_normal((n, 1, n_levels))
    condition = rng.standard_normal((n, n_conditions, 1))
    own = rng.standard_normal((n, n_conditions, n_levels))
    latent = (
        np.sqrt(STUDY_SHARE) * study
        + np.sqrt(LEVEL_SHARE) * level
        + np.sqrt(CONDITION_SHARE) * condition
        + np.sqrt(1.0 - STUDY_SHARE - LEVEL_SHARE - CONDITION_SHARE) * own
    ).reshape(n, -1)  # condition-major, like LABEL_COLUMNS
    reading = latent + READER_NOISE * rng.standard_normal(latent.shape)
    severity = (reading[:, :, None] > THRESHOLDS[None]).sum(axis=2).astype(np.int8)

    draws = rng.random((n, n_conditions, n_levels))
    # Left and right subarticular blanks go together (an axial slab that was not graded).
    left, right = (
        CONDITIONS.index("left_subarticular_stenosis"),
        CONDITIONS.index("right_subarticular_stenosis"),
    )
    draws[:, right] = draws[:, left]
    draws = draws.reshape(n, -1)
    blank = draws < BLANK_RATES[None]
    no_point = ~blank & (rng.random((n, len(LABEL_COLUMNS))) < MISSING_POINT_RATE)
    return LabelSample(latent=latent, severity=severity, blank=blank, no_point=no_point)
