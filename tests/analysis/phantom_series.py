"""Calcium phantoms (voxa.testing.phantoms) stored as DICOM CT series, for the analysis tool tests.

Slice ``k`` of the phantom becomes instance ``k + 1`` at ImagePositionPatient ``(x0, y0, k x
increment)`` with axial orientation, the phantom's pixel spacing and thickness, KVP, and the HU
stored as ``HU + 1024`` with Rescale Intercept -1024 (the phantom's HU are whole numbers, so the
stored series holds exactly the phantom's values).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from pydicom.dataset import Dataset
from pydicom.valuerep import format_number_as_ds

from voxa.analysis.calcium import Artery
from voxa.imaging.volume import Volume
from voxa.testing.phantoms import CalciumPhantom, CylinderLesion, calcium_phantom
from voxa.testing.synthetic import dataset_to_bytes, make_instance

ORIGIN_MM = (-40.0, -30.0, 0.0)  # patient position of the centre of voxel (0, 0, 0)


def quadrant_phantom(*, z_extent_mm: float = 24.0, fov_mm: float = 64.0, slice_mm: float = 3.0,
                     mass_calibration: float | None = None) -> CalciumPhantom:
    """Three calcified cylinders where the position rule of ``suggest_artery`` puts them: the
    patient's right half (RCA), left-anterior (LAD) and left-posterior (LCX), of 3 different
    density weights; a 128x128 image at 0.5 mm."""
    half = fov_mm / 2
    return calcium_phantom(
        [
            CylinderLesion((9.0, half - 12.0, half - 14.0), 2.5, 6.0, 450.0),  # col < centre: RCA
            CylinderLesion((12.0, half - 12.0, half + 13.0), 2.0, 9.0, 250.0),  # anterior-left: LAD
            CylinderLesion((15.0, half + 12.0, half + 12.0), 2.0, 6.0, 350.0),  # posterior-left: LCX
        ],
        field_of_view_mm=(fov_mm, fov_mm), z_extent_mm=z_extent_mm, pixel_spacing_mm=(0.5, 0.5),
        slice_thickness_mm=slice_mm, kvp=120.0, background_hu=40.0,
        mass_calibration_mg_per_ml_per_hu=mass_calibration,
    )


EXPECTED_ARTERIES = (Artery.RCA, Artery.LAD, Artery.LCX)


def phantom_series(phantom: CalciumPhantom | np.ndarray, *, study_uid: str, series_uid: str,
                   patient_id: str = "CAC-PHANTOM", pixel_spacing_mm: Sequence[float] = (0.5, 0.5),
                   slice_increment_mm: float = 3.0, kvp: float | None = 120.0, order: str = "reversed",
                   ) -> list[Dataset]:
    """The phantom's slices as CT instances (returned in ``order``: storage order must not matter)."""
    if isinstance(phantom, CalciumPhantom):
        hu = phantom.hu
        pixel_spacing_mm = phantom.pixel_spacing_mm
        slice_increment_mm = phantom.slice_increment_mm
        thickness = phantom.slice_thickness_mm
    else:
        hu = phantom
        thickness = slice_increment_mm
    nz, rows, cols = hu.shape
    out = []
    for k in range(nz):
        extra: dict[str, Any] = {"KVP": f"{kvp:g}"} if kvp is not None else {}
        ds = make_instance(
            patient_id=patient_id, patient_name="Phantom^Calcium", study_instance_uid=study_uid,
            series_instance_uid=series_uid, sop_instance_uid=f"{series_uid}.{k + 1}", modality="CT", rows=rows,
            columns=cols, instance_number=k + 1, series_number=3, study_description="CARDIAC CALCIUM SCORE",
            series_description="Calcium score 3.0 mm", patient_sex="F",
            PixelSpacing=[f"{pixel_spacing_mm[0]:g}", f"{pixel_spacing_mm[1]:g}"],
            SliceThickness=f"{thickness:g}",
            ImagePositionPatient=[f"{ORIGIN_MM[0]:g}", f"{ORIGIN_MM[1]:g}",
                                  f"{ORIGIN_MM[2] + k * slice_increment_mm:g}"],
            **extra,
        )
        if kvp is None and "KVP" in ds:
            del ds.KVP
        stored = np.rint(hu[k] + 1024.0).astype(np.int16)
        ds.PixelData = stored.astype("<i2").tobytes()
        out.append(ds)
    return out[::-1] if order == "reversed" else out


def ingest_series(archive: object, datasets: Sequence[Dataset]) -> None:
    for ds in datasets:
        result = archive.ingest(dataset_to_bytes(ds), source="test")  # type: ignore[attr-defined]
        assert result.ok, result.reason


def _ds(value: float) -> str:
    return format_number_as_ds(float(value))


def volume_series(volume: Volume, *, study_uid: str, series_uid: str, uid_prefix: str | None = None,
                  patient_id: str = "VOL-PHANTOM", **attributes: Any) -> list[Dataset]:
    """A :class:`Volume` in HU (rounded to whole HU) as CT instances with its exact geometry;
    ``attributes`` are set on every instance (e.g. NominalPercentageOfCardiacPhase)."""
    prefix = uid_prefix or series_uid
    sz, sy, sx = volume.spacing_mm
    direction = np.asarray(volume.direction)
    orientation = [_ds(x) for x in (*direction[0], *direction[1])]
    out = []
    for k in range(volume.shape[0]):
        position = volume.index_to_patient([k, 0, 0])
        ds = make_instance(
            patient_id=patient_id, patient_name="Phantom^Volume", study_instance_uid=study_uid,
            series_instance_uid=series_uid, sop_instance_uid=f"{prefix}.{k + 1}", modality="CT",
            rows=volume.shape[1], columns=volume.shape[2], instance_number=k + 1, series_number=4,
            PixelSpacing=[_ds(sy), _ds(sx)], SliceThickness=_ds(sz),
            ImagePositionPatient=[_ds(x) for x in position], ImageOrientationPatient=orientation, **attributes)
        stored = np.rint(np.asarray(volume.voxels[k], dtype=np.float64) + 1024.0).astype(np.int16)
        ds.PixelData = stored.astype("<i2").tobytes()
        out.append(ds)
    return out
