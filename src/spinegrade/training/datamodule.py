"""Training data: rows of the memory-mapped crop cache, read a whole batch at a time.

The dataset implements __getitems__, so the DataLoader asks for one batch with one fancy-indexed read of
crops.npy (float16, straight from the page cache) instead of one small read and one collate per crop;
crops stay float16 until the module converts them on the training device, and augmentation runs there on
the whole batch. With that, workers=0 keeps up with a CPU model (see bench/train_throughput.py); on a GPU,
workers > 0 are persistent.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import lightning.pytorch as pl
import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset, RandomSampler, Sampler, WeightedRandomSampler

from spinegrade.crops.cache import CropCache
from spinegrade.crops.views import axial_plane
from spinegrade.errors import DataError
from spinegrade.vocab import CONDITIONS, LEVELS

STATS_SAMPLE = 1024


def codes(index: pd.DataFrame, column: str, names: tuple[str, ...], where: str) -> np.ndarray:
    """Index of each row's `column` value in `names`; DataError names the file, row and value at fault."""
    code = pd.Categorical(index[column], categories=names).codes.astype(np.int64)
    bad = np.flatnonzero(code < 0)
    if len(bad):
        raise DataError(
            f"{where}: row {bad[0]} has {column} {index[column].iloc[bad[0]]!r}; expected one of {names}"
        )
    return code


@dataclass(frozen=True)
class Labels:
    """Per-item labels of a dataset; row = the item's row in its cache's index and study its study id
    (both -1 for synthetic items); axial whether the item's crop lies in an axial plane (crops.views: what
    a side flip mirrors)."""

    condition: np.ndarray
    level: np.ndarray
    severity: np.ndarray
    row: np.ndarray
    study: np.ndarray
    axial: np.ndarray

    def with_synthetic(self, condition: np.ndarray, level: np.ndarray, severity: np.ndarray) -> Labels:
        """The labels of resampled items: these items first (as resamplers return them), then synthetic
        ones, whose row and study are -1."""
        n_synthetic = len(severity) - len(self.severity)
        pad = np.full(n_synthetic, -1, dtype=np.int64)
        own_plane = axial_plane([CONDITIONS[c] for c in condition[len(self.severity) :]], None)
        return Labels(
            condition,
            level,
            severity,
            np.concatenate([self.row, pad]),
            np.concatenate([self.study, pad]),
            np.concatenate([self.axial, own_plane]),
        )

    @classmethod
    def of_rows(cls, cache: CropCache, rows: np.ndarray) -> Labels:
        where = str(cache.path / "index.csv")
        part = cache.index.iloc[rows]
        return cls(
            condition=codes(part, "condition", CONDITIONS, where),
            level=codes(part, "level", LEVELS, where),
            severity=part["severity"].to_numpy(np.int64),
            row=np.asarray(rows, dtype=np.int64),
            study=part["study_id"].to_numpy(np.int64),
            axial=axial_plane(part["condition"], part.get("view")),
        )


@dataclass(frozen=True)
class AlternativeCrops:
    """Another crop of each item's target (cv: the labelled point's, for items cut at located points), read
    instead of the item's own with probability `share`, drawn per item each time it is read."""

    crops: np.ndarray
    positions: np.ndarray  # per item, a row of `crops`; -1 where the target has none
    share: float


class CropDataset(Dataset):
    """Items i -> crops[positions[i]] (float16 (k, S, S)) with their labels; batches via __getitems__."""

    def __init__(
        self,
        crops: np.ndarray,
        positions: np.ndarray,
        labels: Labels,
        alternative: AlternativeCrops | None = None,
    ) -> None:
        if not len(positions) == len(labels.severity):
            raise ValueError("positions and labels must have one entry per item")
        if alternative is not None and len(alternative.positions) != len(positions):
            raise ValueError("alternative positions must have one entry per item")
        self.crops = crops
        self.positions = np.asarray(positions, dtype=np.int64)
        self.labels = labels
        self.alternative = alternative

    def _read(self, items: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(self.crops[self.positions[items]])  # a copy: fancy indexing
        alt = self.alternative
        if alt is not None and alt.share > 0:
            # torch's generator: seeded by seed_everything, and per DataLoader worker by torch itself
            drawn = torch.rand(len(items)).numpy() < alt.share
            swap = np.flatnonzero(drawn & (alt.positions[items] >= 0))
            if len(swap):
                x[swap] = alt.crops[alt.positions[items[swap]]]
        return x

    def __len__(self) -> int:
        return len(self.positions)

    def __getitems__(self, indices: list[int]) -> dict[str, torch.Tensor]:
        items = np.asarray(indices, dtype=np.int64)
        return {
            "x": torch.from_numpy(self._read(items)),
            "condition": torch.from_numpy(self.labels.condition[items]),
            "level": torch.from_numpy(self.labels.level[items]),
            "severity": torch.from_numpy(self.labels.severity[items]),
            "row": torch.from_numpy(self.labels.row[items]),
            "study": torch.from_numpy(self.labels.study[items]),
            "axial": torch.from_numpy(self.labels.axial[items]),
        }

    def __getitem__(self, item: int) -> dict[str, torch.Tensor]:
        return {key: value[0] for key, value in self.__getitems__([item]).items()}


class StudyGroupedSampler(Sampler[int]):
    """A random order of items in which each study's spinal items stay next to each other, so that a batch
    holds a study's spinal levels together (the any_severe_spinal term of loss "score" takes their
    maximum); every other item, synthetic ones included, is a group of its own. A group is split only
    where it straddles two batches."""

    def __init__(self, labels: Labels, generator: torch.Generator) -> None:
        spinal = (labels.condition == CONDITIONS.index("spinal_canal_stenosis")) & (labels.study >= 0)
        key = np.where(spinal, labels.study, -1 - np.arange(len(labels.study)))  # -1-i: a group of one
        _, self.group = np.unique(key, return_inverse=True)
        self.n_groups = int(self.group.max()) + 1 if len(self.group) else 0
        self.generator = generator

    def __len__(self) -> int:
        return len(self.group)

    def __iter__(self) -> Iterator[int]:
        rank = torch.randperm(self.n_groups, generator=self.generator).numpy()
        return iter(np.argsort(rank[self.group], kind="stable").tolist())


def as_batch(batch: Any) -> dict[str, torch.Tensor]:
    """collate_fn for datasets that already return whole batches (__getitems__): `batch` is that dict
    (typed Any, as DataLoader expects a collate_fn over a list of items)."""
    return batch


def fold_rows(cache: CropCache, fold: int) -> tuple[np.ndarray, np.ndarray]:
    """(training rows, validation rows) of the cache index for one fold; DataError if either is empty."""
    folds = cache.index["fold"].to_numpy(np.int64)
    available = sorted(set(folds.tolist()))
    if fold not in available:
        raise DataError(f"{cache.path / 'index.csv'} has no fold {fold}; its folds are {available}")
    train, val = np.flatnonzero(folds != fold), np.flatnonzero(folds == fold)
    if len(train) == 0:
        raise DataError(f"{cache.path}: every row is in fold {fold}; nothing left to train on")
    return train, val


def input_stats(crops: np.ndarray, rows: np.ndarray, seed: int) -> tuple[float, float]:
    """Mean and std of the training crops, from a seeded sample of up to 1024 of them read 64 at a time."""
    rng = np.random.default_rng(seed)
    sample = np.sort(rng.choice(rows, size=min(len(rows), STATS_SAMPLE), replace=False))
    total = total_sq = 0.0
    count = 0
    for part in np.array_split(sample, max(1, len(sample) // 64)):
        values = np.asarray(crops[part], dtype=np.float32)
        total += float(values.sum(dtype=np.float64))
        total_sq += float(np.square(values).sum(dtype=np.float64))
        count += values.size
    mean = total / count
    return mean, max(math.sqrt(max(total_sq / count - mean**2, 0.0)), 1e-6)


class CropDataModule(pl.LightningDataModule):
    """Training and validation loaders; `sample_weights` (per training item) switch to a weighted sampler,
    `group_studies` to StudyGroupedSampler."""

    def __init__(
        self,
        train: CropDataset,
        val: CropDataset,
        *,
        batch_size: int,
        workers: int = 0,
        sample_weights: np.ndarray | None = None,
        group_studies: bool = False,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if group_studies and sample_weights is not None:
            raise DataError("a weighted sampler draws crops one at a time: it cannot keep studies together")
        self.train, self.val = train, val
        self.batch_size, self.workers, self.seed = batch_size, workers, seed
        self.sample_weights, self.group_studies = sample_weights, group_studies

    def _loader(self, dataset: Dataset, sampler: Sampler[int] | None, drop_last: bool) -> DataLoader:
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            sampler=sampler,
            drop_last=drop_last,
            collate_fn=as_batch,
            num_workers=self.workers,
            persistent_workers=self.workers > 0,
            pin_memory=torch.cuda.is_available(),
        )

    def train_dataloader(self) -> DataLoader:
        generator = torch.Generator().manual_seed(self.seed)
        sampler: Sampler[int]
        if self.group_studies:
            sampler = StudyGroupedSampler(self.train.labels, generator)
        elif self.sample_weights is None:
            sampler = RandomSampler(self.train, generator=generator)
        else:
            sampler = WeightedRandomSampler(
                np.asarray(self.sample_weights, dtype=np.float64).tolist(),
                num_samples=len(self.train),
                replacement=True,
                generator=generator,
            )
        return self._loader(self.train, sampler, drop_last=len(self.train) > self.batch_size)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val, None, drop_last=False)
