"""Inference: find the 25 target points of a study with the trained locators.

The sagittal locators give the spinal-canal points (Sagittal T2/STIR) and the foraminal points (Sagittal
T1) with their slices; each condition's five levels are decoded together, and the three chains of a study
checked against each other (localization.levels), before the refiners refine each point. The level of an
axial slice is not in the axial images' pixels, so the axial step goes through patient coordinates: each
level's canal point (or, without a T2 series, the midpoint of its two foraminal points) is mapped into
every axial series; the series whose nearest slice plane is closest to the point (and that holds it within
its extent) gives the slice, and the axial locator finds the left and right subarticular points on it.
Coordinates are in the read Series' pixel grid (x = column, y = row).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Final

import numpy as np
import pandas as pd
import torch
from safetensors.torch import load_file

from spinegrade.data.series import Series, slice_through_point
from spinegrade.errors import DataError
from spinegrade.localization.dataset import series_stack, slice_inputs, volume_input
from spinegrade.localization.levels import LevelChains, consensus_references, decode_levels, level_candidates
from spinegrade.localization.model import LocatorNet, build_net
from spinegrade.localization.refine import refine_rows
from spinegrade.localization.settings import LocatorSettings
from spinegrade.localization.targets import (
    REFINER_OF,
    REFINERS,
    TASK_BY_SLUG,
    TASKS,
    Task,
    decode_heatmaps,
    decode_slices,
    depth_to_slice,
    rescale,
)
from spinegrade.vocab import LEVELS

if TYPE_CHECKING:
    from spinegrade.onnxrt import OnnxLocatorNet

LOCATION_COLUMNS: Final = (
    "condition",
    "level",
    "series_id",
    "instance_number",
    "slice_index",
    "x",
    "y",
    "confidence",
)
SPINAL: Final = "spinal_canal_stenosis"
FORAMINAL: Final = ("left_neural_foraminal_narrowing", "right_neural_foraminal_narrowing")


@dataclass(frozen=True)
class LocatorModel:
    """One trained locator in eval mode with the settings it was trained with."""

    task: Task
    net: LocatorNet | OnnxLocatorNet  # torch, or its ONNX Runtime stand-in
    settings: LocatorSettings


@dataclass(frozen=True)
class Locator:
    """The trained locators found in a folder (any of the three may be missing) and the device they run on."""

    models: dict[str, LocatorModel]
    device: torch.device


def load_locator(directory: str | Path, device: str | torch.device = "cpu") -> Locator:
    """Load every OUT/<slug>.safetensors + .json that train-locator wrote (refiners included); DataError
    when there is no locator."""
    directory = Path(directory)
    models = {}
    for task in (*TASKS, *REFINERS):
        weights, info_file = directory / f"{task.slug}.safetensors", directory / f"{task.slug}.json"
        if not weights.is_file():
            continue
        if not info_file.is_file():
            raise DataError(f"{weights} has no {info_file.name} beside it; re-run train-locator")
        try:
            info = json.loads(info_file.read_text())
            points, settings = info["points"], LocatorSettings.from_saved(info["settings"])
        except (ValueError, KeyError, TypeError) as exc:
            raise DataError(
                f"{info_file} is not a locator description ({exc}); re-run train-locator"
            ) from exc
        if [tuple(p) for p in points] != list(task.points):
            raise DataError(f"{info_file} names points {points}, this version expects {task.points}")
        net = build_net(task, settings)
        try:
            net.load_state_dict(load_file(weights))
        except (RuntimeError, OSError) as exc:
            raise DataError(f"{weights} does not fit {info_file.name} ({exc}); re-run train-locator") from exc
        models[task.slug] = LocatorModel(task, net.to(device).eval(), settings)
    if not any(task.slug in models for task in TASKS):
        raise DataError(f"{directory} holds no locator (<series type>.safetensors); run train-locator first")
    return Locator(models, torch.device(device))


def locate_study(
    series_by_type: Mapping[str, Sequence[Series]],
    locator: Locator,
    chains: LevelChains | None = LevelChains(),
) -> pd.DataFrame:
    """The located points of one study: one row per (condition, level) found, columns LOCATION_COLUMNS.

    `series_by_type` maps a series description ('Sagittal T1', 'Sagittal T2/STIR', 'Axial T2') to the
    study's series of that type. A missing series type (or locator) leaves its rows out, so callers can
    fall back to priors; with several series of one sagittal type the most confident wins per point, and
    a refiner of the task (when trained) refines it. `chains`: how the levels are decoded
    (localization.levels): each sagittal chain alone first, then, with `chains.consensus`, again with the
    study's other chains as references; None decodes each point alone (its heatmap's arg-max).
    """
    rows: list[dict] = []
    by_id = {s.series_id: s for group in series_by_type.values() for s in group}
    with torch.inference_mode():
        outputs = {
            task.slug: _forward(model, series_by_type.get(task.series_type, []), locator.device)
            for task in TASKS
            if task.volume and (model := locator.models.get(task.slug)) is not None
        }
        found = {slug: _choose(TASK_BY_SLUG[slug], out, chains) for slug, out in outputs.items()}
        if chains is not None and chains.consensus is not None:
            references = consensus_references(_chain_positions(found, by_id))
            if references:
                found = {
                    slug: _choose(TASK_BY_SLUG[slug], out, chains, references)
                    for slug, out in outputs.items()
                }
        for slug, points in found.items():
            refiner = locator.models.get(REFINER_OF[slug].slug)
            series_list = series_by_type.get(TASK_BY_SLUG[slug].series_type, [])
            rows += points if refiner is None else refine_rows(refiner, series_list, points, locator.device)
        axial = locator.models.get("axial_t2")
        series_list = series_by_type.get(axial.task.series_type, []) if axial is not None else []
        if axial is not None and series_list:
            anchors = level_anchors(rows, by_id)
            rows += locate_axial(axial, series_list, anchors, locator.device)
    return pd.DataFrame(rows, columns=list(LOCATION_COLUMNS))


@dataclass(frozen=True)
class _SeriesOutput:
    """A volume locator's output on one series: heatmaps (P, H, W), each point's slice and its confidence."""

    series: Series
    heatmaps: torch.Tensor
    indices: np.ndarray
    slice_confidence: np.ndarray


def _forward(model: LocatorModel, series_list: Sequence[Series], device: torch.device) -> list[_SeriesOutput]:
    """The locator run on each series of its type."""
    s = model.settings
    out = []
    for series in series_list:
        volume = volume_input(series_stack(series, s.size), s.depth)
        heatmaps, slice_logits = model.net(volume[None].to(device))
        assert slice_logits is not None  # volume tasks have a slice head
        position, slice_confidence = decode_slices(slice_logits[0].cpu())
        n = len(series)
        indices = np.clip(np.rint(depth_to_slice(position.numpy(), n, s.depth)), 0, n - 1).astype(int)
        out.append(_SeriesOutput(series, heatmaps[0].cpu(), indices, slice_confidence.numpy()))
    return out


def _choose(
    task: Task,
    outputs: Sequence[_SeriesOutput],
    chains: LevelChains | None,
    references: Mapping[str, np.ndarray] | None = None,
) -> list[dict]:
    """One row per point of a volume task: per point, the most confident of the series."""
    best: dict[tuple[str, str], dict] = {}
    for out in outputs:
        xs, ys, confidence = _decode_points(out.heatmaps, out.series, out.indices, chains, task, references)
        scores = confidence * out.slice_confidence
        for p, (condition, level) in enumerate(task.points):
            if (condition, level) not in best or scores[p] > best[(condition, level)]["confidence"]:
                best[(condition, level)] = _row(
                    condition, level, out.series, out.indices[p], float(xs[p]), float(ys[p]), float(scores[p])
                )
    return list(best.values())


def _chain_positions(
    found: Mapping[str, Sequence[dict]], by_id: Mapping[str, Series]
) -> dict[str, np.ndarray]:
    """Patient positions (L, 3) of each sagittal condition's located levels (NaN where not found)."""
    out: dict[str, np.ndarray] = {}
    for (condition, level), where in _patient_points(
        [r for rows in found.values() for r in rows], by_id
    ).items():
        out.setdefault(condition, np.full((len(LEVELS), 3), np.nan))[LEVELS.index(level)] = where
    return out


def _patient_points(rows: Sequence[dict], by_id: Mapping[str, Series]) -> dict[tuple[str, str], np.ndarray]:
    """Patient position (3,) of each located row, by (condition, level)."""
    return {
        (r["condition"], r["level"]): by_id[str(r["series_id"])].pixel_to_patient(
            r["slice_index"], r["x"], r["y"]
        )
        for r in rows
    }


def _decode_points(
    heatmaps: torch.Tensor,
    series: Series,
    indices: np.ndarray,
    chains: LevelChains | None,
    task: Task,
    references: Mapping[str, np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(x, y, confidence) per point (P,) of a series' heatmaps (P, H, W), x and y in the series' pixels;
    `indices` are the points' slices (where the level chains measure their gaps); `references` a
    condition's consensus positions (levels.consensus_references)."""
    rows_px, cols_px = series.pixels.shape[1:]
    h, w = heatmaps.shape[-2:]
    if chains is None:
        xy, confidence = decode_heatmaps(heatmaps)
        x, y = rescale(xy[:, 0].numpy(), w, cols_px), rescale(xy[:, 1].numpy(), h, rows_px)
        return x, y, confidence.numpy()
    candidates, mass = level_candidates(heatmaps)
    xs = rescale(candidates[..., 0].numpy(), w, cols_px)  # (P, k)
    ys = rescale(candidates[..., 1].numpy(), h, rows_px)
    points, scores = np.stack([xs, ys], axis=-1), mass.numpy()
    out, out_scores = np.empty((len(points), 2)), np.empty(len(points))
    for condition, chain in zip(task.conditions, _chains(task), strict=True):
        to_patient = partial(_to_patient, series, indices[chain, None])
        reference = (references or {}).get(condition)
        out[chain], out_scores[chain] = decode_levels(
            points[chain], scores[chain], to_patient, chains, reference
        )
    return out[:, 0], out[:, 1], out_scores


def _to_patient(series: Series, slices: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Patient positions (..., 3) of pixel points (..., 2) as (x, y) on `slices` (broadcast)."""
    return series.pixel_to_patient(slices, points[..., 0], points[..., 1])


def _chains(task: Task) -> list[slice]:
    """The heatmap channels of each condition of a volume task (condition-major, LEVELS order)."""
    return [slice(c * len(LEVELS), (c + 1) * len(LEVELS)) for c in range(len(task.conditions))]


def level_anchors(rows: Sequence[dict], series_by_id: Mapping[str, Series]) -> dict[str, np.ndarray]:
    """Patient position (3,) of each located level: its canal point, else the mean of its foraminal points."""
    found = _patient_points(rows, series_by_id)
    anchors = {}
    for level in LEVELS:
        if (SPINAL, level) in found:
            anchors[level] = found[(SPINAL, level)]
        elif foramina := [found[(c, level)] for c in FORAMINAL if (c, level) in found]:
            anchors[level] = np.mean(foramina, axis=0)
    return anchors


def locate_axial(
    model: LocatorModel, axials: Sequence[Series], anchors: Mapping[str, np.ndarray], device: torch.device
) -> list[dict]:
    """Left and right subarticular points on the axial slice through each anchored level."""
    s = model.settings
    found = {lv: slice_through_point(axials, p) for lv, p in anchors.items()}
    picks = {lv: pick for lv, pick in found.items() if pick is not None}
    if not picks:
        return []
    chosen = list(picks.values())
    inputs = torch.empty(len(chosen), s.context, s.size, s.size)
    for i in dict.fromkeys(i for i, _ in chosen):  # each series resizes only the slices its picks use
        mine = [k for k, (j, _) in enumerate(chosen) if j == i]
        inputs[mine] = slice_inputs(axials[i], np.array([chosen[k][1] for k in mine]), s.size, s.context)
    heatmaps, _ = model.net(inputs.to(device))
    xy, confidence = decode_heatmaps(heatmaps.cpu())
    h, w = heatmaps.shape[-2:]
    rows = []
    for k, (level, (i, index)) in enumerate(picks.items()):
        series = axials[i]
        rows_px, cols_px = series.pixels.shape[1:]
        for p, (condition, _) in enumerate(model.task.points):
            x = rescale(float(xy[k, p, 0]), w, cols_px)
            y = rescale(float(xy[k, p, 1]), h, rows_px)
            rows.append(_row(condition, level, series, index, x, y, float(confidence[k, p])))
    return rows


def _row(
    condition: str, level: str, series: Series, index: int, x: float, y: float, confidence: float
) -> dict:
    return {
        "condition": condition,
        "level": level,
        "series_id": int(series.series_id),
        "instance_number": int(series.instance_numbers[index]),
        "slice_index": int(index),
        "x": float(x),
        "y": float(y),
        "confidence": float(confidence),
    }
