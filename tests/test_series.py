"""Tests of the DICOM series reader on pydicom's bundled MR files and small series built from them."""

from __future__ import annotations

import io
import types
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import EnhancedMRImageStorage, ExplicitVRLittleEndian, JPEGBaseline8Bit, generate_uid

import spinegrade
from spinegrade.data import series as series_module
from spinegrade.data.series import Series, SeriesWarning, map_point, read_series, scan_series
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


@pytest.mark.filterwarnings("ignore:The pixel data is .* excess padding:UserWarning")
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
    monkeypatch.setattr(series_module, "get_decoder", lambda uid: missing)
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
    pixels = read_series(tmp_path / "s").pixels[0]
    np.testing.assert_array_equal(pixels, 4095 - _reference())
    brightest = np.unravel_index(np.argmax(_reference()), _reference().shape)
    assert pixels[brightest] == pixels.min()


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


def test_slices_are_ordered_along_the_normal_not_by_instance(tmp_path: Path) -> None:
    _shuffled_stack(tmp_path / "s")
    series = read_series(tmp_path / "s")
    assert series.series_id == "s"
    assert series.instance_numbers.tolist() == [3, 1, 5, 2, 4]
    np.testing.assert_allclose(series.slice_locations, 5.0 + 4.0 * np.arange(5))
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


def test_instance_number_breaks_position_ties(tmp_path: Path) -> None:
    for instance in [4, 2, 3]:
        _slice(
            tmp_path / "s",
            f"{instance}.dcm",
            instance=instance,
            position=[0, 0, 1.0 if instance == 3 else 0.0],
        )
    assert read_series(tmp_path / "s").instance_numbers.tolist() == [2, 4, 3]


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
    # Sagittal normal = row x column = (0,1,0) x (0,0,-1) = (-1,0,0): slices step towards patient right.
    np.testing.assert_allclose(sagittal.normal, [-1, 0, 0])
    point = sagittal.positions[1] + 30 * 0.6 * np.array([0, 1, 0]) + 20 * 0.5 * np.array([0, 0, -1])
    np.testing.assert_allclose(point, [-4.0, 8.0, 20.0])
    np.testing.assert_allclose(sagittal.pixel_to_patient(1, 30, 20), point)
    index, x, y = map_point(sagittal, 1, 30, 20, axial)
    origin = axial.positions[0]
    assert index == pytest.approx((point[2] - origin[2]) / 4.0)
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
    assert series.original_shapes.tolist() == [[64, 64]] * 3 + [[32, 32]]
    small = _reference()[::2, ::2]
    np.testing.assert_allclose(
        series.pixels[3][[0, 0, -1, -1], [0, -1, 0, -1]], small[[0, 0, -1, -1], [0, -1, 0, -1]]
    )
    np.testing.assert_allclose(series.pixel_spacing[3], [0.625 * 31 / 63] * 2)
    # The far corner pixel still lies where it was in the 32x32 image.
    corner = series.positions[3] + 31 * 0.625 * (series.orientation[0] + series.orientation[1])
    np.testing.assert_allclose(series.pixel_to_patient(3, 63, 63), corner)


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
    positions = [[0, 0, 8.0], [0, 0, 0.0], [1, 2, 4.0]]
    frames = _enhanced(tmp_path / "s" / "multi.dcm", positions, slopes=[1.0, 2.0, 3.0])
    series = read_series(tmp_path / "s")
    assert series.instance_numbers.tolist() == [2, 3, 1]  # frame numbers, ordered along z
    np.testing.assert_allclose(series.positions, [positions[1], positions[2], positions[0]])
    np.testing.assert_allclose(series.pixel_spacing, [[0.5, 0.75]] * 3)
    assert series.slice_thickness == 2.0
    for index, frame in enumerate(series.instance_numbers - 1):
        np.testing.assert_array_equal(series.pixels[index], frames[frame] * (frame + 1.0))
    info = scan_series(tmp_path / "s")
    assert (info.n_slices, info.rows, info.cols, info.problems) == (3, 64, 64, [])
    assert info.instance_numbers == [2, 3, 1]


def test_multi_frame_files_mixed_with_single_frames(tmp_path: Path) -> None:
    _enhanced(tmp_path / "s" / "multi.dcm", [[0, 0, 1.0], [0, 0, 3.0]], slopes=[1.0, 1.0], instance=7)
    _slice(tmp_path / "s", "single.dcm", instance=1, position=[0, 0, 2.0], spacing=[0.5, 0.75])
    series = read_series(tmp_path / "s")
    assert series.instance_numbers.tolist() == [7001, 1, 7002]
    assert series.index_of_instance(7002) == 2


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
    assert info.instance_numbers == [1, 2, 3, 4, 1, 2]  # ordered along z: RLE file at 6.64 mm, dup at 9


def test_lazy_top_level_export() -> None:
    assert spinegrade.read_series is read_series
    assert spinegrade.Series is Series
