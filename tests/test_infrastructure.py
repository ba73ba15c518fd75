"""The test harness itself: free ports and the private PostgreSQL, Orthanc and Redis peers."""

from __future__ import annotations

import socket
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from support import free_port
from support.dcmtk import require_dcmtk, run_dcmtk
from support.orthanc import OrthancPeer
from support.postgres import PostgresServer
from support.redis import RedisServer, redis_ping

# ---------------------------------------------------------------------------- ports


def test_free_port_returns_distinct_bindable_ports() -> None:
    ports = [free_port() for _ in range(50)]
    assert len(set(ports)) == len(ports)
    for port in ports:
        assert 1024 < port < 65536
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", port))


# ---------------------------------------------------------------------------- PostgreSQL / index URL


def _select_one(url: str) -> tuple[int, str]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            one = conn.execute(sa.text("select 1")).scalar_one()
            return one, engine.dialect.name
    finally:
        engine.dispose()


def test_database_url_answers_select_1(database_url: str) -> None:
    one, dialect = _select_one(database_url)
    assert one == 1
    if database_url.startswith("sqlite"):
        assert dialect == "sqlite"
        assert database_url.endswith("/index.sqlite")
    else:
        assert dialect == "postgresql"
        assert database_url.startswith("postgresql+psycopg://postgres@127.0.0.1:")


def test_database_url_is_fresh_per_test(database_url: str) -> None:
    engine = sa.create_engine(database_url)
    try:
        assert sa.inspect(engine).get_table_names() == []
        with engine.begin() as conn:
            conn.execute(sa.text("create table marker (id integer primary key)"))
    finally:
        engine.dispose()


def test_postgres_server_urls_and_create_database(postgres_server: PostgresServer) -> None:
    url = postgres_server.url("postgres")
    assert url == f"postgresql+psycopg://postgres@127.0.0.1:{postgres_server.port}/postgres"
    assert _select_one(url) == (1, "postgresql")

    created = postgres_server.create_database("voxa_infra_check")
    assert created == postgres_server.url("voxa_infra_check")
    engine = sa.create_engine(created)
    try:
        with engine.connect() as conn:
            assert conn.execute(sa.text("select current_database()")).scalar_one() == "voxa_infra_check"
            version = conn.execute(sa.text("show server_version_num")).scalar_one()
            assert int(version) >= 150000
            assert conn.execute(sa.text("select host(inet_server_addr())")).scalar_one() == "127.0.0.1"
    finally:
        engine.dispose()


# ---------------------------------------------------------------------------- DCMTK


def test_run_dcmtk_runs_a_tool() -> None:
    require_dcmtk("echoscu")
    proc = run_dcmtk("echoscu", "--version", timeout=30)
    assert proc.returncode == 0
    assert "echoscu" in proc.stdout


# ---------------------------------------------------------------------------- Orthanc


def _listening_addresses(port: int) -> set[str]:
    """Local addresses (hex, as in /proc/net/tcp{,6}) of sockets listening on ``port``."""
    found: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            address, port_hex = fields[1].split(":")
            if fields[3] == "0A" and int(port_hex, 16) == port:  # 0A = LISTEN
                found.add(address)
    return found


def _write_secondary_capture(path: Path) -> tuple[str, str]:
    """A tiny valid Secondary Capture Part-10 file; returns (StudyInstanceUID, SOPInstanceUID)."""
    import numpy as np
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.PatientName = "Infra^Check"
    ds.PatientID = "VOXAINFRA1"
    ds.Modality = "OT"
    ds.ConversionType = "WSD"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = ds.Columns = 8
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    ds.PixelData = np.arange(64, dtype=np.uint8).tobytes()
    ds.save_as(path, enforce_file_format=True)
    return ds.StudyInstanceUID, ds.SOPInstanceUID


def test_orthanc_peer_answers_echo_http_and_stores(orthanc_peer, tmp_path: Path) -> None:
    require_dcmtk("echoscu", "storescu")
    voxa_port = free_port()
    peer: OrthancPeer = orthanc_peer(aet="PEERA", modalities={"voxa": ["VOXA", "127.0.0.1", voxa_port]})
    assert peer.aet == "PEERA"
    assert peer.url == f"http://127.0.0.1:{peer.http_port}"
    assert peer.storage_dir.is_dir()

    # both servers listen on loopback only (the bind shim works)
    for port in (peer.http_port, peer.dicom_port):
        addresses = _listening_addresses(port)
        assert addresses, f"nothing listens on {port}"
        assert not {a for a in addresses if set(a) == {"0"}}, f"wildcard bind on {port}: {addresses}"

    echo = run_dcmtk("echoscu", "-aet", "VOXATEST", "-aec", peer.aet, "127.0.0.1", peer.dicom_port)
    assert echo.returncode == 0, echo.stderr

    system = httpx.get(f"{peer.url}/system", timeout=10).json()
    assert system["DicomAet"] == "PEERA"
    assert system["DicomPort"] == peer.dicom_port
    assert "voxa" in httpx.get(f"{peer.url}/modalities", timeout=10).json()

    study_uid, sop_uid = _write_secondary_capture(tmp_path / "sc.dcm")
    store = run_dcmtk(
        "storescu", "-aet", "VOXATEST", "-aec", peer.aet, "127.0.0.1", peer.dicom_port, tmp_path / "sc.dcm"
    )
    assert store.returncode == 0, store.stderr
    assert len(httpx.get(f"{peer.url}/instances", timeout=10).json()) == 1

    if peer.dicomweb_url:
        response = httpx.get(
            f"{peer.dicomweb_url}/studies", headers={"Accept": "application/dicom+json"}, timeout=10
        )
        assert response.status_code == 200
        assert [s["0020000D"]["Value"][0] for s in response.json()] == [study_uid]

    peer.stop()
    assert not peer.is_running()
    peer.stop()  # idempotent


def test_orthanc_peer_factory_starts_independent_peers(orthanc_peer) -> None:
    first: OrthancPeer = orthanc_peer(aet="PEER1")
    second: OrthancPeer = orthanc_peer(aet="PEER2", dicomweb=False)
    assert {first.http_port, first.dicom_port}.isdisjoint({second.http_port, second.dicom_port})
    assert first.storage_dir != second.storage_dir
    assert second.dicomweb_url is None
    for peer in (first, second):
        assert httpx.get(f"{peer.url}/system", timeout=10).json()["DicomAet"] == peer.aet


# ---------------------------------------------------------------------------- Redis


def test_redis_server_answers_ping(redis_server: RedisServer) -> None:
    assert redis_server.url == f"redis://127.0.0.1:{redis_server.port}/0"
    assert redis_ping("127.0.0.1", redis_server.port)
    with socket.create_connection(("127.0.0.1", redis_server.port), timeout=5) as sock:
        sock.sendall(b"*3\r\n$3\r\nSET\r\n$4\r\nvoxa\r\n$2\r\nok\r\n*2\r\n$3\r\nGET\r\n$4\r\nvoxa\r\n")
        reply = b""
        while not reply.endswith(b"ok\r\n"):
            chunk = sock.recv(64)
            assert chunk, reply
            reply += chunk
    assert reply == b"+OK\r\n$2\r\nok\r\n"


@pytest.mark.interop
@pytest.mark.parametrize("peer_fixture", ["postgres_server", "redis_server"])
def test_session_peers_are_loopback_only(peer_fixture: str, request: pytest.FixtureRequest) -> None:
    server = request.getfixturevalue(peer_fixture)
    addresses = _listening_addresses(server.port)
    assert addresses == {"0100007F"}, addresses  # 127.0.0.1 only
