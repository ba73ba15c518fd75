"""C-STORE failures carry the right status and an Error Comment the sender can read."""

from __future__ import annotations

from typing import Any

from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import AE
from pynetdicom.sop_class import CTImageStorage

from voxa.testing.synthetic import tiny_study


def _send(port: int, datasets: list[Any], calling: str = "MODALITY") -> list[Any]:
    ae = AE(ae_title=calling)
    ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
    assoc = ae.associate("127.0.0.1", port, ae_title="VOXA")
    assert assoc.is_established
    try:
        return [assoc.send_c_store(ds) for ds in datasets]
    finally:
        assoc.release()


def test_storage_full_answers_out_of_resources(voxa_factory: Any) -> None:
    voxa = voxa_factory(accept_unknown_peers=True, min_free_disk_mb=10**9)
    [rsp] = _send(voxa.dicom_port, list(tiny_study(1, series=1, instances_per_series=1).datasets()))
    assert rsp.Status == 0xA700
    assert "storage full" in rsp.ErrorComment
    assert voxa.archive.index.statistics()["instances"] == 0


def test_duplicate_is_a_warning_and_malformed_uid_a_failure(voxa_factory: Any) -> None:
    voxa = voxa_factory(accept_unknown_peers=True)
    ds = next(tiny_study(2, series=1, instances_per_series=1).datasets())
    first, again = _send(voxa.dicom_port, [ds, ds])
    assert first.Status == 0 and again.Status == 0xB000 and "Duplicate" in again.ErrorComment
    bad = next(tiny_study(3, series=1, instances_per_series=1).datasets())
    bad.StudyInstanceUID = "1.2.03.4"  # leading zero in a component
    [rsp] = _send(voxa.dicom_port, [bad])
    assert rsp.Status == 0xC000 and "StudyInstanceUID" in rsp.ErrorComment
    assert voxa.archive.index.statistics()["instances"] == 1


def test_peer_without_store_permission_is_refused(voxa_factory: Any) -> None:
    from voxa.config import PeerSettings

    voxa = voxa_factory(peers=[PeerSettings(name="ro", aet="READONLY", host="127.0.0.1", port=1,
                                            allow_store=False)])
    [rsp] = _send(voxa.dicom_port, list(tiny_study(4, series=1, instances_per_series=1).datasets()),
                  calling="READONLY")
    assert rsp.Status == 0x0124 and "may not store" in rsp.ErrorComment
