"""Read a DICOM series folder into a volume with its patient geometry: the one place for DICOM quirks.

`read_series` decodes every slice (compressed transfer syntaxes through pydicom's pylibjpeg / pillow / RLE
plugins), applies the modality rescale, inverts MONOCHROME1, splits multi-frame (Enhanced MR) files into
frames with their own geometry, orders the slices along the slice normal and resamples odd-sized slices.
`scan_series` reads headers only (no pixel decoding) and reports what is wrong as Problems, for `inspect`.

Modules, one job each: `volume` (the Series data model and its geometry), `header` (file parsing and
header values), `decode` (pixel decoding), `arrange` (stacks, set-aside rules, order), `problems` (what
is reported), `read` (the entry points above).
"""

from spinegrade.data.series.problems import SET_ASIDE_KINDS, SeriesWarning
from spinegrade.data.series.read import SeriesInfo, read_series, read_usable_series, scan_series
from spinegrade.data.series.volume import Series, canonical_normal, map_point, slice_through_point

__all__ = [
    "SET_ASIDE_KINDS",
    "Series",
    "SeriesInfo",
    "SeriesWarning",
    "canonical_normal",
    "map_point",
    "read_series",
    "read_usable_series",
    "scan_series",
    "slice_through_point",
]
