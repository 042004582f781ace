"""The run directory's files: config.json (TrainConfig), versions.json, metrics.csv columns.

Light on purpose (no torch or Lightning at import): the CLI takes its defaults from TrainConfig.
"""

from __future__ import annotations

import json
import platform
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, Final

import pandas as pd

from spinegrade.errors import DataError
from spinegrade.fileio import write_atomic
from spinegrade.training.imbalance import CLASS_WEIGHT_MODES, Imbalance, parse_imbalance

CONFIG: Final = "config.json"
VERSIONS: Final = "versions.json"
METRICS: Final = "metrics.csv"
SMOTE_SPACES: Final = ("features", "pixels")
LOSSES: Final = ("weighted-ce", "score")  # see training.module
# Which epoch's weights a run keeps: "best" by the validation score (with early stopping), which makes that
# score optimistic (the epoch was chosen on it), or "last", the schedule's end, whose validation score is an
# honest out-of-fold figure (cv keeps the last).
KEEP_MODES: Final = ("best", "last")
STAGES: Final = ("train", "head")  # end-to-end training, then (feature-space SMOTE) head fine-tuning
METRIC_COLUMNS: Final = (
    "stage",
    "epoch",
    "train_loss",
    "val_loss",
    "val_score",
    "spinal",
    "foraminal",
    "subarticular",
    "any_severe_spinal",
    "accuracy",
    "macro_f1",
    "prior_score",
    "lr",
    "seconds",
)


def write_json(path: Path, data: Any) -> None:
    """JSON with a trailing newline, written atomically."""
    write_atomic(path, json.dumps(data, indent=2, default=str) + "\n")


def write_csv(path: Path, frame: pd.DataFrame) -> None:
    """CSV without the index, written atomically."""
    write_atomic(path, frame.to_csv(index=False))


def device_description() -> str:
    """The device training runs on, in words (GPU names, or the CPU with its thread count)."""
    import torch

    if torch.cuda.is_available():
        names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        return ", ".join(names)
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def versions() -> dict[str, str]:
    """Versions of everything that shapes a trained model, for versions.json."""
    import lightning
    import numpy
    import timm
    import torch

    import spinegrade

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "timm": timm.__version__,
        "lightning": lightning.__version__,
        "numpy": numpy.__version__,
        "spinegrade": spinegrade.__version__,
        "platform": platform.platform(),
        "device": device_description(),
    }


@dataclass(frozen=True)
class TrainConfig:
    """Settings of one run (saved as config.json). Defaults are the CPU defaults."""

    arch: str = "efficientnet_b0"
    imbalance: str = "class-weights"
    class_weights: str = "challenge"
    smote_space: str = "features"
    fold: int = 0
    epochs: int | None = None  # None: the architecture's recipe (models.registry)
    head_epochs: int = 8
    batch_size: int = 32
    lr: float | None = None  # None: the architecture's recipe
    weight_decay: float = 0.01
    warmup_epochs: float | None = None  # None: the architecture's recipe
    patience: int = 5  # early stopping, with keep "best"
    keep: str = "best"  # KEEP_MODES
    grad_clip: float = 1.0
    ema: float | None = None  # decay of the kept weights' moving average (0: none); None: the recipe
    seed: int = 0
    workers: int = 0
    threads: int = 0  # torch CPU threads; 0 keeps torch's default (one per core)
    precision: str = "auto"
    accelerator: str = "auto"
    devices: str = "auto"
    strategy: str = "auto"
    num_nodes: int = 1
    pretrained: bool = False
    weights: str | None = None
    conditioning: str = "film"
    # models.classifier.OUTPUTS: three logits, or one score and ordinal cut points (measured worse:
    # docs/results.md#classifier-levers-at-150-studies)
    output: str = "softmax"
    side_flip: bool | None = None  # left/right mirrors that swap the side label; None: the recipe
    channels_last: bool = True
    prior_shift: bool = True  # correct probabilities back to the score's training distribution
    loss: str = "weighted-ce"
    any_severe: float = 0.0  # weight of the in-batch any_severe_spinal term of loss "score"
    label_smoothing: float = 0.0  # share of each target spread over the grades (noisy readers' labels)
    slice_shift: float = 0.0  # share of training crops whose slices move by one (training.augment); 0: off
    mixup: float = 0.0  # alpha of mixup within a condition group (training.augment); 0: off
    distill: float = 0.0  # share of each target taken from the teacher's probabilities (training.distill)
    # share of training items whose crop is cut at the labelled point instead of the training cache's (cv's
    # located) point, drawn per item and epoch (training.datamodule.AlternativeCrops); 0: off
    labelled_share: float = 0.0
    teacher: str | None = None  # a run of the same fold (cv: its headline run) or a submission CSV
    logger: str = "csv"  # training curves in RUN/logs (training.loggers): csv or tensorboard

    def __post_init__(self) -> None:
        from spinegrade.models.classifier import CONDITIONINGS, OUTPUTS
        from spinegrade.training.loggers import check_logger

        check_logger(self.logger)
        parse_imbalance(self.imbalance)
        checks = {
            "class_weights": (self.class_weights in CLASS_WEIGHT_MODES, CLASS_WEIGHT_MODES),
            "smote_space": (self.smote_space in SMOTE_SPACES, SMOTE_SPACES),
            "conditioning": (self.conditioning in CONDITIONINGS, CONDITIONINGS),
            "output": (self.output in OUTPUTS, OUTPUTS),
            "loss": (self.loss in LOSSES, LOSSES),
            "keep": (self.keep in KEEP_MODES, KEEP_MODES),
        }
        for name, (ok, allowed) in checks.items():
            if not ok:
                raise DataError(f"{name} {getattr(self, name)!r} unknown; use one of {', '.join(allowed)}")
        for name in ("epochs", "batch_size"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise DataError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.any_severe < 0 or (self.any_severe > 0 and self.loss != "score"):
            raise DataError(f"any_severe {self.any_severe}: give a weight >= 0, with loss 'score'")
        if self.any_severe > 0 and parse_imbalance(self.imbalance).sampler == "oversample":
            raise DataError(
                "any_severe needs a study's spinal crops in one batch, and oversampling draws crops one at "
                "a time: use it with class weights or smote"
            )
        if not 0 <= self.label_smoothing < 1:
            raise DataError(f"label_smoothing is a share in [0, 1), got {self.label_smoothing}")
        if not 0 <= self.distill <= 1:
            raise DataError(f"distill is a share in [0, 1] (0: no teacher), got {self.distill}")
        if self.distill > 0 and self.method.sampler == "smote":
            raise DataError("distill grades real training crops only: use it without smote")
        if not 0 <= self.labelled_share <= 1:
            raise DataError(f"labelled_share is a share in [0, 1] (0: off), got {self.labelled_share}")
        if self.labelled_share > 0 and self.method.sampler == "smote":
            raise DataError("labelled_share swaps real training crops only: use it without smote")
        if not 0 <= self.slice_shift <= 1:
            raise DataError(f"slice_shift is a share in [0, 1] (0: off), got {self.slice_shift}")
        if not self.mixup >= 0:
            raise DataError(f"mixup is the alpha of a Beta draw, >= 0 (0: no mixup), got {self.mixup}")
        if self.ema is not None and not 0 <= self.ema < 1:
            raise DataError(f"ema is a decay in [0, 1) (0: no moving average), got {self.ema}")
        if self.lr is not None and not self.lr > 0:
            raise DataError(f"lr must be positive, got {self.lr}")

    def resolved(self) -> TrainConfig:
        """This config with every recipe setting it leaves unset (None) taken from the architecture's recipe
        (models.registry.Recipe: lr, warm-up, epochs, EMA, side flip)."""
        from spinegrade.models.registry import recipe_for

        recipe = recipe_for(self.arch)
        unset = (f.name for f in fields(recipe) if getattr(self, f.name) is None)
        return replace(self, **{name: getattr(recipe, name) for name in unset})

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})

    @property
    def method(self) -> Imbalance:
        return parse_imbalance(self.imbalance)

    @property
    def feature_smote(self) -> bool:
        return self.method.sampler == "smote" and self.smote_space == "features"
