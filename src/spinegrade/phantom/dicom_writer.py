"""Writing one phantom series as DICOM MR images: one RLE Lossless file per slice, as the Kaggle files.

Like those: 16 bits allocated and 12 stored, no Modality, no SeriesNumber and an empty SeriesDescription
(the series type is only in the CSVs); StudyInstanceUID and SeriesInstanceUID are the numeric study and
series ids and the PatientID is the study id. SOP instance UIDs come from `generate_uid` with fixed
entropy and RLE is lossless and deterministic, so the same seed writes the same bytes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID, ExplicitVRLittleEndian, MRImageStorage, RLELossless, generate_uid

from spinegrade.phantom.geometry import SeriesPlan


@dataclass(frozen=True)
class SeriesHeader:
    """What a series' files say about their study and series besides the geometry."""

    study_id: int
    series_id: int
    description: str  # SeriesDescription: empty as in the Kaggle files, unless asked for
    frame_of_reference_uid: str
    uid_entropy: str  # seeds the SOP instance UIDs (the phantom's seed and config)


def sop_instance_uid(header: SeriesHeader, instance_number: int) -> UID:
    """The deterministic, globally unique SOPInstanceUID of one slice."""
    return generate_uid(
        entropy_srcs=[header.uid_entropy, str(header.study_id), str(header.series_id), str(instance_number)]
    )


def write_series(
    folder: Path, plan: SeriesPlan, pixels: np.ndarray, bits_stored: int, header: SeriesHeader
) -> list[Path]:
    """Write `pixels` (n, rows, cols) uint16 as folder/<instance_number>.dcm; returns the paths written."""
    if pixels.dtype != np.uint16 or pixels.shape != (len(plan.positions), plan.rows, plan.cols):
        raise ValueError(
            f"pixels {pixels.dtype} {pixels.shape} do not match the plan's {len(plan.positions)} slices"
        )
    folder.mkdir(parents=True, exist_ok=True)
    # One dataset per series, updated slice by slice: building each from scratch costs twice the time.
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MRImageStorage
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "NONE"]
    ds.SOPClassUID = MRImageStorage
    ds.SeriesDescription = header.description
    ds.PatientID = str(header.study_id)
    ds.SliceThickness = plan.thickness
    ds.SpacingBetweenSlices = plan.spacing
    ds.StudyInstanceUID = str(header.study_id)
    ds.SeriesInstanceUID = str(header.series_id)
    ds.FrameOfReferenceUID = header.frame_of_reference_uid
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = plan.rows
    ds.Columns = plan.cols
    ds.PixelSpacing = [float(v) for v in plan.pixel_spacing]
    ds.BitsAllocated = 16
    ds.BitsStored = bits_stored
    ds.HighBit = bits_stored - 1
    ds.PixelRepresentation = 0
    paths = []
    for index, (orientation, position, frame) in enumerate(
        zip(plan.orientations, plan.positions, pixels, strict=True)
    ):
        number = index + 1
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID = sop_instance_uid(header, number)
        ds.InstanceNumber = number
        ds.ImageOrientationPatient = [float(v) for v in orientation.ravel()]
        ds.ImagePositionPatient = [float(v) for v in position]
        ds.compress(
            RLELossless, np.ascontiguousarray(frame), encoding_plugin="pylibjpeg", generate_instance_uid=False
        )
        path = folder / f"{number}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths
