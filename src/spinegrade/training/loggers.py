"""Training curves for watching a run while it trains: Lightning's CSV or TensorBoard logger.

Classifier and locator training both log the step-level loss (`train/loss`) and learning rate
(`lr-AdamW`, Lightning's LearningRateMonitor) every LOG_EVERY_N_STEPS steps; the classifier adds its
epoch-level validation score beside the training fold's prior (`val/score`, `val/prior_score`, and the
score's parts; training.module.MetricsLog), which TensorBoard draws on one chart (custom scalars).
Files go to RUN/logs/<name>/ (csv: metrics.csv; tensorboard: event files, `tensorboard --logdir RUN/logs`).
The run's own metrics.csv (one row per epoch) is written whichever logger is chosen.

Light at import (no Lightning): the CLI and TrainConfig read LOGGERS.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from spinegrade.errors import DataError

if TYPE_CHECKING:
    from lightning.pytorch import Callback
    from lightning.pytorch.loggers import Logger

LOGGERS: Final = ("csv", "tensorboard")
LOG_DIR: Final = "logs"
# Often enough for a curve on the demo's short epochs (26 classifier steps), rarely enough to cost nothing.
LOG_EVERY_N_STEPS: Final = 10
SCORE_TAGS: Final = ("val/score", "val/prior_score")


def check_logger(kind: str) -> None:
    """DataError unless `kind` is a known logger whose package is installed."""
    if kind not in LOGGERS:
        raise DataError(f"logger {kind!r} unknown; use one of {', '.join(LOGGERS)}")
    if kind == "tensorboard":
        try:
            import tensorboard  # noqa: F401
        except ImportError:
            raise DataError(
                "--logger tensorboard needs the tensorboard package: pip install 'spinegrade[tensorboard]'"
            ) from None


def training_logger(kind: str, run_dir: Path, name: str) -> tuple[Logger, list[Callback]]:
    """The Lightning logger writing to run_dir/logs/<name>/ and the callbacks it needs (the lr monitor)."""
    from lightning.pytorch.callbacks import LearningRateMonitor
    from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

    check_logger(kind)
    if kind == "tensorboard":
        logger: Logger = TensorBoardLogger(run_dir, name=LOG_DIR, version=name, default_hp_metric=False)
    else:
        logger = CSVLogger(run_dir, name=LOG_DIR, version=name)
    return logger, [LearningRateMonitor(logging_interval="step")]


def log_epoch(loggers: list[Any], metrics: dict[str, float], step: int, *, layout: bool) -> None:
    """Epoch-level metrics at the global step; layout=True also tells TensorBoard to chart SCORE_TAGS
    together (once per run, at its first epoch)."""
    from lightning.pytorch.loggers import TensorBoardLogger

    for logger in loggers:
        if layout and isinstance(logger, TensorBoardLogger):
            chart = {"validation": {"score beside the prior": ["Multiline", list(SCORE_TAGS)]}}
            logger.experiment.add_custom_scalars(chart)
        logger.log_metrics(metrics, step=step)
