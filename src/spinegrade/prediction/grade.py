"""Grade located points with one or many classifier runs: cut each run's crops, classify, average.

A run is a folder with best.safetensors + best.json (`spinegrade train`); a folder holding several runs
(folds, architecture x imbalance grids) stands for all of them, or, when it holds an ensemble.json
({"members": [{"path": "fold0", "weight": 1.0}, ...], "space": "logit"}), for the members it names with
their weights. Runs trained on different crop settings (k, size, crop_mm, views) each get their own crops,
cut once per distinct setting with the training code; a run trained on axial views too (crops.views)
averages each sagittal target's two views.

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
from spinegrade.crops.views import (
    AXIAL,
    OWN,
    SAGITTAL_CONDITIONS,
    axial_plane,
    axial_view_crops,
    check_views,
)
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
    views: tuple[str, ...] = (OWN,)  # crops.views: a sagittal target's axial view too

    @classmethod
    def of_info(cls, info: Mapping[str, Any]) -> CropSpec:
        return cls(
            int(info["k"]),
            int(info["size"]),
            tuple(sorted(resolve_crop_mm(info.get("crop_mm")).items())),
            check_views(info.get("views") or (OWN,)),
        )

    def settings(self) -> dict[str, Any]:
        """The spec as the records write it (k, size, crop_mm, views)."""
        return {"k": self.k, "size": self.size, "crop_mm": dict(self.crop_mm), "views": list(self.views)}


@dataclass(frozen=True)
class Cut:
    """Crops of located points for one spec: crops (M, k, S, S), and per crop the point it grades (`owner`,
    a row of the points) and whether it lies in an axial plane (what a mirror flips); a point has one crop
    per view that could be cut."""

    crops: np.ndarray
    owner: np.ndarray
    axial: np.ndarray

    @classmethod
    def single(cls, crops: np.ndarray, conditions: Sequence[str]) -> Cut:
        """One crop per point, each in its condition's own series (crops in point order)."""
        return cls(crops, np.arange(len(crops), dtype=np.int64), axial_plane(conditions, None))

    @staticmethod
    def join(parts: Sequence[Cut], sizes: Sequence[int]) -> Cut:
        """Cuts of consecutive blocks of points (`sizes` points each) as one cut of all of them."""
        offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
        return Cut(
            np.concatenate([p.crops for p in parts]),
            np.concatenate([p.owner + o for p, o in zip(parts, offsets, strict=True)]),
            np.concatenate([p.axial for p in parts]),
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


def cut_crops(
    series_by_id: Mapping[str, Series],
    points: pd.DataFrame,
    spec: CropSpec,
    axials: Sequence[Series] = (),
) -> Cut:
    """The crops of located points (series_id, condition, slice_index, x, y) in each of the spec's views:
    first every point's own crop in row order, then the axial views that `axials` (the study's axial
    series) hold (crops.views)."""
    crops = np.empty((len(points), spec.k, spec.size, spec.size), dtype=np.float32)
    keys = points["series_id"].astype(str).to_numpy()
    crop_mm = dict(spec.crop_mm)
    extra: list[tuple[np.ndarray, np.ndarray]] = []
    for series_id in dict.fromkeys(keys):
        rows = np.flatnonzero(keys == series_id)
        own = series_by_id[series_id]
        crops[rows] = crops_for_points(own, points.iloc[rows], k=spec.k, size=spec.size, crop_mm=crop_mm)
        if AXIAL in spec.views:
            sagittal = rows[points["condition"].iloc[rows].isin(SAGITTAL_CONDITIONS).to_numpy()]
            view, instances = axial_view_crops(
                own, axials, points.iloc[sagittal], k=spec.k, size=spec.size, crop_mm=crop_mm
            )
            held = instances != ""
            extra.append((view[held], sagittal[held]))
    owner = np.concatenate([np.arange(len(points)), *(o for _, o in extra)]).astype(np.int64)
    axial = np.concatenate(
        [axial_plane(points["condition"], None), np.ones(len(owner) - len(points), dtype=bool)]
    )
    return Cut(np.concatenate([crops, *(c for c, _ in extra)]), owner, axial)


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

    def predict(self, crops: Mapping[CropSpec, Cut], points: pd.DataFrame) -> np.ndarray:
        """Mean probabilities (N, 3) in SEVERITIES order of the points from their crops (one Cut per spec):
        a point's views averaged within each run, then the runs averaged."""
        import torch

        condition = torch.tensor([CONDITIONS.index(c) for c in points["condition"]], dtype=torch.int64)
        level = torch.tensor([LEVELS.index(lv) for lv in points["level"]], dtype=torch.int64)
        per_run = []
        for run in self.runs:
            cut = crops[run.spec]
            owner = torch.from_numpy(cut.owner)
            probs = apply_prior_shift(
                self._run_probs(run.model, cut.crops, condition[owner], level[owner], cut.axial),
                condition[owner].numpy(),
                run.prior_shift if self.prior_shift else None,
            )
            per_run.append(views_averaged(probs, cut.owner, len(points)))
        return average_probabilities(per_run, self.weights, self.space)

    def _run_probs(
        self,
        model: SpineClassifier | OnnxClassifier,
        crops: np.ndarray,
        condition: torch.Tensor,
        level: torch.Tensor,
        axial: np.ndarray,
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
                    plane = torch.from_numpy(axial[part]).to(self.device)
                    flipped, mirrored = side_flip(x, c, torch.ones_like(c, dtype=torch.bool), plane)
                    views = (probs, model.predict_proba(flipped, mirrored, lv))
                    probs = torch.from_numpy(
                        average_probabilities([v.double().cpu().numpy() for v in views], space=self.space)
                    )
                out.append(probs.double().cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, len(SEVERITIES)))


def views_averaged(probs: np.ndarray, owner: np.ndarray, n: int) -> np.ndarray:
    """Per point (n, 3): the mean of its crops' probabilities (M, 3), crop i belonging to point owner[i]."""
    total = np.zeros((n, probs.shape[1]))
    np.add.at(total, owner, probs)
    counts = np.bincount(owner, minlength=n)[:, None]
    return total / np.maximum(counts, 1)
