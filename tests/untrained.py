"""Tiny untrained models saved as a classifier run and a locator folder, for the prediction-side tests
(bundle, shard/merge, wheelhouse): built with the training and locator code, so they load as trained ones."""

from __future__ import annotations

from pathlib import Path

import torch

from spinegrade.crops.extract import DEFAULT_CROP_MM
from spinegrade.localization.model import LocatorSettings, build_net
from spinegrade.localization.targets import REFINERS, TASKS
from spinegrade.localization.train import model_info, task_settings
from spinegrade.localization.train import save_model as save_locator
from spinegrade.models.classifier import create_model
from spinegrade.training.checkpoint import save_model

ARCH = "resnet10t"


def write_models(root: Path, seed: int = 0) -> tuple[Path, Path]:
    """(run folder, locator folder) under root: resnet10t on 3 x 32 px crops, 64 px locators and the
    sagittal refiners (32 px windows of 3 slices)."""
    torch.manual_seed(seed)
    run, locator = root / "run", root / "locator"
    run.mkdir(parents=True)
    locator.mkdir()
    settings = {"conditioning": "film", "mean": 0.3, "std": 0.2}
    info = {"arch": ARCH, "in_chans": 3, "k": 3, "size": 32, "crop_mm": DEFAULT_CROP_MM, "model": settings}
    save_model(run, "best", create_model(ARCH, in_chans=3, **settings), info)
    located = LocatorSettings(
        size=64, depth=8, decoder_channels=16, refine_mm=32.0, refine_size=32, refine_depth=3
    )
    for task in (*TASKS, *REFINERS):
        settings = task_settings(task, located)
        save_locator(locator, task, build_net(task, settings), model_info(task, settings, 0))
    return run, locator
