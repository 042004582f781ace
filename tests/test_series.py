"""Tests of the DICOM series reader on pydicom's bundled MR files and small series built from them."""

from __future__ import annotations

import io
import types
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import EnhancedMRImageStorage, ExplicitVRLittleEndian, JPEGBaseline8Bit, generate_uid

import spinegrade
from spinegrade.data.series import (
    Series,
    SeriesWarning,
    map_point,
    read_series,
    read_usable_series,
    scan_series,
)
from spinegrade.data.series import header as series_header
from spinegrade.errors import DataError

AXIAL = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
SAGITTAL = [0.0, 1.0, 0.0, 0.0, 0.0, -1.0]


def _mr() -> Dataset:
    """A fresh copy of pydicom's MR_small.dcm (64x64, signed 16 bit, axial, 0.3125 mm pixels)."""
    return pydicom.dcmread(get_testdata_file("MR_small.dcm"))


def _reference() -> np.ndarray:
    return _mr().pixel_array.astype(np.float32)


def _slice(
    folder: Path,
    name: str,
    *,
    instance: int,
    position: list[float] | None,
    pixels: np.ndarray | None = None,
    orientation: list[float] | None = AXIAL,
    spacing: list[float] | None = None,
    **tags,
) -> Path:
    """Write an MR_small copy with edited geometry, pixels (int16 unless PixelRepresentation=0) and tags."""
    ds = _mr()
    ds.InstanceNumber = instance
    for keyword, value in (
        ("ImagePositionPatient", position),
        ("ImageOrientationPatient", orientation),
        ("PixelSpacing", spacing),
    ):
        if value is not None:
            setattr(ds, keyword, value)
        elif keyword != "PixelSpacing":
            delattr(ds, keyword)
    for keyword, value in tags.items():
        setattr(ds, keyword, value)
    if pixels is not None:
        dtype = "<i2" if ds.PixelRepresentation else "<u2"
        ds.Rows, ds.Columns = pixels.shape
        ds.PixelData = np.asarray(pixels).astype(dtype).tobytes()
    folder.mkdir(parents=True, exist_ok=True)
    ds.save_as(folder / name)
    return folder / name


def _copy(name: str, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / name
    target.write_bytes(Path(get_testdata_file(name)).read_bytes())
    return target


# --- decoding ------------------------------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore:.*excess padding")
@pytest.mark.parametrize(
    "name",
    [
        "MR_small_RLE.dcm",
        "MR_small_jpeg_ls_lossless.dcm",
        "MR_small_jp2klossless.dcm",
        "MR_small_bigendian.dcm",
        "MR_small_expb.dcm",
        "MR_small_implicit.dcm",
        "MR_small_padded.dcm",
    ],
)
def test_lossless_variants_decode_to_the_uncompressed_pixels(tmp_path: Path, name: str) -> None:
    _copy(name, tmp_path / "s")
    series = read_series(tmp_path / "s")
    assert series.pixels.dtype == np.float32
    assert series.pixels.shape == (1, 64, 64)
    np.testing.assert_array_equal(series.pixels[0], _reference())
    np.testing.assert_allclose(series.positions[0], [float(v) for v in _mr().ImagePositionPatient])


def test_jpeg_baseline_decodes_close_to_the_original(tmp_path: Path) -> None:
    image = pytest.importorskip("PIL.Image")
    original = np.round(_reference() / _reference().max() * 255).astype(np.uint8)
    buffer = io.BytesIO()
    image.fromarray(original).save(buffer, format="JPEG", quality=95)
    ds = _mr()
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = encapsulate([buffer.getvalue()])
    ds["PixelData"].VR = "OB"
    (tmp_path / "s").mkdir()
    ds.save_as(tmp_path / "s" / "1.dcm")
    pixels = read_series(tmp_path / "s").pixels[0]
    error = np.abs(pixels - original)
    assert error.mean() < 2.0 and error.max() < 32
    assert not np.array_equal(pixels, original)  # really went through the lossy codec


def test_jpeg_extended_12_bit_without_geometry(tmp_path: Path) -> None:
    path = _copy("JPGExtended.dcm", tmp_path / "s")
    with pytest.warns(SeriesWarning, match="lack ImagePositionPatient"):
        series = read_series(tmp_path / "s")
    np.testing.assert_array_equal(series.pixels[0], pydicom.dcmread(path).pixel_array)
    assert series.pixels.min() >= 0 and series.pixels.max() <= 4095
    assert np.isnan(series.pixel_to_patient(0, 1.0, 1.0)).all()


def test_real_ct_j2k_rescale_keeps_negative_values(tmp_path: Path) -> None:
    path = _copy("693_J2KI.dcm", tmp_path / "s")
    ds = pydicom.dcmread(path)
    series = read_series(tmp_path / "s")
    expected = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    np.testing.assert_array_equal(series.pixels[0], expected.astype(np.float32))
    assert series.pixels.min() < 0


def test_undecodable_syntax_names_file_and_uid_even_when_skipping(tmp_path: Path) -> None:
    ds = _mr()
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.100"  # MPEG2: no pydicom decoder
    ds.PixelData = encapsulate([ds.PixelData])
    (tmp_path / "s").mkdir()
    ds.save_as(tmp_path / "s" / "video.dcm")
    with pytest.raises(DataError, match=r"video\.dcm.*1\.2\.840\.10008\.1\.2\.4\.100"):
        read_series(tmp_path / "s", on_corrupt="skip")
    assert [p.kind for p in scan_series(tmp_path / "s").problems] == ["no_decoder", "empty_series"]


def test_missing_plugin_says_what_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _copy("MR_small_jpeg_ls_lossless.dcm", tmp_path / "s")
    missing = types.SimpleNamespace(
        is_available=False,
        missing_dependencies=["pylibjpeg - requires pylibjpeg>=2.0 and pylibjpeg-libjpeg>=2.1"],
    )
    monkeypatch.setattr(series_header, "get_decoder", lambda uid: missing)
    with pytest.raises(
        DataError, match=r"MR_small_jpeg_ls_lossless\.dcm.*JPEG-LS.*install.*pylibjpeg-libjpeg"
    ):
        read_series(tmp_path / "s")


# --- values --------------------------------------------------------------------------------------------


def test_rescale_slope_and_intercept(tmp_path: Path) -> None:
    _slice(tmp_path / "s", "1.dcm", instance=1, position=[0, 0, 0], RescaleSlope=2.5, RescaleIntercept=-100)
    np.testing.assert_allclose(read_series(tmp_path / "s").pixels[0], _reference() * 2.5 - 100)


def test_monochrome1_is_inverted_within_its_bit_range(tmp_path: Path) -> None:
    _slice(
        tmp_path / "s",
        "1.dcm",
        instance=1,
        position=[0, 0, 0],
        PhotometricInterpretation="MONOCHROME1",
        PixelRepresentation=0,
        BitsStored=12,
        HighBit=11,
    )
    series = read_series(tmp_path / "s")
    np.testing.assert_array_equal(series.pixels[0], 4095 - _reference())
    brightest = np.unravel_index(np.argmax(_reference()), _reference().shape)
    assert series.pixels[0][brightest] == series.pixels[0].min()
    assert series.problems == ()  # how it was stored: a note
    assert [(n.kind, n.message.split(": ", 1)[1]) for n in series.notes] == [
        ("monochrome1", "1 of 1 slices are MONOCHROME1; inverted so that bright is high signal")
    ]


@pytest.mark.parametrize(
    ("representation", "values"),
    [(0, [0, 32767, 40000, 65535]), (1, [-32768, -1000, -1, 32767])],
)
def test_16_bit_values_are_not_wrapped(tmp_path: Path, representation: int, values: list[int]) -> None:
    pixels = np.resize(np.array(values), (64, 64))
    _slice(
        tmp_path / "s",
        "1.dcm",
        instance=1,
        position=[0, 0, 0],
        pixels=pixels,
        PixelRepresentation=representation,
    )
    np.testing.assert_array_equal(read_series(tmp_path / "s").pixels[0], pixels.astype(np.float32))


# --- order and geometry --------------------------------------------------------------------------------


def _shuffled_stack(
    folder: Path,
    *,
    orientation: list[float] = AXIAL,
    spacing: list[float] | None = None,
    origin: tuple[float, float, float] = (-20.0, 10.0, 5.0),
) -> None:
    """Five slices 4 mm apart, instance numbers running against positions; pixels tagged by instance."""
    normal = np.cross(orientation[:3], orientation[3:])
    for instance, step in zip([3, 1, 5, 2, 4], [0, 1, 2, 3, 4], strict=True):
        _slice(
            folder,
            f"{instance}.dcm",
            instance=instance,
            position=list(np.array(origin) + 4.0 * step * normal),
            orientation=orientation,
            spacing=spacing,
            pixels=_reference() + 1000 * instance,
            SliceThickness=3.0,
        )


def test_axial_slices_are_ordered_head_to_feet_not_by_instance(tmp_path: Path) -> None:
    _shuffled_stack(tmp_path / "s")  # z = 5, 9, ..., 21 for instances 3, 1, 5, 2, 4
    series = read_series(tmp_path / "s")
    assert series.series_id == "s"
    assert series.instance_numbers.tolist() == [4, 2, 5, 1, 3]
    np.testing.assert_allclose(series.normal, [0, 0, -1])  # canonical axial order: towards the feet
    np.testing.assert_allclose(series.slice_locations, -21.0 + 4.0 * np.arange(5))
    assert series.n_stacks == 1 and series.problems == ()
    for index, instance in enumerate(series.instance_numbers):
        np.testing.assert_array_equal(series.pixels[index], _reference() + 1000 * instance)
        assert series.index_of_instance(int(instance)) == index
    assert series.slice_thickness == 3.0
    with pytest.raises(KeyError, match=r"series s has no instance 9"):
        series.index_of_instance(9)


def test_without_geometry_instance_numbers_order_the_slices(tmp_path: Path) -> None:
    for instance in [2, 3, 1]:
        _slice(tmp_path / "s", f"{instance}.dcm", instance=instance, position=None, orientation=None)
    with pytest.warns(SeriesWarning, match="ordered by InstanceNumber"):
        series = read_series(tmp_path / "s")
    assert series.instance_numbers.tolist() == [1, 2, 3]
    assert np.isnan(series.positions).all()
    assert np.isnan(series.patient_to_pixel(np.zeros(3))[1])
    with pytest.raises(DataError, match="without geometry"):
        series.nearest_slice(np.zeros(3))


def test_duplicate_positions_keep_the_lowest_instance(tmp_path: Path) -> None:
    for instance, z in [(4, 0.0), (2, 0.05), (3, 1.0)]:
        _slice(tmp_path / "s", f"{instance}.dcm", instance=instance, position=[0, 0, z])
    with pytest.warns(
        SeriesWarning, match=r"4\.dcm \(instance 4\) set aside: it lies within 0\.1 mm of 2\.dcm"
    ):
        series = read_series(tmp_path / "s")
    assert series.instance_numbers.tolist() == [3, 2]
    assert [(p.kind, Path(p.file).name) for p in series.problems] == [("duplicate_position", "4.dcm")]
    info = scan_series(tmp_path / "s")
    assert [p.kind for p in info.problems] == ["duplicate_position"] and info.instance_numbers == [3, 2]


def test_pixel_to_patient_follows_dicom_and_round_trips(tmp_path: Path) -> None:
    oblique = [np.cos(0.3), np.sin(0.3), 0.0, 0.0, 0.0, -1.0]
    _shuffled_stack(tmp_path / "s", orientation=oblique, spacing=[0.5, 0.8])
    series = read_series(tmp_path / "s")
    np.testing.assert_allclose(series.orientation.ravel(), oblique)
    np.testing.assert_allclose(series.pixel_spacing, [[0.5, 0.8]] * 5)
    index, x, y = 2, 10.0, 20.0
    expected = series.positions[2] + x * 0.8 * np.array(oblique[:3]) + y * 0.5 * np.array(oblique[3:])
    np.testing.assert_allclose(series.pixel_to_patient(index, x, y), expected)

    rng = np.random.default_rng(0)
    indices = np.concatenate([np.arange(5.0), rng.uniform(-0.5, 4.5, 20)])  # fractional and extrapolated
    xs, ys = rng.uniform(0, 63, (2, indices.size))
    points = series.pixel_to_patient(indices, xs, ys)
    assert points.shape == (25, 3)
    back = series.patient_to_pixel(points)
    for got, want in zip(back, (indices, xs, ys), strict=True):
        np.testing.assert_allclose(got, want, atol=1e-9)
    np.testing.assert_array_equal(series.nearest_slice(points), np.clip(np.rint(indices), 0, 4))


def test_map_point_from_sagittal_to_axial(tmp_path: Path) -> None:
    _shuffled_stack(tmp_path / "sag", orientation=SAGITTAL, spacing=[0.5, 0.6], origin=(0.0, -10.0, 30.0))
    _shuffled_stack(tmp_path / "ax", orientation=AXIAL, spacing=[0.7, 0.9], origin=(-30.0, -20.0, 5.0))
    sagittal, axial = read_series(tmp_path / "sag"), read_series(tmp_path / "ax")
    # DICOM normal = row x column = (0,1,0) x (0,0,-1) = (-1,0,0), but the canonical sagittal order runs
    # towards patient left (+x): slices at x = -16, -12, ..., 0.
    np.testing.assert_allclose(sagittal.normal, [1, 0, 0])
    np.testing.assert_allclose(sagittal.positions[:, 0], [-16, -12, -8, -4, 0])
    point = sagittal.positions[1] + 30 * 0.6 * np.array([0, 1, 0]) + 20 * 0.5 * np.array([0, 0, -1])
    np.testing.assert_allclose(point, [-12.0, 8.0, 20.0])
    np.testing.assert_allclose(sagittal.pixel_to_patient(1, 30, 20), point)
    index, x, y = map_point(sagittal, 1, 30, 20, axial)
    origin = axial.positions[0]  # the head-most axial slice (z = 21)
    assert index == pytest.approx((origin[2] - point[2]) / 4.0)
    assert x == pytest.approx((point[0] - origin[0]) / 0.9)
    assert y == pytest.approx((point[1] - origin[1]) / 0.7)
    np.testing.assert_allclose(axial.pixel_to_patient(index, x, y), point)


def test_tilted_stacks_use_each_slice_orientation() -> None:
    tilt = 0.2
    tilted = [[1, 0, 0], [0, np.cos(tilt), np.sin(tilt)]]
    orientations = np.array([[[1, 0, 0], [0, 1, 0]]] * 3 + [tilted] * 3, dtype=float)
    orientations[1, 0] = [-1, 0, 0]  # a mirrored slice: its own normal points backwards
    positions = np.array([[0, 0, 4.0 * k] for k in range(6)])
    series = Series(
        pixels=np.zeros((6, 8, 8), np.float32),
        instance_numbers=np.arange(1, 7),
        positions=positions,
        orientation=orientations[0],
        pixel_spacing=np.full((6, 2), 1.0),
        original_shapes=np.full((6, 2), 8),
        slice_thickness=4.0,
        series_id="tilted",
        slice_orientations=orientations,
    )
    points = series.pixel_to_patient(np.arange(6), 5.0, 7.0)
    np.testing.assert_allclose(
        points[4], positions[4] + 5.0 * np.array(tilted[0]) + 7.0 * np.array(tilted[1])
    )
    for got, want in zip(series.patient_to_pixel(points), (np.arange(6), 5.0, 7.0), strict=True):
        np.testing.assert_allclose(got, np.broadcast_to(want, (6,)), atol=1e-9)
    np.testing.assert_array_equal(series.nearest_slice(points), np.arange(6))
    index, x, y = series.patient_to_pixel(np.array([0.0, 0.0, 5.0]))  # between slices 1 (z=4) and 2 (z=8)
    assert (index, x, y) == pytest.approx((1.25, 0.0, 0.0))


# --- sizes ---------------------------------------------------------------------------------------------


def _mixed_sizes(folder: Path) -> None:
    for instance in (1, 2, 3):
        _slice(folder, f"{instance}.dcm", instance=instance, position=[0, 0, float(instance)])
    _slice(
        folder,
        "4.dcm",
        instance=4,
        position=[0, 0, 4.0],
        pixels=_reference()[::2, ::2],
        spacing=[0.625, 0.625],
    )


def test_odd_sized_slice_is_resampled_with_its_geometry(tmp_path: Path) -> None:
    _mixed_sizes(tmp_path / "s")
    with pytest.warns(
        SeriesWarning, match=r"series .*s: .*64x64 \(3 slices\), 32x32 \(1 slices\).*resampled"
    ):
        series = read_series(tmp_path / "s")
    assert series.pixels.shape == (4, 64, 64)
    assert series.original_shapes.tolist() == [[32, 32]] + [[64, 64]] * 3  # instance 4 is the head-most
    small = _reference()[::2, ::2]
    np.testing.assert_allclose(
        series.pixels[0][[0, 0, -1, -1], [0, -1, 0, -1]], small[[0, 0, -1, -1], [0, -1, 0, -1]]
    )
    np.testing.assert_allclose(series.pixel_spacing[0], [0.625 * 31 / 63] * 2)
    # The far corner pixel still lies where it was in the 32x32 image.
    corner = series.positions[0] + 31 * 0.625 * (series.orientation[0] + series.orientation[1])
    np.testing.assert_allclose(series.pixel_to_patient(0, 63, 63), corner)


def test_size_mismatch_can_be_rejected(tmp_path: Path) -> None:
    _mixed_sizes(tmp_path / "s")
    with pytest.raises(DataError, match=r"32x32.*on_size_mismatch='resample'"):
        read_series(tmp_path / "s", on_size_mismatch="raise")


# --- bad files and folders -----------------------------------------------------------------------------


def test_non_dicom_files_are_skipped_with_a_warning(tmp_path: Path) -> None:
    _slice(tmp_path / "s", "1.dcm", instance=1, position=[0, 0, 0])
    (tmp_path / "s" / "README.txt").write_text("not an image")
    with pytest.warns(SeriesWarning, match=r"README\.txt: not a DICOM file"):
        series = read_series(tmp_path / "s")
    assert len(series) == 1


def test_truncated_file_raises_or_is_skipped(tmp_path: Path) -> None:
    _slice(tmp_path / "s", "1.dcm", instance=1, position=[0, 0, 0])
    _copy("MR_truncated.dcm", tmp_path / "s")
    with pytest.raises(DataError, match=r"MR_truncated\.dcm: pixel data cannot be decoded"):
        read_series(tmp_path / "s")
    with pytest.warns(SeriesWarning, match=r"MR_truncated\.dcm.*skipped"):
        assert len(read_series(tmp_path / "s", on_corrupt="skip")) == 1
    info = scan_series(tmp_path / "s")
    assert info.n_slices == 1
    assert [(p.kind, Path(p.file).name) for p in info.problems] == [("corrupt", "MR_truncated.dcm")]


def test_truncated_header_names_the_missing_tag(tmp_path: Path) -> None:
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "cut.dcm").write_bytes(Path(get_testdata_file("MR_small.dcm")).read_bytes()[:1000])
    with pytest.raises(DataError, match=r"cut\.dcm: missing required DICOM tag Rows \(0028,0010\)"):
        read_series(tmp_path / "s")


def test_missing_pixel_data_names_the_tag(tmp_path: Path) -> None:
    ds = _mr()
    del ds.PixelData
    (tmp_path / "s").mkdir()
    ds.save_as(tmp_path / "s" / "empty.dcm")
    with pytest.raises(DataError, match=r"empty\.dcm: missing required DICOM tag PixelData \(7FE0,0010\)"):
        read_series(tmp_path / "s")


def test_empty_and_missing_folders(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"empty: no DICOM image files"):
        read_series(tmp_path / "empty")
    with pytest.raises(DataError, match=r"missing does not exist"):
        read_series(tmp_path / "missing")
    with pytest.raises(DataError, match=r"missing does not exist"):
        scan_series(tmp_path / "missing")
    assert [p.kind for p in scan_series(tmp_path / "empty").problems] == ["empty_series"]


# --- multi-frame ---------------------------------------------------------------------------------------


def _enhanced(path: Path, positions: list[list[float]], slopes: list[float], instance: int = 1) -> np.ndarray:
    """Write an Enhanced MR file of MR_small frames with per-frame positions and slopes; return the frames."""
    base = _mr()
    frames = np.stack([base.pixel_array + 100 * k for k in range(len(positions))]).astype(np.int16)
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID, ds.SOPInstanceUID = EnhancedMRImageStorage, generate_uid()
    ds.SeriesInstanceUID, ds.Modality, ds.InstanceNumber = base.SeriesInstanceUID, "MR", instance
    for keyword in ("Rows", "Columns", "SamplesPerPixel", "PhotometricInterpretation", "BitsAllocated"):
        setattr(ds, keyword, base[keyword].value)
    ds.BitsStored, ds.HighBit, ds.PixelRepresentation = (
        base.BitsStored,
        base.HighBit,
        base.PixelRepresentation,
    )
    ds.NumberOfFrames = len(positions)
    measures = Dataset()
    measures.PixelSpacing, measures.SliceThickness = [0.5, 0.75], 2.0
    orientation = Dataset()
    orientation.ImageOrientationPatient = AXIAL
    shared = Dataset()
    shared.PixelMeasuresSequence, shared.PlaneOrientationSequence = [measures], [orientation]
    ds.SharedFunctionalGroupsSequence = [shared]
    groups = []
    for position, slope in zip(positions, slopes, strict=True):
        plane, rescale, group = Dataset(), Dataset(), Dataset()
        plane.ImagePositionPatient = position
        rescale.RescaleSlope, rescale.RescaleIntercept, rescale.RescaleType = slope, 0, "US"
        group.PlanePositionSequence, group.PixelValueTransformationSequence = [plane], [rescale]
        groups.append(group)
    ds.PerFrameFunctionalGroupsSequence = groups
    ds.PixelData = frames.tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return frames


def test_enhanced_mr_frames_keep_their_own_geometry(tmp_path: Path) -> None:
    positions = [[0, 0, 8.0], [0, 0, 0.0], [0.5, 1, 4.0]]
    frames = _enhanced(tmp_path / "s" / "multi.dcm", positions, slopes=[1.0, 2.0, 3.0])
    series = read_series(tmp_path / "s")
    assert series.instance_numbers.tolist() == [1, 3, 2]  # frame numbers, head to feet
    np.testing.assert_allclose(series.positions, [positions[0], positions[2], positions[1]])
    np.testing.assert_allclose(series.pixel_spacing, [[0.5, 0.75]] * 3)
    assert series.slice_thickness == 2.0
    for index, frame in enumerate(series.instance_numbers - 1):
        np.testing.assert_array_equal(series.pixels[index], frames[frame] * (frame + 1.0))
    info = scan_series(tmp_path / "s")
    assert (info.n_slices, info.rows, info.cols, info.problems) == (3, 64, 64, [])
    assert info.instance_numbers == [1, 3, 2]


def test_multi_frame_files_mixed_with_single_frames(tmp_path: Path) -> None:
    _enhanced(tmp_path / "s" / "multi.dcm", [[0, 0, 1.0], [0, 0, 3.0]], slopes=[1.0, 1.0], instance=7)
    _slice(tmp_path / "s", "single.dcm", instance=1, position=[0, 0, 2.0], spacing=[0.5, 0.75])
    series = read_series(tmp_path / "s")
    assert series.instance_numbers.tolist() == [7002, 1, 7001]
    assert series.index_of_instance(7002) == 0


# --- scan ----------------------------------------------------------------------------------------------


def test_scan_reads_headers_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _mixed_sizes(tmp_path / "s")
    _slice(tmp_path / "s", "dup.dcm", instance=2, position=[0, 0, 9.0], SeriesDescription="Sagittal T2/STIR")
    _copy("MR_small_RLE.dcm", tmp_path / "s").rename(tmp_path / "s" / "rle.dcm")
    (tmp_path / "s" / "notes.txt").write_text("x")

    def no_decoding(self: Dataset) -> np.ndarray:
        raise AssertionError("scan_series decoded pixel data")

    monkeypatch.setattr(Dataset, "pixel_array", property(no_decoding))
    info = scan_series(tmp_path / "s")
    assert (info.series_id, info.n_slices, info.rows, info.cols) == ("s", 6, 64, 64)
    assert info.sizes == {(64, 64): 5, (32, 32): 1}
    assert info.description == "Sagittal T2/STIR"
    assert info.transfer_syntaxes == {"Explicit VR Little Endian": 5, "RLE Lossless": 1}
    assert sorted(p.kind for p in info.problems) == ["duplicate_instance", "not_dicom", "size_mismatch"]
    # The RLE file's origin lies 120 mm off the others' line: a stack of its own. How a series was
    # acquired is a note, not a problem.
    assert [p.kind for p in info.notes] == ["several_stacks", "instance_order"]
    assert all(p.note for p in info.notes) and not any(p.note for p in info.problems)
    assert info.n_stacks == 2
    assert info.instance_numbers == [1, 2, 4, 3, 2, 1]  # RLE stack (z 6.64) first, then z = 9, 4, 3, 2, 1


def test_lazy_top_level_export() -> None:
    assert spinegrade.read_series is read_series
    assert spinegrade.Series is Series


# --- real protocols: stacks, set-aside slices, header faults, canonical order ----------------------------


def _tilted(angle: float) -> list[float]:
    """An axial orientation tilted by `angle` (radians) about the patient's left-right axis."""
    return [1.0, 0.0, 0.0, 0.0, float(np.cos(angle)), float(np.sin(angle))]


def _axial_stack(folder: Path, n: int = 10, first_instance: int = 1, **tags) -> None:
    for k in range(n):
        _slice(
            folder,
            f"ax{first_instance + k}.dcm",
            instance=first_instance + k,
            position=[0, 0, -4.0 * k],
            **tags,
        )


def test_a_localiser_in_the_folder_is_set_aside(tmp_path: Path) -> None:
    _axial_stack(tmp_path / "s")
    _slice(tmp_path / "s", "loc.dcm", instance=99, position=[0.0, -10.0, 10.0], orientation=SAGITTAL)
    with pytest.warns(SeriesWarning, match=r"loc\.dcm \(instance 99\) set aside: its plane is tilted 90"):
        series = read_series(tmp_path / "s")
    assert len(series) == 10 and 99 not in series.instance_numbers
    np.testing.assert_allclose(series.orientation.ravel(), AXIAL)  # not tilted towards the localiser
    assert [(p.kind, Path(p.file).name) for p in series.problems] == [("localiser", "loc.dcm")]
    canal = np.array([5.0, 5.0, -13.0])  # between the axial slices at z = -12 and -16
    assert series.instance_numbers[series.nearest_slice(canal)] == 4
    assert [p.kind for p in scan_series(tmp_path / "s").problems] == ["localiser"]


def test_slices_of_a_second_series_uid_are_set_aside(tmp_path: Path) -> None:
    _axial_stack(tmp_path / "s", n=4)
    _slice(tmp_path / "s", "other.dcm", instance=7, position=[0, 0, -2.0], SeriesInstanceUID="1.2.3.4")
    with pytest.warns(SeriesWarning, match=r"other\.dcm \(instance 7\) set aside: its SeriesInstanceUID"):
        series = read_series(tmp_path / "s")
    assert series.instance_numbers.tolist() == [1, 2, 3, 4]
    assert [(p.kind, Path(p.file).name) for p in series.problems] == [("foreign_series", "other.dcm")]


def _angled_blocks(folder: Path) -> tuple[np.ndarray, np.ndarray]:
    """Two axial blocks tilted +-0.15 rad, 3 slices 4 mm apart each, instance numbers interleaved."""
    origins = np.array([[0.0, 0.0, 0.0], [0.0, 0.0, -30.0]])
    for block, (angle, origin) in enumerate(zip((0.15, -0.15), origins, strict=True)):
        orientation = _tilted(angle)
        normal = np.cross(orientation[:3], orientation[3:])
        for k, t in enumerate((-4.0, 0.0, 4.0)):
            instance = 2 * k + 1 + block  # block 0: 1, 3, 5; block 1: 2, 4, 6
            _slice(
                folder,
                f"{instance}.dcm",
                instance=instance,
                position=list(origin + t * normal),
                orientation=orientation,
                pixels=_reference() + 1000 * instance,
            )
    return origins, np.array([np.cross(*np.reshape(_tilted(a), (2, 3))) for a in (0.15, -0.15)])


def test_angled_blocks_become_stacks_with_their_own_geometry(tmp_path: Path) -> None:
    origins, normals = _angled_blocks(tmp_path / "s")
    with warnings.catch_warnings():
        warnings.simplefilter("error", SeriesWarning)  # angled blocks are a protocol, not a problem
        series = read_series(tmp_path / "s")
    # Head to feet: the upper block first, each block head to feet; never interleaved.
    assert series.instance_numbers.tolist() == [5, 3, 1, 6, 4, 2]
    assert series.stacks.tolist() == [0, 0, 0, 1, 1, 1] and series.n_stacks == 2
    assert series.problems == ()
    assert [(p.kind, p.note) for p in series.notes] == [("several_stacks", True), ("instance_order", True)]
    assert "2 stacks (angled blocks) of 3, 3 slices" in series.notes[0].message
    assert series.notes[1].message.endswith(
        "InstanceNumber decreases along the slice order (head -> feet); slices are ordered by position"
    )
    for index, instance in enumerate(series.instance_numbers):
        np.testing.assert_array_equal(series.pixels[index], _reference() + 1000 * instance)
    # 2.5D neighbours come from a slice's own stack only, its ends repeated.
    assert series.neighbours(2, 3).tolist() == [1, 2, 2]
    assert series.neighbours(3, 5).tolist() == [3, 3, 3, 4, 5]
    # The slice of a point is searched over every slice of every stack, by distance to its own plane.
    row, col = np.reshape(_tilted(-0.15), (2, 3))
    point = origins[1] + 0.5 * normals[1] + 10 * row + 8 * col  # 0.5 mm headwards of the lower middle slice
    assert series.instance_numbers[series.nearest_slice(point)] == 4
    index, x, y = series.patient_to_pixel(point)
    assert index == pytest.approx(4 - 0.5 / 4)  # interpolated within the lower block, towards its top
    assert (x, y) == pytest.approx((10 / 0.3125, 8 / 0.3125))
    np.testing.assert_allclose(series.pixel_to_patient(index, x, y), point, atol=1e-9)


def test_sagittal_series_read_in_the_same_order_whatever_the_normal_sign(tmp_path: Path) -> None:
    flipped = [0.0, -1.0, 0.0, 0.0, 0.0, -1.0]  # rows run anterior: normal +x instead of -x
    xs = [-8.0, -4.0, 0.0, 4.0, 8.0]
    for name, orientation, instances in (("a", SAGITTAL, [1, 2, 3, 4, 5]), ("b", flipped, [5, 4, 3, 2, 1])):
        for x, instance in zip(xs, instances, strict=True):
            _slice(
                tmp_path / name,
                f"{instance}.dcm",
                instance=instance,
                position=[x, 0, 0],
                orientation=orientation,
            )
    a, b = read_series(tmp_path / "a"), read_series(tmp_path / "b")
    for series in (a, b):  # patient right (-x) to left (+x), slice index 0 on the right
        np.testing.assert_allclose(series.positions[:, 0], xs)
        np.testing.assert_allclose(series.normal, [1, 0, 0])
    assert a.instance_numbers.tolist() == [1, 2, 3, 4, 5] and b.instance_numbers.tolist() == [5, 4, 3, 2, 1]


def _patch(path: Path, old: bytes, new: bytes) -> None:
    data = path.read_bytes()
    assert data.count(old) == 1, f"{old!r} is not unique in {path}"
    path.write_bytes(data.replace(old, new))


@pytest.mark.parametrize(
    ("keyword", "tags", "old", "new"),
    [
        ("SliceThickness", {"SliceThickness": "7.77"}, b"7.77", b"7..7"),
        ("InstanceNumber", {}, b"4321", b"43x1"),
        ("ImagePositionPatient", {}, b"-12.5", b"-1e.5"),
    ],
)
def test_malformed_header_values_are_data_errors_naming_file_and_tag(
    tmp_path: Path, keyword: str, tags: dict, old: bytes, new: bytes
) -> None:
    _axial_stack(tmp_path / "s", n=3)
    bad = _slice(tmp_path / "s", "bad.dcm", instance=4321, position=[0, 0, -12.5], **tags)
    _patch(bad, old, new)
    tag = series_header.tag_label(keyword)
    with pytest.raises(DataError, match=rf"bad\.dcm: malformed {keyword} \({tag[1:-1]}\) value"):
        read_series(tmp_path / "s")
    with pytest.warns(SeriesWarning, match=r"bad\.dcm: malformed .* - skipped"):
        series = read_series(tmp_path / "s", on_corrupt="skip")
    assert series.instance_numbers.tolist() == [1, 2, 3]
    assert [(p.kind, Path(p.file).name) for p in series.problems] == [("header_fault", "bad.dcm")]
    assert [p.kind for p in scan_series(tmp_path / "s").problems] == ["header_fault"]


def test_one_slice_without_position_is_set_aside_and_the_rest_stays_usable(tmp_path: Path) -> None:
    _axial_stack(tmp_path / "s", n=4)
    _slice(tmp_path / "s", "nopos.dcm", instance=5, position=None)
    with pytest.warns(
        SeriesWarning, match=r"nopos\.dcm \(instance 5\) set aside: it lacks ImagePositionPatient"
    ):
        series = read_series(tmp_path / "s")
    assert series.instance_numbers.tolist() == [1, 2, 3, 4] and np.isfinite(series.positions).all()
    assert series.instance_numbers[series.nearest_slice(np.array([0.0, 0.0, -7.0]))] == 3
    assert [p.kind for p in series.problems] == ["partial_geometry"]
    usable, problems = read_usable_series(tmp_path / "s")
    assert usable is not None and [p.kind for p in problems] == ["partial_geometry"]


def test_one_slice_without_pixel_spacing_is_set_aside_and_the_rest_stays_usable(tmp_path: Path) -> None:
    _axial_stack(tmp_path / "s", n=3)
    path = _slice(tmp_path / "s", "nospacing.dcm", instance=4, position=[0.0, 0.0, -12.5])
    ds = pydicom.dcmread(path)
    del ds.PixelSpacing
    ds.save_as(path)
    series, problems = read_usable_series(tmp_path / "s")
    assert series is not None and series.instance_numbers.tolist() == [1, 2, 3]
    assert [(p.kind, Path(p.file).name) for p in problems] == [("partial_geometry", "nospacing.dcm")]
    assert "it lacks PixelSpacing (0028,0030) while the other slices have it" in problems[0].message


def test_a_series_without_usable_geometry_is_dropped_with_a_problem(tmp_path: Path) -> None:
    for instance in (1, 2):
        _slice(tmp_path / "s", f"{instance}.dcm", instance=instance, position=None, orientation=None)
    series, problems = read_usable_series(tmp_path / "s")
    assert series is None and problems[-1].kind == "unusable_geometry"
    (tmp_path / "t").mkdir()
    (tmp_path / "t" / "x.dcm").write_bytes(b"junk" * 50)
    series, problems = read_usable_series(tmp_path / "t")
    assert series is None and [p.kind for p in problems] == ["not_dicom", "unreadable_series"]
    assert "x.dcm" in problems[0].message


def test_rle_and_uncompressed_copies_read_to_equal_pixels(tmp_path: Path) -> None:
    from pydicom.uid import RLELossless

    rng = np.random.default_rng(3)
    for instance in (1, 2, 3):
        pixels = rng.integers(0, 4096, (64, 64))
        plain = _slice(
            tmp_path / "plain",
            f"{instance}.dcm",
            instance=instance,
            position=[0, 0, -3.0 * instance],
            pixels=pixels,
            PixelRepresentation=0,
            BitsStored=12,
            HighBit=11,
        )
        ds = pydicom.dcmread(plain)
        ds.compress(RLELossless)
        (tmp_path / "rle").mkdir(exist_ok=True)
        ds.save_as(tmp_path / "rle" / f"{instance}.dcm")
    plain, rle = read_series(tmp_path / "plain"), read_series(tmp_path / "rle")
    assert scan_series(tmp_path / "rle").transfer_syntaxes == {"RLE Lossless": 3}
    np.testing.assert_array_equal(plain.pixels, rle.pixels)
    assert plain.instance_numbers.tolist() == rle.instance_numbers.tolist() == [1, 2, 3]


# --- the real study (../shared): RLE files exactly as the competition ships them ---------------------------

REAL_SERIES = {"Sagittal T2/STIR": "3666319702", "Sagittal T1": "3486248476", "Axial T2": "3201256954"}


@pytest.fixture
def native_rle() -> Iterator[None]:
    """pydicom's own RLE decoder only, for the test; pydicom's plugins (pylibjpeg first) restored after."""
    from pydicom.pixels.decoders import RLELosslessDecoder

    RLELosslessDecoder.remove_plugin("pylibjpeg")
    yield
    RLELosslessDecoder.remove_plugin("pydicom")
    RLELosslessDecoder.add_plugins(
        [
            ("pylibjpeg", ("pydicom.pixels.decoders.pylibjpeg", "_decode_frame")),
            ("pydicom", ("pydicom.pixels.decoders.rle", "_decode_frame")),
        ]
    )


@pytest.fixture(scope="module")
def real_series(real_study: Path) -> dict[str, Series]:
    folder = real_study / "train_images" / "4646740"
    return {kind: read_series(folder / series_id) for kind, series_id in REAL_SERIES.items()}


@pytest.mark.slow
def test_real_study_decodes_the_same_with_and_without_pylibjpeg(
    real_study: Path, real_series: dict[str, Series], native_rle: None
) -> None:
    from pydicom.pixels.decoders import RLELosslessDecoder

    assert RLELosslessDecoder.available_plugins == ("pydicom",)
    for kind, series_id in REAL_SERIES.items():
        slow = read_series(real_study / "train_images" / "4646740" / series_id)
        fast = real_series[kind]
        np.testing.assert_array_equal(slow.pixels, fast.pixels)
        assert fast.pixels.dtype == np.float32 and fast.pixels.min() >= 0 and fast.pixels.max() <= 4095
        assert fast.n_stacks == 1 and fast.problems == ()
    sagittal, axial = real_series["Sagittal T2/STIR"], real_series["Axial T2"]
    assert sagittal.pixels.shape == (17, 540, 384) and axial.pixels.shape == (54, 384, 384)
    assert np.all(np.diff(sagittal.positions[:, 0]) > 0)  # patient right to left
    assert sagittal.instance_numbers.tolist() == list(range(17, 0, -1))  # instance 1 lies leftmost here
    assert np.all(np.diff(axial.positions[:, 2]) < 0) and axial.instance_numbers.tolist() == list(
        range(1, 55)
    )


def test_real_study_inspects_clean(real_study: Path) -> None:
    from spinegrade.data.inspect import inspect_dataset

    report = inspect_dataset(real_study, progress=False)
    assert report["problems"] == []
    assert report["series_quirks"]["train"] == {
        "series_with_several_stacks": 0,
        "slices_set_aside": 0,
        "duplicate_positions": 0,
        "header_faults": 0,
    }


def test_real_label_points_agree_across_series(real_study: Path, real_series: dict[str, Series]) -> None:
    from spinegrade.crops.extract import label_to_pixel
    from spinegrade.data.tables import load_rsna

    points = load_rsna(real_study, "train").coordinates
    by_id = {int(series_id): real_series[kind] for kind, series_id in REAL_SERIES.items()}

    def patient(row) -> np.ndarray:
        series = by_id[row.series_id]
        return series.pixel_to_patient(*label_to_pixel(series, row.instance_number, row.x, row.y))

    canal = {r.level: patient(r) for r in points.itertuples() if r.condition == "spinal_canal_stenosis"}
    subarticular = points[points["condition"].str.endswith("subarticular_stenosis")]
    assert len(canal) == 5 and len(subarticular) == 10
    sagittal, axial = real_series["Sagittal T2/STIR"], real_series["Axial T2"]
    for row in subarticular.itertuples():
        point = patient(row)
        index, x, y = sagittal.patient_to_pixel(point)  # inside the sagittal T2 volume ...
        assert -0.5 <= index <= len(sagittal) - 0.5 and 0 <= x < 384 and 0 <= y < 540
        assert np.linalg.norm(point - canal[row.level]) < 16.0  # ... near the canal point of its level
    for level, point in canal.items():  # the axial slice chosen from a canal point is the labelled one, +-1
        chosen = axial.instance_numbers[axial.nearest_slice(point)]
        labelled = subarticular.loc[subarticular["level"] == level, "instance_number"]
        assert np.min(np.abs(labelled.to_numpy() - chosen)) <= 1, (level, chosen, labelled.tolist())


def test_read_study_drops_only_the_series_that_cannot_be_used(tmp_path: Path) -> None:
    from spinegrade.prediction.studies import StudyPlan, read_study

    study = tmp_path / "7"
    _axial_stack(study / "1", n=3)
    bad = _slice(study / "1", "bad.dcm", instance=4321, position=[0, 0, -12.5], SliceThickness="7.77")
    _patch(bad, b"7.77", b"7..7")
    _slice(study / "1", "nopos.dcm", instance=9, position=None)
    for instance in (1, 2):
        _slice(study / "2", f"{instance}.dcm", instance=instance, position=None, orientation=None)
    images = read_study(StudyPlan(7, (("Axial T2", study / "1"), ("Sagittal T1", study / "2"))))
    assert list(images.series_by_type) == ["Axial T2"]  # the sagittal one has no usable geometry
    assert images.series_by_type["Axial T2"][0].instance_numbers.tolist() == [1, 2, 3]
    kinds = [p.kind for p in images.problems]
    assert {"header_fault", "partial_geometry", "unusable_geometry"} <= set(kinds)
    assert all(p.study_id == 7 for p in images.problems)


def test_inspect_counts_stacks_set_aside_slices_duplicates_and_header_faults(tiny_phantom, tmp_path) -> None:
    import shutil

    from spinegrade.data.inspect import inspect_dataset
    from spinegrade.data.tables import load_rsna

    data = tmp_path / "data"
    shutil.copytree(tiny_phantom, data)
    before = inspect_dataset(data, progress=False)["series_quirks"]["train"]
    rsna = load_rsna(data, "train")
    row = rsna.descriptions[rsna.descriptions["series_description"] == "Axial T2"].iloc[0]
    folder = rsna.series_folder(row.study_id, row.series_id)
    source = sorted(folder.glob("*.dcm"))[0]

    def copy(name: str, instance: int, **tags) -> Path:
        ds = pydicom.dcmread(source)
        ds.InstanceNumber = instance
        for keyword, value in tags.items():
            setattr(ds, keyword, value)
        ds.save_as(folder / name)
        return folder / name

    copy("localiser.dcm", 9001, ImageOrientationPatient=SAGITTAL)
    copy("duplicate.dcm", 9002)
    _patch(copy("fault.dcm", 9003, SliceThickness="7.77"), b"7.77", b"7..7")
    report = inspect_dataset(data, progress=False)
    # The phantom's own angled axial blocks are stacks already; the copies add no stack of their own.
    assert before["slices_set_aside"] == before["duplicate_positions"] == before["header_faults"] == 0
    assert report["series_quirks"]["train"] == {
        "series_with_several_stacks": before["series_with_several_stacks"],
        "slices_set_aside": 2,
        "duplicate_positions": 1,
        "header_faults": 1,
    }
    found = {
        p["kind"]: Path(p["file"]).name
        for p in report["problems"]
        if p["series_id"] == row.series_id and p["kind"] != "several_stacks"  # the phantom's angled blocks
    }
    assert found == {
        "localiser": "localiser.dcm",
        "duplicate_position": "duplicate.dcm",
        "header_fault": "fault.dcm",
    }
    assert report["problem_counts"]["header_fault"] == 1


def test_problems_name_study_and_series_whatever_path_the_folder_was_given_by(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "test_images" / "1000002" / "3486248476"
    _axial_stack(folder, n=3)
    (folder / "junk.dcm").write_bytes(b"junk")
    monkeypatch.chdir(tmp_path)
    relative = Path("test_images/1000002/3486248476")
    _, by_relative = read_usable_series(relative)
    _, by_absolute = read_usable_series(folder.resolve())
    assert [p.message for p in by_relative] == [p.message for p in by_absolute]  # shown once, not twice
    [problem] = by_absolute
    assert problem.message.startswith("study 1000002 series 3486248476: junk.dcm: not a DICOM file")
    assert (problem.study_id, problem.series_id, problem.file) == (
        1000002,
        3486248476,
        str(folder / "junk.dcm"),
    )
