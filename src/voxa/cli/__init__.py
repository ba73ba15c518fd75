"""The ``voxa`` command."""

from __future__ import annotations

import click

from voxa import __version__
from voxa.cli import accounts as _accounts
from voxa.cli import analyze as _analyze
from voxa.cli import archive as _archive
from voxa.cli import audit as _audit
from voxa.cli import dicom as _dicom
from voxa.cli import init as _init
from voxa.cli import serve as _serve
from voxa.cli import worker as _worker
from voxa.cli import worklist as _worklist


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="voxa")
def main() -> None:
    """Voxa: PACS archive, DICOMweb server and imaging workstation."""


_serve.register(main)
_archive.register(main)
_audit.register(main)
_worklist.register(main)
_accounts.register(main)
_dicom.register(main)
_init.register(main)
_analyze.register(main)
_worker.register(main)
