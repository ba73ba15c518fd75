"""DICOM objects the analysis tools write back to the archive, built with highdicom.

* :func:`build_segmentation` — a binary DICOM **SEG** over the analysed series: one frame
  per source image that holds any segment, one segment per structure (coded with SNOMED CT
  terms), created by an automatic algorithm that is named in each segment.
* :func:`build_calcium_seg` — the calcium lesions of a :class:`~voxa.analysis.calcium.CalciumScore`,
  one segment per coronary artery (LM, LAD, LCX, RCA, and "unassigned" when a lesion has no
  artery): category Morphologically Abnormal Structure (SCT 49755003), type Pathologic
  calcification (SCT 18115005), anatomic region the artery (LM SCT 3227004, LAD SCT 59438005,
  LCX SCT 57396003, RCA SCT 13647002; unassigned: Coronary artery SCT 41801008).
* :func:`build_calcium_sr` — a **Comprehensive 3D SR** holding a TID 1500 Measurement Report,
  procedure reported "Cardiac CT for calcium scoring" (SCT 426005005), observer the Voxa
  algorithm (a device).  One measurement group per artery (TID 1411 Volumetric ROI referencing
  the artery's segment of the SEG; TID 1501 when there is no SEG) and one for the total (TID
  1501, finding site Coronary artery), each with Calcium score (DCM 112058, method Agatston
  scoring method DCM 112055, unit ``1``), Calcium Volume (DCM 122660, ``mm3``, method DCM
  112056) and, with a calibration factor, Calcium Mass (DCM 122661, ``mg``, method DCM 112057);
  the total group also carries the Agatston Score Threshold (DCM 122657, HU).  The report is
  PRELIMINARY and UNVERIFIED: analysis results need a reader's review.
* :func:`build_calcium_lesion_sr` — a second Comprehensive 3D SR, "Coronary calcium lesions":
  the same TID 1500 report with one TID 1410 Planar ROI group per lesion, whose Image Region is
  the lesion's outline (a closed POLYLINE, :func:`lesion_outline`) on the source image where the
  lesion is largest, finding site the artery, and the lesion's Calcium score, Calcium Volume,
  Calcium Mass (with a calibration) and peak attenuation (Attenuation Coefficient DCM 112031,
  derivation Maximum SCT 56851009, HU).  Every group has image coordinates: viewers that draw
  measurements from their coordinates (OHIF) can show it, which the per-artery report, whose
  groups reference SEG segments or carry no geometry, does not allow (OHIF/Viewers#3390).

Every builder returns a dataset that highdicom validated on construction;
``tests/analysis/test_tools.py`` writes each, reads it back and runs dicom3tools' dciodvfy on it.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import highdicom as hd
import numpy as np
from numpy.typing import NDArray
from pydicom import dcmwrite
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code

from voxa import __version__
from voxa.analysis.calcium import ALGORITHM_VERSION as CALCIUM_ALGORITHM_VERSION
from voxa.analysis.calcium import CORONARY_ARTERIES, Artery, ArteryScore, CalciumLesion, CalciumScore
from voxa.dicom.evidence import with_patient_attributes

MANUFACTURER = "Voxa"
MODEL_NAME = "Voxa analysis"


def device_observer() -> hd.sr.ObserverContext:
    """Voxa as the device observer of the measurement reports it writes."""
    return hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=hd.UID(), name="Voxa", manufacturer_name=MANUFACTURER, model_name=MODEL_NAME))
DEVICE_SERIAL_NUMBER = "voxa"
CALCIUM_SEG_SERIES_NUMBER = 910
CALCIUM_SR_SERIES_NUMBER = 911
VESSEL_SEG_SERIES_NUMBER = 912
CALCIUM_LESION_SR_SERIES_NUMBER = 913

#: SNOMED CT terms of the coronary arteries (CID 3015 Coronary Arteries)
ARTERY_CODES: Mapping[Artery, Code] = {
    Artery.LM: codes.SCT.LeftMainCoronaryArtery,  # 3227004
    Artery.LAD: codes.SCT.LeftAnteriorDescendingCoronaryArtery,  # 59438005
    Artery.LCX: codes.SCT.CircumflexCoronaryArtery,  # 57396003
    Artery.RCA: codes.SCT.RightCoronaryArtery,  # 13647002
    Artery.UNASSIGNED: codes.SCT.CoronaryArtery,  # 41801008
}
ARTERY_LABELS: Mapping[Artery, str] = {
    Artery.LM: "LM calcium", Artery.LAD: "LAD calcium", Artery.LCX: "LCX calcium", Artery.RCA: "RCA calcium",
    Artery.UNASSIGNED: "Unassigned calcium",
}

UNIT_NONE = codes.UCUM.NoUnits
UNIT_MM3 = codes.UCUM.CubicMillimeter
UNIT_MG = Code("mg", "UCUM", "milligram")
UNIT_HU = codes.UCUM.HounsfieldUnit


class OutputError(ValueError):
    """The DICOM object cannot be built from these inputs; the message says why."""


@dataclass(frozen=True)
class Segment:
    """One segment of a SEG: its label, coded meaning, and the algorithm that produced it."""

    label: str
    category: Code
    property_type: Code
    anatomic_region: Code | None = None
    tracking_id: str | None = None
    color: str | None = None  # "#rrggbb"; None: the n-th colour of SEGMENT_COLORS


#: Recommended display colours (sRGB, written as CIELab) for segments without their own: distinct
#: hues that read well over a grey CT, so every viewer draws the segments alike.
SEGMENT_COLORS = ("#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4", "#f032e6", "#bfef45",
                  "#fabed4", "#469990")


def _display_color(segment: Segment, number: int) -> hd.color.CIELabColor:
    hex_colour = (segment.color or SEGMENT_COLORS[(number - 1) % len(SEGMENT_COLORS)]).lstrip("#")
    r, g, b = (int(hex_colour[i:i + 2], 16) for i in (0, 2, 4))
    return hd.color.CIELabColor.from_rgb(r, g, b)


def to_bytes(ds: Dataset) -> bytes:
    """The dataset as a Part-10 file (what ``archive.ingest`` takes)."""
    buf = io.BytesIO()
    dcmwrite(buf, ds, enforce_file_format=True)
    return buf.getvalue()


def _check_sources(source_images: Sequence[Dataset], shape: tuple[int, ...]) -> None:
    if not source_images:
        raise OutputError("no source images")
    if len(source_images) != shape[0]:
        raise OutputError(f"{len(source_images)} source images for {shape[0]} mask slices: a SEG needs one "
                          "source image per slice (a resampled volume cannot be written back)")
    studies = {str(ds.StudyInstanceUID) for ds in source_images}
    if len(studies) != 1:
        raise OutputError(f"the source images span {len(studies)} studies")
    rows, cols = int(source_images[0].Rows), int(source_images[0].Columns)
    if (rows, cols) != tuple(shape[1:3]):
        raise OutputError(f"mask slices are {shape[1]}x{shape[2]}, the source images {rows}x{cols}")


def build_segmentation(
    source_images: Sequence[Dataset],
    segments: Sequence[Segment],
    masks: NDArray[np.bool_],
    *,
    algorithm_name: str,
    algorithm_version: str,
    series_description: str,
    series_number: int,
    series_instance_uid: str | None = None,
    sop_instance_uid: str | None = None,
) -> Dataset:
    """A binary SEG of ``masks`` (slices, rows, columns, segments) over ``source_images``
    (one per slice, in the masks' slice order).  Empty frames are left out; a segment may be
    empty, but not all of them."""
    masks = np.asarray(masks, dtype=bool)
    if masks.ndim == 3:
        masks = masks[..., np.newaxis]
    if masks.ndim != 4 or masks.shape[3] != len(segments):
        raise OutputError(f"masks must be (slices, rows, columns, {len(segments)} segments), got {masks.shape}")
    _check_sources(source_images, masks.shape)
    if not masks.any():
        raise OutputError("every segment is empty: there is nothing to write")
    algorithm = hd.AlgorithmIdentificationSequence(name=algorithm_name, family=codes.DCM.ImageProcessing,
                                                   version=algorithm_version)
    descriptions = [
        hd.seg.SegmentDescription(
            segment_number=n, segment_label=s.label, segmented_property_category=s.category,
            segmented_property_type=s.property_type, algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=algorithm, tracking_uid=hd.UID() if s.tracking_id else None,
            tracking_id=s.tracking_id, anatomic_regions=[s.anatomic_region] if s.anatomic_region else None,
            display_color=_display_color(s, n))
        for n, s in enumerate(segments, start=1)
    ]
    seg = hd.seg.Segmentation(
        source_images=list(source_images), pixel_array=masks,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY, segment_descriptions=descriptions,
        series_instance_uid=series_instance_uid or hd.UID(), series_number=series_number,
        sop_instance_uid=sop_instance_uid or hd.UID(), instance_number=1, manufacturer=MANUFACTURER,
        manufacturer_model_name=MODEL_NAME, software_versions=__version__,
        device_serial_number=DEVICE_SERIAL_NUMBER, content_label="VOXA", content_description=series_description[:64],
        content_creator_name=None)
    seg.SeriesDescription = series_description[:64]
    return seg


def calcium_segments(score: CalciumScore) -> list[Artery]:
    """The arteries a calcium SEG has a segment for, in segment-number order: LM, LAD, LCX,
    RCA, then "unassigned" when a lesion has no artery."""
    arteries = list(CORONARY_ARTERIES)
    if any(lesion.artery is Artery.UNASSIGNED for lesion in score.lesions):
        arteries.append(Artery.UNASSIGNED)
    return arteries


def build_calcium_seg(
    source_images: Sequence[Dataset],
    score: CalciumScore,
    lesion_labels: NDArray[np.integer],
    *,
    series_instance_uid: str | None = None,
    sop_instance_uid: str | None = None,
) -> Dataset:
    """The scored lesions as a SEG, one segment per artery (:func:`calcium_segments`).

    ``lesion_labels`` (the volume's shape) holds each scored voxel's lesion label, as in
    :attr:`CalciumLesion.label <voxa.analysis.calcium.CalciumLesion.label>`; labels of lesions
    not in ``score`` (left out as bone) are ignored.  Raises :class:`OutputError` when there is
    no lesion."""
    labels = np.asarray(lesion_labels)
    if labels.ndim != 3:
        raise OutputError(f"lesion_labels must be 3-D, got shape {labels.shape}")
    arteries = calcium_segments(score)
    artery_of = np.zeros(int(labels.max(initial=0)) + 1, dtype=np.int16)  # label -> segment number
    for lesion in score.lesions:
        if lesion.label >= artery_of.size:
            raise OutputError(f"lesion {lesion.label} is not in lesion_labels")
        artery_of[lesion.label] = arteries.index(lesion.artery) + 1
    segment_of_voxel = artery_of[labels]
    masks = np.stack([segment_of_voxel == n for n in range(1, len(arteries) + 1)], axis=-1)
    segments = [Segment(label=ARTERY_LABELS[a], category=codes.SCT.MorphologicallyAbnormalStructure,
                        property_type=codes.SCT.PathologicCalcification, anatomic_region=ARTERY_CODES[a],
                        tracking_id=ARTERY_LABELS[a]) for a in arteries]
    return build_segmentation(
        source_images, segments, masks, algorithm_name="Voxa coronary calcium scoring",
        algorithm_version=score.algorithm_version, series_description="Coronary calcium (Voxa)",
        series_number=CALCIUM_SEG_SERIES_NUMBER, series_instance_uid=series_instance_uid,
        sop_instance_uid=sop_instance_uid)


def _calcium_measurements(values: ArteryScore | CalciumScore, algorithm: hd.sr.AlgorithmIdentification,
                          finding_sites: Sequence[hd.sr.FindingSite] | None = None) -> list[hd.sr.Measurement]:
    if isinstance(values, CalciumScore):
        agatston, volume, mass = values.agatston_total, values.volume_mm3_total, values.mass_mg_total
    else:
        agatston, volume, mass = values.agatston, values.volume_mm3, values.mass_mg
    out = [
        hd.sr.Measurement(name=codes.DCM.CalciumScore, value=float(agatston), unit=UNIT_NONE,
                          method=codes.DCM.AgatstonScoringMethod, algorithm_id=algorithm, finding_sites=finding_sites),
        hd.sr.Measurement(name=codes.DCM.CalciumVolume, value=float(volume), unit=UNIT_MM3,
                          method=codes.DCM.VolumeScoringMethod, algorithm_id=algorithm, finding_sites=finding_sites),
    ]
    if mass is not None:
        out.append(hd.sr.Measurement(name=codes.DCM.CalciumMass, value=float(mass), unit=UNIT_MG,
                                     method=codes.DCM.MassScoringMethod, algorithm_id=algorithm,
                                     finding_sites=finding_sites))
    return out



def build_calcium_sr(
    score: CalciumScore,
    *,
    source_images: Sequence[Dataset],
    seg: Dataset | None,
    lesion_labels: NDArray[np.integer] | None = None,
    series_instance_uid: str | None = None,
    sop_instance_uid: str | None = None,
) -> Dataset:
    """The calcium scores as a TID 1500 Measurement Report (Comprehensive 3D SR).

    ``source_images`` are the scored images (headers suffice; one per slice of ``lesion_labels``
    when that is given); ``seg`` the SEG of :func:`build_calcium_seg` (None when there was no
    lesion). With ``lesion_labels`` (the voxels' lesion labels) each artery with calcium is a TID
    1411 group whose volume is its lesions' outlines on the images (:mod:`voxa.analysis.sr_regions`),
    and the total group outlines every lesion; arteries without calcium are zero scores in the
    total group (with the artery as finding site). Without it, the artery groups reference the
    SEG's segments and carry no image coordinates."""
    from voxa.analysis.sr_regions import mask_regions

    if not source_images:
        raise OutputError("no source images")
    series_uid = str(source_images[0].SeriesInstanceUID)
    algorithm = hd.sr.AlgorithmIdentification(name="Voxa coronary calcium scoring",
                                              version=score.algorithm_version or CALCIUM_ALGORITHM_VERSION)
    segment_number = {a: n for n, a in enumerate(calcium_segments(score), start=1)} if seg is not None else {}
    labels = None if lesion_labels is None else np.asarray(lesion_labels)
    if labels is not None:
        _check_sources(source_images, labels.shape)
    groups: list[hd.sr.MeasurementsAndQualitativeEvaluations
                 | hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations] = []
    uncalcified: list[hd.sr.Measurement] = []
    for artery, values in score.per_artery.items():
        tracking = hd.sr.TrackingIdentifier(uid=hd.UID(), identifier=ARTERY_LABELS[artery])
        site = [hd.sr.FindingSite(ARTERY_CODES[artery])]
        measurements = _calcium_measurements(values, algorithm)
        own = [lesion.label for lesion in score.lesions if lesion.artery == artery]
        if labels is not None:
            if not own:
                uncalcified += _calcium_measurements(values, algorithm, finding_sites=site)
                continue
            groups.append(hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
                tracking_identifier=tracking, referenced_regions=mask_regions(np.isin(labels, own), source_images),
                finding_type=codes.SCT.PathologicCalcification, algorithm_id=algorithm, finding_sites=site,
                measurements=measurements))
        elif seg is not None and artery in segment_number:
            reference = hd.sr.ReferencedSegment(
                sop_class_uid=str(seg.SOPClassUID), sop_instance_uid=str(seg.SOPInstanceUID),
                segment_number=segment_number[artery],
                source_series=hd.sr.SourceSeriesForSegmentation(series_uid))
            groups.append(hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
                tracking_identifier=tracking, referenced_segment=reference,
                finding_type=codes.SCT.PathologicCalcification, algorithm_id=algorithm, finding_sites=site,
                measurements=measurements))
        else:
            groups.append(hd.sr.MeasurementsAndQualitativeEvaluations(
                tracking_identifier=tracking, finding_type=codes.SCT.PathologicCalcification,
                algorithm_id=algorithm, finding_sites=site, measurements=measurements))
    total = [*_calcium_measurements(score, algorithm),
             hd.sr.Measurement(name=codes.DCM.AgatstonScoreThreshold, value=float(score.threshold_hu),
                               unit=UNIT_HU, algorithm_id=algorithm), *uncalcified]
    total_tracking = hd.sr.TrackingIdentifier(uid=hd.UID(), identifier="Total coronary calcium")
    total_site = [hd.sr.FindingSite(codes.SCT.CoronaryArtery)]
    if labels is not None and score.lesions:
        groups.append(hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
            tracking_identifier=total_tracking, referenced_regions=mask_regions(labels > 0, source_images),
            finding_type=codes.SCT.PathologicCalcification, algorithm_id=algorithm, finding_sites=total_site,
            measurements=total))
    else:
        groups.append(hd.sr.MeasurementsAndQualitativeEvaluations(
            tracking_identifier=total_tracking, finding_type=codes.SCT.PathologicCalcification,
            algorithm_id=algorithm, finding_sites=total_site, measurements=total))
    observer = device_observer()
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=observer),
        procedure_reported=codes.SCT.CardiacCTForCalciumScoring,
        imaging_measurements=groups,
        title=codes.DCM.ImagingMeasurementReport,
    )
    evidence = with_patient_attributes([*source_images, *([seg] if seg is not None else [])])
    sr = hd.sr.Comprehensive3DSR(
        evidence=evidence, content=report[0], series_instance_uid=series_instance_uid or hd.UID(),
        series_number=CALCIUM_SR_SERIES_NUMBER, sop_instance_uid=sop_instance_uid or hd.UID(), instance_number=1,
        manufacturer=MANUFACTURER, is_complete=True, is_final=False, is_verified=False)
    sr.SeriesDescription = "Coronary calcium report (Voxa)"
    return sr


def lesion_outline(lesion: CalciumLesion, lesion_labels: NDArray[np.integer]) -> tuple[int, NDArray[np.float64]]:
    """The slice where ``lesion`` is largest and its outline there: a closed polyline (first
    point repeated last) of (column, row) image coordinates, DICOM's convention (the top-left
    corner of the top-left pixel is 0, 0; pixel centres are at .5).

    The outline is the 0.5 iso-line of the lesion's voxels on that slice
    (``skimage.measure.find_contours``), around its largest in-plane component."""
    from skimage.measure import find_contours, label

    if not lesion.area_mm2_by_slice:
        raise OutputError(f"lesion {lesion.label} has no image")
    z = max(lesion.area_mm2_by_slice, key=lambda k: (lesion.area_mm2_by_slice[k], -k))
    labels = np.asarray(lesion_labels)
    if labels.ndim != 3 or not 0 <= z < labels.shape[0]:
        raise OutputError(f"lesion {lesion.label}'s slice {z} is not in lesion_labels {labels.shape}")
    mask = labels[z] == lesion.label
    parts = label(mask, connectivity=2)
    if parts.max() == 0:
        raise OutputError(f"lesion {lesion.label} is not in lesion_labels on slice {z}")
    largest = np.bincount(parts.ravel())[1:].argmax() + 1
    # padded so that a lesion on the image's edge still gets a closed outline
    contours = find_contours(np.pad(parts == largest, 1).astype(np.float32), 0.5)
    outline = max(contours, key=lambda c: _enclosed_area(c))
    points = np.column_stack([outline[:, 1] - 0.5, outline[:, 0] - 0.5])  # padded index -> image coordinates
    if not np.array_equal(points[0], points[-1]):
        points = np.vstack([points, points[:1]])
    return z, points


def _enclosed_area(points: NDArray[np.floating]) -> float:
    x, y = points[:, 1], points[:, 0]
    return float(abs(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1))) / 2.0)


def build_calcium_lesion_sr(
    score: CalciumScore,
    *,
    source_images: Sequence[Dataset],
    lesion_labels: NDArray[np.integer],
    series_instance_uid: str | None = None,
    sop_instance_uid: str | None = None,
) -> Dataset:
    """The calcium lesions as a TID 1500 report with one TID 1410 Planar ROI group per lesion.

    ``source_images`` are the scored images, one per slice of ``lesion_labels`` (the voxels'
    lesion labels, as for :func:`build_calcium_seg`).  Each group outlines its lesion on the
    image where it is largest (:func:`lesion_outline`), finding site the artery, with the
    lesion's Agatston score, volume, mass (with a calibration) and peak HU; the groups come in
    order of decreasing Agatston score (a viewer shows the first one first).  Raises
    :class:`OutputError` when there is no lesion: a report without a group is not written."""
    if not score.lesions:
        raise OutputError("no lesion: there is nothing to outline")
    labels = np.asarray(lesion_labels)
    _check_sources(source_images, labels.shape)
    algorithm = hd.sr.AlgorithmIdentification(name="Voxa coronary calcium scoring",
                                              version=score.algorithm_version or CALCIUM_ALGORITHM_VERSION)
    groups: list[hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations] = []
    referenced: dict[str, Dataset] = {}
    for lesion in sorted(score.lesions, key=lambda lesion: (-lesion.agatston, lesion.label)):  # largest first
        z, points = lesion_outline(lesion, labels)
        image = source_images[z]
        referenced[str(image.SOPInstanceUID)] = image
        region = hd.sr.ImageRegion(graphic_type=hd.sr.GraphicTypeValues.POLYLINE,
                                   graphic_data=points.astype(np.float32),
                                   source_image=hd.sr.SourceImageForRegion.from_source_image(image))
        measurements = [
            *_calcium_measurements(ArteryScore(agatston=lesion.agatston, volume_mm3=lesion.volume_mm3,
                                               mass_mg=lesion.mass_mg, lesion_count=1), algorithm),
            hd.sr.Measurement(name=codes.DCM.AttenuationCoefficient, value=float(lesion.peak_hu), unit=UNIT_HU,
                              derivation=codes.SCT.Maximum, algorithm_id=algorithm),
        ]
        groups.append(hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
            tracking_identifier=hd.sr.TrackingIdentifier(uid=hd.UID(),
                                                         identifier=f"{lesion.artery.value} lesion {lesion.label}"),
            referenced_region=region, finding_type=codes.SCT.PathologicCalcification, algorithm_id=algorithm,
            finding_sites=[hd.sr.FindingSite(ARTERY_CODES[lesion.artery])], measurements=measurements))
    observer = device_observer()
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=observer),
        procedure_reported=codes.SCT.CardiacCTForCalciumScoring,
        imaging_measurements=groups,
        title=codes.DCM.ImagingMeasurementReport,
    )
    sr = hd.sr.Comprehensive3DSR(
        evidence=with_patient_attributes(list(referenced.values())), content=report[0],
        series_instance_uid=series_instance_uid or hd.UID(), series_number=CALCIUM_LESION_SR_SERIES_NUMBER,
        sop_instance_uid=sop_instance_uid or hd.UID(), instance_number=1, manufacturer=MANUFACTURER,
        is_complete=True, is_final=False, is_verified=False)
    sr.SeriesDescription = "Coronary calcium lesions (Voxa)"
    return sr


__all__ = [
    "ARTERY_CODES",
    "ARTERY_LABELS",
    "OutputError",
    "Segment",
    "build_calcium_lesion_sr",
    "build_calcium_seg",
    "build_calcium_sr",
    "build_segmentation",
    "calcium_segments",
    "lesion_outline",
    "to_bytes",
]
