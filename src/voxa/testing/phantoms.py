"""Digital phantoms with analytic ground truth, for testing the analysis engines.

Coordinates are in mm in the volume's own frame: the centre of pixel (row ``r``, column ``c``)
of slice ``k`` lies at ``z = (k + 0.5) x slice_increment_mm``, ``y = (r + 0.5) x row_mm``,
``x = (c + 0.5) x col_mm``. A voxel belongs to a lesion when its centre does (centre sampling;
no partial-volume blur), so voxelisation error is purely geometric and can be bounded (see
``docs/analysis-calcium.md`` and ``tests/analysis/test_calcium.py``).

:func:`calcium_phantom` builds cylinders (discs stacked along z) of known radius, height and
HU; :func:`square_calcium_phantom` builds rectangles aligned with the pixel grid, whose areas
are exact, to pin threshold and area edge cases.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from voxa.analysis.calcium import (
    DEFAULT_ARTERY_LABELS,
    REFERENCE_INCREMENT_MM,
    Artery,
    KvThresholds,
    thresholds_for_kvp,
)

_ARTERY_VALUES = {artery: value for value, artery in DEFAULT_ARTERY_LABELS.items()}


@dataclass(frozen=True)
class CylinderLesion:
    """A calcified cylinder, axis along z, uniform ``hu``; centre in mm in the volume frame."""

    centre_mm: tuple[float, float, float]  # (z, y, x)
    radius_mm: float
    height_mm: float
    hu: float
    artery: Artery | None = None


@dataclass(frozen=True)
class SquareLesion:
    """A pixel-aligned rectangle of ``rows x cols`` pixels on slices ``first_slice .. first_slice + n_slices - 1``.

    ``peak_hu``, when given, is written to the rectangle's first pixel, the rest getting ``hu``.
    """

    first_slice: int
    row: int
    col: int
    rows: int
    cols: int
    hu: float
    n_slices: int = 1
    peak_hu: float | None = None
    artery: Artery | None = None


@dataclass(frozen=True)
class LesionTruth:
    """Analytic ground truth of one lesion under the rules of :mod:`voxa.analysis.calcium`."""

    area_mm2: float  # cross-section on each image it crosses (pi r² for a cylinder)
    height_mm: float
    peak_hu: float
    weight: int
    agatston: float  # weight x area x height / 3 mm
    volume_mm3: float
    mass_mg: float | None
    artery: Artery | None
    radius_mm: float | None = None


@dataclass(frozen=True)
class CalciumPhantom:
    hu: NDArray[np.float64]  # (z, row, col)
    artery_labels: NDArray[np.int16] | None
    pixel_spacing_mm: tuple[float, float]
    slice_thickness_mm: float
    slice_increment_mm: float
    kvp: float
    mass_calibration_mg_per_ml_per_hu: float | None
    lesions: tuple[LesionTruth, ...]

    @property
    def agatston_total(self) -> float:
        return sum(lesion.agatston for lesion in self.lesions)

    @property
    def volume_mm3_total(self) -> float:
        return sum(lesion.volume_mm3 for lesion in self.lesions)

    @property
    def mass_mg_total(self) -> float | None:
        if self.mass_calibration_mg_per_ml_per_hu is None:
            return None
        return sum(lesion.mass_mg or 0.0 for lesion in self.lesions)


def _truth(
    area_mm2: float,
    height_mm: float,
    hu: float,
    peak_hu: float,
    band: KvThresholds,
    calibration: float | None,
    artery: Artery | None,
    radius_mm: float | None = None,
    mean_hu: float | None = None,
) -> LesionTruth:
    weight = band.weight(peak_hu)
    volume = area_mm2 * height_mm
    mean = hu if mean_hu is None else mean_hu
    return LesionTruth(
        area_mm2=area_mm2,
        height_mm=height_mm,
        peak_hu=peak_hu,
        weight=weight,
        agatston=weight * area_mm2 * height_mm / REFERENCE_INCREMENT_MM,
        volume_mm3=volume,
        mass_mg=None if calibration is None else calibration * mean * volume / 1000.0,
        artery=artery,
        radius_mm=radius_mm,
    )


def _background(
    shape: tuple[int, int, int], background_hu: float, noise_sd_hu: float, seed: int
) -> NDArray[np.float64]:
    hu = np.full(shape, float(background_hu), dtype=np.float64)
    if noise_sd_hu > 0:
        hu += np.random.default_rng(seed).normal(0.0, noise_sd_hu, size=shape)
    return hu


def calcium_phantom(
    lesions: Sequence[CylinderLesion],
    *,
    field_of_view_mm: tuple[float, float] = (32.0, 32.0),
    z_extent_mm: float = 24.0,
    pixel_spacing_mm: tuple[float, float] = (0.5, 0.5),
    slice_thickness_mm: float = 3.0,
    slice_increment_mm: float | None = None,
    kvp: float = 120.0,
    background_hu: float = 40.0,
    noise_sd_hu: float = 0.0,
    seed: int = 0,
    mass_calibration_mg_per_ml_per_hu: float | None = None,
) -> CalciumPhantom:
    """Cylinders of uniform HU in a uniform background (noise off by default).

    The truth is analytic: area ``pi r²``, volume ``pi r² h``, Agatston ``w pi r² h / 3``, mass
    ``c x HU x volume / 1000`` (mg, with ``c`` in mg/mL/HU). ``slice_increment_mm`` defaults to
    the thickness (contiguous slices).
    """
    increment = slice_thickness_mm if slice_increment_mm is None else slice_increment_mm
    row_mm, col_mm = pixel_spacing_mm
    shape = (
        round(z_extent_mm / increment),
        round(field_of_view_mm[0] / row_mm),
        round(field_of_view_mm[1] / col_mm),
    )
    hu = _background(shape, background_hu, noise_sd_hu, seed)
    labels = np.zeros(shape, dtype=np.int16) if any(lesion.artery for lesion in lesions) else None
    z = (np.arange(shape[0]) + 0.5) * increment
    y = (np.arange(shape[1]) + 0.5) * row_mm
    x = (np.arange(shape[2]) + 0.5) * col_mm
    band = thresholds_for_kvp(kvp)
    truths = []
    for lesion in lesions:
        zc, yc, xc = lesion.centre_mm
        in_z = (z >= zc - lesion.height_mm / 2) & (z < zc + lesion.height_mm / 2)
        in_disc = (y[:, None] - yc) ** 2 + (x[None, :] - xc) ** 2 <= lesion.radius_mm**2
        inside = in_z[:, None, None] & in_disc[None, :, :]
        hu[inside] = lesion.hu
        if labels is not None and lesion.artery is not None:
            labels[inside] = _ARTERY_VALUES.get(lesion.artery, 0)
        truths.append(
            _truth(
                math.pi * lesion.radius_mm**2,
                lesion.height_mm,
                lesion.hu,
                lesion.hu,
                band,
                mass_calibration_mg_per_ml_per_hu,
                lesion.artery,
                radius_mm=lesion.radius_mm,
            )
        )
    return CalciumPhantom(
        hu=hu,
        artery_labels=labels,
        pixel_spacing_mm=(row_mm, col_mm),
        slice_thickness_mm=slice_thickness_mm,
        slice_increment_mm=increment,
        kvp=kvp,
        mass_calibration_mg_per_ml_per_hu=mass_calibration_mg_per_ml_per_hu,
        lesions=tuple(truths),
    )


def square_calcium_phantom(
    squares: Sequence[SquareLesion],
    *,
    shape: tuple[int, int, int] = (4, 32, 32),
    pixel_spacing_mm: tuple[float, float] = (0.5, 0.5),
    slice_thickness_mm: float = 3.0,
    slice_increment_mm: float | None = None,
    kvp: float = 120.0,
    background_hu: float = 40.0,
    mass_calibration_mg_per_ml_per_hu: float | None = None,
) -> CalciumPhantom:
    """Pixel-aligned rectangles: areas are exact (``rows x cols x pixel area``), no voxelisation error.

    The truth assumes each rectangle is scored (area at least the minimum, HU at least the
    threshold); tests of those edge cases compare with zero themselves.
    """
    increment = slice_thickness_mm if slice_increment_mm is None else slice_increment_mm
    row_mm, col_mm = pixel_spacing_mm
    hu = _background(shape, background_hu, 0.0, 0)
    labels = np.zeros(shape, dtype=np.int16) if any(square.artery for square in squares) else None
    band = thresholds_for_kvp(kvp)
    truths = []
    for square in squares:
        box = (
            slice(square.first_slice, square.first_slice + square.n_slices),
            slice(square.row, square.row + square.rows),
            slice(square.col, square.col + square.cols),
        )
        hu[box] = square.hu
        peak = square.hu
        n_pixels = square.rows * square.cols
        mean = square.hu
        if square.peak_hu is not None:
            hu[box][:, 0, 0] = square.peak_hu
            peak = max(square.hu, square.peak_hu)
            mean = (square.hu * (n_pixels - 1) + square.peak_hu) / n_pixels
        if labels is not None and square.artery is not None:
            labels[box] = _ARTERY_VALUES.get(square.artery, 0)
        truths.append(
            _truth(
                n_pixels * row_mm * col_mm,
                square.n_slices * increment,
                square.hu,
                peak,
                band,
                mass_calibration_mg_per_ml_per_hu,
                square.artery,
                mean_hu=mean,
            )
        )
    return CalciumPhantom(
        hu=hu,
        artery_labels=labels,
        pixel_spacing_mm=(row_mm, col_mm),
        slice_thickness_mm=slice_thickness_mm,
        slice_increment_mm=increment,
        kvp=kvp,
        mass_calibration_mg_per_ml_per_hu=mass_calibration_mg_per_ml_per_hu,
        lesions=tuple(truths),
    )
