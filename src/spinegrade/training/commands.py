"""The `spinegrade train` command (torch, timm and Lightning are imported only when it runs)."""

from __future__ import annotations

import re
from dataclasses import fields
from pathlib import Path

import typer

from spinegrade.configfile import config_option
from spinegrade.errors import DataError
from spinegrade.models.registry import Recipe, list_models, recipe_for
from spinegrade.training.runs import TrainConfig

# The CLI's defaults are TrainConfig's (the CPU defaults); runs.py is light, so --help stays fast.
D = {f.name: f.default for f in fields(TrainConfig)}


def _show(value: object) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, float) and 0 < value < 0.01:
        return f"{value:.0e}".replace("e-0", "e-")  # 0.002 -> 2e-3, as the registry writes it
    return f"{value:g}" if isinstance(value, float) else str(value)


_NUMBERED = re.compile(r"(.*\D)(\d+)")


def _follows(previous: str, arch: str) -> bool:
    a, b = _NUMBERED.fullmatch(previous), _NUMBERED.fullmatch(arch)
    return a is not None and b is not None and a[1] == b[1] and int(b[2]) == int(a[2]) + 1


def _names(archs: list[str]) -> str:
    """Architecture names, consecutive numbered ones joined: efficientnet_b0..4."""
    runs: list[list[str]] = []
    for arch in archs:
        if runs and _follows(runs[-1][-1], arch):
            runs[-1].append(arch)
        else:
            runs.append([arch])
    shown = []
    for run in runs:
        last = _NUMBERED.fullmatch(run[-1])
        shown.append(f"{run[0]}..{last[2]}" if len(run) > 1 and last else run[0])
    return ", ".join(shown)


def recipe_default(field: str) -> str:
    """How the registry's recipes set `field`, for a help text: the generic value, then each registered
    family that differs (read from the recipes, so --help cannot drift from them)."""
    generic = getattr(Recipe(), field)
    by_value: dict[object, list[str]] = {}
    for arch in list_models():
        value = getattr(recipe_for(arch), field)
        if value != generic:
            by_value.setdefault(value, []).append(arch)
    special = "; ".join(f"{_names(archs)}: {_show(value)}" for value, archs in by_value.items())
    return f"default: the architecture's recipe ({_show(generic)}" + (f"; {special})" if special else ")")


def _folds(text: str, n_folds: int) -> list[int]:
    if text.strip().lower() == "all":
        return list(range(n_folds))
    try:
        return [int(f) for f in text.split(",") if f.strip()]
    except ValueError:
        raise DataError(f"--folds {text!r}: give 'all', a fold number or a comma list like 0,2") from None


def train_command(
    cache: Path = typer.Argument(..., help="Crop cache folder written by `spinegrade prepare`."),
    out: Path = typer.Option(..., "--out", help="Run folder to write (RUN)."),
    arch: str = typer.Option(
        D["arch"],
        "--arch",
        help="Architecture(s), comma-separated: vgg16, densenet121, "
        "efficientnet_b0..b4, efficientnetv2_s or any timm model name.",
    ),
    imbalance: str = typer.Option(
        D["imbalance"],
        "--imbalance",
        help="none | class-weights | oversample | smote, '+' to combine (class-weights+smote), "
        "',' to compare several (none,class-weights,smote).",
    ),
    class_weights: str = typer.Option(
        D["class_weights"],
        "--class-weights",
        help="challenge (1/2/4, the score's weights) or balanced (n / (3 count)).",
    ),
    smote_space: str = typer.Option(
        D["smote_space"], "--smote-space", help="features (backbone embeddings, head fine-tuned) or pixels."
    ),
    folds: str = typer.Option(
        "0", "--fold", "--folds", help="Validation fold: a number, a comma list or 'all'."
    ),
    epochs: int | None = typer.Option(
        D["epochs"],
        "--epochs",
        help="Epochs (with --keep best, early stopping may end sooner); " + recipe_default("epochs") + ".",
    ),
    head_epochs: int = typer.Option(
        D["head_epochs"], "--head-epochs", help="Epochs of head fine-tuning (feature SMOTE)."
    ),
    batch_size: int = typer.Option(D["batch_size"], "--batch-size", help="Crops per batch (per device)."),
    lr: float | None = typer.Option(
        D["lr"],
        "--lr",
        help="Peak learning rate of AdamW (warm-up, then cosine); " + recipe_default("lr") + ".",
    ),
    patience: int = typer.Option(
        D["patience"],
        "--patience",
        help="Epochs without a better validation score before stopping (--keep best).",
    ),
    ema: float | None = typer.Option(
        D["ema"],
        "--ema",
        help="Decay of the weights' moving average that is scored and kept, e.g. 0.99 (0: none); "
        + recipe_default("ema")
        + ".",
    ),
    keep: str = typer.Option(
        D["keep"],
        "--keep",
        help="Weights kept: best (the epoch with the best validation score, which makes that score "
        "optimistic) or last (the schedule's end; an honest validation score, as cv keeps).",
    ),
    seed: int = typer.Option(D["seed"], "--seed", help="Seed of weights, sampling and augmentation."),
    workers: int = typer.Option(
        D["workers"], "--workers", help="DataLoader worker processes (0: load in the main process)."
    ),
    threads: int = typer.Option(
        D["threads"],
        "--threads",
        help="CPU threads of torch (0: one per core; 1 is faster on a busy machine).",
    ),
    precision: str = typer.Option(
        D["precision"], "--precision", help="auto (bf16/16 mixed on GPU, 32 on CPU) or a Lightning value."
    ),
    accelerator: str = typer.Option(D["accelerator"], "--accelerator", help="auto, cpu, gpu..."),
    devices: str = typer.Option(
        D["devices"], "--devices", help="Number of devices or a list (DDP when more than one)."
    ),
    strategy: str = typer.Option(D["strategy"], "--strategy", help="Lightning strategy, e.g. ddp."),
    num_nodes: int = typer.Option(
        D["num_nodes"], "--num-nodes", help="Machines taking part (DDP; each with --devices devices)."
    ),
    pretrained: bool = typer.Option(
        False, "--pretrained", help="Start from ImageNet weights (needs network)."
    ),
    weights: Path | None = typer.Option(
        None, "--weights", help="Local ImageNet weights (.safetensors or .pth)."
    ),
    conditioning: str = typer.Option(
        D["conditioning"], "--conditioning", help="How the head uses condition and level: film or concat."
    ),
    output: str = typer.Option(
        D["output"],
        "--output",
        help="softmax (three logits per crop) or ordinal (one severity score and two cut points per target).",
    ),
    side_flip: bool | None = typer.Option(
        None,
        "--side-flip/--no-side-flip",
        help="Augment with left/right mirrors that swap the side label; " + recipe_default("side_flip") + ".",
    ),
    slice_shift: float = typer.Option(
        D["slice_shift"],
        "--slice-shift",
        help="Share of training crops whose slices move by one, up or down (a locator's next-slice error; "
        "the label is kept), e.g. 0.3 (0: off).",
    ),
    mixup: float = typer.Option(
        D["mixup"],
        "--mixup",
        help="Blend each crop with another of its condition group, and their losses, with a weight drawn "
        "from Beta(alpha, alpha): the alpha, e.g. 0.4 (0: no mixup).",
    ),
    distill: float = typer.Option(
        D["distill"],
        "--distill",
        help="Share of each training target taken from --teacher's probabilities of the crop, e.g. 0.5 "
        "(0: the grades only).",
    ),
    teacher: Path | None = typer.Option(
        None,
        "--teacher",
        help="What --distill learns from: a finished run of the same fold, or a submission CSV of "
        "probabilities per target (e.g. a phantom's oracle_submission.csv).",
    ),
    prior_shift: bool = typer.Option(
        D["prior_shift"],
        "--prior-shift/--no-prior-shift",
        help="Correct probabilities back to the score's class distribution after balanced weights, "
        "oversampling or SMOTE (recorded in best.json, applied in validation and predict).",
    ),
    loss: str = typer.Option(
        D["loss"],
        "--loss",
        help="weighted-ce (all rows pooled) or score (condition groups weighted as the challenge does).",
    ),
    any_severe: float = typer.Option(
        D["any_severe"],
        "--any-severe",
        help="Weight of a per-study any_severe_spinal term (with --loss score); batches then keep each "
        "study's spinal crops together.",
    ),
    logger: str = typer.Option(
        D["logger"],
        "--logger",
        help="Training curves in RUN/logs: csv (Lightning's CSVLogger) or tensorboard (pip install "
        "'spinegrade[tensorboard]'; tensorboard --logdir RUN/logs). metrics.csv is written either way.",
    ),
    resume: bool = typer.Option(
        False, "--resume", help="Continue the run(s) in --out from their last checkpoint."
    ),
    config: Path | None = config_option(),
) -> None:
    """Train the severity classifier on a crop cache and score it on the validation fold.

    Example: spinegrade train cache/ --arch efficientnet_b0 --imbalance class-weights --fold 0 --out runs/b0

    Compare: spinegrade train cache/ --arch vgg16,densenet121 --imbalance none,class-weights --out runs/cmp
    """
    from spinegrade.crops.cache import CropCache
    from spinegrade.training.compare import train
    from spinegrade.training.imbalance import parse_imbalance_list
    from spinegrade.training.runs import TrainConfig

    settings = TrainConfig(  # `config` is the --config file, read into the defaults before this runs
        class_weights=class_weights,
        smote_space=smote_space,
        epochs=epochs,
        head_epochs=head_epochs,
        batch_size=batch_size,
        lr=lr,
        patience=patience,
        keep=keep,
        ema=ema,
        seed=seed,
        workers=workers,
        threads=threads,
        precision=precision,
        accelerator=accelerator,
        devices=devices,
        strategy=strategy,
        num_nodes=num_nodes,
        pretrained=pretrained,
        weights=str(weights) if weights else None,
        conditioning=conditioning,
        output=output,
        side_flip=side_flip,
        slice_shift=slice_shift,
        mixup=mixup,
        distill=distill,
        teacher=str(teacher) if teacher else None,
        prior_shift=prior_shift,
        loss=loss,
        any_severe=any_severe,
        logger=logger,
    )
    n_folds = int(CropCache.open(cache).meta.get("n_folds", 5))
    train(
        cache,
        out,
        settings,
        archs=[a.strip() for a in arch.split(",") if a.strip()],
        imbalances=parse_imbalance_list(imbalance),
        folds=_folds(folds, n_folds),
        resume=resume,
    )
