"""The `spinegrade cv` command (torch and Lightning are imported only when it runs)."""

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
from spinegrade.errors import DataError
from spinegrade.localization.settings import LocatorSettings

_LOCATOR = LocatorSettings()


def _fold_list(text: str) -> tuple[int, ...] | None:
    if text.strip().lower() == "all":
        return None
    try:
        return tuple(int(f) for f in text.split(",") if f.strip())
    except ValueError:
        raise DataError(f"--folds {text!r}: give 'all' or a comma list like 0,1") from None


def _names(text: str) -> tuple[str, ...]:
    return tuple(a.strip() for a in text.split(",") if a.strip())


def cv_command(
    data_dir: Path = typer.Argument(
        ..., help="Dataset folder in the RSNA layout (train.csv, train_images/...)."
    ),
    out: Path = typer.Option(..., "--out", help="Folder for every stage's files and the report."),
    folds: str = typer.Option("all", "--folds", help="Folds to grade: 'all' or a comma list (0,1)."),
    n_folds: int = typer.Option(DEFAULT_FOLDS, "--n-folds", help="Folds of a new plan."),
    folds_file: Path | None = typer.Option(
        None, "--folds-file", help="Reuse this fold plan (folds.csv: study_id,fold)."
    ),
    arch: str = typer.Option(
        "efficientnet_b0", "--arch", help="Classifier architecture(s), comma-separated (averaged)."
    ),
    seeds: int = typer.Option(
        1,
        "--seeds",
        help="Classifiers per fold and architecture, trained with seeds --seed, --seed + 1, ... and "
        "averaged (one training draw moves a small dataset's score: "
        "docs/results.md#classifier-levers-at-150-studies).",
    ),
    imbalance: str = typer.Option("class-weights", "--imbalance", help="Imbalance method (see train)."),
    train_points: str = typer.Option(
        "located",
        "--train-points",
        help="Where training crops are cut: labelled, jittered (labelled + the locator's measured "
        "errors) or located (out-of-fold located points); a comma list compares them, the first is "
        "the headline. located measured best (docs/results.md#training-points).",
    ),
    size: int = typer.Option(DEFAULT_SIZE, "--size", help="Crop side in pixels."),
    k: int = typer.Option(DEFAULT_K, "--k", help="Neighbouring slices per crop (odd)."),
    crop_mm: str = typer.Option("", "--crop-mm", help=CROP_MM_HELP),
    views: str = typer.Option(DEFAULT_VIEWS, "--views", help=VIEWS_HELP),
    epochs: int | None = typer.Option(
        None, "--epochs", help="Classifier epochs (default: each architecture's recipe)."
    ),
    batch_size: int = typer.Option(32, "--batch-size", help="Classifier crops per batch."),
    locator_size: int = typer.Option(_LOCATOR.size, "--locator-size", help="Locator input side (px)."),
    locator_epochs: int = typer.Option(
        _LOCATOR.epochs, "--locator-epochs", help="Locator epochs: passes over each task's training samples."
    ),
    locator_samples: int | None = typer.Option(
        _LOCATOR.samples_per_epoch,
        "--locator-samples",
        help="Locator samples per epoch instead of a pass (a fixed budget).",
    ),
    locator_lr: float = typer.Option(
        _LOCATOR.lr,
        "--locator-lr",
        help="Locators' peak learning rate (a short schedule wants a higher one: see spinegrade demo).",
    ),
    locator_refine_mm: float = typer.Option(
        _LOCATOR.refine_mm,
        "--locator-refine-mm",
        help="Refine the sagittal points on a window of this side (mm) around each (0: no refiners).",
    ),
    locator_refine_size: int = typer.Option(
        _LOCATOR.refine_size, "--locator-refine-size", help="The refiners' input side (px)."
    ),
    accelerator: str = typer.Option("auto", "--accelerator", help="auto, cpu, gpu..."),
    devices: str = typer.Option("auto", "--devices", help="Lightning devices: auto, a count or a list."),
    workers: int = typer.Option(0, "--workers", help="Processes reading studies ahead and cropping."),
    threads: int = typer.Option(1, "--threads", help="torch CPU threads (0: torch's default)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the plan, the training and the jitter."),
    logger: str = typer.Option(
        "csv",
        "--logger",
        help="Training curves of every locator and classifier (their folder's logs/): csv or tensorboard.",
    ),
    resume: bool = typer.Option(
        False, "--resume", help="Continue the cv run in --out, reusing finished stages."
    ),
    variant: list[str] = typer.Option(
        [],
        "--variant",
        help="NAME:key=value[,key=value]: also train and grade classifiers with these training settings "
        "(TrainConfig fields, e.g. smote:imbalance=smote, flip:side_flip=true) on the same folds, located "
        "points and crops; the report adds each with its paired difference to the headline. Repeatable.",
    ),
    config: Path | None = config_option(),
) -> None:
    """Cross-validate the whole pipeline: the score to expect on unseen studies, with its interval.

    For every fold: locators and classifiers trained on the other folds, the fold's studies located,
    cropped at the located points and graded. Writes OUT/oof_submission.csv (end to end),
    OUT/oof_oracle_submission.csv (crops at the labelled points), OUT/oof_prior_submission.csv,
    OUT/oof_points.csv (every located point and its error) and OUT/report.json + report.md.

    Example: spinegrade cv data/rsna --out runs/cv --folds 0 --arch efficientnet_b0
    --variant smote:imbalance=smote
    """
    from dataclasses import replace

    from spinegrade.crops.extract import parse_crop_mm
    from spinegrade.crops.views import parse_views
    from spinegrade.crossval.run import CvSettings, cross_validate
    from spinegrade.crossval.variants import parse_variants

    settings = CvSettings(
        n_folds=n_folds,
        folds=_fold_list(folds),
        seed=seed,
        archs=_names(arch),
        seeds=seeds,
        imbalance=imbalance,
        train_points=_names(train_points),
        size=size,
        k=k,
        crop_mm=parse_crop_mm(crop_mm),
        views=parse_views(views),
        epochs=epochs,
        batch_size=batch_size,
        locator=replace(
            _LOCATOR,
            size=locator_size,
            epochs=locator_epochs,
            samples_per_epoch=locator_samples,
            lr=locator_lr,
            refine_mm=locator_refine_mm,
            refine_size=locator_refine_size,
        ),
        accelerator=accelerator,
        devices=devices,
        workers=workers,
        threads=threads,
        logger=logger,
        variants=parse_variants(variant),
    )
    cross_validate(data_dir, out, settings, folds_file=folds_file, resume=resume)
