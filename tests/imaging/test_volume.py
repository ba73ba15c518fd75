"""Series-to-volume assembly, the Volume's geometry, and the on-disk volume cache."""

from __future__ import annotations

import copy
import os
import random
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import UID

from voxa.archive import open_archive
from voxa.config import Settings
from voxa.imaging.assemble import AssemblyError, PhaseKey, split_phases, volume_from_datasets
from voxa.imaging.series import flush_cache_writes, load_series_volume
from voxa.imaging.volume import Volume
from voxa.testing.synthetic import dataset_to_bytes, make_instance, small_ct

SERIES = "2.25.1001"
AXIAL = ["1", "0", "0", "0", "1", "0"]


def _ct(n: int, z: float, *, series: str = SERIES, rows: int = 8, iop: list[str] | None = None,
        ipp: list[float] | None = None, values: np.ndarray | None = None, **attrs: Any) -> Dataset:
    ds = make_instance(
        patient_id="P1", patient_name="TEST^VOLUME", study_instance_uid="2.25.1000", series_instance_uid=series,
        sop_instance_uid=f"{series}.{n}", instance_number=n, rows=rows, columns=rows + 2,
        ImagePositionPatient=[f"{v:g}" for v in (ipp if ipp is not None else [-10.0, -20.0, z])],
        ImageOrientationPatient=iop or AXIAL, PixelSpacing=["0.5", "0.75"], **attrs,
    )
    if values is not None:
        ds.PixelRepresentation = 1
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 16, 15
        ds.PixelData = values.astype("<i2").tobytes()
    return ds


def _constant(z: float, rows: int = 8) -> np.ndarray:
    """Stored value 1024 + 10 z: after rescale (-1024) the slice is 10 z HU everywhere."""
    return np.full((rows, rows + 2), 1024 + 10 * z, dtype=np.int16)


def _shuffled(dss: list[Dataset], seed: int = 3) -> list[Dataset]:
    out = list(dss)
    random.Random(seed).shuffle(out)
    return out


def _expected(ds: Dataset) -> np.ndarray:
    return ds.pixel_array.astype(np.float32) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)


def test_sorted_by_position_not_instance_number() -> None:
    # instance numbers run opposite to position, and the input is shuffled
    dss = [_ct(n, z=float(2.5 * (10 - n))) for n in range(1, 9)]
    vol = volume_from_datasets(_shuffled(dss))
    by_z = sorted(dss, key=lambda d: float(d.ImagePositionPatient[2]))
    assert vol.sop_instance_uids == tuple(d.SOPInstanceUID for d in by_z)
    assert vol.voxels.dtype == np.float32 and vol.voxels.shape == (8, 8, 10)
    for k, d in enumerate(by_z):
        np.testing.assert_array_equal(vol.voxels[k], _expected(d))
    assert vol.spacing_mm == pytest.approx((2.5, 0.5, 0.75))
    assert vol.origin_mm == pytest.approx((-10.0, -20.0, 5.0))
    np.testing.assert_allclose(vol.direction, np.eye(3))
    assert vol.units == "HU" and vol.modality == "CT" and vol.series_instance_uid == SERIES
    assert vol.voxel_volume_ml == pytest.approx(2.5 * 0.5 * 0.75 / 1000)


def test_affine_maps_voxels_to_image_position_plus_row_column_offsets() -> None:
    dss = [_ct(n, z=float(3 * n)) for n in range(1, 6)]
    vol = volume_from_datasets(_shuffled(dss))
    for k, d in enumerate(dss):
        ipp = np.array([float(v) for v in d.ImagePositionPatient])
        # voxel (k, j=row 4, i=column 7): IPP + 7 columns * 0.75 along x + 4 rows * 0.5 along y
        np.testing.assert_allclose(vol.index_to_patient([k, 4, 7]), ipp + [7 * 0.75, 4 * 0.5, 0])
    a = vol.affine
    np.testing.assert_allclose(a @ [2, 4, 7, 1], [*vol.index_to_patient([2, 4, 7]), 1])
    pts = np.array([[0, 0, 0], [4, 7, 9], [1.5, 2.25, 3.5]])
    np.testing.assert_allclose(vol.patient_to_index(vol.index_to_patient(pts)), pts, atol=1e-9)


def test_rescale_applied_per_slice() -> None:
    dss = [_ct(n, z=float(n), values=_constant(0)) for n in range(1, 5)]
    dss[2].RescaleSlope, dss[2].RescaleIntercept = "2", "-2048"
    vol = volume_from_datasets(dss)
    assert np.all(vol.voxels[0] == 0.0)  # 1024 - 1024
    assert np.all(vol.voxels[2] == 0.0)  # 1024 * 2 - 2048
    dss[1].RescaleIntercept = "-1000"
    assert np.all(volume_from_datasets(dss).voxels[1] == 24.0)


def test_small_ct_hu_values() -> None:
    dss = list(small_ct(seed=1, slices=4, rows=32).datasets())
    vol = volume_from_datasets(reversed(dss))
    assert vol.units == "HU" and vol.shape == (4, 32, 32)
    centre = vol.voxels[:, 12:20, 12:20]
    assert -200 < float(np.median(centre)) < 400  # soft tissue / blood around the heart
    assert float(vol.voxels[:, 0, 0].max()) < -900  # air in the corner


def test_uneven_spacing_resampled_and_refused() -> None:
    zs = [0.0, 2.0, 4.0, 8.0, 10.0]  # one slice missing
    dss = [_ct(n, z=z, values=_constant(z)) for n, z in enumerate(zs, start=1)]
    vol = volume_from_datasets(_shuffled(dss))
    assert vol.shape[0] == 6 and vol.spacing_mm[0] == pytest.approx(2.0)
    np.testing.assert_allclose(vol.voxels[:, 3, 3], [0, 20, 40, 60, 80, 100])  # 60 interpolated
    assert vol.notes and "uneven" in vol.notes[0]
    assert len(vol.sop_instance_uids) == 6
    with pytest.raises(AssemblyError, match="uneven slice spacing"):
        volume_from_datasets(dss, uneven="refuse")
    # within tolerance: not resampled
    dss2 = [_ct(n, z=z) for n, z in enumerate([0.0, 2.0, 4.005, 6.0], start=1)]
    assert volume_from_datasets(dss2, uneven="refuse").shape[0] == 4


def test_duplicate_positions_refused() -> None:
    dss = [_ct(n, z=float(n)) for n in range(1, 5)] + [_ct(9, z=2.0)]
    with pytest.raises(AssemblyError, match="duplicated slice position"):
        volume_from_datasets(dss)


def test_mixed_orientation_and_size_refused() -> None:
    dss = [_ct(n, z=float(n)) for n in range(1, 4)]
    odd = _ct(7, z=7.0, iop=["1", "0", "0", "0", "0", "-1"])
    with pytest.raises(AssemblyError, match="mixed orientations"):
        volume_from_datasets([*dss, odd])
    with pytest.raises(AssemblyError, match="mixed image sizes"):
        volume_from_datasets([*dss, _ct(8, z=8.0, rows=12)])


def test_oblique_orientation_keeps_patient_coordinates() -> None:
    c, s = np.cos(np.radians(30)), np.sin(np.radians(30))
    row, col = np.array([c, s, 0.0]), np.array([0.0, 0.0, -1.0])  # oblique sagittal-coronal
    normal = np.cross(row, col)
    base = np.array([5.0, -7.0, 30.0])
    iop = [f"{v:.8f}" for v in (*row, *col)]
    dss = [_ct(n, z=0, iop=iop, ipp=list(base + normal * 1.5 * n)) for n in range(1, 6)]
    vol = volume_from_datasets(_shuffled(dss))
    np.testing.assert_allclose(vol.direction, np.stack([row, col, normal]), atol=1e-7)
    assert vol.spacing_mm[0] == pytest.approx(1.5)
    for k, n in enumerate(range(1, 6)):
        assert vol.sop_instance_uids[k] == dss[n - 1].SOPInstanceUID
        expect = base + normal * 1.5 * n + 3 * 0.5 * col + 5 * 0.75 * row
        np.testing.assert_allclose(vol.index_to_patient([k, 3, 5]), expect, atol=1e-5)


def test_gantry_tilt_corrected_or_refused() -> None:
    # each slice 1 mm further along z and 0.5 mm (1 row) further along y: ~26.6 degrees
    rows = 8
    dss = []
    for n in range(4):
        values = np.zeros((rows, rows + 2), dtype=np.int16) + 1024
        values[2 + n, :] = 2024  # the same patient point (y = 1 mm, row 2 of slice 0) in every slice
        dss.append(_ct(n + 1, z=0, ipp=[0.0, -0.5 * n, float(n)], values=values))
    with pytest.raises(AssemblyError, match="gantry tilt"):
        volume_from_datasets(dss, tilt="refuse")
    vol = volume_from_datasets(_shuffled(dss))
    assert vol.tilt_deg == pytest.approx(np.degrees(np.arctan(0.5 * 3 / 3)), abs=0.01)
    # the structure lies at patient y = 1 mm in every slice (row 2 + n of slice n): after the
    # correction every slice shares slice 0's in-plane grid, so it is on row 2 throughout
    for k in range(4):
        np.testing.assert_allclose(vol.voxels[k, :, 4], [0, 0, 1000, 0, 0, 0, 0, 0], atol=1e-3)
        np.testing.assert_allclose(vol.index_to_patient([k, 2, 4]), [3.0, 1.0, float(k)], atol=1e-9)
    assert vol.origin_mm == pytest.approx((0.0, 0.0, 0.0))
    assert vol.notes and "tilt" in vol.notes[0]


def _enhanced(dss: list[Dataset]) -> Dataset:
    """One enhanced CT image holding the frames of ``dss`` (in the given order)."""
    mf = copy.deepcopy(dss[0])
    mf.SOPClassUID = UID("1.2.840.10008.5.1.4.1.1.2.1")  # Enhanced CT Image Storage
    mf.file_meta.MediaStorageSOPClassUID = mf.SOPClassUID
    mf.SOPInstanceUID = mf.file_meta.MediaStorageSOPInstanceUID = UID(f"{SERIES}.999")
    for kw in ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "RescaleSlope",
               "RescaleIntercept", "RescaleType", "InstanceNumber"):
        delattr(mf, kw)
    shared = Dataset()
    orientation, measures, transform = Dataset(), Dataset(), Dataset()
    orientation.ImageOrientationPatient = dss[0].ImageOrientationPatient
    measures.PixelSpacing = dss[0].PixelSpacing
    measures.SliceThickness = "5"
    transform.RescaleSlope, transform.RescaleIntercept, transform.RescaleType = "1", "-1024", "HU"
    shared.PlaneOrientationSequence = DicomSequence([orientation])
    shared.PixelMeasuresSequence = DicomSequence([measures])
    shared.PixelValueTransformationSequence = DicomSequence([transform])
    mf.SharedFunctionalGroupsSequence = DicomSequence([shared])
    frames = []
    for d in dss:
        item, position = Dataset(), Dataset()
        position.ImagePositionPatient = d.ImagePositionPatient
        item.PlanePositionSequence = DicomSequence([position])
        frames.append(item)
    mf.PerFrameFunctionalGroupsSequence = DicomSequence(frames)
    mf.NumberOfFrames = len(dss)
    mf.PixelData = b"".join(d.PixelData for d in dss)
    return mf


def test_enhanced_multiframe_same_as_single_frames() -> None:
    dss = [_ct(n, z=float(-4 * n)) for n in range(1, 7)]
    single = volume_from_datasets(dss)
    multi = volume_from_datasets([_enhanced(_shuffled(dss))])
    np.testing.assert_array_equal(multi.voxels, single.voxels)
    np.testing.assert_allclose(multi.affine, single.affine)
    assert multi.units == "HU" and multi.sop_instance_uids == (f"{SERIES}.999",) * 6


def test_split_phases_by_trigger_time() -> None:
    dss = []
    for phase, trigger in enumerate((0.0, 350.0, 700.0)):
        for k in range(4):
            n = phase * 10 + k + 1
            dss.append(_ct(n, z=float(2 * k), TriggerTime=f"{trigger + k * 1.5:g}",
                           values=_constant(phase)))
    with pytest.raises(AssemblyError, match="split_phases"):
        volume_from_datasets(dss)
    phases = split_phases(_shuffled(dss))
    assert [k.attribute for k in phases] == ["TriggerTime"] * 3
    assert [k.value for k in phases] == pytest.approx([2.25, 352.25, 702.25])
    for i, (_key, members) in enumerate(phases.items()):
        vol = volume_from_datasets(members)
        assert vol.shape[0] == 4 and np.all(vol.voxels == 10.0 * i)
    single = [_ct(n, z=float(n)) for n in range(1, 4)]
    assert split_phases(single) == {PhaseKey("", 0.0): single}


def test_load_series_volume_cached_and_invalidated(tmp_path: Path) -> None:
    archive = open_archive(Settings(data_dir=tmp_path / "data", fsync=False))
    try:
        dss = [_ct(n, z=float(2 * n)) for n in range(1, 7)]
        for d in _shuffled(dss):
            assert archive.ingest(dataset_to_bytes(d)).ok
        expected = volume_from_datasets(dss)

        first = load_series_volume(archive, SERIES)
        _assert_same(first, expected)
        assert not first.voxels.flags.writeable  # shared with the background cache writer
        flush_cache_writes()
        cache = tmp_path / "data" / "cache" / "volumes"
        assert (cache / f"{SERIES}.json").is_file() and len(list(cache.glob("*.npy"))) == 1

        second = load_series_volume(archive, SERIES)
        _assert_same(second, expected)
        assert isinstance(second.voxels, np.memmap) or isinstance(second.voxels.base, np.memmap)

        # one more slice: the fingerprint changes and the volume is rebuilt
        extra = _ct(7, z=14.0)
        assert archive.ingest(dataset_to_bytes(extra)).ok
        third = load_series_volume(archive, SERIES)
        _assert_same(third, volume_from_datasets([*dss, extra]))
        flush_cache_writes()  # the new file is written in the background, then the old one removed
        assert len(list(cache.glob("*.npy"))) == 1

        other = tmp_path / "elsewhere"
        assert load_series_volume(archive, SERIES, cache_dir=other, background_cache_write=False).shape[0] == 7
        assert (other / f"{SERIES}.json").is_file()
        with pytest.raises(AssemblyError, match="no stored instances"):
            load_series_volume(archive, "2.25.404")
    finally:
        archive.close()


def _assert_same(a: Volume, b: Volume) -> None:
    np.testing.assert_array_equal(np.asarray(a.voxels), b.voxels)
    assert a.spacing_mm == pytest.approx(b.spacing_mm)
    assert a.origin_mm == pytest.approx(b.origin_mm)
    np.testing.assert_allclose(a.direction, b.direction)
    assert (a.units, a.modality, a.series_instance_uid, a.sop_instance_uids) == (
        b.units, b.modality, b.series_instance_uid, b.sop_instance_uids)


def test_native_pixel_fast_path_equals_pydicom_on_its_test_files() -> None:
    import glob
    import os
    import warnings

    import pydicom.data

    from voxa.imaging.assemble import _native_pixels

    root = os.path.dirname(pydicom.data.get_testdata_file("CT_small.dcm"))
    compared = 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for path in sorted(glob.glob(f"{root}/**/*.dcm", recursive=True)):
            try:
                ds = pydicom.dcmread(path)
                reference = ds.pixel_array
            except Exception:  # noqa: BLE001 - files pydicom itself cannot decode are not compared
                continue
            fast = _native_pixels(ds)
            if fast is None:
                continue
            compared += 1
            assert fast.dtype == reference.dtype and np.array_equal(fast, reference), path
    assert compared >= 5


def test_volume_cache_is_bounded_least_recently_used_first(tmp_path: Path) -> None:
    """Beyond max_cache_bytes the least recently used volumes go; a deleted series' volume goes at
    the next write; max_cache_bytes=0 keeps nothing."""
    from voxa.archive.attributes import Level
    from voxa.archive.identifiers import series_public_id

    archive = open_archive(Settings(data_dir=tmp_path / "data", fsync=False))
    cache = tmp_path / "data" / "cache" / "volumes"
    series = {name: f"2.25.77{k}" for k, name in enumerate("ABCD")}
    try:
        for uid in series.values():
            for n in range(1, 5):
                assert archive.ingest(dataset_to_bytes(_ct(n, z=float(n), series=uid, rows=32))).ok
        one = 4 * 32 * 34 * 4 + 128  # float32 voxels plus the .npy header
        limit = 2 * one + one // 2  # room for two volumes

        def load(name: str) -> None:
            load_series_volume(archive, series[name], background_cache_write=False, max_cache_bytes=limit)

        def cached() -> set[str]:
            return {name for name, uid in series.items() if (cache / f"{uid}.json").exists()}

        load("A")
        load("B")
        assert cached() == {"A", "B"}
        old = time.time() - 100
        for name in ("A", "B"):  # A used earlier than B
            os.utime(cache / f"{series[name]}.json", (old, old - (10 if name == "A" else 0)))
        load("A")  # a hit: A is now the most recently used
        load("C")  # over the limit: B, the least recently used, goes
        assert cached() == {"A", "C"}
        assert len(list(cache.glob("*.npy"))) == 2

        # series A deleted from the archive: its volume goes at the next write
        assert archive.delete(Level.SERIES, series_public_id("P1", "2.25.1000", series["A"])) == 4
        load("D")
        assert cached() == {"C", "D"}

        # no cache at all
        for f in cache.iterdir():
            f.unlink()
        load_series_volume(archive, series["C"], background_cache_write=False, max_cache_bytes=0)
        assert not any(cache.iterdir())
    finally:
        archive.close()
