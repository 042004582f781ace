"""Model files of a run: NAME.safetensors (weights) + NAME.json (how to rebuild the model), never pickle.

`load_run(run_dir)` rebuilds the kept model of a run for prediction. During training, ModelExport writes
the files whenever the validation challenge score improves (lower is better), or after every epoch when the
run keeps its last epoch.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import lightning.pytorch as pl
from safetensors.torch import load_file, save

from spinegrade.errors import DataError
from spinegrade.fileio import write_atomic
from spinegrade.models.classifier import SpineClassifier, create_model

if TYPE_CHECKING:
    from spinegrade.training.module import GradingModule

BEST = "best"


def save_model(run_dir: Path, name: str, model: SpineClassifier, info: dict[str, Any]) -> None:
    """Write run_dir/name.safetensors, then run_dir/name.json (which marks it done), each atomically."""
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    write_atomic(run_dir / f"{name}.safetensors", save(tensors, metadata={"arch": str(info.get("arch"))}))
    write_atomic(run_dir / f"{name}.json", json.dumps(info, indent=2) + "\n")


def load_run(
    run_dir: str | os.PathLike[str], *, name: str = BEST, device: str = "cpu"
) -> tuple[SpineClassifier, dict[str, Any]]:
    """The model of a run (eval mode) and its info (best.json: arch, in_chans, k, size, crop_mm,
    normalisation, model settings, epoch, score...). Reads safetensors + JSON only.

    The model takes raw cache crops (B, k, S, S) and condition/level indices into vocab.CONDITIONS/LEVELS;
    `model.predict_proba(x, condition, level)` gives probabilities in vocab.SEVERITIES order.
    """
    run_dir = Path(run_dir)
    info_path, weights_path = run_dir / f"{name}.json", run_dir / f"{name}.safetensors"
    for path in (info_path, weights_path):
        if not path.is_file():
            raise DataError(f"{path} is missing: {run_dir} holds no finished model (run `spinegrade train`)")
    try:
        info = json.loads(info_path.read_text())
        model = create_model(info["arch"], in_chans=int(info["in_chans"]), **info["model"])
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise DataError(f"{info_path} cannot describe a model ({type(e).__name__}: {e})") from None
    try:
        model.load_state_dict(load_file(str(weights_path), device="cpu"))
    except RuntimeError as e:
        raise DataError(f"{weights_path} does not match the model of {info_path}: {e}") from None
    return model.eval().to(device), info


class ModelExport(pl.Callback):
    """After each validation, save the model as NAME.safetensors/json: keep="best" only when val_score beats
    the best so far, keep="last" every time (the run ends holding its last epoch).

    Its state (kept score and epoch) is part of Lightning's checkpoint, so a resumed run keeps its choice.
    """

    def __init__(self, run_dir: Path, info: dict[str, Any], name: str = BEST, keep: str = "best") -> None:
        self.run_dir, self.info, self.name, self.keep = run_dir, info, name, keep
        self.best_score, self.best_epoch = math.inf, -1

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        module = cast("GradingModule", pl_module)  # the module this callback is given to
        score = module.val_result.get("score", math.nan)
        if trainer.sanity_checking or (self.keep == "best" and not score < self.best_score):
            return
        self.best_score, self.best_epoch = float(score), int(trainer.current_epoch)
        if trainer.is_global_zero:
            info = {**self.info, "epoch": self.best_epoch, "score": self.best_score}
            save_model(self.run_dir, self.name, module.kept_model, info)

    def state_dict(self) -> dict[str, Any]:
        return {"best_score": self.best_score, "best_epoch": self.best_epoch}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.best_score = float(state_dict["best_score"])
        self.best_epoch = int(state_dict["best_epoch"])
