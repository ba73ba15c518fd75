"""Measurement geometry against analytic answers (voxa.measurements.geometry)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from pydicom.dataset import Dataset

from voxa.measurements import UNIT_HU, UNIT_NONE, MeasurementKind
from voxa.measurements.geometry import (
    FrameImage,
    MeasurementError,
    angle_deg,
    cobb_angle_deg,
    contour_volume_ml,
    distance_mm,
    ellipse_area_mm2,
    ellipse_axes,
    ellipse_mask,
    ellipse_perimeter_mm,
    frame_image,
    image_distance_mm,
    image_to_patient_mm,
    mask_volume_ml,
    measure_image,
    measure_patient,
    perimeter_mm,
    polygon_area_mm2,
    polygon_mask,
    rectangle_mask,
    roi_stats,
)
from voxa.testing.synthetic import make_instance


def test_distance_3_4_5() -> None:
    assert distance_mm((0, 0, 0), (3, 4, 0)) == pytest.approx(5.0)
    assert distance_mm((1, 2, 3), (1 + 3, 2, 3 + 4)) == pytest.approx(5.0)
    # image points: 3 columns x 2 mm and 8 rows x 1 mm -> 6-8-10
    assert image_distance_mm((1, 1), (4, 9), (1.0, 2.0)) == pytest.approx(10.0)
    with pytest.raises(MeasurementError):
        distance_mm((0, 0), (1, 1, 1))


def test_image_to_patient_uses_pixel_centres_and_orientation() -> None:
    # Pixel centre (0.5, 0.5) is Image Position (Patient); columns go along +x, rows along -z
    # (a coronal image), with 0.5 mm between columns and 2 mm between rows.
    pts = image_to_patient_mm([(0.5, 0.5), (2.5, 3.5)], position_mm=(10, 20, 30),
                              orientation=(1, 0, 0, 0, 0, -1), pixel_spacing_mm=(2.0, 0.5))
    np.testing.assert_allclose(pts, [[10, 20, 30], [11, 20, 24]])
    assert distance_mm(pts[0], pts[1]) == pytest.approx(math.hypot(1, 6))


def test_angles() -> None:
    assert angle_deg((1, 0), (0, 0), (0, 1)) == pytest.approx(90.0)
    assert angle_deg((1, 0, 0), (0, 0, 0), (1, 1, 0)) == pytest.approx(45.0)
    assert angle_deg((1, 0), (0, 0), (-1, 0)) == pytest.approx(180.0)
    assert angle_deg((2, 0), (0, 0), (1, math.sqrt(3))) == pytest.approx(60.0)
    with pytest.raises(MeasurementError):
        angle_deg((0, 0), (0, 0), (1, 1))


def test_cobb_angle_of_known_lines() -> None:
    # End plates tilted +10 and -15 degrees from horizontal: Cobb angle 25 degrees.
    def line(deg: float, at: tuple[float, float]) -> list[tuple[float, float]]:
        r = math.radians(deg)
        return [at, (at[0] + 40 * math.cos(r), at[1] + 40 * math.sin(r))]

    assert cobb_angle_deg(line(10, (0, 0)), line(-15, (0, 100))) == pytest.approx(25.0)
    # direction in which each line was drawn does not matter; the angle is acute
    assert cobb_angle_deg(line(10, (0, 0))[::-1], line(-15, (0, 100))) == pytest.approx(25.0)
    assert cobb_angle_deg(line(0, (0, 0)), line(120, (0, 50))) == pytest.approx(60.0)
    assert cobb_angle_deg([(0, 0), (1, 0)], [(0, 5), (2, 5)]) == pytest.approx(0.0)


def test_polygon_area_and_perimeter_with_anisotropic_spacing() -> None:
    square = [(0, 0), (10, 0), (10, 10), (0, 10)]
    assert polygon_area_mm2(square, (1.0, 1.0)) == pytest.approx(100.0)
    assert perimeter_mm(square, (1.0, 1.0)) == pytest.approx(40.0)
    # rows 0.5 mm apart, columns 2 mm apart: a 20 x 5 mm rectangle
    assert polygon_area_mm2(square, (0.5, 2.0)) == pytest.approx(100.0)
    assert perimeter_mm(square, (0.5, 2.0)) == pytest.approx(50.0)
    triangle = [(0, 0), (4, 0), (0, 3)]
    assert polygon_area_mm2(triangle, (1.0, 1.0)) == pytest.approx(6.0)
    assert perimeter_mm(triangle, (1.0, 1.0)) == pytest.approx(12.0)
    assert perimeter_mm(triangle, (1.0, 1.0), closed=False) == pytest.approx(4.0 + 5.0)
    # clockwise or closed with a repeated vertex: the same
    assert polygon_area_mm2([*triangle[::-1], triangle[-1]], (1.0, 1.0)) == pytest.approx(6.0)
    # an L shape (concave): 3x1 + 1x2 = 5 squares of 3 x 2 mm
    ell = [(0, 0), (1, 0), (1, 2), (3, 2), (3, 3), (0, 3)]
    assert polygon_area_mm2(ell, (2.0, 3.0)) == pytest.approx(5 * 6.0)
    with pytest.raises(MeasurementError):
        polygon_area_mm2([(0, 0), (1, 1)], (1.0, 1.0))
    with pytest.raises(MeasurementError):
        polygon_area_mm2(square, (0.0, 1.0))


def test_ellipse_area_and_perimeter() -> None:
    axes = ellipse_axes([(0, 5), (20, 5), (10, 0), (10, 10)])  # semi-axes 10 and 5 pixels
    assert ellipse_area_mm2(axes, (1.0, 1.0)) == pytest.approx(math.pi * 50)
    # anisotropic, axis-aligned: semi-axes 10 x 0.5 = 5 mm and 5 x 2 = 10 mm
    assert ellipse_area_mm2(axes, (2.0, 0.5)) == pytest.approx(math.pi * 50)
    circle = ellipse_axes([(0, 0), (10, 10)])  # bounding-box corners of a circle of radius 5
    assert ellipse_area_mm2(circle, (1.0, 1.0)) == pytest.approx(math.pi * 25)
    assert ellipse_perimeter_mm(circle, (1.0, 1.0)) == pytest.approx(2 * math.pi * 5)
    # rotated 45 degrees: semi-axes 10 and 2.5 * sqrt(2) pixels
    r = 10 / math.sqrt(2)
    rotated = [(50 - r, 50 - r), (50 + r, 50 + r), (50 + 2.5, 50 - 2.5), (50 - 2.5, 50 + 2.5)]
    assert ellipse_area_mm2(ellipse_axes(rotated), (1.0, 1.0)) == pytest.approx(math.pi * 10 * 2.5 * math.sqrt(2))
    # Ramanujan against a numerical integration of a 10 x 3 ellipse
    t = np.linspace(0, 2 * math.pi, 200_001)
    numeric = float(np.sum(np.hypot(np.diff(10 * np.cos(t)), np.diff(3 * np.sin(t)))))
    flat = ellipse_axes([(0, 3), (20, 3), (10, 0), (10, 6)])
    assert ellipse_perimeter_mm(flat, (1.0, 1.0)) == pytest.approx(numeric, rel=1e-6)
    # the longer axis comes first, as a DICOM ELLIPSE wants
    np.testing.assert_allclose(ellipse_axes([(10, 0), (10, 6), (0, 3), (20, 3)]), flat)
    with pytest.raises(MeasurementError):
        ellipse_axes([(0, 0), (0, 0), (1, 1), (1, 1)])


def test_masks_select_pixel_centres() -> None:
    shape = (8, 10)
    rect = rectangle_mask((2, 1), (5, 4), shape)  # centres 2.5..4.5 x 1.5..3.5
    assert rect.sum() == 9 and rect[1:4, 2:5].all()
    poly = polygon_mask([(2, 1), (5, 1), (5, 4), (2, 4)], shape)
    np.testing.assert_array_equal(poly, rect)
    tri = polygon_mask([(0, 0), (8, 0), (0, 8)], (8, 8))
    # centres (c + .5, r + .5) with c + r + 1 < 8
    expected = np.add.outer(np.arange(8), np.arange(8)) + 1 < 8
    np.testing.assert_array_equal(tri, expected)
    circle = ellipse_mask(ellipse_axes([(0, 0), (8, 8)]), (8, 8))
    cc, rr = np.meshgrid(np.arange(8) + 0.5, np.arange(8) + 0.5)
    np.testing.assert_array_equal(circle, (cc - 4) ** 2 + (rr - 4) ** 2 <= 16)
    # a polygon reaching outside the image is clipped
    assert polygon_mask([(-5, -5), (50, -5), (50, 50), (-5, 50)], shape).all()


def test_roi_stats_of_a_known_array() -> None:
    pixels = np.arange(16, dtype=np.float64).reshape(4, 4) * 10 - 50  # -50 .. 100
    mask = np.zeros((4, 4), dtype=bool)
    mask[1:3, 1:3] = True  # 0, 10, 40, 50
    stats = roi_stats(pixels, mask, pixel_spacing_mm=(0.5, 2.0))
    assert stats.mean == pytest.approx(25.0)
    assert stats.sd == pytest.approx(math.sqrt((25**2 + 15**2 + 15**2 + 25**2) / 4))
    assert (stats.min, stats.max, stats.pixel_count) == (0.0, 50.0, 4)
    assert stats.area_mm2 == pytest.approx(4.0)
    assert roi_stats(pixels, mask).area_mm2 is None
    with pytest.raises(MeasurementError):
        roi_stats(pixels, np.zeros((4, 4), dtype=bool))
    with pytest.raises(MeasurementError):
        roi_stats(pixels, np.ones((3, 3), dtype=bool))


def test_volumes() -> None:
    mask = np.zeros((5, 10, 10), dtype=bool)
    mask[1:4, 2:7, 3:5] = True  # 3 x 5 x 2 = 30 voxels
    assert mask_volume_ml(mask, (2.0, 0.5, 0.5)) == pytest.approx(30 * 0.5 / 1000)
    # a 10 mm cube outlined on 5 slices 2 mm apart
    assert contour_volume_ml([100.0] * 5, 2.0) == pytest.approx(1.0)
    with pytest.raises(MeasurementError):
        mask_volume_ml(mask[0], (1, 1, 1))


def _frame(values: np.ndarray, spacing: tuple[float, float] | None = (0.5, 2.0)) -> FrameImage:
    return FrameImage(rows=values.shape[0], columns=values.shape[1], pixel_spacing_mm=spacing, position_mm=None,
                      orientation=None, frame_of_reference_uid="", value_unit=UNIT_HU, values=values)


def test_measure_image_per_kind() -> None:
    values = np.arange(100, dtype=np.float64).reshape(10, 10)
    image = _frame(values)
    length = measure_image(MeasurementKind.DISTANCE, [(1, 1), (4, 1)], image)["length"]
    assert (length.value, length.unit) == (pytest.approx(6.0), "mm")
    # angles see the pixels' aspect: 1 column (2 mm) against 4 rows (2 mm) is 45 degrees
    angle = measure_image(MeasurementKind.ANGLE, [(5, 1), (1, 1), (2, 5)], image)["angle"]
    assert angle.value == pytest.approx(45.0)
    roi = measure_image(MeasurementKind.RECTANGLE_ROI, [(0, 0), (2, 2)], image)
    assert roi["mean"].value == pytest.approx((0 + 1 + 10 + 11) / 4)
    assert (roi["min"].value, roi["max"].value, roi["mean"].unit) == (0.0, 11.0, UNIT_HU)
    assert roi["area"].value == pytest.approx(4.0) and roi["perimeter"].value == pytest.approx(10.0)
    probe = measure_image(MeasurementKind.PROBE, [(3.7, 2.2)], image)["value"]
    assert probe.value == 23.0
    assert measure_image(MeasurementKind.ARROW, [(1, 1), (5, 5)], image) == {}
    with pytest.raises(MeasurementError, match="outside"):
        measure_image(MeasurementKind.PROBE, [(30, 2)], image)
    with pytest.raises(MeasurementError, match="needs 2 points"):
        measure_image(MeasurementKind.DISTANCE, [(1, 1)], image)
    with pytest.raises(MeasurementError, match="pixel spacing"):
        measure_image(MeasurementKind.DISTANCE, [(1, 1), (2, 2)], _frame(values, None))
    assert measure_patient(MeasurementKind.DISTANCE, [(0, 0, 0), (3, 4, 0)])["length"].value == pytest.approx(5)
    with pytest.raises(MeasurementError):
        measure_patient(MeasurementKind.PROBE, [(0, 0, 0)])


def test_frame_image_reads_geometry_and_rescale() -> None:
    ct = make_instance(patient_id="P", patient_name="A^B", study_instance_uid="1.2.3", series_instance_uid="1.2.3.1",
                       sop_instance_uid="1.2.3.1.1", rows=8, PixelSpacing=["0.5", "0.75"])
    image = frame_image(ct, None, with_pixels=True)
    assert image.pixel_spacing_mm == (0.5, 0.75)
    assert image.value_unit == UNIT_HU and image.frame_of_reference_uid == str(ct.FrameOfReferenceUID)
    assert image.values is not None
    np.testing.assert_allclose(image.values, ct.pixel_array.astype(float) - 1024)
    sc = make_instance(patient_id="P", patient_name="A^B", study_instance_uid="1.2.3", series_instance_uid="1.2.3.2",
                       sop_instance_uid="1.2.3.2.1", modality="OT", rows=8)
    other = frame_image(sc, None, with_pixels=False)
    assert other.value_unit == UNIT_NONE and other.pixel_spacing_mm is None and other.values is None
    with pytest.raises(MeasurementError):
        frame_image(ct, 2, with_pixels=False)
    empty = Dataset()
    empty.Rows, empty.Columns, empty.NumberOfFrames = 4, 4, 3
    with pytest.raises(MeasurementError, match="frame_number is required"):
        frame_image(empty, None, with_pixels=False)
