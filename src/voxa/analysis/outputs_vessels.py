"""DICOM objects of a vessel analysis (:mod:`voxa.analysis.vessels`), built with highdicom.

* :func:`build_vessel_seg` — the segmented lumen as a one-segment binary **SEG**: "Vessel
  lumen", category Anatomical Structure (SCT 91723000), type Lumen of blood vessel (SCT
  91747007), created by the automatic algorithm "Voxa vessel analysis".
* :func:`build_vessel_sr` — a **Comprehensive 3D SR** holding a TID 1500 Measurement Report,
  procedure reported Computed tomography of cardiovascular system (SCT 303680000, or the
  caller's), observer the Voxa algorithm (a device), PRELIMINARY and UNVERIFIED. Groups:

  - *Vessel* (TID 1411: the lumen outlined on every image it crosses, largest first, when the
    source images are the mask's slices — viewers such as OHIF draw it; else over the SEG's
    segment; TID 1501 without either), finding type Lumen of
    blood vessel, finding site the caller's (default Blood vessel SCT 59820001): Length of
    vessel segment (SCT 414599003, ``mm``: the centreline from start to end point) and Lumen
    volume (DCM 122372, ``mm3``: the segmented lumen).
  - *Stenosis* (when the analysis graded one), finding type Stenosis (SCT 415582006): Vessel
    lumen diameter (SCT 397413000, ``mm``, derivation Minimum SCT 255605001: the equivalent
    diameter of the narrowest section), Vessel lumen cross-sectional area (SCT 397415007,
    ``mm2``, Minimum), Reference lumen diameter (private), Lumen diameter stenosis (SCT
    408715008, ``%``), Lumen area stenosis (SCT 408714007, ``%``), Stenotic lesion length (SCT
    408716009, ``mm``) and the distance of the narrowest section along the centreline (private).
    It is a TID 1410 **planar ROI** whose region is the lumen outline (a closed POLYLINE) on
    the source image through the narrowest point, when the vessel crosses that image within
    ``max_obliquity_deg`` of its normal (the image's cut of the lumen is then close to the
    perpendicular cross-section: 1/cos 20° = 1.06); otherwise a TID 1411 group over the lumen's
    outlines as the *Vessel* group (or the SEG's segment; TID 1501 without either). The values are measured on the plane perpendicular to the
    centreline; the outline shows where.

Private codes use the scheme ``99VOXA``, declared in the SR's Coding Scheme Identification
Sequence (:data:`VESSEL_CODES`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import highdicom as hd
import numpy as np
from numpy.typing import NDArray
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code
from scipy import ndimage
from skimage import measure

from voxa.analysis.dicom_outputs import (
    MANUFACTURER,
    VESSEL_SEG_SERIES_NUMBER,
    OutputError,
    Segment,
    build_segmentation,
    device_observer,
)
from voxa.analysis.outputs_cardiac import (
    PRIVATE_SCHEME,
    UNIT_MM,
    UNIT_PERCENT,
    Group,
    check_slice_order,
    measurement,
    measurement_group,
    referenced_series_uid,
    voxa_coding_scheme,
)
from voxa.analysis.vessels import ALGORITHM_VERSION, VesselAnalysis
from voxa.dicom.evidence import with_patient_attributes

ALGORITHM_NAME = "Voxa vessel analysis"
VESSEL_SR_SERIES_NUMBER = 915
VESSEL_LUMEN = "Vessel lumen"

VESSEL_CODES = {
    "reference_diameter": Code("VESS-REFD", PRIVATE_SCHEME, "Reference lumen diameter"),
    "position": Code("VESS-POS", PRIVATE_SCHEME, "Distance along the centreline"),
}
UNIT_MM2 = codes.UCUM.SquareMillimeter
UNIT_MM3 = codes.UCUM.CubicMillimeter


def build_vessel_seg(
    source_images: Sequence[Dataset],
    lumen: NDArray[np.bool_],
    *,
    algorithm_version: str = ALGORITHM_VERSION,
    series_instance_uid: str | None = None,
    sop_instance_uid: str | None = None,
) -> Dataset:
    """The segmented lumen (``VesselAnalysis.segmentation.mask``) as a one-segment SEG over
    ``source_images`` (one per mask slice, in the volume's slice order)."""
    mask = np.asarray(lumen, dtype=bool)
    if mask.ndim != 3:
        raise OutputError(f"the lumen mask must be 3-D, got shape {mask.shape}")
    check_slice_order(source_images)
    segment = Segment(label=VESSEL_LUMEN, category=codes.SCT.AnatomicalStructure,
                      property_type=codes.SCT.LumenOfBloodVessel, tracking_id=VESSEL_LUMEN)
    return build_segmentation(
        source_images, [segment], mask[..., np.newaxis], algorithm_name=ALGORITHM_NAME,
        algorithm_version=algorithm_version, series_description="Vessel lumen (Voxa)",
        series_number=VESSEL_SEG_SERIES_NUMBER, series_instance_uid=series_instance_uid,
        sop_instance_uid=sop_instance_uid)


def _slice_normal(ds: Dataset) -> NDArray[np.float64]:
    iop = np.asarray(ds.ImageOrientationPatient, dtype=np.float64)
    n = np.cross(iop[:3], iop[3:])
    return n / np.linalg.norm(n)


def stenosis_outline(analysis: VesselAnalysis, source_images: Sequence[Dataset], *,
                     max_obliquity_deg: float = 20.0) -> tuple[Dataset, NDArray[np.float32]] | None:
    """The lumen outline on the source image through the narrowest point: that image and the
    closed outline as SCOORD (column, row) pixel coordinates (origin at the top left corner of
    the top left pixel). None when there is no stenosis, the vessel crosses the image more
    obliquely than ``max_obliquity_deg``, or the mask has no lumen there."""
    stenosis = analysis.stenosis
    mask = np.asarray(analysis.segmentation.mask, dtype=bool)
    if stenosis is None or len(source_images) != mask.shape[0]:
        return None
    line = analysis.centerline
    at = int(np.argmin(np.abs(np.asarray(line.arc_length_mm) - stenosis.arc_length_mm)))
    tangent = np.asarray(line.tangents_patient[at], dtype=np.float64)
    k, j, i = stenosis.point_voxel
    slice_index = int(round(k))
    if not 0 <= slice_index < mask.shape[0]:
        return None
    image = source_images[slice_index]
    cosine = abs(float(tangent @ _slice_normal(image))) / max(float(np.linalg.norm(tangent)), 1e-12)
    if math.degrees(math.acos(min(1.0, cosine))) > max_obliquity_deg:
        return None
    labels, n = ndimage.label(mask[slice_index])
    if n == 0:
        return None
    row, col = int(round(j)), int(round(i))
    inside = 0 <= row < labels.shape[0] and 0 <= col < labels.shape[1]
    pick = int(labels[row, col]) if inside else 0
    if pick == 0:  # the nearest lumen pixel's component
        _, (rows, cols) = ndimage.distance_transform_edt(labels == 0, return_indices=True)
        r, c = min(max(row, 0), labels.shape[0] - 1), min(max(col, 0), labels.shape[1] - 1)
        pick = int(labels[rows[r, c], cols[r, c]])
    component = np.pad(labels == pick, 1)
    contours = measure.find_contours(component.astype(np.float32), 0.5)
    if not contours:
        return None
    outline = max(contours, key=len) - 1.0  # back from the padded image
    points = np.stack([outline[:, 1] + 0.5, outline[:, 0] + 0.5], axis=1).astype(np.float32)
    if not np.array_equal(points[0], points[-1]):
        points = np.vstack([points, points[:1]])
    return image, points


def build_vessel_sr(
    analysis: VesselAnalysis,
    source_images: Sequence[Dataset],
    seg: Dataset | None = None,
    *,
    finding_site: Code = codes.SCT.BloodVessel,
    procedure_reported: Code = codes.SCT.ComputedTomographyOfCardiovascularSystem,
    max_obliquity_deg: float = 20.0,
    series_instance_uid: str | None = None,
    sop_instance_uid: str | None = None,
) -> Dataset:
    """``analysis`` as a TID 1500 Measurement Report (Comprehensive 3D SR); see the module
    docstring for its groups and codes.

    ``source_images`` are the analysed images, one per volume slice in the volume's order
    (headers suffice); ``seg`` the SEG of :func:`build_vessel_seg` (None: the groups reference
    no segment). ``finding_site`` names the vessel (e.g. ``codes.SCT.RightCoronaryArtery``)."""
    from voxa.analysis.sr_regions import mask_regions

    if not source_images:
        raise OutputError("no source images")
    algorithm = hd.sr.AlgorithmIdentification(name=ALGORITHM_NAME, version=analysis.algorithm_version)
    series_uid = referenced_series_uid(seg, source_images)
    groups: list[Group | hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations] = []
    lumen = np.asarray(analysis.segmentation.mask, dtype=bool)
    # the lumen outlined on the images (TID 1411 image regions: viewers can draw them), when the
    # images are the mask's slices
    lumen_regions = mask_regions(lumen, source_images) if lumen.shape[0] == len(source_images) and lumen.any() \
        else None

    def m(name: Code, value: float, unit: Code, *, derivation: Code | None = None) -> hd.sr.Measurement:
        return measurement(name, value, unit, algorithm, derivation=derivation)

    groups.append(measurement_group(
        "Vessel", [m(codes.SCT.LengthOfVesselSegment, analysis.centerline.length_mm, UNIT_MM),
                   m(codes.DCM.LumenVolume, analysis.segmentation.volume_mm3, UNIT_MM3)],
        finding_type=codes.SCT.LumenOfBloodVessel, finding_site=finding_site, algorithm=algorithm, seg=seg,
        segment_label=VESSEL_LUMEN, source_series_uid=series_uid, regions=lumen_regions))
    stenosis = analysis.stenosis
    if stenosis is not None:
        items = [
            m(codes.SCT.VesselLumenDiameter, stenosis.min_diameter_mm, UNIT_MM, derivation=codes.SCT.Minimum),
            m(codes.SCT.VesselLumenCrossSectionalArea, stenosis.min_area_mm2, UNIT_MM2,
              derivation=codes.SCT.Minimum),
            m(VESSEL_CODES["reference_diameter"], stenosis.reference_diameter_mm, UNIT_MM),
            m(codes.SCT.LumenDiameterStenosis, stenosis.stenosis_percent, UNIT_PERCENT),
            m(codes.SCT.LumenAreaStenosis, stenosis.area_stenosis_percent, UNIT_PERCENT),
            m(codes.SCT.StenoticLesionLength, stenosis.lesion_end_mm - stenosis.lesion_start_mm, UNIT_MM),
            m(VESSEL_CODES["position"], stenosis.arc_length_mm, UNIT_MM),
        ]
        outline = stenosis_outline(analysis, source_images, max_obliquity_deg=max_obliquity_deg)
        if outline is not None:
            image, points = outline
            region = hd.sr.ImageRegion(
                graphic_type=hd.sr.GraphicTypeValues.POLYLINE, graphic_data=points,
                source_image=hd.sr.SourceImageForRegion(str(image.SOPClassUID), str(image.SOPInstanceUID)))
            groups.append(hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
                tracking_identifier=hd.sr.TrackingIdentifier(uid=hd.UID(), identifier="Stenosis"),
                referenced_region=region, finding_type=codes.SCT.Stenosis, algorithm_id=algorithm,
                finding_sites=[hd.sr.FindingSite(finding_site)], measurements=items))
        else:
            groups.append(measurement_group(
                "Stenosis", items, finding_type=codes.SCT.Stenosis, finding_site=finding_site, algorithm=algorithm,
                seg=seg, segment_label=VESSEL_LUMEN, source_series_uid=series_uid, regions=lumen_regions))
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=device_observer()),
        procedure_reported=procedure_reported, imaging_measurements=groups,
        title=codes.DCM.ImagingMeasurementReport)
    evidence = with_patient_attributes([*source_images, *([seg] if seg is not None else [])])
    sr = hd.sr.Comprehensive3DSR(
        evidence=evidence, content=report[0], series_instance_uid=series_instance_uid or hd.UID(),
        series_number=VESSEL_SR_SERIES_NUMBER, sop_instance_uid=sop_instance_uid or hd.UID(), instance_number=1,
        manufacturer=MANUFACTURER, is_complete=True, is_final=False, is_verified=False,
        coding_schemes=[voxa_coding_scheme()])
    sr.SeriesDescription = "Vessel analysis report (Voxa)"
    return sr


__all__ = [
    "ALGORITHM_NAME",
    "VESSEL_CODES",
    "VESSEL_LUMEN",
    "VESSEL_SR_SERIES_NUMBER",
    "build_vessel_seg",
    "build_vessel_sr",
    "stenosis_outline",
]
