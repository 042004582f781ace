"""Localisation: targets, decoding, series targets, the axial level mapping, metrics, end to end."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch

from spinegrade.data.series import Series, slice_through_point
from spinegrade.errors import DataError
from spinegrade.localization.dataset import (
    mirror_permutation,
    random_affine,
    series_stack,
    slice_input,
    slice_inputs,
    volume_input,
)
from spinegrade.localization.locate import level_anchors
from spinegrade.localization.metrics import point_errors, summarise_errors
from spinegrade.localization.settings import LocatorSettings
from spinegrade.localization.targets import (
    TASK_BY_SLUG,
    decode_heatmaps,
    decode_slices,
    depth_to_slice,
    gaussian_1d,
    gaussian_heatmaps,
    label_to_grid,
    rescale,
    series_targets,
    slice_to_depth,
)
from spinegrade.runtime import torch_threads
from spinegrade.vocab import CONDITION_SERIES


@pytest.fixture(autouse=True)
def one_thread():
    """Torch on one thread, as train_locator and prediction use it: on 2 shared cores a second OpenMP
    thread spin-waits and makes these small models several times slower."""
    with torch_threads(1):
        yield


SAGITTAL = np.array([[0.0, 1.0, 0.0], [0.0, 0.0, -1.0]])
AXIAL = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])


def make_series(
    series_id: int,
    orientation: np.ndarray,
    first: tuple[float, float, float],
    n: int,
    step: float,
    shape: tuple[int, int] = (40, 50),
    spacing: tuple[float, float] = (0.5, 0.5),
    original_shapes: np.ndarray | None = None,
) -> Series:
    """A Series with parallel slices `step` mm apart along the orientation's normal, starting at `first`."""
    normal = np.cross(orientation[0], orientation[1])
    positions = np.asarray(first, dtype=np.float64) + np.arange(n)[:, None] * step * normal
    return Series(
        pixels=np.random.default_rng(series_id).random((n, *shape), dtype=np.float32),
        instance_numbers=np.arange(1, n + 1, dtype=np.int64) * 2,  # instance numbers differ from indices
        positions=positions,
        orientation=orientation,
        pixel_spacing=np.tile(np.asarray(spacing, dtype=np.float64), (n, 1)),
        original_shapes=np.tile(shape, (n, 1)) if original_shapes is None else original_shapes,
        slice_thickness=step,
        series_id=str(series_id),
    )


# ------------------------------------------------------------------------------------------------ targets


def test_heatmap_peaks_at_the_resized_label_and_decodes_back():
    rows, cols, size, stride = 300, 200, 128, 4
    x, y = 123.4, 77.9
    out = size // stride
    point = torch.tensor([[rescale(x, cols, out), rescale(y, rows, out)]], dtype=torch.float64)
    heatmap = gaussian_heatmaps(point, out, out, sigma=1.5)
    assert heatmap.shape == (1, out, out)
    assert heatmap.sum().item() == pytest.approx(1.0)
    peak_y, peak_x = divmod(int(heatmap.argmax()), out)
    assert (peak_x, peak_y) == (round(float(point[0, 0])), round(float(point[0, 1])))
    decoded, confidence = decode_heatmaps(torch.log(heatmap + 1e-30), radius=3)
    assert decoded[0].numpy() == pytest.approx(point[0].numpy(), abs=1e-3)
    assert 0.9 < confidence.item() <= 1.0
    back = rescale(decoded[0, 0].item(), out, cols), rescale(decoded[0, 1].item(), out, rows)
    assert back == pytest.approx((x, y), abs=0.2)


def test_missing_point_gives_an_empty_map_and_slice_decoding_inverts_the_target():
    maps = gaussian_heatmaps(torch.tensor([[3.0, 4.0], [float("nan"), float("nan")]]), 8, 8, 1.0)
    assert maps[1].abs().sum() == 0 and maps[0].sum() == pytest.approx(1.0)
    positions = torch.tensor([0.0, 3.3, 13.6, 15.0])
    decoded, _ = decode_slices(torch.log(gaussian_1d(positions, 16, 1.0)))
    assert decoded.numpy() == pytest.approx(positions.numpy(), abs=1e-3)
    assert depth_to_slice(slice_to_depth(7.0, 13, 16), 13, 16) == pytest.approx(7.0)
    assert slice_to_depth(12, 13, 16) == pytest.approx(15.0)  # the last slice is the last channel


def test_volume_input_keeps_the_end_slices():
    stack = torch.arange(5, dtype=torch.float32)[:, None, None].expand(5, 2, 2)
    volume = volume_input(stack, 9)
    assert volume[:, 0, 0].tolist() == pytest.approx([0, 0.5, 1, 1.5, 2, 2.5, 3, 3.5, 4])


def test_slice_inputs_resize_only_the_slices_used_and_equal_the_whole_stack():
    """Inference resizes only the picked slices and their neighbours: the same inputs as slicing the
    stack of every slice, normalised over the whole series (as training builds them)."""
    rng = np.random.default_rng(4)
    n = 9
    series = Series(
        pixels=rng.integers(0, 1500, size=(n, 50, 40)).astype(np.float32),
        instance_numbers=np.arange(1, n + 1),
        positions=np.array([[0.0, 0.0, -4.0 * i] for i in range(n)]),
        orientation=np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]),
        pixel_spacing=np.full((n, 2), 0.8),
        original_shapes=np.tile([50, 40], (n, 1)),
        slice_thickness=4.0,
        series_id="7",
        stacks=np.array([0, 0, 0, 0, 1, 1, 1, 1, 1]),
    )
    indices = np.array([0, 3, 4, 8, 3])
    got = slice_inputs(series, indices, 32, 3)
    stack = series_stack(series, 32)
    expected = torch.stack([slice_input(stack, int(i), 3, series) for i in indices])
    assert got.shape == (5, 3, 32, 32)
    assert torch.equal(got, expected)
    assert not torch.equal(got[0], got[1])


def test_series_targets_volume_and_slice_tasks():
    sagittal = make_series(1, SAGITTAL, (0, 0, 0), n=6, step=4.0)
    rows = pd.DataFrame(
        {
            "condition": ["spinal_canal_stenosis", "spinal_canal_stenosis", "left_subarticular_stenosis"],
            "level": ["l1_l2", "l4_l5", "l1_l2"],
            "instance_number": [6, 8, 2],
            "x": [10.0, 12.0, 1.0],
            "y": [20.0, 30.0, 1.0],
        }
    )
    [target] = series_targets(rows, sagittal, TASK_BY_SLUG["sagittal_t2"])
    assert target.points[0].tolist() == [10.0, 20.0] and target.points[3].tolist() == [12.0, 30.0]
    assert target.slices[[0, 3]].tolist() == [2, 3]  # instance 6 -> index 2, instance 8 -> index 3
    assert np.isnan(target.points[[1, 2, 4]]).all() and np.isnan(target.slices[[1, 2, 4]]).all()

    axial = make_series(2, AXIAL, (0, 0, 0), n=5, step=4.0)
    rows = pd.DataFrame(
        {
            "condition": ["left_subarticular_stenosis", "right_subarticular_stenosis"],
            "level": ["l3_l4", "l3_l4"],
            "instance_number": [4, 6],  # left and right marked on different slices
            "x": [5.0, 30.0],
            "y": [7.0, 8.0],
        }
    )
    first, second = series_targets(rows, axial, TASK_BY_SLUG["axial_t2"])
    assert (first.slice_index, second.slice_index) == (1, 2)
    assert first.points[0].tolist() == [5.0, 7.0] and np.isnan(first.points[1]).all()
    assert second.points[1].tolist() == [30.0, 8.0] and np.isnan(second.points[0]).all()

    with pytest.raises(DataError, match="instance 99"):
        series_targets(rows.assign(instance_number=99), axial, TASK_BY_SLUG["axial_t2"])


def test_label_on_a_resampled_slice_is_moved_to_the_series_grid():
    shapes = np.array([[40, 50], [80, 100], [40, 50]])
    series = make_series(3, AXIAL, (0, 0, 0), n=3, step=4.0, original_shapes=shapes)
    assert label_to_grid(series, 1, 99.0, 79.0) == pytest.approx((49.0, 39.0))  # corner centres kept
    assert label_to_grid(series, 0, 12.5, 3.0) == (12.5, 3.0)


# ---------------------------------------------------------------------------------------- augmentation


def test_mirror_permutation_swaps_left_and_right():
    t1 = TASK_BY_SLUG["sagittal_t1"]
    swap = mirror_permutation(t1)
    for i, (condition, level) in enumerate(t1.points):
        twin = t1.points[swap[i]]
        assert twin[1] == level and twin[0] != condition and {condition, twin[0]} == set(t1.conditions)
    assert mirror_permutation(TASK_BY_SLUG["sagittal_t2"]) == [0, 1, 2, 3, 4]


def test_random_affine_moves_points_with_the_image():
    torch.manual_seed(0)
    for _ in range(5):
        image = torch.zeros(1, 64, 64)
        image[0, 20, 40] = 1.0  # a bright dot at x=40, y=20
        warped, moved = random_affine(image, torch.tensor([[40.0, 20.0]]), rotate_deg=20, scale=0.2)
        peak_y, peak_x = divmod(int(warped[0].argmax()), 64)
        assert moved[0].tolist() == pytest.approx([peak_x, peak_y], abs=1.0)


# ------------------------------------------------------------------------------------- axial level mapping


def test_axial_slice_through_a_sagittal_level_point():
    # Sagittal: slices along -x (normal of SAGITTAL), pixel (x, y) -> patient (.., y0 + x/2, z0 - y/2).
    sagittal = make_series(10, SAGITTAL, (10.0, -20.0, 60.0), n=7, step=3.0, shape=(200, 200))
    # Axial series 1 covers z = 0..56 (15 slices, 4 mm); series 2 covers z = 40..96, 8 mm.
    low = make_series(11, AXIAL, (-25.0, -25.0, 0.0), n=15, step=4.0, shape=(100, 100))
    high = make_series(12, AXIAL, (-25.0, -25.0, 40.0), n=8, step=8.0, shape=(100, 100))
    # A canal point on sagittal slice 3 (x = 10 - 9 = 1) at row y=30 -> z = 60 - 15 = 45.
    point = sagittal.pixel_to_patient(3, 40, 30)
    assert point == pytest.approx([1.0, 0.0, 45.0])
    assert slice_through_point([low], point) == (0, 11)  # z = 44 is 1 mm away
    assert slice_through_point([high], point) == (0, 1)  # z = 48 is 3 mm away
    assert slice_through_point([high, low], point) == (1, 11)  # the nearer plane wins
    assert slice_through_point([low, high], sagittal.pixel_to_patient(3, 40, -4)) == (1, 3)  # z=62: high
    assert slice_through_point([low, high], sagittal.pixel_to_patient(3, 40, -100)) is None  # above both
    outside = np.array([80.0, 0.0, 20.0])  # inside low's stack but right of its 50 mm field of view
    assert slice_through_point([low], outside) is None


def test_level_anchors_prefer_the_canal_and_fall_back_to_the_foramina():
    sagittal = make_series(20, SAGITTAL, (0.0, 0.0, 0.0), n=5, step=4.0)
    row = {"series_id": 20, "slice_index": 2, "x": 10.0, "y": 10.0}
    rows = [
        {**row, "condition": "spinal_canal_stenosis", "level": "l1_l2"},
        {**row, "condition": "left_neural_foraminal_narrowing", "level": "l1_l2", "slice_index": 0},
        {**row, "condition": "left_neural_foraminal_narrowing", "level": "l2_l3", "slice_index": 0},
        {**row, "condition": "right_neural_foraminal_narrowing", "level": "l2_l3", "slice_index": 4},
    ]
    anchors = level_anchors(rows, {"20": sagittal})
    assert set(anchors) == {"l1_l2", "l2_l3"}
    assert anchors["l1_l2"] == pytest.approx(sagittal.pixel_to_patient(2, 10, 10))
    assert anchors["l2_l3"] == pytest.approx(sagittal.pixel_to_patient(2, 10, 10))  # mean of slices 0 and 4


# ------------------------------------------------------------------------------------------------ metrics


def test_point_errors_against_hand_computed_distances():
    series = make_series(30, AXIAL, (0.0, 0.0, 0.0), n=5, step=4.0)  # 0.5 mm pixels, 4 mm slices
    truth = pd.DataFrame(
        {
            "study_id": [1, 1, 1],
            "series_id": [30, 30, 30],
            "instance_number": [6, 6, 8],  # slice indices 2, 2, 3
            "condition": [
                "left_subarticular_stenosis",
                "right_subarticular_stenosis",
                "spinal_canal_stenosis",
            ],
            "level": ["l1_l2", "l1_l2", "l1_l2"],
            "x": [10.0, 20.0, 5.0],
            "y": [20.0, 20.0, 5.0],
        }
    )
    located = pd.DataFrame(
        {
            "study_id": [1, 1],
            "condition": ["left_subarticular_stenosis", "right_subarticular_stenosis"],
            "level": ["l1_l2", "l1_l2"],
            "series_id": [30, 30],
            "instance_number": [6, 8],
            "slice_index": [2, 3],
            "x": [16.0, 20.0],
            "y": [28.0, 20.0],
            "confidence": [0.9, 0.8],
        }
    )
    errors = point_errors(located, truth, {"30": series}).set_index("condition")
    assert errors.loc["left_subarticular_stenosis", "error_mm"] == pytest.approx(5.0)  # 3-4-5 in 0.5 mm px
    assert errors.loc["left_subarticular_stenosis", "slice_error"] == 0
    assert errors.loc["right_subarticular_stenosis", "error_mm"] == pytest.approx(4.0)  # one 4 mm slice off
    assert errors.loc["right_subarticular_stenosis", "slice_error"] == 1
    assert not errors.loc["spinal_canal_stenosis", "located"]
    assert math.isnan(errors.loc["spinal_canal_stenosis", "error_mm"])
    summary = summarise_errors(errors.reset_index())
    assert summary["n_points"] == 3 and summary["located_share"] == pytest.approx(2 / 3)
    assert summary["median_mm"] == pytest.approx(4.5)
    assert summary["p90_mm"] == pytest.approx(4.9)
    assert summary["within_5mm_share"] == pytest.approx(2 / 3)  # the unlocated point counts as a miss
    assert summary["mean_slice_error"] == pytest.approx(0.5) and summary["exact_slice_share"] == 0.5


# ---------------------------------------------------------------------------------------------- end to end


def _blob_series(slice_index: int, x: float, y: float) -> Series:
    """A 7-slice sagittal series of noise with one bright spot at (slice, x, y)."""
    series = make_series(4, SAGITTAL, (0, 0, 0), n=7, step=4.0, shape=(60, 60))
    pixels = series.pixels * 0.1
    rr, cc = np.mgrid[:60, :60]
    pixels[slice_index] += np.exp(-((cc - x) ** 2 + (rr - y) ** 2) / 4.0).astype(np.float32)
    return replace(series, pixels=pixels)


REFINE = LocatorSettings(refine_mm=16.0, refine_size=16, refine_depth=3, out_stride=2)


def test_refiner_windows_centre_the_label_and_crops_walk_it_back():
    from spinegrade.localization.refine import WindowDataset, window_samples
    from spinegrade.localization.targets import REFINER_OF, SeriesTargets

    task = REFINER_OF["sagittal_t2"]
    series = _blob_series(3, 30.0, 25.0)
    points, slices = np.full((5, 2), np.nan), np.full(5, np.nan)
    points[2], slices[2] = (30.0, 25.0), 3
    samples = window_samples(task, [(series, [SeriesTargets(points, slices, None)])], REFINE)
    assert samples.images.shape == (1, 5, 24, 24)  # 1.5x the window, one slice more on each side
    assert samples.points[0, 2].tolist() == [11.5, 11.5] and samples.slices[0, 2] == 2
    assert np.isnan(samples.points[0, [0, 1, 3, 4]]).all() and np.isnan(samples.slices[0, [0, 1, 3, 4]]).all()
    assert np.unravel_index(samples.images[0, 2].argmax(), (24, 24)) in {
        (11, 11),
        (11, 12),
        (12, 11),
        (12, 12),
    }

    dataset = WindowDataset(samples, task, REFINE.refined())
    dataset.augment = lambda image, p, s: (image, p, s)  # the geometry alone
    torch.manual_seed(0)
    seen_slices = set()
    for _ in range(20):
        image, target, on_slice = dataset[0]
        assert image.shape == (3, 16, 16)
        channel = int(on_slice[2])
        seen_slices.add(channel)
        peak = np.unravel_index(int(image[channel].argmax()), (16, 16))  # (row, column)
        assert abs(peak[1] - float(target[2, 0])) <= 0.5 and abs(peak[0] - float(target[2, 1])) <= 0.5
    assert seen_slices == {0, 1, 2}  # the label's slice moves by up to one slice either way


def test_refine_rows_moves_each_point_to_the_refiners_peak():
    from spinegrade.localization.locate import LocatorModel
    from spinegrade.localization.refine import refine_rows
    from spinegrade.localization.targets import REFINER_OF

    task = REFINER_OF["sagittal_t1"]
    settings = REFINE.refined()
    series = _blob_series(3, 30.0, 25.0)  # 0.5 mm pixels; the window: 16 mm at 16 px, 8 x 8 heatmaps

    def net(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        yy, xx = torch.meshgrid(torch.arange(8.0), torch.arange(8.0), indexing="ij")
        peak = -((xx - 6) ** 2 + (yy - 4) ** 2)  # log of a Gaussian at heatmap (x 6, y 4)
        heatmaps = peak.expand(len(x), len(task.points), 8, 8).clone()
        return heatmaps, torch.tensor([0.0, 0.0, 5.0]).expand(len(x), len(task.points), 3).clone()

    model = LocatorModel(task, net, settings)  # type: ignore[arg-type]
    row = {"condition": "left_neural_foraminal_narrowing", "level": "l3_l4", "series_id": 4}
    rows = [row | {"slice_index": 3, "instance_number": 8, "x": 30.0, "y": 25.0, "confidence": 0.5}]
    [moved] = refine_rows(model, [series], rows, torch.device("cpu"))
    # heatmap x 6 -> window px 12.5, 5 px right of the centre (7.5) at 1 mm each = 10 source pixels;
    # heatmap y 4 -> window px 8.5, 1 mm = 2 source pixels down; slice channel 2 of 3 = the next slice
    assert moved["x"] == pytest.approx(40.0) and moved["y"] == pytest.approx(27.0)
    assert moved["slice_index"] == 4 and moved["instance_number"] == series.instance_numbers[4]
    assert moved["confidence"] == 0.5 and rows[0]["x"] == 30.0  # the input rows are left as they were


TINY = LocatorSettings(
    size=32,
    depth=8,
    arch="mobilenetv3_small_100",
    epochs=6,
    samples_per_epoch=32,
    batch_size=8,
    n_folds=2,
    refine_mm=24.0,
    refine_size=16,
    refine_depth=3,
)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A 5-study phantom and locators trained on it briefly (enough to fit the training studies roughly)."""
    from spinegrade.localization.train import train_locator
    from spinegrade.phantom import write_phantom

    root = tmp_path_factory.mktemp("locator")
    write_phantom(root / "phantom", 5, seed=3, size=64, test_studies=1, workers=1, progress=False)
    metrics = train_locator(
        root / "phantom", root / "run", TINY, accelerator="cpu", devices=1, progress=False
    )
    return root, metrics


def test_train_locator_writes_every_file_and_metrics(tiny_run):
    root, metrics = tiny_run
    run = root / "run"
    for slug in ("sagittal_t2", "sagittal_t1", "axial_t2"):
        assert (run / f"{slug}.safetensors").stat().st_size > 0
        info = json.loads((run / f"{slug}.json").read_text())
        assert info["task"] == slug and info["settings"]["size"] == 32
        assert info["settings"]["refine_mm"] == 0  # the refiners' settings do not shape it
    for slug in ("sagittal_t2_refine", "sagittal_t1_refine"):  # with refine_mm > 0
        info = json.loads((run / f"{slug}.json").read_text())
        assert (run / f"{slug}.safetensors").stat().st_size > 0
        assert info["settings"]["size"] == 16 and info["settings"]["depth"] == info["channels"] == 3
        assert info["settings"]["refine_mm"] == 24.0
    for name in ("config.json", "versions.json", "metrics.json"):
        assert json.loads((run / name).read_text())
    assert json.loads((run / "metrics.json").read_text())["overall"] == metrics["overall"]
    assert set(metrics["by_series_type"]) == {"Sagittal T1", "Sagittal T2/STIR", "Axial T2"}
    val_studies = json.loads((run / "config.json").read_text())["val_studies"]
    assert metrics["n_val_studies"] == len(val_studies) > 0
    assert metrics["by_series_type"]["Sagittal T2/STIR"]["n_points"] == 5 * len(val_studies)
    assert metrics["by_series_type"]["Sagittal T2/STIR"]["located_share"] == 1.0


def test_each_locator_logs_its_step_loss_and_learning_rate(tiny_run):
    """The default logger (csv): OUT/logs/<slug>/metrics.csv, one row per logged step."""
    root, _ = tiny_run
    for slug in ("sagittal_t2", "sagittal_t1", "axial_t2"):
        steps = pd.read_csv(root / "run" / "logs" / slug / "metrics.csv")
        loss = steps.dropna(subset=["train/loss"])
        assert len(loss) >= 2 and (loss["train/loss"] > 0).all()
        assert steps["lr-AdamW"].dropna().gt(0).all() and steps["step"].is_monotonic_increasing


def test_a_rerun_keeps_trained_series_types(tiny_run):
    from spinegrade.localization.train import train_locator

    root, _ = tiny_run
    weights = root / "run" / "sagittal_t2.safetensors"
    before = weights.stat().st_mtime_ns
    train_locator(root / "phantom", root / "run", TINY, accelerator="cpu", devices=1, progress=False)
    assert weights.stat().st_mtime_ns == before
    with pytest.raises(DataError, match="other settings \\(epochs\\)"):
        train_locator(root / "phantom", root / "run", replace(TINY, epochs=1), progress=False)
    # another window changes only the refiners: the whole-series locators stay valid
    refiner_changed = r"sagittal_t2_refine\.safetensors was trained with other settings \(refine_mm\)"
    with pytest.raises(DataError, match=refiner_changed):
        train_locator(root / "phantom", root / "run", replace(TINY, refine_mm=30.0), progress=False)
    with pytest.raises(DataError, match=r"holds refiners \(sagittal_t2_refine, sagittal_t1_refine\)"):
        train_locator(root / "phantom", root / "run", replace(TINY, refine_mm=0.0), progress=False)
    assert weights.stat().st_mtime_ns == before


def test_locate_study_finds_25_points_on_valid_pixels(tiny_run):
    from spinegrade.data.series import read_series
    from spinegrade.data.tables import load_rsna
    from spinegrade.localization.locate import LOCATION_COLUMNS, load_locator, locate_study
    from spinegrade.vocab import TARGETS

    root, _ = tiny_run
    data = load_rsna(root / "phantom")
    val_studies = json.loads((root / "run" / "config.json").read_text())["val_studies"]
    study_id = next(s for s in data.study_ids() if s not in val_studies)  # a study the locators were fit to
    by_type, by_id = {}, {}
    described = dict(
        zip(data.descriptions["series_id"], data.descriptions["series_description"], strict=True)
    )
    for r in data.descriptions[data.descriptions["study_id"] == study_id].itertuples(index=False):
        series = read_series(data.series_folder(study_id, r.series_id))
        by_type.setdefault(r.series_description, []).append(series)
        by_id[int(series.series_id)] = series
    locator = load_locator(root / "run")
    located = locate_study(by_type, locator)
    assert list(located.columns) == list(LOCATION_COLUMNS)
    whole_series = {slug: m for slug, m in locator.models.items() if m.task.refines is None}
    coarse = locate_study(by_type, replace(locator, models=whole_series))
    pairs = located.merge(coarse, on=["condition", "level"], suffixes=("", "_coarse"))
    pairs = pairs[pairs["condition"].map(CONDITION_SERIES) != "Axial T2"]
    assert len(pairs) == 15  # every sagittal point, refined or not
    moved = np.abs(pairs[["x", "y"]].to_numpy() - pairs[["x_coarse", "y_coarse"]].to_numpy())
    assert (moved > 1e-3).any()  # the refiners moved the sagittal points
    # The tiny refiners may move a canal point off an axial series' extent: the 25 from the locators alone
    assert sorted(zip(coarse["condition"], coarse["level"], strict=True)) == sorted(TARGETS)
    for r in pd.concat([located, coarse]).itertuples(index=False):
        series = by_id[r.series_id]
        assert 0 <= r.slice_index < len(series)
        assert series.instance_numbers[r.slice_index] == r.instance_number
        rows, cols = series.pixels.shape[1:]
        assert 0 <= r.x <= cols - 1 and 0 <= r.y <= rows - 1
        assert 0 <= r.confidence <= 1
        assert described[r.series_id] == CONDITION_SERIES[r.condition]  # on a series of the right type

    # Without the sagittal T2 series, the axial levels come from the foraminal points; without any
    # sagittal series, nothing can be placed on the axial slices.
    no_t2 = locate_study(
        {k: v for k, v in by_type.items() if k != "Sagittal T2/STIR"}, load_locator(root / "run")
    )
    counts = no_t2["condition"].value_counts()
    assert "spinal_canal_stenosis" not in counts and counts.filter(like="foraminal").tolist() == [5, 5]
    assert counts.filter(like="subarticular").sum() > 0
    assert locate_study({"Axial T2": by_type["Axial T2"]}, load_locator(root / "run")).empty


def test_load_locator_names_what_is_wrong(tiny_run, tmp_path):
    import shutil

    from spinegrade.localization.locate import load_locator

    with pytest.raises(DataError, match="holds no locator"):
        load_locator(tmp_path)
    run = tmp_path / "run"
    shutil.copytree(tiny_run[0] / "run", run)
    assert set(load_locator(run).models) == {
        "sagittal_t2",
        "sagittal_t1",
        "axial_t2",
        "sagittal_t2_refine",
        "sagittal_t1_refine",
    }
    info = json.loads((run / "sagittal_t1.json").read_text())
    (run / "sagittal_t1.json").write_text(json.dumps(info | {"points": info["points"][::-1]}))
    with pytest.raises(DataError, match=r"sagittal_t1.json names points"):
        load_locator(run)
    (run / "sagittal_t1.json").write_text(json.dumps(info | {"settings": info["settings"] | {"depth": 4}}))
    with pytest.raises(DataError, match=r"sagittal_t1.safetensors does not fit"):
        load_locator(run)


def test_settings_files_from_before_the_refiners_mean_none():
    """A field a settings file does not record means what the file meant then: no refiners, and refiners
    batched like the locators before they had a batch size of their own."""
    assert LocatorSettings.from_saved({"size": 96}).refine_mm == 0
    assert LocatorSettings.from_saved({"batch_size": 8, "refine_mm": 32.0}).refine_batch_size == 8
    assert LocatorSettings().refined().batch_size == LocatorSettings().refine_batch_size
    assert LocatorSettings().whole_series().refine_mm == 0


def test_a_locator_epoch_is_a_pass_over_the_samples_unless_a_budget_is_set():
    settings = LocatorSettings()
    assert settings.samples_per_epoch is None
    assert settings.epoch_samples(1000) == 1000  # more studies, longer epochs
    assert settings.epoch_samples(40) == settings.min_samples_per_epoch  # small sets passed over again
    assert LocatorSettings(samples_per_epoch=100).epoch_samples(1000) == 100
