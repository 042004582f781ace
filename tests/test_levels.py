"""Level chains (localization.levels): a condition's five levels decoded together."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from spinegrade.localization.levels import (
    LevelChains,
    add_bridges,
    chain_levels,
    consensus_references,
    decode_levels,
    level_candidates,
    typical_gap,
)
from spinegrade.localization.targets import gaussian_heatmaps

GAP = 30.0  # mm between neighbouring discs


def _two_peaks(strong: tuple[float, float], weak: tuple[float, float], share: float) -> torch.Tensor:
    """Log of a heatmap (1, 48, 48) with `share` of its mass on the weak peak."""
    maps = gaussian_heatmaps(torch.tensor([strong, weak], dtype=torch.float64), 48, 48, sigma=1.5)
    return torch.log((1 - share) * maps[0] + share * maps[1] + 1e-12)[None]


def test_candidates_are_the_peaks_with_their_mass_strongest_first():
    points, mass = level_candidates(_two_peaks((20.3, 10.0), (20.0, 30.6), share=0.3), k=3)
    assert points.shape == (1, 3, 2) and mass.shape == (1, 3)
    assert points[0, 0].numpy() == pytest.approx([20.3, 10.0], abs=0.05)
    assert points[0, 1].numpy() == pytest.approx([20.0, 30.6], abs=0.05)
    assert 0.5 < mass[0, 0].item() < 0.7  # most of the strong peak's 0.7 lies within 2 px of it
    assert mass[0, 0].item() / mass[0, 1].item() == pytest.approx(0.7 / 0.3, rel=0.02)
    assert mass[0, 2].item() < 1e-6  # no third peak: padded with no mass


def _spine(up: np.ndarray) -> np.ndarray:
    """Five discs GAP apart along `up` (patient space), top level first."""
    return np.array([[0.0, 0.0, 0.0]]) - np.arange(5)[:, None] * GAP * up[None]


@pytest.mark.parametrize("tilt", [0.0, 0.3])
def test_a_level_on_its_neighbours_disc_moves_to_its_second_peak(tilt: float):
    up = np.array([0.0, np.sin(tilt), np.cos(tilt)])  # a lordotic, tilted spine still runs head to foot
    discs = _spine(up)
    positions = np.repeat(discs[:, None], 2, axis=1)  # (5 levels, 2 candidates, 3)
    mass = np.array([[0.6, 0.01]] * 5)
    positions[3] = [discs[4], discs[3]]  # L4/L5's strongest peak is on L5/S1's disc
    mass[3] = [0.5, 0.4]
    assert chain_levels(positions, mass, stiffness=0.0).tolist() == [0, 0, 0, 1, 0]  # by order alone
    positions[3], mass[3] = discs[3], [0.6, 0.01]
    positions[0] = [discs[0] + GAP * up, discs[0]]  # L1/L2's strongest peak is on T12/L1 ...
    mass[0] = [0.55, 0.45]  # ... nearly as strong as the right one
    assert chain_levels(positions, mass, stiffness=0.0).tolist() == [0] * 5  # in order, so kept
    assert chain_levels(positions, mass, stiffness=2.0).tolist() == [1, 0, 0, 0, 0]  # a gap twice the others


def test_levels_are_ordered_in_patient_space_not_in_the_image():
    discs = _spine(np.array([0.0, 0.0, -1.0]))  # L1/L2 at the bottom: the chain must not be in order
    mass = np.array([[0.6, 0.4]] * 5)
    positions = np.stack([discs, discs[::-1]], axis=1)  # the second candidates run head to foot
    assert typical_gap(discs) is None
    assert chain_levels(positions, mass).tolist() == [0] * 5  # no top candidates in order: kept as they are
    upright = _spine(np.array([0.0, 0.0, 1.0]))
    assert typical_gap(upright) == pytest.approx(GAP)
    shifted = upright.copy()
    shifted[0] += GAP * np.array([0.0, 0.0, 1.0])  # one level on its neighbour's disc
    assert typical_gap(shifted) == pytest.approx(GAP, rel=0.3)  # a neighbours' median would say 2 * GAP


def _sagittal(points: np.ndarray) -> np.ndarray:
    """Patient mm of pixel points (..., 2) on a sagittal plane: x posterior, y down the image, 1 mm pixels."""
    return np.stack([np.zeros(points.shape[:-1]), points[..., 0], -points[..., 1]], axis=-1)


def test_a_level_with_no_peak_on_its_disc_takes_the_bridge_its_neighbours_make():
    discs = np.array([[40.0, 10.0 + 10.0 * i] for i in range(5)])  # (x, y) pixels, head at the top
    points = np.stack([discs, discs + np.array([25.0, 0.0])], axis=1)  # a weak stray peak beside each disc
    points[0, 0] = [40.0, 0.0]  # L1/L2's map peaks on T12/L1 only
    mass = np.array([[0.6, 0.001]] * 5)
    bridged, bridged_mass = add_bridges(points, mass, points[:, 0], bridge=0.3)
    assert bridged.shape == (5, 3, 2) and bridged_mass[:, 2].tolist() == pytest.approx([0.3] * 5)
    assert bridged[0, 2].tolist() == pytest.approx([40.0, 10.0])  # the step L3/L4 -> L2/L3 carried on
    assert bridged[2, 2].tolist() == pytest.approx([40.0, 30.0])  # between its neighbours

    chains = LevelChains()  # the defaults locate_study uses
    assert chain_levels(_sagittal(points), mass, chains.stiffness).tolist() == [0] * 5  # no other peak
    found, found_mass = decode_levels(points, mass, _sagittal, chains)
    assert np.allclose(found, discs) and found_mass[0] == chains.bridge
    assert decode_levels(points, mass, _sagittal, replace(chains, bridge=None))[0][0].tolist() == [40.0, 0.0]
    points[0, 0] = [40.0, 7.0]  # a gap 1.3 times the others: its own peak is kept
    assert decode_levels(points, mass, _sagittal, chains)[0][0].tolist() == [40.0, 7.0]


def test_bridges_come_from_the_first_chain_not_from_the_strongest_peaks():
    discs = np.array([[40.0, 10.0 + 10.0 * i] for i in range(5)])
    points = np.stack([discs, discs + np.array([25.0, 0.0])], axis=1)
    mass = np.array([[0.6, 0.001]] * 5)
    points[2, 0], mass[2] = [40.0, 25.0], [0.43, 0.001]  # L3/L4 halfway between L2/L3 and its own disc
    points[3], mass[3] = (
        [discs[2], discs[3]],
        [0.4, 0.39],
    )  # L4/L5: strongest on L3/L4, its own a close second
    chains = LevelChains()
    assert chains.bridge is not None
    found, _ = decode_levels(points, mass, _sagittal, chains)
    assert np.allclose(found, discs)  # the first chain puts L4/L5 on its disc; L3/L4 bridges to its own
    # Bridges from the strongest peaks would carry L3/L4 -> L4/L5's wrong step on to L5/S1 instead:
    from_tops = add_bridges(points, mass, points[:, 0], chains.bridge)
    pick = chain_levels(_sagittal(from_tops[0]), from_tops[1], chains.stiffness)
    assert not np.allclose(from_tops[0][np.arange(5), pick], discs)


def _level_row(up: float, side: float) -> np.ndarray:
    """Patient points (5, 3) of five discs GAP apart, the top one at height `up`, `side` mm to the left."""
    return np.array([[side, 0.0, up - GAP * i] for i in range(5)])


def test_two_chains_that_agree_are_the_third_ones_reference():
    spinal, left, right = (
        _level_row(GAP, 0.0),
        _level_row(0.0, 20.0),
        _level_row(0.0, -20.0),
    )  # canal a disc up
    right[4] = np.nan  # a level the right foraminal chain did not find
    refs = consensus_references({"spinal": spinal, "left": left, "right": right})
    assert np.allclose(refs["spinal"][:4], _level_row(0.0, 0.0)[:4])  # the foramina agree: their mean
    assert np.isnan(refs["spinal"][4]).all()  # one foramen only: no reference
    assert np.isnan(refs["left"]).all() and np.isnan(refs["right"]).all()  # the canal disagrees everywhere
    assert consensus_references({"spinal": spinal, "left": left}) == {}  # two chains: no majority


def test_a_chain_a_disc_off_follows_the_reference_the_other_two_agree_on():
    discs = np.array([[40.0, 10.0 + 10.0 * i] for i in range(5)])
    up = discs - np.array([0.0, 10.0])  # every level's strongest peak a disc too high: evenly spaced
    points = np.stack([up, discs], axis=1)
    mass = np.array([[0.6, 0.3]] * 5)
    chains = LevelChains()
    assert np.allclose(decode_levels(points, mass, _sagittal, chains)[0], up)  # alone: nothing to see
    reference = _sagittal(discs) + np.array([20.0, 0.0, 0.0])  # the foramina beside the right discs
    assert np.allclose(decode_levels(points, mass, _sagittal, chains, reference)[0], discs)
    off = replace(chains, consensus=None)
    assert np.allclose(decode_levels(points, mass, _sagittal, off, reference)[0], up)
