"""Measurements and annotations made on images: computed on the server, stored per study and
user, exported as a DICOM SR Measurement Report (TID 1500).

* :mod:`voxa.measurements.geometry` — pure computations with explicit units (lengths, angles,
  areas, ROI statistics, volumes) and what each :class:`MeasurementKind` measures;
* :mod:`voxa.measurements.store` — the ``measurements`` table and its CRUD functions;
* :mod:`voxa.measurements.sr` — the highdicom TID 1500 Measurement Report of stored measurements.

See ``docs/measurements.md``.
"""

from __future__ import annotations

from enum import StrEnum


class MeasurementKind(StrEnum):
    """What a measurement is; the graphic data each kind takes is in ``docs/measurements.md``."""

    DISTANCE = "distance"  # 2 points: length (mm)
    ANGLE = "angle"  # 3 points (arm end, vertex, arm end): angle (deg)
    COBB_ANGLE = "cobb_angle"  # 4 points (line 1, line 2): angle between the lines (deg)
    POLYGON = "polygon"  # >= 3 points: area (mm2) and perimeter (mm)
    RECTANGLE_ROI = "rectangle_roi"  # 2 opposite corners: area, perimeter and pixel statistics
    ELLIPSE_ROI = "ellipse_roi"  # 4 axis end points (or 2 bounding-box corners): same
    FREEHAND_ROI = "freehand_roi"  # >= 3 points: same
    PROBE = "probe"  # 1 point: the pixel value there
    ARROW = "arrow"  # 2 points (tip, tail): no value
    TEXT = "text"  # 1 point (anchor) and a label: no value
    VOLUME = "volume"  # contours on parallel slices, or a segment of a DICOM SEG: volume (ml)


# Units, as UCUM codes (the form the SR writes them in).
UNIT_MM = "mm"
UNIT_MM2 = "mm2"
UNIT_DEG = "deg"
UNIT_ML = "ml"
UNIT_HU = "[hnsf'U]"
UNIT_NONE = "1"

__all__ = ["MeasurementKind", "UNIT_DEG", "UNIT_HU", "UNIT_ML", "UNIT_MM", "UNIT_MM2", "UNIT_NONE"]
