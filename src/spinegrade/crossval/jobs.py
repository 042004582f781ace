"""cv's fold trainings side by side: `--fold-jobs N` trains N folds at once, each in its own process with
its share of the CPU threads, instead of one fold after another with every thread.

On a small CPU this is the faster use of the cores: torch gains little from a second thread on these small
models (a resnet18 training step at 32 px: 1.5x faster on 2 threads than on 1), two processes of one thread
gain nearly 2x (measured: docs/results.md#fold-jobs). Jobs are independent trainings that write their own
folders (resumable as before); the first failure is raised once the others have ended.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from spinegrade.errors import DataError

if TYPE_CHECKING:
    from rich.console import Console

    from spinegrade.training.runs import TrainConfig


@dataclass(frozen=True)
class Job:
    """One training: a picklable top-level function and its arguments."""

    function: Callable[..., Any]
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)


def threads_per_job(threads: int, jobs: int) -> int:
    """Torch threads for each of `jobs` side-by-side processes sharing `threads` (0: one per core)."""
    total = threads if threads > 0 else (os.cpu_count() or 1)
    return max(1, total // max(1, jobs))


def run_jobs(jobs: Sequence[Job], at_once: int) -> None:
    """Run `jobs`, `at_once` at a time in spawned processes (1: here, one after another)."""
    if at_once < 1:
        raise DataError(f"--fold-jobs {at_once}: give 1 (one fold after another) or more")
    if at_once == 1 or len(jobs) <= 1:
        for job in jobs:
            job.function(*job.args, **job.kwargs)
        return
    context = multiprocessing.get_context("spawn")  # fork would copy torch's thread pools mid-state
    with ProcessPoolExecutor(max_workers=min(at_once, len(jobs)), mp_context=context) as pool:
        futures = [pool.submit(job.function, *job.args, **job.kwargs) for job in jobs]
        errors = [f.exception() for f in futures]  # waits for every job
    for error in errors:
        if error is not None:
            raise error


def train_classifier_job(
    cache: Path, run: Path, config: TrainConfig, train_cache: Path | None, console: Console | None = None
) -> None:
    """train_run (resumed) on caches opened in this process: a memory map does not travel between them."""
    from spinegrade.crops.cache import CropCache
    from spinegrade.runtime import torch_threads
    from spinegrade.training.train import train_run

    with torch_threads(config.threads):
        train_run(
            CropCache.open(cache),
            run,
            config,
            train_cache=CropCache.open(train_cache) if train_cache is not None else None,
            resume=True,
            console=console,
        )
