"""Phantom -> DICOM -> read_series: label points map between the series of a study in patient space."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from spinegrade import read_series
from spinegrade.data.tables import load_rsna

# Mapping a point into another series and back is pure geometry; positions are stored as DICOM decimal
# strings (16 characters), so slice planes are parallel only to ~1e-6: allow 1e-4 pixel or slice.
ROUND_TRIP_TOL_PX = 1e-4
# The phantom's recess lies beside the canal; both label points sit at the same disc (mm).
SAME_DISC_TOL_MM = 8.0


def _series(data: Path, study_id: int, series_id: int):
    return read_series(data / "train_images" / str(study_id) / str(series_id))


def test_subarticular_points_map_from_axial_to_sagittal_and_back(tiny_phantom: Path) -> None:
    rsna = load_rsna(tiny_phantom, "train")
    coords = rsna.coordinates.merge(rsna.descriptions, on=["study_id", "series_id"])
    checked = 0
    for study_id, study in coords.groupby("study_id"):
        sagittal_id = int(study.loc[study.series_description == "Sagittal T2/STIR", "series_id"].iloc[0])
        axial_rows = study[study.condition.str.endswith("subarticular_stenosis")]
        canal_rows = study[study.condition == "spinal_canal_stenosis"].set_index("level")
        sagittal = _series(tiny_phantom, study_id, sagittal_id)
        for axial_id, rows in axial_rows.groupby("series_id"):
            axial = _series(tiny_phantom, study_id, axial_id)
            index = np.array([axial.index_of_instance(i) for i in rows.instance_number])
            points = axial.pixel_to_patient(index, rows.x.to_numpy(), rows.y.to_numpy())

            s, x, y = sagittal.patient_to_pixel(points)
            # Inside the sagittal volume: the slab covers both recesses and the image the whole spine.
            assert np.all((s >= 0) & (s <= len(sagittal) - 1))
            rows_px, cols_px = sagittal.pixels.shape[1:]
            assert np.all((x >= 0) & (x < cols_px) & (y >= 0) & (y < rows_px))
            # ... and back into the axial series, to the labelled slice and pixel.
            back = axial.patient_to_pixel(sagittal.pixel_to_patient(s, x, y))
            np.testing.assert_allclose(back[0], index, atol=ROUND_TRIP_TOL_PX)
            np.testing.assert_allclose(back[1], rows.x, atol=ROUND_TRIP_TOL_PX)
            np.testing.assert_allclose(back[2], rows.y, atol=ROUND_TRIP_TOL_PX)

            # Anatomy agrees across series: each recess point is at the disc of the canal point of its
            # level (superior-inferior, patient z) and on its own side (left = +x in LPS).
            for point, (_, row) in zip(points, rows.iterrows(), strict=True):
                canal = canal_rows.loc[row.level]
                canal_point = sagittal.pixel_to_patient(
                    sagittal.index_of_instance(int(canal.instance_number)), canal.x, canal.y
                )
                assert abs(point[2] - canal_point[2]) < SAME_DISC_TOL_MM
                side = 1 if row.condition.startswith("left") else -1
                assert side * (point[0] - canal_point[0]) > 2.0
                checked += 1
    assert checked >= 20  # 3 studies x 10 subarticular labels, minus the odd blank
