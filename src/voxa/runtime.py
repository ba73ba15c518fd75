"""Everything a running Voxa holds, opened once from the settings and passed down.

``voxa serve``, the other CLI commands and the tests all build one :class:`Runtime`;
nothing is kept in module globals.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from voxa.archive import open_archive
from voxa.archive.ingest import Archive
from voxa.config import Settings
from voxa.dimse.peers import PeerRegistry
from voxa.security.accounts import Accounts
from voxa.security.audit import AuditTrail
from voxa.security.secretbox import SecretBox, load_or_create_key

if TYPE_CHECKING:
    from voxa.dimse.server import DicomServer
    from voxa.jobs.executor import JobManager

log = logging.getLogger(__name__)


@dataclass
class Runtime:
    settings: Settings
    archive: Archive
    peers: PeerRegistry
    jobs: JobManager
    accounts: Accounts
    audit: AuditTrail
    dicom: DicomServer | None = field(default=None)

    @classmethod
    def open(cls, settings: Settings, *, server: bool = False) -> Runtime:
        """Open the archive.  ``server=True`` (``voxa serve``, test servers) also writes the
        configured peers into the registry and fails jobs a previous server left unfinished;
        other commands must not, as a server may be running beside them."""
        from voxa.jobs.executor import JobManager

        archive = open_archive(settings)
        peers = PeerRegistry(archive.index)
        if server:
            peers.sync_from_settings(settings.peers)
        jobs = JobManager(archive.index, workers=2, recover=server)
        accounts = Accounts(
            archive.index, max_failures=settings.max_failed_logins,
            lockout=dt.timedelta(minutes=settings.lockout_minutes),
            session_idle=dt.timedelta(minutes=settings.session_idle_minutes),
            session_max=dt.timedelta(hours=settings.session_max_hours),
            secret_box=SecretBox(load_or_create_key(settings.effective_secret_key_file)))
        if server:
            accounts.ensure_default_roles()
        return cls(settings=settings, archive=archive, peers=peers, jobs=jobs, accounts=accounts,
                   audit=AuditTrail(archive.index))

    def start_dicom(self, host: str | None = None, port: int | None = None) -> DicomServer:
        from voxa.dimse.server import DicomServer, quiet_pynetdicom

        quiet_pynetdicom()
        self.dicom = DicomServer(self.settings, self.archive, self.peers, accounts=self.accounts, audit=self.audit)
        self.dicom.start(host, port)
        return self.dicom

    def close(self, grace_s: float = 30.0) -> None:
        if self.dicom is not None:
            self.dicom.stop(grace_s)
            self.dicom = None
        self.jobs.shutdown()
        from voxa.imaging.series import flush_cache_writes

        flush_cache_writes(10.0)
        self.archive.close()
