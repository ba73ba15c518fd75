"""Synthetic studies: deterministic, valid Part 10, and showing the anatomy they claim to."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from io import BytesIO
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom import config
from pydicom.dataset import Dataset

from voxa.testing import synthetic as syn

CT_FOV_MM = 358.4


@pytest.fixture(autouse=True)
def strict_pydicom(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    # a value that does not fit its VR fails the test instead of warning
    monkeypatch.setattr(config.settings, "writing_validation_mode", config.RAISE)
    monkeypatch.setattr(config.settings, "reading_validation_mode", config.RAISE)
    yield


def small_studies(seed: int = 0) -> list[syn.SyntheticStudy]:
    """Every generator, sized to run in well under a second."""
    return [
        syn.small_ct(seed),
        syn.ct_chest(seed, slices=3, rows=32, slice_thickness_mm=3.0, contrast=False),
        syn.mr_brain(seed, slices=3, rows=64),
        syn.cr_chest(seed, size=256),
        syn.xa_run(seed, frames=4, size=64),
        syn.tiny_study(seed),
        syn.tiny_study(seed, modality="MR", series=1),
        syn.tiny_study(seed, modality="US", series=1, instances_per_series=2),
    ]


def digests(study: syn.SyntheticStudy) -> list[str]:
    return [hashlib.sha256(syn.dataset_to_bytes(ds)).hexdigest() for ds in study.datasets()]


def hu_at(ds: Dataset, x_mm: float, y_mm: float, half: int = 0) -> float:
    """Median HU of the (2*half+1)^2 pixels around a point in patient coordinates."""
    origin_x, origin_y = float(ds.ImagePositionPatient[0]), float(ds.ImagePositionPatient[1])
    spacing = float(ds.PixelSpacing[0])
    col = int(round((x_mm - origin_x) / spacing))
    row = int(round((y_mm - origin_y) / spacing))
    patch = ds.pixel_array[row - half : row + half + 1, col - half : col + half + 1].astype(np.float64)
    return float(np.median(patch)) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)


# -- determinism -----------------------------------------------------------------------------


def test_same_seed_gives_identical_bytes() -> None:
    first = [digests(study) for study in small_studies(7)]
    second = [digests(study) for study in small_studies(7)]
    assert first == second


def test_generating_twice_from_one_study_gives_identical_bytes() -> None:
    study = syn.small_ct(3)
    assert digests(study) == digests(study)


def test_different_seeds_give_different_patients_uids_and_pixels() -> None:
    a, b = syn.demo_studies(0, ct_slices=2), syn.demo_studies(1, ct_slices=2)
    assert {s.patient_id for s in a}.isdisjoint(s.patient_id for s in b)
    assert {s.study_instance_uid for s in a}.isdisjoint(s.study_instance_uid for s in b)
    assert [s.patient_name for s in a] != [s.patient_name for s in b]
    assert digests(syn.small_ct(0)) != digests(syn.small_ct(1))
    assert syn.ct_calcifications(0) != syn.ct_calcifications(1)


def test_demo_studies_are_four_distinct_patients() -> None:
    studies = syn.demo_studies(0, ct_slices=2)
    assert [s.key for s in studies] == ["ct-chest", "mr-brain", "cr-chest", "xa-run"]
    assert [s.modality for s in studies] == ["CT", "MR", "DX", "XA"]
    assert len({s.patient_id for s in studies}) == 4
    assert len({s.study_instance_uid for s in studies}) == 4
    assert syn.DEMO_MIN_CT_SLICES == 200
    assert syn.demo_studies(0)[0].instance_count == 300


def test_parameters_change_the_study_uid() -> None:
    # the same patient may have many studies; differently generated ones must not share a UID
    uids = {
        syn.ct_chest(0, slices=2).study_instance_uid,
        syn.ct_chest(0, slices=3).study_instance_uid,
        syn.ct_chest(0, slices=2, contrast=False).study_instance_uid,
        syn.small_ct(0).study_instance_uid,
    }
    assert len(uids) == 4
    assert syn.ct_chest(0, slices=2).patient_id == syn.small_ct(0).patient_id


# -- Part 10 and attributes --------------------------------------------------------------------


@pytest.mark.parametrize("index", range(len(small_studies())))
def test_every_instance_round_trips_through_part10(index: int) -> None:
    study = small_studies()[index]
    count = 0
    for ds in study.datasets():
        data = syn.dataset_to_bytes(ds)
        assert data[:128] == b"\0" * 128 and data[128:132] == b"DICM"
        back = pydicom.dcmread(BytesIO(data))
        assert back.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
        assert back.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
        assert back.file_meta.MediaStorageSOPClassUID == ds.SOPClassUID
        for element in ds:
            if element.keyword != "PixelData":
                assert back[element.tag].value == element.value, element.keyword
        np.testing.assert_array_equal(back.pixel_array, ds.pixel_array)
        count += 1
    assert count == study.instance_count


@pytest.mark.parametrize("index", range(len(small_studies())))
def test_identifiers_are_consistent_within_a_study(index: int) -> None:
    study = small_studies()[index]
    datasets = list(study.datasets())
    sop_uids = [ds.SOPInstanceUID for ds in datasets]
    assert len(set(sop_uids)) == len(sop_uids)
    series: dict[str, int] = {}
    for ds in datasets:
        assert ds.StudyInstanceUID == study.study_instance_uid
        assert ds.PatientID == study.patient_id
        assert str(ds.PatientName) == study.patient_name
        assert ds.Modality == study.modality
        assert ds.StudyDate == study.study_date
        assert ds.AccessionNumber == study.accession_number
        assert ds.StudyDescription == study.description
        assert ds.SpecificCharacterSet == "ISO_IR 100"
        assert ds.Manufacturer == "Voxa Synthetic"
        assert "^" in str(ds.PatientName)
        assert len(ds.StudyDate) == 8 and len(ds.PatientBirthDate) == 8
        assert ds.PatientSex in ("F", "M", "O")
        assert series.setdefault(ds.SeriesInstanceUID, int(ds.SeriesNumber)) == int(ds.SeriesNumber)
        for uid in (ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID):
            assert uid.is_valid and len(uid) <= 64
    assert len(series) == study.series_count
    assert len(set(series.values())) == len(series)


def test_demo_instances_carry_realistic_attributes() -> None:
    for study in syn.demo_studies(0, ct_slices=1):
        if study.key == "cr-chest":
            continue  # the radiograph is checked on its own; it is the slowest to build
        ds = next(study.datasets())
        assert "^" in str(ds.ReferringPhysicianName)
        for keyword in ("PatientBirthDate", "StudyTime", "AccessionNumber", "StudyID", "InstitutionName",
                        "SeriesDescription", "BodyPartExamined", "ProtocolName", "InstanceNumber"):  # fmt: skip
            assert ds.get(keyword) not in (None, ""), keyword


def test_write_study_names_files_by_series_and_instance(tmp_path: Path) -> None:
    study = syn.tiny_study(4, series=2, instances_per_series=2)
    paths = syn.write_study(study, tmp_path)
    assert sorted(p.relative_to(tmp_path).as_posix() for p in paths) == [
        "1/00001.dcm", "1/00002.dcm", "2/00001.dcm", "2/00002.dcm",
    ]  # fmt: skip
    for path, ds in zip(paths, study.datasets(), strict=True):
        assert path.read_bytes() == syn.dataset_to_bytes(ds)
        assert pydicom.dcmread(path).SOPInstanceUID == ds.SOPInstanceUID


# -- CT ------------------------------------------------------------------------------------------


def test_ct_geometry_steps_along_the_slice_normal() -> None:
    study = syn.small_ct(0, slices=6, rows=64, slice_thickness_mm=2.5)
    datasets = list(study.datasets())
    positions = np.array([[float(v) for v in ds.ImagePositionPatient] for ds in datasets])
    orientation = np.array([float(v) for v in datasets[0].ImageOrientationPatient])
    normal = np.cross(orientation[:3], orientation[3:])
    steps = np.diff(positions @ normal)
    np.testing.assert_allclose(np.abs(steps), 2.5)
    assert np.all(np.sign(steps) == np.sign(steps[0]))
    np.testing.assert_allclose(np.diff(positions[:, :2], axis=0), 0.0)
    for i, ds in enumerate(datasets):
        assert ds.InstanceNumber == i + 1
        assert float(ds.SliceLocation) == pytest.approx(positions[i] @ normal)
        assert float(ds.SliceThickness) == 2.5
        assert float(ds.PixelSpacing[0]) == pytest.approx(CT_FOV_MM / 64)
        assert ds.FrameOfReferenceUID == datasets[0].FrameOfReferenceUID
        assert ds.Rows == ds.Columns == 64
        assert ds.RescaleType == "HU" and float(ds.RescaleIntercept) == -1024
        assert ds.pixel_array.dtype == np.int16
    # the slab is centred on z = 0, the middle of the heart
    assert positions[:, 2].mean() == pytest.approx(0.0)


def test_ct_contrast_attributes_follow_the_protocol() -> None:
    contrast = next(syn.ct_chest(0, slices=1, rows=16).datasets())
    plain = next(syn.ct_chest(0, slices=1, rows=16, contrast=False, kvp=100).datasets())
    assert contrast.ContrastBolusAgent and "ContrastBolusAgent" not in plain
    assert float(plain.KVP) == 100 and float(contrast.KVP) == 120
    assert contrast.ConvolutionKernel


def test_full_ct_chest_has_anatomy_and_calcifications() -> None:
    """The 300-slice demo series: count, uniqueness, HU of known structures, calcium truth."""
    seed = 0
    study = syn.ct_chest(seed)
    truths = syn.ct_calcifications(seed)
    assert study.calcifications == tuple(truths)
    assert len(truths) == 6
    assert {t.artery for t in truths} <= {"LM", "LAD", "LCX", "RCA"}
    assert any(t.peak_hu >= 400 for t in truths)
    chest = syn._chest(seed)

    sop_uids = set()
    calcium_hu: dict[int, float] = {}
    calcium_z_error: dict[int, float] = {}
    checked_mid = False
    for ds in study.datasets():
        sop_uids.add(ds.SOPInstanceUID)
        z = float(ds.ImagePositionPatient[2])
        for i, t in enumerate(truths):
            error = abs(z - t.centre_mm[2])
            if error < calcium_z_error.get(i, np.inf):
                calcium_z_error[i] = error
                calcium_hu[i] = hu_at(ds, t.centre_mm[0], t.centre_mm[1])
        if not checked_mid and abs(z) <= 0.5:
            checked_mid = True
            assert hu_at(ds, -100.0, 0.0, half=2) < -700  # right lung
            assert hu_at(ds, 100.0, 20.0, half=2) < -700  # left lung
            ax, ay, _ = chest.descending_aorta(z)
            assert hu_at(ds, ax, ay, half=2) > 200  # contrast in the descending aorta
            assert hu_at(ds, -170.0, -170.0, half=2) < -950  # air outside the patient
            assert ds.pixel_array.max() + float(ds.RescaleIntercept) > 700  # cortical bone
    assert len(sop_uids) == 300
    assert checked_mid
    for i, t in enumerate(truths):
        assert calcium_hu[i] >= 130, (t, calcium_hu[i])


def test_ct_slice_hu_matches_the_series_up_to_noise() -> None:
    study = syn.ct_chest(2, slices=1, rows=128)
    ds = next(study.datasets())
    stored = ds.pixel_array.astype(np.float32) + float(ds.RescaleIntercept)
    clean = syn.ct_slice_hu(2, 0.0, rows=128, noise=False)
    assert float(np.median(np.abs(stored - clean))) < 15.0


def test_calcifications_stand_out_without_contrast() -> None:
    seed = 5
    for t in syn.ct_calcifications(seed):
        hu = syn.ct_slice_hu(seed, t.centre_mm[2], rows=512, contrast=False, noise=False)
        spacing = CT_FOV_MM / 512
        origin = -(511 / 2) * spacing
        col = int(round((t.centre_mm[0] - origin) / spacing))
        row = int(round((t.centre_mm[1] - origin) / spacing))
        # the nearest voxel centre is within half a pixel of the lesion centre
        assert 130 + 0.5 * (t.peak_hu - 130) <= hu[row, col] <= t.peak_hu + 1
        ring = hu[row - 12 : row + 13, col - 12 : col + 13]
        # soft tissue and fat around, calcium only within the lesion
        assert np.count_nonzero(ring >= 130) < 4 * t.volume_mm3 / spacing**2


# -- MR, DX, XA -------------------------------------------------------------------------------


def test_mr_brain_contrast_differs_by_sequence() -> None:
    study = syn.mr_brain(0)
    datasets = list(study.datasets())
    assert study.instance_count == len(datasets) == 72
    by_series: dict[str, list[Dataset]] = {}
    for ds in datasets:
        by_series.setdefault(ds.SeriesDescription, []).append(ds)
    assert len(by_series) == 3
    # lateral ventricle (CSF) and frontal white matter on the slice nearest z = 22 mm
    values: dict[str, tuple[float, float]] = {}
    for series in by_series.values():
        ds = min(series, key=lambda d: abs(float(d.ImagePositionPatient[2]) - 22.0))
        assert ds.Modality == "MR" and ds.MagneticFieldStrength
        assert ds.EchoTime and ds.RepetitionTime and ds.ScanningSequence
        values[ds.SequenceName] = (hu_like(ds, -10.0, -6.0), hu_like(ds, -30.0, -40.0))
    (t1_csf, t1_wm), (t2_csf, t2_wm), (fl_csf, fl_wm) = values["T1"], values["T2"], values["FLAIR"]
    assert t1_csf < t1_wm / 2  # CSF dark on T1
    assert t2_csf > 2 * t2_wm  # bright on T2
    assert fl_csf < fl_wm / 3  # dark again on FLAIR
    assert "InversionTime" in by_series["AX T2 FLAIR"][0]


def hu_like(ds: Dataset, x_mm: float, y_mm: float) -> float:
    spacing = float(ds.PixelSpacing[0])
    col = int(round((x_mm - float(ds.ImagePositionPatient[0])) / spacing))
    row = int(round((y_mm - float(ds.ImagePositionPatient[1])) / spacing))
    return float(np.mean(ds.pixel_array[row - 1 : row + 2, col - 1 : col + 2]))


def test_chest_radiograph_is_a_pa_dx_for_presentation() -> None:
    study = syn.cr_chest(0, size=512)
    (ds,) = list(study.datasets())
    assert ds.SOPClassUID == pydicom.uid.DigitalXRayImageStorageForPresentation
    assert ds.ViewPosition == "PA" and ds.PhotometricInterpretation == "MONOCHROME2"
    assert ds.PresentationIntentType == "FOR PRESENTATION"
    assert float(ds.ImagerPixelSpacing[0]) == pytest.approx(409.6 / 512)
    pixels = ds.pixel_array.astype(np.float64)
    mm = 512 / 409.6

    def at(x: float, y: float) -> float:
        r, c = int(256 + y * mm), int(256 + x * mm)
        return float(pixels[r - 4 : r + 5, c - 4 : c + 5].mean())

    lung = min(at(-95.0, -60.0), at(95.0, -60.0))
    assert lung < at(0.0, 30.0) - 800  # lungs darker than the mediastinum
    assert at(-200.0, -190.0) < 300  # direct exposure beside the neck


def test_xa_run_fills_with_contrast_over_the_frames() -> None:
    study = syn.xa_run(0)
    (ds,) = list(study.datasets())
    assert ds.SOPClassUID == pydicom.uid.XRayAngiographicImageStorage
    assert ds.NumberOfFrames == 30 and float(ds.FrameTime) == pytest.approx(66.6667, abs=1e-3)
    assert ds.FrameIncrementPointer == pydicom.tag.Tag("FrameTime")
    frames = ds.pixel_array
    assert frames.shape == (30, 512, 512) and frames.dtype == np.uint8
    first = frames[0].astype(np.int16)
    # only the catheter before the injection; the whole tree has filled by mid-run
    opacified = [int(np.count_nonzero(first - frame.astype(np.int16) > 25)) for frame in frames]
    assert opacified[1] < 50
    assert opacified[14] > 2000
    assert opacified[14] > opacified[7] > opacified[1]


# -- small studies for other tests ---------------------------------------------------------------


def test_tiny_studies_are_distinct_and_honour_given_identifiers() -> None:
    studies = [syn.tiny_study(seed) for seed in range(40)]
    assert len({s.study_instance_uid for s in studies}) == 40
    assert len({s.patient_id for s in studies}) == 40
    sop_uids = {ds.SOPInstanceUID for s in studies for ds in s.datasets()}
    assert len(sop_uids) == 40 * 6

    given = syn.tiny_study(
        1,
        patient_id="PAT-1",
        patient_name="DOE^JANE^M",
        study_date="20200229",
        modality="MR",
        series=3,
        instances_per_series=2,
        rows=8,
    )
    datasets = list(given.datasets())
    assert given.instance_count == len(datasets) == 6
    assert {ds.PatientID for ds in datasets} == {"PAT-1"}
    assert {str(ds.PatientName) for ds in datasets} == {"DOE^JANE^M"}
    assert {ds.StudyDate for ds in datasets} == {"20200229"}
    assert {ds.Rows for ds in datasets} == {8}
    assert len({ds.SeriesInstanceUID for ds in datasets}) == 3
    # two patients in the same seed still get different studies
    other = syn.tiny_study(1, patient_id="PAT-2")
    assert other.study_instance_uid != syn.tiny_study(1, patient_id="PAT-1").study_instance_uid


def test_make_instance_sets_exactly_what_it_is_given() -> None:
    ds = syn.make_instance(
        patient_id="P1",
        patient_name="ROE^RICHARD",
        study_instance_uid="1.2.3.4",
        series_instance_uid="1.2.3.4.1",
        sop_instance_uid="1.2.3.4.1.1",
        modality="OT",
        instance_number=3,
        StudyDescription="Custom",
        BodyPartExamined="ABDOMEN",
    )
    assert ds.SOPClassUID == pydicom.uid.SecondaryCaptureImageStorage
    assert (ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID) == (
        "1.2.3.4",
        "1.2.3.4.1",
        "1.2.3.4.1.1",
    )
    assert ds.StudyDescription == "Custom" and ds.BodyPartExamined == "ABDOMEN"
    assert ds.InstanceNumber == 3 and ds.Modality == "OT"
    back = pydicom.dcmread(BytesIO(syn.dataset_to_bytes(ds)))
    assert back.pixel_array.shape == (16, 16)
