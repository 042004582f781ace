"""Crop geometry, crop sizes, study-level folds and the cache reader (synthetic Series, no DICOM)."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
from scipy.ndimage import map_coordinates

from spinegrade.crops.cache import CropCache, write_cache
from spinegrade.crops.defaults import DEFAULT_CROP_MM
from spinegrade.crops.extract import (
    _antialias_sigma,
    crop_25d,
    crop_instances,
    crops_for_points,
    label_to_pixel,
    parse_crop_mm,
    resolve_crop_mm,
    sample_crops,
)
from spinegrade.crops.folds import study_folds
from spinegrade.data.intensity import normalize
from spinegrade.data.series import Series
from spinegrade.errors import DataError
from spinegrade.vocab import CONDITIONS, LEVELS


def make_series(
    pixels: np.ndarray, spacing: tuple[float, float] = (1.0, 1.0), original_shapes=None, first_instance=1
) -> Series:
    """A sagittal-like Series over `pixels` (n, rows, cols) with uniform PixelSpacing (dy, dx)."""
    n, rows, cols = pixels.shape
    return Series(
        pixels=pixels.astype(np.float32),
        instance_numbers=np.arange(first_instance, first_instance + n, dtype=np.int64),
        positions=np.array([[4.0 * i, 0.0, 0.0] for i in range(n)]),
        orientation=np.array([[0.0, 1.0, 0.0], [0.0, 0.0, -1.0]]),
        pixel_spacing=np.tile(np.asarray(spacing, dtype=np.float64), (n, 1)),
        original_shapes=np.tile([rows, cols], (n, 1)) if original_shapes is None else original_shapes,
        slice_thickness=4.0,
        series_id="1",
        description="Sagittal T2/STIR",
    )


def blobs(spacing: tuple[float, float], extent_mm: float = 60.0) -> np.ndarray:
    """A smooth image of a fixed physical field (two Gaussian blobs) sampled at `spacing` (dy, dx) mm."""
    rows = np.arange(round(extent_mm / spacing[0])) * spacing[0]
    cols = np.arange(round(extent_mm / spacing[1])) * spacing[1]
    r, c = np.meshgrid(rows, cols, indexing="ij")
    image = np.exp(-((r - 25) ** 2 + (c - 33) ** 2) / 40) + 0.6 * np.exp(
        -((r - 35) ** 2 + (c - 22) ** 2) / 90
    )
    return np.stack([image, image * 0.5, image * 0.25]).astype(np.float32)


def test_dot_at_the_labelled_pixel_lands_at_the_crop_centre():
    pixels = np.zeros((5, 60, 80), np.float32)
    pixels[2, 30, 40] = 1.0
    series = make_series(pixels, spacing=(0.8, 0.8))
    # 33 output pixels over 33 * 0.8 mm: one input pixel per output pixel, so the dot stays a single pixel.
    crop = crop_25d(series, 2, 40.0, 30.0, size_mm=33 * 0.8, out_px=33, k=3, pixels=pixels)
    assert crop.shape == (3, 33, 33) and crop.dtype == np.float32
    assert crop[1, 16, 16] == pytest.approx(1.0)
    assert crop.sum() == pytest.approx(1.0)
    # An even crop with a non-integer step: the dot spreads symmetrically around the centre.
    crop = crop_25d(series, 2, 40.0, 30.0, size_mm=20.0, out_px=32, k=1, pixels=pixels)[0]
    weights = crop / crop.sum()
    grid = np.arange(32)
    assert (weights.sum(1) @ grid, weights.sum(0) @ grid) == pytest.approx((15.5, 15.5), abs=1e-6)


def test_crops_equal_scipy_bilinear_interpolation_with_zero_padding():
    rng = np.random.default_rng(1)
    pixels = rng.random((6, 40, 50), dtype=np.float32)
    series = make_series(pixels, spacing=(0.7, 0.9))
    for index, x, y in [(0, 3.3, 37.8), (5, 49.6, -2.2), (2, 25.1, 19.7), (3, -30.0, 10.0)]:
        # 15 mm over 24 px = 0.625 mm output pixels, finer than the source: plain bilinear taps.
        crop = crop_25d(series, index, x, y, size_mm=15.0, out_px=24, k=3, pixels=pixels)
        grid = np.arange(24) - 11.5
        rows, cols = y + grid * 15 / 24 / 0.7, x + grid * 15 / 24 / 0.9
        for j, slice_index in enumerate(np.clip([index - 1, index, index + 1], 0, 5)):
            r, c = np.meshgrid(rows, cols, indexing="ij")
            expected = map_coordinates(pixels[slice_index], [r, c], order=1, mode="grid-constant", cval=0.0)
            assert np.allclose(crop[j], expected, atol=1e-5)


def test_left_right_and_up_down_are_kept():
    pixels = np.zeros((3, 50, 50), np.float32)
    pixels[1, 20, 30] = 1.0  # 5 columns to the right of the crop centre (x = 25)
    pixels[1, 23, 25] = 2.0  # 3 rows below it (y = 20)
    series = make_series(pixels)
    crop = crop_25d(series, 1, 25.0, 20.0, size_mm=21.0, out_px=21, k=1, pixels=pixels)[0]
    assert crop[10, 15] == pytest.approx(1.0)
    assert crop[13, 10] == pytest.approx(2.0)
    assert crop[10, 5] == 0.0 and crop[7, 10] == 0.0


@pytest.mark.parametrize("fine", [(0.5, 0.5), (0.5, 0.75)])
def test_size_mm_covers_the_same_anatomy_at_any_pixel_spacing(fine):
    coarse = make_series(blobs((1.0, 1.0)), spacing=(1.0, 1.0))
    finer = make_series(blobs(fine), spacing=fine)
    # The same physical point (row 27 mm, column 30 mm) in each grid.
    a = crop_25d(coarse, 1, 30.0, 27.0, size_mm=30.0, out_px=24, k=3, pixels=coarse.pixels)
    b = crop_25d(finer, 1, 30.0 / fine[1], 27.0 / fine[0], size_mm=30.0, out_px=24, k=3, pixels=finer.pixels)
    assert np.abs(a - b).max() < 0.02
    # Sensitivity: a window of another physical size does not match.
    c = crop_25d(finer, 1, 30.0 / fine[1], 27.0 / fine[0], size_mm=20.0, out_px=24, k=3, pixels=finer.pixels)
    assert np.abs(a - c).max() > 0.1


def test_edge_slices_repeat_at_the_series_ends():
    pixels = np.broadcast_to(np.arange(4, dtype=np.float32)[:, None, None], (4, 20, 20)).copy()
    series = make_series(pixels)
    mean = lambda crop: crop.mean(axis=(1, 2)).tolist()  # noqa: E731
    kw = {"size_mm": 8.0, "out_px": 8, "k": 5, "pixels": pixels}
    assert mean(crop_25d(series, 0, 10.0, 10.0, **kw)) == [0, 0, 0, 1, 2]
    assert mean(crop_25d(series, 3, 10.0, 10.0, **kw)) == [1, 2, 3, 3, 3]
    assert mean(crop_25d(series, 2, 10.0, 10.0, **kw)) == [0, 1, 2, 3, 3]


def test_outside_the_image_is_zero_and_default_pixels_are_normalised():
    rng = np.random.default_rng(0)
    pixels = rng.uniform(100, 2000, size=(3, 30, 30)).astype(np.float32)
    series = make_series(pixels)
    crop = crop_25d(series, 1, 0.0, 0.0, size_mm=20.0, out_px=20, k=3)
    assert np.array_equal(
        crop, crop_25d(series, 1, 0.0, 0.0, size_mm=20.0, out_px=20, k=3, pixels=normalize(pixels))
    )
    assert crop.min() >= 0.0 and crop.max() <= 1.0
    assert np.all(crop[:, :9, :9] == 0.0)  # above and left of the image
    assert np.all(crop[:, 11:, 11:] > 0.0)


def test_bad_arguments_are_refused():
    series = make_series(np.ones((3, 10, 10), np.float32))
    with pytest.raises(DataError, match="odd"):
        crop_25d(series, 1, 5.0, 5.0, size_mm=5.0, out_px=8, k=4)
    with pytest.raises(DataError, match="outside"):
        crop_25d(series, 3, 5.0, 5.0, size_mm=5.0, out_px=8, k=3)
    broken = make_series(np.ones((3, 10, 10), np.float32), spacing=(0.0, 1.0))
    with pytest.raises(DataError, match="PixelSpacing"):
        crop_25d(broken, 1, 5.0, 5.0, size_mm=5.0, out_px=8, k=3)


def test_label_to_pixel_maps_instances_and_rescaled_slices():
    shapes = np.array([[40, 40], [80, 80], [40, 40]])  # the middle slice was acquired at twice the size
    series = make_series(np.zeros((3, 40, 40), np.float32), original_shapes=shapes, first_instance=7)
    assert label_to_pixel(series, 7, 10.0, 20.0) == (0, 10.0, 20.0)
    # Corner pixel centres stay in place when a slice is resized (as read_series resamples): 0..79 -> 0..39.
    assert label_to_pixel(series, 8, 79.0, 0.0) == (1, 39.0, 0.0)
    assert label_to_pixel(series, 8, 39.5, 79.0) == (1, pytest.approx(19.5), 39.0)
    with pytest.raises(KeyError, match="instance 10"):
        label_to_pixel(series, 10, 1.0, 1.0)


def test_crops_for_points_uses_the_size_of_each_condition_group():
    series = make_series(blobs((1.0, 1.0)))
    points = pd.DataFrame(
        {
            "condition": ["spinal_canal_stenosis", "left_neural_foraminal_narrowing"],
            "instance_number": [2, 3],
            "x": [30.0, 28.0],
            "y": [27.0, 29.0],
        }
    )
    crop_mm = {"spinal": 30.0, "foraminal": 24.0}
    crops = crops_for_points(series, points, k=3, size=16, crop_mm=crop_mm)
    assert crops.shape == (2, 3, 16, 16) and crops.dtype == np.float32
    pixels = normalize(series.pixels)
    for i, (index, mm) in enumerate([(1, 30.0), (2, 24.0)]):
        row = points.iloc[i]
        expected = crop_25d(series, index, row.x, row.y, size_mm=mm, out_px=16, k=3, pixels=pixels)
        assert np.allclose(crops[i], expected)
    by_slice = points.drop(columns="instance_number").assign(slice_index=[1, 2])
    assert np.allclose(crops_for_points(series, by_slice, k=3, size=16, crop_mm=crop_mm), crops)
    with pytest.raises(DataError, match="slice_index"):
        crops_for_points(series, points.drop(columns="instance_number"), k=3, size=16)
    with pytest.raises(DataError, match="unknown condition"):
        crops_for_points(series, points.assign(condition="knee"), k=3, size=16)


def test_crop_sizes_parse_and_validate():
    assert parse_crop_mm("") == DEFAULT_CROP_MM
    assert parse_crop_mm("spinal=30, subarticular=44.5") == {
        **DEFAULT_CROP_MM,
        "spinal": 30.0,
        "subarticular": 44.5,
    }
    assert resolve_crop_mm({"foraminal": 36}) == {**DEFAULT_CROP_MM, "foraminal": 36.0}
    for bad in ("knee=40", "spinal", "spinal=wide", "spinal=-3"):
        with pytest.raises(DataError):
            parse_crop_mm(bad)


def synthetic_labels(n_studies: int, seed: int = 0) -> pd.DataFrame:
    """Long labels of n_studies full studies with realistic class frequencies (severe ~6%)."""
    rng = np.random.default_rng(seed)
    targets = [(c, lv) for c in CONDITIONS for lv in LEVELS]
    return pd.DataFrame(
        [
            (1000 + s, c, lv, rng.choice(3, p=[0.78, 0.16, 0.06]))
            for s in range(n_studies)
            for c, lv in targets
        ],
        columns=["study_id", "condition", "level", "severity"],
    )


def test_folds_split_studies_evenly_and_balance_severe_cases():
    labels = synthetic_labels(60)
    folds = study_folds(labels, n_folds=5, seed=3)
    assert folds.index.is_unique and set(folds.index) == set(labels["study_id"])
    assert set(folds) == set(range(5))
    assert folds.value_counts().between(9, 15).all()
    per_row = labels["study_id"].map(folds)
    severe = labels["severity"].eq(2).groupby(per_row).sum()
    assert severe.max() - severe.min() <= 0.5 * severe.mean()
    assert folds.equals(study_folds(labels, n_folds=5, seed=3))
    assert not folds.equals(study_folds(labels, n_folds=5, seed=4))
    with pytest.raises(DataError, match="folds"):
        study_folds(labels[labels["study_id"] < 1003], n_folds=5)


def test_cache_round_trip_and_inconsistency_is_named(tmp_path):
    index = pd.DataFrame(
        {
            "study_id": [1, 1, 2],
            "condition": ["spinal_canal_stenosis"] * 3,
            "level": ["l1_l2", "l2_l3", "l1_l2"],
            "series_id": [5, 5, 6],
            "instance_number": [3, 3, 4],
            "x": [1.5, 2.5, 3.5],
            "y": [4.0, 5.0, 6.0],
            "severity": [0, 2, 1],
            "fold": [0, 0, 1],
        }
    )
    crops = np.random.default_rng(0).random((3, 3, 4, 4)).astype(np.float16)
    cache = write_cache(tmp_path, iter([crops[:2], crops[2:]]), index, {"k": 3, "size": 4})
    reopened = CropCache.open(tmp_path)
    assert isinstance(reopened.crops, np.memmap) and np.array_equal(reopened.crops, crops)
    assert reopened.index.equals(cache.index) and reopened.index["severity"].tolist() == [0, 2, 1]
    index.iloc[:2].to_csv(tmp_path / "index.csv", index=False)
    with pytest.raises(DataError, match=r"index\.csv"):
        CropCache.open(tmp_path)
    (tmp_path / "meta.json").write_text(json.dumps({"k": 3, "size": 4})[:-1])
    with pytest.raises(DataError, match=r"meta\.json"):
        CropCache.open(tmp_path)
    with pytest.raises(DataError, match=r"crops\.npy is missing"):
        CropCache.open(tmp_path / "nowhere")


def test_neighbours_are_sampled_through_their_own_geometry_within_their_own_stack():
    """Slices whose origins shift in-plane (and a second stack) still give aligned 2.5D channels."""
    rows, cols, spacing = 40, 40, 1.0

    def anatomy(points: np.ndarray) -> np.ndarray:  # a pattern fixed in patient space, same on every slice
        return np.exp(-((points[..., 1] - 22.0) ** 2 + (points[..., 2] + 18.0) ** 2) / 30.0)

    orientation = np.array([[0.0, 1.0, 0.0], [0.0, 0.0, -1.0]])  # sagittal
    shifts = [0.0, 3.0, -2.5, 0.0, 1.0]  # in-plane shift of each slice's origin (mm, along columns)
    positions = np.array([[4.0 * i, shift, 0.0] for i, shift in enumerate(shifts)])
    r, c = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")
    pixels = np.stack(
        [anatomy(p + c[..., None] * orientation[0] + r[..., None] * orientation[1]) for p in positions]
    ).astype(np.float32)
    series = Series(
        pixels=pixels,
        instance_numbers=np.arange(1, 6),
        positions=positions,
        orientation=orientation,
        pixel_spacing=np.full((5, 2), spacing),
        original_shapes=np.full((5, 2), 40),
        slice_thickness=4.0,
        series_id="shifted",
        stacks=np.array([0, 0, 0, 1, 1]),
    )
    crop = crop_25d(series, 1, 22.0 - shifts[1], 18.0, size_mm=16.0, out_px=16, k=3, pixels=pixels)
    for channel in crop[[0, 2]]:  # the neighbours show the centre slice's anatomy at the same places
        assert np.abs(channel - crop[1]).max() < 0.02
    naive = pixels[0][10:26, 11 - 3 : 27 - 3]  # the same pixel indices on slice 0: the anatomy shifted
    assert np.abs(naive - crop[1]).max() > 0.2
    # Slice 2 ends the first stack: its neighbours repeat it rather than reach into the second stack.
    points = pd.DataFrame(
        {"condition": ["spinal_canal_stenosis"] * 2, "slice_index": [2, 3], "x": 20.0, "y": 20.0}
    )
    assert crop_instances(series, points, k=3) == ["2 3 3", "4 4 5"]
    by_instance = pd.DataFrame(
        {"condition": ["spinal_canal_stenosis"], "instance_number": [1], "x": 5.0, "y": 5.0}
    )
    assert crop_instances(series, by_instance, k=5) == ["1 1 1 2 3"]


def test_crops_coarser_than_the_source_are_anti_aliased():
    stripes = np.tile([0.0, 1.0], 60).astype(np.float32)  # period 2 px at 0.5 mm: 1 mm stripes
    pixels = np.broadcast_to(stripes, (1, 120, 120)).copy()
    series = make_series(pixels, spacing=(0.5, 0.5))
    # Output pixels of 2 mm: the stripes cannot be represented; a plain bilinear tap would alias them.
    crop = crop_25d(series, 0, 60.0, 60.0, size_mm=32.0, out_px=16, k=1, pixels=pixels)[0]
    assert crop.mean() == pytest.approx(0.5, abs=0.02) and crop.std() < 0.02
    # Output pixels finer than the source are not smoothed: the stripes survive.
    fine = crop_25d(series, 0, 60.0, 60.0, size_mm=8.0, out_px=32, k=1, pixels=pixels)[0]
    assert fine.max() - fine.min() > 0.4  # bilinear taps between 0 and 1 stripes: 0.25 and 0.75


def test_anti_aliasing_smooths_only_what_the_crops_read_with_the_whole_slice_values():
    """Crops coarser than the source smooth just the region their taps read; they equal smoothing the
    whole slice (zeros beyond it) and then tapping, at the edges and outside the image too."""
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(2)
    pixels = rng.random((5, 70, 90), dtype=np.float32)
    series = make_series(pixels, spacing=(0.4, 0.55))
    points = [(2, 45.0, 35.0), (0, 2.0, 68.0), (4, 88.5, 1.0), (1, -40.0, 30.0), (3, 45.0, 300.0)]
    index, x, y = (np.array(v, dtype=np.float64) for v in zip(*points, strict=True))
    size_mm = np.array([30.0, 24.0, 40.0, 30.0, 20.0])
    crops = sample_crops(series, pixels, index, x, y, size_mm, 32, 3)
    for n in range(len(points)):
        step = size_mm[n] / 32
        grid = np.arange(32) - 15.5
        r, c = np.meshgrid(y[n] + grid * step / 0.4, x[n] + grid * step / 0.55, indexing="ij")
        sigma = _antialias_sigma(step, np.array([0.4, 0.55]))
        assert min(sigma) > 0
        for j, s in enumerate(np.clip(np.arange(-1, 2) + int(index[n]), 0, 4)):
            whole = gaussian_filter(pixels[s], sigma, mode="constant")
            expected = map_coordinates(whole, [r, c], order=1, mode="grid-constant", cval=0.0)
            if s == int(index[n]):  # the centre slice (or a repeated end): its own grid, bit for bit
                assert np.array_equal(crops[n, j], expected)
            else:  # neighbours go through patient space: the same grid up to float64 rounding
                np.testing.assert_allclose(crops[n, j], expected, atol=1e-6)


def test_real_study_prepare_cuts_25_crops_of_the_labelled_instances(real_twins, tmp_path):
    """prepare on the real RLE study (twice, under two ids, since folds need two studies)."""
    from rich.console import Console

    from spinegrade.crops.prepare import prepare

    data = real_twins
    cache = prepare(data, tmp_path / "cache", k=3, size=24, n_folds=2, workers=1, console=Console(quiet=True))
    real = cache.index[cache.index["study_id"] == 4646740]
    assert len(real) == 25 and cache.index["fold"].nunique() == 2
    n_slices = {3666319702: 17, 3486248476: 17, 3201256954: 54}
    for row in real.itertuples():
        channels = [int(n) for n in row.instances.split()]
        n, last = row.instance_number, n_slices[row.series_id]
        if row.series_id == 3201256954:  # axial, head to feet: instance numbers ascend
            assert channels == [max(n - 1, 1), n, min(n + 1, last)]
        else:  # sagittal, patient right to left: here instance numbers descend
            assert channels == [min(n + 1, last), n, max(n - 1, 1)]
    crops = np.asarray(cache.crops[real.index.to_numpy()], dtype=np.float32)
    assert np.isfinite(crops).all() and (crops.std(axis=(2, 3)) > 0.02).all()  # anatomy, not padding


def test_locator_slice_context_stays_in_the_slice_stack():
    import torch

    from spinegrade.localization.dataset import slice_input

    series = make_series(np.zeros((5, 4, 4), np.float32))
    series = replace(series, stacks=np.array([0, 0, 0, 1, 1]))
    stack = torch.arange(5.0)[:, None, None].expand(5, 4, 4)
    assert slice_input(stack, 2, 3, series)[:, 0, 0].tolist() == [1.0, 2.0, 2.0]
    assert slice_input(stack, 2, 3)[:, 0, 0].tolist() == [1.0, 2.0, 3.0]  # without the series: plain clamp
