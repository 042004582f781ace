"""spinegrade.training: augmentation, tiny training runs (run files, load_run, resume, SMOTE, comparison)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import typer
from safetensors import safe_open
from typer.testing import CliRunner

from spinegrade.crops.cache import CropCache, write_cache
from spinegrade.errors import DataError
from spinegrade.evaluation.priors import level_priors
from spinegrade.training import module as module_lib
from spinegrade.training import train as train_lib
from spinegrade.training.augment import (
    AugmentConfig,
    augment_batch,
    mix_partners,
    mixup_batch,
    shift_slices,
    side_flip,
)
from spinegrade.training.checkpoint import load_run
from spinegrade.training.commands import train_command
from spinegrade.training.compare import train
from spinegrade.training.datamodule import (
    AlternativeCrops,
    CropDataset,
    Labels,
    StudyGroupedSampler,
    fold_rows,
    input_stats,
)
from spinegrade.training.imbalance import apply_prior_shift, class_weights, prior_shift
from spinegrade.training.module import run_model
from spinegrade.training.runs import TrainConfig
from spinegrade.training.train import train_run
from spinegrade.vocab import CONDITIONS, GROUP_OF_CONDITION, SEVERITIES, TARGETS, make_row_id

K, SIZE, STUDIES = 3, 24, 12
RUN_FILES = (
    "config.json",
    "versions.json",
    "metrics.csv",
    "best.safetensors",
    "best.json",
    "val_predictions.csv",
    "val_predictions_raw.csv",
    "val_score.json",
)


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """Tiny models run fastest on one thread (and are not slowed down by a busy machine's other threads)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> CropCache:
    """A crop cache (brief's format 4) whose severity is drawn as a bright disc: bigger = more severe.

    Fold 0 (validation in these tests) has mostly severe rows, the other folds mostly normal ones, so
    statistics leaking from validation into training would show.
    """
    rng = np.random.default_rng(0)
    rows = []
    for s in range(STUDIES):
        fold = s % 3
        p = [0.2, 0.2, 0.6] if fold == 0 else [0.6, 0.25, 0.15]
        rows += [(1000 + s, c, lv, 7, 1, 5.0, 6.0, rng.choice(3, p=p), fold) for c, lv in TARGETS]
    columns = ["study_id", "condition", "level", "series_id", "instance_number", "x", "y", "severity", "fold"]
    index = pd.DataFrame(rows, columns=columns)
    yy, xx = np.mgrid[:SIZE, :SIZE] - (SIZE - 1) / 2
    radius = np.array([0.0, SIZE / 6, SIZE / 3])[index["severity"].to_numpy()]
    disc = np.hypot(yy, xx)[None] < radius[:, None, None]
    crops = rng.normal(0.3, 0.08, size=(len(index), K, SIZE, SIZE)) + 0.5 * disc[:, None]
    meta = {"k": K, "size": SIZE, "crop_mm": {"spinal": 48.0}, "normalize": "test", "n_folds": 3, "seed": 0}
    path = tmp_path_factory.mktemp("cache")
    return write_cache(path, [np.clip(crops, 0, 1).astype(np.float16)], index, meta)


def _config(**kw: object) -> TrainConfig:
    settings = {"arch": "test_efficientnet", "epochs": 2, "batch_size": 32, "lr": 3e-3, "warmup_epochs": 0.5}
    return TrainConfig(**{**settings, **kw})


def test_side_flip_mirrors_axial_columns_and_sagittal_slices_and_swaps_the_side() -> None:
    x = torch.arange(3 * 2 * 3 * 3, dtype=torch.float32).reshape(3, 2, 3, 3)
    names = ["left_subarticular_stenosis", "right_neural_foraminal_narrowing", "spinal_canal_stenosis"]
    condition = torch.tensor([CONDITIONS.index(c) for c in names])
    flipped, new = side_flip(x, condition, torch.tensor([True, True, True]))
    assert [CONDITIONS[i] for i in new] == [
        "right_subarticular_stenosis",
        "left_neural_foraminal_narrowing",
        "spinal_canal_stenosis",
    ]
    assert torch.equal(flipped[0], x[0].flip(-1))  # axial: image columns run right -> left
    assert torch.equal(flipped[1], x[1].flip(0))  # sagittal: the slices run along left-right
    assert torch.equal(flipped[2], x[2].flip(0))
    kept, same = side_flip(x, condition, torch.tensor([False, False, False]))
    assert torch.equal(kept, x) and torch.equal(same, condition)


def test_augmentation_is_off_by_default_for_sides_and_changes_the_pixels() -> None:
    torch.manual_seed(0)
    x = torch.rand(8, K, SIZE, SIZE)
    condition = torch.arange(8) % len(CONDITIONS)
    out, new = augment_batch(x, condition, AugmentConfig())
    assert out.shape == x.shape and torch.equal(new, condition)
    assert not torch.allclose(out, x)
    untouched, _ = augment_batch(x, condition, AugmentConfig(0, 0, 0, 0, 0, 0))
    assert torch.equal(untouched, x)


def test_slice_shift_moves_a_share_of_crops_by_one_slice_and_keeps_their_labels() -> None:
    x = torch.arange(15, dtype=torch.float32).view(3, 5, 1, 1).expand(3, 5, 2, 2).contiguous()
    moved = shift_slices(x, torch.tensor([1, -1, 0]))
    assert moved[0, :, 0, 0].tolist() == [1, 2, 3, 4, 4]  # the far end slice is repeated
    assert moved[1, :, 0, 0].tolist() == [5, 5, 6, 7, 8]
    assert torch.equal(moved[2], x[2])
    torch.manual_seed(0)
    crops = torch.rand(400, K, SIZE, SIZE)
    condition = torch.arange(400) % len(CONDITIONS)
    still = AugmentConfig(0, 0, 0, 0, 0, 0, slice_shift=0.5)
    out, new = augment_batch(crops, condition, still)
    assert torch.equal(new, condition)
    changed = (out != crops).flatten(1).any(dim=1).float().mean().item()
    assert 0.4 < changed < 0.6
    with pytest.raises(DataError, match="slice_shift"):
        TrainConfig(slice_shift=1.5)


def test_mixup_blends_each_crop_with_another_of_its_condition_group() -> None:
    torch.manual_seed(0)
    condition = torch.tensor([0, 1, 2, 3, 4, 0, 0, 1, 3])  # spinal x3, foraminal x4, subarticular x2
    partner = mix_partners(condition)
    assert sorted(partner.tolist()) == list(range(len(condition)))  # every crop is someone's partner once
    assert torch.all(partner != torch.arange(len(condition)))  # no group here has a single crop
    groups = [GROUP_OF_CONDITION[CONDITIONS[int(c)]] for c in condition]
    assert all(groups[i] == groups[int(j)] for i, j in enumerate(partner))
    assert torch.equal(mix_partners(torch.tensor([0, 1])), torch.tensor([0, 1]))  # alone: itself
    x = torch.rand(len(condition), K, SIZE, SIZE)
    mixed, partner, weight = mixup_batch(x, condition, 0.4)
    assert 0.0 <= weight <= 1.0
    torch.testing.assert_close(mixed, weight * x + (1 - weight) * x[partner])


def test_mixup_loss_blends_the_crops_and_their_partners_target_losses(cache: CropCache) -> None:
    config = _config(mixup=0.4).resolved()
    module = train_lib._grading_module(config, cache, train_lib.FoldData.build(cache, config)).eval()
    assert module.augment.mixup == 0.4
    torch.manual_seed(0)
    rows = np.arange(16)
    batch = {
        "x": torch.rand(16, K, SIZE, SIZE),
        "severity": torch.randint(0, 3, (16,)),
        "condition": torch.from_numpy(cache.index["condition"].map(CONDITIONS.index).to_numpy()[rows]),
        "level": torch.zeros(16, dtype=torch.int64),
        "study": torch.zeros(16, dtype=torch.int64),
        "row": torch.from_numpy(rows),
    }
    plain = module.training_loss(batch)
    partner = mix_partners(batch["condition"])
    keys = ("severity", "condition", "level", "study", "row")
    other = {**batch, **{k: batch[k][partner] for k in keys}}
    with torch.no_grad():
        expected = 0.3 * plain + 0.7 * module.training_loss(other)
        mixed = module.training_loss({**batch, "partner": partner, "mix_weight": torch.tensor(0.3)})
    torch.testing.assert_close(mixed, expected)
    with pytest.raises(DataError, match="mixup"):
        TrainConfig(mixup=-1.0)


def test_a_distilled_run_learns_from_its_teachers_probabilities_of_the_training_crops(
    cache: CropCache, tmp_path: Path
) -> None:
    teacher = tmp_path / "teacher"
    train_run(cache, teacher, _config(epochs=1))
    config = _config(epochs=1, distill=1.0, teacher=str(teacher)).resolved()
    data = train_lib.FoldData.build(cache, config)
    module = train_lib._grading_module(config, cache, data).eval()
    model, _ = load_run(teacher)
    rows, probs = run_model(model, data.train, what="probs", batch_size=64, device="cpu")
    np.testing.assert_allclose(module.teacher_targets[rows].numpy(), probs, atol=1e-6)
    batch = data.train.__getitems__(list(range(16)))
    batch["x"] = batch["x"].float()
    with torch.no_grad():
        logits = module.logits(batch)
        expected = -(module.teacher_targets[batch["row"]] * logits.log_softmax(dim=1)).sum(dim=1).mean()
        torch.testing.assert_close(
            module.target_loss(logits, batch), expected
        )  # distill 1: the teacher's only
    student = tmp_path / "student"
    result = train_run(cache, student, _config(epochs=1, distill=0.5, teacher=str(teacher)))
    assert np.isfinite(result["score"])
    assert json.loads((student / "config.json").read_text())["teacher"] == str(teacher)


def test_a_submission_csv_teaches_in_the_training_distribution(cache: CropCache, tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    keys = cache.index[["study_id", "condition", "level"]].drop_duplicates()
    probs = rng.dirichlet(np.ones(3), size=len(keys))
    table = pd.DataFrame(probs, columns=list(SEVERITIES))
    table.insert(0, "row_id", [make_row_id(*k) for k in keys.itertuples(index=False)])
    path = tmp_path / "teacher.csv"
    table.to_csv(path, index=False)
    config = _config(distill=0.5, teacher=str(path)).resolved()
    data = train_lib.FoldData.build(cache, config)
    module = train_lib._grading_module(config, cache, data)
    row = int(data.train.labels.row[0])
    first = cache.index.iloc[row]
    expected = table.set_index("row_id").loc[make_row_id(*first[["study_id", "condition", "level"]])]
    assert data.prior_shift is not None  # class weights: the targets move to the weighted distribution
    moved = expected.to_numpy(np.float64) / data.prior_shift[CONDITIONS.index(first["condition"])]
    np.testing.assert_allclose(module.teacher_targets[row].numpy(), moved / moved.sum(), rtol=1e-5)
    table[table["row_id"] != expected.name].to_csv(path, index=False)  # a training target left out
    with pytest.raises(DataError, match=f"teacher {path} has no row"):
        train_lib._grading_module(config, cache, data)


def test_distillation_refuses_a_teacher_of_another_fold_or_none(cache: CropCache, tmp_path: Path) -> None:
    teacher = tmp_path / "teacher"
    train_run(cache, teacher, _config(epochs=1, fold=1))
    with pytest.raises(DataError, match="trained for fold 1, not 0"):
        train_run(cache, tmp_path / "a", _config(distill=0.5, teacher=str(teacher)))
    with pytest.raises(DataError, match="another class balance"):
        train_run(cache, tmp_path / "b", _config(fold=1, imbalance="none", distill=0.5, teacher=str(teacher)))
    with pytest.raises(DataError, match="neither a submission CSV nor a run"):
        train_run(cache, tmp_path / "d", _config(distill=0.5, teacher=str(tmp_path)))
    with pytest.raises(DataError, match="distill needs a teacher"):
        train_run(cache, tmp_path / "c", _config(distill=0.5))
    assert not any(tmp_path.glob("[abcd]/*"))  # refused before anything is written
    with pytest.raises(DataError, match="without smote"):
        TrainConfig(distill=0.5, imbalance="smote")
    with pytest.raises(DataError, match=r"distill is a share in \[0, 1\]"):
        TrainConfig(distill=1.5)


def test_input_statistics_come_from_the_given_training_rows(cache: CropCache) -> None:
    train_rows, _ = fold_rows(cache, 0)
    mean, std = input_stats(cache.crops, train_rows, seed=0)
    values = np.asarray(cache.crops[train_rows], dtype=np.float64)
    assert mean == pytest.approx(values.mean(), rel=1e-5)
    assert std == pytest.approx(values.std(), rel=1e-4)
    assert mean != pytest.approx(np.asarray(cache.crops, dtype=np.float64).mean(), rel=1e-3)


def test_a_run_writes_every_file_and_load_run_reproduces_its_predictions(
    cache: CropCache, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    result = train_run(cache, run, _config(imbalance="class-weights", class_weights="balanced"))
    for name in RUN_FILES:
        assert (run / name).is_file(), name
    metrics = pd.read_csv(run / "metrics.csv")
    assert metrics["epoch"].tolist() == [0, 1]
    assert (
        metrics[["train_loss", "val_loss", "val_score", "prior_score", "accuracy", "macro_f1"]]
        .notna()
        .all()
        .all()
    )
    # The pattern is learnable: far better than the per-level prior on the same fold.
    assert result["score"] < 0.7 * result["prior_score"]
    assert json.loads((run / "val_score.json").read_text())["score"] == pytest.approx(result["score"])

    # Class weights come from the training folds only (validation is mostly severe here).
    train_rows, _ = fold_rows(cache, 0)
    info = json.loads((run / "best.json").read_text())
    expected = class_weights(cache.index["severity"].to_numpy()[train_rows], "balanced")
    assert np.allclose(info["class_weights"], expected)
    assert not np.allclose(
        info["class_weights"], class_weights(cache.index["severity"].to_numpy(), "balanced")
    )
    assert {"arch", "in_chans", "k", "size", "crop_mm", "normalisation", "epoch", "score"} <= set(info)
    # What predict needs beyond the weights: the training fold's priors, side flip, the prior shift.
    stored = pd.DataFrame(info["priors"])
    expected_priors = level_priors(cache.index.iloc[train_rows], weighted=True)
    pd.testing.assert_frame_equal(stored, expected_priors)
    assert info["side_flip"] is False
    severity, condition = (cache.index.iloc[train_rows][c].to_numpy() for c in ("severity", "condition"))
    codes = pd.Index(CONDITIONS).get_indexer(condition)
    factors = prior_shift(severity, codes, severity, codes, loss_weights=expected)
    np.testing.assert_allclose(info["prior_shift"]["factors"], factors)

    # best.safetensors is plain tensors; load_run rebuilds the model and reproduces val_predictions.csv.
    with safe_open(str(run / "best.safetensors"), framework="pt") as f:
        assert "head.classifier.weight" in set(f.keys())
    model, loaded = load_run(run)
    assert loaded["epoch"] == info["epoch"]
    saved, raw = (pd.read_csv(run / name) for name in ("val_predictions.csv", "val_predictions_raw.csv"))
    assert list(saved.columns) == ["row_id", *SEVERITIES]
    val_rows = np.flatnonzero(cache.index["fold"].to_numpy() == 0)
    rows, probs = run_model(model, _dataset(cache, val_rows), what="probs", batch_size=64, device="cpu")
    frame = module_lib.prediction_frame(cache.index, rows, probs)
    assert np.allclose(module_lib.submission_frame(frame)[list(SEVERITIES)], raw[list(SEVERITIES)], atol=1e-6)
    # val_predictions.csv = the raw ones moved back by the prior shift (balanced weights here).
    val_codes = pd.Index(CONDITIONS).get_indexer(cache.index["condition"].iloc[rows])
    corrected = module_lib.prediction_frame(cache.index, rows, apply_prior_shift(probs, val_codes, factors))
    assert np.allclose(corrected[list(SEVERITIES)], saved[list(SEVERITIES)], atol=1e-6)
    assert not np.allclose(saved[list(SEVERITIES)], raw[list(SEVERITIES)], atol=1e-3)
    assert result["score_raw"] == pytest.approx(result["raw"]["score"])


def test_keep_last_runs_the_whole_schedule_and_scores_its_end(cache: CropCache, tmp_path: Path) -> None:
    # keep "best" chooses the epoch on the validation score; "last" never stops early and keeps the end,
    # so its validation score is the last epoch's, not the minimum (cv's honest out-of-fold figure).
    best, last = tmp_path / "best", tmp_path / "last"
    chosen = train_run(cache, best, _config(epochs=4, lr=2e-2, patience=1))
    kept = train_run(cache, last, _config(epochs=4, lr=2e-2, patience=1, keep="last"))
    scores = pd.read_csv(best / "metrics.csv")["val_score"]
    assert chosen["keep"] == "best" and chosen["epoch"] == int(scores.idxmin())
    assert chosen["score"] == pytest.approx(scores.min(), rel=1e-4)
    metrics = pd.read_csv(last / "metrics.csv")
    assert metrics["epoch"].tolist() == [0, 1, 2, 3]
    assert kept["keep"] == "last" and kept["epoch"] == 3
    assert json.loads((last / "best.json").read_text())["epoch"] == 3
    assert kept["score"] == pytest.approx(metrics["val_score"].iloc[-1], rel=1e-4)
    with pytest.raises(DataError, match="keep 'first' unknown; use one of best, last"):
        TrainConfig(keep="first")


def test_ema_is_what_validation_scores_and_the_run_exports(cache: CropCache, tmp_path: Path) -> None:
    from safetensors.torch import load_file

    run = tmp_path / "ema"
    result = train_run(cache, run, _config(epochs=3, ema=0.9, keep="last"))
    state = torch.load(run / "last.ckpt", weights_only=True)["state_dict"]
    exported = load_file(run / "best.safetensors")
    averaged = {k.removeprefix("ema.module."): v for k, v in state.items() if k.startswith("ema.module.")}
    assert set(averaged) == set(exported)
    name = "head.classifier.weight"
    assert torch.allclose(exported[name], averaged[name])
    assert not torch.allclose(exported[name], state[f"model.{name}"])  # the average, not the raw weights
    # The score in metrics.csv was the average's: load_run (the exported weights) reproduces it.
    assert result["score"] == pytest.approx(pd.read_csv(run / "metrics.csv")["val_score"].iloc[-1], rel=1e-4)
    with pytest.raises(DataError, match="ema is a decay"):
        TrainConfig(ema=1.0)


def _dataset(cache: CropCache, rows: np.ndarray) -> torch.utils.data.Dataset:
    from spinegrade.training.datamodule import CropDataset, Labels

    return CropDataset(cache.crops, rows, Labels.of_rows(cache, rows))


def test_resume_continues_from_the_last_checkpoint(
    cache: CropCache, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = tmp_path / "run"
    step = module_lib.GradingModule.training_step

    def crash_in_third_epoch(self: module_lib.GradingModule, batch: dict, batch_idx: int) -> torch.Tensor:
        if self.current_epoch == 2:
            raise RuntimeError("simulated interruption")
        return step(self, batch, batch_idx)

    monkeypatch.setattr(module_lib.GradingModule, "training_step", crash_in_third_epoch)
    with pytest.raises(RuntimeError, match="simulated interruption"):
        train_run(cache, run, _config(epochs=3))
    assert pd.read_csv(run / "metrics.csv")["epoch"].tolist() == [0, 1]
    assert not (run / "val_score.json").exists()
    steps_per_epoch = torch.load(run / "last.ckpt", weights_only=True)["global_step"] // 2
    with pytest.raises(DataError, match="already holds a run"):
        train_run(cache, run, _config(epochs=3))  # no silent overwrite without --resume

    monkeypatch.setattr(module_lib.GradingModule, "training_step", step)
    train_run(cache, run, _config(epochs=3), resume=True)
    assert pd.read_csv(run / "metrics.csv")["epoch"].tolist() == [0, 1, 2]  # continued, not restarted
    checkpoint = torch.load(run / "last.ckpt", weights_only=True)
    assert checkpoint["epoch"] == 2 and checkpoint["global_step"] == 3 * steps_per_epoch
    assert (run / "val_score.json").is_file()


def test_feature_smote_fine_tunes_the_head_on_training_embeddings(cache: CropCache, tmp_path: Path) -> None:
    run = tmp_path / "run"
    train_run(cache, run, _config(epochs=1, head_epochs=2, imbalance="class-weights+smote"))
    info = json.loads((run / "best.json").read_text())
    train_rows, _ = fold_rows(cache, 0)
    assert info["stage"] == "head"
    assert info["smote"]["n_real"] == len(train_rows)  # the validation fold never entered SMOTE
    assert info["smote"]["n_synthetic"] > 0
    metrics = pd.read_csv(run / "metrics.csv")
    assert metrics["stage"].tolist() == ["train", "head", "head"]
    backbone, _ = load_run(run, name="backbone")
    best, _ = load_run(run)
    for key, value in backbone.backbone.state_dict().items():
        assert torch.equal(value, best.backbone.state_dict()[key]), key  # frozen during fine-tuning
    assert not torch.equal(backbone.head.classifier.weight, best.head.classifier.weight)


def test_pixel_smote_adds_synthetic_crops_from_the_training_fold_only(
    cache: CropCache, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    result = train_run(cache, run, _config(epochs=1, imbalance="smote", smote_space="pixels"))
    info = json.loads((run / "best.json").read_text())
    train_rows, _ = fold_rows(cache, 0)
    assert info["smote"]["space"] == "pixels"
    assert info["smote"]["n_real"] == len(train_rows)
    train = cache.index.iloc[train_rows]
    counts = pd.crosstab(train["condition"].map(GROUP_OF_CONDITION), train["severity"]).to_numpy()
    # In each condition group, every class grown to the group's majority class.
    assert info["smote"]["n_synthetic"] == (counts.max(axis=1, keepdims=True) - counts).sum()
    assert np.isfinite(result["score"])


def test_pixel_smote_refuses_a_fold_above_its_memory_bound(
    cache: CropCache, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(train_lib, "PIXEL_SMOTE_MAX_BYTES", 1024)
    with pytest.raises(DataError, match="use --smote-space features"):
        train_run(cache, tmp_path / "run", _config(epochs=1, imbalance="smote", smote_space="pixels"))


def test_score_loss_with_any_severe_side_flip_and_mixup_are_recorded(
    cache: CropCache, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    config = _config(epochs=1, loss="score", any_severe=1.0, side_flip=True, mixup=0.4)
    result = train_run(cache, run, config)
    info = json.loads((run / "best.json").read_text())
    assert json.loads((run / "config.json").read_text())["mixup"] == 0.4
    assert info["side_flip"] is True and info["loss"] == {
        "name": "score",
        "any_severe": 1.0,
        "label_smoothing": 0.0,
    }
    assert np.isfinite(result["score"])
    with pytest.raises(DataError, match="any_severe"):
        _config(any_severe=1.0)  # the term belongs to loss 'score'


def test_an_ordinal_run_starts_at_the_priors_and_load_run_rebuilds_it(
    cache: CropCache, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    result = train_run(cache, run, _config(epochs=2, output="ordinal"))
    info = json.loads((run / "best.json").read_text())
    assert info["model"]["output"] == "ordinal" and np.isfinite(result["score"])
    model, _ = load_run(run)
    assert model.head.ordinal is not None
    # Before training, a crop that scores 0 gets its target's training-fold priors (the cut points' start).
    config = _config(output="ordinal").resolved()
    start = train_lib._grading_module(
        config, cache, train_lib.FoldData.build(cache, config)
    ).model.head.ordinal
    assert start is not None
    priors = pd.DataFrame(info["priors"]).set_index(["condition", "level"])
    target = torch.tensor([CONDITIONS.index("spinal_canal_stenosis") * 5 + 3])
    expected = priors.loc[("spinal_canal_stenosis", "l4_l5"), list(SEVERITIES)].to_numpy(np.float64)
    with torch.no_grad():
        got = start(torch.zeros(1, 1), target).softmax(dim=1)[0].numpy()
    np.testing.assert_allclose(got, expected, atol=1e-3)
    with pytest.raises(DataError, match="output 'cumulative' unknown"):
        TrainConfig(output="cumulative")


def test_batches_carry_the_study_of_their_own_cache_rows(cache: CropCache) -> None:
    rows = np.arange(len(cache.index))[::-1][:40]  # any order: a training cache's rows need not match
    labels = Labels.of_rows(cache, rows)
    batch = CropDataset(cache.crops, rows, labels).__getitems__(list(range(10)))
    assert batch["study"].tolist() == cache.index["study_id"].to_numpy()[rows[:10]].tolist()
    grown = labels.with_synthetic(
        *(np.concatenate([a, a[:3]]) for a in (labels.condition, labels.level, labels.severity))
    )
    assert grown.study[-3:].tolist() == [-1, -1, -1] and grown.row[:40].tolist() == rows.tolist()


def test_alternative_crops_are_read_at_their_share_and_only_where_the_target_has_one(
    cache: CropCache,
) -> None:
    rows = np.arange(20)
    labels = Labels.of_rows(cache, rows)
    other = np.full((3, K, SIZE, SIZE), 7.0, dtype=np.float16)
    where = np.where(rows % 2 == 0, rows % 3, -1)  # odd items have no alternative crop
    items = list(range(20))
    always = CropDataset(cache.crops, rows, labels, AlternativeCrops(other, where, 1.0)).__getitems__(items)
    x = always["x"].numpy()
    assert (x[::2] == 7).all() and np.array_equal(x[1::2], cache.crops[rows[1::2]])
    never = CropDataset(cache.crops, rows, labels, AlternativeCrops(other, where, 0.0)).__getitems__(items)
    assert np.array_equal(never["x"].numpy(), cache.crops[rows])
    torch.manual_seed(0)
    half = CropDataset(cache.crops, rows, labels, AlternativeCrops(other, np.zeros(20, np.int64), 0.5))
    swapped = [(half.__getitems__(items)["x"].numpy() == 7).all(axis=(1, 2, 3)).mean() for _ in range(50)]
    assert 0.4 < float(np.mean(swapped)) < 0.6
    assert np.array_equal(always["severity"].numpy(), never["severity"].numpy())  # labels never move


def test_labelled_share_swaps_in_the_labelled_crop_of_the_same_target(
    cache: CropCache, tmp_path: Path
) -> None:
    """A training cache in another row order (as cv's located points give) with blank crops: at share 1
    every training item reads the labelled cache's crop of its own target; without one it is refused."""
    (tmp_path / "located").mkdir()
    order = np.arange(len(cache.index))[::-1]
    located = write_cache(
        tmp_path / "located",
        [np.zeros((len(order), K, SIZE, SIZE), np.float16)],
        cache.index.iloc[order].reset_index(drop=True),
        {**cache.meta, "points": "located"},
    )
    data = train_lib.FoldData.build(cache, _config(labelled_share=1.0), located)
    batch = data.train.__getitems__(list(range(len(data.train))))
    assert np.array_equal(batch["x"].numpy(), cache.crops[order[data.train.positions]])
    plain = train_lib.FoldData.build(cache, _config(), located)
    assert not plain.train.__getitems__([0])["x"].numpy().any()
    with pytest.raises(DataError, match="labelled_share swaps training crops"):
        train_lib.FoldData.build(cache, _config(labelled_share=0.5))
    with pytest.raises(DataError, match=r"labelled_share is a share in \[0, 1\]"):
        _config(labelled_share=1.5)


def test_study_grouped_sampler_keeps_each_studys_spinal_crops_together() -> None:
    spinal, other = CONDITIONS.index("spinal_canal_stenosis"), CONDITIONS.index("left_subarticular_stenosis")
    study = np.repeat([7, 8, 9, -1], [9, 9, 9, 4])  # 5 spinal + 4 other crops per study, 4 synthetic
    condition = np.array(([spinal] * 5 + [other] * 4) * 3 + [spinal] * 4)
    zeros = np.zeros(len(study), np.int64)
    sampler = StudyGroupedSampler(
        Labels(condition, zeros, zeros, zeros, study, zeros.astype(bool)), torch.Generator().manual_seed(0)
    )
    epochs = [list(sampler) for _ in range(2)]
    assert len(sampler) == len(study)
    for order in epochs:
        assert sorted(order) == list(range(len(study)))
        for s in (7, 8, 9):
            where = [i for i, item in enumerate(order) if study[item] == s and condition[item] == spinal]
            assert where == list(range(where[0], where[0] + 5)), s
    assert epochs[0] != epochs[1]  # a new order every epoch
    with pytest.raises(DataError, match="oversampling"):
        _config(loss="score", any_severe=1.0, imbalance="oversample")


def test_train_command_compares_two_combinations(cache: CropCache, tmp_path: Path) -> None:
    app = typer.Typer()
    app.command()(train_command)
    out = tmp_path / "cmp"
    args = [
        str(cache.path),
        "--out",
        str(out),
        "--arch",
        "test_efficientnet",
        "--imbalance",
        "none,oversample",
    ]
    result = CliRunner().invoke(app, [*args, "--epochs", "1", "--batch-size", "32"])
    assert result.exit_code == 0, result.output
    comparison = pd.read_csv(out / "comparison.csv")
    assert comparison["imbalance"].tolist() == ["none", "oversample"]
    columns = ["score", "score_raw", "prior_score", "accuracy", "macro_f1", "auc_severe"]
    assert comparison[columns].notna().all().all()
    # Without class weights the raw model is moved back to the score's optimum: raw and corrected differ.
    assert not np.allclose(comparison["score"], comparison["score_raw"])
    assert (out / "comparison.md").read_text().count("| test_efficientnet |") == 2
    for method in ("none", "oversample"):
        assert (out / f"test_efficientnet__{method}" / "best.safetensors").is_file()
    assert result.output.count("best epoch") == 2


def test_train_refuses_a_missing_fold(cache: CropCache, tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no fold 7"):
        train(cache.path, tmp_path / "run", _config(fold=7))
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    ("flag", "expected"), [([], None), (["--side-flip"], True), (["--no-side-flip"], False)]
)
def test_train_command_leaves_side_flip_to_the_recipe_unless_told(
    cache: CropCache, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, flag: list[str], expected: bool | None
) -> None:
    """Unset, side flip comes from the architecture's recipe (on for EfficientNets); either flag wins."""
    import spinegrade.training.compare as train_module
    from spinegrade.training.commands import train_command

    seen: dict[str, TrainConfig] = {}
    monkeypatch.setattr(train_module, "train", lambda cache, out, config, **_: seen.update(c=config))
    app = typer.Typer()
    app.command()(train_command)
    args = [str(cache.path), "--out", str(tmp_path / "r"), "--arch", "efficientnet_b0", *flag]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert seen["c"].side_flip is expected
    assert seen["c"].resolved().side_flip is (True if expected is None else expected)


def test_tensorboard_logger_writes_step_loss_lr_and_the_score_beside_the_prior(
    cache: CropCache, tmp_path: Path
) -> None:
    """--logger tensorboard: event files TensorBoard's reader loads, with the curves a GPU user watches;
    metrics.csv is written as without it."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from spinegrade.training.runs import METRIC_COLUMNS

    run = tmp_path / "run"
    result = train_run(cache, run, _config(logger="tensorboard", epochs=3))
    events = EventAccumulator(str(run / "logs" / "train"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"train/loss", "lr-AdamW", "train/epoch_loss", "val/score", "val/prior_score", "val/loss"} <= tags
    metrics = pd.read_csv(run / "metrics.csv")
    assert list(metrics.columns) == list(METRIC_COLUMNS) and metrics["epoch"].tolist() == [0, 1, 2]
    scores = [e.value for e in events.Scalars("val/score")]
    assert scores == pytest.approx(metrics["val_score"].tolist(), rel=1e-5)
    assert [e.value for e in events.Scalars("val/prior_score")] == pytest.approx([result["prior_score"]] * 3)
    steps = [e.step for e in events.Scalars("train/loss")]
    assert steps and steps == sorted(steps) and len(events.Scalars("lr-AdamW")) >= len(steps)
    with pytest.raises(DataError, match="logger 'wandb' unknown; use one of csv, tensorboard"):
        _config(logger="wandb")
