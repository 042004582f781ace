"""Pixel decoding: one frame's stored values into the series' float32 volume (rescaled, MONOCHROME1
inverted, resampled to the series' size), every file through one decoder boundary (`decode_file`)."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import NamedTuple

import numpy as np
from pydicom.dataset import Dataset
from pydicom.pixels import get_decoder
from pydicom.pixels import pixel_array as decode_pixels
from pydicom.pixels.processing import apply_modality_lut
from scipy import ndimage

from spinegrade.data.series.header import Frame, tag_number
from spinegrade.data.series.problems import FileError

# pydicom's own (pure Python) decoding plugin: the fallback where a compiled plugin fails past pydicom.
FALLBACK_PLUGIN = "pydicom"


class Report(NamedTuple):
    """What to report about a file that decoded: a Problem kind and what happened (without the path)."""

    kind: str
    text: str


def decode_file(ds: Dataset, path: Path) -> tuple[np.ndarray, Report | None]:
    """The decoder boundary: the pixel data of a file as pydicom's installed plugins decode it, and what
    to report about the decoding (None when nothing).

    pydicom tries its plugins in turn but only past an `Exception`; a plugin written in Rust panics with
    pyo3's PanicException, a BaseException (pylibjpeg-rle on damaged RLE). Anything a plugin raises is
    contained here: pydicom's own decoder is tried where it can decode the transfer syntax (reported as
    a `decoder_fallback` report), else the file is a `pixel_fault` FileError naming it. KeyboardInterrupt
    and SystemExit still stop the run. pydicom's warnings about the pixel data (damaged data it decoded
    anyway) are reported too (`pixel_warning`).
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            # pydicom.pixels.pixel_array, unlike Dataset.pixel_array, keeps no copy on the dataset: the
            # raw array is freed after conversion and its memory serves the next slice.
            pixels = decode_pixels(ds)
            warned = _warned(caught)
            return pixels, Report("pixel_warning", warned) if warned else None
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as exc:  # anything a plugin raises, Rust panics included
            failure = exc
        if isinstance(failure, Exception) or FALLBACK_PLUGIN not in _plugins(ds):
            raise _pixel_fault(path, failure) from failure  # pydicom has tried every plugin already
        caught.clear()
        try:
            pixels = decode_pixels(ds, decoding_plugin=FALLBACK_PLUGIN)
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as exc:
            raise _pixel_fault(path, failure, exc) from exc
    why = [
        f"pixel data decoded by pydicom's own decoder after the preferred plugin failed "
        f"({_describe(failure)})",
        _warned(caught),
    ]
    return pixels, Report("decoder_fallback", "; ".join(filter(None, why)))


def _plugins(ds: Dataset) -> tuple[str, ...]:
    """The installed decoding plugins of the file's transfer syntax (none for uncompressed data)."""
    return get_decoder(ds.file_meta.TransferSyntaxUID).available_plugins


def _pixel_fault(path: Path, *failures: BaseException) -> FileError:
    causes = "; then ".join(_describe(f) for f in failures)
    return FileError("pixel_fault", f"pixel data cannot be decoded ({causes})", path)


def _describe(error: BaseException) -> str:
    """An exception in one line (a decoder's message may span several)."""
    return " ".join(f"{type(error).__name__}: {error}".split())


def _warned(caught: list[warnings.WarningMessage]) -> str | None:
    """pydicom's warnings about a file's pixel data, in one line, or None."""
    messages = dict.fromkeys(" ".join(str(w.message).split()) for w in caught)
    return f"pydicom warned: {'; '.join(messages)}" if messages else None


def decode_into(out: np.ndarray, frame: Frame, decoded: dict[Path, np.ndarray]) -> Report | None:
    """Decode one frame into `out` (float32 (rows, cols) of the series' size): rescaled (in float32, not
    pydicom's float64 apply_modality_lut; a Modality LUT sequence goes through pydicom), MONOCHROME1
    inverted within its value range, resampled when its size differs. Returns decode_file's report
    (once per file: the frames of a multi-frame file are decoded once, into `decoded`)."""
    ds, path = frame.dataset, frame.path
    if ds is None:
        raise ValueError(f"{path}: frame {frame.frame} was read without its dataset (decode=False)")
    raw, report = decoded.get(path), None
    if raw is None:
        raw, report = decode_file(ds, path)
        try:
            raw = raw.reshape(frame.n_frames, *frame.shape)
        except ValueError as exc:
            raise FileError(
                "pixel_fault",
                f"decoded pixel data of shape {raw.shape} does not hold {frame.n_frames} frames of "
                f"{frame.shape[0]}x{frame.shape[1]}",
                path,
            ) from exc
        if frame.n_frames > 1:
            decoded[path] = raw
    raw = raw[frame.frame]
    target = out if raw.shape == out.shape else np.empty(raw.shape, dtype=np.float32)
    slope, intercept = frame.rescale
    lut = tag_number("ModalityLUTSequence") in ds
    if lut:
        target[...] = apply_modality_lut(raw, ds)
    elif slope == 1:  # the common case: one converting copy instead of a multiply
        np.copyto(target, raw, casting="unsafe")
    else:
        np.multiply(raw, np.float32(slope), out=target, casting="unsafe")
    if intercept and not lut:
        target += np.float32(intercept)
    if frame.inverted:
        value_range = np.array(frame.value_range)
        if lut:
            low, high = apply_modality_lut(value_range, ds).astype(np.float64)
        else:
            low, high = value_range * slope + intercept
        np.subtract(np.float32(low + high), target, out=target)
    if target is not out:
        out[...] = resample(target, out.shape)
    return report


def resample(pixels: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Resize a slice to `shape` (bilinear) keeping its corner pixel centres in place."""
    zoom = np.array(shape) / np.array(pixels.shape)
    return ndimage.zoom(pixels, zoom, order=1, grid_mode=False)


def resampled_spacing(spacing: np.ndarray, shape: tuple[int, int], target: tuple[int, int]) -> np.ndarray:
    """The pixel spacing of a slice of `shape` resampled by resample to `target`."""
    if shape == target:
        return spacing
    old, new = np.array(shape) - 1, np.array(target) - 1
    return spacing * np.where(new > 0, old / np.maximum(new, 1), 1.0)
