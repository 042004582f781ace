"""The `spinegrade train-locator` command: train the three point locators and report their errors in mm."""

from __future__ import annotations

from pathlib import Path

import typer

from spinegrade.configfile import config_option
from spinegrade.localization.settings import LocatorSettings

_DEFAULTS = LocatorSettings()


def train_locator_command(
    data_dir: Path = typer.Argument(
        ..., help="Dataset folder in the RSNA layout (train.csv, train_images/...)."
    ),
    out: Path = typer.Option(..., "--out", help="Folder for the locators, config, versions and metrics."),
    size: int = typer.Option(_DEFAULTS.size, "--size", help="Input side in pixels (256 on a GPU)."),
    depth: int = typer.Option(
        _DEFAULTS.depth, "--depth", help="Sagittal slices resampled to this many channels."
    ),
    arch: str = typer.Option(_DEFAULTS.arch, "--arch", help="timm encoder (features_only), e.g. resnet18."),
    epochs: int = typer.Option(
        _DEFAULTS.epochs,
        "--epochs",
        help="Training epochs per series type: passes over its training samples "
        f"(at least {_DEFAULTS.min_samples_per_epoch} samples each).",
    ),
    samples_per_epoch: int | None = typer.Option(
        _DEFAULTS.samples_per_epoch,
        "--samples-per-epoch",
        help="Draw exactly this many samples per epoch instead of a pass (a fixed budget).",
    ),
    refine_mm: float = typer.Option(
        _DEFAULTS.refine_mm,
        "--refine-mm",
        help="Also train sagittal refiners on a window of this side (mm) around each point (0: none).",
    ),
    batch_size: int = typer.Option(_DEFAULTS.batch_size, "--batch-size", help="Samples per batch."),
    lr: float = typer.Option(_DEFAULTS.lr, "--lr", help="Peak learning rate (one-cycle schedule, AdamW)."),
    fold: int = typer.Option(_DEFAULTS.fold, "--fold", help="Study-level fold held out for validation."),
    seed: int = typer.Option(_DEFAULTS.seed, "--seed", help="Seed of the folds, weights and augmentation."),
    accelerator: str = typer.Option(
        "auto", "--accelerator", help="Lightning accelerator: auto, cpu, gpu, mps."
    ),
    devices: str = typer.Option("auto", "--devices", help="Lightning devices: auto, a count or a list."),
    strategy: str = typer.Option(
        "auto", "--strategy", help="Lightning strategy, e.g. ddp (several devices)."
    ),
    num_nodes: int = typer.Option(1, "--num-nodes", help="Machines taking part (DDP)."),
    workers: int = typer.Option(0, "--workers", help="DataLoader worker processes (0: in the main process)."),
    threads: int = typer.Option(
        1, "--threads", help="torch CPU threads (0: torch's default); 1 is fastest on shared cores."
    ),
    logger: str = typer.Option(
        "csv", "--logger", help="Training curves in OUT/logs/<series type>: csv or tensorboard."
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="Retrain series types already trained in OUT."),
    folds_file: Path | None = typer.Option(
        None,
        "--folds-file",
        help="The fold plan to use (e.g. CACHE/folds.csv from prepare); default: "
        "assigned from train.csv exactly as prepare does.",
    ),
    config: Path | None = config_option(),
) -> None:
    """Train one heatmap locator per series type and measure it on the held-out fold.

    Example: spinegrade train-locator data/phantom --out runs/locator

    Writes OUT/<series type>.safetensors + .json (and <series type>_refine.* with --refine-mm),
    OUT/config.json, OUT/versions.json and OUT/metrics.json
    (median / 90th-percentile error in mm, slice error and share within 5 mm on the validation studies).
    A series type already trained in OUT is kept on a re-run unless --overwrite.
    """
    from rich.console import Console

    from spinegrade.localization.train import train_locator

    settings = LocatorSettings(
        size=size,
        depth=depth,
        arch=arch,
        epochs=epochs,
        samples_per_epoch=samples_per_epoch,
        refine_mm=refine_mm,
        batch_size=batch_size,
        lr=lr,
        fold=fold,
        seed=seed,
    )
    metrics = train_locator(
        data_dir,
        out,
        settings,
        accelerator=accelerator,
        devices=int(devices) if devices.isdigit() else devices,
        workers=workers,
        threads=threads,
        overwrite=overwrite,
        strategy=strategy,
        num_nodes=num_nodes,
        folds_file=folds_file,
        logger=logger,
    )
    if not metrics:  # a DDP rank other than 0: rank 0 reports
        return
    console = Console()
    for series_type, m in metrics["by_series_type"].items():
        console.print(
            f"{series_type}: median {m['median_mm']:.1f} mm, p90 {m['p90_mm']:.1f} mm, "
            f"{m['within_5mm_share']:.0%} within 5 mm, mean slice error {m['mean_slice_error']:.2f}"
        )
    console.print(f"wrote {out}/metrics.json")
