"""The :class:`Volume`: a 3-D image on a regular grid, with its geometry in patient space.

Conventions (see ``docs/imaging.md``):

* ``voxels[k, j, i]`` — array index order is **(z, y, x) = (slice, row, column)**; ``i`` moves
  along a row (the image's row direction, IOP[0:3]), ``j`` down a column (IOP[3:6]), ``k`` from
  slice to slice along the slice normal (row × column).
* Every index argument and result of this module uses that same (z, y, x) order.
* Patient coordinates are DICOM's LPS system, in millimetres.
* ``voxels`` are float32 in the modality's units after Rescale Slope/Intercept ("HU" for CT).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from numpy.typing import ArrayLike, NDArray

F32 = NDArray[np.float32]
F64 = NDArray[np.float64]


@dataclass(frozen=True, eq=False)
class Volume:
    """A regularly sampled volume and its geometry.

    ``direction`` rows are unit vectors in patient space: ``direction[0]`` the row direction (x
    index grows), ``direction[1]`` the column direction (y index grows), ``direction[2]`` the
    direction in which the slice index grows (the slice normal).
    """

    voxels: F32  # (z, y, x), float32, modality units after rescale
    spacing_mm: tuple[float, float, float]  # (z, y, x): between slices, between rows, between columns
    origin_mm: tuple[float, float, float]  # patient (LPS) position of the centre of voxel (0, 0, 0)
    direction: F64  # 3x3: row direction, column direction, slice normal (each a unit row vector)
    units: str = ""  # "HU" for CT, "" when unknown
    modality: str = ""
    series_instance_uid: str = ""
    sop_instance_uids: tuple[str, ...] = ()  # per slice; after resampling, the nearest source slice
    tilt_deg: float = 0.0  # gantry tilt that was corrected by resampling (0 when none)
    notes: tuple[str, ...] = field(default=())  # what assembly did: "resampled uneven spacing", ...

    def __post_init__(self) -> None:
        if self.voxels.ndim != 3:
            raise ValueError(f"voxels must be 3-D (z, y, x), got shape {self.voxels.shape}")
        if np.asarray(self.direction).shape != (3, 3):
            raise ValueError("direction must be 3x3")
        if self.sop_instance_uids and len(self.sop_instance_uids) != self.voxels.shape[0]:
            raise ValueError("sop_instance_uids must have one entry per slice")

    @property
    def shape(self) -> tuple[int, int, int]:
        z, y, x = self.voxels.shape
        return int(z), int(y), int(x)

    @property
    def affine(self) -> F64:
        """4x4 matrix mapping a homogeneous voxel index ``(k, j, i, 1)`` — (z, y, x) order, the
        array's own order — to patient coordinates ``(x_mm, y_mm, z_mm, 1)`` (LPS)."""
        d = np.asarray(self.direction, dtype=np.float64)
        sz, sy, sx = self.spacing_mm
        a = np.eye(4)
        a[:3, 0] = d[2] * sz
        a[:3, 1] = d[1] * sy
        a[:3, 2] = d[0] * sx
        a[:3, 3] = self.origin_mm
        return a

    def index_to_patient(self, points: ArrayLike) -> F64:
        """Patient coordinates (LPS mm) of voxel indices ``(k, j, i)``; accepts (3,) or (N, 3),
        fractional indices allowed."""
        p = np.asarray(points, dtype=np.float64)
        a = self.affine
        return p @ a[:3, :3].T + a[:3, 3]

    def patient_to_index(self, points: ArrayLike) -> F64:
        """Fractional voxel indices ``(k, j, i)`` of patient points (LPS mm); (3,) or (N, 3)."""
        p = np.asarray(points, dtype=np.float64)
        a = self.affine
        return (p - a[:3, 3]) @ np.linalg.inv(a[:3, :3]).T

    @property
    def voxel_volume_ml(self) -> float:
        """Volume of one voxel in millilitres (1 mL = 1000 mm³)."""
        sz, sy, sx = self.spacing_mm
        return float(sz * sy * sx) / 1000.0


__all__ = ["Volume"]
