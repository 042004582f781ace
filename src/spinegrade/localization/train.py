"""Train the three locators (one per series type) on train_label_coordinates.csv and measure them.

Studies are split with the dataset's fold plan (`crops.folds.fold_plan`, the one `prepare` uses, or the
folds.csv given as `folds_file`), so the validation studies of the locator are the validation fold of the
graders too; OUT/folds.csv and the plan's hash in OUT/config.json record it. Each finished series type
is saved at once (OUT/<slug>.safetensors + .json) and skipped on a re-run unless `overwrite`; after
training, the whole `locate_study` pipeline runs on the validation studies and OUT/metrics.json gets its
errors in mm.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict
from functools import partial
from pathlib import Path

import lightning as L
import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import RichProgressBar
from lightning.pytorch.utilities import rank_zero_only
from rich.console import Console
from rich.progress import Progress
from safetensors.torch import save as save_tensors

import spinegrade
from spinegrade.crops.folds import FOLDS_FILE, fold_plan, plan_summary, write_folds
from spinegrade.data.series import Series, read_series
from spinegrade.data.tables import RsnaData, labels_long, load_rsna
from spinegrade.errors import DataError, Problem
from spinegrade.fileio import write_atomic
from spinegrade.localization.dataset import LocatorDataset, Samples, make_samples
from spinegrade.localization.locate import load_locator, locate_study
from spinegrade.localization.metrics import error_report, point_errors
from spinegrade.localization.model import LocatorNet, build_net
from spinegrade.localization.refine import WindowDataset, window_samples
from spinegrade.localization.settings import REFINE_FIELDS, LocatorSettings
from spinegrade.localization.targets import (
    REFINERS,
    TASK_BY_SLUG,
    TASKS,
    SeriesTargets,
    Task,
    gaussian_1d,
    gaussian_heatmaps,
    rescale,
    series_targets,
)
from spinegrade.runtime import adamw, quiet_lightning, torch_threads
from spinegrade.training.loggers import LOG_EVERY_N_STEPS, check_logger, training_logger
from spinegrade.training.runs import versions, write_json


class LocatorModule(L.LightningModule):
    """Heatmap cross-entropy (Gaussian target distribution) plus slice cross-entropy for volume tasks.

    The network trains in channels_last (1.3x faster steps on CPU: bench/locator_step.py,
    docs/results.md#locators); `train_task` hands it back contiguous, as safetensors stores it.
    """

    def __init__(self, net: LocatorNet, settings: LocatorSettings) -> None:
        super().__init__()
        self.net = net.to(memory_format=torch.channels_last)
        self.settings = settings

    def training_step(self, batch: tuple[torch.Tensor, ...], batch_idx: int) -> torch.Tensor:
        images, points, slices = batch
        heatmaps, slice_logits = self.net(images.contiguous(memory_format=torch.channels_last))
        h, w = heatmaps.shape[-2:]
        s = self.settings
        target = gaussian_heatmaps(rescale(points, s.size, w), h, w, s.sigma)
        seen = ~points.isnan().any(dim=-1)
        log_p = F.log_softmax(heatmaps.flatten(2), dim=-1)
        loss = masked_mean(-(target.flatten(2) * log_p).sum(-1), seen)
        if slice_logits is not None:
            on_slice = ~slices.isnan()
            target = gaussian_1d(slices, slice_logits.shape[-1], s.slice_sigma)
            loss = loss + masked_mean(-(target * F.log_softmax(slice_logits, -1)).sum(-1), on_slice)
        self.log("train/loss", loss, prog_bar=True, batch_size=len(images))
        return loss

    def configure_optimizers(self):
        s = self.settings
        optimizer = adamw(self.parameters(), lr=s.lr, weight_decay=s.weight_decay)
        schedule = torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=s.lr, total_steps=int(self.trainer.estimated_stepping_batches), pct_start=0.15
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of `values` where `mask`; 0 (with a gradient path) when nothing is masked in."""
    return (values * mask).sum() / mask.sum().clamp_min(1)


def model_info(task: Task, settings: LocatorSettings, n_samples: int) -> dict:
    """OUT/<slug>.json: what load_locator needs to rebuild the network and read its outputs."""
    return {
        "task": task.slug,
        "series_type": task.series_type,
        "volume": task.volume,
        "points": [list(p) for p in task.points],
        "channels": settings.depth if task.volume else settings.context,
        "settings": asdict(settings),
        "n_samples": n_samples,
        "spinegrade": spinegrade.__version__,
    }


def labelled_rows(data: RsnaData, task: Task, study_ids: set[int]) -> pd.DataFrame:
    """Coordinate rows of the task's conditions on series of the task's type in `study_ids`."""
    d, coords = data.descriptions, data.coordinates
    assert coords is not None  # the train split's
    wanted = d[d["study_id"].isin(study_ids) & (d["series_description"] == task.series_type)]
    coords = coords[coords["condition"].isin(task.conditions)]
    return coords.merge(wanted[["study_id", "series_id"]], on=["study_id", "series_id"])


def task_samples(
    data: RsnaData,
    task: Task,
    labelled: pd.DataFrame,
    settings: LocatorSettings,
    problems: list[Problem],
    advance: Callable[[], object],
) -> Samples:
    """Read every series with `labelled` rows and build the task's samples; `advance()` after each series.

    A series that cannot be read or whose labels do not fit it is skipped and recorded in `problems`. A
    refiner's samples are windows around the labelled points (`settings` the whole-series locators').
    """
    points_task = TASK_BY_SLUG[task.refines] if task.refines else task

    def items() -> Iterator[tuple[Series, list[SeriesTargets]]]:
        for (study_id, series_id), rows in labelled.groupby(["study_id", "series_id"], sort=True):
            folder = data.series_folder(study_id, series_id)
            try:
                series = read_series(folder, on_corrupt="skip")
                yield series, series_targets(rows, series, points_task)
            except DataError as exc:
                problems.append(
                    Problem("locator_skipped", str(exc), str(folder), int(study_id), int(series_id))
                )
            advance()

    if task.refines:
        return window_samples(task, items(), settings)
    return make_samples(task, items(), settings.size, settings.depth, settings.context)


def task_settings(task: Task, settings: LocatorSettings) -> LocatorSettings:
    """The settings a task's network is built and trained with (a refiner's input is its window)."""
    return settings.refined() if task.refines else settings.whole_series()


def tasks_to_train(settings: LocatorSettings) -> tuple[Task, ...]:
    """The three whole-series locators, and the sagittal refiners when `settings.refine_mm` > 0."""
    return (*TASKS, *REFINERS) if settings.refine_mm > 0 else TASKS


def fit(
    task: Task,
    samples: Samples,
    settings: LocatorSettings,
    *,
    accelerator: str,
    devices: int | str,
    workers: int,
    progress: bool,
    strategy: str = "auto",
    num_nodes: int = 1,
    log_dir: Path | None = None,
    logger: str = "csv",
) -> LocatorNet:
    """Train a fresh network of the task on its samples (Lightning; quiet apart from the progress bar).

    An epoch draws `settings.epoch_samples(len(samples))` samples (one pass by default); with several
    processes (DDP) each draws its own share with its own generator.
    """
    L.seed_everything(settings.seed, workers=True, verbose=False)
    net = build_net(task, settings)
    dataset = WindowDataset(samples, task, settings) if task.refines else LocatorDataset(samples, task)
    curves, lr_monitor = training_logger(logger, log_dir, task.slug) if log_dir else (False, [])
    with quiet_lightning():
        trainer = L.Trainer(
            accelerator=accelerator,
            devices=devices,
            strategy=strategy,
            num_nodes=num_nodes,
            use_distributed_sampler=False,
            max_epochs=settings.epochs,
            logger=curves,
            log_every_n_steps=LOG_EVERY_N_STEPS,
            enable_checkpointing=False,
            enable_model_summary=False,
            enable_progress_bar=progress,
            callbacks=[*lr_monitor, *([RichProgressBar(leave=False)] if progress else [])],
            num_sanity_val_steps=0,
        )
        per_rank = -(-settings.epoch_samples(len(samples)) // trainer.world_size)
        # one process: the global RNG seeded above (as before); several: a seed per rank
        generator = (
            torch.Generator().manual_seed(settings.seed + trainer.global_rank)
            if trainer.world_size > 1
            else None
        )
        loader = torch.utils.data.DataLoader(
            dataset,
            batch_size=settings.batch_size,
            sampler=torch.utils.data.RandomSampler(dataset, num_samples=per_rank, generator=generator),
            drop_last=per_rank > settings.batch_size,
            num_workers=workers,
            persistent_workers=workers > 0,
        )
        trainer.fit(LocatorModule(net, settings), loader)
    return net.cpu().to(memory_format=torch.contiguous_format).eval()


def save_model(out: Path, task: Task, net: LocatorNet, info: dict) -> None:
    """OUT/<slug>.json then OUT/<slug>.safetensors, each written atomically (weights last = complete)."""
    write_json(out / f"{task.slug}.json", info)
    state = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    write_atomic(out / f"{task.slug}.safetensors", save_tensors(state))


def check_kept(info_file: Path, task: Task, settings: LocatorSettings) -> None:
    """A locator kept on a re-run must have been trained with the same settings (a whole-series one: but
    the refiners'); DataError names the rest. A setting its file does not record (added since) means what
    it meant then (`from_saved`)."""
    saved = json.loads(info_file.read_text())["settings"] if info_file.is_file() else None
    recorded = asdict(LocatorSettings.from_saved(saved)) if saved is not None else {}
    ignored = () if task.refines else REFINE_FIELDS
    changed = sorted(k for k, v in asdict(settings).items() if k not in ignored and recorded.get(k) != v)
    if changed:
        raise DataError(
            f"{info_file.with_suffix('.safetensors')} was trained with other settings "
            f"({', '.join(changed)}); pass --overwrite to retrain it, or choose another --out folder"
        )


def train_locator(
    data_dir: str | Path,
    out: str | Path,
    settings: LocatorSettings = LocatorSettings(),
    *,
    accelerator: str = "auto",
    devices: int | str = "auto",
    workers: int = 0,
    threads: int = 1,
    overwrite: bool = False,
    progress: bool = True,
    strategy: str = "auto",
    num_nodes: int = 1,
    folds_file: str | Path | None = None,
    evaluate: bool = True,
    logger: str = "csv",
) -> dict:
    """Train the locators of the three series types on the training folds and evaluate on the held-out fold.

    Writes OUT/<slug>.safetensors + .json per series type (and per sagittal refiner when
    settings.refine_mm > 0, `localization.refine`), OUT/config.json, OUT/versions.json and
    OUT/metrics.json (returned): median / p90 error in mm, slice error and share within 5 mm on the
    validation studies, overall, per series type and per condition. threads: torch's CPU threads (0:
    torch's default). One by default: these models are small, and on 2 cores shared with other work a
    second thread spin-waiting in OpenMP made the test's tiny training 10x slower (200 s vs 20 s).
    strategy/num_nodes go to Lightning (e.g. "ddp"); only global rank 0 writes files and evaluates, the
    other ranks return {}.
    folds_file: reuse that fold plan (else the plan is assigned from train.csv, as `prepare` does).
    evaluate=False skips locating the validation studies (cv locates them itself): metrics.json then
    holds only the training times. logger: csv or tensorboard, each task's curves in OUT/logs/<slug>
    (training.loggers).
    """
    data_dir, out = Path(data_dir), Path(out)
    check_logger(logger)
    data = load_rsna(data_dir, "train")
    if not data.has_images:
        raise DataError(f"{data.image_dir} not found: training the locator needs the DICOM images")
    folds, train_ids, val_ids = split_studies(data, settings, folds_file)
    tasks = tasks_to_train(settings)
    kept = [t for t in tasks if (out / f"{t.slug}.safetensors").is_file() and not overwrite]
    for task in kept:  # before anything is written
        check_kept(out / f"{task.slug}.json", task, task_settings(task, settings))
    stale = [t for t in REFINERS if t not in tasks and (out / f"{t.slug}.safetensors").is_file()]
    if stale and not overwrite:  # load_locator would still refine with them
        raise DataError(
            f"{out} holds refiners ({', '.join(t.slug for t in stale)}) and refine_mm is 0; pass --overwrite "
            "to remove them, or a --refine-mm to keep them"
        )
    primary = getattr(rank_zero_only, "rank", 0) == 0  # under DDP the other ranks only train
    if primary:
        out.mkdir(parents=True, exist_ok=True)
        write_json(
            out / "config.json",
            {
                "data_dir": str(data_dir),
                "settings": asdict(settings),
                "accelerator": accelerator,
                "devices": devices,
                "strategy": strategy,
                "num_nodes": num_nodes,
                "workers": workers,
                "threads": threads,
                "logger": logger,
                "val_studies": sorted(val_ids),
                "folds": plan_summary(folds),
            },
        )
        write_folds(out / FOLDS_FILE, folds)
        write_json(out / "versions.json", versions())
        for task in stale:  # with --overwrite: no refinement, as asked
            for suffix in (".safetensors", ".json"):
                (out / f"{task.slug}{suffix}").unlink(missing_ok=True)
    console = Console(quiet=not progress)
    problems: list[Problem] = []
    timings: dict[str, float] = {}
    with torch_threads(threads):
        for task in tasks:
            if task in kept:
                console.print(f"{task.slug}: already trained, kept (pass --overwrite to retrain)")
                continue
            start = time.perf_counter()
            net, n_samples = train_task(
                data,
                task,
                train_ids,
                settings,
                console,
                problems,
                accelerator,
                devices,
                workers,
                strategy=strategy,
                num_nodes=num_nodes,
                log_dir=out,
                logger=logger,
            )
            if net is None:
                console.print(f"{task.slug}: no labelled {task.series_type} series in the training studies")
                continue
            if not primary:
                continue
            save_model(out, task, net, model_info(task, task_settings(task, settings), n_samples))
            timings[task.slug] = time.perf_counter() - start
            console.print(f"{task.slug}: trained on {n_samples} samples in {timings[task.slug]:.0f} s")
        if not primary:
            return {}
        metrics = evaluate_locator(data, out, sorted(val_ids), console, problems) if evaluate else {}
    metrics["train_seconds"] = timings
    metrics["problems"] = [p.to_dict() for p in problems]
    write_json(out / "metrics.json", metrics)
    return metrics


def split_studies(
    data: RsnaData, settings: LocatorSettings, folds_file: str | Path | None = None
) -> tuple[pd.Series, set[int], set[int]]:
    """(fold plan, training study ids, validation study ids) of settings.fold; DataError for a bad fold."""
    folds = fold_plan(
        labels_long(data.labels), n_folds=settings.n_folds, seed=settings.seed, folds_file=folds_file
    )
    n_folds = int(folds.max()) + 1
    if not 0 <= settings.fold < n_folds:
        raise DataError(f"fold {settings.fold} is not in 0..{n_folds - 1}")
    val_ids = set(folds.index[folds == settings.fold].tolist())
    train_ids = set(folds.index[folds != settings.fold].tolist())
    return folds, train_ids, val_ids


def train_task(
    data: RsnaData,
    task: Task,
    train_ids: set[int],
    settings: LocatorSettings,
    console: Console,
    problems: list[Problem],
    accelerator: str,
    devices: int | str,
    workers: int,
    *,
    strategy: str = "auto",
    num_nodes: int = 1,
    log_dir: Path | None = None,
    logger: str = "csv",
) -> tuple[LocatorNet | None, int]:
    """Read the task's labelled series of `train_ids` and fit a network; (None, 0) without samples."""
    labelled = labelled_rows(data, task, train_ids)
    n_series = len(labelled.groupby(["study_id", "series_id"]))
    with Progress(console=console, transient=True) as bar:
        reading = bar.add_task(f"{task.slug}: reading series", total=n_series)
        samples = task_samples(data, task, labelled, settings, problems, partial(bar.advance, reading))
    if not len(samples):
        return None, 0
    progress = not console.quiet
    net = fit(
        task,
        samples,
        task_settings(task, settings),
        accelerator=accelerator,
        devices=devices,
        workers=workers,
        progress=progress,
        strategy=strategy,
        num_nodes=num_nodes,
        log_dir=log_dir,
        logger=logger,
    )
    return net, len(samples)


def evaluate_locator(
    data: RsnaData, out: Path, study_ids: list[int], console: Console, problems: list[Problem]
) -> dict:
    """Run locate_study on each study and compare with its labelled points (see metrics.point_errors).

    Study by study, so only one study's series are in memory at a time; an unreadable series is left out
    (its labels are not scored, the points it would have given count as not located) and recorded in
    `problems`.
    """
    locator = load_locator(out)
    descriptions, coordinates = data.descriptions, data.coordinates
    assert coordinates is not None  # the train split's
    errors, seconds = [], []
    with Progress(console=console, transient=True) as bar:
        for study_id in bar.track(study_ids, description="locating validation studies"):
            by_type: dict[str, list[Series]] = {}
            for r in descriptions[descriptions["study_id"] == study_id].itertuples(index=False):
                folder = data.series_folder(study_id, r.series_id)
                try:
                    series = read_series(folder, on_corrupt="skip")
                except DataError as exc:
                    problems.append(Problem("locator_unread", str(exc), str(folder), study_id, r.series_id))
                    continue
                by_type.setdefault(r.series_description, []).append(series)
            start = time.perf_counter()
            located = locate_study(by_type, locator).assign(study_id=study_id)
            seconds.append(time.perf_counter() - start)
            by_id = {s.series_id: s for group in by_type.values() for s in group}
            errors.append(point_errors(located, coordinates[coordinates["study_id"] == study_id], by_id))
    report = error_report(pd.concat(errors, ignore_index=True))
    report["n_val_studies"] = len(study_ids)
    report["locate_seconds_per_study"] = float(np.mean(seconds)) if seconds else float("nan")
    return report
