"""Grade located points with one or many classifier runs: cut each run's crops, classify, average.

A run is a folder with best.safetensors + best.json (`spinegrade train`); a folder holding several runs
(folds, architecture x imbalance grids) stands for all of them, or, when it holds an ensemble.json
({"members": [{"path": "fold0", "weight": 1.0}, ...], "space": "logit"}), for the members it names with
their weights. Runs trained on different crop settings (k, size, crop_mm) each get their own crops, cut
once per distinct setting with the training code.

Each run's probabilities are first moved back to the score's class distribution with the prior-shift
factors of its best.json (imbalance.prior_shift), then the runs are averaged in probability space (the
default) or logit space (evaluation.ensemble), weighted or not. With --tta the side-mirrored crops
(left <-> right, the condition swapped, as training's side flip does) are averaged in too; that is refused
for runs whose best.json does not say they were trained with side_flip, as they never saw mirrored views.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from spinegrade.crops.extract import crops_for_points, resolve_crop_mm
from spinegrade.errors import DataError
from spinegrade.evaluation.ensemble import SPACES, average_probabilities, model_weights
from spinegrade.training.imbalance import apply_prior_shift
from spinegrade.vocab import CONDITIONS, LEVELS, SEVERITIES

if TYPE_CHECKING:
    import torch

    from spinegrade.data.series import Series
    from spinegrade.models.classifier import SpineClassifier
    from spinegrade.onnxrt import OnnxClassifier

WEIGHTS_FILE = "best.safetensors"
ENSEMBLE_FILE = "ensemble.json"


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
    model: SpineClassifier | OnnxClassifier  # torch, or its ONNX Runtime stand-in
    info: dict[str, Any]
    spec: CropSpec
    weight: float = 1.0

    @property
    def prior_shift(self) -> np.ndarray | None:
        """The run's prior-shift factors (5, 3) from best.json, or None (runs trained before them)."""
        factors = (self.info.get("prior_shift") or {}).get("factors")
        return None if factors is None else np.asarray(factors, dtype=np.float64)

    @property
    def mirrored(self) -> bool:
        """Whether the run was trained on left-right mirrored views (best.json side_flip): TTA needs it."""
        return self.info.get("side_flip") is True


def read_ensemble_file(folder: Path) -> tuple[list[tuple[Path, float]], str | None]:
    """(member run folders with weights, space or None) of folder/ensemble.json (see the module doc)."""
    path = folder / ENSEMBLE_FILE
    try:
        data = json.loads(path.read_text())
        members = [(folder / str(m["path"]), float(m.get("weight", 1.0))) for m in data["members"]]
        space = data.get("space")
    except (OSError, json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise DataError(f"{path}: not an ensemble file ({type(exc).__name__}: {exc})") from None
    if not members or (space is not None and space not in SPACES):
        raise DataError(f"{path}: give at least one member and a space of {', '.join(SPACES)}")
    return members, space


def find_members(paths: Sequence[str | os.PathLike]) -> tuple[list[tuple[Path, float]], str | None]:
    """The run folders named by `paths`, each with its weight, and the space an ensemble.json asks for.

    A path holding best.safetensors is one run; one holding ensemble.json is its members; any other
    folder is every folder below it with best.safetensors (sorted), weight 1. DataError for a path
    without any.
    """
    members: list[tuple[Path, float]] = []
    space = None
    for path in map(Path, paths):
        if not path.is_dir():
            raise DataError(f"run folder {path} does not exist; pass a folder written by `spinegrade train`")
        if (path / WEIGHTS_FILE).is_file():
            found = [(path, 1.0)]
        elif (path / ENSEMBLE_FILE).is_file():
            found, space = read_ensemble_file(path)
            missing = [str(p) for p, _ in found if not (p / WEIGHTS_FILE).is_file()]
            if missing:
                raise DataError(f"{path / ENSEMBLE_FILE} names run(s) without {WEIGHTS_FILE}: {missing[0]}")
        else:
            found = [(p.parent, 1.0) for p in sorted(path.rglob(WEIGHTS_FILE))]
        if not found:
            raise DataError(f"{path} holds no {WEIGHTS_FILE} (in itself or below); train a classifier first")
        members += [m for m in found if m[0] not in [p for p, _ in members]]
    return members, space


def find_runs(paths: Sequence[str | os.PathLike]) -> list[Path]:
    """The run folders named by `paths` (see find_members)."""
    return [path for path, _ in find_members(paths)[0]]


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
        self,
        runs: Sequence[GradingRun],
        *,
        device: str = "cpu",
        batch_size: int = 64,
        tta: bool = False,
        space: str = "probability",
        prior_shift: bool = True,
    ) -> None:
        if not runs:
            raise DataError("no classifier run to grade with")
        if batch_size < 1:
            raise DataError(f"batch size must be at least 1, got {batch_size}")
        if space not in SPACES:
            raise DataError(f"ensemble space {space!r} unknown; use {' or '.join(SPACES)}")
        unflipped = [str(run.path) for run in runs if not run.mirrored]
        if tta and unflipped:
            raise DataError(
                f"--tta averages left-right mirrored crops, but {len(unflipped)} run(s) were not trained on "
                f"mirrored views (best.json side_flip is not true), e.g. {unflipped[0]}; predict without "
                "--tta or use runs trained with `spinegrade train --side-flip`"
            )
        self.runs, self.device, self.batch_size, self.tta = list(runs), device, batch_size, tta
        self.space, self.prior_shift = space, prior_shift
        self.weights = model_weights([run.weight for run in self.runs], len(self.runs))

    @classmethod
    def load(
        cls,
        paths: Sequence[str | os.PathLike],
        *,
        device: str = "cpu",
        batch_size: int = 64,
        tta: bool | None = False,
        space: str | None = None,
        weights: Sequence[float] | None = None,
    ) -> Ensemble:
        """Load every run found under `paths` (see find_members). `space` and `weights` (one per run)
        override those of an ensemble.json; the default space is probability, never worse than logit end to
        end (measured: docs/results.md#variants). tta None: on when every run was trained on mirrors."""
        from spinegrade.training.checkpoint import load_run

        members, file_space = find_members(paths)
        if weights is not None:
            if len(weights) != len(members):
                raise DataError(f"{len(weights)} ensemble weight(s) given for {len(members)} run(s)")
            members = [(path, float(w)) for (path, _), w in zip(members, weights, strict=True)]
        runs = []
        for path, weight in members:
            model, info = load_run(path, device=device)
            try:
                spec = CropSpec.of_info(info)
            except (KeyError, TypeError, ValueError) as exc:
                raise DataError(f"{path}/best.json lacks the crop settings k, size: {exc}") from None
            runs.append(GradingRun(path, model, info, spec, weight))
        space = space or file_space or "probability"
        if tta is None:
            tta = all(run.mirrored for run in runs)
        return cls(runs, device=device, batch_size=batch_size, tta=tta, space=space)

    @property
    def shifts(self) -> bool:
        """Whether the prior-shift correction changes any run's probabilities (factors not uniform)."""
        return self.prior_shift and any(
            f is not None and not np.allclose(f, f[:, :1]) for f in (run.prior_shift for run in self.runs)
        )

    @property
    def mirrorable(self) -> bool:
        """Whether every run was trained on left-right mirrored views (what --tta needs)."""
        return all(run.mirrored for run in self.runs)

    def _with(self, **changes: Any) -> Ensemble:
        """The same runs (shared, not reloaded) graded with some settings changed."""
        settings = {
            "device": self.device,
            "batch_size": self.batch_size,
            "tta": self.tta,
            "space": self.space,
            "prior_shift": self.prior_shift,
        }
        return Ensemble(self.runs, **{**settings, **changes})

    def without_prior_shift(self) -> Ensemble:
        """The same runs graded without their prior-shift correction."""
        return self._with(prior_shift=False)

    def with_tta(self) -> Ensemble:
        """The same runs graded with their left-right mirrored crops averaged in (DataError unless
        mirrorable)."""
        return self._with(tta=True)

    def describe(self) -> dict[str, Any]:
        """Which models make the ensemble and how they are combined (for the prediction's records)."""
        return {
            "members": [
                {"path": str(run.path), "weight": float(w), "arch": run.info.get("arch")}
                for run, w in zip(self.runs, self.weights, strict=True)
            ],
            "space": self.space,
            "tta": self.tta,
        }

    @property
    def specs(self) -> list[CropSpec]:
        """The distinct crop settings of the runs, in run order."""
        return list(dict.fromkeys(run.spec for run in self.runs))

    def predict(self, crops: Mapping[CropSpec, np.ndarray], points: pd.DataFrame) -> np.ndarray:
        """Mean probabilities (N, 3) in SEVERITIES order of the points' crops (one array per spec)."""
        import torch

        condition = torch.tensor([CONDITIONS.index(c) for c in points["condition"]], dtype=torch.int64)
        level = torch.tensor([LEVELS.index(lv) for lv in points["level"]], dtype=torch.int64)
        per_run = [
            apply_prior_shift(
                self._run_probs(run.model, crops[run.spec], condition, level),
                condition.numpy(),
                run.prior_shift if self.prior_shift else None,
            )
            for run in self.runs
        ]
        return average_probabilities(per_run, self.weights, self.space)

    def _run_probs(
        self,
        model: SpineClassifier | OnnxClassifier,
        crops: np.ndarray,
        condition: torch.Tensor,
        level: torch.Tensor,
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
                    views = (probs, model.predict_proba(flipped, mirrored, lv))
                    probs = torch.from_numpy(
                        average_probabilities([v.double().cpu().numpy() for v in views], space=self.space)
                    )
                out.append(probs.double().cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, len(SEVERITIES)))
