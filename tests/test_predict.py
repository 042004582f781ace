"""spinegrade predict: submission rows and order, priors for what cannot be graded, damaged studies, several
axial series, ensembles and TTA. Tiny untrained models (built with the training and locator code, saved
as runs) on a tiny phantom: the numbers are meaningless, the plumbing is what is checked."""

from __future__ import annotations

import json
import shutil
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from spinegrade.crops.extract import DEFAULT_CROP_MM, label_to_pixel
from spinegrade.data.tables import labels_long, read_label_coordinates, read_train_labels
from spinegrade.errors import DataError
from spinegrade.evaluation.calibration import Calibration
from spinegrade.evaluation.ensemble import average_probabilities
from spinegrade.evaluation.priors import level_priors
from spinegrade.evaluation.score import GROUPS, score_submission
from spinegrade.evaluation.stacking import Stacking
from spinegrade.localization.locate import LOCATION_COLUMNS, load_locator, locate_study
from spinegrade.localization.model import LocatorSettings, build_net
from spinegrade.localization.targets import TASKS
from spinegrade.localization.train import model_info
from spinegrade.localization.train import save_model as save_locator
from spinegrade.models.classifier import create_model
from spinegrade.phantom import write_phantom
from spinegrade.prediction.grade import Cut, Ensemble, find_runs
from spinegrade.prediction.grading import grade_study
from spinegrade.prediction.predict import predict
from spinegrade.prediction.priors import load_priors
from spinegrade.prediction.readahead import read_studies
from spinegrade.prediction.results import PredictionWarning, StudyResult
from spinegrade.prediction.studies import StudyPlan, discover_studies, read_study
from spinegrade.prediction.submission import align_with_sample
from spinegrade.runtime import torch_threads
from spinegrade.training.augment import side_flip
from spinegrade.training.checkpoint import save_model
from spinegrade.vocab import CONDITIONS, SEVERITIES, TARGETS

ARCH = "resnet10t"


def make_run(path: Path, seed: int, *, priors: pd.DataFrame | None = None, side_flip: bool = True) -> Path:
    """An untrained classifier saved as a run (best.safetensors + best.json) with 3 x 32 px crops."""
    torch.manual_seed(seed)
    path.mkdir(parents=True)
    settings = {"conditioning": "film", "mean": 0.3, "std": 0.2}
    info = {"arch": ARCH, "in_chans": 3, "k": 3, "size": 32, "crop_mm": DEFAULT_CROP_MM, "model": settings}
    info["side_flip"] = side_flip
    if priors is not None:
        info["priors"] = priors.to_dict("records")
    save_model(path, "best", create_model(ARCH, in_chans=3, **settings), info)
    return path


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread() -> Iterator[None]:
    """As `predict` runs by default (one small batch per study: a second thread only costs)."""
    with torch_threads(1):
        yield


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("predict")
    data = root / "phantom"
    write_phantom(data, 2, 0, size=64, test_studies=3, workers=1, progress=False, header_descriptions=True)
    locator = root / "locator"
    locator.mkdir()
    torch.manual_seed(0)
    settings = LocatorSettings(size=64, depth=8, decoder_channels=16)
    for task in TASKS:
        save_locator(locator, task, build_net(task, settings), model_info(task, settings, 0))
    runs = root / "runs"
    make_run(runs / "fold0", 0)
    make_run(runs / "fold1", 1)
    return {"data": data, "locator": locator, "runs": runs, "run0": runs / "fold0", "run1": runs / "fold1"}


@pytest.fixture
def data(setup: dict[str, Path], tmp_path: Path) -> Path:
    """A private copy of the phantom, free to damage."""
    return Path(shutil.copytree(setup["data"], tmp_path / "data"))


def descriptions(data: Path) -> pd.DataFrame:
    return pd.read_csv(data / "test_series_descriptions.csv")


def series_of(data: Path, kind: str, study: int | None = None) -> tuple[int, Path]:
    """(study_id, folder) of the first series of `kind` (in `study` when given)."""
    d = descriptions(data)
    row = d[(d["series_description"] == kind) & ((d["study_id"] == study) if study else True)].iloc[0]
    return int(row.study_id), data / "test_images" / str(row.study_id) / str(row.series_id)


def run_predict(data: Path, setup: dict[str, Path], **kw) -> tuple[pd.DataFrame, object]:
    out = data.parent / "out" / "submission.csv"
    summary = predict(data, [setup["run0"]], setup["locator"], out, progress=False, **kw)
    return pd.read_csv(out), summary


def study_json(summary, study_id: int) -> dict:
    return json.loads((summary.details / f"{study_id}.json").read_text())


def weighted_priors(data: Path) -> pd.DataFrame:
    return level_priors(labels_long(read_train_labels(data / "train.csv")), weighted=True)


def test_rows_follow_the_sample_submission_order(data: Path, setup: dict[str, Path]) -> None:
    sample = pd.read_csv(data / "sample_submission.csv")
    shuffled = sample.sample(frac=1.0, random_state=0)
    shuffled.to_csv(data / "sample_submission.csv", index=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PredictionWarning)  # the untrained locator misses some points
        submission, summary = run_predict(data, setup)
    assert list(submission.columns) == ["row_id", *SEVERITIES]
    assert submission["row_id"].tolist() == shuffled["row_id"].tolist()
    studies = submission["row_id"].str.partition("_")[0]
    assert studies.value_counts().eq(25).all() and studies.nunique() == 3
    probs = submission[list(SEVERITIES)].to_numpy()
    assert np.all(probs >= 0) and np.allclose(probs.sum(axis=1), 1.0, atol=1e-6)
    truth = read_train_labels(data / "phantom_truth" / "test.csv")
    assert np.isfinite(score_submission(truth, submission)["score"])
    for study_id in studies.astype(int).unique():
        details = study_json(summary, study_id)
        assert len(details["grades"]) == 25 and details["points"]
        assert {"series_id", "instance_number", "x", "y", "confidence"} <= set(details["points"][0])
        assert any(g["source"] == "model" for g in details["grades"])
    assert not list(summary.submission.parent.glob("*.tmp"))


def test_without_sample_rows_come_study_by_study_in_the_real_order(
    data: Path, setup: dict[str, Path]
) -> None:
    expected = pd.read_csv(data / "sample_submission.csv")["row_id"].tolist()  # the real file's order
    (data / "sample_submission.csv").unlink()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PredictionWarning)
        submission, _ = run_predict(data, setup)
    order = descriptions(data)["study_id"].drop_duplicates().tolist()
    assert submission["row_id"].str.partition("_")[0].astype(int).drop_duplicates().tolist() == order
    assert sorted(submission["row_id"]) == sorted(expected)
    suffix = [r.partition("_")[2] for r in expected[:25]]
    for start in range(0, len(submission), 25):
        assert submission["row_id"].iloc[start : start + 25].str.partition("_")[2].tolist() == suffix


def test_missing_series_type_gets_priors_and_a_warning(data: Path, setup: dict[str, Path]) -> None:
    study_id, folder = series_of(data, "Sagittal T1")
    shutil.rmtree(folder)
    d = descriptions(data)
    d[d["series_id"].astype(str) != folder.name].to_csv(data / "test_series_descriptions.csv", index=False)
    with pytest.warns(PredictionWarning, match=f"study {study_id} has no readable Sagittal T1"):
        submission, summary = run_predict(data, setup)
    priors = weighted_priors(data).set_index(["condition", "level"])
    rows = submission.set_index("row_id")
    for condition, level in TARGETS:
        if condition.endswith("neural_foraminal_narrowing"):
            got = rows.loc[f"{study_id}_{condition}_{level}", list(SEVERITIES)].to_numpy(np.float64)
            np.testing.assert_allclose(got, priors.loc[(condition, level)].to_numpy(np.float64))
    assert study_id in summary.studies_with_priors()
    assert "train.csv" in summary.prior_source
    sources = pd.DataFrame(study_json(summary, study_id)["grades"]).groupby("condition")["source"].agg(set)
    assert sources["left_neural_foraminal_narrowing"] == {"prior"}
    assert "model" in sources["spinal_canal_stenosis"]


def test_one_corrupt_file_is_skipped_and_reported(data: Path, setup: dict[str, Path]) -> None:
    study_id, folder = series_of(data, "Sagittal T2/STIR")
    damaged = sorted(folder.iterdir())[0]
    damaged.write_bytes(damaged.read_bytes()[:300])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PredictionWarning)
        submission, summary = run_predict(data, setup)
    notes = [p for p in summary.problems if p.study_id == study_id and damaged.name in p.message]
    assert notes and notes[0].kind == "missing_tag"  # the reader names the file and why (a cut header)
    spinal = pd.DataFrame(study_json(summary, study_id)["grades"]).query(
        "condition == 'spinal_canal_stenosis'"
    )
    assert "model" in set(spinal["source"])
    assert len(submission) == 75


def test_unreadable_series_and_empty_study_folder_get_priors(data: Path, setup: dict[str, Path]) -> None:
    # No descriptions file: studies are the folders, series types come from the DICOM headers.
    study_a, folder = series_of(data, "Axial T2")
    for file in folder.iterdir():
        file.write_bytes(b"\0" * 128 + b"DICM" + b"\xff" * 64)
    (data / "test_series_descriptions.csv").unlink()
    (data / "sample_submission.csv").unlink()
    empty = data / "test_images" / "123456"
    empty.mkdir()
    with pytest.warns(PredictionWarning) as caught:
        submission, summary = run_predict(data, setup)
    messages = [str(w.message) for w in caught]
    assert any("study 123456 has no readable Sagittal T1" in m for m in messages)
    assert any(f"study {study_a} has no readable Axial T2" in m for m in messages)
    assert len(submission) == 4 * 25
    priors = weighted_priors(data)
    rows = submission[submission["row_id"].str.startswith("123456_")].set_index("row_id")
    expected = priors.assign(row_id="123456_" + priors["condition"] + "_" + priors["level"]).set_index(
        "row_id"
    )
    np.testing.assert_allclose(rows[list(SEVERITIES)], expected.loc[rows.index, list(SEVERITIES)])
    reasons = summary.studies_with_priors()
    assert {123456, study_a} <= set(reasons)
    assert any("pixel data" in r or "corrupt" in r or "no DICOM image" in r for r in reasons[study_a])
    others = [
        s
        for s in submission["row_id"].str.partition("_")[0].astype(int).unique()
        if s not in (123456, study_a)
    ]
    assert all(any(g["source"] == "model" for g in study_json(summary, s)["grades"]) for s in others)


def test_several_axial_series_all_reach_the_locator(data: Path, setup: dict[str, Path]) -> None:
    study_id, folder = series_of(data, "Axial T2")
    second = folder.with_name("999")
    second.mkdir()
    files = sorted(folder.iterdir(), key=lambda p: int(p.stem))
    for file in files[len(files) // 2 :]:
        file.rename(second / file.name)
    d = descriptions(data)
    extra = pd.DataFrame({"study_id": [study_id], "series_id": [999], "series_description": ["Axial T2"]})
    pd.concat([d, extra]).to_csv(data / "test_series_descriptions.csv", index=False)
    plan = next(p for p in discover_studies(data) if p.study_id == study_id)
    images = read_study(plan)
    assert sorted(s.series_id for s in images.series_by_type["Axial T2"]) == sorted([folder.name, "999"])
    seen = []
    locator = load_locator(setup["locator"])

    def locate(series_by_type):
        seen.append([s.series_id for s in series_by_type["Axial T2"]])
        return locate_study(series_by_type, locator)

    ensemble = Ensemble.load([setup["run0"]])
    result = grade_study(images, locate, ensemble, weighted_priors(data))
    assert sorted(seen[0]) == sorted([folder.name, "999"])
    assert len(result.rows()) == 25
    assert np.allclose(result.grades[list(SEVERITIES)].sum(axis=1), 1.0)


def test_reader_processes_keep_the_order_and_report_failures(setup: dict[str, Path]) -> None:
    plans = [*discover_studies(setup["data"]), StudyPlan(42, (("Axial T2", setup["data"] / "nowhere"),))]
    inline = list(read_studies(plans, workers=0))
    pooled = list(read_studies(plans, workers=1))
    assert [s.study_id for s in pooled] == [p.study_id for p in plans]
    for a, b in zip(inline, pooled, strict=True):
        assert a.series_by_type.keys() == b.series_by_type.keys()
        for kind in a.series_by_type:
            assert [s.series_id for s in a.series_by_type[kind]] == [
                s.series_id for s in b.series_by_type[kind]
            ]
            np.testing.assert_array_equal(a.series_by_type[kind][0].pixels, b.series_by_type[kind][0].pixels)
    assert pooled[-1].series_by_type == {}
    assert [p.kind for p in pooled[-1].problems] == ["unreadable_series"]
    assert "nowhere" in pooled[-1].problems[0].message


def test_the_sample_submission_decides_which_studies_are_graded() -> None:
    plans = [StudyPlan(1, (("Axial T2", Path("1/10")),)), StudyPlan(2, ())]
    sample = pd.DataFrame({"row_id": [f"{s}_{c}_{lv}" for s in (3, 1) for c, lv in TARGETS]})
    aligned, problems = align_with_sample(plans, sample)
    assert [p.study_id for p in aligned] == [3, 1]
    assert aligned[0].series == () and aligned[1] is plans[0]
    assert {(p.kind, p.study_id) for p in problems} == {("not_in_sample", 2), ("study_not_found", 3)}


def truth_locator(data: Path):
    """A locator that returns the phantom's true points (in the read series' pixel grid)."""
    truth = read_label_coordinates(data / "phantom_truth" / "test_label_coordinates.csv")

    def locate(series_by_type):
        by_id = {s.series_id: s for group in series_by_type.values() for s in group}
        rows = truth[truth["series_id"].astype(str).isin(by_id)]
        located = [
            (
                r.condition,
                r.level,
                r.series_id,
                r.instance_number,
                *label_to_pixel(by_id[str(r.series_id)], r.instance_number, r.x, r.y),
                1.0,
            )
            for r in rows.itertuples()
        ]
        frame = pd.DataFrame(
            located,
            columns=[
                "condition",
                "level",
                "series_id",
                "instance_number",
                "slice_index",
                "x",
                "y",
                "confidence",
            ],
        )
        return frame[list(LOCATION_COLUMNS)]

    return locate


def test_ensemble_averages_runs_and_tta_is_side_symmetric(setup: dict[str, Path]) -> None:
    data = setup["data"]
    assert find_runs([setup["runs"]]) == [setup["run0"], setup["run1"]]
    images = read_study(discover_studies(data)[0])
    priors = weighted_priors(data)
    locate = truth_locator(data)
    both = grade_study(images, locate, Ensemble.load([setup["runs"]], space="probability"), priors)
    assert set(both.grades["source"]) == {"model"}
    singles = [
        grade_study(images, locate, Ensemble.load([setup[r]]), priors).grades for r in ("run0", "run1")
    ]
    mean = (singles[0][list(SEVERITIES)].to_numpy() + singles[1][list(SEVERITIES)].to_numpy()) / 2
    np.testing.assert_allclose(both.grades[list(SEVERITIES)].to_numpy(), mean, atol=1e-6)

    ensemble = Ensemble.load([setup["run0"]], tta=True)
    spec = ensemble.specs[0]
    rng = np.random.default_rng(0)
    crops = rng.random((len(CONDITIONS), spec.k, spec.size, spec.size), dtype=np.float32)
    points = pd.DataFrame({"condition": list(CONDITIONS), "level": ["l4_l5"] * len(CONDITIONS)})
    flipped, mirrored = side_flip(
        torch.from_numpy(crops),
        torch.arange(len(CONDITIONS)),
        torch.ones(len(CONDITIONS), dtype=torch.bool),
    )
    mirrored_points = points.assign(condition=[CONDITIONS[i] for i in mirrored.tolist()])
    direct = ensemble.predict({spec: Cut.single(crops, points["condition"])}, points)
    mirror = ensemble.predict(
        {spec: Cut.single(flipped.numpy(), mirrored_points["condition"])}, mirrored_points
    )
    np.testing.assert_allclose(direct, mirror, atol=1e-5)
    plain = Ensemble.load([setup["run0"]]).predict({spec: Cut.single(crops, points["condition"])}, points)
    assert not np.allclose(direct, plain)


def test_priors_come_from_the_runs_then_train_csv_then_uniform(
    setup: dict[str, Path], tmp_path: Path
) -> None:
    data = setup["data"]
    stored = weighted_priors(data).assign(normal_mild=0.5, moderate=0.3, severe=0.2)
    run = make_run(tmp_path / "with_priors", 2, priors=stored)
    priors, source = load_priors(Ensemble.load([run]), data)
    assert "best.json" in source
    np.testing.assert_allclose(priors[list(SEVERITIES)].to_numpy(), [[0.5, 0.3, 0.2]] * 25)
    priors, source = load_priors(Ensemble.load([setup["run0"]]), data)
    pd.testing.assert_frame_equal(priors, weighted_priors(data))
    priors, source = load_priors(Ensemble.load([setup["run0"]]), tmp_path)
    assert source.startswith("uniform") and np.allclose(priors[list(SEVERITIES)].to_numpy(), 1 / 3)


def test_tta_is_the_default_for_mirrored_runs_and_refused_for_others(
    data: Path, setup: dict[str, Path], tmp_path: Path
) -> None:
    plain = make_run(tmp_path / "plain", 3, side_flip=False)
    assert Ensemble.load([setup["run0"]], tta=None).tta is True  # predict's default: on for mirrored runs
    assert Ensemble.load([setup["run0"], plain], tta=None).tta is False  # one run not mirrored: off
    with pytest.raises(DataError, match="not trained on mirrored views"):
        Ensemble.load([setup["run0"], plain], tta=True)
    with pytest.raises(DataError, match="predict without --tta"):
        predict(data, [plain], setup["locator"], tmp_path / "sub.csv", tta=True, progress=False)
    assert not (tmp_path / "sub.csv").exists()
    assert Ensemble.load([plain]).tta is False  # without --tta the run grades as trained


def test_predict_without_train_csv_uses_the_runs_priors(
    data: Path, setup: dict[str, Path], tmp_path: Path
) -> None:
    stored = weighted_priors(data).assign(normal_mild=0.6, moderate=0.3, severe=0.1)
    run = make_run(tmp_path / "with_priors", 0, priors=stored)
    (data / "train.csv").unlink()
    study_id, folder = series_of(data, "Axial T2")
    shutil.rmtree(folder)
    out = tmp_path / "out" / "submission.csv"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PredictionWarning)
        summary = predict(data, [run], setup["locator"], out, progress=False)
    assert "best.json" in summary.prior_source
    rows = pd.read_csv(out).set_index("row_id")
    axial = [f"{study_id}_{c}_{lv}" for c, lv in TARGETS if c.endswith("subarticular_stenosis")]
    np.testing.assert_allclose(rows.loc[axial, list(SEVERITIES)].to_numpy(), [[0.6, 0.3, 0.1]] * 10)


def test_a_calibration_beside_the_runs_is_applied_to_the_submission(
    data: Path, setup: dict[str, Path], tmp_path: Path
) -> None:
    runs = Path(shutil.copytree(setup["run0"], tmp_path / "runs"))
    calibration = Calibration(
        {"spinal": 0.5, "foraminal": 2.0, "subarticular": 1.0},
        {"spinal": [0, 0, 0], "foraminal": [0, 0.5, 0], "subarticular": [0, 0, 1.0]},
        spinal_severe_boost=1.25,
    )
    calibration.save(runs / "calibration.json")
    out = tmp_path / "out" / "submission.csv"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PredictionWarning)
        summary = predict(data, [runs], setup["locator"], out, progress=False)
    assert summary.calibration.endswith("calibration.json")
    submission = pd.read_csv(out).set_index("row_id")
    studies = submission.index.to_series().str.partition("_")[0].astype(int).unique()
    raw = pd.concat(
        [StudyResult.from_json(study_json(summary, s)).rows() for s in studies], ignore_index=True
    )
    expected = calibration.apply(raw).set_index("row_id").loc[submission.index]
    np.testing.assert_allclose(submission.to_numpy(), expected[list(SEVERITIES)].to_numpy(), atol=1e-9)
    assert not np.allclose(submission.to_numpy(), raw.set_index("row_id").loc[submission.index].to_numpy())
    record = json.loads((out.parent / "submission.ensemble.json").read_text())
    assert record["calibration"] == summary.calibration and record["space"] == "probability"
    assert record["tta"] is True  # mirrored runs: side-flip TTA by default


def test_a_stacking_beside_the_runs_grades_each_study_and_replaces_the_calibration(
    data: Path, setup: dict[str, Path], tmp_path: Path
) -> None:
    runs = Path(shutil.copytree(setup["run0"], tmp_path / "runs"))
    Calibration({g: 3.0 for g in GROUPS}, {g: [0, 0, 0] for g in GROUPS}).save(runs / "calibration.json")
    coef = [[1.0, 0, 0, 0, 0, 0, 0], [0, 1.0, 0, 0.5, 0.5, 0.5, 0.5], [0, 0, 1.0, 1.0, 1.0, 1.0, 1.0]]
    stacking = Stacking(
        means=[[0.2] * 5] * 5,
        coef={g: coef for g in GROUPS},
        intercept={g: [0.0, -0.2, -0.5] for g in GROUPS},
    )
    stacking.save(runs / "stacking.json")
    out = tmp_path / "out" / "submission.csv"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PredictionWarning)
        summary = predict(data, [runs], setup["locator"], out, progress=False)
    assert summary.stacking.endswith("stacking.json") and summary.calibration == "none"
    submission = pd.read_csv(out).set_index("row_id")
    studies = submission.index.to_series().str.partition("_")[0].astype(int).unique()
    raw = pd.concat(
        [StudyResult.from_json(study_json(summary, s)).rows() for s in studies], ignore_index=True
    )
    expected = stacking.apply(raw).set_index("row_id").loc[submission.index]
    np.testing.assert_allclose(submission.to_numpy(), expected[list(SEVERITIES)].to_numpy(), atol=1e-9)
    record = json.loads((out.parent / "submission.ensemble.json").read_text())
    assert record["stacking"] == summary.stacking and record["calibration"] is None


def test_an_ensemble_file_names_members_weights_and_logit_space(
    setup: dict[str, Path], tmp_path: Path
) -> None:
    folder = Path(shutil.copytree(setup["runs"], tmp_path / "runs"))
    members = [{"path": "fold0", "weight": 3.0}, {"path": "fold1", "weight": 1.0}]
    (folder / "ensemble.json").write_text(json.dumps({"members": members, "space": "logit"}))
    ensemble = Ensemble.load([folder])
    assert [r.path.name for r in ensemble.runs] == ["fold0", "fold1"] and ensemble.space == "logit"
    spec = ensemble.specs[0]
    crops = np.random.default_rng(0).random((5, spec.k, spec.size, spec.size), dtype=np.float32)
    points = pd.DataFrame({"condition": list(CONDITIONS), "level": ["l1_l2"] * 5})
    singles = [
        Ensemble.load([folder / m["path"]]).predict({spec: Cut.single(crops, points["condition"])}, points)
        for m in members
    ]
    np.testing.assert_allclose(
        ensemble.predict({spec: Cut.single(crops, points["condition"])}, points),
        average_probabilities(singles, [3, 1], "logit"),
        atol=1e-9,
    )
    flat = Ensemble.load([folder], space="probability", weights=[1, 1]).predict(
        {spec: Cut.single(crops, points["condition"])}, points
    )
    np.testing.assert_allclose(flat, (singles[0] + singles[1]) / 2, atol=1e-9)


def test_cli_writes_submission_details_and_figures(data: Path, setup: dict[str, Path]) -> None:
    import typer

    from spinegrade.prediction.commands import predict_command

    app = typer.Typer()
    app.command()(predict_command)
    out = data.parent / "cli" / "sub.csv"
    details = data.parent / "details"
    args = [str(data), "--runs", str(setup["run0"]), str(setup["run1"]), "--locator", str(setup["locator"])]
    args += ["--out", str(out), "--details", str(details), "--figures", "--tta"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert len(pd.read_csv(out)) == 75
    assert len(list(details.glob("*.json"))) == 3
    pngs = list((details / "figures").glob("*.png"))
    assert len(pngs) == 9 and all(p.read_bytes()[:4] == b"\x89PNG" for p in pngs)
    again = CliRunner().invoke(app, [*args, "--resume"])
    assert again.exit_code == 0 and "3 resumed" in again.output


def test_the_summary_names_study_series_and_file_in_any_console(data: Path, setup: dict[str, Path]) -> None:
    """As a log or a pipe sees it (80 columns, not a terminal): ids and file names whole, notes apart."""
    import typer

    from spinegrade.prediction.commands import predict_command

    app = typer.Typer()
    app.command()(predict_command)
    first, second = sorted(descriptions(data)["study_id"].unique())[:2]
    study_a, emptied = series_of(data, "Sagittal T1", first)
    for file in emptied.iterdir():
        file.unlink()
    study_b, folder = series_of(data, "Sagittal T2/STIR", second)
    damaged = sorted(folder.iterdir())[0]
    damaged.write_bytes(damaged.read_bytes()[:300])
    args = [str(data.resolve()), "--runs", str(setup["run0"]), "--locator", str(setup["locator"])]
    args += ["--out", str(data.parent / "out" / "sub.csv")]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PredictionWarning)
        result = CliRunner().invoke(app, args, terminal_width=80)
    assert result.exit_code == 0, result.output
    words = " ".join(result.output.replace("│", " ").split())  # as read, whatever the line breaks
    assert f"study {study_a} series {emptied.name}: no DICOM image files in this series folder" in words
    assert f"study {study_b} series {folder.name}: {damaged.name}: missing required DICOM tag" in words
    assert "…" not in result.output  # nothing cut with an ellipsis
    # Angled axial blocks are how the phantom was acquired: one note line per kind, not a problem.
    assert words.count("note (several_stacks,") == 1
    assert "several_stacks" not in words.split("note (several_stacks,")[0]
