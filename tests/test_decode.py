"""The decoder boundary: whatever a decoding plugin raises (a Rust panic is a BaseException) becomes a
Problem naming the file, pydicom's own decoder is the fallback where it can read the file, and only
KeyboardInterrupt / SystemExit get through."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.pixels import pixel_array

from spinegrade.data.series import SeriesWarning, decode, read_series, read_usable_series
from spinegrade.errors import DataError


class FakePanic(BaseException):
    """What pyo3 raises for a Rust panic: not an Exception, so pydicom's plugin loop does not catch it."""


def _rle_stack(folder: Path, n: int = 3) -> list[Path]:
    """n copies of pydicom's MR_small_RLE.dcm (64x64, RLE Lossless) along an axial normal."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for instance in range(1, n + 1):
        ds = pydicom.dcmread(get_testdata_file("MR_small_RLE.dcm"))
        ds.InstanceNumber = instance
        ds.ImagePositionPatient = [0.0, 0.0, -5.0 * instance]
        ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
        ds.save_as(folder / f"{instance}.dcm")
        paths.append(folder / f"{instance}.dcm")
    return paths


def _damage_pixels(path: Path, seed: int = 0, size: int = 200) -> None:
    """Write `size` random bytes into the middle of the file's pixel data (as issue 23 planted them)."""
    ds = pydicom.dcmread(path, defer_size=1024)
    start = ds.get_item(0x7FE00010, keep_deferred=True).value_tell
    data = bytearray(path.read_bytes())
    middle = start + (len(data) - start) // 2
    data[middle : middle + size] = np.random.default_rng(seed).integers(0, 256, size, np.uint8).tobytes()
    path.write_bytes(bytes(data))


def _fake_decoder(
    monkeypatch: pytest.MonkeyPatch, bad: str, default: BaseException, own: BaseException | None
) -> None:
    """Decode `bad` (a file name) by raising `default` through pydicom's plugins and `own` through
    pydicom's own decoder (None: it decodes); other files decode as usual."""

    def fake(ds: pydicom.Dataset, decoding_plugin: str = "") -> np.ndarray:
        if Path(ds.filename).name == bad:
            error = own if decoding_plugin == decode.FALLBACK_PLUGIN else default
            if error is not None:
                raise error
        return pixel_array(ds, decoding_plugin=decoding_plugin)

    monkeypatch.setattr(decode, "decode_pixels", fake)


def test_a_real_rle_plugin_panic_falls_back_to_pydicoms_decoder_and_says_so(tmp_path: Path) -> None:
    paths = _rle_stack(tmp_path / "s")
    _damage_pixels(paths[1])
    with pytest.raises(BaseException, match="index out of bounds") as plugin:  # what the issue hit
        pixel_array(paths[1], decoding_plugin="pylibjpeg")
    assert not isinstance(plugin.value, Exception)
    with pytest.warns(SeriesWarning, match=r"2\.dcm: pixel data decoded by pydicom's own decoder"):
        series = read_series(tmp_path / "s")  # on_corrupt="raise": the fallback decoded it, nothing raised
    assert series.instance_numbers.tolist() == [1, 2, 3]
    with pytest.warns(UserWarning, match="non-conformant padding"):
        own = pixel_array(paths[1], decoding_plugin=decode.FALLBACK_PLUGIN)
    np.testing.assert_array_equal(series.pixels[1], own.astype(np.float32))
    [problem] = series.problems
    assert problem.kind == "decoder_fallback" and Path(problem.file) == paths[1]
    assert f"series {paths[1].parent}: 2.dcm: pixel data decoded by pydicom's own decoder" in problem.message
    assert "PanicException: index out of bounds" in problem.message


def test_a_panic_pydicom_cannot_read_either_is_a_pixel_fault_naming_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _rle_stack(tmp_path / "s")
    _fake_decoder(monkeypatch, "2.dcm", FakePanic("index out of bounds"), ValueError("bad RLE segment"))
    with pytest.raises(DataError, match=r"2\.dcm: pixel data cannot be decoded \(FakePanic: index out"):
        read_series(tmp_path / "s")
    series, problems = read_usable_series(tmp_path / "s")
    assert series is not None and series.instance_numbers.tolist() == [1, 3]
    [problem] = problems
    assert problem.kind == "pixel_fault" and Path(problem.file).name == "2.dcm"
    assert "FakePanic: index out of bounds; then ValueError: bad RLE segment" in problem.message


def test_without_a_pydicom_decoder_for_the_syntax_a_panic_is_a_pixel_fault(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "s"
    folder.mkdir()
    (folder / "1.dcm").write_bytes(Path(get_testdata_file("MR_small_jpeg_ls_lossless.dcm")).read_bytes())
    _fake_decoder(monkeypatch, "1.dcm", FakePanic("boom"), None)  # JPEG-LS: pylibjpeg only
    series, problems = read_usable_series(folder)
    assert series is None
    assert [p.kind for p in problems] == ["pixel_fault", "unreadable_series"]
    assert "1.dcm: pixel data cannot be decoded (FakePanic: boom) - skipped" in problems[0].message


@pytest.mark.parametrize("stop", [KeyboardInterrupt, SystemExit])
def test_keyboard_interrupt_and_system_exit_still_stop_the_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, stop: type[BaseException]
) -> None:
    _rle_stack(tmp_path / "s")
    _fake_decoder(monkeypatch, "2.dcm", stop(), None)
    with pytest.raises(stop):
        read_usable_series(tmp_path / "s")


def test_a_decoder_warning_is_reported_with_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _rle_stack(tmp_path / "s", n=2)

    def warns(ds: pydicom.Dataset, **kw) -> np.ndarray:
        if Path(ds.filename).name == "2.dcm":
            warnings.warn(
                "The decoded RLE segment contains\n non-conformant padding", UserWarning, stacklevel=1
            )
        return pixel_array(ds, **kw)

    monkeypatch.setattr(decode, "decode_pixels", warns)
    series, problems = read_usable_series(tmp_path / "s")
    assert series is not None and len(series) == 2
    assert [(p.kind, Path(p.file).name) for p in problems] == [("pixel_warning", "2.dcm")]
    assert problems[0].message.endswith(
        "2.dcm: pydicom warned: The decoded RLE segment contains non-conformant padding"
    )
