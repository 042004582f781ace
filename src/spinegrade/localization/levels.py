"""Decode a condition's five levels together: in order down the spine, about evenly spaced.

Each level's heatmap is decoded alone by `targets.decode_heatmaps`; where a level's map has two peaks on
neighbouring discs, its arg-max can land on the wrong one (two levels on one disc, or L1/L2 on T12/L1),
and the refiner and the axial slice then follow it. Here each level keeps its few strongest peaks
(`level_candidates`: local maxima scored by the probability mass around them) and one chain is chosen
(`chain_levels`, a Viterbi pass over the levels): the sum of the peaks' log masses, less `stiffness` times
each gap's squared relative deviation from the condition's typical gap (`typical_gap`), with every level
below the one above it by at least `MIN_GAP` of that gap (in patient space, so any image orientation works).
A level whose map has no peak on its disc at all (L1/L2's map only on T12/L1) gets one more candidate,
a bridge (`add_bridges`): the point its neighbours in the first chain put it at, scored as
`LevelChains.bridge` mass, and the chain is chosen again (`decode_levels`); the second chain takes a
bridge only where the level's own peak leaves a gap well off the others' (at the defaults, 1.4 times the
typical gap or more for a peak of mass 0.6, where a level on its neighbour's disc leaves 2).
The canal (sagittal T2) and the two foramina (sagittal T1) of a level lie side by side, so the three
chains of a study check each other (`consensus_references`): where two agree on a level, the third's
candidates are scored by their distance from them too, and the chains are chosen again.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Final

import numpy as np
import torch
import torch.nn.functional as F

from spinegrade.localization.targets import subpixel


@dataclass(frozen=True)
class LevelChains:
    """How a condition's levels are decoded together (measured: docs/results.md#level-chains)."""

    stiffness: float = 4.0  # weight of the gaps' squared relative deviations against the peaks' log masses
    bridge: float | None = 0.3  # the mass a bridge candidate counts as; None: no bridges
    # weight of a candidate's squared distance (in typical gaps, across the sagittal plane) from where the
    # study's other two sagittal chains agree its level lies; None: each chain alone
    consensus: float | None = 4.0


MIN_GAP: Final = 0.5  # the least gap between neighbouring levels, as a share of the typical gap
AGREE: Final = 0.5  # two chains agree on a level within this share of the typical gap
N_CANDIDATES: Final = 4  # peaks kept per level
SUPERIOR: Final = np.array([0.0, 0.0, 1.0])  # LPS patient space: +z is the head


def level_candidates(
    logits: torch.Tensor, k: int = N_CANDIDATES, radius: int = 2
) -> tuple[torch.Tensor, torch.Tensor]:
    """Heatmap logits (L, H, W) -> (candidate points (L, k, 2) as (x, y) in heatmap pixels, their mass
    (L, k)): the k logit maxima (each the largest within +-radius pixels) with the most softmax mass within
    +-radius pixels, strongest first (mass 0 pads a map with fewer peaks; its point repeats the strongest)."""
    logits = logits.float()
    n, h, w = logits.shape
    probs = torch.softmax(logits.flatten(1), dim=-1).view(n, 1, h, w)
    size = 2 * radius + 1
    mass = F.avg_pool2d(probs, size, 1, radius, count_include_pad=True)[:, 0] * size**2
    peak = logits == F.max_pool2d(logits[:, None], size, 1, radius)[:, 0]
    scored = torch.where(peak, mass, torch.full_like(mass, -1.0)).flatten(1)
    top, where = scored.topk(min(k, h * w), dim=-1)
    where = torch.where(top >= 0, where, where[:, :1])
    py, px = where // w, where % w
    points = subpixel(logits[:, None].expand(n, where.shape[1], h, w), px, py)
    return points, top.clamp(min=0.0)


def add_bridges(
    points: np.ndarray, mass: np.ndarray, anchors: np.ndarray, bridge: float
) -> tuple[np.ndarray, np.ndarray]:
    """Candidate points (L, k, 2) and mass (L, k) with one more candidate per level (L >= 3), at mass
    `bridge`: the midpoint of its neighbours' `anchors` (L, 2), or for an end level the step between the
    next two carried on."""
    if len(anchors) < 3:
        return points, mass
    guess = np.concatenate(
        [
            2 * anchors[1:2] - anchors[2:3],
            (anchors[:-2] + anchors[2:]) / 2,
            2 * anchors[-2:-1] - anchors[-3:-2],
        ]
    )
    return (
        np.concatenate([points, guess[:, None]], axis=1),
        np.concatenate([mass, np.full((len(mass), 1), bridge)], axis=1),
    )


def decode_levels(
    points: np.ndarray,
    mass: np.ndarray,
    to_patient: Callable[[np.ndarray], np.ndarray],
    chains: LevelChains,
    reference: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """One condition's points (L, 2) and their mass (L,), top level first, from its levels' candidate
    points (L, k, 2) and mass (L, k); `to_patient` maps points (L, k, 2) to patient mm (L, k, 3). The
    chain through the peaks first, then (with bridges) again with the bridges its points make.
    `reference` (L, 3): where the other chains put each level (NaN: nowhere agreed), weighed by
    `chains.consensus`."""
    at = np.arange(len(points))

    def chain(points: np.ndarray, mass: np.ndarray) -> np.ndarray:
        positions = to_patient(points)
        prior = None
        typical = typical_gap(positions[:, 0])
        if reference is not None and chains.consensus is not None and typical is not None:
            off = sagittal_distance(positions, reference[:, None]) / typical
            prior = np.where(np.isnan(off), 0.0, -chains.consensus * off**2)
        return chain_levels(positions, mass, chains.stiffness, prior=prior)

    pick = chain(points, mass)
    if chains.bridge is not None:
        points, mass = add_bridges(points, mass, points[at, pick], chains.bridge)
        pick = chain(points, mass)
    return points[at, pick], mass[at, pick]


def sagittal_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Distance (mm) between patient points (..., 3) across the sagittal plane (posterior and superior
    only): the canal and the two foramina of one level lie side by side."""
    return np.linalg.norm((a - b)[..., 1:], axis=-1)


def consensus_references(chains: Mapping[str, np.ndarray], agree: float = AGREE) -> dict[str, np.ndarray]:
    """Per condition, where the study's other sagittal chains put each level: `chains` maps a condition
    to its levels' patient positions (L, 3) (NaN where not found); a condition's reference (L, 3) is the
    mean of the other two at the levels where those two lie within `agree` typical gaps of each other
    (NaN elsewhere, and everywhere for a study with fewer than three chains)."""
    gaps = {c: typical_gap(p) for c, p in chains.items()}
    found = {c: p for c, p in chains.items() if gaps[c] is not None}
    if len(found) != 3:
        return {}
    typical = float(np.median([gaps[c] for c in found]))
    out = {}
    for condition in found:
        a, b = (p for c, p in found.items() if c != condition)
        near = sagittal_distance(a, b) <= agree * typical
        out[condition] = np.where(near[:, None], (a + b) / 2, np.nan)
    return out


def chain_levels(
    positions: np.ndarray,
    mass: np.ndarray,
    stiffness: float = LevelChains.stiffness,
    min_gap: float = MIN_GAP,
    prior: np.ndarray | None = None,
) -> np.ndarray:
    """Candidate index (L,) per level, top level first: the best chain through `positions` (L, k, 3)
    (patient mm) scored by `mass` (L, k) and `prior` (L, k, added to the log masses) as the module says;
    each level's strongest candidate where no chain keeps the levels apart (a series whose top candidates
    are not in order at all)."""
    n_levels = positions.shape[0]
    best = np.zeros(n_levels, dtype=np.int64)
    typical = typical_gap(positions[:, 0])
    if n_levels < 2 or typical is None:
        return best
    unary = np.log(np.clip(mass, 1e-12, None)) + (0.0 if prior is None else prior)
    score = unary[0]
    back = []
    for level in range(1, n_levels):
        step = positions[level - 1][:, None] - positions[level][None]  # (k above, k here, 3)
        gap = np.linalg.norm(step, axis=-1)
        ok = ((step @ SUPERIOR) > 0) & (gap >= min_gap * typical)
        link = np.where(ok, -stiffness * ((gap - typical) / typical) ** 2, -np.inf)
        total = score[:, None] + link
        back.append(total.argmax(axis=0))
        score = total.max(axis=0) + unary[level]
    if not np.isfinite(score.max()):
        return best
    best[-1] = int(score.argmax())
    for level in range(n_levels - 1, 0, -1):
        best[level - 1] = back[level - 1][best[level]]
    return best


def typical_gap(points: np.ndarray) -> float | None:
    """The gap between neighbouring levels that the points (L, 3), top level first, suggest: the median
    over every pair in order of their distance per level between them (robust to a level or two on the
    wrong disc, where the median of neighbours' gaps is not); None when no pair is in order."""
    i, j = np.triu_indices(len(points), k=1)
    step = points[i] - points[j]
    ordered = (step @ SUPERIOR) > 0
    if not ordered.any():
        return None
    return float(np.median(np.linalg.norm(step[ordered], axis=-1) / (j - i)[ordered]))
