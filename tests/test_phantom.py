"""The phantom: RSNA layout and formats, valid and consistent DICOM geometry, labels, lesions, determinism."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import pytest
import typer
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage
from typer.testing import CliRunner

from spinegrade.data.phantom import phantom_command, phantom_studies, write_phantom
from spinegrade.data.phantom.anatomy import Anatomy, Tissue, sample_anatomy
from spinegrade.data.phantom.geometry import plan_axial, plan_sagittal
from spinegrade.data.phantom.labels import BLANK_RATES, FREQUENCIES, sample_labels
from spinegrade.data.phantom.render import render_series
from spinegrade.errors import DataError
from spinegrade.vocab import (
    CONDITIONS,
    LABEL_COLUMNS,
    LEVELS,
    SERIES_TYPES,
    SEVERITY_LABELS,
    TARGETS,
    condition_display,
    condition_key,
    level_display,
    level_key,
    make_row_id,
)

REAL = Path(__file__).resolve().parents[1].parent / "shared/data/rsna2024"
needs_real = pytest.mark.skipif(
    not (REAL / "train.csv").is_file(), reason=f"real RSNA CSVs not found at {REAL}"
)
SIZE = 64
CSVS = (
    "train.csv",
    "train_label_coordinates.csv",
    "train_series_descriptions.csv",
    "test_series_descriptions.csv",
    "sample_submission.csv",
)
HEADERS = {
    "train.csv": ["study_id", *LABEL_COLUMNS],
    "train_label_coordinates.csv": [
        "study_id",
        "series_id",
        "instance_number",
        "condition",
        "level",
        "x",
        "y",
    ],
    "train_series_descriptions.csv": ["study_id", "series_id", "series_description"],
    "test_series_descriptions.csv": ["study_id", "series_id", "series_description"],
    "sample_submission.csv": ["row_id", "normal_mild", "moderate", "severe"],
}


def _digest(root: Path) -> dict[str, str]:
    """sha256 of every file under root (relative path -> hash)."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in root.rglob("*")
        if p.is_file()
    }


@pytest.fixture(scope="module")
def phantom(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("phantom") / "out"
    summary = write_phantom(out, 3, seed=7, size=SIZE, test_studies=2, workers=1, progress=False)
    assert (summary.train_studies, summary.test_studies, summary.rendered, summary.reused) == (3, 2, 5, 0)
    return out


def _dicom_point(folder: Path, instance: int, x: float, y: float) -> tuple[np.ndarray, pydicom.Dataset]:
    """Patient position of pixel (x = column, y = row) of an instance, by the DICOM formula."""
    ds = pydicom.dcmread(folder / f"{instance}.dcm", stop_before_pixels=True)
    orientation = np.array(ds.ImageOrientationPatient, dtype=float).reshape(2, 3)
    dy, dx = (float(v) for v in ds.PixelSpacing)
    point = np.array(ds.ImagePositionPatient, dtype=float) + x * dx * orientation[0] + y * dy * orientation[1]
    return point, ds


def test_layout_and_csv_formats(phantom: Path) -> None:
    for name in CSVS:
        assert pd.read_csv(phantom / name, nrows=0).columns.tolist() == HEADERS[name], name
    labels = pd.read_csv(phantom / "train.csv")
    coords = pd.read_csv(phantom / "train_label_coordinates.csv")
    train_desc = pd.read_csv(phantom / "train_series_descriptions.csv")
    test_desc = pd.read_csv(phantom / "test_series_descriptions.csv")
    submission = pd.read_csv(phantom / "sample_submission.csv")

    assert len(labels) == 3 and labels.study_id.is_monotonic_increasing
    assert labels.study_id.astype(str).str.len().between(7, 10).all()
    assert set(labels[list(LABEL_COLUMNS)].melt().value.dropna()) <= set(SEVERITY_LABELS)
    assert set(coords.condition) <= {condition_display(c) for c in CONDITIONS}
    assert set(coords.level) <= {level_display(lv) for lv in LEVELS}
    assert coords.equals(coords.sort_values(HEADERS["train_label_coordinates.csv"][:5], ignore_index=True))
    assert coords.x.between(0, SIZE - 1).all() and coords.y.between(0, SIZE - 1).all()
    for desc, split in ((train_desc, "train"), (test_desc, "test")):
        for _, kinds in desc.groupby("study_id").series_description:
            assert sorted(kinds) == sorted(SERIES_TYPES)
        assert desc.series_id.astype(str).str.len().le(10).all()
        for row in desc.itertuples():
            files = sorted(
                int(p.stem)
                for p in (phantom / f"{split}_images" / str(row.study_id) / str(row.series_id)).glob("*.dcm")
            )
            assert files == list(range(1, len(files) + 1))
            limits = (15, 30) if row.series_description == "Axial T2" else (10, 20)
            assert limits[0] <= len(files) <= limits[1], row
    assert sorted(p.name for p in (phantom / "train_images").iterdir()) == sorted(map(str, labels.study_id))
    # Every point names an existing file of a series of the right type.
    series_of = dict(zip(train_desc.series_id, train_desc.series_description, strict=True))
    for row in coords.itertuples():
        expected = {"Spinal": "Sagittal T2/STIR", "Left Neural": "Sagittal T1", "Right Neural": "Sagittal T1"}
        kind = next((v for k, v in expected.items() if row.condition.startswith(k)), "Axial T2")
        assert series_of[row.series_id] == kind
        assert (
            phantom / "train_images" / str(row.study_id) / str(row.series_id) / f"{row.instance_number}.dcm"
        ).is_file()

    test_ids = sorted(test_desc.study_id.unique())
    expected_rows = [make_row_id(s, c, lv) for s in test_ids for c in sorted(CONDITIONS) for lv in LEVELS]
    assert submission.row_id.tolist() == expected_rows
    assert np.allclose(submission[["normal_mild", "moderate", "severe"]].to_numpy(), 1 / 3)
    assert (phantom / "sample_submission.csv").read_text().splitlines()[1].endswith(",0.3333333333333333" * 3)
    config = json.loads((phantom / "phantom.json").read_text())
    assert config["seed"] == 7 and config["size"] == SIZE and config["complete"] is True


@needs_real
def test_headers_match_the_real_files(phantom: Path) -> None:
    for name in CSVS:
        assert (
            pd.read_csv(phantom / name, nrows=0).columns.tolist()
            == pd.read_csv(REAL / name, nrows=0).columns.tolist()
        )
    real = pd.read_csv(REAL / "train_label_coordinates.csv", nrows=200)
    ours = pd.read_csv(phantom / "train_label_coordinates.csv")
    assert ours.dtypes.to_dict() == real.dtypes.to_dict()
    assert set(ours.condition) <= set(pd.read_csv(REAL / "train_label_coordinates.csv").condition)


def test_test_split_has_no_labels_but_truth(phantom: Path) -> None:
    test_ids = set(pd.read_csv(phantom / "test_series_descriptions.csv").study_id)
    assert len(test_ids) == 2
    assert not test_ids & set(pd.read_csv(phantom / "train.csv").study_id)
    assert not test_ids & set(pd.read_csv(phantom / "train_label_coordinates.csv").study_id)
    truth = pd.read_csv(phantom / "phantom_truth/test.csv")
    truth_points = pd.read_csv(phantom / "phantom_truth/test_label_coordinates.csv")
    assert truth.columns.tolist() == HEADERS["train.csv"] and set(truth.study_id) == test_ids
    assert truth_points.columns.tolist() == HEADERS["train_label_coordinates.csv"]
    assert set(truth_points.study_id) == test_ids
    assert sorted(p.name for p in (phantom / "test_images").iterdir()) == sorted(map(str, test_ids))


def test_dicom_files_are_valid_and_share_the_frame_of_reference(phantom: Path) -> None:
    frames, sop_uids = {}, set()
    for study in (phantom / "train_images").iterdir():
        for series in study.iterdir():
            for path in series.glob("*.dcm"):
                ds = pydicom.dcmread(path)
                assert ds.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
                assert ds.SOPClassUID == MRImageStorage == ds.file_meta.MediaStorageSOPClassUID
                assert ds.PhotometricInterpretation == "MONOCHROME2" and ds.Modality == "MR"
                assert ds.BitsAllocated == 16 and 12 <= ds.BitsStored <= 16 and ds.PixelRepresentation == 0
                assert (ds.Rows, ds.Columns) == (SIZE, SIZE) and int(ds.InstanceNumber) == int(path.stem)
                pixels = ds.pixel_array
                assert pixels.dtype == np.uint16 and pixels.max() < 2**ds.BitsStored and pixels.std() > 0
                assert str(ds.StudyInstanceUID) == study.name == ds.PatientID
                assert str(ds.SeriesInstanceUID) == series.name
                assert float(ds.SpacingBetweenSlices) > 0 and float(ds.SliceThickness) > 0
                frames.setdefault(study.name, set()).add(ds.FrameOfReferenceUID)
                sop_uids.add(ds.SOPInstanceUID)
            orientation = np.array(ds.ImageOrientationPatient, dtype=float)
            axes = [1, 0, 0, 0, 1, 0] if ds.SeriesDescription == "Axial T2" else [0, 1, 0, 0, 0, -1]
            assert np.abs(orientation - axes).max() < 0.1, series
    assert all(len(uids) == 1 for uids in frames.values())
    assert len({uid for uids in frames.values() for uid in uids}) == len(frames)
    n_files = sum(1 for _ in (phantom / "train_images").rglob("*.dcm"))
    assert len(sop_uids) == n_files


def test_label_points_lie_at_the_anatomy_targets(phantom: Path) -> None:
    """Label (instance, x, y) + DICOM headers -> patient point == where the anatomy puts the target."""
    specs = {s.study_id: s for s in phantom_studies(3, 7, size=SIZE, test_studies=2)}
    coords = pd.read_csv(phantom / "train_label_coordinates.csv")
    assert len(coords) > 60
    for row in coords.itertuples():
        study = specs[row.study_id]
        folder = phantom / "train_images" / str(row.study_id) / str(row.series_id)
        point, ds = _dicom_point(folder, row.instance_number, row.x, row.y)
        target = study.anatomy.target_point(condition_key(row.condition), level_key(row.level))
        normal = np.cross(*np.array(ds.ImageOrientationPatient, dtype=float).reshape(2, 3))
        off_plane = abs((target - point) @ normal)
        in_plane = np.linalg.norm((target - point) - ((target - point) @ normal) * normal)
        assert in_plane < 3.0, row  # click noise of 0.6 mm
        assert off_plane < float(ds.SpacingBetweenSlices) / 2 + 3.0, row


def test_a_point_maps_between_the_series_of_a_study(phantom: Path) -> None:
    """The canal point of the sagittal T2, projected into the axial T2, lies between the two recesses."""
    coords = pd.read_csv(phantom / "train_label_coordinates.csv")
    coords["key"] = coords.condition.map(condition_key)
    checked = 0
    for (study_id, level), group in coords.groupby(["study_id", "level"]):
        rows = {r.key: r for r in group.itertuples()}
        wanted = ("spinal_canal_stenosis", "left_subarticular_stenosis", "right_subarticular_stenosis")
        if not all(k in rows for k in wanted):
            continue
        canal = rows["spinal_canal_stenosis"]
        point, _ = _dicom_point(
            phantom / "train_images" / str(study_id) / str(canal.series_id),
            canal.instance_number,
            canal.x,
            canal.y,
        )
        axial = phantom / "train_images" / str(study_id) / str(rows["left_subarticular_stenosis"].series_id)
        ds = pydicom.dcmread(axial / f"{rows['left_subarticular_stenosis'].instance_number}.dcm")
        orientation = np.array(ds.ImageOrientationPatient, dtype=float).reshape(2, 3)
        dy, dx = (float(v) for v in ds.PixelSpacing)
        relative = point - np.array(ds.ImagePositionPatient, dtype=float)
        x, y = relative @ orientation[0] / dx, relative @ orientation[1] / dy
        left, right = rows["left_subarticular_stenosis"], rows["right_subarticular_stenosis"]
        assert right.x + 1 < x < left.x - 1, (study_id, level)  # patient left is +x: larger column
        assert abs(y - (left.y + right.y) / 2) < 8.0 / dy, (study_id, level)
        checked += 1
    assert checked >= 10


def test_same_seed_same_bytes_whatever_the_workers(tmp_path: Path, phantom: Path) -> None:
    again = tmp_path / "again"
    write_phantom(again, 3, seed=7, size=SIZE, test_studies=2, workers=2, progress=False)
    assert _digest(again) == _digest(phantom)
    other = tmp_path / "other"
    write_phantom(other, 3, seed=8, size=SIZE, test_studies=2, workers=1, progress=False)
    assert (other / "train.csv").read_bytes() != (phantom / "train.csv").read_bytes()


def test_resume_refuse_and_overwrite(tmp_path: Path) -> None:
    out = tmp_path / "out"
    write_phantom(out, 2, seed=1, size=SIZE, test_studies=1, workers=1, progress=False)
    before = _digest(out)
    study = next((out / "train_images").iterdir())
    for path in sorted(study.rglob("*"), reverse=True):
        path.rmdir() if path.is_dir() else path.unlink()
    study.rmdir()  # as if interrupted before this study was renamed into place
    summary = write_phantom(out, 2, seed=1, size=SIZE, test_studies=1, workers=1, progress=False)
    assert (summary.rendered, summary.reused) == (1, 2)
    assert _digest(out) == before

    with pytest.raises(DataError, match="another config"):
        write_phantom(out, 2, seed=2, size=SIZE, test_studies=1, workers=1, progress=False)
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(DataError, match="not a phantom"):
        write_phantom(foreign, 1, seed=1, size=SIZE, test_studies=0, workers=1, progress=False)

    write_phantom(out, 1, seed=2, size=SIZE, test_studies=0, workers=1, overwrite=True, progress=False)
    assert len(list((out / "train_images").iterdir())) == 1  # the old studies are gone
    assert not (out / "test_images").exists() and len(pd.read_csv(out / "sample_submission.csv")) == 0
    with pytest.raises(DataError, match="--size"):
        write_phantom(tmp_path / "x", 1, seed=0, size=8)


def test_label_frequencies_follow_the_real_table() -> None:
    sample = sample_labels(np.random.default_rng(0), 20_000)
    shown = np.where(sample.blank, -1, sample.severity)
    for code in range(3):
        observed = (shown == code).sum(axis=0) / (~sample.blank).sum(axis=0)
        assert np.abs(observed - FREQUENCIES[:, code]).max() < 0.02, code
    assert abs(sample.blank.mean() - BLANK_RATES.mean()) < 0.003
    assert 0 < sample.no_point.mean() < 0.01 and not (sample.no_point & sample.blank).any()
    # Degeneration is correlated: a severe L4/L5 canal raises the odds of narrowing elsewhere.
    canal = sample.severity[:, LABEL_COLUMNS.index("spinal_canal_stenosis_l4_l5")]
    others = np.delete(sample.severity, LABEL_COLUMNS.index("spinal_canal_stenosis_l4_l5"), axis=1).mean(
        axis=1
    )
    assert others[canal == 2].mean() > others[canal == 0].mean() + 0.1


def _open_share(anatomy: Anatomy, condition: str, level: str) -> float:
    """Share of a ball around the target, as big as the normal lumen there, that is open (CSF, fat, nerve)."""
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, 17)] * 3, indexing="ij"), axis=-1).reshape(-1, 3)
    radius = anatomy.lumen_radius(condition)
    ball = grid[np.linalg.norm(grid, axis=1) <= 1.0] * radius + anatomy.target_point(condition, level)
    lumen = Tissue.FAT if "foraminal" in condition else Tissue.CSF
    return float(np.isin(anatomy.tissue(ball), [lumen, Tissue.NERVE]).mean())


def test_lesion_size_follows_severity() -> None:
    """Same patient, grades 0/1/2 everywhere: the lumen at each target shrinks with the grade, locally."""
    anatomies = [sample_anatomy(np.random.default_rng(3), np.full(25, code)) for code in range(3)]
    for condition, level in TARGETS:
        shares = [_open_share(a, condition, level) for a in anatomies]
        assert shares[0] > shares[1] + 0.05 > shares[2] + 0.1, (condition, level, shares)

    # Only the graded place changes: a severe L4/L5 canal leaves the L1/L2 canal as it was.
    codes = np.zeros(25, dtype=int)
    codes[LABEL_COLUMNS.index("spinal_canal_stenosis_l4_l5")] = 2
    one = sample_anatomy(np.random.default_rng(3), codes)
    assert _open_share(one, "spinal_canal_stenosis", "l1_l2") == pytest.approx(
        _open_share(anatomies[0], "spinal_canal_stenosis", "l1_l2"), abs=0.02
    )
    assert _open_share(one, "spinal_canal_stenosis", "l4_l5") < 0.5 * _open_share(
        anatomies[0], "spinal_canal_stenosis", "l4_l5"
    )

    # And the pictures show it: at the label pixel, severe is darker than normal on each series type.
    for condition, plan_of, sequence in (
        ("spinal_canal_stenosis", plan_sagittal, "T2"),
        ("left_neural_foraminal_narrowing", plan_sagittal, "T1"),
        ("right_subarticular_stenosis", plan_axial, "T2"),
    ):
        plan = plan_of(anatomies[0], np.random.default_rng(4), 96)
        windows = []
        for anatomy in (anatomies[0], anatomies[2]):
            pixels, _ = render_series(anatomy, plan, sequence, np.random.default_rng(5))
            values = []
            for level in LEVELS:
                instance, x, y = plan.project(anatomy.target_point(condition, level))
                r, c = round(y), round(x)
                values.append(pixels[instance - 1, r - 1 : r + 2, c - 1 : c + 2].mean())
            windows.append(np.mean(values) / np.percentile(pixels, 99))
        assert windows[1] < 0.7 * windows[0], (condition, windows)


def test_cli_command(tmp_path: Path) -> None:
    app = typer.Typer()
    app.command()(phantom_command)
    result = CliRunner().invoke(app, ["--help"])
    assert result.exit_code == 0 and "spinegrade phantom" in result.output
    out = tmp_path / "cli"
    result = CliRunner().invoke(
        app, [str(out), "--studies", "1", "--seed", "3", "--size", "64", "--workers", "1"]
    )
    assert result.exit_code == 0, result.output
    assert (
        len(pd.read_csv(out / "train.csv")) == 1
        and len(pd.read_csv(out / "test_series_descriptions.csv")) == 3
    )
    assert json.loads((out / "phantom.json").read_text())["test_studies"] == 1
