"""Seeded mutations of real DICOM files and of the CSVs, and the invariant every stage must keep on them
(issue 23): shared by tests/test_fuzz.py (a few hundred, part of `make test`) and bench/fuzz.py (thousands).

A mutation is (kind, seed): `mutate(data, kind, seed)` replays it exactly. The files are walked as raw
explicit-VR little-endian elements (as the RSNA files are written), so a mutation can break what pydicom
would refuse to write: shuffled or deleted elements, wrong VRs, lengths that do not match.
"""

from __future__ import annotations

import io
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

_LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}
_UNDEFINED = 0xFFFFFFFF
# Tags the image-format mutations edit (all US in the RSNA files).
_US_TAGS = {
    "Rows": 0x00280010,
    "Columns": 0x00280011,
    "SamplesPerPixel": 0x00280002,
    "BitsAllocated": 0x00280100,
    "BitsStored": 0x00280101,
    "HighBit": 0x00280102,
    "PixelRepresentation": 0x00280103,
}
_TEXT_TAGS = {  # DS / IS / CS values that the reader parses
    "InstanceNumber": 0x00200013,
    "ImagePositionPatient": 0x00200032,
    "ImageOrientationPatient": 0x00200037,
    "PixelSpacing": 0x00280030,
    "SliceThickness": 0x00180050,
    "RescaleSlope": 0x00281053,
    "RescaleIntercept": 0x00281052,
    "PhotometricInterpretation": 0x00280004,
    "SeriesInstanceUID": 0x0020000E,
}
_ODD_TEXT = [
    b"",
    b" ",
    b"nan",
    b"inf",
    b"-inf",
    b"1e999",
    b"-0",
    b"abc",
    b"1\\2",
    b"1\\2\\3\\4\\5\\6\\7",
    b"\xff\xfe",
]
_ODD_TEXT += [
    b"0\\0\\0\\0\\0\\0",
    b"1\\0\\0\\1\\0\\0",
    b"0",
    b"-1",
    b"1e-30",
    b"MONOCHROME1",
    b"RGB",
    b"9" * 40,
]
_ODD_US = [0, 1, 2, 3, 7, 8, 12, 15, 17, 24, 31, 32, 33, 64, 255, 256, 4096, 32767, 65535]


@dataclass(frozen=True)
class Element:
    """One top-level element of a file: where its bytes are, its tag and VR, where its value starts."""

    start: int
    end: int
    tag: int
    vr: bytes
    value_at: int


def elements(data: bytes) -> tuple[list[Element], int]:
    """The elements after the 128-byte preamble and 'DICM' up to the first of undefined length (the
    encapsulated pixel data, or a sequence), and where that tail starts."""
    at, found = 132, []
    while at + 8 <= len(data):
        group, number = struct.unpack_from("<HH", data, at)
        vr = data[at + 4 : at + 6]
        if vr in _LONG_VRS:
            if at + 12 > len(data):
                break
            (length,) = struct.unpack_from("<I", data, at + 8)
            value_at = at + 12
        else:
            (length,) = struct.unpack_from("<H", data, at + 6)
            value_at = at + 8
        if length == _UNDEFINED or value_at + length > len(data):
            break
        found.append(Element(at, value_at + length, (group << 16) | number, vr, value_at))
        at = value_at + length
    return found, at


def pixel_start(data: bytes) -> int:
    """Where the pixel data's value starts (the tail after the last element of defined length)."""
    _, tail = elements(data)
    return min(tail + 12, len(data))


def _encode(element: Element, value: bytes, vr: bytes | None = None) -> bytes:
    """The element's bytes with a new value (and VR), its length field rewritten to match."""
    vr = vr or element.vr
    tag = struct.pack("<HH", element.tag >> 16, element.tag & 0xFFFF)
    if vr in _LONG_VRS:
        return tag + vr + b"\0\0" + struct.pack("<I", len(value)) + value
    return tag + vr + struct.pack("<H", len(value) & 0xFFFF) + value


def set_value(data: bytes, tag: int, value: bytes) -> bytes:
    """The file with element `tag`'s value replaced by `value` (its length field rewritten), as written."""
    element = _find(data, tag)
    if element is None:
        raise KeyError(f"no element {tag:08X} of defined length in the file")
    return _replace(data, element, _encode(element, value + b" " * (len(value) % 2)))


def _replace(data: bytes, element: Element, new: bytes) -> bytes:
    return data[: element.start] + new + data[element.end :]


def _find(data: bytes, tag: int) -> Element | None:
    return next((e for e in elements(data)[0] if e.tag == tag), None)


def _bit_flips(data: bytes, rng: np.random.Generator, low: int, high: int) -> bytes:
    out = bytearray(data)
    for _ in range(int(rng.integers(1, 9))):
        at = int(rng.integers(low, max(low + 1, high)))
        if at < len(out):
            out[at] ^= 1 << int(rng.integers(0, 8))
    return bytes(out)


def _byte_run(data: bytes, rng: np.random.Generator, low: int, high: int, longest: int) -> bytes:
    out = bytearray(data)
    size = int(rng.integers(1, longest + 1))
    at = int(rng.integers(low, max(low + 1, high)))
    out[at : at + size] = rng.integers(0, 256, size, dtype=np.uint8).tobytes()
    return bytes(out[: len(data)]) if at < len(data) else data


def header_bit_flips(data: bytes, rng: np.random.Generator) -> bytes:
    return _bit_flips(data, rng, 132, pixel_start(data))


def header_byte_run(data: bytes, rng: np.random.Generator) -> bytes:
    return _byte_run(data, rng, 132, pixel_start(data), 64)


def pixel_bit_flips(data: bytes, rng: np.random.Generator) -> bytes:
    return _bit_flips(data, rng, pixel_start(data), len(data))


def pixel_byte_run(data: bytes, rng: np.random.Generator) -> bytes:
    return _byte_run(data, rng, pixel_start(data), len(data), 400)


def planted_pixel_run(data: bytes, rng: np.random.Generator) -> bytes:
    """200 random bytes in the middle of the pixel data, as issue 23 planted them (pylibjpeg-rle panics)."""
    start = pixel_start(data)
    middle = start + (len(data) - start) // 2
    out = bytearray(data)
    out[middle : middle + 200] = rng.integers(0, 256, 200, dtype=np.uint8).tobytes()
    return bytes(out[: len(data)])


def truncation(data: bytes, rng: np.random.Generator) -> bytes:
    return data[: int(rng.integers(0, len(data)))]


def deleted_element(data: bytes, rng: np.random.Generator) -> bytes:
    found, _ = elements(data)
    return _replace(data, found[int(rng.integers(len(found)))], b"")


def shuffled_elements(data: bytes, rng: np.random.Generator) -> bytes:
    """Two elements of the dataset (not the file meta) swapped: tags out of ascending order."""
    found = [e for e in elements(data)[0] if e.tag >> 16 != 0x0002]
    i, j = sorted(rng.choice(len(found), 2, replace=False))
    a, b = found[i], found[j]
    return (
        data[: a.start]
        + data[b.start : b.end]
        + data[a.end : b.start]
        + data[a.start : a.end]
        + data[b.end :]
    )


def wrong_vr(data: bytes, rng: np.random.Generator) -> bytes:
    found = elements(data)[0]
    element = found[int(rng.integers(len(found)))]
    vr = [b"US", b"UL", b"SS", b"DS", b"IS", b"CS", b"UI", b"SQ", b"OB", b"FD", b"AT", b"XX"][
        rng.integers(12)
    ]
    value = data[element.value_at : element.end]
    return _replace(data, element, _encode(element, value, vr))


def image_size(data: bytes, rng: np.random.Generator) -> bytes:
    """Rows or Columns zero, one or huge, or a NumberOfFrames (absent in the RSNA files) added."""
    if rng.random() < 0.3:
        frames = [b"0", b"2", b"-1", b"1000000", b"99999999999", b"", b"x"][rng.integers(7)]
        element = _find(data, _US_TAGS["PixelRepresentation"]) or elements(data)[0][-1]
        extra = struct.pack("<HH", 0x0028, 0x0008) + b"IS" + struct.pack("<H", len(frames)) + frames
        return data[: element.end] + extra + data[element.end :]
    element = _find(data, _US_TAGS["Rows" if rng.random() < 0.5 else "Columns"])
    value = struct.pack("<H", [0, 1, 2, 65535, 1024, 4096][rng.integers(6)])
    return _replace(data, element, _encode(element, value)) if element else data


def pixel_format(data: bytes, rng: np.random.Generator) -> bytes:
    """Odd BitsAllocated / BitsStored / HighBit / PixelRepresentation / SamplesPerPixel."""
    keyword = ["BitsAllocated", "BitsStored", "HighBit", "PixelRepresentation", "SamplesPerPixel"][
        rng.integers(5)
    ]
    element = _find(data, _US_TAGS[keyword])
    value = struct.pack("<H", _ODD_US[rng.integers(len(_ODD_US))])
    return _replace(data, element, _encode(element, value)) if element else data


def pixel_length(data: bytes, rng: np.random.Generator) -> bytes:
    """Pixel data that does not match its header: a fragment cut or padded, a fragment length that lies,
    or the encapsulated data replaced by native data of the wrong length."""
    start = pixel_start(data)
    choice = rng.integers(4)
    if choice == 0:  # cut inside the pixel data (the item lengths now overrun the file)
        return data[: int(rng.integers(start, len(data)))]
    if choice == 1:  # bytes appended after the sequence delimiter
        return data + rng.integers(0, 256, int(rng.integers(1, 5000)), dtype=np.uint8).tobytes()
    if choice == 2:  # an item length field (basic offset table or first fragment) rewritten
        offsets = [start + 4, start]
        at = offsets[rng.integers(2)]
        lengths = [0, 1, 7, 0xFFFF, 0x7FFFFFFF, _UNDEFINED, int(rng.integers(0, len(data)))]
        return data[:at] + struct.pack("<I", lengths[rng.integers(len(lengths))]) + data[at + 4 :]
    # native (uncompressed) pixel data of the wrong length, the transfer syntax made Explicit VR LE
    native = rng.integers(0, 256, int(rng.integers(0, 600_000)), dtype=np.uint8).tobytes()
    head = data[: start - 12]
    meta = _find(head, 0x00020010)
    if meta is not None:
        head = _replace(head, meta, _encode(meta, b"1.2.840.10008.1.2.1\0"))
    return head + struct.pack("<HH", 0x7FE0, 0x0010) + b"OW\0\0" + struct.pack("<I", len(native)) + native


def header_values(data: bytes, rng: np.random.Generator) -> bytes:
    """A parsed text value (position, orientation, spacing, rescale, instance...) made odd."""
    keyword = list(_TEXT_TAGS)[rng.integers(len(_TEXT_TAGS))]
    element = _find(data, _TEXT_TAGS[keyword])
    value = _ODD_TEXT[rng.integers(len(_ODD_TEXT))]
    value += b" " * (len(value) % 2)
    return _replace(data, element, _encode(element, value)) if element else data


MUTATIONS: dict[str, Callable[[bytes, np.random.Generator], bytes]] = {
    f.__name__: f
    for f in (
        header_bit_flips,
        header_byte_run,
        pixel_bit_flips,
        pixel_byte_run,
        planted_pixel_run,
        truncation,
        deleted_element,
        shuffled_elements,
        wrong_vr,
        image_size,
        pixel_format,
        pixel_length,
        header_values,
    )
}


def mutate(data: bytes, kind: str, seed: int) -> bytes:
    """Mutation `kind` of a file's bytes; the same (kind, seed) gives the same bytes."""
    return MUTATIONS[kind](data, np.random.default_rng(seed))


# ---------------------------------------------------------------------------------------------- the CSVs


def _csv_rows(text: str, rng: np.random.Generator) -> str:
    lines = text.splitlines()
    i = int(rng.integers(1, len(lines))) if len(lines) > 1 else 0
    choice = rng.integers(5)
    if choice == 0:  # a row deleted
        del lines[i]
    elif choice == 1:  # a row repeated
        lines.insert(i, lines[i])
    elif choice == 2:  # a cell emptied or made junk
        cells = lines[i].split(",")
        j = int(rng.integers(len(cells)))
        cells[j] = ["", "x", "-1", "1e99", "nan", '"', "Sagittal T9", " "][rng.integers(8)]
        lines[i] = ",".join(cells)
    elif choice == 3:  # a cell dropped or added
        cells = lines[i].split(",")
        lines[i] = ",".join(cells[:-1] if rng.random() < 0.5 else [*cells, "extra"])
    else:  # the header renamed
        lines[0] = lines[0].replace(lines[0].split(",")[int(rng.integers(len(lines[0].split(","))))], "col")
    return "\n".join(lines) + "\n"


def _csv_bytes(text: str, rng: np.random.Generator) -> bytes:
    data = text.encode()
    choice = rng.integers(4)
    if choice == 0:
        return data[: int(rng.integers(0, len(data) + 1))]
    if choice == 1:
        return b"\xef\xbb\xbf" + data  # a byte-order mark
    if choice == 2:
        return data.replace(b",", b";")
    return _byte_run(data, rng, 0, len(data), 16)


def mutate_csv(text: str, seed: int) -> bytes:
    """A seeded mutation of a CSV's text: rows deleted or repeated, cells junk, columns renamed, bytes."""
    rng = np.random.default_rng(seed)
    return _csv_rows(text, rng).encode() if rng.random() < 0.6 else _csv_bytes(text, rng)


# ------------------------------------------------------------------------------------------ the invariant


@dataclass(frozen=True)
class Outcome:
    """One mutation run through the stages: `why` is empty when the invariant held."""

    kind: str
    seed: int
    target: str  # the mutated file (study/series/name) or CSV
    why: str = ""

    @property
    def held(self) -> bool:
        return not self.why


def named(problems: list, file: Path) -> bool:
    """Whether a problem names `file` (by its path, or its name in the message)."""
    return any(
        p.file == str(file) or (p.file and Path(p.file).name == file.name) or file.name in p.message
        for p in problems
    )


class Workbench:
    """The real study laid out for fuzzing under `root`: two copies (UNTOUCHED and MUTATED study ids) in
    train_images and test_images (one folder, linked) with their CSVs and a sample submission; tiny
    untrained models; the clean baseline submission. Each mutation is written over one file of the
    MUTATED copy (or one CSV) and undone after its run."""

    UNTOUCHED, MUTATED = 4646740, 1000002

    def __init__(self, root: Path, real: Path, models: tuple[Path, Path]) -> None:
        import shutil

        from spinegrade.vocab import SEVERITIES, TARGETS, make_row_id

        self.root, self.run, self.locator = root, *models
        self.data = root / "data"
        images = self.data / "train_images"
        images.mkdir(parents=True)
        for study in (self.UNTOUCHED, self.MUTATED):
            shutil.copytree(real / "train_images" / "4646740", images / str(study))
        (self.data / "test_images").symlink_to(images.resolve(), target_is_directory=True)
        for name in ("train.csv", "train_label_coordinates.csv", "train_series_descriptions.csv"):
            table = pd.read_csv(real / name)
            both = pd.concat([table, table.assign(study_id=self.MUTATED)], ignore_index=True)
            both.to_csv(self.data / name, index=False)
        descriptions = pd.read_csv(self.data / "train_series_descriptions.csv")
        descriptions.to_csv(self.data / "test_series_descriptions.csv", index=False)
        rows = [make_row_id(s, c, lv) for s in (self.UNTOUCHED, self.MUTATED) for c, lv in TARGETS]
        sample = pd.DataFrame({"row_id": rows, **{s: 1 / 3 for s in SEVERITIES}})
        sample.to_csv(self.data / "sample_submission.csv", index=False)
        self.severities = list(SEVERITIES)
        self.baseline = self.predict()
        self.series = {f.name: f for f in sorted((images / str(self.MUTATED)).iterdir())}

    def files(self) -> list[Path]:
        """Every DICOM file of the MUTATED copy."""
        return [f for folder in self.series.values() for f in sorted(folder.iterdir())]

    def predict(self) -> pd.DataFrame:
        import warnings

        from spinegrade.prediction.predict import predict

        out = self.root / "out" / "submission.csv"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # priors for what the untrained locator misses
            self.summary = predict(self.data, [self.run], self.locator, out, progress=False)
        return pd.read_csv(out)

    # -------------------------------------------------------------------------------------- file mutations

    def reader_case(self, file: Path, kind: str, seed: int) -> Outcome:
        """The mutated file with two clean files of its series in a folder of their own: read_usable_series
        and scan_series raise nothing; every clean slice is read as without the fault; every file is read
        or named by a problem; pixels and geometry are finite; problems say study and series."""
        import shutil

        from spinegrade.data.series import read_usable_series, scan_series

        outcome = Outcome(kind, seed, f"{file.parent.name}/{file.name}")
        folder = self.root / "reader" / str(self.MUTATED) / file.parent.name
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        others = [f for f in sorted(file.parent.iterdir()) if f != file][:2]
        for other in others:
            (folder / other.name).write_bytes(other.read_bytes())
        clean = self._clean(others)
        mutated = folder / file.name
        mutated.write_bytes(mutate(file.read_bytes(), kind, seed))
        try:
            series, problems = read_usable_series(folder)
            scan_series(folder)
        except BaseException as exc:  # the invariant: nothing a file can cause gets out
            if isinstance(exc, KeyboardInterrupt):
                raise
            return _failed(outcome, f"raised {type(exc).__name__}: {exc}")
        return _failed(outcome, _reader_breach(folder, series, problems, clean, mutated))

    def _clean(self, files: list[Path]) -> dict[str, tuple[int, np.ndarray]]:
        """file name -> (instance number, pixels) of clean files as read_series reads their series."""
        import pydicom

        from spinegrade.data.series import read_series

        series = self.__dict__.setdefault("_clean_series", {})
        out = {}
        for file in files:
            if file.parent not in series:
                series[file.parent] = read_series(file.parent)
            instance = int(pydicom.dcmread(file, stop_before_pixels=True).InstanceNumber)
            read = series[file.parent]
            out[file.name] = (instance, read.pixels[read.index_of_instance(instance)])
        return out

    def pipeline_case(self, file: Path, kind: str, seed: int) -> Outcome:
        """The mutation over its file in the MUTATED copy, then inspect, prepare and predict: nothing but
        DataError gets out of inspect and prepare (and none for a file), predict writes a complete
        submission with valid probabilities, the UNTOUCHED study graded exactly as without the fault, and
        the fault named by file in the MUTATED study's problems unless the file was read."""
        outcome = Outcome(kind, seed, f"{file.parent.name}/{file.name}")
        original = file.read_bytes()
        file.write_bytes(mutate(original, kind, seed))
        try:
            return _failed(outcome, self._pipeline_breach(file))
        finally:
            file.write_bytes(original)

    def _pipeline_breach(self, file: Path | None) -> str:
        from spinegrade.crops.prepare import prepare
        from spinegrade.data.inspect import inspect_dataset
        from spinegrade.errors import DataError

        stage = "inspect"
        try:
            inspect_dataset(self.data, progress=False)
            stage = "prepare"
            prepare(self.data, self.root / "cache", n_folds=2, workers=1, overwrite=True, console=_quiet())
            stage = "predict"
            submission = self.predict()
        except DataError as exc:
            if file is not None:
                return f"{stage}: DataError for one file: {exc}"
            return "" if len(str(exc).splitlines()) == 1 else f"{stage}: DataError of several lines: {exc}"
        except BaseException as exc:
            if isinstance(exc, KeyboardInterrupt):
                raise
            return f"{stage} raised {type(exc).__name__}: {exc}"
        return self._submission_breach(submission, file)

    def _submission_breach(self, submission: pd.DataFrame, file: Path | None) -> str:
        sample = pd.read_csv(self.data / "sample_submission.csv")
        if list(submission["row_id"]) != list(sample["row_id"]):
            return f"submission rows differ from the sample's ({len(submission)} rows)"
        probs = submission[self.severities].to_numpy(np.float64)
        if not (np.isfinite(probs).all() and (probs >= 0).all() and np.allclose(probs.sum(1), 1, atol=1e-5)):
            return "submission probabilities are not valid"
        if file is None:
            return ""
        untouched = submission["row_id"].str.startswith(f"{self.UNTOUCHED}_")
        if not submission[untouched].equals(self.baseline[untouched]):
            return "the untouched study was graded differently"
        problems = [p for p in self.summary.problems if p.study_id == self.MUTATED]
        if not named(problems, file):
            from spinegrade.data.series import read_usable_series

            series, _ = read_usable_series(file.parent)
            if series is None or len(series) < len(list(file.parent.iterdir())):
                return "the fault is not named by file, and the file was not read"
        return ""

    # ---------------------------------------------------------------------------------------- CSV mutations

    def csv_case(self, name: str, seed: int) -> Outcome:
        """A mutated CSV: inspect, prepare and predict stop with a one-line DataError, or go on: predict
        writing every row of the sample with valid probabilities."""
        outcome = Outcome("csv", seed, name)
        path = self.data / name
        original = path.read_bytes()
        path.write_bytes(mutate_csv(original.decode(), seed))
        try:
            return _failed(outcome, self._pipeline_breach(None))
        finally:
            path.write_bytes(original)


def _reader_breach(
    folder: Path, series, problems: list, clean: dict[str, tuple[int, np.ndarray]], mutated: Path
) -> str:
    study_id, series_id = int(folder.parent.name), int(folder.name)
    for p in problems:
        if (p.study_id, p.series_id) != (study_id, series_id):
            return f"problem without its study and series ids: {p.message}"
        if not p.message.startswith(f"study {study_id} series {series_id}: "):
            return f"problem message does not start with its ids: {p.message}"
    unnamed = [f for f in folder.iterdir() if not named(problems, f)]
    if series is None:
        return "" if not unnamed or problems else "series dropped without a problem"
    if len(series) < len(unnamed):
        return f"{len(unnamed) - len(series)} file(s) neither read nor named by a problem"
    if not np.isfinite(series.pixels).all():
        return "non-finite pixels"
    for name, (instance, pixels) in clean.items():
        if named(problems, folder / name):
            continue
        hits = np.flatnonzero(series.instance_numbers == instance)
        if not any(np.array_equal(series.pixels[i], pixels) for i in hits):
            return f"clean file {name} (instance {instance}) not read as without the fault"
    return ""


def _failed(outcome: Outcome, why: str) -> Outcome:
    return outcome if not why else Outcome(outcome.kind, outcome.seed, outcome.target, why)


def _quiet():
    from rich.console import Console

    return Console(file=io.StringIO())
