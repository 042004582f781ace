"""Grade located points with one or many classifier runs: cut each run's crops, classify, average.

A run is a folder with best.safetensors + best.json (`spinegrade train`); a folder holding several runs
(folds, architecture x imbalance grids) stands for all of them. Runs trained on different crop settings
(k, size, crop_mm) each get their own crops, cut once per distinct setting with the training code.
The ensemble's prediction is the mean of the runs' probabilities (and of the side-mirrored crops with
--tta: mirroring left <-> right and swapping the left/right condition, as training's side flip does, is
label-preserving, so both views predict the same target).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from spinegrade.crops.extract import crops_for_points, resolve_crop_mm
from spinegrade.errors import DataError
from spinegrade.vocab import CONDITIONS, LEVELS, SEVERITIES

if TYPE_CHECKING:
    import torch

    from spinegrade.data.series import Series
    from spinegrade.models.classifier import SpineClassifier

WEIGHTS_FILE = "best.safetensors"


@dataclass(frozen=True)
class CropSpec:
    """The crop settings a run was trained on (hashable: runs sharing one share their crops)."""

    k: int
    size: int
    crop_mm: tuple[tuple[str, float], ...]

    @classmethod
    def of_info(cls, info: Mapping[str, Any]) -> CropSpec:
        return cls(
            int(info["k"]), int(info["size"]), tuple(sorted(resolve_crop_mm(info.get("crop_mm")).items()))
        )


@dataclass(frozen=True)
class GradingRun:
    """One trained classifier, ready for inference."""

    path: Path
    model: SpineClassifier
    info: dict[str, Any]
    spec: CropSpec


def find_runs(paths: Sequence[str | os.PathLike]) -> list[Path]:
    """The run folders named by `paths`: each path itself when it holds best.safetensors, else every
    folder below it that does (sorted). DataError for a path without any."""
    runs: list[Path] = []
    for path in map(Path, paths):
        if not path.is_dir():
            raise DataError(f"run folder {path} does not exist; pass a folder written by `spinegrade train`")
        found = (
            [path] if (path / WEIGHTS_FILE).is_file() else sorted(p.parent for p in path.rglob(WEIGHTS_FILE))
        )
        if not found:
            raise DataError(f"{path} holds no {WEIGHTS_FILE} (in itself or below); train a classifier first")
        runs += [p for p in found if p not in runs]
    return runs


def cut_crops(series_by_id: Mapping[str, Series], points: pd.DataFrame, spec: CropSpec) -> np.ndarray:
    """Crops (N, k, size, size) of located points (series_id, condition, slice_index, x, y), in row order."""
    crops = np.empty((len(points), spec.k, spec.size, spec.size), dtype=np.float32)
    keys = points["series_id"].astype(str).to_numpy()
    for series_id in dict.fromkeys(keys):
        rows = np.flatnonzero(keys == series_id)
        crops[rows] = crops_for_points(
            series_by_id[series_id], points.iloc[rows], k=spec.k, size=spec.size, crop_mm=dict(spec.crop_mm)
        )
    return crops


class Ensemble:
    """Classifier runs averaged; inference in the calling process, on `device`, `batch_size` crops at once."""

    def __init__(
        self, runs: Sequence[GradingRun], *, device: str = "cpu", batch_size: int = 64, tta: bool = False
    ) -> None:
        if not runs:
            raise DataError("no classifier run to grade with")
        if batch_size < 1:
            raise DataError(f"batch size must be at least 1, got {batch_size}")
        self.runs, self.device, self.batch_size, self.tta = list(runs), device, batch_size, tta

    @classmethod
    def load(
        cls,
        paths: Sequence[str | os.PathLike],
        *,
        device: str = "cpu",
        batch_size: int = 64,
        tta: bool = False,
    ) -> Ensemble:
        """Load every run found under `paths` (see find_runs)."""
        from spinegrade.training.checkpoint import load_run

        runs = []
        for path in find_runs(paths):
            model, info = load_run(path, device=device)
            try:
                spec = CropSpec.of_info(info)
            except (KeyError, TypeError, ValueError) as exc:
                raise DataError(f"{path}/best.json lacks the crop settings k, size: {exc}") from None
            runs.append(GradingRun(path, model, info, spec))
        return cls(runs, device=device, batch_size=batch_size, tta=tta)

    @property
    def specs(self) -> list[CropSpec]:
        """The distinct crop settings of the runs, in run order."""
        return list(dict.fromkeys(run.spec for run in self.runs))

    def predict(self, crops: Mapping[CropSpec, np.ndarray], points: pd.DataFrame) -> np.ndarray:
        """Mean probabilities (N, 3) in SEVERITIES order of the points' crops (one array per spec)."""
        import torch

        condition = torch.tensor([CONDITIONS.index(c) for c in points["condition"]], dtype=torch.int64)
        level = torch.tensor([LEVELS.index(lv) for lv in points["level"]], dtype=torch.int64)
        total = np.zeros((len(points), len(SEVERITIES)), dtype=np.float64)
        for run in self.runs:
            total += self._run_probs(run.model, crops[run.spec], condition, level)
        return total / len(self.runs)

    def _run_probs(
        self, model: SpineClassifier, crops: np.ndarray, condition: torch.Tensor, level: torch.Tensor
    ) -> np.ndarray:
        import torch

        from spinegrade.training.augment import side_flip

        out = []
        with torch.inference_mode():
            for start in range(0, len(crops), self.batch_size):
                part = slice(start, start + self.batch_size)
                x = torch.from_numpy(crops[part]).to(self.device)
                c, lv = condition[part].to(self.device), level[part].to(self.device)
                probs = model.predict_proba(x, c, lv)
                if self.tta:
                    flipped, mirrored = side_flip(x, c, torch.ones_like(c, dtype=torch.bool))
                    probs = (probs + model.predict_proba(flipped, mirrored, lv)) / 2
                out.append(probs.double().cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, len(SEVERITIES)))
