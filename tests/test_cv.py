"""cv's parts: located-point errors on real phantom series, training points, the report on common studies."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from untrained import write_models

from spinegrade.crops.defaults import DEFAULT_CROP_MM
from spinegrade.crops.views import SAGITTAL_CONDITIONS
from spinegrade.crossval.points import POINT_COLUMNS, error_summary, located_errors, training_points
from spinegrade.crossval.report import build_report, render_markdown
from spinegrade.crossval.run import CvSettings, fold_priors, prior_rows, study_plans
from spinegrade.crossval.variants import parse_variants
from spinegrade.data.tables import labels_long, load_rsna
from spinegrade.errors import DataError
from spinegrade.evaluation.score import score_submission
from spinegrade.prediction.studies import read_study
from spinegrade.vocab import CONDITIONS, SEVERITIES


def test_located_errors_measure_signed_offsets_in_mm_and_slices(tiny_phantom: Path) -> None:
    data = load_rsna(tiny_phantom, "train")
    study = int(data.labels["study_id"].iloc[0])
    images = read_study(study_plans(data, [study])[0])
    series = images.series_by_id()
    truth = data.coordinates[data.coordinates["study_id"] == study]
    exact = located_errors(_as_located(truth, series, dx=0, dslice=0), truth, series)
    moved = located_errors(_as_located(truth, series, dx=3, dslice=1), truth, series)
    assert len(exact) == len(truth) and list(exact.columns) == list(POINT_COLUMNS)
    assert np.allclose(exact["error_mm"], 0, atol=1e-6) and (exact["dslice"] == 0).all()
    sagittal = moved["series_type"] != "Axial T2"
    assert np.allclose(moved["dx_mm"], 3 * moved["spacing_x"]) and (moved["dslice"] == 1).all()
    assert (moved.loc[sagittal, "error_mm"] > moved.loc[sagittal, "dx_mm"]).all()  # the slice adds to it
    summary = error_summary(moved)
    assert summary["overall"]["exact_slice_share"] == 0 and summary["overall"]["within_1_slice_share"] == 1


def _as_located(truth: pd.DataFrame, series: dict, dx: float, dslice: int) -> pd.DataFrame:
    """The labelled points as locate_study would return them, moved by dx pixels and dslice slices."""
    from spinegrade.crops.extract import label_to_pixel

    rows = []
    for r in truth.itertuples(index=False):
        s = series[str(r.series_id)]
        index, x, y = label_to_pixel(s, int(r.instance_number), r.x, r.y)
        rows.append((r.study_id, r.condition, r.level, str(r.series_id), index + dslice, x + dx, y))
    columns = ["study_id", "condition", "level", "series_id", "slice_index", "x", "y"]
    return pd.DataFrame(rows, columns=columns).astype({"series_id": np.int64})


def _points(n: int = 40) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(
        {
            "study_id": np.arange(n) // 2,
            "condition": "spinal_canal_stenosis",
            "level": np.where(np.arange(n) % 2, "l1_l2", "l2_l3"),
            "series_type": "Sagittal T2/STIR",
            "series_id": 7,
            "slice_index": 5.0,
            "x": 30.0,
            "y": 40.0,
            "spacing_x": 0.5,
            "spacing_y": 0.25,
            "n_slices": 10,
            "located": True,
            "series_id_loc": 7.0,
            "slice_index_loc": 6.0,
            "x_loc": 31.0,
            "y_loc": 38.0,
            "error_mm": 1.0,
            "slice_error": 1.0,
            "dx_mm": rng.choice([1.0, -2.0], n),
            "dy_mm": 0.5,
            "dslice": rng.choice([-9.0, 1.0], n),
        }
    )
    return frame[list(POINT_COLUMNS)]


def test_training_points_move_labels_by_measured_offsets_or_to_located_points() -> None:
    points = _points()
    rows = points[["study_id", "condition", "level", "series_id", "x", "y"]].assign(
        severity=0, instance_number=1, series_description="Sagittal T2/STIR"
    )
    rows = pd.concat([rows, rows.iloc[:1].assign(study_id=99)], ignore_index=True)  # never located
    located = training_points(rows, points, "located")
    assert len(located) == len(points) and located.attrs["kind"] == "located"
    assert (located[["slice_index", "x", "y"]].to_numpy() == [6.0, 31.0, 38.0]).all()
    jittered = training_points(rows, points, "jittered", seed=1)
    dx_mm = (jittered["x"] - 30.0) * 0.5
    assert set(np.round(dx_mm, 6)) == {1.0, -2.0}
    assert np.allclose((jittered["y"] - 40.0) * 0.25, 0.5)
    assert set(jittered["slice_index"]) == {0.0, 6.0}  # 5 - 9 clipped to the first slice
    assert not jittered.equals(training_points(rows, points, "jittered", seed=2))


def test_report_scores_every_entry_on_the_studies_all_of_them_predict(tiny_phantom: Path) -> None:
    data = load_rsna(tiny_phantom, "train")
    long = labels_long(data.labels)
    folds = pd.Series(np.arange(len(data.labels)) % 2, index=data.labels["study_id"])
    priors = fold_priors(long, folds, 0)
    studies = data.labels["study_id"].tolist()
    prior = pd.concat([prior_rows(s, priors) for s in studies], ignore_index=True)
    sharp = prior.copy()
    sharp[list(SEVERITIES)] = [0.98, 0.01, 0.01]
    partial = sharp[sharp["row_id"].str.startswith(f"{studies[0]}_")]
    points = _points()
    report = build_report(
        data.labels,
        {"prior": prior, "sharp": partial},
        error_summary(points),
        gaps={"prior - sharp": ("prior", "sharp")},
        n_boot=50,
    )
    assert report["scores"]["prior"]["n_studies"] == 1
    one = data.labels[data.labels["study_id"] == studies[0]]
    expected = score_submission(one, prior[prior["row_id"].str.startswith(f"{studies[0]}_")])
    assert report["scores"]["prior"]["score"]["value"] == pytest.approx(expected["score"])
    assert report["gaps"]["prior - sharp"] == pytest.approx(
        report["scores"]["prior"]["score"]["value"] - report["scores"]["sharp"]["score"]["value"]
    )
    text = render_markdown(report)
    assert "| sharp |" in text and "Sagittal T2/STIR" in text


def test_variants_are_typed_train_config_overrides_and_bad_ones_name_the_valid_keys() -> None:
    variants = parse_variants(
        ["score:loss=score,any_severe=1", "flip:side_flip=true", "e:epochs=none", "none:imbalance=none"]
    )
    assert variants == {
        "score": {"loss": "score", "any_severe": 1.0},
        "flip": {"side_flip": True},
        "e": {"epochs": None},
        "none": {"imbalance": "none"},
    }
    with pytest.raises(DataError, match=r"'foo' is not a training setting.*class_weights, smote_space"):
        parse_variants(["x:foo=1"])
    assert parse_variants(["small:arch=resnet10t"]) == {"small": {"arch": "resnet10t"}}
    with pytest.raises(DataError, match="'fold' is not a training setting"):  # cv sets it per run
        parse_variants(["x:fold=1"])
    with pytest.raises(DataError, match="--variant x: unknown architecture 'nonet'"):
        parse_variants(["x:arch=nonet"])
    with pytest.raises(DataError, match="give cv one --arch"):
        CvSettings(archs=("resnet18", "vgg16"), variants={"a": {"arch": "resnet10t"}})
    with pytest.raises(DataError, match="side_flip: 'maybe' is not a boolean"):
        parse_variants(["x:side_flip=maybe"])
    with pytest.raises(DataError, match="epochs: 'two' is not int"):
        parse_variants(["x:epochs=two"])
    with pytest.raises(DataError, match=r"--variant x: any_severe 1.0: .* with loss 'score'"):
        parse_variants(["x:any_severe=1"])  # TrainConfig's own checks, before anything trains
    with pytest.raises(DataError, match="write NAME:key=value"):
        parse_variants(["a/b:epochs=1"])
    with pytest.raises(DataError, match="given twice"):
        parse_variants(["a:epochs=1", "a:epochs=2"])
    with pytest.raises(DataError, match="'bogus' is not a training setting"):
        CvSettings(variants={"a": {"bogus": 1}})


def _run_with_shift(path: Path, factors: np.ndarray) -> Path:
    """An untrained run whose best.json carries prior-shift factors (5 conditions x 3 severities)."""
    from spinegrade.training.checkpoint import load_run, save_model

    run, _ = write_models(path)
    model, info = load_run(run)
    save_model(run, "best", model, {**info, "prior_shift": {"factors": factors.tolist()}})
    return run


def test_raw_grading_drops_only_a_real_prior_shift_correction(tmp_path: Path) -> None:
    from spinegrade.prediction.grade import Cut, Ensemble
    from spinegrade.training.imbalance import apply_prior_shift

    factors = np.tile([0.2, 0.3, 0.5], (len(CONDITIONS), 1))
    shifted = Ensemble.load([_run_with_shift(tmp_path / "a", factors)])
    uniform = Ensemble.load([_run_with_shift(tmp_path / "b", np.ones((len(CONDITIONS), 3)))])
    assert shifted.shifts and not uniform.shifts  # ones (challenge weights, no sampler) change nothing
    raw = shifted.without_prior_shift()
    assert not raw.shifts and raw.runs[0].model is shifted.runs[0].model  # shared, not reloaded
    spec = shifted.specs[0]
    crops = np.random.default_rng(0).random((len(CONDITIONS), spec.k, spec.size, spec.size), np.float32)
    points = pd.DataFrame({"condition": list(CONDITIONS), "level": ["l4_l5"] * len(CONDITIONS)})
    plain = raw.predict({spec: Cut.single(crops, points["condition"])}, points)
    expected = apply_prior_shift(plain, np.arange(len(CONDITIONS)), factors)
    np.testing.assert_allclose(
        shifted.predict({spec: Cut.single(crops, points["condition"])}, points), expected, rtol=1e-6
    )
    assert not np.allclose(plain, expected)


def test_report_differences_are_paired_intervals_of_the_score_difference(tiny_phantom: Path) -> None:
    data = load_rsna(tiny_phantom, "train")
    folds = pd.Series(np.arange(len(data.labels)) % 2, index=data.labels["study_id"])
    priors = fold_priors(labels_long(data.labels), folds, 0)
    prior = pd.concat([prior_rows(s, priors) for s in data.labels["study_id"]], ignore_index=True)
    sharp = prior.copy()
    sharp[list(SEVERITIES)] = [0.98, 0.01, 0.01]
    entries = {"prior": prior, "sharp": sharp}
    report = build_report(
        data.labels, entries, error_summary(_points()), differences={"sharp - prior": ("sharp", "prior")}
    )
    d = report["differences"]["sharp - prior"]
    scores = report["scores"]
    assert d["value"] == pytest.approx(scores["sharp"]["score"]["value"] - scores["prior"]["score"]["value"])
    assert d["low"] <= d["value"] <= d["high"] and d["high"] - d["low"] > 0
    assert "- sharp - prior: " in render_markdown(report)


@pytest.mark.slow
def test_cv_variants_train_beside_the_headline_and_resume_adds_only_new_ones(
    tiny_phantom: Path, tmp_path: Path
) -> None:
    import shutil

    from spinegrade.crossval.run import cross_validate
    from spinegrade.localization.settings import LocatorSettings
    from spinegrade.runtime import torch_threads

    data = tmp_path / "data"
    shutil.copytree(tiny_phantom, data)
    out = tmp_path / "cv"
    settings = CvSettings(
        n_folds=3,
        folds=(0,),
        archs=("resnet18",),
        train_points=("labelled",),
        size=32,
        crop_mm={"subarticular": 40.0},
        views=("own", "axial"),
        epochs=1,
        locator=LocatorSettings(size=64, epochs=1, samples_per_epoch=16),
        n_boot=50,
        variants={"bal": {"class_weights": "balanced"}},
    )
    with torch_threads(1):
        first = cross_validate(data, out, settings)
        run = out / "fold0" / "classifiers" / "resnet18__labelled__bal"
        stamp = (run / "best.safetensors").stat().st_mtime_ns
        more = {
            **settings.variants,
            "flip": {"side_flip": True},
            "small": {"arch": "regnetx_002"},
            "dist": {"distill": 0.5},
        }
        report = cross_validate(data, out, replace(settings, variants=more, seeds=2), resume=True)
    assert (run / "best.safetensors").stat().st_mtime_ns == stamp  # finished runs are kept
    crops = json.loads((out / "cache" / "meta.json").read_text())["crop_mm"]
    assert crops == json.loads((run / "best.json").read_text())["crop_mm"] == settings.crop_mm
    assert crops["subarticular"] == 40.0
    views = json.loads((out / "cache" / "meta.json").read_text())["views"]
    assert views == json.loads((run / "best.json").read_text())["views"] == ["own", "axial"]
    index = pd.read_csv(out / "cache" / "index.csv")
    assert set(index.loc[index["view"] == "axial", "condition"]) == set(SAGITTAL_CONDITIONS)
    second = json.loads((run.with_name("resnet18__labelled__bal__seed1") / "config.json").read_text())
    assert (second["seed"], second["class_weights"]) == (settings.seed + 1, "balanced")  # the next seed
    assert json.loads((run.with_name("resnet18__labelled__seed1") / "config.json").read_text())["seed"] == 1
    assert json.loads((run / "config.json").read_text())["class_weights"] == "balanced"
    assert json.loads((run / "val_score.json").read_text())["keep"] == "last"  # no epoch chosen on the fold
    assert json.loads((run.with_name("resnet18__labelled__flip") / "config.json").read_text())["side_flip"]
    taught = json.loads((run.with_name("resnet18__labelled__dist") / "config.json").read_text())
    assert taught["teacher"] == str(run.with_name("resnet18__labelled"))  # the fold's headline run
    taught = json.loads((run.with_name("resnet18__labelled__dist__seed1") / "config.json").read_text())
    assert taught["teacher"] == str(run.with_name("resnet18__labelled__seed1"))  # of the same seed
    small = json.loads((run.with_name("regnetx_002__labelled__small") / "config.json").read_text())
    assert small["arch"] == "regnetx_002"  # an arch variant: its own folder, paired with the headline
    scores = report["scores"]
    for name in (
        "end to end (variant bal)",
        "end to end raw (variant bal)",
        "oracle points (variant flip)",
        "end to end (variant small)",
    ):
        assert name in scores, name
    assert "end to end raw (variant flip)" not in scores  # challenge weights: the correction is the identity
    raw = pd.read_csv(out / "oof_raw_variant_bal_submission.csv")
    corrected = pd.read_csv(out / "oof_variant_bal_submission.csv")
    assert len(raw) == len(corrected) == 25 * first["folds"]["studies_per_fold"][0]
    assert not np.allclose(raw[list(SEVERITIES)], corrected[list(SEVERITIES)])
    beats = report["differences"]["end to end (labelled) - prior (training folds)"]
    prior = scores["prior (training folds)"]["score"]["value"]
    assert beats["value"] == pytest.approx(scores["end to end (labelled)"]["score"]["value"] - prior)
    d = report["differences"]["end to end (variant bal) - end to end (labelled)"]
    bal, headline = scores["end to end (variant bal)"], scores["end to end (labelled)"]
    assert d["value"] == pytest.approx(bal["score"]["value"] - headline["score"]["value"])
    assert d["low"] <= d["value"] <= d["high"]
    assert "end to end (variant small) - end to end (labelled)" in report["differences"]
    # resnet18's recipe mirrors sides: the headline is graded with side-flip TTA too, paired with it
    tta = pd.read_csv(out / "oof_tta_submission.csv")
    assert len(tta) == len(corrected) and "end to end (labelled), side-flip TTA" in scores
    assert "end to end (labelled), side-flip TTA - end to end (labelled)" in report["differences"]


def test_cv_command_passes_the_locator_schedule_so_a_demo_run_can_be_resumed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A resumed cv keeps a locator only if trained with the same settings: the demo's lr must be sayable."""
    from typer.testing import CliRunner

    import spinegrade.crossval.run as run
    from spinegrade.cli import app

    seen: dict[str, CvSettings] = {}
    monkeypatch.setattr(run, "cross_validate", lambda data, out, settings, **_: seen.update(s=settings))
    args = ["cv", str(tmp_path), "--out", str(tmp_path / "cv"), "--locator-size", "96"]
    more = ["--locator-epochs", "8", "--locator-lr", "6e-3", "--seeds", "2", "--crop-mm", "subarticular=32"]
    more += ["--views", "own"]  # the default is own,axial
    result = CliRunner().invoke(app, [*args, *more])
    assert result.exit_code == 0, result.output
    locator = seen["s"].locator
    assert (locator.size, locator.epochs, locator.lr, seen["s"].seeds) == (96, 8, 6e-3, 2)
    assert seen["s"].crop_mm == {**DEFAULT_CROP_MM, "subarticular": 32.0}  # the other groups keep theirs
    assert seen["s"].views == ("own",)
    with pytest.raises(DataError, match="seeds"):
        CvSettings(seeds=0)
    with pytest.raises(DataError, match="unknown condition group 'axial'"):
        CvSettings(crop_mm={"axial": 32.0})


def test_a_resumed_cv_refuses_settings_its_finished_stages_depend_on() -> None:
    """Variants, graded folds and threads may change on --resume; the locators, crops or headline not
    (a cv.json written before the refiners means none: resuming it with them is refused)."""
    from dataclasses import asdict

    from spinegrade.crossval.run import check_resumable
    from spinegrade.localization.settings import LocatorSettings

    plain = LocatorSettings(size=96, refine_mm=0.0)
    settings = CvSettings(n_folds=3, archs=("resnet18",), size=32, locator=plain, views=("own",))
    saved = json.loads(json.dumps(asdict(settings)))
    saved["locator"].pop("refine_mm")  # a cv.json written before the refiners
    check_resumable(
        saved,
        replace(settings, folds=(0,), threads=2, seeds=2, variants={"ls": {"label_smoothing": 0.1}}),
    )
    check_resumable(saved, replace(settings, locator=replace(plain, seed=1)))  # cv sets it from its own
    with pytest.raises(DataError, match=r"locator \(refine_mm\)"):
        check_resumable(saved, replace(settings, locator=replace(plain, refine_mm=32.0)))
    with pytest.raises(DataError, match=r"locator \(refine_mm, size\), size"):
        check_resumable(saved, replace(settings, size=64, locator=LocatorSettings(size=128)))
    with pytest.raises(DataError, match="crop_mm"):  # the crops were cut at the other sides
        check_resumable(saved, replace(settings, crop_mm={"subarticular": 32.0}))
    saved.pop("crop_mm")  # a cv.json written before --crop-mm: its crops are the defaults
    check_resumable(saved, settings)
    with pytest.raises(DataError, match="crop_mm"):
        check_resumable(saved, replace(settings, crop_mm={"subarticular": 32.0}))
    with pytest.raises(DataError, match="views"):  # the crops were cut in other planes
        check_resumable(saved, replace(settings, views=("own", "axial")))
    saved.pop("views")  # a cv.json written before --views: own views only
    check_resumable(saved, settings)
    with pytest.raises(DataError, match="views"):
        check_resumable(saved, replace(settings, views=("own", "axial")))
