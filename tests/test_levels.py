"""Level chains (localization.levels): a condition's five levels decoded together."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from spinegrade.localization.levels import (
    LevelChains,
    add_bridges,
    chain_levels,
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


def test_a_level_with_no_peak_on_its_disc_takes_the_bridge_its_neighbours_make():
    discs = torch.tensor([[40.0, 10.0 + 10.0 * i] for i in range(5)])  # (x, y) pixels, head at the top
    points = torch.stack([discs, discs + torch.tensor([25.0, 0.0])], dim=1)  # a weak stray peak beside each
    points[0, 0] = torch.tensor([40.0, 0.0])  # L1/L2's map peaks on T12/L1 only
    mass = torch.tensor([[0.6, 0.001]] * 5)
    chains = LevelChains()  # the defaults locate_study uses
    assert chains.bridge is not None
    bridged, bridged_mass = add_bridges(points, mass, chains.bridge)
    assert bridged.shape == (5, 3, 2) and bridged_mass[:, 2].tolist() == pytest.approx([chains.bridge] * 5)
    assert bridged[0, 2].tolist() == pytest.approx([40.0, 10.0])  # L2/L3 - L3/L4 carried on from L2/L3
    assert bridged[2, 2].tolist() == pytest.approx([40.0, 30.0])  # between its neighbours

    def patient(xy: torch.Tensor) -> np.ndarray:  # a sagittal plane: x posterior, y down the image
        return np.stack([np.zeros(xy.shape[:-1]), xy[..., 0].numpy(), -xy[..., 1].numpy()], axis=-1)

    assert chain_levels(patient(points), mass.numpy()).tolist() == [0] * 5  # no better peak of its own
    assert chain_levels(patient(bridged), bridged_mass.numpy(), chains.stiffness).tolist() == [2, 0, 0, 0, 0]
    points[0, 0] = torch.tensor([40.0, 7.0])  # a gap 1.3 times the others: its own peak is kept
    bridged, bridged_mass = add_bridges(points, mass, chains.bridge)
    assert chain_levels(patient(bridged), bridged_mass.numpy(), chains.stiffness).tolist() == [0] * 5
