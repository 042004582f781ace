"""Train one classifier run on a crop cache (training.compare trains grids of them and compares them).

One run (RUN/): config.json, versions.json, metrics.csv, best.safetensors + best.json (the kept epoch:
`keep` "best", chosen on the validation score with early stopping, which makes that score optimistic, or
"last", the schedule's end, as cv keeps), last.ckpt (for --resume, loaded with
torch.load(weights_only=True)), val_predictions.csv (submission format) and val_score.json. With several
folds each goes to RUN/fold<i>/, with several combinations to RUN/<arch>__<imbalance>/ (training.compare).

SMOTE in feature space (the default for `smote`) runs in two stages: (1) the whole network is trained
end-to-end on the real crops (cross-entropy, with class weights if asked), its kept epoch saved as
backbone.safetensors; (2) the embeddings of the training fold are resampled with SMOTE (imbalance.py) and
the head alone is fine-tuned on real + synthetic embeddings with the backbone frozen, for --head-epochs;
its kept epoch becomes best.safetensors. `--smote-space pixels` instead adds
synthetic crops interpolated between flattened training crops and trains end-to-end on both. The
validation fold never enters SMOTE, the class weights, the sampler or the input statistics.

best.json also records what prediction needs beyond the weights: the training fold's per-level priors
(challenge-weighted, for targets that cannot be graded), `side_flip` (whether mirrored views were
trained on, which --tta requires) and the prior-shift factors that move the model's probabilities back to
the distribution the score expects after balanced weights, oversampling or SMOTE (imbalance.prior_shift;
applied in validation and in predict). val_predictions.csv holds the corrected predictions,
val_predictions_raw.csv the model's own, and val_score.json both scores (`score`, `score_raw`).

A `train_cache` (same fold plan) supplies the training rows instead of the cache: crops of the same targets
cut at other points (cv's jittered or located points), while validation stays on the cache's labelled
crops. lr, warm-up and epochs left unset come from the architecture's recipe (models.registry). The fold
plan (CACHE/folds.csv) is copied into every run directory.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Final

import lightning.pytorch as pl
import numpy as np
import pandas as pd
import torch
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
from lightning.pytorch.utilities import rank_zero_only
from rich.console import Console

from spinegrade.crops.cache import CropCache
from spinegrade.crops.folds import FOLDS_FILE
from spinegrade.crops.views import OWN
from spinegrade.errors import DataError
from spinegrade.evaluation.priors import level_priors
from spinegrade.evaluation.score import challenge_score
from spinegrade.fileio import write_atomic
from spinegrade.models.classifier import create_model
from spinegrade.runtime import quiet_lightning
from spinegrade.training.augment import AugmentConfig
from spinegrade.training.checkpoint import BEST, ModelExport, load_run
from spinegrade.training.datamodule import (
    AlternativeCrops,
    CropDataModule,
    CropDataset,
    Labels,
    fold_rows,
    input_stats,
)
from spinegrade.training.distill import check_teacher, teacher_targets
from spinegrade.training.imbalance import (
    apply_prior_shift,
    class_weights,
    oversample_weights,
    prior_shift,
    smote_resample,
)
from spinegrade.training.loggers import LOG_EVERY_N_STEPS, training_logger
from spinegrade.training.module import (
    GradingModule,
    HeadModule,
    MetricsLog,
    evaluate,
    prediction_frame,
    run_model,
    submission_frame,
)
from spinegrade.training.runs import (
    CONFIG,
    METRICS,
    VERSIONS,
    TrainConfig,
    versions,
    write_csv,
    write_json,
)
from spinegrade.vocab import SEVERITIES, TARGETS

LAST: Final = "last"
BACKBONE: Final = "backbone"
VAL_SCORE: Final = "val_score.json"
VAL_PREDICTIONS: Final = "val_predictions.csv"
VAL_PREDICTIONS_RAW: Final = "val_predictions_raw.csv"
# Pixel-space SMOTE holds the training fold as float32 and searches neighbours in its dimension.
PIXEL_SMOTE_MAX_BYTES: Final = 2 * 1024**3


def resolve_precision(precision: str, accelerator: str) -> str:
    """'auto' -> bf16-mixed on GPUs that support it, 16-mixed on other GPUs, 32-true on CPU."""
    if precision != "auto":
        return precision
    if accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available():
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
    return "32-true"


def _devices(devices: str) -> int | str:
    return int(devices) if devices.isdigit() else devices


def _trainer(
    config: TrainConfig,
    run_dir: Path,
    callbacks: list[pl.Callback],
    max_epochs: int | None,
    stage: str = "train",
    **kw: Any,
) -> pl.Trainer:
    logger, logging_callbacks = training_logger(config.logger, run_dir, stage)
    return pl.Trainer(
        max_epochs=max_epochs,
        accelerator=config.accelerator,
        devices=_devices(config.devices),
        strategy=config.strategy,
        num_nodes=config.num_nodes,
        # a Lightning precision name, which Lightning checks (its annotation is a Literal of them)
        precision=resolve_precision(config.precision, config.accelerator),  # type: ignore[arg-type]
        gradient_clip_val=config.grad_clip or None,
        callbacks=[*callbacks, *logging_callbacks],
        logger=logger,
        log_every_n_steps=LOG_EVERY_N_STEPS,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        default_root_dir=run_dir,
        **kw,
    )


def prior_reference(train: pd.DataFrame, val: pd.DataFrame, *, weighted: bool = True) -> dict[str, float]:
    """Challenge score on the validation rows `val` of the per-level class priors of the training rows
    `train`; weighted by 1/2/4 (the default) they are the best constant prediction under the score."""
    priors = level_priors(train, weighted=weighted)
    targets = val[["study_id", "condition", "level", "severity"]].drop_duplicates(
        ["study_id", "condition", "level"]
    )
    return challenge_score(targets.merge(priors, on=["condition", "level"], how="left"))


def _start_run_dir(run_dir: Path, config: TrainConfig, cache: CropCache) -> None:
    """Create run_dir, refusing one that holds a run, and write config.json, versions.json and the cache's
    fold plan (folds.csv)."""
    saved = run_dir / CONFIG
    # A DDP worker re-running the command: rank 0 has prepared run_dir.
    if getattr(rank_zero_only, "rank", 0) != 0:
        return
    taken = [p.name for p in (saved, run_dir / METRICS, run_dir / f"{BEST}.json") if p.exists()]
    if taken:
        raise DataError(
            f"{run_dir} already holds a run ({', '.join(taken)}); pass --resume to continue it or choose "
            "another --out"
        )
    run_dir.mkdir(parents=True, exist_ok=True)
    write_json(saved, asdict(config))
    write_json(run_dir / VERSIONS, versions())
    plan = cache.path / FOLDS_FILE
    if plan.is_file():
        write_atomic(run_dir / FOLDS_FILE, plan.read_bytes())


def _model_kwargs(config: TrainConfig, data: FoldData) -> dict[str, Any]:
    """create_model's settings beyond arch and in_chans (saved in best.json for load_run)."""
    return {"conditioning": config.conditioning, "output": config.output, "mean": data.mean, "std": data.std}


def _model_info(config: TrainConfig, cache: CropCache, data: FoldData) -> dict[str, Any]:
    """best.json's content (ModelExport adds epoch and score)."""
    model_kwargs = _model_kwargs(config, data)
    info = {
        "arch": config.arch,
        "in_chans": int(cache.meta["k"]),
        "k": int(cache.meta["k"]),
        "size": int(cache.meta["size"]),
        "crop_mm": cache.meta.get("crop_mm"),
        "views": cache.meta.get("views", [OWN]),
        "normalisation": {
            "cache": cache.meta.get("normalize"),
            "mean": model_kwargs["mean"],
            "std": model_kwargs["std"],
            "applied": "inside the model: (crop - mean) / std",
        },
        "model": model_kwargs,
        "fold": config.fold,
        "imbalance": config.imbalance,
        "class_weights": None if data.class_weights is None else data.class_weights.tolist(),
        "side_flip": config.side_flip,
        "loss": {
            "name": config.loss,
            "any_severe": config.any_severe,
            "label_smoothing": config.label_smoothing,
        },
        "priors": data.priors.to_dict("records"),
        "prior_shift": _shift_info(data.prior_shift),
        "stage": "train",
        "train_points": data.points,
        "folds_sha256": cache.meta.get("folds_sha256"),
    }
    if data.fit is not data.train:
        info["smote"] = {
            "space": "pixels",
            "n_real": len(data.train),
            "n_synthetic": len(data.fit) - len(data.train),
        }
    return info


def _shift_info(factors: np.ndarray | None) -> dict[str, Any] | None:
    """best.json's "prior_shift": per-condition factors (vocab.CONDITIONS x SEVERITIES order)."""
    if factors is None:
        return None
    return {"factors": factors.tolist(), "rule": "p ~ p_model * w_metric * q_train / (w_loss * q_seen)"}


def _prior_shift(
    config: TrainConfig, train: Labels, seen: Labels, seen_weights: np.ndarray | None, loss_weights: Any
) -> np.ndarray | None:
    """The prior-shift factors of a model fitted on `seen` (see imbalance.prior_shift); None when off."""
    if not config.prior_shift:
        return None
    return prior_shift(
        train.severity,
        train.condition,
        seen.severity,
        seen.condition,
        seen_weights=seen_weights,
        loss_weights=loss_weights,
    )


def _pixel_smote(cache: CropCache, rows: np.ndarray, labels: Labels, seed: int) -> CropDataset:
    """Training fold crops + SMOTE crops interpolated between them (flattened), held in memory.

    Refused above PIXEL_SMOTE_MAX_BYTES of float32 training crops (the real data at 128 px needs ~13 GB
    and neighbour searches in 80k dimensions): feature-space SMOTE is the one that scales.
    """
    needed = len(rows) * int(np.prod(cache.crops.shape[1:])) * 4
    if needed > PIXEL_SMOTE_MAX_BYTES:
        raise DataError(
            f"pixel-space SMOTE would hold {needed / 1024**3:.1f} GiB of training crops in memory (limit "
            f"{PIXEL_SMOTE_MAX_BYTES / 1024**3:.0f} GiB); use --smote-space features (SMOTE on backbone "
            "embeddings, the default) or --imbalance oversample"
        )
    crops = np.asarray(cache.crops[rows], dtype=np.float32)
    out = smote_resample(
        crops.reshape(len(rows), -1), labels.severity, labels.condition, labels.level, seed=seed
    )
    x = out.x.reshape(-1, *crops.shape[1:]).astype(np.float16)
    return CropDataset(x, np.arange(len(x)), labels.with_synthetic(out.condition, out.level, out.severity))


def _smote_head(
    run_dir: Path,
    config: TrainConfig,
    cache: CropCache,
    data: FoldData,
    device: torch.device,
    console: Console,
) -> None:
    """Stage 2 of feature-space SMOTE (module doc): fine-tune the head on real + synthetic embeddings.

    Runs on one device (rank 0 after a DDP fit): embeddings are small and the head is a few layers.
    """
    model, info = load_run(run_dir, name=BACKBONE, device=str(device))
    (_, train_x), (_, val_x) = (
        run_model(model, ds, what="embed", batch_size=config.batch_size * 2, device=str(device))
        for ds in (data.train, data.val)
    )
    labels = data.train.labels
    out = smote_resample(train_x, labels.severity, labels.condition, labels.level, seed=config.seed)
    smote = {"space": "features", "n_real": out.n_real, "n_synthetic": out.n_synthetic}
    seen = labels.with_synthetic(out.condition, out.level, out.severity)
    shift = _prior_shift(config, labels, seen, None, data.class_weights)
    console.print(
        f"SMOTE on {out.n_real} training embeddings: +{out.n_synthetic} synthetic; fine-tuning the head"
    )
    features = CropDataModule(
        CropDataset(out.x, np.arange(len(out.x)), seen),
        CropDataset(val_x, np.arange(len(val_x)), data.val.labels),
        batch_size=config.batch_size,
        seed=config.seed,
    )
    module = HeadModule(
        model.train(),
        cache_index=cache.index,
        lr=config.lr,
        weight_decay=config.weight_decay,
        warmup_epochs=0,
        class_weights=data.class_weights,
        prior_shift=shift,
    )
    head_info = {**info, "stage": "head", "smote": smote, "prior_shift": _shift_info(shift)}
    callbacks = [
        MetricsLog(run_dir, stage="head", prior_score=data.prior["score"], console=console),
        ModelExport(run_dir, head_info, name=BEST, keep=config.keep),
    ]
    head_config = replace(config, precision="32-true", devices="1", strategy="auto", num_nodes=1)
    trainer = _trainer(
        head_config, run_dir, callbacks, config.head_epochs, stage="head", enable_checkpointing=False
    )
    trainer.fit(module, datamodule=features)


def _finish(run_dir: Path, cache: CropCache, data: FoldData, config: TrainConfig) -> dict[str, Any]:
    """Predict the validation fold with best.safetensors (as prediction will load it) and write
    val_predictions.csv and val_score.json."""
    model, info = load_run(run_dir)
    rows, raw = run_model(model, data.val, what="probs", batch_size=config.batch_size * 2, device="cpu")
    shift = (info.get("prior_shift") or {}).get("factors")
    probs = apply_prior_shift(raw, data.val.labels.condition, None if shift is None else np.asarray(shift))
    frame, raw_frame = (prediction_frame(cache.index, rows, p) for p in (probs, raw))
    scores_raw = challenge_score(raw_frame)
    result = {
        **evaluate(frame),
        "score_raw": scores_raw["score"],
        "raw": scores_raw,
        "prior_score": data.prior["score"],
        "prior": data.prior,
        "prior_unweighted": prior_reference(data.train_index, data.val_index, weighted=False),
        "arch": config.arch,
        "imbalance": config.imbalance,
        "fold": config.fold,
        "epoch": info["epoch"],  # the kept epoch (config.keep)
        "keep": config.keep,
        "n_val_targets": len(frame),
    }
    write_csv(run_dir / VAL_PREDICTIONS, submission_frame(frame))
    write_csv(run_dir / VAL_PREDICTIONS_RAW, submission_frame(raw_frame))
    write_json(run_dir / VAL_SCORE, result)
    return result


@dataclass(frozen=True)
class FoldData:
    """Everything one fold's training uses; only `val` and `prior`'s score involve validation rows."""

    train: CropDataset  # the training fold's real crops
    fit: CropDataset  # what the model is fitted on: `train`, or `train` + pixel-SMOTE crops
    val: CropDataset
    sample_weights: np.ndarray | None  # oversampling
    class_weights: np.ndarray | None
    mean: float
    std: float
    prior: dict[str, float]  # the challenge score of the training fold's per-level priors on `val`
    priors: pd.DataFrame  # those priors (challenge-weighted), for best.json
    prior_shift: np.ndarray | None  # factors (5, 3) back to the score's distribution (imbalance.prior_shift)
    train_index: pd.DataFrame  # index rows of `train` and `val`
    val_index: pd.DataFrame
    points: str  # where the training crops were cut: labelled, jittered, located

    @classmethod
    def build(cls, cache: CropCache, config: TrainConfig, train_cache: CropCache | None = None) -> FoldData:
        source = cache if train_cache is None else train_cache
        if source.meta.get("folds_sha256") != cache.meta.get("folds_sha256"):
            raise DataError(
                f"{source.path} and {cache.path} were cut with different fold plans "
                f"({source.meta.get('folds_sha256')} vs {cache.meta.get('folds_sha256')}); "
                "cut both with the same --folds-file"
            )
        train_rows, _ = fold_rows(source, config.fold)
        _, val_rows = fold_rows(cache, config.fold)
        method = config.method
        labels = Labels.of_rows(source, train_rows)
        train = CropDataset(
            source.crops, train_rows, labels, _labelled_crops(cache, source, train_rows, config)
        )
        fit = train
        if method.sampler == "smote" and not config.feature_smote:
            fit = _pixel_smote(source, train_rows, labels, config.seed)
        mean, std = input_stats(source.crops, train_rows, config.seed)
        train_index, val_index = source.index.iloc[train_rows], cache.index.iloc[val_rows]
        sample_weights = (
            oversample_weights(labels.severity, labels.condition) if method.sampler == "oversample" else None
        )
        weights = class_weights(labels.severity, config.class_weights) if method.class_weights else None
        return cls(
            train=train,
            fit=fit,
            val=CropDataset(cache.crops, val_rows, Labels.of_rows(cache, val_rows)),
            sample_weights=sample_weights,
            class_weights=weights,
            mean=mean,
            std=std,
            prior=prior_reference(train_index, val_index),
            priors=level_priors(train_index, weighted=True),
            prior_shift=_prior_shift(config, labels, fit.labels, sample_weights, weights),
            train_index=train_index,
            val_index=val_index,
            points=str(source.meta.get("points", "labelled")),
        )


def _labelled_crops(
    cache: CropCache, source: CropCache, rows: np.ndarray, config: TrainConfig
) -> AlternativeCrops | None:
    """The labelled cache's crop of each training row's target, for config.labelled_share (None: off)."""
    if not config.labelled_share:
        return None
    if source is cache:
        raise DataError(
            "labelled_share swaps training crops cut at other points for the labelled ones: give a training "
            "cache of located or jittered points (cv does)"
        )
    if source.crops.shape[1:] != cache.crops.shape[1:]:
        raise DataError(
            f"{source.path} and {cache.path} hold crops of other shapes ({source.crops.shape[1:]} vs "
            f"{cache.crops.shape[1:]}); cut both with the same --size and -k"
        )
    both_views = "view" in cache.index and "view" in source.index  # match each crop with its own plane's
    key = ["study_id", "condition", "level", *(["view"] if both_views else [])]
    labelled = cache.index[key].reset_index(names="labelled_row").drop_duplicates(key)
    found = source.index.iloc[rows][key].merge(labelled, on=key, how="left")["labelled_row"]
    return AlternativeCrops(cache.crops, found.fillna(-1).to_numpy(np.int64), config.labelled_share)


def _grading_module(config: TrainConfig, cache: CropCache, data: FoldData) -> GradingModule:
    model = create_model(
        config.arch,
        in_chans=int(cache.meta["k"]),
        pretrained=config.pretrained,
        weights=config.weights,
        **_model_kwargs(config, data),
    )
    if model.head.ordinal is not None:  # the head's targets run in TARGETS order, as level_priors' rows
        priors = data.priors.set_index(["condition", "level"]).loc[list(TARGETS), list(SEVERITIES)]
        model.head.ordinal.init_cuts(torch.tensor(priors.to_numpy(np.float64)))
    taught = None
    if config.distill:  # train_run checked the teacher before writing the run folder
        taught = teacher_targets(config, data.train, data.train_index, data.prior_shift)
    return GradingModule(
        model,
        augment=AugmentConfig(  # side_flip resolved
            side_flip=bool(config.side_flip), slice_shift=config.slice_shift, mixup=config.mixup
        ),
        channels_last=config.channels_last,
        ema=config.ema or 0.0,
        teacher_targets=taught,
        distill=config.distill,
        cache_index=cache.index,
        lr=config.lr,
        weight_decay=config.weight_decay,
        warmup_epochs=config.warmup_epochs,
        class_weights=data.class_weights,
        prior_shift=data.prior_shift,
        loss=config.loss,
        any_severe=config.any_severe,
        label_smoothing=config.label_smoothing,
    )


def train_run(
    cache: CropCache,
    run_dir: Path,
    config: TrainConfig,
    *,
    train_cache: CropCache | None = None,
    resume: bool = False,
    console: Console | None = None,
) -> dict[str, Any]:
    """Train one model on one fold into run_dir; returns val_score.json's content ({} on DDP ranks > 0).

    train_cache: take the training rows from this cache (same fold plan; see the module doc).

    resume=True continues an interrupted run from run_dir/last.ckpt with its saved config (a finished run
    is returned as it is; a run cut before its first epoch ended starts again).
    """
    console = console or Console(soft_wrap=True)
    if resume and (run_dir / VAL_SCORE).is_file():
        console.print(f"{run_dir}: finished before, skipped")
        return json.loads((run_dir / VAL_SCORE).read_text())
    last = run_dir / f"{LAST}.ckpt"
    resuming = resume and (run_dir / CONFIG).is_file()
    if resuming:
        config = TrainConfig.from_dict(json.loads((run_dir / CONFIG).read_text()))
    config = config.resolved()
    fold_rows(cache, config.fold)  # a bad fold or teacher fails before anything is written
    if config.distill:
        check_teacher(config, cache.path / FOLDS_FILE)
    if config.threads:
        torch.set_num_threads(config.threads)
    if not resuming:
        _start_run_dir(run_dir, config, cache)
    pl.seed_everything(config.seed, workers=True, verbose=False)
    data = FoldData.build(cache, config, train_cache)
    module = _grading_module(config, cache, data)
    info = _model_info(config, cache, data)
    callbacks = [
        MetricsLog(run_dir, stage="train", prior_score=data.prior["score"], console=console),
        ModelExport(run_dir, info, name=BACKBONE if config.feature_smote else BEST, keep=config.keep),
        ModelCheckpoint(
            dirpath=run_dir, filename=LAST, monitor=None, save_top_k=1, enable_version_counter=False
        ),
    ]
    if config.keep == "best":
        callbacks.append(EarlyStopping("val_score", mode="min", patience=config.patience))
    rank_zero_only(console.print)(
        f"[bold]{config.arch}[/bold] fold {config.fold}, imbalance {config.method.name}: {len(data.fit)} "
        f"training ({data.points} points) and {len(data.val)} validation crops, k={cache.meta['k']}, "
        f"{cache.meta['size']} px, lr {config.lr:g}, {config.epochs} epochs "
        f"-> {run_dir}" + (f" (resuming from {last.name})" if resuming and last.is_file() else ""),
        highlight=False,
    )
    loaders = CropDataModule(
        data.fit,
        data.val,
        batch_size=config.batch_size,
        workers=config.workers,
        sample_weights=data.sample_weights,
        group_studies=config.any_severe > 0,
        seed=config.seed,
    )
    with quiet_lightning():
        trainer = _trainer(config, run_dir, callbacks, config.epochs)
        trainer.fit(
            module,
            datamodule=loaders,
            ckpt_path=last if resuming and last.is_file() else None,
            weights_only=True,
        )
        if not trainer.is_global_zero:
            return {}
        if config.feature_smote:
            _smote_head(run_dir, config, cache, data, trainer.strategy.root_device, console)
    result = _finish(run_dir, cache, data, config)
    console.print(
        f"{config.keep} epoch {result['epoch'] + 1}: validation score {result['score']:.4f} "
        f"(per-level prior {result['prior_score']:.4f}) -> {run_dir}",
        highlight=False,
    )
    return result
