"""Transfer syntaxes the archive accepts, stores as received and can serve."""

from __future__ import annotations

from pydicom import uid

UNCOMPRESSED = (
    uid.ExplicitVRLittleEndian,
    uid.ImplicitVRLittleEndian,
    uid.ExplicitVRBigEndian,
    uid.DeflatedExplicitVRLittleEndian,
)

COMPRESSED = (
    uid.JPEGBaseline8Bit,
    uid.JPEGExtended12Bit,
    uid.JPEGLossless,
    uid.JPEGLosslessSV1,
    uid.JPEGLSLossless,
    uid.JPEGLSNearLossless,
    uid.JPEG2000Lossless,
    uid.JPEG2000,
    uid.JPEG2000MCLossless,
    uid.JPEG2000MC,
    uid.RLELossless,
    uid.HTJ2KLossless,
    uid.HTJ2KLosslessRPCL,
    uid.HTJ2K,
    uid.MPEG2MPML,
    uid.MPEG2MPHL,
    uid.MPEG4HP41,
    uid.MPEG4HP41BD,
    uid.MPEG4HP422D,
    uid.MPEG4HP423D,
    uid.MPEG4HP42STEREO,
    uid.HEVCMP51,
    uid.HEVCM10P51,
    "1.2.840.10008.1.2.4.110",  # JPEG XL Lossless (not yet named by pydicom 3.0)
    "1.2.840.10008.1.2.4.111",  # JPEG XL JPEG Recompression
    "1.2.840.10008.1.2.4.112",  # JPEG XL
    "1.2.840.10008.1.2.8.1",  # Deflated Image Frame Compression
)

# Order matters for DIMSE negotiation where Voxa chooses (SCU side): uncompressed first.
ACCEPTED: tuple[str, ...] = tuple(str(u) for u in (*UNCOMPRESSED, *COMPRESSED))
ACCEPTED_SET = frozenset(ACCEPTED)


def is_accepted(ts: str) -> bool:
    return ts in ACCEPTED_SET


def name_of(ts: str) -> str:
    try:
        return uid.UID(ts).name
    except Exception:  # noqa: BLE001
        return ts

# As the acceptor, pynetdicom picks the first of *our* syntaxes that the requestor
# proposed.  A requestor that proposes a compressed syntax holds (or can produce) data in
# it; choosing it keeps the bytes as the sender has them and spares a sender that cannot
# decompress (DCMTK's storescu with JPEG files) a failed conversion.  Uncompressed comes last,
# explicit before implicit so that VRs are preserved.
SCP_PREFERENCE: tuple[str, ...] = tuple(str(u) for u in COMPRESSED) + tuple(str(u) for u in UNCOMPRESSED)
