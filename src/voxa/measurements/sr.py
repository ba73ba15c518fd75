"""Stored measurements as a DICOM SR Measurement Report (PS3.16 TID 1500), built with highdicom.

One Comprehensive 3D SR per export, titled "Imaging Measurement Report" (DCM 126000),
procedure reported "Imaging procedure" (SCT 363679005), observer context a person: the user
(display name as PN, username as login name).  Each measurement is one group of the
Imaging Measurements container, tracked by its label (Tracking Identifier) and its stored
``tracking_uid`` (Tracking Unique Identifier):

* distance, angle, Cobb angle, probe — **TID 1501** Measurement Group; its one numeric
  measurement (TID 300) is INFERRED FROM the SCOORD it was drawn as (POLYLINE of 2 or 3
  points, two 2-point POLYLINEs for a Cobb angle, a POINT for a probe) on the source image
  (IMAGE, SELECTED FROM), or a SCOORD3D in the image's frame of reference when drawn in
  patient coordinates;
* polygon, rectangle / ellipse / freehand ROI, arrow, text — **TID 1410** Planar ROI group
  whose Image Region is a closed POLYLINE (first point repeated last: 2-D SCOORD has no
  POLYGON), an ELLIPSE, an open POLYLINE (arrow: tip, tail) or a POINT (text) on the source
  image, with Area, Perimeter, Mean, Standard Deviation, Minimum and Maximum where they apply;
* volume — **TID 1411** Volumetric ROI group: the outlined Image Regions (one closed
  POLYLINE per slice) or the Referenced Segment of a DICOM SEG, with its Volume.

Concepts and units: Length SCT 410668003 (mm), Angle SCT 1483009 (deg), Cobb angle SCT
285285000 (deg), Area SCT 42798000 (mm2), Perimeter SCT 131191004 (mm), Mean SCT 373098007,
Standard Deviation SCT 386136009, Minimum SCT 255605001, Maximum SCT 56851009 (``[hnsf'U]``
for CT, else ``1``), Attenuation Coefficient DCM 112031 (``[hnsf'U]``; a CT probe; other
modalities' probes are a Mean), Volume SCT 118565006 (ml).
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

import highdicom as hd
import numpy as np
from pydicom import dcmwrite
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code
from pydicom.uid import generate_uid

from voxa.dicom.evidence import with_patient_attributes
from voxa.measurements import (
    UNIT_DEG,
    UNIT_HU,
    UNIT_ML,
    UNIT_MM,
    UNIT_MM2,
    UNIT_NONE,
    MeasurementKind,
)
from voxa.measurements.geometry import ellipse_axes, frame_count, rectangle_corners
from voxa.measurements.store import StoredMeasurement

MANUFACTURER = "Voxa"
SERIES_NUMBER = 901
SERIES_DESCRIPTION = "Measurements"

UNITS: dict[str, Code] = {
    UNIT_MM: codes.UCUM.Millimeter,
    UNIT_MM2: codes.UCUM.SquareMillimeter,
    UNIT_DEG: codes.UCUM.Degree,
    UNIT_ML: Code("ml", "UCUM", "milliliter"),
    UNIT_HU: codes.UCUM.HounsfieldUnit,
    UNIT_NONE: codes.UCUM.NoUnits,
}
CONCEPTS: dict[str, Code] = {
    "length": codes.SCT.Length,
    "area": codes.SCT.Area,
    "perimeter": codes.SCT.Perimeter,
    "mean": codes.SCT.Mean,
    "sd": codes.SCT.StandardDeviation,
    "min": codes.SCT.Minimum,
    "max": codes.SCT.Maximum,
    "volume": codes.SCT.Volume,
}
_ROI_ORDER = ("area", "perimeter", "mean", "sd", "min", "max")
_LINEAR = frozenset({MeasurementKind.DISTANCE, MeasurementKind.ANGLE, MeasurementKind.COBB_ANGLE,
                     MeasurementKind.PROBE})


class ReportError(ValueError):
    """The measurements cannot be written as a report; the message says why."""


def observer_name(username: str, display_name: str = "") -> str:
    """A DICOM PN for the observer: the display name ("Given Family" becomes "Family^Given"),
    else the username as family name."""
    name = " ".join(display_name.split())
    if "^" in name:
        return name[:64]
    if name:
        given, _, family = name.rpartition(" ")
        return f"{family}^{given}"[:64] if given else f"{family}^"[:64]
    return f"{username}^"[:64]


def _concept(name: str, kind: MeasurementKind, unit: str) -> Code:
    if name == "angle":
        return codes.SCT.CobbAngle if kind is MeasurementKind.COBB_ANGLE else codes.SCT.Angle
    if name == "value":  # probe
        return codes.DCM.AttenuationCoefficient if unit == UNIT_HU else codes.SCT.Mean
    return CONCEPTS[name]


def _unit(unit: str) -> Code:
    try:
        return UNITS[unit]
    except KeyError:
        raise ReportError(f"unit {unit!r} has no UCUM code here") from None


def _measurement(m: StoredMeasurement, kind: MeasurementKind, name: str, **kwargs: Any) -> hd.sr.Measurement:
    quantity = m.values[name]
    unit = str(quantity["unit"])
    return hd.sr.Measurement(name=_concept(name, kind, unit), value=float(quantity["value"]), unit=_unit(unit),
                             **kwargs)


class _Evidence:
    def __init__(self, datasets: Sequence[Dataset]):
        self.by_uid = {str(ds.SOPInstanceUID): ds for ds in datasets}

    def get(self, sop_instance_uid: str) -> Dataset:
        try:
            return self.by_uid[sop_instance_uid]
        except KeyError:
            raise ReportError(f"instance {sop_instance_uid} is referenced but not in the evidence") from None

    def source(self, cls: type[Any], sop_instance_uid: str, frame_number: int | None) -> Any:
        ds = self.get(sop_instance_uid)
        frames = [frame_number] if frame_number is not None and frame_count(ds) > 1 else None
        return cls(referenced_sop_class_uid=str(ds.SOPClassUID), referenced_sop_instance_uid=sop_instance_uid,
                   referenced_frame_numbers=frames)

    def frame_of_reference(self, sop_instance_uid: str) -> str:
        uid = str(self.get(sop_instance_uid).get("FrameOfReferenceUID", "") or "")
        if not uid:
            raise ReportError(f"instance {sop_instance_uid} has no Frame of Reference for patient coordinates")
        return uid


def _points(values: Any, dims: int) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float32)
    if arr.ndim != 2 or arr.shape[1] != dims:
        raise ReportError(f"graphic data must be points of {dims} coordinates")
    return arr


def _closed(points: np.ndarray) -> np.ndarray:
    return points if np.array_equal(points[0], points[-1]) else np.vstack([points, points[:1]])


def _tracking(m: StoredMeasurement, kind: MeasurementKind) -> hd.sr.TrackingIdentifier:
    label = " ".join(m.label.split()) or f"{kind.value.replace('_', ' ')} {m.id}"
    return hd.sr.TrackingIdentifier(uid=m.tracking_uid, identifier=label)


def _linear_group(m: StoredMeasurement, kind: MeasurementKind,
                  evidence: _Evidence) -> hd.sr.MeasurementsAndQualitativeEvaluations:
    """TID 1501: one numeric measurement inferred from the coordinates it was drawn with."""
    graphic = m.graphic
    if kind is MeasurementKind.PROBE:
        shapes = [("POINT", _points(graphic["points"], 2))]
    elif kind is MeasurementKind.COBB_ANGLE:
        key, dims = ("points", 2) if "points" in graphic else ("points_mm", 3)
        pts = _points(graphic[key], dims)
        shapes = [("POLYLINE", pts[:2]), ("POLYLINE", pts[2:])]
    else:
        key, dims = ("points", 2) if "points" in graphic else ("points_mm", 3)
        shapes = [("POLYLINE", _points(graphic[key], dims))]
    coordinates: list[Any] = []
    for graphic_type, pts in shapes:
        if pts.shape[1] == 2:
            coordinates.append(hd.sr.CoordinatesForMeasurement(
                graphic_type=graphic_type, graphic_data=pts,
                source_image=evidence.source(hd.sr.SourceImageForRegion, m.sop_instance_uid, m.frame_number)))
        else:
            coordinates.append(hd.sr.CoordinatesForMeasurement3D(
                graphic_type=graphic_type, graphic_data=pts,
                frame_of_reference_uid=evidence.frame_of_reference(m.sop_instance_uid)))
    name = {MeasurementKind.DISTANCE: "length", MeasurementKind.PROBE: "value"}.get(kind, "angle")
    measurement = _measurement(m, kind, name, referenced_coordinates=coordinates)
    return hd.sr.MeasurementsAndQualitativeEvaluations(tracking_identifier=_tracking(m, kind),
                                                       measurements=[measurement])


def _planar_group(m: StoredMeasurement, kind: MeasurementKind,
                  evidence: _Evidence) -> hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations:
    """TID 1410: the region as drawn and the measurements of it."""
    graphic = m.graphic
    region: Any
    if "points" not in graphic:  # an arrow or a text drawn in patient coordinates
        pts3 = _points(graphic["points_mm"], 3)
        region = hd.sr.ImageRegion3D(graphic_type="POINT" if kind is MeasurementKind.TEXT else "POLYLINE",
                                     graphic_data=pts3,
                                     frame_of_reference_uid=evidence.frame_of_reference(m.sop_instance_uid))
    else:
        pts = _points(graphic["points"], 2)
        if kind is MeasurementKind.RECTANGLE_ROI:
            graphic_type, data = "POLYLINE", _closed(rectangle_corners(pts[0], pts[1]).astype(np.float32))
        elif kind is MeasurementKind.ELLIPSE_ROI:
            graphic_type, data = "ELLIPSE", ellipse_axes(pts).astype(np.float32)
        elif kind in (MeasurementKind.FREEHAND_ROI, MeasurementKind.POLYGON):
            graphic_type, data = "POLYLINE", _closed(pts)
        elif kind is MeasurementKind.ARROW:
            graphic_type, data = "POLYLINE", pts
        else:  # text
            graphic_type, data = "POINT", pts
        region = hd.sr.ImageRegion(
            graphic_type=graphic_type, graphic_data=data,
            source_image=evidence.source(hd.sr.SourceImageForRegion, m.sop_instance_uid, m.frame_number))
    measurements = [_measurement(m, kind, name) for name in _ROI_ORDER if name in m.values]
    return hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=_tracking(m, kind), referenced_region=region, measurements=measurements or None)


def _volume_group(m: StoredMeasurement,
                  evidence: _Evidence) -> hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations:
    """TID 1411: the outlines (or the segment) and the volume they enclose."""
    kind = MeasurementKind.VOLUME
    measurement = _measurement(m, kind, "volume")
    segment = m.graphic.get("segment")
    if segment is not None:
        seg = evidence.get(str(segment["sop_instance_uid"]))
        source_series = [str(item.SeriesInstanceUID) for item in seg.get("ReferencedSeriesSequence", [])]
        if not source_series:
            raise ReportError("the segmentation names no source series (Referenced Series Sequence)")
        reference = hd.sr.ReferencedSegment(
            sop_class_uid=str(seg.SOPClassUID), sop_instance_uid=str(seg.SOPInstanceUID),
            segment_number=int(segment["segment_number"]),
            source_series=hd.sr.SourceSeriesForSegmentation(source_series[0]))
        return hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
            tracking_identifier=_tracking(m, kind), referenced_segment=reference, measurements=[measurement])
    regions = [
        hd.sr.ImageRegion(
            graphic_type="POLYLINE", graphic_data=_closed(_points(contour["points"], 2)),
            source_image=evidence.source(hd.sr.SourceImageForRegion, str(contour["sop_instance_uid"]),
                                         contour.get("frame_number")))
        for contour in m.graphic.get("contours", [])
    ]
    if not regions:
        raise ReportError(f"volume measurement {m.id} has neither contours nor a segment")
    return hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=_tracking(m, kind), referenced_regions=regions, measurements=[measurement])


def measurement_group(m: StoredMeasurement, evidence: Sequence[Dataset]) -> Any:
    """The TID 1501 / 1410 / 1411 group of one stored measurement."""
    return _group(m, _Evidence(evidence))


def _group(m: StoredMeasurement, evidence: _Evidence) -> Any:
    try:
        kind = MeasurementKind(m.kind)
    except ValueError:
        raise ReportError(f"measurement {m.id} has an unknown kind {m.kind!r}") from None
    if kind is MeasurementKind.VOLUME:
        return _volume_group(m, evidence)
    if kind in _LINEAR:
        return _linear_group(m, kind, evidence)
    return _planar_group(m, kind, evidence)


def build_measurement_report(
    measurements: Sequence[StoredMeasurement],
    *,
    evidence: Sequence[Dataset],
    username: str,
    display_name: str = "",
    series_instance_uid: str | None = None,
    sop_instance_uid: str | None = None,
    series_number: int = SERIES_NUMBER,
    instance_number: int = 1,
    institution_name: str | None = None,
) -> Dataset:
    """A Comprehensive 3D SR holding a TID 1500 Measurement Report of ``measurements``.

    ``evidence`` are the datasets (headers suffice) of every instance the measurements
    reference, all of one study; the SR joins that study and copies its patient.  Raises
    :class:`ReportError` when there is nothing to report or a reference is missing."""
    if not measurements:
        raise ReportError("no measurements to report")
    if not evidence:
        raise ReportError("no evidence: the referenced images are needed")
    studies = {str(ds.StudyInstanceUID) for ds in evidence}
    if len(studies) != 1:
        raise ReportError(f"the evidence spans {len(studies)} studies; a report covers one")
    index = _Evidence(evidence)
    groups = [_group(m, index) for m in measurements]
    observer = hd.sr.ObserverContext(
        observer_type=codes.DCM.Person,
        observer_identifying_attributes=hd.sr.PersonObserverIdentifyingAttributes(
            name=observer_name(username, display_name), login_name=username))
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_person_context=observer),
        procedure_reported=codes.SCT.ImagingProcedure,
        imaging_measurements=groups,
        title=codes.DCM.ImagingMeasurementReport,
    )
    sr = hd.sr.Comprehensive3DSR(
        evidence=with_patient_attributes(evidence),
        content=report[0],
        series_instance_uid=series_instance_uid or generate_uid(),
        series_number=series_number,
        sop_instance_uid=sop_instance_uid or generate_uid(),
        instance_number=instance_number,
        manufacturer=MANUFACTURER,
        institution_name=institution_name,
        is_complete=True,
    )
    sr.SeriesDescription = SERIES_DESCRIPTION
    return sr


def sr_to_bytes(sr: Dataset) -> bytes:
    """The SR as a Part-10 file."""
    buf = io.BytesIO()
    dcmwrite(buf, sr, enforce_file_format=True)
    return buf.getvalue()
