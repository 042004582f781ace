"""LightningModules: end-to-end training of a SpineClassifier, and fine-tuning of its head on embeddings.

Both score the validation fold the same way after every epoch: the challenge score of its predictions
(spinegrade.evaluation.score.challenge_score, lower is better; logged as `val_score` for early stopping
and best-model selection) with its parts, accuracy, macro F1 and the validation loss. The predictions are
first moved back to the training distribution the score expects (imbalance.prior_shift; predict applies
the same factors from best.json). Under DDP the predictions of all ranks are gathered first, so every rank
computes the same score.

Two losses (`loss`): `weighted-ce` pools every row in one class-weighted cross-entropy (spinal rows are
a fifth of the rows, so about 20% of it); `score` weights the batch as the challenge does: the class-weighted
cross-entropy of each condition group (spinal, foraminal, subarticular) and, with `any_severe` > 0, a
per-study any_severe_spinal term (the max severe probability over the study's spinal rows in the batch,
a weighted binary log loss, scaled by `any_severe`), averaged over the terms the batch has. With
`any_severe` > 0 training batches keep each study's spinal crops together (StudyGroupedSampler), so the
max is taken over a study's levels, not over the one or two of them a random batch would hold.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, cast

import lightning.pytorch as pl
import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from lightning.pytorch.utilities.types import OptimizerLRSchedulerConfig
from rich.console import Console
from torch.optim.lr_scheduler import CosineAnnealingLR, LinearLR, SequentialLR

from spinegrade.evaluation.metrics import classification_metrics
from spinegrade.evaluation.score import challenge_score
from spinegrade.models.classifier import SpineClassifier
from spinegrade.runtime import adamw
from spinegrade.training.augment import GROUP_INDEX, GROUPS, AugmentConfig, augment_batch, mixup_batch
from spinegrade.training.datamodule import as_batch
from spinegrade.training.loggers import log_epoch
from spinegrade.training.runs import LOSSES, METRIC_COLUMNS, METRICS, STAGES, write_csv
from spinegrade.vocab import CONDITIONS, SEVERITIES, make_row_id

TARGET_KEYS = ["study_id", "condition", "level"]
_SPINAL = CONDITIONS.index("spinal_canal_stenosis")
_SEVERE = SEVERITIES.index("severe")


def score_loss(
    logits: torch.Tensor,
    severity: torch.Tensor,
    condition: torch.Tensor,
    study: torch.Tensor,
    class_weights: torch.Tensor,
    any_severe: float = 0.0,
    label_smoothing: float = 0.0,
) -> torch.Tensor:
    """The batch loss weighted as the challenge score (module doc). study: the rows' study ids (-1 for
    synthetic rows, which stay out of the any_severe term)."""
    nll = F.cross_entropy(logits, severity, reduction="none", label_smoothing=label_smoothing)
    weight = class_weights[severity]
    group = GROUP_INDEX.to(condition.device)[condition]
    totals = torch.zeros(len(GROUPS), device=logits.device).index_add(0, group, weight * nll)
    norms = torch.zeros(len(GROUPS), device=logits.device).index_add(0, group, weight)
    present = norms > 0
    terms = [totals[present] / norms[present]]
    spinal = (condition == _SPINAL) & (study >= 0)
    if any_severe > 0 and spinal.any():
        ids, inverse = torch.unique(study[spinal], return_inverse=True)
        severe = logits[spinal].float().softmax(dim=1)[:, _SEVERE]
        best = severe.new_zeros(len(ids)).scatter_reduce(0, inverse, severe, "amax", include_self=False)
        label = severe.new_zeros(len(ids)).scatter_reduce(
            0, inverse, (severity[spinal] == _SEVERE).float(), "amax", include_self=False
        )
        w = weight.new_zeros(len(ids)).scatter_reduce(0, inverse, weight[spinal], "amax", include_self=False)
        bce = F.binary_cross_entropy(best.clamp(1e-7, 1 - 1e-7), label, reduction="none")
        terms.append(any_severe * (w * bce).sum(0, keepdim=True) / w.sum())
    return torch.cat(terms).mean()


def prediction_frame(index: pd.DataFrame, rows: np.ndarray, probs: np.ndarray) -> pd.DataFrame:
    """Predictions of cache rows -> the frame challenge_score takes, one row per (study, condition, level)
    (duplicates averaged): DataFrame[study_id, condition, level, severity, normal_mild, moderate, severe]."""
    frame = index.iloc[rows][[*TARGET_KEYS, "severity"]].reset_index(drop=True)
    frame[list(SEVERITIES)] = probs
    aggregations = {"severity": "first", **{s: "mean" for s in SEVERITIES}}
    return frame.groupby(TARGET_KEYS, sort=False, as_index=False).agg(aggregations)


def submission_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """A prediction frame in the submission's format: row_id, normal_mild, moderate, severe."""
    row_id = [make_row_id(*key) for key in frame[TARGET_KEYS].itertuples(index=False)]
    return pd.DataFrame({"row_id": row_id, **{s: frame[s].to_numpy() for s in SEVERITIES}})


def evaluate(frame: pd.DataFrame) -> dict[str, Any]:
    """Challenge score with its parts + headline classification metrics of a prediction frame."""
    probs = frame[list(SEVERITIES)].to_numpy(np.float64)
    metrics = classification_metrics(frame["severity"].to_numpy(np.int64), probs)
    auc = {f"auc_{s}": metrics["per_class"][s]["roc_auc"] for s in SEVERITIES}
    return {
        **challenge_score(frame),
        "accuracy": metrics["accuracy"],
        "balanced_accuracy": metrics["balanced_accuracy"],
        "macro_f1": metrics["macro_f1"],
        **auc,
    }


class ScoredModule(pl.LightningModule):
    """Shared by both stages: loss, validation scoring, AdamW with a warm-up + cosine schedule."""

    class_weights: torch.Tensor  # buffers
    log_shift: torch.Tensor

    def __init__(
        self,
        model: SpineClassifier,
        *,
        cache_index: pd.DataFrame,
        lr: float,
        weight_decay: float,
        warmup_epochs: float,
        class_weights: np.ndarray | None,
        prior_shift: np.ndarray | None = None,
        loss: str = "weighted-ce",
        any_severe: float = 0.0,
        label_smoothing: float = 0.0,
    ) -> None:
        super().__init__()
        if loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}")
        self.model = model
        self.cache_index = cache_index
        self.lr, self.weight_decay, self.warmup_epochs = lr, weight_decay, warmup_epochs
        self.loss_name, self.any_severe, self.label_smoothing = loss, any_severe, label_smoothing
        weights = torch.ones(len(SEVERITIES)) if class_weights is None else torch.as_tensor(class_weights)
        self.register_buffer("class_weights", weights.float(), persistent=False)
        shift = np.ones((len(CONDITIONS), len(SEVERITIES))) if prior_shift is None else prior_shift
        self.register_buffer("log_shift", torch.as_tensor(np.log(shift)).float(), persistent=False)
        self.val_result: dict[str, Any] = {}
        self._outputs: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
        self._loss_sum = torch.zeros(2)

    def logits(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        raise NotImplementedError

    @property
    def kept_model(self) -> SpineClassifier:
        """The model that validation scores and the run exports (GradingModule: its EMA when it has one)."""
        return self.model

    def trainable(self) -> list[torch.nn.Parameter]:
        """The parameters the optimizer updates: those that require gradients (HeadModule: the head)."""
        return [p for p in self.model.parameters() if p.requires_grad]

    def loss(self, logits: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        severity = batch["severity"]
        if self.loss_name == "weighted-ce":
            return F.cross_entropy(
                logits.float(), severity, weight=self.class_weights, label_smoothing=self.label_smoothing
            )
        return score_loss(
            logits.float(),
            severity,
            batch["condition"],
            batch["study"],
            self.class_weights,
            self.any_severe,
            self.label_smoothing,
        )

    def on_train_epoch_start(self) -> None:
        self._loss_sum = torch.zeros(2, device=self.device)

    def training_loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.loss(self.logits(batch), batch)

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss = self.training_loss(batch)
        self.log("train/loss", loss, on_step=True, on_epoch=False, batch_size=len(batch["severity"]))
        self._loss_sum += torch.stack(
            [loss.detach() * len(batch["severity"]), loss.new_tensor(len(batch["severity"]))]
        )
        return loss

    def epoch_train_loss(self) -> float:
        """Mean training loss of the epoch so far, over all ranks (a collective call under DDP)."""
        total = self.trainer.strategy.reduce(self._loss_sum, reduce_op="sum")
        return float(total[0] / total[1].clamp(min=1))

    def on_validation_epoch_start(self) -> None:
        self._outputs = []

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        logits = self.logits(batch).float()
        loss = F.cross_entropy(logits, batch["severity"], weight=self.class_weights, reduction="none")
        shifted = logits + self.log_shift[batch["condition"]]  # p ~ p_model * factor (prior shift)
        self._outputs.append((batch["row"], shifted.softmax(dim=1), loss))

    def on_validation_epoch_end(self) -> None:
        rows, probs, losses = (torch.cat(parts) for parts in zip(*self._outputs, strict=True))
        if self.trainer.world_size > 1:
            rows, probs, losses = (
                cast(torch.Tensor, self.all_gather(t)).flatten(0, 1) for t in (rows, probs, losses)
            )
        row_ids, first = np.unique(rows.cpu().numpy(), return_index=True)  # DDP pads with repeated rows
        probs_np = probs.cpu().numpy()[first]
        severity = self.cache_index["severity"].to_numpy(np.int64)[row_ids]
        # The per-row losses carry their class weight already: weighted mean = sum / sum of weights.
        val_loss = float(losses.cpu().numpy()[first].sum() / self.class_weights.cpu().numpy()[severity].sum())
        self.val_result = {
            "val_loss": val_loss,
            **evaluate(prediction_frame(self.cache_index, row_ids, probs_np)),
        }
        self.log("val_score", self.val_result["score"], sync_dist=False, logger=False)  # loggers: MetricsLog
        self._outputs = []

    def configure_optimizers(self) -> OptimizerLRSchedulerConfig:
        optimizer = adamw(self.trainable(), lr=self.lr, weight_decay=self.weight_decay)
        total = max(int(self.trainer.estimated_stepping_batches), 1)
        steps_per_epoch = total / max(self.trainer.max_epochs or 1, 1)
        warmup = min(max(int(self.warmup_epochs * steps_per_epoch), 1), total)
        schedule = SequentialLR(
            optimizer,
            [
                LinearLR(optimizer, start_factor=0.01, total_iters=warmup),
                CosineAnnealingLR(optimizer, T_max=max(total - warmup, 1), eta_min=self.lr * 0.01),
            ],
            milestones=[warmup],
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}


class GradingModule(ScoredModule):
    """End-to-end training on crops with batch augmentation on the device; channels_last inputs.

    ema > 0 keeps an exponential moving average of the weights and batch-norm statistics (timm's ModelEmaV3,
    with its decay warm-up), which validation scores and the run exports: from-scratch training swings from
    epoch to epoch, and the average smooths the epochs a run that keeps its last one ends on (the
    EfficientNet recipe uses it; models.registry has the figures). It is a submodule, so last.ckpt carries
    it for --resume.
    """

    teacher_targets: torch.Tensor  # buffer: (cache rows, 3) probabilities when distilling

    def __init__(
        self,
        model: SpineClassifier,
        *,
        augment: AugmentConfig,
        channels_last: bool = True,
        ema: float = 0.0,
        teacher_targets: np.ndarray | None = None,
        distill: float = 0.0,
        **kwargs: Any,
    ) -> None:
        from timm.utils import ModelEmaV3

        super().__init__(model, **kwargs)
        self.augment = augment
        self.distill = distill if teacher_targets is not None else 0.0
        targets = torch.zeros(0, 3) if teacher_targets is None else torch.as_tensor(teacher_targets)
        self.register_buffer("teacher_targets", targets.float(), persistent=False)
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.model.to(memory_format=self.memory_format)
        self.ema = ModelEmaV3(self.model, decay=ema, use_warmup=True) if ema > 0 else None

    @property
    def kept_model(self) -> SpineClassifier:
        return self.model if self.ema is None else self.ema.module

    def on_train_batch_end(self, outputs: Any, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        if self.ema is not None:
            self.ema.update(self.model, step=self.global_step)

    def on_after_batch_transfer(self, batch: dict[str, torch.Tensor], dataloader_idx: int) -> dict:
        x = batch["x"].float()
        if self.trainer.training:
            x, batch["condition"] = augment_batch(x, batch["condition"], self.augment, batch.get("axial"))
            if self.augment.mixup > 0:
                x, batch["partner"], weight = mixup_batch(x, batch["condition"], self.augment.mixup)
                batch["mix_weight"] = torch.tensor(weight)
        batch["x"] = x.contiguous(memory_format=self.memory_format)
        return batch

    def target_loss(self, logits: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The loss of the grades, blended with the cross-entropy to the teacher's probabilities of the
        rows' crops when distilling (training.distill)."""
        loss = self.loss(logits, batch)
        if not self.distill:
            return loss
        taught = self.teacher_targets[batch["row"]]
        soft = -(taught * logits.float().log_softmax(dim=1)).sum(dim=1).mean()
        return torch.lerp(loss, soft, self.distill)

    def training_loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The loss; under mixup the blend of the crop's and its partner's target losses (augment doc)."""
        if "partner" not in batch:
            return self.target_loss(self.logits(batch), batch)
        features = self.model.embed(batch["x"])
        partner, weight = batch["partner"], batch["mix_weight"]
        other = {key: batch[key][partner] for key in ("severity", "condition", "level", "study", "row")}
        own_loss = self.target_loss(self.model.head(features, batch["condition"], batch["level"]), batch)
        other_loss = self.target_loss(self.model.head(features, other["condition"], other["level"]), other)
        return torch.lerp(other_loss, own_loss, weight.to(own_loss))

    def logits(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        model = self.model if self.training else self.kept_model
        return model(batch["x"], batch["condition"], batch["level"])


class HeadModule(ScoredModule):
    """Fine-tunes only model.head on precomputed (real and synthetic) embeddings; the backbone is frozen."""

    def __init__(self, model: SpineClassifier, **kwargs: Any) -> None:
        super().__init__(model, **kwargs)
        self.model.backbone.requires_grad_(False)

    def logits(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.model.head(batch["x"].float(), batch["condition"], batch["level"])


@torch.no_grad()
def run_model(
    model: SpineClassifier, dataset: torch.utils.data.Dataset, *, what: str, batch_size: int, device: str
) -> tuple[np.ndarray, np.ndarray]:
    """(rows, outputs) of a dataset in order, in eval mode: what='probs' (n, 3) or 'embed' (n, features)."""
    model.eval().to(device)
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, collate_fn=as_batch)
    rows, outputs = [], []
    for batch in loader:
        x = batch["x"].to(device).float()
        if what == "embed":
            out = model.embed(x)
        else:
            out = model.predict_proba(x, batch["condition"].to(device), batch["level"].to(device))
        rows.append(batch["row"].numpy())
        outputs.append(out.float().cpu().numpy())
    return np.concatenate(rows), np.concatenate(outputs)


class MetricsLog(pl.Callback):
    """Appends one row per validated epoch to metrics.csv (rewritten atomically) and prints one line.

    On a resumed run, rows of this stage from the restored epoch on are dropped first (they belonged to
    the interrupted attempt), as are rows of later stages.
    """

    def __init__(self, run_dir: Path, *, stage: str, prior_score: float, console: Console) -> None:
        if stage not in STAGES:
            raise ValueError(f"stage must be one of {STAGES}")
        self.path = run_dir / METRICS
        self.stage, self.prior_score, self.console = stage, prior_score, console
        self.rows: list[dict[str, Any]] = []
        self._started = time.perf_counter()

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        old = pd.read_csv(self.path) if self.path.is_file() else pd.DataFrame(columns=METRIC_COLUMNS)
        order = old["stage"].map(STAGES.index)
        keep = (order < STAGES.index(self.stage)) | (
            (old["stage"] == self.stage) & (old["epoch"] < trainer.current_epoch)
        )
        self.rows = old[keep].to_dict("records")

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._started = time.perf_counter()

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        module = cast(ScoredModule, pl_module)  # the module this callback is given to
        result = module.val_result
        row = {
            "stage": self.stage,
            "epoch": trainer.current_epoch,
            "train_loss": module.epoch_train_loss(),
            **{c: result.get("score" if c == "val_score" else c) for c in METRIC_COLUMNS[3:11]},
            "prior_score": self.prior_score,
            "lr": trainer.optimizers[0].param_groups[0]["lr"],
            "seconds": round(time.perf_counter() - self._started, 2),
        }
        self.rows.append(row)
        epoch_metrics = {
            f"val/{c.removeprefix('val_')}": row[c] for c in METRIC_COLUMNS[3:12] if row[c] is not None
        }
        log_epoch(
            trainer.loggers,
            {"epoch": row["epoch"], "train/epoch_loss": row["train_loss"], **epoch_metrics},
            trainer.global_step,
            layout=len(self.rows) == 1,
        )
        if not trainer.is_global_zero:
            return
        write_csv(self.path, pd.DataFrame(self.rows, columns=METRIC_COLUMNS))
        stage = "" if self.stage == "train" else f"{self.stage} "
        self.console.print(
            f"{stage}epoch {trainer.current_epoch + 1:>3}/{trainer.max_epochs}  "
            f"train loss {row['train_loss']:.4f}  val loss {row['val_loss']:.4f}  "
            f"score {row['val_score']:.4f} (prior {self.prior_score:.4f})  "
            f"acc {row['accuracy']:.3f}  macro F1 {row['macro_f1']:.3f}  {row['seconds']:.1f} s",
            highlight=False,
            soft_wrap=True,
        )
