"""Tests of the robust percentile intensity normalisation."""

from __future__ import annotations

import numpy as np
import pytest

from spinegrade.data.intensity import normalize


def test_scales_between_percentiles_and_clips_outliers() -> None:
    rng = np.random.default_rng(0)
    volume = rng.normal(1000.0, 200.0, (4, 32, 32))
    volume[0, 0, 0] = 1e6  # one hot pixel must not squash the contrast
    out = normalize(volume, lower=1.0, upper=99.0)
    assert out.dtype == np.float32 and out.shape == volume.shape
    assert out.min() == 0.0 and out.max() == 1.0
    low, high = np.percentile(volume, [1.0, 99.0])
    inside = (volume > low) & (volume < high)
    np.testing.assert_allclose(out[inside], (volume[inside] - low) / (high - low), rtol=1e-5, atol=1e-6)
    assert np.mean(out == 1.0) == pytest.approx(0.01, abs=0.002)  # only the top 1 % saturate
    assert 0.3 < np.median(out) < 0.7


def test_percentiles_are_configurable() -> None:
    values = np.arange(101, dtype=np.float64)
    np.testing.assert_allclose(normalize(values, lower=0.0, upper=100.0), values / 100.0, rtol=1e-6)
    tight = normalize(values, lower=10.0, upper=90.0)
    assert tight[10] == 0.0 and tight[90] == 1.0 and tight[50] == pytest.approx(0.5)
    assert (tight[:10] == 0.0).all() and (tight[90:] == 1.0).all()


def test_keeps_precision_beyond_8_bits() -> None:
    values = np.linspace(0.0, 4095.0, 4096)
    out = normalize(values, lower=0.0, upper=100.0)
    assert len(np.unique(out)) == 4096  # a uint8 cast would leave 256 levels


def test_constant_input_gives_zeros_not_nan() -> None:
    out = normalize(np.full((2, 8, 8), 7.0))
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, np.zeros((2, 8, 8), np.float32))


def test_bad_arguments_are_rejected() -> None:
    with pytest.raises(ValueError, match="lower < upper"):
        normalize(np.arange(10.0), lower=50.0, upper=50.0)
    with pytest.raises(ValueError, match="NaN"):
        normalize(np.array([1.0, np.nan, 3.0]))


def test_counting_percentiles_equal_numpy() -> None:
    """The counting path for whole-numbered pixels gives np.percentile's values exactly (floats too)."""
    from spinegrade.data.intensity import percentiles

    rng = np.random.default_rng(3)
    for _ in range(100):
        low, span, n = int(rng.integers(-3000, 3000)), int(rng.integers(1, 5000)), int(rng.integers(1, 4000))
        values = rng.integers(low, low + span, size=n).astype(np.float32)
        q = (float(rng.uniform(0, 50)), float(rng.uniform(50, 100)))
        assert percentiles(values, q) == pytest.approx(list(np.percentile(values, q)), rel=1e-12, abs=1e-9)
    noise = rng.normal(size=(3, 40, 40))  # not whole numbers: numpy's path
    assert percentiles(noise, (1.0, 99.0)) == pytest.approx(list(np.percentile(noise, [1.0, 99.0])))


def test_whole_numbered_pixels_normalise_in_float32_to_the_float64_values() -> None:
    """DICOM-like volumes (whole numbers, several counting chunks) give float32 within half an ulp of the
    float64 formula; a fraction in a later chunk still sends the percentiles down numpy's path."""
    from spinegrade.data import intensity

    rng = np.random.default_rng(5)
    volume = rng.integers(0, 1700, size=(3, 300, 400)).astype(np.float32)  # 360000 > one chunk
    assert volume.size > intensity._CHUNK
    out = normalize(volume)
    low, high = np.percentile(volume.astype(np.float64), [1.0, 99.0])
    expected = np.clip((volume.astype(np.float64) - low) / (high - low), 0.0, 1.0)
    assert out.dtype == np.float32
    assert np.abs(out - expected).max() <= 6e-8
    volume.ravel()[-1] = 0.5  # in the last chunk
    assert intensity.percentiles(volume, (1.0, 99.0)) == pytest.approx(list(np.percentile(volume, [1, 99])))


def test_series_normalized_is_computed_once_and_equals_normalize() -> None:
    from spinegrade.data.series import Series

    rng = np.random.default_rng(6)
    pixels = rng.integers(0, 900, size=(2, 8, 8)).astype(np.float32)
    series = Series(
        pixels=pixels,
        instance_numbers=np.arange(2),
        positions=np.zeros((2, 3)),
        orientation=np.array([[0.0, 1.0, 0.0], [0.0, 0.0, -1.0]]),
        pixel_spacing=np.ones((2, 2)),
        original_shapes=np.full((2, 2), 8),
        slice_thickness=1.0,
        series_id="1",
    )
    first = series.normalized()
    assert series.normalized(1.0, 99.0) is first  # shared by the locator and the crops
    np.testing.assert_array_equal(first, normalize(pixels))
    assert not np.array_equal(series.normalized(0.0, 100.0), first)
