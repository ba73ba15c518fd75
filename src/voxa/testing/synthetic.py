"""Deterministic synthetic studies shaped like the ones real modalities send.

Demo data for ``voxa send-test-studies``, fixtures for tests and input for benchmarks. Every
patient is invented. The same seed gives byte-identical files: UIDs are ``2.25.`` + a UUID5 of
the seed and the generating parameters, pixel noise comes from generators seeded per image, and
nothing reads the clock or a global random state.

Coordinates follow DICOM's patient system (LPS, mm): +x towards the patient's left, +y
posterior, +z towards the head. Axial images use ImageOrientationPatient 1\\0\\0\\0\\1\\0, so the
patient's right is on the image's left and the table is at the bottom (patient supine).

Four studies make up the demo set (:func:`demo_studies`): a contrast chest CT with known
coronary calcifications (:func:`ct_chest`, ground truth in :func:`ct_calcifications`), an MR
brain with T1/T2/FLAIR series (:func:`mr_brain`), a PA chest radiograph (:func:`cr_chest`) and a
coronary angiography run (:func:`xa_run`). :func:`small_ct` and :func:`tiny_study` build small,
distinct studies quickly for tests.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import math
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from numpy.typing import NDArray
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import (
    UID,
    CTImageStorage,
    DigitalXRayImageStorageForPresentation,
    ExplicitVRLittleEndian,
    MRImageStorage,
    SecondaryCaptureImageStorage,
    XRayAngiographicImageStorage,
)

from voxa import IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME, __version__

F32 = NDArray[np.float32]

# The demo CT must be a realistic volume for the viewer (MPR, 3D); fewer slices are for tests.
DEMO_MIN_CT_SLICES = 200
MANUFACTURER = "Voxa Synthetic"
INSTITUTION = "Voxa Synthetic Hospital"

# Fixed so that UIDs depend only on the seed and parameters, never on the host or the clock.
_UID_NAMESPACE = uuid.UUID("5d0c7a52-4f1e-5b8e-9a51-7f3c2b1e9d40")


# --------------------------------------------------------------------------------------------
# Public types


@dataclass(frozen=True)
class CalcificationTruth:
    """One coronary calcification painted into the synthetic CT, as calcium scoring should find it.

    Voxels within ``radius_mm`` of ``centre_mm`` are at least 130 HU (before noise), rising to
    ``peak_hu`` at the centre.
    """

    artery: str  # "LM", "LAD", "LCX" or "RCA"
    centre_mm: tuple[float, float, float]  # patient coordinates (LPS)
    radius_mm: float
    peak_hu: float

    @property
    def volume_mm3(self) -> float:
        return 4.0 / 3.0 * math.pi * self.radius_mm**3


@dataclass(frozen=True)
class SyntheticStudy:
    """A study that can be generated, lazily, as many times as needed with identical bytes."""

    key: str  # "ct-chest", "mr-brain", "cr-chest", "xa-run", "ct-chest-small", "tiny"
    patient_id: str
    patient_name: str
    study_instance_uid: str
    description: str
    modality: str = ""
    study_date: str = ""
    accession_number: str = ""
    series_count: int = 1
    calcifications: tuple[CalcificationTruth, ...] = ()
    _instance_count: int = field(default=0, repr=False)
    _factory: Callable[[], Iterator[Dataset]] | None = field(default=None, repr=False, compare=False)

    def datasets(self) -> Iterator[Dataset]:
        """Yield the instances one at a time, each with ``file_meta`` ready for a Part 10 write."""
        if self._factory is None:
            return iter(())
        return self._factory()

    @property
    def instance_count(self) -> int:
        return self._instance_count


# --------------------------------------------------------------------------------------------
# Determinism helpers


def _uid(*parts: object) -> str:
    return "2.25." + str(uuid.uuid5(_UID_NAMESPACE, "/".join(str(p) for p in parts)).int)


def _rng(*parts: object) -> np.random.Generator:
    digest = hashlib.sha256(repr(parts).encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:16], "little"))


def _ds(value: float) -> str:
    """A DS string (at most 16 characters) that prints the same on every platform."""
    text = f"{round(float(value), 4):.10g}"
    return "0" if text == "-0" else text


# --------------------------------------------------------------------------------------------
# Patients and studies

_FAMILY_NAMES = (
    "DOE", "ANDERSSON", "BAKER", "CHEN", "DUBOIS", "EVANS", "FISCHER", "GARCÍA", "HANSEN", "IVANOV",
    "JOHNSON", "KOWALSKI", "LEFÈVRE", "MÜLLER", "NAKAMURA", "OKAFOR", "PATEL", "QUINN", "ROSSI",
    "SANTOS", "TANAKA", "URBAN", "VARGA", "WILSON", "XU", "YILMAZ", "ZIMMERMANN", "NØRGAARD",
    "O'BRIEN", "MARTIN", "NGUYEN", "SILVA", "KIM", "HOFFMANN", "MENSAH", "LINDQVIST",
)  # fmt: skip
_GIVEN_F = (
    "JANE", "ANNA", "MARIA", "SOPHIE", "LENA", "CHLOE", "AMARA", "YUKI", "ELENA", "FREYA", "HANNA",
    "INÈS", "NORA", "ZOE", "CLARA", "PRIYA", "AISHA", "MEI",
)  # fmt: skip
_GIVEN_M = (
    "JOHN", "LUCAS", "MATEO", "NOAH", "OMAR", "PIOTR", "KENJI", "ARJUN", "TOMÁS", "ERIK", "LIAM",
    "FELIX", "DAVID", "HUGO", "SAMUEL", "KWAME", "LEON", "RAFAEL",
)  # fmt: skip
_PHYSICIANS = (
    "OKONKWO^ADA^^DR", "LINDQVIST^PER^^DR", "MORALES^INES^^DR", "SATO^HIRO^^DR", "BERG^KAREN^^DR",
    "FONTAINE^LUC^^DR", "MEHTA^RAVI^^DR", "WALSH^EILEEN^^DR",
)  # fmt: skip


@dataclass(frozen=True)
class _Patient:
    patient_id: str
    name: str
    birth_date: str
    sex: str
    age: str
    weight_kg: float
    size_m: float


@dataclass(frozen=True)
class _Study:
    patient: _Patient
    uid: str
    date: str
    time: str
    accession: str
    study_id: str
    description: str
    referring: str


def _patient(seed: int, slot: int, study_date: dt.date) -> _Patient:
    rng = _rng("patient", seed, slot)
    sex = "F" if rng.random() < 0.5 else "M"
    given = _GIVEN_F if sex == "F" else _GIVEN_M
    family = _FAMILY_NAMES[int(rng.integers(len(_FAMILY_NAMES)))]
    first = given[int(rng.integers(len(given)))]
    middle = chr(ord("A") + int(rng.integers(26)))
    age_years = int(rng.integers(34, 86))
    birth = study_date - dt.timedelta(days=int(age_years * 365.25 + rng.integers(0, 365)))
    age = (study_date - birth).days * 100 // 36525
    height = float(rng.normal(1.76 if sex == "M" else 1.64, 0.06))
    bmi = float(rng.uniform(20.0, 31.0))
    return _Patient(
        patient_id=f"SYN{seed:04d}{slot:02d}",
        name=f"{family}^{first}^{middle}",
        birth_date=birth.strftime("%Y%m%d"),
        sex=sex,
        age=f"{age:03d}Y",
        weight_kg=round(bmi * height * height, 1),
        size_m=round(height, 2),
    )


def _study(seed: int, slot: int, description: str, uid_parts: Sequence[object]) -> _Study:
    rng = _rng("study", seed, slot)
    date = dt.date(2024, 1, 8) + dt.timedelta(days=int(rng.integers(0, 540)))
    seconds = int(rng.integers(7 * 3600 + 1800, 18 * 3600))
    return _Study(
        patient=_patient(seed, slot, date),
        uid=_uid("study", seed, *uid_parts),
        date=date.strftime("%Y%m%d"),
        time=f"{seconds // 3600:02d}{seconds // 60 % 60:02d}{seconds % 60:02d}",
        accession=f"A{int(hashlib.sha256(repr((seed, *uid_parts)).encode()).hexdigest()[:12], 16) % 10**9:09d}",
        study_id=str(1000 + int(rng.integers(0, 9000))),
        description=description,
        referring=_PHYSICIANS[int(rng.integers(len(_PHYSICIANS)))],
    )


def _study_of(key: str, study: _Study, description: str, modality: str, instance_count: int,
              factory: Callable[[], Iterator[Dataset]], **extra: Any) -> SyntheticStudy:
    """A :class:`SyntheticStudy` for a generated patient and study."""
    return SyntheticStudy(
        key=key, patient_id=study.patient.patient_id, patient_name=study.patient.name,
        study_instance_uid=study.uid, description=description, modality=modality, study_date=study.date,
        accession_number=study.accession, _instance_count=instance_count, _factory=factory, **extra,
    )


def _time_plus(hhmmss: str, seconds: float) -> str:
    base = int(hhmmss[:2]) * 3600 + int(hhmmss[2:4]) * 60 + int(hhmmss[4:6])
    total = base + seconds
    whole = int(total)
    micros = int(round((total - whole) * 1e6))
    return f"{whole // 3600 % 24:02d}{whole // 60 % 60:02d}{whole % 60:02d}.{micros:06d}"


# --------------------------------------------------------------------------------------------
# Common modules of every instance


def _file_meta(sop_class_uid: str, sop_instance_uid: str) -> FileMetaDataset:
    meta = FileMetaDataset()
    meta.FileMetaInformationVersion = b"\x00\x01"
    meta.MediaStorageSOPClassUID = UID(sop_class_uid)
    meta.MediaStorageSOPInstanceUID = UID(sop_instance_uid)
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = UID(IMPLEMENTATION_CLASS_UID)
    meta.ImplementationVersionName = IMPLEMENTATION_VERSION_NAME
    return meta


def _base_dataset(sop_class_uid: str, sop_instance_uid: str, study: _Study, modality: str) -> Dataset:
    ds = Dataset()
    ds.file_meta = _file_meta(sop_class_uid, sop_instance_uid)
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = sop_class_uid
    ds.SOPInstanceUID = sop_instance_uid
    ds.InstanceCreationDate = study.date
    ds.InstanceCreationTime = study.time
    ds.StudyDate = study.date
    ds.StudyTime = study.time
    ds.AccessionNumber = study.accession
    ds.Modality = modality
    ds.Manufacturer = MANUFACTURER
    ds.InstitutionName = INSTITUTION
    ds.ReferringPhysicianName = study.referring
    ds.StudyDescription = study.description

    p = study.patient
    ds.PatientName = p.name
    ds.PatientID = p.patient_id
    ds.IssuerOfPatientID = "VOXA-SYNTHETIC"
    ds.PatientBirthDate = p.birth_date
    ds.PatientSex = p.sex
    ds.PatientAge = p.age
    ds.PatientSize = _ds(p.size_m)
    ds.PatientWeight = _ds(p.weight_kg)
    ds.PatientIdentityRemoved = "NO"  # invented, not de-identified: nothing was ever removed

    ds.StudyInstanceUID = study.uid
    ds.StudyID = study.study_id
    return ds


def _code(value: str, scheme: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue = value
    item.CodingSchemeDesignator = scheme
    item.CodeMeaning = meaning
    return item


def _series(
    ds: Dataset, *, uid: str, number: int, description: str, body_part: str, protocol: str, time: str
) -> None:
    ds.SeriesInstanceUID = uid
    ds.SeriesNumber = number
    ds.SeriesDescription = description
    ds.SeriesDate = ds.StudyDate
    ds.SeriesTime = time
    ds.BodyPartExamined = body_part
    ds.ProtocolName = protocol
    ds.OperatorsName = "TECH^SYNTHETIC"


def _equipment(ds: Dataset, model: str, station: str) -> None:
    ds.ManufacturerModelName = model
    ds.StationName = station
    ds.DeviceSerialNumber = "SYN-0001"
    ds.SoftwareVersions = f"voxa {__version__}"


def _pixels(ds: Dataset, array: NDArray[Any], *, bits_stored: int, frames: int | None = None) -> None:
    signed = array.dtype.kind == "i"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    if frames is not None:
        ds.NumberOfFrames = frames
    ds.Rows, ds.Columns = int(array.shape[-2]), int(array.shape[-1])
    ds.BitsAllocated = array.dtype.itemsize * 8
    ds.BitsStored = bits_stored
    ds.HighBit = bits_stored - 1
    ds.PixelRepresentation = 1 if signed else 0
    ds.PixelData = array.astype(array.dtype.newbyteorder("<"), copy=False).tobytes()


# --------------------------------------------------------------------------------------------
# Part 10 output


def dataset_to_bytes(ds: Dataset) -> bytes:
    """Part 10 bytes: preamble, file meta information and the dataset."""
    buffer = BytesIO()
    pydicom.dcmwrite(buffer, ds, enforce_file_format=True)
    return buffer.getvalue()


def write_study(study: SyntheticStudy, out_dir: Path) -> list[Path]:
    """Write one Part 10 file per instance as ``<SeriesNumber>/<InstanceNumber:05d>.dcm``."""
    paths: list[Path] = []
    for ds in study.datasets():
        path = Path(out_dir) / str(ds.SeriesNumber) / f"{int(ds.InstanceNumber):05d}.dcm"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(dataset_to_bytes(ds))
        paths.append(path)
    return paths


# --------------------------------------------------------------------------------------------
# Raster helpers: shapes painted into the bounding box they cover, so that small structures
# cost little and a 512x512 slice takes milliseconds.


def _smooth(value: float, lo: float, hi: float) -> float:
    """0 below ``lo``, 1 above ``hi``, smooth in between."""
    t = min(1.0, max(0.0, (value - lo) / (hi - lo)))
    return t * t * (3.0 - 2.0 * t)


def _profile(z: float, centre: float, half: float) -> float:
    """Scale of an ellipsoid's cross-section at height ``z`` (0 outside it)."""
    t = (z - centre) / half
    return math.sqrt(1.0 - t * t) if abs(t) < 1.0 else 0.0


def _blur(img: F32) -> F32:
    """Separable [1, 2, 1] / 4 smoothing: partial volume at edges, correlated noise grain."""
    out = img.copy()
    out[1:-1, :] = 0.25 * (img[:-2, :] + img[2:, :]) + 0.5 * img[1:-1, :]
    tmp = out.copy()
    out[:, 1:-1] = 0.25 * (tmp[:, :-2] + tmp[:, 2:]) + 0.5 * tmp[:, 1:-1]
    return out


class _Canvas:
    """A float image with a uniform grid in millimetres (x along columns, y along rows)."""

    def __init__(self, rows: int, cols: int, spacing_mm: float, fill: float, *, x0: float, y0: float):
        self.img = np.full((rows, cols), fill, dtype=np.float32)
        self.spacing = spacing_mm
        self.x0, self.y0 = x0, y0
        self.x = (x0 + spacing_mm * np.arange(cols)).astype(np.float32)
        self.y = (y0 + spacing_mm * np.arange(rows)).astype(np.float32)

    def window(self, cx: float, cy: float, rx: float, ry: float) -> tuple[slice, slice] | None:
        s = self.spacing
        c0 = max(0, math.ceil((cx - rx - self.x0) / s))
        c1 = min(self.x.size, math.floor((cx + rx - self.x0) / s) + 1)
        r0 = max(0, math.ceil((cy - ry - self.y0) / s))
        r1 = min(self.y.size, math.floor((cy + ry - self.y0) / s) + 1)
        if c0 >= c1 or r0 >= r1:
            return None
        return slice(r0, r1), slice(c0, c1)

    def ellipse(
        self,
        cx: float,
        cy: float,
        ax: float,
        ay: float,
        *,
        angle_deg: float = 0.0,
        ay_back: float | None = None,
        power: float = 2.0,
    ) -> tuple[tuple[slice, slice], NDArray[np.bool_]] | None:
        """Mask of an ellipse (or superellipse with ``power`` > 2) inside its bounding window.

        ``ay_back`` gives the posterior half (+y) its own semi-axis: a supine body is flat
        where it lies on the table. ``angle_deg`` rotates from +x towards +y.
        """
        if ax <= 0 or ay <= 0:
            return None
        if angle_deg:
            r = max(ax, ay)
            win = self.window(cx, cy, r, r)
            if win is None:
                return None
            xx = self.x[win[1]][None, :] - cx
            yy = self.y[win[0]][:, None] - cy
            c, s = math.cos(math.radians(angle_deg)), math.sin(math.radians(angle_deg))
            u = (xx * c + yy * s) / ax
            v = (yy * c - xx * s) / ay
            return win, u * u + v * v <= 1.0
        back = ay if ay_back is None else ay_back
        win = self.window(cx, cy, ax, max(ay, back))
        if win is None:
            return None
        dx = np.abs((self.x[win[1]] - cx) / ax)
        dy_raw = self.y[win[0]] - cy
        dy = np.abs(np.where(dy_raw < 0, dy_raw / ay, dy_raw / back))
        if power == 2.0:
            return win, (dy * dy)[:, None] + (dx * dx)[None, :] <= 1.0
        return win, (dy**power)[:, None] + (dx**power)[None, :] <= 1.0

    def paint(
        self,
        shape: tuple[tuple[slice, slice], NDArray[np.bool_]] | None,
        value: float,
        *,
        clip: NDArray[np.bool_] | None = None,
        below: float | None = None,
    ) -> None:
        """Set ``value`` inside ``shape``; only inside ``clip`` and where the image is < ``below``."""
        if shape is None:
            return
        win, mask = shape
        sub = self.img[win]
        if clip is not None:
            mask = mask & clip[win]
        if below is not None:
            mask = mask & (sub < below)
        sub[mask] = value

    def disc(
        self, cx: float, cy: float, r: float, value: float, *, clip: NDArray[np.bool_] | None = None
    ) -> None:
        # at least the nearest pixel, so thin vessels survive coarse test grids
        r = max(r, 0.5 * self.spacing)
        self.paint(self.ellipse(cx, cy, r, r), value, clip=clip)

    def full_mask(self, shape: tuple[tuple[slice, slice], NDArray[np.bool_]] | None) -> NDArray[np.bool_]:
        out = np.zeros(self.img.shape, dtype=bool)
        if shape is not None:
            out[shape[0]] = shape[1]
        return out

    def segment(
        self, p0: tuple[float, float], p1: tuple[float, float], r0: float, r1: float
    ) -> tuple[tuple[slice, slice], F32, F32] | None:
        """Projected thickness (2*sqrt(r^2 - d^2)) of a tapered cylinder across an image plane.

        Returns the window, the thickness and the position along the segment (0..1).
        """
        rmax = max(r0, r1)
        cx, cy = 0.5 * (p0[0] + p1[0]), 0.5 * (p0[1] + p1[1])
        win = self.window(cx, cy, abs(p1[0] - p0[0]) / 2 + rmax, abs(p1[1] - p0[1]) / 2 + rmax)
        if win is None:
            return None
        xx = self.x[win[1]][None, :] - p0[0]
        yy = self.y[win[0]][:, None] - p0[1]
        ex, ey = p1[0] - p0[0], p1[1] - p0[1]
        length2 = ex * ex + ey * ey or 1e-9
        t = np.clip((xx * ex + yy * ey) / length2, 0.0, 1.0)
        dx = xx - t * ex
        dy = yy - t * ey
        r = r0 + (r1 - r0) * t
        thick = 2.0 * np.sqrt(np.maximum(r * r - dx * dx - dy * dy, 0.0))
        return win, thick.astype(np.float32), t.astype(np.float32)


# --------------------------------------------------------------------------------------------
# CT chest phantom

_CT_FOV_MM = 358.4  # 512 x 0.7 mm
_HEART_ZC, _HEART_HZ = -7.0, 52.0
_HEART_SEMI = (65.0, 42.0)  # along the long axis (u) and across it (w), at the widest level
_HEART_ANGLE = -40.0  # long axis from the base (right-posterior) to the apex (left-anterior)
_U = (math.cos(math.radians(_HEART_ANGLE)), math.sin(math.radians(_HEART_ANGLE)))
_W = (-_U[1], _U[0])  # towards the left-posterior (LV side)


@dataclass(frozen=True)
class _HU:
    """Attenuation by tissue (HU), with and without an arterial-phase contrast bolus."""

    air: float = -1000.0
    lung: float = -860.0
    fat: float = -95.0
    muscle: float = 45.0
    liver: float = 60.0
    blood: float = 40.0
    myocardium: float = 45.0
    left_blood: float = 40.0  # LV, LA, aorta, coronaries
    right_blood: float = 40.0  # RV, RA, pulmonary arteries
    pulmonary_vessel: float = 40.0
    svc: float = 40.0
    ivc: float = 40.0
    spleen: float = 50.0
    cortical_bone: float = 850.0
    marrow: float = 240.0
    disc: float = 90.0
    cord: float = 25.0
    table_shell: float = 250.0
    table_core: float = -850.0


_NON_CONTRAST = _HU()
_CONTRAST = _HU(
    liver=80.0,
    myocardium=105.0,
    left_blood=320.0,
    right_blood=250.0,
    pulmonary_vessel=190.0,
    svc=420.0,
    ivc=110.0,
    spleen=130.0,
)


class _Tube:
    """A vessel or airway as a 3D centreline sampled densely; drawn slice by slice as discs."""

    def __init__(
        self, points: Sequence[tuple[float, float, float]], radius: Sequence[float] | float, step_mm: float
    ):
        pts = np.asarray(points, dtype=np.float64)
        rad = np.broadcast_to(np.asarray(radius, dtype=np.float64), (len(pts),))
        seg = np.linalg.norm(np.diff(pts, axis=0), axis=1)
        arc = np.concatenate([[0.0], np.cumsum(seg)])
        samples = np.arange(0.0, arc[-1] + 1e-9, step_mm)
        self.points = np.stack([np.interp(samples, arc, pts[:, i]) for i in range(3)], axis=1)
        self.radius = np.interp(samples, arc, rad)
        self.arc = samples
        self.length = float(arc[-1])

    def at(self, fraction: float) -> tuple[NDArray[np.float64], float, NDArray[np.float64]]:
        """Point, radius and unit direction at a fraction of the length."""
        i = min(len(self.arc) - 2, max(0, int(round(fraction * (len(self.arc) - 1)))))
        direction = self.points[i + 1] - self.points[i]
        return self.points[i], float(self.radius[i]), direction / (np.linalg.norm(direction) or 1.0)

    def draw(self, canvas: _Canvas, z: float, value: float, *, extra_mm: float = 0.0) -> None:
        r = self.radius + extra_mm
        dz = np.abs(self.points[:, 2] - z)
        hit = np.nonzero(dz < r)[0]
        if hit.size == 0:
            return
        # consecutive samples a fraction of a radius apart add nothing; thin them out
        keep = hit[:: max(1, int(len(hit) // 60))]
        for i in keep:
            rr = math.sqrt(max(r[i] ** 2 - dz[i] ** 2, 0.0))
            canvas.disc(float(self.points[i, 0]), float(self.points[i, 1]), rr, value)


class _Chest:
    """The chest of one synthetic patient: geometry that varies with the seed, drawn at any z."""

    def __init__(self, seed: int, sex: str):
        rng = _rng("chest", seed)
        self.scale = float(rng.uniform(0.94, 1.06))
        self.fat_mm = float(rng.uniform(10.0, 22.0))
        self.female = sex == "F"
        self.heart_dx = float(rng.uniform(-4.0, 4.0))
        self.heart_dy = float(rng.uniform(-3.0, 3.0))
        self.level_phase = float(rng.uniform(0.0, 27.0))
        self.rib_phase = float(rng.uniform(0.0, 27.0))
        self.table_y = 127.0 * self.scale + 4.0

        # Pulmonary vessels: rays leaving each hilum; a ray crosses an axial slice at one point,
        # so a slice shows dots thinning out towards the periphery, as on real CT.
        self.rays: list[tuple[tuple[float, float, float], NDArray[np.float64]]] = []
        for hilum in ((-48.0, 18.0, 32.0), (50.0, 22.0, 28.0)):
            n = 110
            azimuth = rng.uniform(0, 2 * math.pi, n)
            dz = rng.uniform(0.3, 1.0, n) * rng.choice([-1.0, 1.0], n)
            horizontal = np.sqrt(1 - dz * dz)
            directions = np.stack([horizontal * np.cos(azimuth), horizontal * np.sin(azimuth), dz], axis=1)
            self.rays.append((hilum, directions))

        self._build_vessels()
        self.coronaries = self._build_coronaries()

    # geometry as functions of z ------------------------------------------------------------

    def body(self, z: float) -> tuple[float, float, float, float]:
        """Centre y, semi-axes x, anterior y, posterior y of the body outline."""
        s = self.scale
        top = _smooth(z, 90.0, 150.0)
        ax = s * (163.0 - 18.0 * top)
        ay = s * (112.0 - 12.0 * top + 6.0 * _smooth(-z, 90.0, 150.0))
        cy = self.table_y - 1.0 - ay * 0.95
        return cy, ax, ay, ay * 0.95

    def cavity(self, z: float) -> tuple[float, float, float]:
        """Centre y and semi-axes of the space inside the ribs."""
        cy, ax, ay, _ = self.body(z)
        inset = self.fat_mm + 11.0
        return cy - 2.0, ax - inset - 4.0, ay - inset - 6.0

    def heart_frame(self, z: float) -> tuple[float, float, float, float]:
        """Centre x, y and semi-axes (long axis, short axis) of the heart at height z."""
        p = _profile(z, _HEART_ZC, _HEART_HZ) ** 0.8
        cx = 22.0 + self.heart_dx - 0.3 * z
        cy = -10.0 + self.heart_dy + 0.25 * z
        return cx, cy, _HEART_SEMI[0] * p, _HEART_SEMI[1] * p

    def heart_point(self, z: float, phi_deg: float, out_mm: float) -> tuple[float, float, float]:
        """A point ``out_mm`` outside the heart surface at angle ``phi`` (0 = apex side)."""
        cx, cy, a, b = self.heart_frame(z)
        c, s = math.cos(math.radians(phi_deg)), math.sin(math.radians(phi_deg))
        u, w = (a + out_mm) * c, (b + out_mm) * s
        return cx + u * _U[0] + w * _W[0], cy + u * _U[1] + w * _W[1], z

    def descending_aorta(self, z: float) -> tuple[float, float, float]:
        """Centre x, y and radius (mm); it drifts in front of the spine towards the abdomen."""
        return (
            float(np.interp(z, (-160.0, 80.0), (8.0, 24.0))),
            float(np.interp(z, (-160.0, 80.0), (40.0, 52.0))),
            11.5,
        )

    def _build_vessels(self) -> None:
        self.arch = _Tube(
            [
                (-5.0, -2.0, 76.0),
                (-2.0, 4.0, 86.0),
                (8.0, 22.0, 91.0),
                (20.0, 42.0, 86.0),
                (24.0, 52.0, 76.0),
            ],
            14.0,
            1.0,
        )
        self.pulmonary = [
            _Tube([(20.0, -30.0, 12.0), (22.0, -28.0, 30.0), (18.0, -12.0, 46.0)], 13.0, 1.0),
            _Tube(
                [(18.0, -12.0, 46.0), (0.0, 10.0, 48.0), (-30.0, 14.0, 44.0), (-55.0, 16.0, 40.0)], 10.0, 1.0
            ),
            _Tube([(18.0, -12.0, 46.0), (35.0, 8.0, 52.0), (52.0, 20.0, 50.0)], 10.0, 1.0),
        ]
        self.bronchi = [
            _Tube([(0.0, 30.0, 66.0), (-20.0, 34.0, 55.0), (-42.0, 38.0, 44.0)], 6.5, 1.0),
            _Tube([(0.0, 30.0, 66.0), (22.0, 38.0, 54.0), (45.0, 44.0, 40.0)], 6.0, 1.0),
        ]
        self.supra_aortic = [
            _Tube([(-4.0, 2.0, 86.0), (-12.0, -6.0, 110.0), (-18.0, -8.0, 160.0)], 6.5, 1.0),
            _Tube([(6.0, 18.0, 90.0), (8.0, 10.0, 120.0), (12.0, 6.0, 160.0)], 5.0, 1.0),
            _Tube([(16.0, 32.0, 88.0), (26.0, 30.0, 120.0), (45.0, 28.0, 160.0)], 5.5, 1.0),
        ]

    def _build_coronaries(self) -> dict[str, _Tube]:
        # ostia on the aortic root; the arteries then run in the epicardial fat, 2.5 mm outside
        # the myocardium: LAD down the anterior interventricular groove, LCX and RCA round the
        # atrioventricular groove.
        root = (-5.0 + self.heart_dx, -2.0 + self.heart_dy)
        left_ostium = (root[0] + 13.0, root[1] - 5.0, 22.0)
        right_ostium = (root[0] - 10.0, root[1] - 11.0, 19.0)
        bifurcation = self.heart_point(20.0, -25.0, -6.0)
        lm = _Tube([left_ostium, bifurcation], 2.2, 0.5)
        lad = _Tube(
            [bifurcation]
            + [self.heart_point(z, -8.0 + 0.1 * z, 2.5) for z in (12.0, 0.0, -15.0, -30.0, -45.0, -52.0)],
            [2.0, 1.9, 1.7, 1.5, 1.3, 1.1, 1.0],
            0.5,
        )
        lcx = _Tube(
            [bifurcation]
            + [
                self.heart_point(z, phi, 2.5)
                for z, phi in ((18.0, 35.0), (14.0, 70.0), (9.0, 105.0), (4.0, 135.0), (0.0, 155.0))
            ],
            [2.0, 1.9, 1.8, 1.6, 1.4, 1.2],
            0.5,
        )
        rca = _Tube(
            [right_ostium]
            + [
                self.heart_point(z, phi, 2.5)
                for z, phi in ((16.0, -95.0), (6.0, -120.0), (-8.0, -145.0), (-22.0, -168.0), (-32.0, -190.0))
            ],
            [2.1, 2.0, 1.9, 1.8, 1.6, 1.4],
            0.5,
        )
        return {"LM": lm, "LAD": lad, "LCX": lcx, "RCA": rca}

    def calcifications(self, seed: int, count: int) -> list[CalcificationTruth]:
        slots = [("LM", 0.55), ("LAD", 0.12), ("RCA", 0.22), ("LAD", 0.35), ("LCX", 0.3), ("RCA", 0.55),
                 ("LAD", 0.6), ("LCX", 0.65), ("RCA", 0.8), ("LAD", 0.8)]  # fmt: skip
        if not 0 <= count <= len(slots):
            raise ValueError(f"calcification count must be 0..{len(slots)}, not {count}")
        rng = _rng("calcifications", seed)
        truths = []
        for i, (artery, fraction) in enumerate(slots[:count]):
            point, lumen_r, direction = self.coronaries[artery].at(fraction + float(rng.uniform(-0.04, 0.04)))
            # plaque sits in the wall: offset from the lumen centre, away from the heart
            cx, cy, _, _ = self.heart_frame(float(point[2]))
            out = np.array([point[0] - cx, point[1] - cy, 0.0])
            out -= direction * float(out @ direction)
            out /= np.linalg.norm(out) or 1.0
            radius = float(rng.uniform(1.2, 2.6))
            centre = point + out * (lumen_r * 0.6)
            peak = float(rng.uniform(420.0, 950.0) if i % 2 == 0 else rng.uniform(200.0, 520.0))
            truths.append(
                CalcificationTruth(
                    artery=artery,
                    centre_mm=(
                        round(float(centre[0]), 2),
                        round(float(centre[1]), 2),
                        round(float(centre[2]), 2),
                    ),
                    radius_mm=round(radius, 2),
                    peak_hu=round(peak, 1),
                )
            )
        return truths

    # drawing ------------------------------------------------------------------------------

    def draw(self, c: _Canvas, z: float, hu: _HU) -> None:
        self._table(c, hu)
        cavity = self._wall(c, z, hu)
        self._lungs(c, z, hu, cavity)
        self._abdomen(c, z, hu, cavity)
        self._mediastinum(c, z, hu)
        self._heart(c, z, hu)
        self._great_vessels(c, z, hu)
        self._airways(c, z, hu)
        for tube in self.coronaries.values():
            tube.draw(c, z, hu.left_blood)
        self._bones(c, z, hu)

    def _table(self, c: _Canvas, hu: _HU) -> None:
        y = self.table_y
        w = 230.0
        c.paint(c.ellipse(0.0, y + 8.0, w, 8.0, power=8.0), hu.table_shell)
        c.paint(c.ellipse(0.0, y + 8.0, w, 6.0, power=8.0), hu.table_core)
        c.paint(c.ellipse(0.0, y + 36.0, 120.0, 10.0, power=6.0), hu.table_shell)
        c.paint(c.ellipse(0.0, y + 36.0, 117.0, 7.5, power=6.0), hu.table_core)

    def _wall(self, c: _Canvas, z: float, hu: _HU) -> NDArray[np.bool_]:
        cy, ax, ay, ay_back = self.body(z)
        breast = _profile(z, -5.0, 55.0) if self.female else 0.0
        for side in (-1.0, 1.0):
            if breast > 0:
                c.paint(c.ellipse(side * 62.0, cy - ay + 28.0, 58.0 * breast, 42.0 * breast), hu.fat)
        c.paint(c.ellipse(0.0, cy, ax, ay, ay_back=ay_back, power=2.6), hu.fat)
        f = self.fat_mm
        c.paint(c.ellipse(0.0, cy, ax - f, ay - f, ay_back=ay_back - f * 0.5, power=2.6), hu.muscle)
        if breast > 0:
            for side in (-1.0, 1.0):
                c.paint(
                    c.ellipse(side * 62.0, cy - ay - 2.0, 30.0 * breast, 14.0 * breast), 15.0, below=-50.0
                )
        ccy, cax, cay = self.cavity(z)
        cavity_shape = c.ellipse(0.0, ccy, cax, cay, ay_back=cay * 0.95, power=2.3)
        c.paint(cavity_shape, hu.fat)
        return c.full_mask(cavity_shape)

    def _lungs(self, c: _Canvas, z: float, hu: _HU, cavity: NDArray[np.bool_]) -> None:
        apex = min(1.0, math.sqrt(max(0.0, (148.0 - z) / 55.0)))
        if apex <= 0:
            return
        ccy, _, _ = self.cavity(z)
        lungs = np.zeros(c.img.shape, dtype=bool)
        for side, semi_x, semi_y in ((-1.0, 64.0, 96.0), (1.0, 61.0, 94.0)):
            cx = side * (74.0 - 26.0 * (1 - apex)) * self.scale
            cy = ccy + 12.0 + 14.0 * (1 - apex)
            shape = c.ellipse(cx, cy, semi_x * apex * self.scale, semi_y * apex * self.scale)
            if shape is not None:
                lungs[shape[0]] |= shape[1]
        lungs &= cavity
        # dependent (posterior) lung is denser in a supine patient
        gradient = (hu.lung + 0.35 * (c.y - ccy)).astype(np.float32)
        np.copyto(c.img, np.broadcast_to(gradient[:, None], c.img.shape), where=lungs)
        # hilar vessels and their branches: dots, larger near the hilum
        for (hx, hy, hz), directions in self.rays:
            t = (z - hz) / directions[:, 2]
            ok = (t > 8.0) & (t < 170.0)  # not at the hilum itself, where the rays all meet
            for d, tt in zip(directions[ok], t[ok], strict=True):
                x = hx + tt * d[0] * 1.6
                y = hy + tt * d[1] * 1.3
                r = 0.9 + 4.5 * math.exp(-tt / 50.0)
                c.disc(x, y, r, hu.pulmonary_vessel, clip=lungs)

    def _domes(self, z: float) -> tuple[float, float]:
        """Radii of the right and left diaphragm domes cut at height z (0 above them)."""
        right = math.sqrt(max(0.0, -46.0 - z) * 260.0)
        left = math.sqrt(max(0.0, -57.0 - z) * 260.0)
        return right, left

    def _abdomen(self, c: _Canvas, z: float, hu: _HU, cavity: NDArray[np.bool_]) -> None:
        right, left = self._domes(z)
        if left > 0:
            dome = c.full_mask(c.ellipse(62.0, -8.0, left * 1.2, left)) & cavity
            c.paint(c.ellipse(62.0, -8.0, left * 1.2, left), 30.0, clip=dome)
            c.paint(c.ellipse(92.0, 48.0, 30.0, 42.0, angle_deg=-30.0), hu.spleen, clip=dome)
            stomach = c.ellipse(52.0, -12.0, 40.0, 32.0, angle_deg=20.0)
            c.paint(stomach, 15.0, clip=dome)
            if stomach is not None:
                air = c.full_mask(stomach) & dome
                air[c.y > -26.0, :] = False  # gas rises anteriorly in a supine patient
                c.img[air] = hu.air
        if right > 0:
            # the left lobe of the liver reaches across the midline, over the stomach
            liver = c.full_mask(c.ellipse(-60.0, -8.0, right * 1.2, right)) & cavity
            c.paint(c.ellipse(-38.0, -6.0, 128.0, 92.0, angle_deg=25.0), hu.liver, clip=liver)
            c.disc(-18.0, 30.0, 11.0, hu.ivc)

    def _mediastinum(self, c: _Canvas, z: float, hu: _HU) -> None:
        upper = _smooth(z, 20.0, 50.0) * (1 - _smooth(z, 120.0, 150.0))
        if upper > 0:
            c.paint(c.ellipse(-4.0, 8.0, 40.0 * upper, 62.0 * upper), hu.fat)
        c.paint(c.ellipse(10.0, 46.0, 26.0, 16.0), hu.fat)  # posterior mediastinum
        c.disc(6.0, 46.0 - 0.08 * z, 6.5, hu.muscle)  # oesophagus

    def _heart(self, c: _Canvas, z: float, hu: _HU) -> None:
        cx, cy, a, b = self.heart_frame(z)
        if a <= 0:
            return

        def chamber(u: float, w: float, su: float, sw: float, zc: float, hz: float, value: float) -> None:
            p = _profile(z, zc, hz)
            if p > 0:
                x = cx + u * _U[0] + w * _W[0]
                y = cy + u * _U[1] + w * _W[1]
                c.paint(c.ellipse(x, y, su * p, sw * p, angle_deg=_HEART_ANGLE), value)

        c.paint(c.ellipse(cx, cy, a + 4.0, b + 4.0, angle_deg=_HEART_ANGLE), hu.fat)  # epicardial fat
        c.paint(c.ellipse(cx, cy, a, b, angle_deg=_HEART_ANGLE), hu.myocardium)
        # ventricles towards the apex, atria at the base, 4-5 mm of wall at the valve planes
        chamber(11.0, 15.0, 36.0, 15.0, -15.0, 36.0, hu.left_blood)  # LV
        chamber(14.0, -24.0, 33.0, 12.0, -12.0, 33.0, hu.right_blood)  # RV
        chamber(-41.0, 14.0, 17.0, 17.0, 20.0, 18.0, hu.left_blood)  # LA
        chamber(-42.0, -19.0, 17.0, 17.0, 4.0, 28.0, hu.right_blood)  # RA
        chamber(18.0, 26.0, 7.0, 5.0, -25.0, 14.0, hu.myocardium)  # papillary muscles
        chamber(26.0, 6.0, 6.0, 5.0, -22.0, 13.0, hu.myocardium)

    def _great_vessels(self, c: _Canvas, z: float, hu: _HU) -> None:
        dx, dy = self.heart_dx, self.heart_dy
        if 12.0 < z < 80.0:
            c.disc(-5.0 + dx, -2.0 + dy, 14.0 + 0.04 * (z - 12.0), hu.left_blood)  # ascending aorta
        self.arch.draw(c, z, hu.left_blood)
        if z < 80.0:
            c.disc(*self.descending_aorta(z), hu.left_blood)
        if 18.0 < z < 110.0:
            c.disc(-33.0 + dx, -4.0, 10.0, hu.svc)
        if -48.0 < z < 0.0:
            c.disc(-18.0 + dx, 26.0, 11.0, hu.ivc)
        for tube in self.pulmonary:
            tube.draw(c, z, hu.right_blood)
        for tube in self.supra_aortic:
            tube.draw(c, z, hu.left_blood)

    def _airways(self, c: _Canvas, z: float, hu: _HU) -> None:
        if z > 64.0:
            c.disc(0.0, 30.0 - 0.05 * (z - 64.0), 11.0, hu.muscle)
            c.disc(0.0, 30.0 - 0.05 * (z - 64.0), 8.5, hu.air)
        for tube in self.bronchi:
            tube.draw(c, z, hu.muscle, extra_mm=2.0)
        for tube in self.bronchi:
            tube.draw(c, z, hu.air)

    def _bones(self, c: _Canvas, z: float, hu: _HU) -> None:
        ccy, cax, cay = self.cavity(z)
        # paraspinal muscles first: the spine and ribs lie on them
        vy = ccy + cay * 0.95 - 26.0
        for side in (-1.0, 1.0):
            c.paint(c.ellipse(side * 31.0, vy + 30.0, 23.0, 19.0), hu.muscle)

        # vertebra: body with cortex and marrow, a disc every level, posterior arch
        level = (z + self.level_phase) % 27.0
        body_y = vy - 4.0
        if level < 5.0:
            c.paint(c.ellipse(0.0, body_y, 20.0, 16.0), hu.disc)
        else:
            c.paint(c.ellipse(0.0, body_y, 20.0, 16.0), hu.cortical_bone)
            c.paint(c.ellipse(0.0, body_y, 18.0, 14.0), hu.marrow)
        canal_y = body_y + 26.0
        if 7.0 < level < 22.0:
            c.paint(c.ellipse(0.0, canal_y + 1.0, 17.0, 13.0), hu.cortical_bone * 0.8)
            c.paint(c.ellipse(0.0, canal_y + 1.0, 14.0, 10.0), hu.marrow)
        if 9.0 < level < 24.0:
            c.paint(c.ellipse(0.0, canal_y + 18.0, 4.0, 9.0), hu.cortical_bone * 0.8)
        if 6.0 < level < 16.0:
            for side in (-1.0, 1.0):
                c.paint(c.ellipse(side * 24.0, canal_y + 2.0, 12.0, 4.5), hu.cortical_bone * 0.8)
        c.paint(c.ellipse(0.0, canal_y - 1.0, 9.0, 8.0), hu.cord)

        # ribs: oblique sections around the cage; a rib is lower anteriorly than posteriorly
        if -135.0 < z < 140.0:
            cortex, marrow = [], []
            for side in (-1.0, 1.0):
                for theta in np.linspace(math.radians(100.0), math.radians(-62.0), 17):
                    arc = (math.radians(100.0) - theta) * (cax + cay) / 2.0
                    if (z + 0.33 * arc + self.rib_phase) % 27.0 >= 11.0:
                        continue
                    x = side * math.cos(theta) * (cax + 6.0)
                    y = ccy + math.sin(theta) * (cay + 6.0)
                    tangent = math.degrees(
                        math.atan2(math.cos(theta) * (cay + 6.0), -side * math.sin(theta) * (cax + 6.0))
                    )
                    cortex.append((x, y, tangent))
            for x, y, angle in cortex:
                c.paint(c.ellipse(x, y, 11.0, 4.8, angle_deg=angle), hu.cortical_bone * 0.9)
                marrow.append((x, y, angle))
            for x, y, angle in marrow:
                c.paint(c.ellipse(x, y, 9.5, 2.8, angle_deg=angle), hu.marrow)

        if -60.0 < z < 130.0:  # sternum
            sy = ccy - cay - 4.0
            c.paint(c.ellipse(0.0, sy, 15.0, 6.5), hu.cortical_bone * 0.8)
            c.paint(c.ellipse(0.0, sy, 13.0, 4.5), hu.marrow)
        scap = _profile(z, 85.0, 65.0)
        if scap > 0:  # scapulae, behind the ribs
            for side in (-1.0, 1.0):
                x = side * (cax - 32.0)
                y = ccy + cay * 0.95 * math.sqrt(max(0.0, 1 - (x / (cax + 6.0)) ** 2)) + 15.0
                c.paint(c.ellipse(x, y, 42.0 * scap, 3.5, angle_deg=-side * 28.0), hu.cortical_bone * 0.7)
        if z > 115.0:  # clavicles
            for side in (-1.0, 1.0):
                c.paint(
                    c.ellipse(side * 48.0, ccy - cay - 2.0, 32.0, 7.0, angle_deg=side * 12.0),
                    hu.cortical_bone * 0.8,
                )

    def calcium(self, c: _Canvas, z: float, truths: Sequence[CalcificationTruth]) -> None:
        """Calcifications last: 130 HU at the rim rising to the peak, never lowered by the blur."""
        for t in truths:
            dz = z - t.centre_mm[2]
            if abs(dz) >= t.radius_mm:
                continue
            win = c.window(t.centre_mm[0], t.centre_mm[1], t.radius_mm, t.radius_mm)
            if win is None:
                continue
            dx = c.x[win[1]][None, :] - t.centre_mm[0]
            dy = c.y[win[0]][:, None] - t.centre_mm[1]
            r2 = (dx * dx + dy * dy + dz * dz) / (t.radius_mm**2)
            value = 130.0 + (t.peak_hu - 130.0) * (1.0 - r2)
            sub = c.img[win]
            np.copyto(sub, np.maximum(sub, value), where=r2 < 1.0)


def ct_slice_hu(
    seed: int = 0,
    z_mm: float = 0.0,
    *,
    rows: int = 512,
    contrast: bool = True,
    noise: bool = True,
    calcification_count: int = 6,
) -> F32:
    """One axial slice of the synthetic chest in HU: ``rows`` x ``rows`` over 358.4 mm centred on x=y=0.

    The pixel values of :func:`ct_chest` at the same z (up to noise, which is keyed to the series).
    """
    chest = _chest(seed)
    truths = chest.calcifications(seed, calcification_count)
    return _ct_slice(chest, seed, z_mm, rows, contrast, noise, truths, "ct_slice_hu")


def _chest(seed: int) -> _Chest:
    # the CT patient is slot 1; only the sex (breasts) of the patient shapes the anatomy
    return _Chest(seed, _patient(seed, 1, dt.date(2024, 1, 1)).sex)


def _ct_slice(
    chest: _Chest,
    seed: int,
    z: float,
    rows: int,
    contrast: bool,
    noise: bool,
    truths: Sequence[CalcificationTruth],
    noise_key: object,
) -> F32:
    spacing = _CT_FOV_MM / rows
    origin = -(rows - 1) / 2.0 * spacing
    canvas = _Canvas(rows, rows, spacing, -1000.0, x0=origin, y0=origin)
    chest.draw(canvas, z, _CONTRAST if contrast else _NON_CONTRAST)
    img = _blur(canvas.img)
    canvas.img = img
    chest.calcium(canvas, z, truths)
    if noise:
        rng = _rng("ct-noise", seed, noise_key, round(z, 3))
        # white noise through the same blur gives CT-like grain; 30 HU white -> about 11 HU
        img += _blur(rng.standard_normal(img.shape, dtype=np.float32) * np.float32(30.0))
    return img


def ct_calcifications(seed: int = 0, *, count: int = 6) -> list[CalcificationTruth]:
    """Ground truth of the coronary calcifications that :func:`ct_chest` paints for ``seed``."""
    return _chest(seed).calcifications(seed, count)


def ct_chest(
    seed: int = 0,
    *,
    slices: int = 300,
    rows: int = 512,
    slice_thickness_mm: float = 1.0,
    kvp: int = 120,
    contrast: bool = True,
    slice_spacing_mm: float | None = None,
    calcification_count: int = 6,
) -> SyntheticStudy:
    """A chest CT: axial slices centred on the heart, head first, superior to inferior.

    Contrast (default) gives an arterial-phase CTA-like series; ``contrast=False`` with 3 mm
    slices is the shape of a calcium-scoring scan. Pixel spacing is 358.4 mm / ``rows``.
    """
    return _ct_study(
        seed,
        key="ct-chest",
        slices=slices,
        rows=rows,
        thickness=slice_thickness_mm,
        spacing=slice_spacing_mm or slice_thickness_mm,
        kvp=kvp,
        contrast=contrast,
        calcification_count=calcification_count,
    )


def small_ct(
    seed: int = 0,
    *,
    slices: int = 5,
    rows: int = 64,
    slice_thickness_mm: float = 5.0,
    contrast: bool = True,
) -> SyntheticStudy:
    """A tiny chest CT through the heart (same generator as :func:`ct_chest`), for fast tests."""
    return _ct_study(
        seed,
        key="ct-chest-small",
        slices=slices,
        rows=rows,
        thickness=slice_thickness_mm,
        spacing=slice_thickness_mm,
        kvp=120,
        contrast=contrast,
        calcification_count=6,
    )


def _ct_study(
    seed: int,
    *,
    key: str,
    slices: int,
    rows: int,
    thickness: float,
    spacing: float,
    kvp: int,
    contrast: bool,
    calcification_count: int,
) -> SyntheticStudy:
    if slices < 1 or rows < 8:
        raise ValueError("a CT needs at least one slice of 8x8 pixels")
    params = (key, slices, rows, thickness, spacing, kvp, contrast, calcification_count)
    description = "CT CHEST WITH CONTRAST" if contrast else "CT CARDIAC CALCIUM SCORE"
    study = _study(seed, 1, description, params)
    chest = _chest(seed)
    truths = tuple(chest.calcifications(seed, calcification_count))
    series_uid = _uid("series", seed, *params, 1)
    frame_uid = _uid("frame-of-reference", seed, *params)
    pixel_mm = _CT_FOV_MM / rows
    origin = -(rows - 1) / 2.0 * pixel_mm
    z_top = (slices - 1) / 2.0 * spacing

    def generate() -> Iterator[Dataset]:
        for i in range(slices):
            z = z_top - i * spacing
            hu = _ct_slice(chest, seed, z, rows, contrast, True, truths, params)
            stored = (np.clip(np.rint(hu), -1024.0, 3071.0) + 1024.0).astype(np.int16)
            ds = _base_dataset(CTImageStorage, _uid("sop", seed, *params, i), study, "CT")
            _series(
                ds,
                uid=series_uid,
                number=2,  # series 1 on a scanner is the scout, which is not generated
                description=("Chest " if contrast else "Calcium score ") + f"{thickness:g}mm",
                body_part="CHEST",
                protocol="CHEST CTA" if contrast else "CARDIAC CALCIUM SCORE",
                time=_time_plus(study.time, 240.0),
            )
            _equipment(ds, "Phantom CT 128", "SYNCT01")
            ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
            ds.PatientPosition = "HFS"
            ds.FrameOfReferenceUID = frame_uid
            ds.PositionReferenceIndicator = ""
            ds.AcquisitionNumber = 1
            ds.InstanceNumber = i + 1
            ds.AcquisitionDate = ds.ContentDate = study.date
            ds.AcquisitionTime = ds.ContentTime = _time_plus(study.time, 250.0 + 0.02 * i)
            ds.ImagePositionPatient = [_ds(origin), _ds(origin), _ds(z)]
            ds.ImageOrientationPatient = ["1", "0", "0", "0", "1", "0"]
            ds.SliceLocation = _ds(z)
            ds.SliceThickness = _ds(thickness)
            ds.SpacingBetweenSlices = _ds(spacing)
            ds.PixelSpacing = [_ds(pixel_mm), _ds(pixel_mm)]
            ds.KVP = _ds(kvp)
            ds.DataCollectionDiameter = "500"
            ds.ReconstructionDiameter = _ds(_CT_FOV_MM)
            ds.DistanceSourceToDetector = "1040"
            ds.DistanceSourceToPatient = "570"
            ds.GantryDetectorTilt = "0"
            ds.TableHeight = "150"
            ds.RotationDirection = "CW"
            ds.ExposureTime = 500
            ds.XRayTubeCurrent = 180
            ds.Exposure = 90
            ds.FilterType = "BODY FILTER"
            ds.GeneratorPower = 22
            ds.FocalSpots = "1.2"
            ds.ConvolutionKernel = "B30f" if contrast else "B35f"
            ds.SpiralPitchFactor = 0.9
            ds.CTDIvol = 8.4 if contrast else 3.1
            ds.CTDIPhantomTypeCodeSequence = DicomSequence(
                [_code("113691", "DCM", "IEC Body Dosimetry Phantom")]
            )
            if contrast:
                ds.ContrastBolusAgent = "Iohexol 350 mgI/ml"
                ds.ContrastBolusRoute = "IV"
                ds.ContrastBolusVolume = "70"
                ds.ContrastFlowRate = ["5"]
                ds.ContrastBolusIngredient = "IODINE"
                ds.ContrastBolusIngredientConcentration = "350"
            ds.RescaleIntercept = "-1024"
            ds.RescaleSlope = "1"
            ds.RescaleType = "HU"
            ds.WindowCenter = ["40", "-600"]
            ds.WindowWidth = ["400", "1500"]
            ds.WindowCenterWidthExplanation = ["MEDIASTINUM", "LUNG"]
            _pixels(ds, stored, bits_stored=16)
            yield ds

    return _study_of(key, study, description, "CT", slices, generate, series_count=1, calcifications=truths)


# --------------------------------------------------------------------------------------------
# MR brain phantom: one label map per slice, turned into signal per sequence, so the three
# series show the same anatomy with the contrast each sequence gives.

_AIR, _FAT, _BONE, _MARROW, _CSF, _GM, _WM, _VITREOUS, _MUSCLE = range(9)


@dataclass(frozen=True)
class _MrSequence:
    name: str
    series_description: str
    signal: tuple[float, ...]  # by label, in the order above
    repetition_ms: float
    echo_ms: float
    inversion_ms: float | None
    scanning_sequence: tuple[str, ...]
    sequence_variant: tuple[str, ...]
    flip_angle: float
    echo_train: int
    window: tuple[int, int]


_MR_SEQUENCES = (
    # T1: fat and white matter bright, CSF dark
    _MrSequence("T1", "AX T1 SE", (0, 900, 30, 720, 230, 560, 830, 210, 430), 500, 12, None, ("SE",), ("SP",), 90, 1, (520, 1000)),
    # T2: fluid bright, grey matter brighter than white
    _MrSequence("T2", "AX T2 TSE", (0, 620, 30, 460, 1900, 1020, 720, 1850, 380), 4200, 100, None, ("SE",), ("SK", "SP"), 150, 16, (950, 1900)),
    # FLAIR: T2 weighting with the fluid signal nulled by the inversion
    _MrSequence("FLAIR", "AX T2 FLAIR", (0, 520, 30, 380, 110, 960, 700, 140, 340), 9000, 90, 2500, ("SE", "IR"), ("SK", "SP", "MP"), 150, 18, (620, 1240)),
)  # fmt: skip
_MR_ROWS = 256
_MR_FOV_MM = 230.0
_MR_SLICES = 24
_MR_THICKNESS_MM = 5.0
_MR_SPACING_MM = 6.0


def _ellipsoid(
    c: _Canvas,
    z: float,
    centre: tuple[float, float, float],
    semi: tuple[float, float, float],
    *,
    angle_deg: float = 0.0,
) -> tuple[tuple[slice, slice], NDArray[np.bool_]] | None:
    p = _profile(z, centre[2], semi[2])
    if p <= 0:
        return None
    return c.ellipse(centre[0], centre[1], semi[0] * p, semi[1] * p, angle_deg=angle_deg)


def _brain_labels(c: _Canvas, z: float, rng_phase: float) -> None:
    """Paint tissue labels of an axial head slice at height z (mm; 0 near the skull base)."""
    head_c, head = (0.0, 6.0, 8.0), (74.0, 95.0, 100.0)

    def shell(inset: float, label: int) -> None:
        semi = (head[0] - inset, head[1] - inset, head[2] - inset)
        c.paint(_ellipsoid(c, z, head_c, semi), label)

    shell(0.0, _FAT)  # scalp
    shell(5.0, _BONE)  # outer table
    shell(6.5, _MARROW)  # diploe
    shell(9.5, _BONE)  # inner table
    shell(11.0, _CSF)
    intracranial = c.full_mask(_ellipsoid(c, z, head_c, (head[0] - 11.0, head[1] - 11.0, head[2] - 11.0)))

    # temporal lobes first: where the cerebrum overlaps them it is one brain
    for side in (-1.0, 1.0):
        c.paint(_ellipsoid(c, z, (side * 40.0, -6.0, -16.0), (24.0, 38.0, 22.0)), _GM, clip=intracranial)
        c.paint(_ellipsoid(c, z, (side * 40.0, -4.0, -14.0), (14.0, 26.0, 13.0)), _WM)
        c.paint(_ellipsoid(c, z, (side * 30.0, 4.0, -14.0), (3.0, 9.0, 5.0)), _CSF)  # temporal horn

    # cerebrum: a flatter base than top; gyri as an angular pattern with sulci reaching in
    cz, semi_x, semi_y = 16.0, 60.0, 80.0
    half = 74.0 if z >= cz else 46.0
    p = _profile(z, cz, half)
    if p > 0:
        ax, ay = semi_x * p, semi_y * p
        shape = c.ellipse(0.0, 4.0, ax, ay)
        if shape is not None:
            win, mask = shape
            mask = mask & intracranial[win]
            xx = c.x[win[1]][None, :]
            yy = c.y[win[0]][:, None] - 4.0
            rho = np.sqrt((xx / ax) ** 2 + (yy / ay) ** 2)
            theta = np.arctan2(yy, np.abs(xx))  # mirrored: the hemispheres fold alike
            phase = 30.0 * theta + 2.5 * np.sin(4.0 * theta + z / 13.0) + z / 7.0 + rng_phase
            wave = np.cos(phase)
            # white matter reaches into the middle of each gyrus; sulci cut in between
            core = np.sqrt(np.clip(-wave, 0.0, 1.0))
            labels = np.full(mask.shape, _GM, dtype=np.float32)
            labels[rho < 0.75 + 0.15 * core] = _WM
            labels[(wave > 0.88) & (rho > 0.8)] = _CSF
            fissure = np.broadcast_to(np.abs(xx) < 1.6, mask.shape)
            if z < 38.0:
                fissure = fissure & (np.abs(yy) > 0.55 * ay)  # corpus callosum joins the hemispheres
            labels[fissure & (rho > 0.2)] = _CSF
            sub = c.img[win]
            sub[mask] = labels[mask]

    # deep grey nuclei and the ventricles
    for side in (-1.0, 1.0):
        c.paint(_ellipsoid(c, z, (side * 13.0, -14.0, 22.0), (7.0, 10.0, 12.0)), _GM)  # caudate
        c.paint(_ellipsoid(c, z, (side * 25.0, -2.0, 10.0), (6.0, 16.0, 10.0)), _GM)  # putamen
        c.paint(_ellipsoid(c, z, (side * 10.0, 14.0, 10.0), (9.0, 11.0, 9.0)), _GM)  # thalamus
        # lateral ventricles: frontal horns close to the midline, bodies diverging backwards
        c.paint(_ellipsoid(c, z, (side * 10.0, -6.0, 24.0), (6.0, 30.0, 15.0), angle_deg=-side * 10.0), _CSF)
        c.paint(_ellipsoid(c, z, (side * 19.0, 26.0, 18.0), (7.0, 13.0, 10.0), angle_deg=-side * 25.0), _CSF)
    c.paint(_ellipsoid(c, z, (0.0, 6.0, 8.0), (2.0, 12.0, 8.0)), _CSF)  # third ventricle

    # posterior fossa: cerebellum with a white-matter core, brainstem, fourth ventricle
    c.paint(_ellipsoid(c, z, (0.0, 48.0, -28.0), (50.0, 32.0, 22.0)), _GM, clip=intracranial)
    c.paint(_ellipsoid(c, z, (0.0, 44.0, -26.0), (24.0, 14.0, 12.0)), _WM)
    c.paint(_ellipsoid(c, z, (0.0, 14.0, -22.0), (13.0, 13.0, 30.0)), _WM)
    c.paint(_ellipsoid(c, z, (0.0, 30.0, -28.0), (5.0, 5.0, 6.0)), _CSF)

    # skull base, sinuses and orbits
    for side in (-1.0, 1.0):
        c.paint(_ellipsoid(c, z, (side * 34.0, 18.0, -36.0), (24.0, 6.0, 7.0), angle_deg=side * 40.0), _BONE)
        c.paint(_ellipsoid(c, z, (side * 31.0, -62.0, -34.0), (17.0, 22.0, 15.0)), _FAT)  # orbital fat
        c.paint(_ellipsoid(c, z, (side * 31.0, -68.0, -34.0), (12.0, 12.0, 12.0)), _VITREOUS)
    c.paint(_ellipsoid(c, z, (0.0, -26.0, -36.0), (12.0, 11.0, 10.0)), _AIR)  # sphenoid sinus
    c.paint(_ellipsoid(c, z, (0.0, -58.0, -34.0), (8.0, 18.0, 11.0)), _AIR)  # ethmoid cells
    c.paint(_ellipsoid(c, z, (0.0, 2.0, -42.0), (8.0, 12.0, 12.0)), _MARROW)  # clivus


def mr_brain(seed: int = 0, *, slices: int = _MR_SLICES, rows: int = _MR_ROWS) -> SyntheticStudy:
    """MR brain: axial T1, T2 and FLAIR series over the same slice positions."""
    params = ("mr-brain", slices, rows)
    description = "MR BRAIN WITHOUT CONTRAST"
    study = _study(seed, 2, description, params)
    rng = _rng("brain", seed)
    rng_phase = float(rng.uniform(0.0, 2 * math.pi))  # every patient folds their cortex differently
    pixel_mm = _MR_FOV_MM / rows
    origin = -(rows - 1) / 2.0 * pixel_mm
    frame_uid = _uid("frame-of-reference", seed, *params)
    z0 = -44.0

    def generate() -> Iterator[Dataset]:
        label_maps = []
        for k in range(slices):
            z = z0 + k * _MR_SPACING_MM * (_MR_SLICES / slices)
            canvas = _Canvas(rows, rows, pixel_mm, float(_AIR), x0=origin, y0=origin)
            _brain_labels(canvas, z, rng_phase)
            label_maps.append((z, canvas.img.astype(np.int8)))
        # coil sensitivity: brighter towards the back of the head, where the coil is closest
        bias = (1.0 + 0.12 * (np.linspace(-1.0, 1.0, rows, dtype=np.float32)))[:, None]
        # series 1 would be the localizer, which is not generated
        for number, seq in enumerate(_MR_SEQUENCES, start=2):
            series_uid = _uid("series", seed, *params, seq.name)
            lut = np.asarray(seq.signal, dtype=np.float32)
            for k, (z, labels) in enumerate(label_maps):
                signal = _blur(lut[labels] * bias)
                noise = _rng("mr-noise", seed, *params, seq.name, k).standard_normal(
                    (2, rows, rows), dtype=np.float32
                )
                # magnitude of complex data: Rician noise, never negative, as on a real scanner
                sigma = np.float32(14.0)
                magnitude = np.sqrt((signal + sigma * noise[0]) ** 2 + (sigma * noise[1]) ** 2)
                pixels = np.clip(np.rint(magnitude), 0, 4095).astype(np.uint16)
                ds = _base_dataset(MRImageStorage, _uid("sop", seed, *params, seq.name, k), study, "MR")
                _series(
                    ds,
                    uid=series_uid,
                    number=number,
                    description=seq.series_description,
                    body_part="HEAD",
                    protocol="BRAIN ROUTINE",
                    time=_time_plus(study.time, 300.0 * (number - 2)),
                )
                _equipment(ds, "Phantom MR 3T", "SYNMR01")
                ds.ImageType = ["ORIGINAL", "PRIMARY", "OTHER"]
                ds.PatientPosition = "HFS"
                ds.FrameOfReferenceUID = frame_uid
                ds.PositionReferenceIndicator = ""
                ds.AcquisitionNumber = 1
                ds.InstanceNumber = k + 1
                ds.AcquisitionDate = ds.ContentDate = study.date
                ds.AcquisitionTime = ds.ContentTime = _time_plus(study.time, 300.0 * (number - 2) + 5.0 * k)
                ds.ImagePositionPatient = [_ds(origin), _ds(origin), _ds(z)]
                ds.ImageOrientationPatient = ["1", "0", "0", "0", "1", "0"]
                ds.SliceLocation = _ds(z)
                ds.SliceThickness = _ds(_MR_THICKNESS_MM)
                ds.SpacingBetweenSlices = _ds(_MR_SPACING_MM * (_MR_SLICES / slices))
                ds.PixelSpacing = [_ds(pixel_mm), _ds(pixel_mm)]
                ds.ScanningSequence = list(seq.scanning_sequence)
                ds.SequenceVariant = list(seq.sequence_variant)
                ds.ScanOptions = ""
                ds.MRAcquisitionType = "2D"
                ds.SequenceName = seq.name
                ds.RepetitionTime = _ds(seq.repetition_ms)
                ds.EchoTime = _ds(seq.echo_ms)
                if seq.inversion_ms is not None:
                    ds.InversionTime = _ds(seq.inversion_ms)
                ds.EchoTrainLength = seq.echo_train
                ds.EchoNumbers = [1]
                ds.NumberOfAverages = "1"
                ds.FlipAngle = _ds(seq.flip_angle)
                ds.MagneticFieldStrength = "3"
                ds.ImagingFrequency = "127.7"
                ds.ImagedNucleus = "1H"
                ds.PixelBandwidth = "200"
                ds.ReceiveCoilName = "HEAD 32"
                ds.TransmitCoilName = "BODY"
                ds.AcquisitionMatrix = [0, rows, rows, 0]
                ds.InPlanePhaseEncodingDirection = "ROW"
                ds.WindowCenter = str(seq.window[0])
                ds.WindowWidth = str(seq.window[1])
                _pixels(ds, pixels, bits_stored=12)
                yield ds

    return _study_of("mr-brain", study, description, "MR", slices * len(_MR_SEQUENCES), generate,
                     series_count=len(_MR_SEQUENCES))


# --------------------------------------------------------------------------------------------
# Chest radiograph: a projection of simple 3D shapes, as tissue-equivalent path lengths.


def _chest_radiograph(seed: int, size: int, female: bool) -> NDArray[np.uint16]:
    """A PA chest radiograph, MONOCHROME2 (bone white), 12-bit, patient's right on image left."""
    rng = _rng("radiograph", seed)
    spacing = 409.6 / size
    origin = -(size - 1) / 2.0 * spacing
    c = _Canvas(size, size, spacing, 0.0, x0=origin, y0=origin)
    x, y = c.x[None, :], c.y[:, None]
    s = float(rng.uniform(0.95, 1.05))

    # soft tissue: neck, shoulders and arms, chest; an elliptic cylinder's thickness per row
    rows_y = [float(v) for v in c.y]
    half_width = np.array(
        [(55.0 + 150.0 * _smooth(v, -195.0, -140.0) - 38.0 * _smooth(v, -140.0, -60.0)) * s for v in rows_y],
        dtype=np.float32,
    )[:, None]
    depth = np.array([120.0 + 100.0 * _smooth(v, -190.0, -120.0) for v in rows_y], dtype=np.float32)[:, None]
    tissue = depth * np.sqrt(np.maximum(1.0 - (x / half_width) ** 2, 0.0)) ** 0.6

    def lump(cx: float, cy: float, ax: float, ay: float, thick: float, sharpness: float = 0.5) -> F32:
        n = ((x - cx) / ax) ** 2 + ((y - cy) / ay) ** 2
        return (thick * np.maximum(1.0 - n, 0.0) ** sharpness).astype(np.float32)

    # lungs as air path lengths, cut by the diaphragm domes and by the mediastinum
    air = np.zeros_like(tissue)
    for cx, ax, dome_y, dome_x in ((-84.0, 72.0, 62.0, -70.0), (86.0, 70.0, 80.0, 72.0)):
        lung = lump(cx * s, -10.0, ax * s, 165.0, 125.0, 0.3)
        dome = dome_y + 0.005 * (x - dome_x * s) ** 2
        lung *= np.clip((dome - y) / 25.0, 0.0, 1.0) ** 0.6
        air = np.maximum(air, lung)
    mediastinum = (
        lump(34.0 * s, 52.0, 76.0 * s, 62.0, 150.0, 0.25)  # left ventricle, apex to the patient's left
        + lump(-22.0 * s, 40.0, 36.0 * s, 52.0, 110.0, 0.25)  # right atrium
        + lump(30.0 * s, -88.0, 16.0, 15.0, 70.0, 0.3)  # aortic knob
        + lump(-30.0 * s, -62.0, 17.0, 62.0, 70.0, 0.25)  # superior vena cava, ascending aorta
        + lump(0.0, -70.0, 24.0, 140.0, 90.0, 0.3)  # midline structures
        + lump(-48.0 * s, -28.0, 17.0, 26.0, 55.0)  # hila
        + lump(50.0 * s, -34.0, 16.0, 24.0, 55.0)
    )
    air = np.maximum(air - mediastinum, 0.0)
    air += np.where((np.abs(x) < 8.0) & (y < -95.0), 14.0, 0.0).astype(np.float32)  # trachea
    if female:
        tissue = (
            tissue
            + lump(-100.0 * s, 95.0, 80.0, 50.0, 45.0, 0.7)
            + lump(100.0 * s, 95.0, 80.0, 50.0, 45.0, 0.7)
        )

    # vessels fanning out from each hilum, thinning towards the periphery
    for hx, sign in ((-48.0 * s, -1.0), (50.0 * s, 1.0)):
        for _ in range(18):
            angle = float(rng.uniform(-1.3, 1.3)) + (0.0 if sign > 0 else math.pi)
            angle = math.atan2(math.sin(angle) * 0.8 + 0.25, math.cos(angle))
            length = float(rng.uniform(55.0, 120.0))
            x0_, y0_ = hx, float(rng.uniform(-45.0, -10.0))
            radius = float(rng.uniform(2.5, 4.0))
            for _k in range(4):
                a = angle + float(rng.normal(0.0, 0.15))
                x1_, y1_ = x0_ + math.cos(a) * length / 4, y0_ + math.sin(a) * length / 4
                seg = c.segment((x0_, y0_), (x1_, y1_), radius, radius * 0.75)
                if seg is not None:
                    win, thick, _ = seg
                    air[win] = np.maximum(air[win] - thick * 2.0, 0.0)
                x0_, y0_, radius = x1_, y1_, radius * 0.75

    # bone, as mm of tissue-equivalent thickness
    bone = np.zeros_like(tissue)

    def band(
        a0: float,
        a1: float,
        centre: Callable[[NDArray[np.float32]], NDArray[np.float32]],
        half: float,
        weight: float,
    ) -> None:
        """A curved bony band on both sides, ``centre`` giving its mid-line y from |x|."""
        for side in (-1.0, 1.0):
            win = c.window(side * (a0 + a1) / 2, 0.0, (a1 - a0) / 2, 205.0)
            if win is None:
                continue
            yc = centre(np.abs(c.x[win[1]]))
            slope = np.gradient(yc, c.spacing)
            lo, hi = float(yc.min()) - 3 * half, float(yc.max()) + 3 * half
            r0 = max(0, math.ceil((lo - c.y0) / c.spacing))
            r1 = min(size, math.floor((hi - c.y0) / c.spacing) + 1)
            if r0 >= r1:
                continue
            # perpendicular distance to the curve, so steep parts keep their width
            d = (c.y[r0:r1, None] - yc[None, :]) / (half * np.sqrt(1.0 + slope * slope))[None, :]
            # cortex at the edges shows brighter than the middle, as a rib seen on end
            profile = np.sqrt(np.maximum(1.0 - d * d, 0.0)) * (0.55 + 0.45 * d * d)
            a = np.abs(c.x[win[1]])
            taper = np.clip((a1 - a) / 18.0, 0.0, 1.0) * np.clip((a - a0) / 6.0, 0.0, 1.0)
            bone[r0:r1, win[1]] += weight * profile * taper[None, :]

    # posterior ribs arch up from the spine and fall along the chest wall; anterior ribs come
    # back from the wall, running down towards the sternum
    chest_edge = 152.0 * s
    lateral_drop = -0.25 * (chest_edge - 16.0) + 0.0042 * (chest_edge - 16.0) ** 2
    for k in range(11):
        yk = -166.0 + 24.0 * k + float(rng.uniform(-1.5, 1.5))

        def posterior(a: NDArray[np.float32], yk: float = yk) -> NDArray[np.float32]:
            return (yk - 0.25 * (a - 16.0) + 0.0042 * (a - 16.0) ** 2).astype(np.float32)

        def anterior(a: NDArray[np.float32], yk: float = yk) -> NDArray[np.float32]:
            back = chest_edge - a
            return (yk + lateral_drop + 0.55 * back + 0.001 * back**2).astype(np.float32)

        band(16.0, chest_edge, posterior, 5.2, 16.0)
        if k < 8:
            band(45.0, chest_edge, anterior, 6.5, 7.0)

    def clavicle(a: NDArray[np.float32]) -> NDArray[np.float32]:
        return (-150.0 - 22.0 * (a / 150.0) ** 1.6 + 5.0 * np.sin(a / 28.0)).astype(np.float32)

    band(10.0, 165.0 * s, clavicle, 7.0, 24.0)
    for side in (-1.0, 1.0):
        bone += lump(side * 192.0 * s, -150.0, 30.0, 32.0, 45.0)  # humeral heads
        bone += lump(side * 150.0 * s, -118.0, 22.0, 60.0, 8.0)  # scapulae
    level = (y + 205.0) % 27.0
    vertebrae = np.where(np.abs(x) < 21.0, 16.0 * np.sqrt(np.maximum(1 - (x / 21.0) ** 2, 0.0)), 0.0)
    bone += (vertebrae * np.where(level < 5.0, 0.4, 1.0)).astype(np.float32)
    for side in (-1.0, 1.0):  # pedicles: rings either side of each vertebral body
        ring = np.abs(np.hypot((x - side * 15.0) / 5.0, (level - 13.0) / 7.0) - 1.0) < 0.35
        bone += np.where(ring, 5.0, 0.0).astype(np.float32)

    path = np.maximum(tissue - air, 0.0) + 3.0 * bone
    # log-domain display curve of a processed radiograph: lungs dark grey, mediastinum white
    shade = 1.0 - np.exp(-path / 140.0)
    image = _blur(shade * 3800.0 + 100.0)
    image += _blur(
        _rng("radiograph-noise", seed).standard_normal(image.shape, dtype=np.float32) * np.float32(28.0)
    )
    return np.clip(np.rint(image), 0, 4095).astype(np.uint16)


def cr_chest(seed: int = 0, *, size: int = 2048) -> SyntheticStudy:
    """A PA chest radiograph: one Digital X-Ray Image (For Presentation), 12-bit MONOCHROME2."""
    params = ("cr-chest", size)
    description = "XR CHEST PA"
    study = _study(seed, 3, description, params)
    series_uid = _uid("series", seed, *params, 1)
    spacing = 409.6 / size

    def generate() -> Iterator[Dataset]:
        pixels = _chest_radiograph(seed, size, study.patient.sex == "F")
        ds = _base_dataset(DigitalXRayImageStorageForPresentation, _uid("sop", seed, *params, 0), study, "DX")
        _series(
            ds,
            uid=series_uid,
            number=1,
            description="PA",
            body_part="CHEST",
            protocol="CHEST PA",
            time=study.time,
        )
        _equipment(ds, "Phantom DR 43", "SYNDX01")
        ds.PresentationIntentType = "FOR PRESENTATION"
        ds.ImageType = ["ORIGINAL", "PRIMARY"]
        ds.InstanceNumber = 1
        ds.AcquisitionDate = ds.ContentDate = study.date
        ds.AcquisitionTime = ds.ContentTime = _time_plus(study.time, 30.0)
        ds.ViewPosition = "PA"
        ds.PatientOrientation = ["L", "F"]
        ds.ImageLaterality = "U"
        ds.AnatomicRegionSequence = DicomSequence([_code("51185008", "SCT", "Chest")])
        ds.ViewCodeSequence = DicomSequence([_code("399348003", "SCT", "postero-anterior")])
        ds.PositionerType = "COLUMN"
        ds.AcquisitionContextSequence = DicomSequence([])
        ds.ImagerPixelSpacing = [_ds(spacing), _ds(spacing)]
        ds.PixelSpacing = [_ds(spacing * 1800.0 / 1980.0), _ds(spacing * 1800.0 / 1980.0)]
        ds.PixelSpacingCalibrationType = "GEOMETRY"
        ds.PixelSpacingCalibrationDescription = "Corrected for the geometric magnification at the patient"
        ds.DistanceSourceToDetector = "1800"
        ds.DistanceSourceToPatient = "1620"
        ds.EstimatedRadiographicMagnificationFactor = _ds(1800.0 / 1620.0)
        ds.DetectorType = "SCINTILLATOR"
        ds.DetectorConfiguration = "AREA"
        ds.KVP = "125"
        ds.ExposureTime = 8
        ds.XRayTubeCurrent = 320
        ds.Exposure = 3
        ds.Grid = ["FOCUSED", "RECIPROCATING"]
        ds.RescaleIntercept = "0"
        ds.RescaleSlope = "1"
        ds.RescaleType = "US"
        ds.PixelIntensityRelationship = "LOG"
        ds.PixelIntensityRelationshipSign = -1  # higher values: less X-ray reached the detector
        ds.PresentationLUTShape = "IDENTITY"
        ds.WindowCenter = "2100"
        ds.WindowWidth = "3600"
        ds.BurnedInAnnotation = "NO"
        ds.LossyImageCompression = "00"
        _pixels(ds, pixels, bits_stored=12)
        yield ds

    return _study_of("cr-chest", study, description, "DX", 1, generate)


# --------------------------------------------------------------------------------------------
# Coronary angiography run: a left coronary tree filling with contrast over the frames.


_Centreline = tuple[NDArray[Any], NDArray[Any], NDArray[Any]]


def _vessel_tree(rng: np.random.Generator) -> list[_Centreline]:
    """Centrelines in pixels as (points, radius, arc length from the ostium) per vessel."""
    vessels: list[_Centreline] = []

    def grow(
        start: tuple[float, float], angle: float, length: float, r0: float, r1: float, arc0: float, depth: int
    ) -> None:
        step = 3.0
        n = max(2, int(length / step))
        bend_rate = float(rng.uniform(-0.012, 0.012))
        wobble = float(rng.uniform(0.0, 2 * math.pi))
        pts = [start]
        for i in range(1, n):
            angle += bend_rate + 0.05 * math.sin(i * 0.15 + wobble)
            px, py = pts[-1]
            pts.append((px + step * math.cos(angle), py + step * math.sin(angle)))
        points = np.asarray(pts)
        radius = np.linspace(r0, r1, n)
        arc = arc0 + step * np.arange(n)
        vessels.append((points, radius, arc))
        if depth == 0:
            return
        for _ in range(int(rng.integers(2, 4))):
            i = int(rng.integers(n // 5, 4 * n // 5))
            side = float(rng.choice([-1.0, 1.0]))
            grow(
                (float(points[i, 0]), float(points[i, 1])),
                angle + side * float(rng.uniform(0.45, 1.0)),
                length * float(rng.uniform(0.35, 0.55)),
                float(radius[i]) * 0.72,
                1.1,
                float(arc[i]),
                depth - 1,
            )

    ostium = (205.0, 150.0)
    vessels.append(
        (np.array([ostium, (222.0, 168.0)]), np.array([6.5, 6.0]), np.array([0.0, 25.0]))
    )  # left main
    grow((222.0, 168.0), math.radians(62.0), 330.0, 5.5, 1.6, 25.0, 2)  # LAD towards the apex
    grow((222.0, 168.0), math.radians(150.0), 240.0, 5.0, 1.5, 25.0, 2)  # circumflex
    return vessels


def _xa_frames(seed: int, frames: int, size: int) -> NDArray[np.uint8]:
    rng = _rng("angiography", seed)
    canvas = _Canvas(size, size, 1.0, 0.0, x0=0.0, y0=0.0)
    thickness = np.zeros((size, size), dtype=np.float32)
    arc = np.zeros((size, size), dtype=np.float32)
    for points, radius, arcs in _vessel_tree(rng):
        scale = size / 512.0
        for i in range(len(points) - 1):
            seg = canvas.segment(
                (points[i, 0] * scale, points[i, 1] * scale),
                (points[i + 1, 0] * scale, points[i + 1, 1] * scale),
                radius[i] * scale,
                radius[i + 1] * scale,
            )
            if seg is None:
                continue
            win, thick, t = seg
            better = thick > thickness[win]
            thickness[win] = np.where(better, thick, thickness[win])
            arc[win] = np.where(better, (arcs[i] + t * (arcs[i + 1] - arcs[i])) * scale, arc[win])
    catheter = np.zeros((size, size), dtype=np.float32)
    path = [(70.0, 0.0), (90.0, 60.0), (140.0, 110.0), (190.0, 135.0), (205.0, 150.0)]
    for (xa, ya), (xb, yb) in zip(path[:-1], path[1:], strict=True):
        seg = canvas.segment((xa * size / 512, ya * size / 512), (xb * size / 512, yb * size / 512), 2.6, 2.6)
        if seg is not None:
            catheter[seg[0]] = np.maximum(catheter[seg[0]], seg[1])

    # static background: lung fields bright, heart shadow, spine, diaphragm at the bottom
    xx, yy = canvas.x[None, :] / size, canvas.y[:, None] / size
    background = (
        185.0
        - 45.0 * np.exp(-(((xx - 0.55) / 0.32) ** 2 + ((yy - 0.62) / 0.35) ** 2))
        - 35.0 * np.exp(-(((xx - 0.18) / 0.07) ** 2))
        - 50.0 / (1.0 + np.exp(-(yy - 0.88 + 0.25 * xx) / 0.03))
    ).astype(np.float32)
    centre = np.array([0.55 * size, 0.6 * size])
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32)
    out = np.empty((frames, size, size), dtype=np.uint8)
    for f in range(frames):
        # heart beat (about 70/min at 15 frames/s) scales the tree about the heart's centre
        beat = 1.0 + 0.035 * math.sin(2 * math.pi * f / 13.0)
        sx = np.clip(centre[0] + (xs - centre[0]) / beat, 0, size - 1)
        sy = np.clip(centre[1] + (ys - centre[1]) / beat, 0, size - 1)
        ix, iy = np.rint(sx).astype(np.intp), np.rint(sy).astype(np.intp)
        front = 32.0 * (f - 3) * size / 512.0  # contrast front, pixels along the tree per frame
        fill = np.clip((front - arc[iy, ix]) / 40.0, 0.0, 1.0) * (1.0 - 0.7 * _smooth(f, 20.0, 29.0))
        reflux = 0.9 * _smooth(f, 3.0, 6.0) * (1.0 - _smooth(f, 10.0, 16.0))
        cloud = (
            reflux
            * 8.0
            * np.exp(-(((xs - 0.36 * size) / (0.06 * size)) ** 2 + ((ys - 0.25 * size) / (0.09 * size)) ** 2))
        )
        attenuation = 0.11 * thickness[iy, ix] * fill + 0.08 * catheter + 0.05 * cloud
        frame = _blur(background * np.exp(-attenuation))
        frame += _rng("xa-noise", seed, f).standard_normal(frame.shape, dtype=np.float32) * np.float32(4.0)
        out[f] = np.clip(np.rint(frame), 0, 255).astype(np.uint8)
    return out


def xa_run(seed: int = 0, *, frames: int = 30, size: int = 512) -> SyntheticStudy:
    """A left coronary angiography run: one multi-frame X-Ray Angiographic image, 15 frames/s."""
    params = ("xa-run", frames, size)
    description = "CORONARY ANGIOGRAPHY"
    study = _study(seed, 4, description, params)
    series_uid = _uid("series", seed, *params, 1)
    rng = _rng("angiography-geometry", seed)
    primary = float(rng.choice([30.0, 40.0, 45.0]))
    secondary = float(rng.choice([-25.0, 20.0, 25.0]))

    def generate() -> Iterator[Dataset]:
        pixels = _xa_frames(seed, frames, size)
        ds = _base_dataset(XRayAngiographicImageStorage, _uid("sop", seed, *params, 0), study, "XA")
        _series(
            ds,
            uid=series_uid,
            number=1,
            description="LCA LAO CRA",
            body_part="HEART",
            protocol="CORONARY LEFT",
            time=study.time,
        )
        _equipment(ds, "Phantom Cath Lab", "SYNXA01")
        ds.ImageType = ["ORIGINAL", "PRIMARY", "SINGLE PLANE"]
        ds.InstanceNumber = 1
        ds.PatientOrientation = ""
        ds.AcquisitionDate = ds.ContentDate = study.date
        ds.AcquisitionTime = ds.ContentTime = _time_plus(study.time, 600.0)
        ds.AcquisitionDateTime = study.date + _time_plus(study.time, 600.0)
        ds.FrameIncrementPointer = pydicom.tag.Tag("FrameTime")
        ds.FrameTime = _ds(1000.0 / 15.0)
        ds.CineRate = 15
        ds.RecommendedDisplayFrameRate = 15
        ds.ActualFrameDuration = 67
        ds.StartTrim = 1
        ds.StopTrim = frames
        ds.PixelIntensityRelationship = "LIN"  # transmitted intensity, dark where contrast absorbs
        ds.PositionerMotion = "STATIC"
        ds.PositionerPrimaryAngle = _ds(primary)
        ds.PositionerSecondaryAngle = _ds(secondary)
        ds.RadiationSetting = "GR"
        ds.KVP = "78"
        ds.XRayTubeCurrent = 760
        ds.ExposureTime = 7
        ds.Exposure = 5
        ds.DistanceSourceToDetector = "1100"
        ds.DistanceSourceToPatient = "760"
        ds.IntensifierSize = "200"
        ds.ImagerPixelSpacing = [_ds(0.308 * 512 / size), _ds(0.308 * 512 / size)]
        ds.FieldOfViewShape = "RECTANGLE"
        ds.FieldOfViewDimensions = [158, 158]
        ds.ContrastBolusAgent = "Iohexol 350 mgI/ml"
        ds.ContrastBolusRoute = "INTRA-ARTERIAL"
        ds.ContrastBolusVolume = "8"
        ds.WindowCenter = "128"
        ds.WindowWidth = "256"
        ds.LossyImageCompression = "00"
        _pixels(ds, pixels, bits_stored=8, frames=frames)
        yield ds

    return _study_of("xa-run", study, description, "XA", 1, generate)


# --------------------------------------------------------------------------------------------
# The demo set, and small studies for tests


def demo_studies(seed: int = 0, *, ct_slices: int = 300) -> list[SyntheticStudy]:
    """The four demo studies, each a different patient. The demo proper uses >= 200 CT slices."""
    return [ct_chest(seed, slices=ct_slices), mr_brain(seed), cr_chest(seed), xa_run(seed)]


_TINY_SOP_CLASSES = {"CT": CTImageStorage, "MR": MRImageStorage}


def make_instance(
    *,
    patient_id: str,
    patient_name: str,
    study_instance_uid: str,
    series_instance_uid: str,
    sop_instance_uid: str,
    modality: str = "CT",
    rows: int = 16,
    columns: int | None = None,
    instance_number: int = 1,
    series_number: int = 1,
    study_date: str = "20240101",
    study_time: str = "120000",
    accession_number: str = "",
    study_description: str = "",
    series_description: str = "",
    study_id: str = "1",
    patient_birth_date: str = "19700101",
    patient_sex: str = "O",
    referring_physician_name: str = "",
    pixel_seed: int = 0,
    **attributes: Any,
) -> Dataset:
    """One small image with exactly the identifiers given; ``attributes`` are set by keyword last.

    CT and MR use their own storage classes (CT with HU rescale); any other modality is a
    Secondary Capture image carrying that Modality.
    """
    columns = rows if columns is None else columns
    sop_class = _TINY_SOP_CLASSES.get(modality, SecondaryCaptureImageStorage)
    ds = Dataset()
    ds.file_meta = _file_meta(sop_class, sop_instance_uid)
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop_instance_uid
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = study_date
    ds.StudyTime = ds.SeriesTime = ds.ContentTime = study_time
    ds.AccessionNumber = accession_number
    ds.Modality = modality
    ds.Manufacturer = MANUFACTURER
    ds.InstitutionName = INSTITUTION
    ds.ReferringPhysicianName = referring_physician_name
    ds.StudyDescription = study_description
    ds.SeriesDescription = series_description
    ds.PatientName = patient_name
    ds.PatientID = patient_id
    ds.PatientBirthDate = patient_birth_date
    ds.PatientSex = patient_sex
    ds.StudyInstanceUID = study_instance_uid
    ds.SeriesInstanceUID = series_instance_uid
    ds.StudyID = study_id
    ds.SeriesNumber = series_number
    ds.InstanceNumber = instance_number
    ds.PatientOrientation = ["L", "P"] if modality in _TINY_SOP_CLASSES else ""
    ds.BodyPartExamined = "HEAD" if modality == "MR" else "CHEST"
    if modality in _TINY_SOP_CLASSES:
        ds.PatientPosition = "HFS"

    # a gradient with a bright square whose position follows the instance: viewers can tell
    # instances apart and checksums differ
    rng = _rng("tiny-pixels", pixel_seed, sop_instance_uid)
    base = np.add.outer(np.arange(rows), np.arange(columns)).astype(np.float32) * 4.0
    base[
        rows // 4 : rows // 2,
        (instance_number * 3) % columns : (instance_number * 3) % columns + columns // 4,
    ] += 400.0
    base += rng.normal(0.0, 5.0, base.shape).astype(np.float32)
    if modality == "CT":
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.FrameOfReferenceUID = _uid("tiny-frame", series_instance_uid)
        ds.PositionReferenceIndicator = ""
        ds.ImagePositionPatient = ["0", "0", _ds(-5.0 * instance_number)]
        ds.ImageOrientationPatient = ["1", "0", "0", "0", "1", "0"]
        ds.PixelSpacing = ["1", "1"]
        ds.SliceThickness = "5"
        ds.KVP = "120"
        ds.AcquisitionNumber = 1
        ds.RescaleIntercept = "-1024"
        ds.RescaleSlope = "1"
        ds.RescaleType = "HU"
        pixels: NDArray[Any] = np.clip(np.rint(base + 900.0), 0, 4095).astype(np.int16)
        bits = 16
    elif modality == "MR":
        ds.ImageType = ["ORIGINAL", "PRIMARY", "OTHER"]
        ds.FrameOfReferenceUID = _uid("tiny-frame", series_instance_uid)
        ds.PositionReferenceIndicator = ""
        ds.ImagePositionPatient = ["0", "0", _ds(-5.0 * instance_number)]
        ds.ImageOrientationPatient = ["1", "0", "0", "0", "1", "0"]
        ds.PixelSpacing = ["1", "1"]
        ds.SliceThickness = "5"
        ds.ScanningSequence = ["SE"]
        ds.SequenceVariant = ["NONE"]
        ds.ScanOptions = ""
        ds.MRAcquisitionType = "2D"
        ds.RepetitionTime = "500"
        ds.EchoTime = "12"
        ds.EchoTrainLength = 1
        ds.MagneticFieldStrength = "1.5"
        pixels = np.clip(np.rint(base + 100.0), 0, 4095).astype(np.uint16)
        bits = 12
    else:
        ds.ConversionType = "WSD"
        pixels = np.clip(np.rint(base + 100.0), 0, 4095).astype(np.uint16)
        bits = 12
    _pixels(ds, pixels, bits_stored=bits)
    for keyword, value in attributes.items():
        setattr(ds, keyword, value)
    return ds


def tiny_study(
    seed: int = 0,
    *,
    patient_id: str | None = None,
    patient_name: str | None = None,
    patient_birth_date: str | None = None,
    patient_sex: str | None = None,
    study_date: str | None = None,
    study_time: str | None = None,
    study_description: str | None = None,
    accession_number: str | None = None,
    study_instance_uid: str | None = None,
    modality: str = "CT",
    series: int = 2,
    instances_per_series: int = 3,
    rows: int = 16,
) -> SyntheticStudy:
    """A small study, distinct for every seed and every combination of arguments.

    Unset identifiers come from the seed (an invented patient, as in the demo studies), so a
    loop over seeds gives many different patients and studies in milliseconds.
    """
    params = (
        "tiny", patient_id, patient_name, patient_birth_date, patient_sex, study_date, study_time,
        study_description, accession_number, study_instance_uid, modality, series, instances_per_series, rows,
    )  # fmt: skip
    generated = _study(seed, 5, study_description or f"{modality} TEST STUDY", params)
    pid = generated.patient.patient_id if patient_id is None else patient_id
    name = generated.patient.name if patient_name is None else patient_name
    date = generated.date if study_date is None else study_date
    time = generated.time if study_time is None else study_time
    accession = generated.accession if accession_number is None else accession_number
    uid = generated.uid if study_instance_uid is None else study_instance_uid
    description = generated.description

    def generate() -> Iterator[Dataset]:
        for s in range(series):
            series_uid = _uid("series", seed, *params, s)
            for i in range(instances_per_series):
                yield make_instance(
                    patient_id=pid,
                    patient_name=name,
                    study_instance_uid=uid,
                    series_instance_uid=series_uid,
                    sop_instance_uid=_uid("sop", seed, *params, s, i),
                    modality=modality,
                    rows=rows,
                    instance_number=i + 1,
                    series_number=s + 1,
                    study_date=date,
                    study_time=time,
                    accession_number=accession,
                    study_description=description,
                    series_description=f"{modality} series {s + 1}",
                    study_id=generated.study_id,
                    patient_birth_date=generated.patient.birth_date
                    if patient_birth_date is None
                    else patient_birth_date,
                    patient_sex=generated.patient.sex if patient_sex is None else patient_sex,
                    referring_physician_name=generated.referring,
                    pixel_seed=seed,
                )

    return SyntheticStudy(
        key="tiny",
        patient_id=pid,
        patient_name=name,
        study_instance_uid=uid,
        description=description,
        modality=modality,
        study_date=date,
        accession_number=accession,
        series_count=series,
        _instance_count=series * instances_per_series,
        _factory=generate,
    )


# -- report documents ---------------------------------------------------------------------------

COMPREHENSIVE_SR_STORAGE = "1.2.840.10008.5.1.4.1.1.88.33"
ENCAPSULATED_PDF_STORAGE = "1.2.840.10008.5.1.4.1.1.104.1"
DIAGNOSTIC_IMAGING_REPORT = ("18748-4", "LN", "Diagnostic Imaging Report")


def _coded(value: str, scheme: str, meaning: str) -> Dataset:
    c = Dataset()
    c.CodeValue, c.CodingSchemeDesignator, c.CodeMeaning = value, scheme, meaning
    return c


def _study_document(study: Dataset, sop_class: str, modality: str, date: str, seed: str) -> Dataset:
    """A document of ``study`` (its patient and study attributes copied) in a series of its own."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = UID(sop_class)
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = UID(_uid("report-sop", study.StudyInstanceUID, seed))
    for keyword in ("PatientID", "IssuerOfPatientID", "PatientName", "PatientBirthDate", "PatientSex",
                    "StudyInstanceUID", "StudyDate", "StudyTime", "AccessionNumber", "StudyID",
                    "ReferringPhysicianName", "StudyDescription"):
        if keyword in study:
            setattr(ds, keyword, study.get(keyword))
    ds.SeriesInstanceUID = _uid("report-series", study.StudyInstanceUID, seed)
    ds.Modality, ds.SeriesNumber, ds.InstanceNumber = modality, 990, 1
    ds.ContentDate, ds.ContentTime = date, "101500"
    return ds


def report_sr(study: Dataset, date: str, *, verified: bool, text: str = "No acute abnormality.",
              title: tuple[str, str, str] = DIAGNOSTIC_IMAGING_REPORT, observer: str = "Reader^Rita") -> Dataset:
    """A radiology report as a Comprehensive SR (a LOINC title, one finding as text), final
    (VERIFIED, with its verifying observer) or preliminary (UNVERIFIED)."""
    ds = _study_document(study, COMPREHENSIVE_SR_STORAGE, "SR", date, f"sr-{date}-{verified}-{title[0]}")
    ds.ValueType, ds.ContinuityOfContent = "CONTAINER", "SEPARATE"
    ds.ConceptNameCodeSequence = [_coded(*title)]
    ds.CompletionFlag = "COMPLETE"
    ds.VerificationFlag = "VERIFIED" if verified else "UNVERIFIED"
    if verified:
        who = Dataset()
        who.VerifyingObserverName = observer
        who.VerifyingOrganization = "Voxa Imaging"
        who.VerificationDateTime = f"{date}103000"
        ds.VerifyingObserverSequence = [who]
    finding = Dataset()
    finding.RelationshipType, finding.ValueType = "CONTAINS", "TEXT"
    finding.ConceptNameCodeSequence = [_coded("121071", "DCM", "Finding")]
    finding.TextValue = text
    ds.ContentSequence = [finding]
    return ds


def report_pdf(study: Dataset, date: str, pdf: bytes, *, title: str = "Radiology report") -> Dataset:
    """A radiology report as an Encapsulated PDF (as a RIS sends a signed report)."""
    ds = _study_document(study, ENCAPSULATED_PDF_STORAGE, "DOC", date, f"pdf-{date}")
    ds.DocumentTitle, ds.BurnedInAnnotation = title, "YES"
    ds.ConceptNameCodeSequence = []
    ds.MIMETypeOfEncapsulatedDocument = "application/pdf"
    ds.EncapsulatedDocument = pdf + (b"\0" if len(pdf) % 2 else b"")
    ds.EncapsulatedDocumentLength = len(pdf)
    return ds

