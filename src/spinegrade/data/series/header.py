"""File parsing: one DICOM file's header into Frames (one per image, with its own geometry), every header
value parsed in one place (`_value`), and the checks that a file can be decoded at all."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, TypeVar

import numpy as np
import pydicom
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.multival import MultiValue
from pydicom.pixels import get_decoder
from pydicom.tag import BaseTag
from pydicom.uid import UID

from spinegrade.data.series.problems import FileError

# Tags without which pydicom cannot decode a slice, in file order (a cut header reports the first lost).
REQUIRED_TAGS = (
    "Rows",
    "Columns",
    "SamplesPerPixel",
    "PhotometricInterpretation",
    "BitsAllocated",
    "BitsStored",
    "PixelRepresentation",
    "PixelData",
)
_PIXEL_DATA = 0x7FE00010
FLOAT32_MAX: Final = float(np.finfo(np.float32).max)
MAX_PIXELS: Final = 8192 * 8192  # per frame: beyond any MR slice, within what a decoder can allocate
T = TypeVar("T")


@dataclass
class Frame:
    """One 2-D image: a single-frame file or one frame of a multi-frame file, with its own geometry."""

    path: Path
    frame: int  # 0-based frame in its file
    n_frames: int  # frames in its file
    file_instance: int | None  # the file's InstanceNumber
    position: np.ndarray  # (3,), NaN when absent
    orientation: np.ndarray  # (2, 3), NaN when absent
    spacing: np.ndarray  # (2,) = (dy, dx), NaN when absent
    thickness: float | None
    shape: tuple[int, int]
    series_uid: str | None
    description: str | None
    transfer_syntax: str
    rescale: tuple[float, float]  # (slope, intercept) of this frame
    value_range: tuple[int, int]  # of the stored values (BitsStored, PixelRepresentation)
    inverted: bool  # MONOCHROME1
    dataset: Dataset | None = None  # the file's dataset, pixel data not yet decoded (read_series only)

    @property
    def has_geometry(self) -> bool:
        return bool(np.isfinite(self.position).all() and np.isfinite(self.orientation).all())


def read_files(folder: Path, *, decode: bool) -> list[list[Frame] | FileError]:
    """The frames of every file in `folder` (name order), or the FileError that stopped each file.

    Deliberately serial: a thread pool was measured slower or no faster (20 slices of 256x256: 39 ms
    serial vs 55 ms pooled uncompressed; 262 ms with 1 or 2 threads for JPEG 2000), as pydicom and the
    pylibjpeg decoders hold the GIL. Parallelise across series (processes) instead.
    """
    results: list[list[Frame] | FileError] = []
    for path in sorted(p for p in folder.iterdir() if p.is_file()):
        try:
            results.append(read_file(path, decode=decode))
        except FileError as exc:
            results.append(exc)
    return results


def read_file(path: Path, *, decode: bool) -> list[Frame]:
    """The frames of one DICOM file; decode=False reads headers only (pixel data deferred, never decoded)."""
    try:
        ds = pydicom.dcmread(path, defer_size=None if decode else 1024)
    except InvalidDicomError:
        raise FileError("not_dicom", "not a DICOM file (no 'DICM' prefix at byte 128)", path) from None
    except Exception as exc:  # pydicom raises many types on malformed bytes
        raise FileError("corrupt", f"corrupt DICOM header ({type(exc).__name__}: {exc})", path) from exc
    for keyword in REQUIRED_TAGS:  # present with a value (pixel data: present, its value not read here)
        if not (tag_number(keyword) in ds if keyword == "PixelData" else _present(ds, keyword)):
            raise FileError(
                "missing_tag",
                f"missing required DICOM tag {keyword} {tag_label(keyword)}; "
                "the file may be truncated or not an image",
                path,
            )
    photometric = _value(ds, path, "PhotometricInterpretation", str)
    if photometric not in ("MONOCHROME1", "MONOCHROME2"):
        raise FileError(
            "unsupported",
            f"PhotometricInterpretation {tag_label('PhotometricInterpretation')} is "
            f"{photometric}; spinegrade reads grayscale (MONOCHROME1/2) MR images only",
            path,
        )
    syntax = _check_decoder(ds, path)
    shape = (_required(ds, path, "Rows"), _required(ds, path, "Columns"))
    n_frames = _value(ds, path, "NumberOfFrames", _int)
    _check_size(path, shape, n_frames)
    n_frames = n_frames or 1
    header = _Header(ds, path, n_frames)
    instance = _value(ds, path, "InstanceNumber", _int)
    if n_frames == 1 and instance is None:
        raise FileError(
            "missing_tag",
            f"missing required DICOM tag InstanceNumber {tag_label('InstanceNumber')}",
            path,
        )
    geometry = [
        (
            header.vector(frame, "PlanePositionSequence", "ImagePositionPatient", 3),
            header.orientation(frame),
            header.vector(frame, "PixelMeasuresSequence", "PixelSpacing", 2),
            header.frame_value(frame, "PixelMeasuresSequence", "SliceThickness", float),
        )
        for frame in range(n_frames)
    ]
    uid = _value(ds, path, "SeriesInstanceUID", str)
    description = _value(ds, path, "SeriesDescription", str)
    bits, signed = _required(ds, path, "BitsStored"), _required(ds, path, "PixelRepresentation")
    if not 1 <= bits <= 64:
        raise FileError("header_fault", f"BitsStored {tag_label('BitsStored')} is {bits}, not 1 to 64", path)
    value_range = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)
    rescales = [header.rescale(frame, value_range) for frame in range(n_frames)]
    if not decode:
        _check_pixel_length(ds, path)
    return [
        Frame(
            path=path,
            frame=frame,
            n_frames=n_frames,
            file_instance=instance,
            position=position,
            orientation=orientation,
            spacing=spacing,
            thickness=thickness,
            shape=shape,
            series_uid=uid or None,
            description=description or None,
            transfer_syntax=syntax.name,
            rescale=rescales[frame],
            value_range=value_range,
            inverted=photometric == "MONOCHROME1",
            dataset=ds if decode else None,
        )
        for frame, (position, orientation, spacing, thickness) in enumerate(geometry)
    ]


def _value(holder: Dataset, path: Path, keyword: str, convert: Callable[[Any], T]) -> T | None:
    """The one place header values are parsed: `keyword` of `holder` through `convert`, None when absent
    or empty; a value that does not parse (a malformed DS/IS, a broken sequence) is a `header_fault`
    FileError naming the file and the tag."""
    tag = tag_number(keyword)
    try:
        element = holder.get_item(tag)
        if element is None:
            return None
        value = _raw_value(element)
        if value is None:
            value = holder[tag].value
        if value is None or (isinstance(value, str | bytes) and not value.strip()):
            return None
        return convert(value)
    except Exception as exc:  # pydicom and the conversions raise ValueError, TypeError, OverflowError...
        try:
            raw = holder.get_item(keyword).value
        except Exception:  # the raw bytes themselves cannot be fetched: report the fault without them
            raw = "?"
        raise FileError(
            "header_fault",
            f"malformed {keyword} {tag_label(keyword)} value {raw!r} ({type(exc).__name__}: {exc})",
            path,
        ) from exc


def _required(ds: Dataset, path: Path, keyword: str) -> int:
    """A required integer value: a `missing_tag` FileError when it has none (an empty or odd element)."""
    value = _value(ds, path, keyword, _int)
    if value is None:
        raise FileError("missing_tag", f"DICOM tag {keyword} {tag_label(keyword)} has no value", path)
    return value


def _raw_value(element: Any) -> float | int | str | list | bytes | None:
    """A DS / IS / UI / CS value still in its raw bytes, parsed directly (pydicom's conversions, with
    their validation, cost about as much as the RLE decoding of a slice): a number, an ASCII string or a
    list of numbers, b"" when empty; None for any other element (pydicom converts it: character sets,
    binary VRs). Malformed numbers raise ValueError."""
    if not isinstance(element, RawDataElement) or element.value is None:
        return None
    vr = element.VR or dictionary_VR(element.tag)
    if vr not in ("DS", "IS", "UI", "CS"):
        return None
    text = element.value.strip(b" \0")
    if not text:
        return b""
    if vr in ("UI", "CS"):
        return text.decode("ascii")
    parse = float if vr == "DS" else _integer
    values = [parse(part) for part in text.split(b"\\")]
    return values[0] if len(values) == 1 else values


def _integer(text: bytes) -> int:
    """An IS value: an integer, also when written as a whole decimal ('5.0'), as pydicom accepts it."""
    try:
        return _int(int(text))
    except ValueError:
        number = float(text)
        if not number.is_integer():
            raise ValueError(f"{text!r} is not an integer") from None
        return _int(int(number))


def _int(value: Any) -> int:
    """An integer header value (IS, US), within the signed 32-bit range of DICOM's IS."""
    number = int(value)
    if not -(2**31) <= number < 2**31:
        raise ValueError(f"{number} is outside the range of an integer string (IS)")
    return number


@functools.cache
def tag_number(keyword: str) -> BaseTag:
    """The tag of a keyword, as the BaseTag pydicom's lookups take without converting it again."""
    tag = tag_for_keyword(keyword)
    if tag is None:
        raise ValueError(f"{keyword!r} is not a DICOM keyword")
    return BaseTag(tag)


def tag_label(keyword: str) -> str:
    tag = tag_number(keyword)
    return f"({tag >> 16:04X},{tag & 0xFFFF:04X})"


def _check_decoder(ds: Dataset, path: Path) -> UID:
    """The file's transfer syntax, after checking that an installed pydicom plugin can decode it."""
    syntax = _value(ds.file_meta, path, "TransferSyntaxUID", lambda v: UID(str(v).strip("\0 ")))
    if syntax is None:
        raise FileError(
            "missing_tag",
            f"missing required DICOM tag TransferSyntaxUID {tag_label('TransferSyntaxUID')}",
            path,
        )
    if syntax.is_private or not syntax.is_transfer_syntax:  # a damaged value, not a missing plugin
        raise FileError(
            "header_fault",
            f"TransferSyntaxUID {tag_label('TransferSyntaxUID')} {str(syntax)[:64]!r} is not a DICOM "
            "transfer syntax",
            path,
        )
    try:
        decoder = get_decoder(syntax)
    except NotImplementedError:
        raise FileError(
            "no_decoder",
            f"pixel data uses transfer syntax {syntax.name} ({syntax}), which pydicom cannot decode; "
            "convert the file (e.g. dcmdjpeg / gdcmconv --raw)",
            path,
        ) from None
    if not decoder.is_available:
        raise FileError(
            "no_decoder",
            f"no installed plugin decodes transfer syntax {syntax.name} ({syntax}); install one of: "
            + "; ".join(decoder.missing_dependencies),
            path,
        )
    return syntax


def _check_size(path: Path, shape: tuple[int | None, int | None], n_frames: int | None) -> None:
    """Refuse image sizes no file can hold before anything is allocated for them: Rows or Columns below
    one or beyond MAX_PIXELS a frame, NumberOfFrames below one or more than the file has bytes for (every
    frame, compressed or not, takes at least an 8-byte item)."""
    rows, cols = shape
    if not (rows and cols and rows > 0 and cols > 0 and rows * cols <= MAX_PIXELS):
        raise FileError(
            "header_fault",
            f"Rows {tag_label('Rows')} x Columns {tag_label('Columns')} is {rows} x {cols}, not an image "
            f"size (1 to {MAX_PIXELS} pixels)",
            path,
        )
    size = path.stat().st_size
    if n_frames is not None and not 1 <= n_frames <= size // 8:
        raise FileError(
            "header_fault",
            f"NumberOfFrames {tag_label('NumberOfFrames')} is {n_frames}, which a file of {size} bytes "
            "cannot hold",
            path,
        )


def _check_pixel_length(ds: Dataset, path: Path) -> None:
    """Report pixel data that the (deferred-read) header says is longer than what is left in the file."""
    element = ds.get_item(_PIXEL_DATA, keep_deferred=True)
    if (
        isinstance(element, RawDataElement)
        and element.length != 0xFFFFFFFF
        and element.value_tell is not None
    ):
        size = path.stat().st_size
        if element.value_tell + element.length > size:
            raise FileError(
                "corrupt",
                f"truncated: PixelData {tag_label('PixelData')} needs {element.length} bytes from "
                f"byte {element.value_tell} but the file has {size} bytes",
                path,
            )


class _Header:
    """Per-frame header values of one file: functional groups (Enhanced MR) first, then the top level;
    every value parsed by _value."""

    def __init__(self, ds: Dataset, path: Path, n_frames: int) -> None:
        self.ds, self.path = ds, path
        per_frame = _value(ds, path, "PerFrameFunctionalGroupsSequence", list)
        if per_frame is not None and len(per_frame) != n_frames:
            raise FileError(
                "corrupt",
                f"PerFrameFunctionalGroupsSequence "
                f"{tag_label('PerFrameFunctionalGroupsSequence')} has {len(per_frame)} items for "
                f"NumberOfFrames {n_frames}",
                path,
            )
        shared = _value(ds, path, "SharedFunctionalGroupsSequence", list)
        self.groups = [
            ([per_frame[f]] if per_frame else []) + ([shared[0]] if shared else []) for f in range(n_frames)
        ]

    def holder(self, frame: int, sequence: str, keyword: str) -> Dataset | None:
        """The dataset holding `keyword` for `frame`: per-frame group, shared group, else top level."""
        if not self.groups[frame]:  # a single-frame file: the top level (_value finds absent values)
            return self.ds
        for group in self.groups[frame]:
            items = _value(group, self.path, sequence, list)
            if items and _present(items[0], keyword):
                return items[0]
        return self.ds if _present(self.ds, keyword) else None

    def frame_value(self, frame: int, sequence: str, keyword: str, convert: Callable[[Any], T]) -> T | None:
        holder = self.holder(frame, sequence, keyword)
        return None if holder is None else _value(holder, self.path, keyword, convert)

    def vector(self, frame: int, sequence: str, keyword: str, size: int) -> np.ndarray:
        """A numeric multi-value geometry tag of a frame as float64 (size,), NaN when absent."""

        def floats(value: Any) -> np.ndarray:
            values = [float(v) for v in value] if isinstance(value, list | tuple | MultiValue) else [value]
            if len(values) != size:
                raise ValueError(f"{len(values)} values, expected {size}")
            if not all(map(math.isfinite, values)):
                raise ValueError("not finite")
            return np.array(values, dtype=np.float64)

        value = self.frame_value(frame, sequence, keyword, floats)
        return np.full(size, np.nan) if value is None else value

    def orientation(self, frame: int) -> np.ndarray:
        """ImageOrientationPatient of a frame as unit row and column directions (2, 3), NaN when absent.

        Writers round the six direction cosines to a few decimals; normalising them here keeps the angle
        tests between slices (stacks) exact. Rows that are not directions (zero, or far from perpendicular)
        are a header fault.
        """
        directions = self.vector(frame, "PlaneOrientationSequence", "ImageOrientationPatient", 6)
        if math.isnan(directions[0]):  # vector() gives all six or NaN for all
            return directions.reshape(2, 3)
        row, col = directions[:3].tolist(), directions[3:].tolist()  # plain floats: 6 numbers, no numpy ops
        norms = (math.hypot(*row), math.hypot(*col))
        unit = [[v / n for v in axis] if n > 0 else axis for axis, n in zip((row, col), norms, strict=True)]
        if min(norms) < 0.5 or abs(sum(a * b for a, b in zip(*unit, strict=True))) > 0.1:
            raise FileError(
                "header_fault",
                f"ImageOrientationPatient {tag_label('ImageOrientationPatient')} "
                f"{np.round(directions, 4).tolist()} is not two perpendicular unit directions",
                self.path,
            )
        return np.array(unit, dtype=np.float64)

    def rescale(self, frame: int, value_range: tuple[int, int]) -> tuple[float, float]:
        """(RescaleSlope, RescaleIntercept) of a frame; (1, 0) when absent. A rescale that would take a
        stored value of `value_range` beyond float32 (or is not finite) is a header fault."""
        holder = self.holder(frame, "PixelValueTransformationSequence", "RescaleSlope") or self.ds
        slope = _value(holder, self.path, "RescaleSlope", float)
        intercept = _value(holder, self.path, "RescaleIntercept", float)
        slope, intercept = (1.0 if slope is None else slope, 0.0 if intercept is None else intercept)
        largest = max(map(abs, value_range)) * abs(slope) + abs(intercept)
        if not largest < FLOAT32_MAX:  # also NaN and inf
            raise FileError(
                "header_fault",
                f"RescaleSlope {tag_label('RescaleSlope')} {slope} and RescaleIntercept "
                f"{tag_label('RescaleIntercept')} {intercept} take stored values beyond float32",
                self.path,
            )
        return slope, intercept


def _present(holder: Dataset, keyword: str) -> bool:
    """Whether `keyword` is in `holder` with a non-empty value (without parsing the value: a deferred
    one, too long to have been read, counts as present and _value reports it if it does not parse)."""
    element = holder.get_item(tag_number(keyword), keep_deferred=True)
    if isinstance(element, RawDataElement) and element.value is None:
        return element.length > 0
    value = None if element is None else element.value
    return value is not None and not (isinstance(value, str | bytes) and not value.strip())
