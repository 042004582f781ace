"""Pixel decoding: one frame's stored values into the series' float32 volume (rescaled, MONOCHROME1
inverted, resampled to the series' size)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydicom.pixels import pixel_array as decode_pixels
from pydicom.pixels.processing import apply_modality_lut
from scipy import ndimage

from spinegrade.data.series.header import Frame, tag_number
from spinegrade.data.series.problems import FileError


def decode_into(out: np.ndarray, frame: Frame, decoded: dict[Path, np.ndarray]) -> None:
    """Decode one frame into `out` (float32 (rows, cols) of the series' size): rescaled (in float32, not
    pydicom's float64 apply_modality_lut; a Modality LUT sequence goes through pydicom), MONOCHROME1
    inverted within its value range, resampled when its size differs."""
    ds, path = frame.dataset, frame.path
    raw = decoded.get(path)
    if raw is None:
        try:
            # pydicom.pixels.pixel_array, unlike Dataset.pixel_array, keeps no copy on the dataset: the
            # raw array is freed after conversion and its memory serves the next slice.
            raw = decode_pixels(ds).reshape(frame.n_frames, *frame.shape)
        except Exception as exc:  # decoders raise ValueError, RuntimeError... on damaged data
            raise FileError(
                "corrupt", f"{path}: pixel data cannot be decoded ({type(exc).__name__}: {exc})", path
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
