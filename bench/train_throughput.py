"""Training throughput: the full training step against the model alone, in crops per second.

full:  crops read from a crop cache on disk (memory-mapped float16) by the real DataLoader, batch
       augmentation, forward, backward, gradient clipping and AdamW step, driven by the Lightning Trainer
       exactly as `spinegrade train` does (GradingModule + CropDataModule).
model: the same model's forward, backward and AdamW step on random tensors of the same shape.

Both run in this process with the same threads; their steps alternate (full, model alone, full, ...) so
both see the same machine load. Rates are summed over windows of steps after a warm-up. Prints JSON:
both median rates and `ratio`, the median over windows of full / model (target >= 0.9 at CPU defaults).

    .venv/bin/python bench/train_throughput.py [--arch efficientnet_b0] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from dataclasses import fields
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import pandas as pd
import torch

from spinegrade.crops.cache import INDEX_COLUMNS, write_cache
from spinegrade.crops.extract import DEFAULT_K, DEFAULT_SIZE
from spinegrade.models import create_model
from spinegrade.runtime import quiet_lightning
from spinegrade.training.augment import AugmentConfig
from spinegrade.training.datamodule import CropDataModule, CropDataset, Labels, fold_rows
from spinegrade.training.imbalance import class_weights
from spinegrade.training.module import GradingModule
from spinegrade.training.runs import TrainConfig
from spinegrade.vocab import TARGETS

DEFAULTS = {f.name: f.default for f in fields(TrainConfig)}


def synthetic_cache(folder: Path, n_crops: int, k: int, size: int, seed: int = 0) -> Path:
    """A crop cache of random crops on disk, in the format `spinegrade prepare` writes."""
    rng = np.random.default_rng(seed)
    n_studies = -(-n_crops // len(TARGETS))
    rows = [
        (s, c, lv, 1, 1, 0.0, 0.0, rng.choice(3, p=[0.7, 0.2, 0.1]), s % 5)
        for s in range(n_studies)
        for c, lv in TARGETS
    ]
    index = pd.DataFrame(rows[:n_crops], columns=list(INDEX_COLUMNS))
    parts = (
        rng.random((min(256, n_crops - i), k, size, size), dtype=np.float32).astype(np.float16)
        for i in range(0, n_crops, 256)
    )
    meta = {"k": k, "size": size, "crop_mm": {}, "normalize": "random", "n_folds": 5, "seed": seed}
    write_cache(folder, parts, index, meta)
    return folder


class ModelAlone:
    """Forward, backward and AdamW step of the model alone on random tensors of the training batch's shape."""

    def __init__(self, args: argparse.Namespace, index: pd.DataFrame) -> None:
        self.module = make_module(args.arch, args.k, index["severity"].to_numpy(), index).train()
        self.optimizer = torch.optim.AdamW(
            self.module.model.parameters(), lr=DEFAULTS["lr"], weight_decay=DEFAULTS["weight_decay"]
        )
        n = args.batch_size
        self.x = torch.rand(n, args.k, args.size, args.size).contiguous(memory_format=torch.channels_last)
        self.condition, self.level = torch.randint(0, 5, (n,)), torch.randint(0, 5, (n,))
        self.severity = torch.randint(0, 3, (n,))

    def window(self, steps: int) -> None:
        """Run `steps` training steps of the model alone."""
        for _ in range(steps):
            loss = self.module.loss(self.module.model(self.x, self.condition, self.level), self.severity)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()


class PairedWindows(pl.Callback):
    """Alternates steps: after each full training step, one step of the model alone runs (outside the full
    step's timed span), so both see the same machine load. Rates are summed over windows of `steps` pairs,
    after `warmup` untimed pairs."""

    def __init__(self, warmup: int, steps: int, batch_size: int, alone: ModelAlone) -> None:
        self.warmup, self.steps, self.batch_size, self.alone = warmup, steps, batch_size, alone
        self.full: list[float] = []
        self.model: list[float] = []
        self._seconds = [0.0, 0.0]  # full, alone within the current window
        self._mark = 0.0

    def on_train_batch_start(self, trainer: pl.Trainer, *args: object) -> None:
        if trainer.global_step == 0:
            self._mark = time.perf_counter()

    def on_train_batch_end(self, trainer: pl.Trainer, *args: object) -> None:
        full_seconds = time.perf_counter() - self._mark
        started = time.perf_counter()
        self.alone.window(1)
        alone_seconds = time.perf_counter() - started
        if trainer.global_step > self.warmup:
            self._seconds[0] += full_seconds
            self._seconds[1] += alone_seconds
            if (trainer.global_step - self.warmup) % self.steps == 0:
                crops = self.steps * self.batch_size
                self.full.append(crops / self._seconds[0])
                self.model.append(crops / self._seconds[1])
                self._seconds = [0.0, 0.0]
        self._mark = time.perf_counter()


def make_module(arch: str, k: int, severity: np.ndarray, index: pd.DataFrame) -> GradingModule:
    torch.manual_seed(0)
    return GradingModule(
        create_model(arch, in_chans=k),
        augment=AugmentConfig(),
        cache_index=index,
        lr=DEFAULTS["lr"],
        weight_decay=DEFAULTS["weight_decay"],
        warmup_epochs=DEFAULTS["warmup_epochs"],
        class_weights=class_weights(severity, "challenge"),
    )


def measure(cache_dir: Path, args: argparse.Namespace) -> PairedWindows:
    """Train as `spinegrade train` does (Trainer, GradingModule, CropDataModule) with paired timing."""
    from spinegrade.crops.cache import CropCache

    cache = CropCache.open(cache_dir)
    train_rows, val_rows = fold_rows(cache, 0)
    labels = Labels.of_rows(cache, train_rows)
    data = CropDataModule(
        CropDataset(cache.crops, train_rows, labels),
        CropDataset(cache.crops, val_rows, Labels.of_rows(cache, val_rows)),
        batch_size=args.batch_size,
        workers=args.workers,
    )
    timer = PairedWindows(args.warmup, args.steps, args.batch_size, ModelAlone(args, cache.index))
    with quiet_lightning():
        trainer = pl.Trainer(
            accelerator="cpu",
            devices=1,
            max_steps=args.warmup + args.windows * args.steps,
            limit_val_batches=0,
            gradient_clip_val=DEFAULTS["grad_clip"],
            callbacks=[timer],
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
        )
        trainer.fit(make_module(args.arch, args.k, labels.severity, cache.index), datamodule=data)
    return timer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default=DEFAULTS["arch"])
    parser.add_argument("--batch-size", type=int, default=DEFAULTS["batch_size"])
    parser.add_argument("--size", type=int, default=DEFAULT_SIZE)
    parser.add_argument("--k", type=int, default=DEFAULT_K)
    parser.add_argument("--workers", type=int, default=DEFAULTS["workers"])
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--crops", type=int, default=2000, help="crops in the on-disk cache")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    parser.add_argument("--steps", type=int, default=4, help="steps per timed window")
    parser.add_argument("--windows", type=int, default=5, help="timed windows (medians are reported)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory(prefix="spinegrade-bench-") as tmp:
        timer = measure(synthetic_cache(Path(tmp), args.crops, args.k, args.size), args)
    full, model = timer.full, timer.model
    result = {
        "arch": args.arch,
        "batch_size": args.batch_size,
        "size": args.size,
        "k": args.k,
        "threads": args.threads,
        "workers": args.workers,
        "full_step_crops_per_s": round(statistics.median(full), 2),
        "model_alone_crops_per_s": round(statistics.median(model), 2),
        "ratio": round(statistics.median(f / m for f, m in zip(full, model, strict=True)), 3),
        "ratio_of_medians": round(statistics.median(full) / statistics.median(model), 3),
        "full_windows": [round(r, 2) for r in full],
        "model_windows": [round(r, 2) for r in model],
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
