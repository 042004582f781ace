"""The `spinegrade prepare` command: build the crop cache that training reads."""

from __future__ import annotations

from pathlib import Path

import typer

from spinegrade.configfile import config_option
from spinegrade.crops.defaults import (
    CROP_MM_HELP,
    DEFAULT_FOLDS,
    DEFAULT_K,
    DEFAULT_SIZE,
    DEFAULT_VIEWS,
    VIEWS_HELP,
)


def prepare_command(
    data_dir: Path = typer.Argument(
        ..., help="Dataset folder in the RSNA layout (train.csv, train_images/...)."
    ),
    out: Path = typer.Option(..., "--out", help="Cache folder to write (created; resumed if interrupted)."),
    k: int = typer.Option(DEFAULT_K, "--k", help="Neighbouring slices per crop (odd)."),
    size: int = typer.Option(DEFAULT_SIZE, "--size", help="Crop side in pixels (128+ on a GPU)."),
    crop_mm: str = typer.Option("", "--crop-mm", help=CROP_MM_HELP),
    views: str = typer.Option(DEFAULT_VIEWS, "--views", help=VIEWS_HELP),
    folds: int = typer.Option(DEFAULT_FOLDS, "--folds", help="Study-level cross-validation folds."),
    seed: int = typer.Option(0, "--seed", help="Seed of the fold assignment."),
    folds_file: Path | None = typer.Option(
        None, "--folds-file", help="Reuse this fold plan (folds.csv: study_id,fold) instead of a new one."
    ),
    workers: int = typer.Option(0, "--workers", help="Worker processes (0: min(4, CPU cores))."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a cache cut with other settings."),
    shard: str | None = typer.Option(
        None,
        "--shard",
        help="Crop only shard i/n of the studies (0-based; e.g. a SLURM array); a last run without "
        "--shard merges.",
    ),
    config: Path | None = config_option(),
) -> None:
    """Cut a 2.5D crop around every labelled point and cache them with study-level folds.

    Example: spinegrade prepare data/phantom --out cache/

    Interrupted runs resume; unreadable studies are listed in CACHE/failed.csv and skipped. The fold plan
    is written to CACHE/folds.csv (its hash in meta.json); pass it to train-locator with --folds-file.
    """
    from spinegrade.crops.extract import parse_crop_mm
    from spinegrade.crops.prepare import prepare
    from spinegrade.crops.views import parse_views
    from spinegrade.sharding import parse_shard

    prepare(
        data_dir,
        out,
        k=k,
        size=size,
        crop_mm=parse_crop_mm(crop_mm),
        views=parse_views(views),
        n_folds=folds,
        seed=seed,
        folds_file=folds_file,
        workers=workers or None,
        overwrite=overwrite,
        shard=parse_shard(shard),
    )
